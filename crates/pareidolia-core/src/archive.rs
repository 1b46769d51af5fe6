//! The MAP-Elites archive as the paper's code uses it: one cell per class, each holding the
//! best image found for that class. An evaluated child competes in every cell and takes each
//! one where its score is strictly higher than the champion's (or the cell is empty); one child
//! can take many cells. Parents are drawn uniformly over occupied cells, so a champion of k
//! cells is k times as likely to be picked.
//!
//! A run may make only some classes cells ([`Archive::restrict`], the config's
//! `archive.classes`): a child still carries a score for every class (the fitness saw the
//! model's whole output), but only cells compete, hold champions and count in the statistics.
//! Cells stay indexed by class, so a skipped class is a cell that is never filled.
//!
//! Plain data and functions, no actors: the archive actor owns one of these.

use std::sync::Arc;

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::seeds::HostRng;

/// A child with its scores, ready to compete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluated {
    /// Unique id: `generation << 32 | index`.
    pub id: u64,
    /// Generation that made it (0 = initial population).
    pub generation: u64,
    /// The encoding's genome bytes (shared, not copied, by the cells it wins).
    pub genome: Arc<[u8]>,
    /// One score per class.
    pub scores: Vec<f32>,
    /// The models' probability of every class for this image (their mean with several
    /// models), which a fitness other than `confidence` need not equal; empty where unknown.
    pub probabilities: Vec<f32>,
}

/// The holder of one or more cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Champion {
    /// The child's id.
    pub id: u64,
    /// Generation that made it.
    pub generation: u64,
    /// Genome bytes, shared by every cell it holds.
    pub genome: Arc<[u8]>,
    /// Its scores for every class.
    pub scores: Arc<[f32]>,
    /// The models' probability of every class (see [`Evaluated::probabilities`]); empty where
    /// unknown (a checkpoint from before they were recorded).
    pub probabilities: Arc<[f32]>,
}

impl Champion {
    /// Its score in one class.
    pub fn score(&self, class: usize) -> f32 {
        self.scores[class]
    }

    /// The models' probability of one class, if recorded.
    pub fn probability(&self, class: usize) -> Option<f32> {
        self.probabilities.get(class).copied()
    }

    /// Its confidence in one class, as the word is used in summaries and galleries: the
    /// probability where recorded, else the score (the two are one with the `confidence`
    /// fitness).
    pub fn confidence(&self, class: usize) -> f32 {
        self.probability(class).unwrap_or(self.scores[class])
    }
}

/// Convergence numbers of the archive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArchiveStats {
    /// Cells (classes).
    pub cells: usize,
    /// Occupied cells.
    pub filled: usize,
    /// Median champion score over all cells (empty cells count 0).
    pub median: f32,
    /// Minimum champion score.
    pub min: f32,
    /// Mean champion score.
    pub mean: f32,
    /// Sum of champion scores (QD-score).
    pub qd_score: f64,
    /// Cells whose champion scores at least 0.5, 0.9, 0.99, 0.9999.
    pub at_least: [usize; 4],
    /// Thresholds of `at_least`.
    pub thresholds: [f32; 4],
}

/// A list of cell classes that does not fit the archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CellsError {
    /// No class at all.
    #[error("names no class; a run needs at least one cell")]
    Empty,
    /// A class the model does not have.
    #[error("names class {class}, but the model has {classes} classes (0..={max})", max = classes.saturating_sub(1))]
    OutOfRange {
        /// The class.
        class: usize,
        /// The model's class count.
        classes: usize,
    },
    /// A class listed twice.
    #[error("names class {0} twice")]
    Duplicate(usize),
    /// A class left out that holds a champion (a checkpoint of another run).
    #[error("leaves out class {0}, which holds a champion")]
    Occupied(usize),
}

/// One champion per class.
#[derive(Debug, Clone)]
pub struct Archive {
    cells: Vec<Option<Champion>>,
    /// Per class: whether it is a cell (competes and counts); every class by default.
    open: Vec<bool>,
    replacements: u64,
}

impl Archive {
    /// An archive restored from a checkpoint's cells and replacement count.
    pub fn restore(cells: Vec<Option<Champion>>, replacements: u64) -> Self {
        Self {
            open: vec![true; cells.len()],
            cells,
            replacements,
        }
    }

    /// An empty archive of `classes` cells.
    pub fn new(classes: usize) -> Self {
        Self {
            cells: vec![None; classes],
            open: vec![true; classes],
            replacements: 0,
        }
    }

