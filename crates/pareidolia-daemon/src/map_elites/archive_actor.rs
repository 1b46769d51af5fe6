//! ArchiveActor: the one owner of the MAP-Elites archive. It runs generations the way the
//! paper's code does — issue all children of a generation, wait until every child is scored
//! or accounted as lost, then insert them in id order — with the bookkeeping in a plain
//! [`Pipeline`] of [`Generation`]s; its handlers only forward messages there and act on the
//! answer. With `lag` L >= 1 the next L generations are out while one is finishing (their
//! parents drawn L generations earlier), and generations are still inserted one at a time.
//!
//! It also owns the run's continuity: it checkpoints at generation boundaries (the only
//! moments at which its state is complete; the generations planned ahead go into the
//! checkpoint with their parents), starts from a checkpoint when resuming, and on a
//! shutdown request lets the generation in flight finish, writes a final checkpoint and ends.
//! A stop condition ([`StopConfig`]: `--until`, `--max-seconds`) met after a generation ends
//! the run the same way, at that generation, and is recorded in the final checkpoint.

use std::path::PathBuf;
use std::time::Instant;

use pareidolia_core::checkpoint::{Checkpoint, CheckpointStore};
use pareidolia_core::config::RunConfig;
use pareidolia_core::seeds::{self, HostRng};
use pareidolia_core::{Archive, Evaluated, RunIdentity, StopConfig};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, watch};

use crate::map_elites::generation::{Generation, Pipeline, Reissue, SteerPlan};
use crate::map_elites::messages::{
    ArchiveMsg, BreedBatch, BreedJob, EvaluatorMsg, EvaluatorRoute, MetricsMsg, MutatorMsg,
    child_id, child_index, live_evaluators, names, observe, remote_nodes,
};
use crate::run::ledger::{Cadence, Ledger, unix_now};
use crate::run::outcome::{Progress, RunError, RunOutcome};

/// The actor.
#[derive(Debug, Default)]
pub struct ArchiveActor;

/// How often the archive looks again while it waits for evaluators (`--wait-workers`).
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// When and where to checkpoint, and what every checkpoint says about the run.
#[derive(Debug, Clone)]
pub struct CheckpointPlan {
    /// The run folder's checkpoints.
    pub store: CheckpointStore,
    /// When checkpoints are due.
    pub cadence: Cadence,
    /// The resolved config.
    pub config: RunConfig,
    /// The run's identity.
    pub identity: RunIdentity,
}

/// What the run asks of the archive.
#[derive(Debug, Clone)]
pub struct ArchivePlan {
    /// The run's id (prefix of its actors' names).
    pub run: String,
    /// Run seed.
    pub seed: u64,
    /// Generations after the initial population.
    pub generations: u64,
    /// Children per generation.
    pub offspring: u32,
    /// Initial population.
    pub initial: u32,
    /// Classes (the model's outputs).
    pub classes: usize,
    /// Generations of lag in parent selection (config `lag`; see [`Pipeline`]).
    pub lag: u32,
    /// Which evaluator scores which batch (sent with every job). Its `evaluators` is the
    /// run's local evaluators; each generation is routed over the evaluators running when
    /// it starts ([`live_evaluators`]: the local ones and those on worker nodes), which
    /// changes which evaluator scores a batch, never what the batch holds.
    pub route: EvaluatorRoute,
    /// Whether the evaluators breed their own batches (their inference threads, from the
    /// jobs): a CPU run with `mutators = 0` where every core has a worker. Mutators on
    /// worker nodes then get no work (logged when one is in the run).
    pub breed_on_evaluators: bool,
    /// Worker nodes (any role) to wait for before the first generation of this session
    /// starts (`daemon --wait-workers`); 0 = none.
    pub wait_nodes: u32,
    /// Which children take gradient steps (`[search.gradient]`); `None` = the paper's loop.
    pub steer: Option<SteerPlan>,
    /// The classes that are cells (`archive.classes`); `None` = every class.
    pub cells: Option<Vec<usize>>,
    /// Run folder to keep `history.csv` in, if any.
    pub history: Option<PathBuf>,
    /// Checkpointing, if any.
    pub checkpoint: Option<CheckpointPlan>,
    /// When to end before the last generation.
    pub stop: StopConfig,
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
    /// The generations planned and not yet inserted, oldest first.
    pipeline: Pipeline,
    /// The next generation to plan.
    next: u64,
    /// Counters, checkpoints, stop conditions, history and progress (the last generation
    /// whose children are all inserted is its `completed`).
    ledger: Ledger,
    stopping: bool,
    /// The first generation of this session no longer waits for evaluators.
    waited: bool,
    /// The wait for evaluators was logged.
    wait_logged: bool,
    /// Mutators that get no work (the evaluators breed) were logged.
    idle_mutators_logged: bool,
    finished: bool,
    progress: watch::Sender<Progress>,
    done: mpsc::UnboundedSender<Result<RunOutcome, RunError>>,
}

