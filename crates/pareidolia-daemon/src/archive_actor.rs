//! ArchiveActor: the one owner of the MAP-Elites archive. It runs generations the way the
//! paper's code does: issue all children of a generation (parents drawn uniformly over
//! occupied cells), wait until every child is scored or accounted as lost, then insert them in
//! id order, so the result does not depend on which mutator or batch finished first.
//!
//! It also owns the run's continuity: it checkpoints at generation boundaries (the only
//! moments at which its state is complete), starts from a checkpoint when resuming, and on a
//! shutdown request lets the generation in flight finish, writes a final checkpoint and ends.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use pareidolia_core::checkpoint::{
    self, Checkpoint, CheckpointMeta, CheckpointStore, ModelIdentity,
};
use pareidolia_core::config::RunConfig;
use pareidolia_core::seeds::{self, HostRng, Stream};
use pareidolia_core::summary::{PluginSummary, StageTimes};
use pareidolia_core::{Archive, Evaluated};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, watch};

use crate::experiment::{Progress, RunError, RunOutcome};
use crate::history::History;
use crate::messages::{BreedJob, LostChild, Recipe, ScoredChild, child_id};
use crate::metrics_actor::{MetricsMsg, observe};
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
    /// Finish the generation in flight, write a final checkpoint and end the run.
    Shutdown,
}

/// When and where to checkpoint, and what every checkpoint says about the run.
#[derive(Debug, Clone)]
pub struct CheckpointPlan {
    /// The run folder's checkpoints.
    pub store: CheckpointStore,
    /// Every this many generations (0 = never by count).
    pub every_generations: u64,
    /// Every this many seconds (0 = never by time).
    pub every_seconds: f64,
    /// The resolved config.
    pub config: RunConfig,
    /// The model.
    pub model: ModelIdentity,
    /// The encoding plugin.
    pub encoding: PluginSummary,
    /// The fitness plugin.
    pub fitness: PluginSummary,
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
    /// Name of the metrics actor (observations go there if it runs).
    pub metrics: String,
    /// Run folder to keep `history.csv` in, if any.
    pub history: Option<PathBuf>,
    /// Checkpointing, if any.
    pub checkpoint: Option<CheckpointPlan>,
}