    /// Makes only `classes` cells; the other classes are still scored but never hold a
    /// champion. Refuses an empty list, a class out of range or listed twice, and leaving out
    /// a class that holds a champion.
    pub fn restrict(&mut self, classes: &[usize]) -> Result<(), CellsError> {
        if classes.is_empty() {
            return Err(CellsError::Empty);
        }
        let mut open = vec![false; self.cells.len()];
        for &class in classes {
            let slot = open.get_mut(class).ok_or(CellsError::OutOfRange {
                class,
                classes: self.cells.len(),
            })?;
            if std::mem::replace(slot, true) {
                return Err(CellsError::Duplicate(class));
            }
        }
        if let Some(c) = (0..open.len()).find(|&c| !open[c] && self.cells[c].is_some()) {
            return Err(CellsError::Occupied(c));
        }
        self.open = open;
        Ok(())
    }

    /// Whether `class` is a cell.
    pub fn is_cell(&self, class: usize) -> bool {
        self.open.get(class).copied().unwrap_or(false)
    }

    /// The classes that are cells, ascending.
    pub fn cell_classes(&self) -> Vec<usize> {
        (0..self.open.len()).filter(|&c| self.open[c]).collect()
    }

    /// Number of classes (cells and skipped classes).
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether the archive has no cells.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Per class: its champion (always `None` for a class that is not a cell).
    pub fn cells(&self) -> &[Option<Champion>] {
        &self.cells
    }

    /// Champion replacements so far (the paper's "jumps"), filling empty cells included.
    pub fn replacements(&self) -> u64 {
        self.replacements
    }

    /// Lets `child` compete in every cell; returns how many cells it took.
    pub fn insert(&mut self, child: Evaluated) -> usize {
        let wins: Vec<usize> = self
            .cells
            .iter()
            .enumerate()
            .filter(|(class, cell)| {
                if !self.open[*class] {
                    return false;
                }
                let s = child.scores.get(*class).copied().unwrap_or(f32::NAN);
                s.is_finite() && cell.as_ref().is_none_or(|c| s > c.score(*class))
            })
            .map(|(class, _)| class)
            .collect();
        if wins.is_empty() {
            return 0;
        }
        let champion = Champion {
            id: child.id,
            generation: child.generation,
            genome: child.genome,
            scores: child.scores.into(),
            probabilities: child.probabilities.into(),
        };
        for &class in &wins {
            self.cells[class] = Some(champion.clone());
        }
        self.replacements += wins.len() as u64;
        wins.len()
    }

    /// A parent drawn uniformly over occupied cells; `None` while the archive is empty.
    pub fn pick_parent(&self, rng: &mut HostRng) -> Option<&Champion> {
        self.pick_parent_cell(rng).map(|(_, c)| c)
    }

    /// [`Archive::pick_parent`] with the class of the cell it was drawn from (the same draw:
    /// the same `rng` gives the same parent either way).
    pub fn pick_parent_cell(&self, rng: &mut HostRng) -> Option<(usize, &Champion)> {
        let filled = self.cells.iter().filter(|c| c.is_some()).count();
        if filled == 0 {
            return None;
        }
        let k = rng.random_range(0..filled);
        self.cells
            .iter()
            .enumerate()
            .filter_map(|(class, c)| c.as_ref().map(|c| (class, c)))
            .nth(k)
    }

    /// Convergence statistics of the fitness over the cells (skipped classes do not count).
    pub fn stats(&self) -> ArchiveStats {
        self.stats_of(|class, c| c.score(class))
    }

    /// The same statistics of the champions' probabilities ([`Champion::confidence`]), which
    /// equal [`Archive::stats`] with the `confidence` fitness.
    pub fn confidence_stats(&self) -> ArchiveStats {
        self.stats_of(|class, c| c.confidence(class))
    }

