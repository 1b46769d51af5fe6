//! One MAP-Elites generation as plain data: the jobs that make its children, the children
//! still outstanding, what came back, re-issues after an actor restart, and the moment it is
//! complete. The archive actor owns one [`Generation`] at a time and only forwards messages
//! to it; everything here is deterministic and unit-tested without actors.
//!
//! Jobs are drawn the way the paper's code does: children in pairs, both parents picked
//! uniformly over the occupied cells with the run's selection RNG, every random draw of a
//! child keyed by (seed, generation, child index). Results are kept by child id, so
//! duplicates (from re-issued work that arrives twice) count once, and
//! [`Generation::finish`] hands the scored children back in id order: the archive inserts
//! them in the same order whichever mutator or batch finished first.

use std::collections::BTreeSet;

use pareidolia_core::Archive;
use pareidolia_core::seeds::{self, HostRng, Stream};

use crate::messages::{
    BreedJob, EvaluatorRoute, LossKind, LostChild, Recipe, Results, ScoredChild, child_index,
};
use crate::outcome::RunError;

/// How often one generation's outstanding children are re-issued before they count as lost.
pub const MAX_REISSUES: u32 = 3;

/// One generation in flight.
#[derive(Debug, Clone)]
pub struct Generation {
    number: u64,
    size: u32,
    jobs: Vec<BreedJob>,
    /// Every route its jobs went out with (the first dispatch and each re-issue).
    routes: Vec<EvaluatorRoute>,
    pending: BTreeSet<u64>,
    scored: Vec<ScoredChild>,
    lost: Vec<LostChild>,
    reissues: u32,
}

/// Why a child in an evaluator's results was refused (it never reaches the archive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejection {
    /// Not a child the archive handed out: a generation not started yet, or an index beyond
    /// the generation's size.
    Unrequested,
    /// A child of this generation that no route sent to the evaluator that returned it.
    Misrouted,
    /// Its fields disagree: the id's generation is not the child's, the score count is not
    /// the classes', or a score is not finite.
    Malformed,
}

impl Rejection {
    /// Every cause, in metric order.
    pub const ALL: [Rejection; 3] = [
        Rejection::Unrequested,
        Rejection::Misrouted,
        Rejection::Malformed,
    ];

    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Unrequested => "unrequested",
            Rejection::Misrouted => "misrouted",
            Rejection::Malformed => "malformed",
        }
    }
}

/// What [`Generation::accept_from`] did with a batch of results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Accepted {
    /// The kinds of the losses counted now.
    pub kinds: Vec<LossKind>,
    /// Children refused, with the cause.
    pub rejected: Vec<(u64, Rejection)>,
}

/// What a re-issue did.
#[derive(Debug, Clone, PartialEq)]
pub enum Reissue {
    /// These jobs (every job with a child outstanding) go out again.
    Jobs(Vec<BreedJob>),
    /// Re-issues ran out: this many outstanding children were written off as lost.
    WrittenOff(usize),
    /// Nothing was outstanding.
    Nothing,
}

impl Generation {
    /// Plans generation `number` of `size` children. Generation 0 (and any generation of an
    /// archive left empty) makes random genomes; later ones breed parents drawn from
    /// `archive` with `rng`.
    pub fn plan(number: u64, size: u32, seed: u64, archive: &Archive, rng: &mut HostRng) -> Self {
        let jobs: Vec<BreedJob> = (0..size.div_ceil(2))
            .map(|k| {
                let first = 2 * k;
                let children = (size - first).min(2);
                let (stream, recipe) = if number == 0 {
                    (Stream::Initial, Recipe::Random)
                } else {
                    let a = archive.pick_parent(rng).map(|c| c.genome.clone());
                    let b = archive.pick_parent(rng).map(|c| c.genome.clone());
                    match (a, b) {
                        (Some(a), Some(b)) => (Stream::Mutation, Recipe::Breed { a, b }),
                        // An empty archive (every initial child lost) restarts from random genomes.
                        _ => (Stream::Initial, Recipe::Random),
                    }
                };
                BreedJob {
                    generation: number,
                    generation_size: size,
                    first_index: first,
                    children,
                    recipe,
                    crossover_seed: seeds::derive(seed, Stream::Crossover, number, k as u64),
                    child_seeds: (first..first + children)
                        .map(|i| seeds::derive(seed, stream, number, i as u64))
                        .collect(),
                }
            })
            .collect();
        let pending = jobs.iter().flat_map(BreedJob::child_ids).collect();
        Self {
            number,
            size,
            jobs,
            routes: Vec::new(),
            pending,
            scored: Vec::new(),
            lost: Vec::new(),
            reissues: 0,
        }
    }

