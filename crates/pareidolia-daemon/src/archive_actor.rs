//! ArchiveActor: the one owner of the MAP-Elites archive. It runs generations the way the
//! paper's code does: issue all children of a generation (parents drawn uniformly over
//! occupied cells), wait until every child is scored or accounted as lost, then insert them in
//! id order, so the result does not depend on which mutator or batch finished first.

use std::collections::BTreeSet;
use std::time::Instant;

use pareidolia_core::seeds::{self, HostRng, Stream};
use pareidolia_core::summary::StageTimes;
use pareidolia_core::{Archive, Evaluated};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, watch};

use crate::experiment::{Progress, RunError, RunOutcome};
use crate::messages::{BreedJob, LostChild, Recipe, ScoredChild, child_id};
use crate::mutator_actor::MutatorMsg;

/// How often one generation's outstanding children are re-issued before they count as lost.
const MAX_REISSUES: u32 = 3;

/// The actor.
#[derive(Debug, Default)]
pub struct ArchiveActor;

/// Messages the archive handles.
#[derive(Debug)]
pub enum ArchiveMsg {
    /// Begin (or continue with) the next generation.
    Next,
    /// Scores and losses from the evaluator.
    Results {
        /// Scored children.
        scored: Vec<ScoredChild>,
        /// Children that will never be scored.
        lost: Vec<LostChild>,
        /// Time the work took, per stage.
        times: StageTimes,
    },
    /// A mutator or evaluator was restarted: re-issue every child still outstanding.
    Reissue,
}

/// What the run asks of the archive.
#[derive(Debug, Clone)]
pub struct ArchivePlan {
    /// Run seed.
    pub seed: u64,
    /// Generations after the initial population.
    pub generations: u64,
    /// Children per generation.
    pub offspring: u32,
    /// Initial population.
    pub initial: u32,
    /// Classes (cells).
    pub classes: usize,
    /// Process group of the mutators.
    pub mutator_group: String,
}

/// Start-up arguments.
pub struct ArchiveArgs {
    /// The plan.
    pub plan: ArchivePlan,
    /// Progress after every generation.
    pub progress: watch::Sender<Progress>,
    /// Where the outcome goes.
    pub done: mpsc::UnboundedSender<Result<RunOutcome, RunError>>,
}

/// The archive's state.
pub struct ArchiveState {
    plan: ArchivePlan,
    archive: Archive,
    rng: HostRng,
    generation: u64,
    jobs: Vec<BreedJob>,
    pending: BTreeSet<u64>,
    results: Vec<ScoredChild>,
    reissues: u32,
    evaluations: u64,
    lost: u64,
    lost_this_generation: Vec<LostChild>,
    started: Instant,
    progress: watch::Sender<Progress>,
    done: mpsc::UnboundedSender<Result<RunOutcome, RunError>>,
    finished: bool,
    times: StageTimes,
}

impl ArchiveState {
    /// The jobs of a generation; draws parents from the archive.
    fn make_jobs(&mut self, generation: u64) -> Vec<BreedJob> {
        let seed = self.plan.seed;
        let size = if generation == 0 {
            self.plan.initial
        } else {
            self.plan.offspring
        };
        (0..size.div_ceil(2))
            .map(|k| {
                let first = 2 * k;
                let children = (size - first).min(2);
                let (stream, recipe) = if generation == 0 {
                    (Stream::Initial, Recipe::Random)
                } else {
                    let a = self
                        .archive
                        .pick_parent(&mut self.rng)
                        .map(|c| c.genome.clone());
                    let b = self
                        .archive
                        .pick_parent(&mut self.rng)
                        .map(|c| c.genome.clone());
                    match (a, b) {
                        (Some(a), Some(b)) => (Stream::Mutation, Recipe::Breed { a, b }),
                        // An empty archive (every initial child lost) restarts from random genomes.
                        _ => (Stream::Initial, Recipe::Random),
                    }
                };
                BreedJob {
                    generation,
                    generation_size: size,
                    first_index: first,
                    children,
                    recipe,
                    crossover_seed: seeds::derive(seed, Stream::Crossover, generation, k as u64),
                    child_seeds: (first..first + children)
                        .map(|i| seeds::derive(seed, stream, generation, i as u64))
                        .collect(),
                }
            })
            .collect()
    }

    /// Sends jobs to the mutators, round-robin.
    fn dispatch(&self, jobs: &[BreedJob]) {
        let mut mutators = ractor::pg::get_members(&self.plan.mutator_group);
        mutators.sort_by_key(|m| m.get_id());
        if mutators.is_empty() {
            tracing::warn!("no mutator running; jobs wait for a restart");
            return;
        }
        for (k, job) in jobs.iter().enumerate() {
            let mutator: ActorRef<MutatorMsg> = mutators[k % mutators.len()].clone().into();
            if mutator.cast(MutatorMsg::Breed(job.clone())).is_err() {
                tracing::debug!("mutator gone; its job is re-issued after the restart");
            }
        }
    }

    fn start_generation(&mut self) {
        let generation = self.generation;
        self.jobs = self.make_jobs(generation);
        self.pending = self
            .jobs
            .iter()
            .flat_map(|j| (0..j.children).map(move |k| child_id(generation, j.first_index + k)))
            .collect();
        self.results.clear();
        self.lost_this_generation.clear();
        self.reissues = 0;
        self.dispatch(&self.jobs);
    }

