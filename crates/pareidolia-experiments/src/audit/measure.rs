//! What the audit measures from a finished part's run folder: `history.csv` (one line per
//! generation) and `summary.json` (per class: the champion's confidence, the generation it was
//! found in, its PNG; for gradient ascent, the first step at which each class reached 50, 99,
//! 99.9 and 99.99%).
//!
//! What is recorded and what is derived: `history.csv` counts, per generation, the classes
//! whose champion is at or above 50/90/99/99.99%. A champion is only ever replaced by a
//! better one, so these counts never fall, and the first generation at which the count
//! reaches k is exactly the k-th class's first reach: the curves and the "first class / half
//! of the classes / every class" figures are exact. *Which* class reached a threshold when is
//! not recorded for MAP-Elites (only the generation its final champion was found in), so the
//! per-class first reach is reported for gradient ascent only, from its summary. Evaluations
//! are the run's own (all classes together), in forward-pass equivalents: a gradient step
//! costs one forward and one backward pass per image, the backward counted as two forward.

use serde::{Deserialize, Serialize};

/// The thresholds the audit reports.
pub const THRESHOLDS: [f64; 3] = [0.5, 0.99, 0.9999];

/// Index of each of [`THRESHOLDS`] among `history.csv`'s `at_least_*` columns
/// (0.5, 0.9, 0.99, 0.9999).
const HISTORY_COLUMN: [usize; 3] = [0, 2, 3];

/// One generation of `history.csv`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoryPoint {
    /// The generation (0 = the initial population).
    pub generation: u64,
    /// Evaluations so far (as the run counts them).
    pub evaluations: u64,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Median champion confidence.
    pub median: f64,
    /// Classes at or above 50, 90, 99 and 99.99%.
    pub at_least: [u64; 4],
}

/// Reads `history.csv`; a line that does not parse is an error naming it.
pub fn parse_history(text: &str) -> Result<Vec<HistoryPoint>, String> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("history.csv is empty")?;
    let columns: Vec<&str> = header.split(',').collect();
    let at = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("history.csv has no column `{name}`"))
    };
    let idx = [
        at("generation")?,
        at("evaluations")?,
        at("elapsed_s")?,
        at("median")?,
        at("at_least_0.5")?,
        at("at_least_0.9")?,
        at("at_least_0.99")?,
        at("at_least_0.9999")?,
    ];
    let mut points = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let bad = || format!("history.csv line {}: `{line}` does not parse", n + 2);
        let get = |i: usize| fields.get(idx[i]).copied().ok_or_else(bad);
        let int = |i: usize| get(i)?.parse::<u64>().map_err(|_| bad());
        let float = |i: usize| get(i)?.parse::<f64>().map_err(|_| bad());
        points.push(HistoryPoint {
            generation: int(0)?,
            evaluations: int(1)?,
            elapsed_s: float(2)?,
            median: float(3)?,
            at_least: [int(4)?, int(5)?, int(6)?, int(7)?],
        });
    }
    Ok(points)
}

/// Evaluations (forward-pass equivalents) until the first class, half of the classes and
/// every class reached a threshold; `None` where the run never got there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reach {
    /// The threshold.
    pub threshold: f64,
    /// Until the first class reached it.
    pub first_class: Option<u64>,
    /// Until half of the classes (rounded up) had.
    pub half: Option<u64>,
    /// Until every class had.
    pub all: Option<u64>,
    /// Classes at or above it at the end.
    pub classes_at_end: u64,
}

/// The first evaluations at which `k` classes were at or above threshold `t` (index into
/// [`THRESHOLDS`]).
fn first_with(points: &[HistoryPoint], t: usize, k: u64, cost: u64) -> Option<u64> {
    points
        .iter()
        .find(|p| p.at_least[HISTORY_COLUMN[t]] >= k)
        .map(|p| p.evaluations * cost)
}

/// [`Reach`] for every threshold; `cells` classes in the archive, `cost` forward-pass
/// equivalents per evaluation.
pub fn reach(points: &[HistoryPoint], cells: u64, cost: u64) -> Vec<Reach> {
    (0..THRESHOLDS.len())
        .map(|t| Reach {
            threshold: THRESHOLDS[t],
            first_class: first_with(points, t, 1, cost),
            half: first_with(points, t, cells.div_ceil(2).max(1), cost),
            all: first_with(points, t, cells.max(1), cost),
            classes_at_end: points.last().map_or(0, |p| p.at_least[HISTORY_COLUMN[t]]),
        })
        .collect()
}

/// The curve of threshold `t`: (forward-pass equivalents, classes at or above), one point
/// where the count changes (and the last), at most `max_points`.
pub fn curve(points: &[HistoryPoint], t: usize, cost: u64, max_points: usize) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let v = p.at_least[HISTORY_COLUMN[t]];
        let changed = out.last().is_none_or(|&(_, last)| last != v);
        if changed || i + 1 == points.len() {
            out.push((p.evaluations * cost, v));
        }
    }
    if out.len() > max_points && max_points >= 2 {
        let step = out.len() as f64 / (max_points - 1) as f64;
        let last = *out.last().expect("non-empty");
        out = (0..max_points - 1)
            .map(|i| out[(i as f64 * step) as usize])
            .collect();
        out.push(last);
    }
    out
}

/// The median of `values` (mean of the middle two), `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "generation,evaluations,elapsed_s,median,min,mean,qd_score,filled,at_least_0.5,at_least_0.9,at_least_0.99,at_least_0.9999,replacements,lost
0,200,0.1,0.3,0.1,0.3,3,10,2,0,0,0,0,0
1,400,0.2,0.6,0.2,0.6,6,10,6,3,1,0,8,0
2,600,0.3,0.99,0.5,0.9,9,10,10,9,8,2,9,0
3,800,0.4,0.999,0.9,0.99,9.9,10,10,10,10,5,3,0
";

    #[test]
    fn history_parses_and_a_bad_line_is_named() {
        let p = parse_history(CSV).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p[2].at_least, [10, 9, 8, 2]);
        assert_eq!(p[3].evaluations, 800);
        let err = parse_history("generation,evaluations\n1,2\n").unwrap_err();
        assert!(err.contains("elapsed_s"), "{err}");
        let broken = CSV.replace("2,600,0.3", "2,six,0.3");
        let err = parse_history(&broken).unwrap_err();
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn reach_counts_evaluations_until_k_classes() {
        let p = parse_history(CSV).unwrap();
        let r = reach(&p, 10, 1);
        assert_eq!(r[0].first_class, Some(200));
        assert_eq!(r[0].half, Some(400));
        assert_eq!(r[0].all, Some(600));
        assert_eq!(r[1].first_class, Some(400));
        assert_eq!(r[1].all, Some(800));
        assert_eq!(r[2].first_class, Some(600));
        assert_eq!(r[2].half, Some(800));
        assert_eq!(r[2].all, None);
        assert_eq!(r[2].classes_at_end, 5);
        // A gradient step counts three forward passes.
        assert_eq!(reach(&p, 10, 3)[0].all, Some(1800));
    }

    #[test]
    fn curves_keep_the_changes_and_the_end() {
        let p = parse_history(CSV).unwrap();
        assert_eq!(curve(&p, 2, 1, 100), vec![(200, 0), (600, 2), (800, 5)]);
        assert_eq!(
            curve(&p, 0, 1, 100),
            vec![(200, 2), (400, 6), (600, 10), (800, 10)]
        );
        let thinned = curve(&p, 0, 1, 2);
        assert_eq!(thinned, vec![(200, 2), (800, 10)]);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
    }
}
