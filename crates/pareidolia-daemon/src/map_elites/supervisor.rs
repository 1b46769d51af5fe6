//! The supervisor: spawns the archive, the evaluators and the mutators linked to itself,
//! restarts a failed mutator or evaluator and has the archive re-issue the children that were
//! in flight, and stops the run with an error when failures repeat (instead of spinning) or
//! when the archive itself fails (it holds the only copy of the run's state).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pareidolia_core::checkpoint::Checkpoint;
use pareidolia_eval::PreparedModel;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::{mpsc, watch};

use crate::map_elites::archive_actor::{ArchiveActor, ArchiveArgs, ArchivePlan};
use crate::map_elites::evaluator_actor::{BatchQueue, EvaluatorActor, EvaluatorArgs, ResultSink};
use crate::map_elites::messages::{ArchiveMsg, ReissueCause, names};
use crate::map_elites::mutator_actor::{MutatorActor, MutatorState};
use crate::map_elites::steer::Steering;
use crate::run::outcome::{Progress, RunError, RunOutcome};
use crate::run::setup::Setup;

/// Restarts allowed within [`RESTART_WINDOW`] before the run stops.
pub const MAX_RESTARTS: usize = 5;
/// The window for [`MAX_RESTARTS`].
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// The actor.
#[derive(Debug, Default)]
pub struct Supervisor;

/// Start-up arguments: what every child needs, kept to restart them.
pub struct SupervisorArgs {
    /// Unique prefix of this run's actor names.
    pub run: String,
    /// Mutator count.
    pub mutators: usize,
    /// Evaluator (inference worker) count.
    pub evaluators: usize,
    /// The models, plugins and settings every child is made from.
    pub setup: Arc<Setup>,
    /// The models prepared by the experiment, one set per evaluator, used by their first
    /// start (an evaluator without a set prepares its own).
    pub prepared: Vec<Vec<Box<dyn PreparedModel>>>,
    /// The gradient operator every evaluator runs, if the run has one.
    pub steering: Option<Steering>,
    /// The archive's plan.
    pub plan: ArchivePlan,
    /// The checkpoint to resume from.
    pub resume: Option<Checkpoint>,
    /// Progress channel.
    pub progress: watch::Sender<Progress>,
    /// Outcome channel.
    pub done: mpsc::UnboundedSender<Result<RunOutcome, RunError>>,
}

/// Which child an actor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Archive,
    Evaluator(usize),
    Mutator(usize),
}

/// The supervisor's state.
pub struct SupervisorState {
    args: SupervisorArgs,
    children: Vec<(Role, ActorCell)>,
    restarts: VecDeque<Instant>,
    failed: bool,
    /// The batch queue every evaluator of the run serves (a restarted one too).
    queue: BatchQueue,
}

impl SupervisorState {
    async fn spawn_evaluator(
        &mut self,
        myself: &ActorCell,
        index: usize,
        prepared: Option<Vec<Box<dyn PreparedModel>>>,
    ) -> Result<(), ActorProcessingErr> {
        let a = &self.args;
        let args = EvaluatorArgs {
            run: a.run.clone(),
            index,
            models: a.setup.models.clone(),
            prepared,
            fitness: a.setup.fitness.clone(),
            encoding: a.setup.encoding.clone(),
            batch_size: a.setup.config.batch_size as usize,
            sink: ResultSink::Archive,
            tally: None,
            steering: a.steering.clone(),
            queue: self.queue.clone(),
        };
        let (actor, _) = Actor::spawn_linked(
            Some(names::evaluator(&a.run, index)),
            EvaluatorActor,
            args,
            myself.clone(),
        )
        .await?;
        ractor::pg::join(names::evaluator_group(&a.run), vec![actor.get_cell()]);
        ractor::pg::join(names::evaluator(&a.run, index), vec![actor.get_cell()]);
        self.children
            .push((Role::Evaluator(index), actor.get_cell()));
        Ok(())
    }