/// The jobs grouped by the batch their first child is in, in order: the unit of dispatch,
/// so that a mutator makes a batch's children together and sends them on as one message.
pub fn by_batch(jobs: &[BreedJob], batch_size: u32) -> Vec<Vec<BreedJob>> {
    let mut groups: Vec<Vec<BreedJob>> = Vec::new();
    let mut current = None;
    for job in jobs {
        let batch = child_index(job.child_ids().next().unwrap_or(0)) / batch_size.max(1);
        if current != Some(batch) {
            groups.push(Vec::new());
            current = Some(batch);
        }
        groups.last_mut().expect("pushed").push(job.clone());
    }
    groups
}

/// The jobs each batch needs bred, in batch order, with the batch: every job with a child in
/// it. A job whose two children fall in two batches (an odd batch size) is in both groups, so
/// each evaluator that breeds a batch makes exactly that batch's children (it breeds the
/// job and keeps its own child; a job's children are the same wherever it is bred).
pub fn batch_groups(jobs: &[BreedJob], batch_size: u32) -> Vec<BreedBatch> {
    let b = batch_size.max(1);
    let mut groups: Vec<BreedBatch> = Vec::new();
    for job in jobs {
        let last = job.first_index + job.children.max(1) - 1;
        for k in job.first_index / b..=last / b {
            let (first, end) = (k * b, ((k + 1) * b).min(job.generation_size));
            match groups.last_mut() {
                Some(g) if g.first == first && g.jobs[0].generation == job.generation => {
                    g.jobs.push(job.clone());
                }
                _ => groups.push(BreedBatch {
                    jobs: vec![job.clone()],
                    first,
                    end,
                }),
            }
        }
    }
    groups
}

/// Sends jobs out a batch's jobs at a time: in a run whose evaluators breed their own
/// batches (`mutators = 0` on CPU), each batch's jobs straight to the evaluator that scores
/// the batch (local or on a worker node), whose inference thread breeds it; otherwise to the
/// run's mutators (local, and on worker nodes), round-robin in actor-id order, each with the
/// route its children take to the evaluators. Either way a batch holds the same children,
/// bred from the same jobs.
fn dispatch(run: &str, breed_on_evaluators: bool, jobs: &[BreedJob], route: EvaluatorRoute) {
    if breed_on_evaluators {
        for batch in batch_groups(jobs, route.batch_size) {
            let index = route.evaluator_of(child_id(batch.jobs[0].generation, batch.first));
            let sent = crate::map_elites::messages::find(&names::evaluator(run, index))
                .map(ActorRef::<EvaluatorMsg>::from)
                .is_some_and(|e| e.cast(EvaluatorMsg::Breed(batch)).is_ok());
            if !sent {
                // It is restarting: the supervisor has the archive re-issue its work.
                tracing::debug!(
                    index,
                    "evaluator gone; its jobs are re-issued after the restart"
                );
            }
        }
        return;
    }
    let mut mutators = ractor::pg::get_members(&names::mutator_group(run));
    mutators.sort_by_key(|m| m.get_id());
    if mutators.is_empty() {
        tracing::warn!("no mutator running; jobs wait for a restart");
        return;
    }
    for (k, jobs) in by_batch(jobs, route.batch_size).into_iter().enumerate() {
        let mutator: ActorRef<MutatorMsg> = mutators[k % mutators.len()].clone().into();
        if mutator.cast(MutatorMsg::Breed(jobs, route)).is_err() {
            tracing::debug!("mutator gone; its jobs are re-issued after the restart");
        }
    }
}

impl ArchiveState {
    fn metrics(&self, msg: MetricsMsg) {
        observe(&names::metrics(&self.plan.run), msg);
    }

    /// The route of a generation starting now: over the evaluators running now.
    fn route(&self) -> EvaluatorRoute {
        EvaluatorRoute {
            batch_size: self.plan.route.batch_size,
            evaluators: live_evaluators(&self.plan.run).max(1),
        }
    }

