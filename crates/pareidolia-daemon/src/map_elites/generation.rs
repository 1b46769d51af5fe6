//! One MAP-Elites generation as plain data: the jobs that make its children, the children
//! still outstanding, what came back, re-issues after an actor restart, and the moment it is
//! complete; and the [`Pipeline`] of the generations in flight (one, or more with a `lag`).
//! The archive actor owns the pipeline and only forwards messages to it; everything here is
//! deterministic and unit-tested without actors.
//!
//! Jobs are drawn the way the paper's code does: children in pairs, both parents picked
//! uniformly over the occupied cells with the run's selection RNG, every random draw of a
//! child keyed by (seed, generation, child index). Results are kept by child id, so
//! duplicates (from re-issued work that arrives twice) count once, and
//! [`Generation::finish`] hands the scored children back in id order: the archive inserts
//! them in the same order whichever mutator or batch finished first.

use std::collections::{BTreeSet, VecDeque};

use pareidolia_core::checkpoint::PlannedGeneration;
use pareidolia_core::seeds::{self, HostRng, Stream};
use pareidolia_core::summary::StageTimes;
use pareidolia_core::{Archive, SteerTarget};

use crate::map_elites::messages::{
    BreedJob, EvaluatorRoute, LossKind, LostChild, Recipe, Rejection, Results, ScoredChild,
    child_index,
};
use crate::run::outcome::RunError;

/// How often one generation's outstanding children are re-issued before they count as lost.
pub const MAX_REISSUES: u32 = 3;

/// Which children of a generation take gradient steps and toward which class (the gradient
/// operator of `[search.gradient]`): plain data the archive plans generations with.
#[derive(Debug, Clone, PartialEq)]
pub struct SteerPlan {
    /// Share of the bred children that are steered.
    pub share: f64,
    /// How a steered child's target class is chosen.
    pub target: SteerTarget,
    /// The archive's classes (its cells), for `uniform` targets.
    pub classes: Vec<u32>,
}

impl SteerPlan {
    /// The target class of bred child `index` of generation `number` whose parent was drawn
    /// for class `parent_class`, or `None` when it is not steered: a pure function of
    /// (seed, generation, child), drawn from its own stream so the rest of the run's draws
    /// are those of a run without the operator.
    pub fn target_of(&self, seed: u64, number: u64, index: u32, parent_class: u32) -> Option<u32> {
        let draw = seeds::derive(seed, Stream::Steer, number, u64::from(index));
        // The top 53 bits as a uniform number in [0, 1).
        let u = (draw >> 11) as f64 / (1u64 << 53) as f64;
        if u >= self.share {
            return None;
        }
        match self.target {
            SteerTarget::Parent => Some(parent_class),
            SteerTarget::Uniform => {
                // A second draw, scaled to the classes (Lemire's multiply-shift).
                let pick = seeds::derive(draw, Stream::Steer, 0, 0);
                let k = (u128::from(pick) * self.classes.len() as u128) >> 64;
                self.classes.get(k as usize).copied()
            }
        }
    }
}

/// One generation in flight.
#[derive(Debug, Clone)]
pub struct Generation {
    number: u64,
    size: u32,
    jobs: Vec<BreedJob>,
    /// Per pair, the classes its parents were drawn for (recorded for a steered run).
    parent_classes: Vec<Option<(u32, u32)>>,
    /// Every route its jobs went out with (the first dispatch and each re-issue).
    routes: Vec<EvaluatorRoute>,
    pending: BTreeSet<u64>,
    scored: Vec<ScoredChild>,
    lost: Vec<LostChild>,
    reissues: u32,
    /// Stage times of its results.
    times: StageTimes,
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
    ///
    /// With a [`SteerPlan`], a share of the bred children are marked for gradient steps; the
    /// parents are drawn exactly as without one (the same draws of `rng`).
    pub fn plan(
        number: u64,
        size: u32,
        seed: u64,
        archive: &Archive,
        rng: &mut HostRng,
        steer: Option<&SteerPlan>,
    ) -> Self {
        let pairs: Vec<Option<((u32, _), (u32, _))>> = (0..size.div_ceil(2))
            .map(|_| {
                if number == 0 {
                    return None;
                }
                let mut pick = || {
                    archive
                        .pick_parent_cell(rng)
                        .map(|(class, c)| (class as u32, c.genome.clone()))
                };
                let a = pick();
                let b = pick();
                // An empty archive (every initial child lost) restarts from random genomes.
                a.zip(b)
            })
            .collect();
        let record = steer.is_some_and(|s| s.target == SteerTarget::Parent);
        let parent_classes = if record {
            pairs
                .iter()
                .map(|p| p.as_ref().map(|((ca, _), (cb, _))| (*ca, *cb)))
                .collect()
        } else {
            Vec::new()
        };
        let parents = pairs
            .into_iter()
            .map(|p| p.map(|((_, a), (_, b))| (a, b)))
            .collect();
        Self::from_parents(
            &PlannedGeneration {
                generation: number,
                size,
                parents,
                parent_classes,
            },
            seed,
            steer,
        )
    }