/// Start-up arguments.
pub struct ArchiveArgs {
    /// The plan.
    pub plan: ArchivePlan,
    /// The checkpoint to continue from, if resuming.
    pub resume: Option<Checkpoint>,
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
    /// The generation in flight, or next to start.
    generation: u64,
    /// The last generation whose children are all inserted.
    completed: Option<u64>,
    jobs: Vec<BreedJob>,
    pending: BTreeSet<u64>,
    results: Vec<ScoredChild>,
    reissues: u32,
    evaluations: u64,
    lost: u64,
    lost_this_generation: Vec<LostChild>,
    started: Instant,
    /// Evolution seconds of earlier sessions (resume).
    elapsed_before: f64,
    times: StageTimes,
    last_checkpoint: Instant,
    last_checkpoint_generation: Option<u64>,
    last_checkpoint_path: Option<PathBuf>,
    last_checkpoint_unix_s: Option<f64>,
    checkpoint_failures: u64,
    stopping: bool,
    progress: watch::Sender<Progress>,
    done: mpsc::UnboundedSender<Result<RunOutcome, RunError>>,
    finished: bool,
    history: Option<History>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
        observe(
            &self.plan.metrics,
            MetricsMsg::AwaitingResults(self.pending.len()),
        );
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
        let mut stages = Vec::new();
        for child in lost {
            if self.pending.remove(&child.id) {
                self.lost += 1;
                stages.push(child.stage.clone());
                self.lost_this_generation.push(child);
            }
        }
        // Counted here, where duplicates from re-issued work are already gone.
        if !stages.is_empty() {
            observe(&self.plan.metrics, MetricsMsg::Lost(stages));
        }
        observe(
            &self.plan.metrics,
            MetricsMsg::AwaitingResults(self.pending.len()),
        );
    }

    /// Inserts the finished generation.
    fn complete_generation(&mut self) -> Result<(), RunError> {
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
        let start = Instant::now();
        for child in results {
            self.archive.insert(Evaluated {
                id: child.id,
                generation: child.generation,
                genome: child.genome.to_vec(),
                scores: child.scores,
            });
        }
        observe(
            &self.plan.metrics,
            MetricsMsg::ArchiveInsert(start.elapsed().as_secs_f64()),
        );
        self.jobs.clear();
        self.completed = Some(self.generation);
        self.generation += 1;
        Ok(())
    }

    fn run_over(&self) -> bool {
        self.completed.is_some_and(|c| c >= self.plan.generations)
    }

    fn checkpoint_due(&self) -> bool {
        let (Some(plan), Some(done)) = (&self.plan.checkpoint, self.completed) else {
            return false;
        };
        if self.last_checkpoint_generation == Some(done) {
            return false;
        }
        (plan.every_generations > 0 && done % plan.every_generations == 0)
            || (plan.every_seconds > 0.0
                && self.last_checkpoint.elapsed().as_secs_f64() >= plan.every_seconds)
    }

    /// Writes a checkpoint of the last completed generation, off the async executor. A failed
    /// write (full disk, vanished folder) is logged and counted; the run goes on and the
    /// previous checkpoint stays valid.
    async fn write_checkpoint(&mut self) -> Result<(), ActorProcessingErr> {
        let (Some(plan), Some(done)) = (&self.plan.checkpoint, self.completed) else {
            return Ok(());
        };
        if self.last_checkpoint_generation == Some(done) {
            return Ok(());
        }
        let (champions, cells, distinct) = checkpoint::index_champions(self.archive.cells());
        let p = self.snapshot_progress();
        let meta = CheckpointMeta {
            pareidolia_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_unix_s: unix_now(),
            generation: done,
            evaluations: self.evaluations,
            lost: self.lost,
            replacements: self.archive.replacements(),
            elapsed_s: p.elapsed_s,
            stage_times: self.times,
            rng: self.rng.clone(),
            config: plan.config.clone(),
            base_dir: plan.config.base_dir.clone(),
            model: plan.model.clone(),
            encoding: plan.encoding.clone(),
            fitness: plan.fitness.clone(),
            champions,
            cells,
        };
        let store = plan.store.clone();
        let written = tokio::task::spawn_blocking(move || {
            store.write(done, &checkpoint::encode(&meta, &distinct))
        })
        .await?;
        self.last_checkpoint = Instant::now();
        match written {
            Ok(path) => {
                tracing::info!(generation = done, path = %path.display(), "checkpoint written");
                self.last_checkpoint_generation = Some(done);
                self.last_checkpoint_path = Some(path);
                self.last_checkpoint_unix_s = Some(unix_now());
            }
            Err(e) => {
                self.checkpoint_failures += 1;
                tracing::error!(generation = done, error = %e, "checkpoint failed; the previous checkpoint is kept");
            }
        }
        self.progress.send_replace(self.snapshot_progress());
        Ok(())
    }

    fn snapshot_progress(&self) -> Progress {
        Progress {
            generation: self.completed.unwrap_or(0),
            generations: self.plan.generations,
            evaluations: self.evaluations,
            lost: self.lost,
            replacements: self.archive.replacements(),
            stats: self.archive.stats(),
            elapsed_s: self.elapsed_before + self.started.elapsed().as_secs_f64(),
            times: self.times,
            last_checkpoint_generation: self.last_checkpoint_generation,
            last_checkpoint_unix_s: self.last_checkpoint_unix_s,
            checkpoint_failures: self.checkpoint_failures,
            // Champions share their genome and scores by `Arc`: this copies pointers only.
            champions: std::sync::Arc::new(self.archive.cells().to_vec()),
        }
    }

    /// Ends the run: a final checkpoint, then the outcome.
    async fn finish(&mut self) -> Result<(), ActorProcessingErr> {
        self.write_checkpoint().await?;
        self.finished = true;
        self.progress.send_replace(self.snapshot_progress());
        let outcome = RunOutcome {
            cells: self.archive.cells().to_vec(),
            progress: self.snapshot_progress(),
            interrupted: !self.run_over(),
            checkpoint: self.last_checkpoint_path.clone(),
        };
        let _ = self.done.send(Ok(outcome));
        Ok(())
    }

    fn fail(&mut self, error: RunError) {
        self.finished = true;
        let _ = self.done.send(Err(error));
    }

    /// After a generation completed: checkpoint if due, then stop or go on.
    async fn after_generation(
        &mut self,
        myself: &ActorRef<ArchiveMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let progress = self.snapshot_progress();
        if let Some(history) = &mut self.history
            && let Err(e) = history.append(&progress)
        {
            tracing::warn!(path = %history.path().display(), error = %e, "cannot append to the history; it stops here");
            self.history = None;
        }
        self.progress.send_replace(progress);
        if self.run_over() || self.stopping {
            return self.finish().await;
        }
        if self.checkpoint_due() {
            self.write_checkpoint().await?;
        }
        myself.cast(ArchiveMsg::Next)?;
        Ok(())
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
        let mut state = ArchiveState {
            archive: Archive::new(args.plan.classes),
            rng: seeds::selection_rng(args.plan.seed),
            plan: args.plan,
            generation: 0,
            completed: None,
            jobs: Vec::new(),
            pending: BTreeSet::new(),
            results: Vec::new(),
            reissues: 0,
            evaluations: 0,
            lost: 0,
            lost_this_generation: Vec::new(),
            started: Instant::now(),
            elapsed_before: 0.0,
            times: StageTimes::default(),
            last_checkpoint: Instant::now(),
            last_checkpoint_generation: None,
            last_checkpoint_path: None,
            last_checkpoint_unix_s: None,
            checkpoint_failures: 0,
            stopping: false,
            progress: args.progress,
            done: args.done,
            finished: false,
            history: None,
        };
        if let Some(c) = args.resume {
            let m = c.meta;
            state.archive = Archive::restore(c.cells, m.replacements);
            state.rng = m.rng;
            state.generation = m.generation + 1;
            state.completed = Some(m.generation);
            state.evaluations = m.evaluations;
            state.lost = m.lost;
            state.elapsed_before = m.elapsed_s;
            state.times = m.stage_times;
            state.last_checkpoint_generation = Some(m.generation);
            state.last_checkpoint_unix_s = Some(m.created_unix_s);
            // /status, /metrics and the gallery show the resumed archive at once, not an
            // empty one until the first new generation is in.
            state.progress.send_replace(state.snapshot_progress());
        }
        if let Some(dir) = &state.plan.history {
            match History::open(dir, state.completed) {
                Ok(h) => state.history = Some(h),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot write history.csv; running without it")
                }
            }
        }
        Ok(state)
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
            ArchiveMsg::Next => {
                if state.run_over() || state.stopping {
                    state.finish().await?;
                } else {
                    state.start_generation();
                }
            }
            ArchiveMsg::Results {
                scored,
                lost,
                times,
            } => {
                state.times += times;
                state.accept(scored, lost);
                if state.pending.is_empty() && !state.jobs.is_empty() {
                    match state.complete_generation() {
                        Ok(()) => state.after_generation(&myself).await?,
                        Err(e) => state.fail(e),
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
            ArchiveMsg::Shutdown => {
                tracing::info!(
                    generation = state.generation,
                    "shutdown requested: finishing the generation in flight"
                );
                state.stopping = true;
                if state.jobs.is_empty() {
                    state.finish().await?;
                }
            }
        }
        Ok(())
    }
}