    /// Whether the first generation must wait for more evaluators (`--wait-workers`).
    fn must_wait(&mut self) -> bool {
        if self.waited || self.pipeline.any_dispatched() {
            return false;
        }
        let live = remote_nodes(&self.plan.run);
        if live >= self.plan.wait_nodes {
            if self.wait_logged {
                tracing::info!(nodes = live, "worker nodes are in; the run starts");
            }
            // Waited once per session: later generations go on with whoever is there.
            self.waited = true;
            return false;
        }
        if !self.wait_logged {
            tracing::info!(
                nodes = live,
                wanted = self.plan.wait_nodes,
                "waiting for worker nodes before the first generation"
            );
            self.wait_logged = true;
        }
        true
    }

    /// Plans every generation the lag allows now (parents drawn from the archive as it is).
    /// Called after each insertion and at start-up, never depending on timing, so which
    /// archive a generation breeds from is the same in every run of the config and across a
    /// resume.
    fn top_up(&mut self) {
        while self.pipeline.wants(self.next, self.ledger.completed()) {
            let size = if self.next == 0 {
                self.plan.initial
            } else {
                self.plan.offspring
            };
            let generation = Generation::plan(
                self.next,
                size,
                self.plan.seed,
                &self.archive,
                &mut self.rng,
                self.plan.steer.as_ref(),
            );
            self.pipeline.push(generation);
            self.next += 1;
        }
    }

    /// Sends out every planned generation up to the run's last, routed over the
    /// evaluators running now.
    fn dispatch_planned(&mut self) {
        let route = self.route();
        if self.plan.breed_on_evaluators && !self.idle_mutators_logged {
            let mutators = ractor::pg::get_members(&names::mutator_group(&self.plan.run)).len();
            if mutators > 0 {
                tracing::warn!(
                    mutators,
                    "this run's evaluators breed their own batches, so its mutators (worker nodes) get no work; \
                     set `mutators` in the run's config to breed on mutators instead"
                );
                self.idle_mutators_logged = true;
            }
        }
        let (run, on_evaluators) = (&self.plan.run, self.plan.breed_on_evaluators);
        for generation in self.pipeline.undispatched(self.plan.generations) {
            generation.routed(route);
            tracing::debug!(
                generation = generation.number(),
                evaluators = route.evaluators,
                "generation routed"
            );
            dispatch(run, on_evaluators, generation.jobs(), route);
        }
        self.metrics(MetricsMsg::AwaitingResults(self.pipeline.outstanding()));
    }

    /// Inserts a finished generation's children in id order, then plans what that allows.
    fn complete(&mut self, generation: Generation) -> Result<(), RunError> {
        let number = generation.number();
        // Counted here, once a generation is in: a checkpoint's counters then cover exactly
        // the generations it records as done.
        let lost = generation.lost().len() as u64;
        let times = generation.times();
        let scored = generation.finish()?;
        let evaluations = scored.len() as u64;
        let start = Instant::now();
        for child in scored {
            self.archive.insert(Evaluated {
                id: child.id,
                generation: child.generation,
                genome: child.genome,
                scores: child.scores,
                probabilities: child.probabilities,
            });
        }
        self.metrics(MetricsMsg::ArchiveInsert(start.elapsed().as_secs_f64()));
        self.ledger.record(number, evaluations, lost, times);
        self.top_up();
        Ok(())
    }

    fn ending(&self) -> bool {
        self.ledger.ending() || self.stopping
    }

    /// Writes a checkpoint of the last completed generation (unless it is written already),
    /// off the async executor. A failed write (full disk, vanished folder) is logged and
    /// counted; the run goes on and the previous checkpoint stays valid.
    async fn write_checkpoint(&mut self) -> Result<(), ActorProcessingErr> {
        let (Some(plan), Some(done)) = (&self.plan.checkpoint, self.ledger.completed()) else {
            return Ok(());
        };
        if !self.ledger.final_checkpoint_due() {
            return Ok(());
        }
        let started = Instant::now();
        let bytes = Checkpoint::capture(
            &self.archive,
            self.ledger.counters(),
            &self.rng,
            &plan.config,
            &plan.identity,
            self.ledger.stop_reached(),
            &self.pipeline.planned(),
            unix_now(),
        );
        let store = plan.store.clone();
        let bytes_len = bytes.len();
        let written = tokio::task::spawn_blocking(move || store.write(done, &bytes)).await?;
        self.ledger.record_checkpoint(
            done,
            written.map_err(|e| e.to_string()),
            bytes_len,
            started.elapsed().as_secs_f64(),
        );
        self.progress.send_replace(self.snapshot_progress());
        Ok(())
    }