    /// The generation with these parents (drawn by [`Generation::plan`], or read back from a
    /// checkpoint): every other part of its jobs is keyed by (seed, generation, child).
    pub fn from_parents(planned: &PlannedGeneration, seed: u64, steer: Option<&SteerPlan>) -> Self {
        let (number, size) = (planned.generation, planned.size);
        let jobs: Vec<BreedJob> = planned
            .parents
            .iter()
            .enumerate()
            .map(|(k, pair)| {
                let first = 2 * k as u32;
                let children = size.saturating_sub(first).min(2);
                let (stream, recipe) = match pair {
                    Some((a, b)) => (
                        Stream::Mutation,
                        Recipe::Breed {
                            a: a.clone(),
                            b: b.clone(),
                        },
                    ),
                    None => (Stream::Initial, Recipe::Random),
                };
                let steer = match (steer, pair) {
                    (Some(plan), Some(_)) => {
                        let classes = planned.parent_classes.get(k).copied().flatten();
                        (first..first + children)
                            .map(|i| {
                                // Each child of the pair has its own parent's class.
                                let parent =
                                    classes.map_or(0, |(a, b)| if i == first { a } else { b });
                                plan.target_of(seed, number, i, parent)
                            })
                            .collect()
                    }
                    _ => Vec::new(),
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
                    steer,
                }
            })
            .collect();
        let pending = jobs.iter().flat_map(BreedJob::child_ids).collect();
        Self {
            number,
            size,
            jobs,
            parent_classes: planned.parent_classes.clone(),
            routes: Vec::new(),
            pending,
            scored: Vec::new(),
            lost: Vec::new(),
            reissues: 0,
            times: StageTimes::default(),
        }
    }

    /// Its parents, as a checkpoint records a generation planned ahead.
    pub fn planned(&self) -> PlannedGeneration {
        PlannedGeneration {
            generation: self.number,
            size: self.size,
            parents: self
                .jobs
                .iter()
                .map(|j| match &j.recipe {
                    Recipe::Breed { a, b } => Some((a.clone(), b.clone())),
                    Recipe::Random => None,
                })
                .collect(),
            parent_classes: self.parent_classes.clone(),
        }
    }

    /// Its jobs went out at least once.
    pub fn is_dispatched(&self) -> bool {
        !self.routes.is_empty()
    }