    async fn spawn_mutator(
        &mut self,
        myself: &ActorCell,
        index: usize,
    ) -> Result<(), ActorProcessingErr> {
        let a = &self.args;
        let state = MutatorState {
            run: a.run.clone(),
            encoding: a.setup.encoding.clone(),
            tally: None,
            relay: false,
        };
        let (actor, _) = Actor::spawn_linked(
            Some(names::mutator(&a.run, index)),
            MutatorActor,
            state,
            myself.clone(),
        )
        .await?;
        ractor::pg::join(names::mutator_group(&a.run), vec![actor.get_cell()]);
        self.children.push((Role::Mutator(index), actor.get_cell()));
        Ok(())
    }

    fn archive(&self) -> Option<ActorRef<ArchiveMsg>> {
        self.children
            .iter()
            .find(|(r, _)| *r == Role::Archive)
            .map(|(_, c)| c.clone().into())
    }

    fn fail(&mut self, myself: &ActorRef<()>, error: RunError) {
        tracing::error!(%error, "stopping the run");
        self.failed = true;
        let _ = self.args.done.send(Err(error));
        myself.stop(Some("run failed".into()));
    }
}

impl Actor for Supervisor {
    type Msg = ();
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        mut args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut prepared: Vec<_> = std::mem::take(&mut args.prepared)
            .into_iter()
            .map(Some)
            .collect();
        let archive_args = ArchiveArgs {
            resume: args.resume.take(),
            plan: args.plan.clone(),
            progress: args.progress.clone(),
            done: args.done.clone(),
        };
        let mut state = SupervisorState {
            args,
            children: Vec::new(),
            restarts: VecDeque::new(),
            failed: false,
            queue: BatchQueue::new(),
        };
        let cell = myself.get_cell();
        let (archive, _) = Actor::spawn_linked(
            Some(names::archive(&state.args.run)),
            ArchiveActor,
            archive_args,
            cell.clone(),
        )
        .await?;
        // The archive joins no process group: no other node can reach it. Worker nodes'
        // results come through the daemon's registrar (`crate::cluster`).
        state.children.push((Role::Archive, archive.get_cell()));
        prepared.resize_with(state.args.evaluators.max(1), || None);
        for (i, models) in prepared.into_iter().enumerate() {
            state.spawn_evaluator(&cell, i, models).await?;
        }
        for i in 0..state.args.mutators {
            state.spawn_mutator(&cell, i).await?;
        }
        archive.cast(ArchiveMsg::Next)?;
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<()>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        for (_, child) in state.children.drain(..) {
            child.stop(Some("run over".into()));
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                format!("stopped: {}", reason.unwrap_or_else(|| "no reason".into())),
            ),
            _ => return Ok(()),
        };
        if state.failed {
            return Ok(());
        }
        let Some(pos) = state
            .children
            .iter()
            .position(|(_, c)| c.get_id() == cell.get_id())
        else {
            return Ok(());
        };
        let (role, _) = state.children.remove(pos);
        tracing::warn!(?role, %why, "actor down");
        if role == Role::Archive {
            state.fail(
                &myself,
                RunError::ActorFailed {
                    actor: "archive".into(),
                    reason: why,
                },
            );
            return Ok(());
        }
        let now = Instant::now();
        state.restarts.push_back(now);
        while state
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
        {
            state.restarts.pop_front();
        }
        if state.restarts.len() > MAX_RESTARTS {
            let actor = match role {
                Role::Evaluator(i) => format!("evaluator {i}"),
                Role::Mutator(i) => format!("mutator {i}"),
                Role::Archive => unreachable!(),
            };
            state.fail(
                &myself,
                RunError::TooManyFailures {
                    restarts: state.restarts.len(),
                    window_s: RESTART_WINDOW.as_secs(),
                    actor,
                    last: why,
                },
            );
            return Ok(());
        }
        let cell = myself.get_cell();
        let restarted = match role {
            Role::Evaluator(i) => state.spawn_evaluator(&cell, i, None).await,
            Role::Mutator(i) => state.spawn_mutator(&cell, i).await,
            Role::Archive => unreachable!(),
        };
        if let Err(e) = restarted {
            state.fail(
                &myself,
                RunError::ActorFailed {
                    actor: format!("{role:?}"),
                    reason: format!("restart failed: {e}"),
                },
            );
            return Ok(());
        }
        tracing::info!(?role, "restarted; re-issuing work in flight");
        if let Some(archive) = state.archive() {
            archive.cast(ArchiveMsg::Reissue(ReissueCause::ActorRestart))?;
        }
        Ok(())
    }
}