    /// The generation's number (0 = initial population).
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Its jobs, to send to the mutators.
    pub fn jobs(&self) -> &[BreedJob] {
        &self.jobs
    }

    /// Its jobs went out (again) with `route`: children that route sends to an evaluator
    /// are accepted from it.
    pub fn routed(&mut self, route: EvaluatorRoute) {
        if !self.routes.contains(&route) {
            self.routes.push(route);
        }
    }

    /// Checks results from evaluator `from` child by child before taking them: a child must
    /// be one this generation handed out (or one of an earlier generation, which is late and
    /// ignored), routed to `from`, and carry `classes` finite scores. What fails is refused,
    /// with the cause, and never counted.
    pub fn accept_from(&mut self, results: Results, classes: usize) -> Accepted {
        let Results {
            from, scored, lost, ..
        } = results;
        let mut rejected = Vec::new();
        let mut check = |id: u64, generation: u64, scores: Option<&[f32]>| {
            let cause = if id >> 32 != generation {
                Some(Rejection::Malformed)
            } else if generation < self.number {
                return false;
            } else if generation > self.number || child_index(id) >= self.size {
                Some(Rejection::Unrequested)
            } else if !self
                .routes
                .iter()
                .any(|r| r.evaluator_of(id) == from as usize)
            {
                Some(Rejection::Misrouted)
            } else if scores.is_some_and(|s| s.len() != classes || s.iter().any(|v| !v.is_finite()))
            {
                Some(Rejection::Malformed)
            } else {
                None
            };
            match cause {
                Some(cause) => {
                    rejected.push((id, cause));
                    false
                }
                None => true,
            }
        };
        let scored: Vec<ScoredChild> = scored
            .into_iter()
            .filter(|c| check(c.id, c.generation, Some(&c.scores)))
            .collect();
        let lost: Vec<LostChild> = lost
            .into_iter()
            .filter(|c| check(c.id, c.generation, None))
            .collect();
        Accepted {
            kinds: self.accept(scored, lost),
            rejected,
        }
    }