    /// Stage times its results reported.
    pub fn times(&self) -> StageTimes {
        self.times
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
            from,
            scored,
            lost,
            times,
        } = results;
        self.times += times;
        let mut rejected = Vec::new();
        let mut check = |id: u64, generation: u64, scores: Option<&[f32]>| {
            let cause = if id >> 32 != generation {
                Some(Rejection::Malformed)
            } else if generation < self.number {
                return false;
            } else if generation > self.number
                || child_index(id) >= self.size
                || self.routes.is_empty()
            {
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

/// The generations in flight, oldest first. With `lag` 0 (the paper's loop) it holds the
/// generation being scored and, once that is inserted, the next one, planned from the
/// archive as it is then. With `lag` L, generation g is planned as soon as generation
/// g - 1 - L is inserted, so up to L + 1 generations are planned or out at once and the
/// inference workers always have a later generation's batches queued behind the current
/// one's. Which archive each generation's parents come from depends only on the lag, never on
/// timing; generations are still inserted one at a time, in order, each in id order.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    lag: u32,
    generations: VecDeque<Generation>,
}

impl Pipeline {
    /// An empty pipeline with this lag.
    pub fn new(lag: u32) -> Self {
        Self {
            lag,
            generations: VecDeque::new(),
        }
    }

    /// Whether generation `next` is to be planned now, `completed` being the last inserted
    /// generation (`None`: none yet, when only generation 0 can be planned).
    pub fn wants(&self, next: u64, completed: Option<u64>) -> bool {
        match completed {
            None => next == 0,
            Some(c) => next <= c.saturating_add(1 + u64::from(self.lag)),
        }
    }

    /// Adds the next generation (planned, not yet sent out).
    pub fn push(&mut self, generation: Generation) {
        debug_assert!(
            self.generations
                .back()
                .is_none_or(|g| g.number() + 1 == generation.number())
        );
        self.generations.push_back(generation);
    }

    /// The generations not sent out yet, numbered at most `last`, oldest first.
    pub fn undispatched(&mut self, last: u64) -> impl Iterator<Item = &mut Generation> {
        self.generations
            .iter_mut()
            .filter(move |g| !g.is_dispatched() && g.number() <= last)
    }

    /// The oldest generation is out (the run waits for it).
    pub fn front_in_flight(&self) -> bool {
        self.generations
            .front()
            .is_some_and(Generation::is_dispatched)
    }

    /// Some generation is out.
    pub fn any_dispatched(&self) -> bool {
        self.generations.iter().any(Generation::is_dispatched)
    }

    /// The oldest generation, if it is out and complete: the next to insert.
    pub fn pop_complete(&mut self) -> Option<Generation> {
        let front = self.generations.front()?;
        (front.is_dispatched() && front.is_complete())
            .then(|| self.generations.pop_front())
            .flatten()
    }

    /// Children sent out and not yet back, over every generation.
    pub fn outstanding(&self) -> usize {
        self.generations
            .iter()
            .filter(|g| g.is_dispatched())
            .map(Generation::outstanding)
            .sum()
    }

    /// Every generation planned and not inserted, oldest first, as a checkpoint records them.
    pub fn planned(&self) -> Vec<PlannedGeneration> {
        self.generations.iter().map(Generation::planned).collect()
    }

    /// Checks and takes results child by child, each by the generation it names (see
    /// [`Generation::accept_from`]): a child older than every generation here is late and
    /// ignored, one newer than all of them is refused. The message's stage times go to the
    /// oldest generation it has children of.
    pub fn accept_from(&mut self, results: Results, classes: usize) -> Accepted {
        let (Some(first), Some(last)) = (
            self.generations.front().map(Generation::number),
            self.generations.back().map(Generation::number),
        ) else {
            return Accepted::default();
        };
        let Results {
            from,
            scored,
            lost,
            times,
        } = results;
        let slot = |generation: u64| (generation.clamp(first, last) - first) as usize;
        let mut groups: Vec<(Vec<ScoredChild>, Vec<LostChild>)> =
            vec![Default::default(); self.generations.len()];
        for child in scored {
            groups[slot(child.generation)].0.push(child);
        }
        for child in lost {
            groups[slot(child.generation)].1.push(child);
        }
        let mut times = Some(times);
        let mut accepted = Accepted::default();
        for (generation, (scored, lost)) in self.generations.iter_mut().zip(groups) {
            if scored.is_empty() && lost.is_empty() {
                continue;
            }
            let results = Results {
                from,
                scored,
                lost,
                times: times.take().unwrap_or_default(),
            };
            let a = generation.accept_from(results, classes);
            accepted.kinds.extend(a.kinds);
            accepted.rejected.extend(a.rejected);
        }
        accepted
    }

    /// After an actor restart: re-issues the open jobs of every generation out (routed
    /// with `route` from now on), oldest first, with each generation's number.
    pub fn reissue(&mut self, route: EvaluatorRoute) -> Vec<(u64, Reissue)> {
        self.generations
            .iter_mut()
            .filter(|g| g.is_dispatched())
            .map(|g| {
                let r = g.reissue();
                if matches!(r, Reissue::Jobs(_)) {
                    g.routed(route);
                }
                (g.number(), r)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pareidolia_core::Evaluated;

    use super::*;
    use crate::map_elites::messages::child_id;

    fn scored(id: u64) -> ScoredChild {
        ScoredChild {
            id,
            generation: id >> 32,
            genome: Arc::from(&[id as u8][..]),
            scores: vec![0.5, 0.5],
            probabilities: vec![0.5, 0.5],
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
                genome: vec![id as u8].into(),
                scores,
                probabilities: Vec::new(),
            });
        }
        archive
    }

    #[test]
    fn plans_pairs_with_seeds_keyed_by_child_and_the_same_parents_for_the_same_rng() {
        let archive = filled_archive();
        let mut rng = seeds::selection_rng(1);
        let g = Generation::plan(3, 5, 1, &archive, &mut rng, None);
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
            Generation::plan(3, 5, 1, &archive, &mut again, None).jobs(),
            g.jobs()
        );
        // Generation 0, and an empty archive, make random genomes.
        let zero = Generation::plan(0, 3, 1, &archive, &mut rng, None);
        assert!(zero.jobs().iter().all(|j| j.recipe == Recipe::Random));
        let empty = Generation::plan(4, 2, 1, &Archive::new(2), &mut rng, None);
        assert_eq!(empty.jobs()[0].recipe, Recipe::Random);
        assert_eq!(
            empty.jobs()[0].child_seeds[0],
            seeds::derive(1, Stream::Initial, 4, 0)
        );
    }

    #[test]
    fn duplicates_and_strangers_count_once_and_results_come_back_in_id_order() {
        let mut rng = seeds::selection_rng(1);
        let mut g = Generation::plan(2, 4, 1, &filled_archive(), &mut rng, None);
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
        let mut g = Generation::plan(3, 8, 1, &filled_archive(), &mut rng, None);
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
        let mut g = Generation::plan(1, 5, 1, &filled_archive(), &mut rng, None);
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
        let mut g = Generation::plan(0, 2, 1, &Archive::new(2), &mut rng, None);
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

    fn route(evaluators: u32) -> EvaluatorRoute {
        EvaluatorRoute {
            batch_size: 2,
            evaluators,
        }
    }

    #[test]
    fn a_planned_generation_is_rebuilt_from_its_parents_job_for_job() {
        let mut rng = seeds::selection_rng(4);
        let g = Generation::plan(6, 7, 4, &filled_archive(), &mut rng, None);
        let planned = g.planned();
        assert_eq!(planned.parents.len(), 4);
        assert!(planned.parents.iter().all(Option::is_some));
        assert_eq!(Generation::from_parents(&planned, 4, None).jobs(), g.jobs());
        let zero = Generation::plan(0, 3, 4, &filled_archive(), &mut rng, None);
        assert!(zero.planned().parents.iter().all(Option::is_none));
        assert_eq!(
            Generation::from_parents(&zero.planned(), 4, None).jobs(),
            zero.jobs()
        );
    }

    #[test]
    fn steering_marks_a_share_of_bred_children_without_changing_the_parents() {
        let archive = filled_archive();
        let plain = Generation::plan(5, 400, 3, &archive, &mut seeds::selection_rng(3), None);
        for target in [SteerTarget::Parent, SteerTarget::Uniform] {
            let plan = SteerPlan {
                share: 0.25,
                target,
                classes: vec![0, 1],
            };
            let mut rng = seeds::selection_rng(3);
            let g = Generation::plan(5, 400, 3, &archive, &mut rng, Some(&plan));
            // The same parents, seeds and crossovers as without the operator.
            for (a, b) in g.jobs().iter().zip(plain.jobs()) {
                assert_eq!((&a.recipe, &a.child_seeds), (&b.recipe, &b.child_seeds));
                assert!(b.steer.is_empty());
                assert_eq!(a.steer.len(), a.children as usize);
            }
            let planned = g.planned();
            assert_eq!(
                planned.parent_classes.is_empty(),
                target == SteerTarget::Uniform
            );
            // Rebuilt from a checkpoint's plan: the same marks.
            assert_eq!(
                Generation::from_parents(&planned, 3, Some(&plan)).jobs(),
                g.jobs()
            );
            let marks: Vec<Option<u32>> = g.jobs().iter().flat_map(|j| j.steer.clone()).collect();
            let steered = marks.iter().flatten().count();
            assert!((60..140).contains(&steered), "{target:?}: {steered} of 400");
            if target == SteerTarget::Parent {
                // Each steered child targets the class its own parent was drawn for; the
                // archive's champion 1 holds cell 0, champion 2 cell 1.
                for (k, job) in g.jobs().iter().enumerate() {
                    let (ca, cb) = planned.parent_classes[k].unwrap();
                    let Recipe::Breed { a, b } = &job.recipe else {
                        panic!("bred")
                    };
                    assert_eq!((a[0] as u32 - 1, b[0] as u32 - 1), (ca, cb));
                    for (i, t) in job.steer.iter().enumerate() {
                        if let Some(t) = t {
                            assert_eq!(*t, if i == 0 { ca } else { cb });
                        }
                    }
                }
            } else {
                assert!(marks.iter().flatten().any(|&t| t == 0));
                assert!(marks.iter().flatten().any(|&t| t == 1));
            }
        }
        // The initial population is random genomes: nothing to steer.
        let plan = SteerPlan {
            share: 1.0,
            target: SteerTarget::Uniform,
            classes: vec![0, 1],
        };
        let zero = Generation::plan(0, 4, 3, &archive, &mut seeds::selection_rng(3), Some(&plan));
        assert!(zero.jobs().iter().all(|j| j.steer.is_empty()));
    }

    #[test]
    fn the_lag_says_how_far_ahead_generations_are_planned() {
        let sync = Pipeline::new(0);
        assert!(sync.wants(0, None));
        assert!(!sync.wants(1, None), "nothing before generation 0 is in");
        assert!(sync.wants(4, Some(3)));
        assert!(!sync.wants(5, Some(3)));
        let lagged = Pipeline::new(2);
        assert!(!lagged.wants(1, None));
        // After generation 3: generations 4, 5 and 6 (6 from the archive after 3).
        assert!(lagged.wants(6, Some(3)));
        assert!(!lagged.wants(7, Some(3)));
    }

    /// A lag-1 pipeline of generations `numbers` (4 children each) with those up to `out`
    /// sent out over `evaluators`.
    fn pipeline(numbers: std::ops::RangeInclusive<u64>, out: u64, evaluators: u32) -> Pipeline {
        let archive = filled_archive();
        let mut rng = seeds::selection_rng(1);
        let mut p = Pipeline::new(1);
        for number in numbers {
            p.push(Generation::plan(number, 4, 1, &archive, &mut rng, None));
        }
        for g in p.undispatched(out) {
            g.routed(route(evaluators));
        }
        p
    }

    #[test]
    fn results_go_to_their_own_generation_and_only_the_oldest_is_inserted() {
        let mut p = pipeline(3..=5, 4, 1);
        assert!(p.front_in_flight());
        assert_eq!(p.outstanding(), 8, "generation 5 is planned, not out");
        assert_eq!(p.undispatched(u64::MAX).count(), 1);
        let results = |scored| Results {
            from: 0,
            scored,
            lost: vec![lost(child_id(4, 3), LossKind::Render)],
            times: StageTimes {
                breed_s: 1.0,
                ..Default::default()
            },
        };
        // Generation 4 completes first, with children of 3, a late one of 2 and some of 5
        // (not sent out) in the same message.
        let a = p.accept_from(
            results(vec![
                scored(child_id(4, 0)),
                scored(child_id(2, 1)),
                scored(child_id(4, 1)),
                scored(child_id(3, 0)),
                scored(child_id(4, 2)),
                scored(child_id(5, 0)),
                scored(child_id(9, 0)),
            ]),
            2,
        );
        assert_eq!(a.kinds, [LossKind::Render]);
        assert_eq!(
            a.rejected,
            [
                (child_id(5, 0), Rejection::Unrequested),
                (child_id(9, 0), Rejection::Unrequested),
            ]
        );
        assert_eq!(p.outstanding(), 3);
        assert!(p.pop_complete().is_none(), "generation 3 is still out");
        p.accept_from(results((1..4).map(|i| scored(child_id(3, i))).collect()), 2);
        let three = p.pop_complete().expect("generation 3 is in");
        assert_eq!(three.number(), 3);
        assert_eq!(
            three.times().breed_s,
            2.0,
            "both messages had children of 3"
        );
        let four = p.pop_complete().expect("generation 4 waited behind it");
        assert_eq!(four.number(), 4);
        assert_eq!(four.times().breed_s, 0.0);
        assert_eq!(four.lost().len(), 1);
        assert!(p.pop_complete().is_none(), "generation 5 is not out");
        assert!(!p.front_in_flight());
        assert_eq!(
            p.planned().iter().map(|g| g.generation).collect::<Vec<_>>(),
            [5]
        );
    }

    #[test]
    fn a_reissue_resends_the_open_jobs_of_every_generation_out() {
        let mut p = pipeline(1..=3, 2, 2);
        p.accept_from(
            Results {
                from: 1,
                scored: vec![scored(child_id(1, 0)), scored(child_id(1, 1))],
                lost: Vec::new(),
                times: Default::default(),
            },
            2,
        );
        let r = p.reissue(route(1));
        let firsts = |r: &Reissue| match r {
            Reissue::Jobs(jobs) => jobs.iter().map(|j| j.first_index).collect::<Vec<_>>(),
            other => panic!("expected jobs, got {other:?}"),
        };
        assert_eq!(r.len(), 2, "generation 3 was never sent out");
        assert_eq!((r[0].0, firsts(&r[0].1)), (1, vec![2]));
        assert_eq!((r[1].0, firsts(&r[1].1)), (2, vec![0, 2]));
        // From now on evaluator 0 may return any of their children.
        let a = p.accept_from(
            Results {
                from: 0,
                scored: vec![scored(child_id(1, 2)), scored(child_id(1, 3))],
                lost: Vec::new(),
                times: Default::default(),
            },
            2,
        );
        assert!(a.rejected.is_empty());
        assert_eq!(p.pop_complete().map(|g| g.number()), Some(1));
    }
}