    fn snapshot_progress(&self) -> Progress {
        self.ledger.progress(&self.archive)
    }

    /// Ends the run: a final checkpoint, then the outcome.
    async fn finish(&mut self) -> Result<(), ActorProcessingErr> {
        self.ledger.flush_history();
        self.write_checkpoint().await?;
        self.finished = true;
        self.progress.send_replace(self.snapshot_progress());
        let outcome = RunOutcome {
            cells: self.archive.cells().to_vec(),
            progress: self.snapshot_progress(),
            interrupted: !self.ledger.run_over() && self.ledger.stop_reached().is_none(),
            checkpoint: self.ledger.last_checkpoint().path.clone(),
            ascent: None,
        };
        let _ = self.done.send(Ok(outcome));
        Ok(())
    }

    fn fail(&mut self, error: RunError) {
        self.finished = true;
        let _ = self.done.send(Err(error));
    }

    /// After a generation completed: the next generation out at once (the evaluators breed
    /// and score it while the rest is done here), then history, progress, checkpoint if due,
    /// then stop or go on.
    async fn after_generation(
        &mut self,
        myself: &ActorRef<ArchiveMsg>,
    ) -> Result<(), ActorProcessingErr> {
        self.ledger.check_stop(&self.archive);
        if !self.ending() {
            // What `Next` would send; sent before the bookkeeping below, which the next
            // generation does not depend on (a checkpoint records the generations planned
            // ahead whether or not they are out).
            self.dispatch_planned();
        }
        let progress = self.snapshot_progress();
        self.ledger.append_history(&progress);
        self.progress.send_replace(progress);
        if self.ending() {
            return self.finish().await;
        }
        if self.ledger.checkpoint_due() {
            self.write_checkpoint().await?;
        }
        myself.cast(ArchiveMsg::Next)?;
        Ok(())
    }