    fn reissue(&mut self) {
        if self.finished || self.pending.is_empty() {
            return;
        }
        self.reissues += 1;
        if self.reissues > MAX_REISSUES {
            tracing::warn!(
                children = self.pending.len(),
                generation = self.generation,
                "children lost after repeated re-issues"
            );
            let generation = self.generation;
            let lost: Vec<LostChild> = std::mem::take(&mut self.pending)
                .into_iter()
                .map(|id| LostChild {
                    id,
                    generation,
                    generation_size: 0,
                    stage: "actor".into(),
                    reason: "its actor failed repeatedly".into(),
                })
                .collect();
            self.lost += lost.len() as u64;
            self.lost_this_generation.extend(lost);
            return;
        }
        let generation = self.generation;
        let open: Vec<BreedJob> = self
            .jobs
            .iter()
            .filter(|j| {
                (0..j.children).any(|k| {
                    self.pending
                        .contains(&child_id(generation, j.first_index + k))
                })
            })
            .cloned()
            .collect();
        tracing::info!(jobs = open.len(), generation, "re-issuing work in flight");
        self.dispatch(&open);
    }

    fn accept(&mut self, scored: Vec<ScoredChild>, lost: Vec<LostChild>) {
        for child in scored {
            if self.pending.remove(&child.id) {
                self.results.push(child);
            }
        }
        for child in lost {
            if self.pending.remove(&child.id) {
                self.lost += 1;
                self.lost_this_generation.push(child);
            }
        }
    }

    /// Inserts the finished generation; returns whether the run is over.
    fn complete_generation(&mut self) -> Result<bool, RunError> {
        if self.results.is_empty() {
            let first = self.lost_this_generation.first();
            return Err(RunError::GenerationLost {
                generation: self.generation,
                stage: first.map(|l| l.stage.clone()).unwrap_or_default(),
                reason: first
                    .map(|l| l.reason.clone())
                    .unwrap_or_else(|| "no child was scored".into()),
            });
        }
        let mut results = std::mem::take(&mut self.results);
        results.sort_by_key(|c| c.id);
        self.evaluations += results.len() as u64;
        for child in results {
            self.archive.insert(Evaluated {
                id: child.id,
                generation: child.generation,
                genome: child.genome.to_vec(),
                scores: child.scores,
            });
        }
        let progress = self.snapshot_progress();
        self.progress.send_replace(progress);
        Ok(self.generation >= self.plan.generations)
    }

    fn snapshot_progress(&self) -> Progress {
        let elapsed = self.started.elapsed();
        Progress {
            generation: self.generation,
            generations: self.plan.generations,
            evaluations: self.evaluations,
            lost: self.lost,
            replacements: self.archive.replacements(),
            stats: self.archive.stats(),
            elapsed_s: elapsed.as_secs_f64(),
            times: self.times,
        }
    }

    fn finish(&mut self, outcome: Result<RunOutcome, RunError>) {
        self.finished = true;
        let _ = self.done.send(outcome);
    }

    fn outcome(&self) -> RunOutcome {
        RunOutcome {
            cells: self.archive.cells().to_vec(),
            progress: self.snapshot_progress(),
        }
    }
}

impl Actor for ArchiveActor {
    type Msg = ArchiveMsg;
    type State = ArchiveState;
    type Arguments = ArchiveArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ArchiveArgs,
    ) -> Result<ArchiveState, ActorProcessingErr> {
        Ok(ArchiveState {
            archive: Archive::new(args.plan.classes),
            rng: seeds::selection_rng(args.plan.seed),
            plan: args.plan,
            generation: 0,
            jobs: Vec::new(),
            pending: BTreeSet::new(),
            results: Vec::new(),
            reissues: 0,
            evaluations: 0,
            lost: 0,
            lost_this_generation: Vec::new(),
            started: Instant::now(),
            progress: args.progress,
            done: args.done,
            finished: false,
            times: StageTimes::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: ArchiveMsg,
        state: &mut ArchiveState,
    ) -> Result<(), ActorProcessingErr> {
        if state.finished {
            return Ok(());
        }
        match msg {
            ArchiveMsg::Next => state.start_generation(),
            ArchiveMsg::Results {
                scored,
                lost,
                times,
            } => {
                state.times += times;
                state.accept(scored, lost);
                if state.pending.is_empty() && !state.jobs.is_empty() {
                    state.jobs.clear();
                    match state.complete_generation() {
                        Ok(true) => {
                            let outcome = state.outcome();
                            state.finish(Ok(outcome));
                        }
                        Ok(false) => {
                            state.generation += 1;
                            myself.cast(ArchiveMsg::Next)?;
                        }
                        Err(e) => state.finish(Err(e)),
                    }
                }
            }
            ArchiveMsg::Reissue => {
                state.reissue();
                if state.pending.is_empty() && !state.jobs.is_empty() {
                    // Everything outstanding was written off: complete with what arrived.
                    myself.cast(ArchiveMsg::Results {
                        scored: Vec::new(),
                        lost: Vec::new(),
                        times: StageTimes::default(),
                    })?;
                }
            }
        }
        Ok(())
    }
}