    fn stats_of(&self, value: impl Fn(usize, &Champion) -> f32) -> ArchiveStats {
        let thresholds = [0.5, 0.9, 0.99, 0.9999];
        let mut scores: Vec<f32> = self
            .cells
            .iter()
            .enumerate()
            .filter(|(class, _)| self.open[*class])
            .map(|(class, c)| c.as_ref().map_or(0.0, |c| value(class, c)))
            .collect();
        if scores.is_empty() {
            return ArchiveStats {
                thresholds,
                ..Default::default()
            };
        }
        let qd_score: f64 = scores.iter().map(|&s| s as f64).sum();
        scores.sort_by(f32::total_cmp);
        let n = scores.len();
        let median = if n % 2 == 1 {
            scores[n / 2]
        } else {
            (scores[n / 2 - 1] + scores[n / 2]) / 2.0
        };
        ArchiveStats {
            cells: n,
            filled: self.cells.iter().filter(|c| c.is_some()).count(),
            median,
            min: scores[0],
            mean: (qd_score / n as f64) as f32,
            qd_score,
            at_least: thresholds.map(|t| scores.iter().filter(|&&s| s >= t).count()),
            thresholds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn child(id: u64, scores: &[f32]) -> Evaluated {
        Evaluated {
            id,
            generation: 0,
            genome: vec![id as u8].into(),
            scores: scores.to_vec(),
            probabilities: Vec::new(),
        }
    }

    #[test]
    fn confidence_is_the_probability_where_recorded_and_the_fitness_otherwise() {
        let mut a = Archive::new(2);
        // A margin-like fitness: negative scores, probabilities beside them.
        a.insert(Evaluated {
            probabilities: vec![0.25, 0.75],
            ..child(1, &[-0.5, 0.5])
        });
        let c = a.cells()[0].as_ref().unwrap();
        assert_eq!(
            (c.score(0), c.probability(0), c.confidence(0)),
            (-0.5, Some(0.25), 0.25)
        );
        assert_eq!(a.stats().min, -0.5);
        assert_eq!(a.confidence_stats().min, 0.25);
        assert_eq!(a.confidence_stats().at_least, [1, 0, 0, 0]);
        // Without recorded probabilities, the fitness.
        let mut b = Archive::new(1);
        b.insert(child(2, &[0.9]));
        let c = b.cells()[0].as_ref().unwrap();
        assert_eq!((c.probability(0), c.confidence(0)), (None, 0.9));
        assert_eq!(b.confidence_stats(), b.stats());
    }

    #[test]
    fn a_child_takes_every_cell_it_beats_strictly() {
        let mut a = Archive::new(3);
        assert_eq!(a.insert(child(1, &[0.5, 0.2, 0.3])), 3);
        assert_eq!(
            a.insert(child(2, &[0.5, 0.7, 0.1])),
            1,
            "a tie does not replace"
        );
        assert_eq!(a.cells()[0].as_ref().unwrap().id, 1);
        assert_eq!(a.cells()[1].as_ref().unwrap().id, 2);
        assert_eq!(
            a.insert(child(3, &[f32::NAN, 0.1, 0.1])),
            0,
            "NaN never wins"
        );
        assert_eq!(a.replacements(), 4);
    }

    #[test]
    fn parents_are_uniform_over_occupied_cells() {
        let mut a = Archive::new(4);
        a.insert(child(1, &[0.9, 0.9, 0.9, 0.0]));
        a.insert(child(2, &[0.0, 0.0, 0.0, 0.5]));
        let mut rng = HostRng::seed_from_u64(1);
        let picks = (0..4000)
            .filter(|_| a.pick_parent(&mut rng).unwrap().id == 1)
            .count();
        // child 1 holds 3 of 4 cells
        assert!((2800..3200).contains(&picks), "{picks}");
        assert!(Archive::new(2).pick_parent(&mut rng).is_none());
    }

    #[test]
    fn skipped_classes_never_hold_a_champion_and_do_not_count() {
        let mut a = Archive::new(4);
        a.restrict(&[2, 0]).unwrap();
        assert_eq!(a.cell_classes(), [0, 2]);
        // Best in the skipped class 3, it still takes only the cells it beats.
        assert_eq!(a.insert(child(1, &[0.2, 0.1, 0.3, 0.4])), 2);
        assert!(a.cells()[1].is_none() && a.cells()[3].is_none());
        let s = a.stats();
        assert_eq!((s.cells, s.filled, s.min), (2, 2, 0.2));
        assert!((s.median - 0.25).abs() < 1e-6);
        assert_eq!(a.replacements(), 2);
        let mut rng = HostRng::seed_from_u64(1);
        assert_eq!(a.pick_parent(&mut rng).unwrap().id, 1);
        // Bad lists.
        let mut b = Archive::new(3);
        assert_eq!(b.restrict(&[]), Err(CellsError::Empty));
        assert_eq!(
            b.restrict(&[0, 3]).unwrap_err().to_string(),
            "names class 3, but the model has 3 classes (0..=2)"
        );
        assert_eq!(b.restrict(&[1, 1]), Err(CellsError::Duplicate(1)));
        b.insert(child(2, &[0.1, 0.2, 0.3]));
        assert_eq!(b.restrict(&[0, 1]), Err(CellsError::Occupied(2)));
        assert_eq!(
            b.cell_classes(),
            [0, 1, 2],
            "a refused list changes nothing"
        );
    }

    #[test]
    fn stats_count_empty_cells_as_zero() {
        let mut a = Archive::new(4);
        a.insert(child(1, &[0.99995, 0.95, 0.0, 0.0]));
        let s = a.stats();
        assert_eq!(s.filled, 4);
        assert_eq!(s.min, 0.0);
        assert_eq!(s.at_least, [2, 2, 1, 1]);
        assert!((s.median - 0.475).abs() < 1e-6);
        let b = Archive::new(3).stats();
        assert_eq!((b.filled, b.median), (0, 0.0));
    }
}