    /// Inserts the oldest generation if nothing of it is outstanding any more.
    async fn complete_if_done(
        &mut self,
        myself: &ActorRef<ArchiveMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(generation) = self.pipeline.pop_complete() else {
            return Ok(());
        };
        match self.complete(generation) {
            Ok(()) => self.after_generation(myself).await,
            Err(e) => {
                self.fail(e);
                Ok(())
            }
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
        let mut archive = Archive::new(args.plan.classes);
        if let Some(cells) = &args.plan.cells {
            archive
                .restrict(cells)
                .map_err(|e| format!("config key `archive.classes` {e}"))?;
        }
        let cadence = args.plan.checkpoint.as_ref().map(|c| c.cadence);
        let ledger = Ledger::new(args.plan.generations, args.plan.stop.clone(), cadence);
        let mut state = ArchiveState {
            archive,
            rng: seeds::selection_rng(args.plan.seed),
            pipeline: Pipeline::new(args.plan.lag),
            plan: args.plan,
            next: 0,
            ledger,
            stopping: false,
            waited: false,
            wait_logged: false,
            idle_mutators_logged: false,
            finished: false,
            progress: args.progress,
            done: args.done,
        };
        if let Some(c) = args.resume {
            state.archive = c.archive();
            state.rng = c.meta.rng.clone();
            for planned in &c.planned {
                state.pipeline.push(Generation::from_parents(
                    planned,
                    state.plan.seed,
                    state.plan.steer.as_ref(),
                ));
            }
            state.next = c.meta.generation + 1 + c.planned.len() as u64;
            state.ledger.resume(&c, &state.archive);
            // /status, /metrics and the gallery show the resumed archive at once, not an
            // empty one until the first new generation is in.
            state.progress.send_replace(state.snapshot_progress());
        }
        // A fresh run plans generation 0; a checkpoint of an older version, which planned
        // nothing ahead, the generations after its own.
        state.top_up();
        if let Some(dir) = &state.plan.history {
            state.ledger.open_history(dir, state.plan.steer.is_some());
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
                if state.ending() {
                    state.finish().await?;
                } else if state.must_wait() {
                    myself.send_after(WAIT_POLL, || ArchiveMsg::Next);
                } else {
                    state.dispatch_planned();
                    // A later generation may be complete already (its batches were scored
                    // while an earlier one was still out).
                    state.complete_if_done(&myself).await?;
                }
            }
            ArchiveMsg::Results(results) => {
                let from = results.from;
                let accepted = state.pipeline.accept_from(results, state.plan.classes);
                let outstanding = state.pipeline.outstanding();
                if !accepted.rejected.is_empty() {
                    let (id, cause) = accepted.rejected[0];
                    tracing::warn!(
                        evaluator = from,
                        children = accepted.rejected.len(),
                        first = format_args!("{id:x}"),
                        cause = cause.as_str(),
                        "refused results for children this evaluator was not given (or malformed ones); they are not counted"
                    );
                    let causes = accepted.rejected.iter().map(|(_, c)| *c).collect();
                    state.metrics(MetricsMsg::Rejected(causes));
                }
                let kinds = accepted.kinds;
                // Counted here, where duplicates from re-issued work are already gone.
                if !kinds.is_empty() {
                    state.metrics(MetricsMsg::Lost(kinds));
                }
                state.metrics(MetricsMsg::AwaitingResults(outstanding));
                state.complete_if_done(&myself).await?;
            }
            ArchiveMsg::Reissue(cause) => {
                let route = state.route();
                let (run, on_evaluators) = (&state.plan.run, state.plan.breed_on_evaluators);
                let (mut resent, mut written_off) = (false, false);
                for (number, reissue) in state.pipeline.reissue(route) {
                    match reissue {
                        Reissue::Jobs(jobs) => {
                            tracing::info!(
                                jobs = jobs.len(),
                                generation = number,
                                cause = cause.as_str(),
                                evaluators = route.evaluators,
                                "re-issuing work in flight"
                            );
                            resent = true;
                            dispatch(run, on_evaluators, &jobs, route);
                        }
                        Reissue::WrittenOff(children) => {
                            tracing::warn!(
                                children,
                                generation = number,
                                "children lost after repeated re-issues"
                            );
                            written_off = true;
                        }
                        Reissue::Nothing => {}
                    }
                }
                // One re-issue, however many generations it resent.
                if resent {
                    state.metrics(MetricsMsg::Reissued(cause));
                }
                // Everything outstanding of a generation was written off: complete it with
                // what arrived.
                if written_off {
                    state.complete_if_done(&myself).await?;
                }
            }
            ArchiveMsg::Shutdown => {
                tracing::info!(
                    generation = state.ledger.completed().map_or(0, |c| c + 1),
                    "shutdown requested: finishing the generation in flight"
                );
                state.stopping = true;
                if state.pipeline.front_in_flight() {
                    // It may be complete already, waiting behind nothing.
                    state.complete_if_done(&myself).await?;
                } else {
                    state.finish().await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map_elites::messages::Recipe;

    fn jobs(generation: u64, size: u32) -> Vec<BreedJob> {
        (0..size.div_ceil(2))
            .map(|k| {
                let children = (size - 2 * k).min(2);
                BreedJob {
                    generation,
                    generation_size: size,
                    first_index: 2 * k,
                    children,
                    recipe: Recipe::Random,
                    crossover_seed: 0,
                    child_seeds: vec![0; children as usize],
                    steer: Vec::new(),
                }
            })
            .collect()
    }

    fn shape(groups: &[BreedBatch]) -> Vec<(u32, u32, Vec<u32>)> {
        groups
            .iter()
            .map(|g| {
                (
                    g.first,
                    g.end,
                    g.jobs.iter().map(|j| j.first_index).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_batch_gets_every_job_with_a_child_in_it() {
        // Even batches: each job in one batch.
        let even = batch_groups(&jobs(3, 8), 4);
        assert_eq!(shape(&even), [(0, 4, vec![0, 2]), (4, 8, vec![4, 6])]);
        // Batches of 3 in a generation of 7: the job making children 2 and 3 is in batches 0
        // and 1, the one making 4 and 5 in batch 1 only; the last batch is short.
        let odd = batch_groups(&jobs(3, 7), 3);
        assert_eq!(
            shape(&odd),
            [(0, 3, vec![0, 2]), (3, 6, vec![2, 4]), (6, 7, vec![6])]
        );
        assert!(odd[1].holds(child_id(3, 3)) && !odd[1].holds(child_id(3, 2)));
        let members: Vec<u32> = odd[1].members().iter().map(|m| child_index(m.0)).collect();
        assert_eq!(members, [3, 4, 5]);
        // Batches of one: every two-child job in two batches, each batch one child.
        let ones = batch_groups(&jobs(0, 4), 1);
        assert_eq!(ones.len(), 4);
        assert!(
            ones.iter()
                .all(|g| g.jobs.len() == 1 && g.members().len() == 1)
        );
        // Jobs of two generations (a re-issue) never share a group.
        let mut two = jobs(4, 2);
        two.extend(jobs(5, 2));
        assert_eq!(batch_groups(&two, 20).len(), 2);
    }
}