    /// Children handed out and not yet back.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// Every child is scored or lost.
    pub fn is_complete(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes results; returns the kinds of the losses counted now (children of other
    /// generations, and children already accounted for, are ignored).
    pub fn accept(&mut self, scored: Vec<ScoredChild>, lost: Vec<LostChild>) -> Vec<LossKind> {
        for child in scored {
            if self.pending.remove(&child.id) {
                self.scored.push(child);
            }
        }
        let mut kinds = Vec::new();
        for child in lost {
            if self.pending.remove(&child.id) {
                kinds.push(child.stage);
                self.lost.push(child);
            }
        }
        kinds
    }

    /// After an actor restart: sends out again every job with a child outstanding, or, once
    /// [`MAX_REISSUES`] re-issues are used up, writes those children off as lost.
    pub fn reissue(&mut self) -> Reissue {
        if self.pending.is_empty() {
            return Reissue::Nothing;
        }
        self.reissues += 1;
        if self.reissues > MAX_REISSUES {
            let written_off = self.pending.len();
            let lost = std::mem::take(&mut self.pending)
                .into_iter()
                .map(|id| LostChild {
                    id,
                    generation: self.number,
                    generation_size: 0,
                    stage: LossKind::Actor,
                    reason: "its actor failed repeatedly".into(),
                });
            self.lost.extend(lost);
            return Reissue::WrittenOff(written_off);
        }
        let open = self
            .jobs
            .iter()
            .filter(|j| j.child_ids().any(|id| self.pending.contains(&id)))
            .cloned()
            .collect();
        Reissue::Jobs(open)
    }

    /// The children lost so far, in arrival order.
    pub fn lost(&self) -> &[LostChild] {
        &self.lost
    }

    /// Ends a complete generation: its scored children in id order, or the error of a
    /// generation of which not one child could be scored.
    pub fn finish(self) -> Result<Vec<ScoredChild>, RunError> {
        if self.scored.is_empty() {
            let first = self.lost.first();
            return Err(RunError::GenerationLost {
                generation: self.number,
                stage: first.map(|l| l.stage),
                reason: first.map_or_else(|| "no child was scored".into(), |l| l.reason.clone()),
            });
        }
        let mut scored = self.scored;
        scored.sort_by_key(|c| c.id);
        Ok(scored)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pareidolia_core::Evaluated;

    use super::*;
    use crate::messages::child_id;

    fn scored(id: u64) -> ScoredChild {
        ScoredChild {
            id,
            generation: id >> 32,
            genome: Arc::from(&[id as u8][..]),
            scores: vec![0.5, 0.5],
        }
    }

    fn lost(id: u64, stage: LossKind) -> LostChild {
        LostChild {
            id,
            generation: id >> 32,
            generation_size: 5,
            stage,
            reason: format!("{stage} failed"),
        }
    }

    fn filled_archive() -> Archive {
        let mut archive = Archive::new(2);
        for (id, scores) in [(1, vec![0.9, 0.1]), (2, vec![0.2, 0.8])] {
            archive.insert(Evaluated {
                id,
                generation: 0,
                genome: vec![id as u8],
                scores,
            });
        }
        archive
    }

    #[test]
    fn plans_pairs_with_seeds_keyed_by_child_and_the_same_parents_for_the_same_rng() {
        let archive = filled_archive();
        let mut rng = seeds::selection_rng(1);
        let g = Generation::plan(3, 5, 1, &archive, &mut rng);
        assert_eq!(g.number(), 3);
        assert_eq!(
            g.jobs().iter().map(|j| j.children).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert_eq!(g.outstanding(), 5);
        assert!(matches!(g.jobs()[0].recipe, Recipe::Breed { .. }));
        assert_eq!(
            g.jobs()[2].child_seeds,
            [seeds::derive(1, Stream::Mutation, 3, 4)]
        );
        let mut again = seeds::selection_rng(1);
        assert_eq!(
            Generation::plan(3, 5, 1, &archive, &mut again).jobs(),
            g.jobs()
        );
        // Generation 0, and an empty archive, make random genomes.
        let zero = Generation::plan(0, 3, 1, &archive, &mut rng);
        assert!(zero.jobs().iter().all(|j| j.recipe == Recipe::Random));
        let empty = Generation::plan(4, 2, 1, &Archive::new(2), &mut rng);
        assert_eq!(empty.jobs()[0].recipe, Recipe::Random);
        assert_eq!(
            empty.jobs()[0].child_seeds[0],
            seeds::derive(1, Stream::Initial, 4, 0)
        );
    }

    #[test]
    fn duplicates_and_strangers_count_once_and_results_come_back_in_id_order() {
        let mut rng = seeds::selection_rng(1);
        let mut g = Generation::plan(2, 4, 1, &filled_archive(), &mut rng);
        let ids: Vec<u64> = (0..4).map(|i| child_id(2, i)).collect();
        assert!(
            g.accept(vec![scored(ids[3]), scored(ids[1])], Vec::new())
                .is_empty()
        );
        // A re-issued child arriving twice, a child of another generation, a loss of a child
        // already scored: none of them counts.
        let kinds = g.accept(
            vec![scored(ids[3]), scored(child_id(1, 0))],
            vec![
                lost(ids[1], LossKind::Render),
                lost(ids[2], LossKind::Mutate),
            ],
        );
        assert_eq!(kinds, [LossKind::Mutate]);
        assert!(!g.is_complete());
        assert!(g.accept(vec![scored(ids[0])], Vec::new()).is_empty());
        assert!(g.is_complete());
        assert_eq!(g.lost().len(), 1);
        let back = g.finish().unwrap();
        assert_eq!(
            back.iter().map(|c| c.id).collect::<Vec<_>>(),
            [ids[0], ids[1], ids[3]]
        );
    }

    #[test]
    fn results_are_taken_only_for_children_routed_to_their_evaluator() {
        let mut rng = seeds::selection_rng(1);
        let mut g = Generation::plan(3, 8, 1, &filled_archive(), &mut rng);
        // Batches of 2 over 2 evaluators: generation 3's batch k goes to (3 + k) % 2.
        g.routed(EvaluatorRoute {
            batch_size: 2,
            evaluators: 2,
        });
        let results = |from, scored, lost| Results {
            from,
            scored,
            lost,
            times: Default::default(),
        };
        let mut short = scored(child_id(3, 1));
        short.scores.pop();
        let mut nan = scored(child_id(3, 4));
        nan.scores[0] = f32::NAN;
        let mut alien = scored(child_id(3, 5));
        alien.generation = 2;
        let a = g.accept_from(
            results(
                1,
                vec![
                    scored(child_id(3, 0)), // batch 0 -> evaluator 1: taken
                    short,
                    scored(child_id(3, 2)), // batch 1 -> evaluator 0: misrouted
                    scored(child_id(3, 8)), // beyond the generation's 8 children
                    scored(child_id(4, 0)), // a generation not started
                    scored(child_id(2, 0)), // late, from generation 2: ignored
                    nan,
                    alien,
                ],
                vec![lost(child_id(3, 6), LossKind::Render)], // batch 3 -> evaluator 0
            ),
            2,
        );
        assert_eq!(
            a.rejected,
            [
                (child_id(3, 1), Rejection::Malformed),
                (child_id(3, 2), Rejection::Misrouted),
                (child_id(3, 8), Rejection::Unrequested),
                (child_id(4, 0), Rejection::Unrequested),
                (child_id(3, 4), Rejection::Malformed),
                (child_id(3, 5), Rejection::Malformed),
                (child_id(3, 6), Rejection::Misrouted),
            ]
        );
        assert_eq!(g.outstanding(), 7);
        // After a re-issue over one evaluator, evaluator 0 may return batch 0's children too.
        g.routed(EvaluatorRoute {
            batch_size: 2,
            evaluators: 1,
        });
        let a = g.accept_from(results(0, vec![scored(child_id(3, 1))], Vec::new()), 2);
        assert!(a.rejected.is_empty());
        assert_eq!(g.outstanding(), 6);
    }

    #[test]
    fn reissue_sends_open_jobs_then_writes_children_off() {
        let mut rng = seeds::selection_rng(1);
        let mut g = Generation::plan(1, 5, 1, &filled_archive(), &mut rng);
        g.accept(
            vec![scored(child_id(1, 0)), scored(child_id(1, 1))],
            vec![lost(child_id(1, 2), LossKind::Render)],
        );
        for _ in 0..MAX_REISSUES {
            match g.reissue() {
                Reissue::Jobs(jobs) => {
                    // Job 0 is done; job 1 still has child 3 out; job 2 has child 4.
                    assert_eq!(
                        jobs.iter().map(|j| j.first_index).collect::<Vec<_>>(),
                        [2, 4]
                    );
                }
                other => panic!("expected jobs, got {other:?}"),
            }
        }
        assert_eq!(g.reissue(), Reissue::WrittenOff(2));
        assert!(g.is_complete());
        assert_eq!(g.reissue(), Reissue::Nothing);
        assert_eq!(
            g.lost().iter().map(|l| l.stage).collect::<Vec<_>>(),
            [LossKind::Render, LossKind::Actor, LossKind::Actor]
        );
        assert_eq!(g.finish().unwrap().len(), 2);
    }

    #[test]
    fn a_generation_without_one_scored_child_is_an_error_naming_the_first_loss() {
        let mut rng = seeds::selection_rng(1);
        let mut g = Generation::plan(0, 2, 1, &Archive::new(2), &mut rng);
        g.accept(
            Vec::new(),
            vec![
                lost(child_id(0, 1), LossKind::Inference),
                lost(child_id(0, 0), LossKind::Score),
            ],
        );
        let e = g.finish().unwrap_err();
        assert!(matches!(
            e,
            RunError::GenerationLost {
                generation: 0,
                stage: Some(LossKind::Inference),
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "no child of generation 0 could be evaluated; the first was lost in inference: inference failed"
        );
    }
}
