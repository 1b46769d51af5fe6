//! The run: a [`Setup`] with its model prepared, and what runs it until the last generation
//! is in (or a stop request, or an error): the MAP-Elites actor tree, or for
//! `[search] kind = "gradient-ascent"` the ascent loop ([`crate::ascent_run`]) on a blocking
//! thread, with the same progress, history, checkpoints and metrics.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pareidolia_core::RunIdentity;
use pareidolia_core::SearchKind;
use pareidolia_core::checkpoint::{Checkpoint, CheckpointStore};
use pareidolia_core::config::RunConfig;
use pareidolia_eval::PreparedModel;
use pareidolia_eval::grad::{CpuGradient, DifferentiableModel, GradientBackend, Objective};
use ractor::{Actor, ActorRef};
use tokio::sync::{mpsc, watch};

use crate::archive_actor::{ArchivePlan, CheckpointPlan};
use crate::messages::{ArchiveMsg, names};
use crate::metrics::{CheckpointPolicy, Metrics};
use crate::metrics_actor::{MetricsActor, MetricsArgs};
use crate::outcome::{Progress, RunError, RunOutcome};
use crate::setup::{ModelSetup, Setup, SetupError};
use crate::supervisor::{Supervisor, SupervisorArgs};

/// How a run is driven beyond its config.
#[derive(Default)]
pub struct RunOptions {
    /// Write checkpoints and `history.csv` into this run folder.
    pub run_dir: Option<PathBuf>,
    /// Continue from this checkpoint.
    pub resume: Option<Checkpoint>,
    /// Feed these Prometheus metrics (a metrics actor runs alongside the others).
    pub metrics: Option<Metrics>,
}

/// The stop flags of the gradient-ascent runs in this process, by run id.
static ASCENT_STOPS: Mutex<Vec<(String, Arc<AtomicBool>)>> = Mutex::new(Vec::new());

/// Asks a running experiment to finish its generation (or gradient-ascent step) in flight,
/// checkpoint and end. Returns false when no such run is active.
pub fn request_stop(run_id: &str) -> bool {
    let stops = ASCENT_STOPS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, flag)) = stops.iter().find(|(id, _)| id == run_id) {
        flag.store(true, Ordering::SeqCst);
        return true;
    }
    drop(stops);
    ractor::registry::where_is(names::archive(run_id))
        .map(ActorRef::<ArchiveMsg>::from)
        .is_some_and(|a| a.cast(ArchiveMsg::Shutdown).is_ok())
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A MAP-Elites experiment with its model prepared, ready to run.
pub struct Experiment {
    /// What the config named, loaded (the config's `batch_size = 0` resolved).
    pub setup: Arc<Setup>,
    /// The run's identity, with the backend that runs each model.
    pub identity: RunIdentity,
    /// Unique prefix of this run's actor names (`<run>.archive`, `<run>.mutator.<i>`, ...).
    pub run_id: String,
    prepared: Option<Vec<Box<dyn PreparedModel>>>,
    gradient: Option<Box<dyn DifferentiableModel>>,
}

impl Experiment {
    /// Loads and checks everything the config names, and prepares the model. Blocking
    /// (model compilation): call it from a blocking context.
    pub fn setup(config: RunConfig) -> Result<Self, SetupError> {
        Self::new(Setup::load(config)?)
    }

    /// Prepares the setup's models on their backends: compiles each for the batch sizes the
    /// run will use, before the clock starts, and resolves `batch_size = 0` to the smallest
    /// of the backends' preferred sizes (recorded in the config, and so in checkpoints: a
    /// resumed run keeps the batches it started with).
    pub fn new(mut setup: Setup) -> Result<Self, SetupError> {
        let gradient = match setup.config.search.kind {
            SearchKind::MapElites => None,
            SearchKind::GradientAscent => Some(prepare_gradient(&setup)?),
        };
        let mut prepared = setup
            .models
            .iter()
            .map(ModelSetup::prepare)
            .collect::<Result<Vec<_>, _>>()?;
        let config = &mut setup.config;
        if config.batch_size == 0 {
            let chosen = prepared.iter().map(|p| p.preferred_batch()).min();
            config.batch_size = chosen.unwrap_or(1).max(1) as u32;
            tracing::info!(
                batch_size = config.batch_size,
                backend = prepared[0].backend(),
                "batch size chosen by the backend"
            );
        }
        let batch = config.batch_size as usize;
        let mut sizes = vec![batch.min(config.offspring_per_generation as usize)];
        for n in [config.offspring_per_generation, config.initial_population()] {
            let rest = n as usize % batch;
            if rest > 0 {
                sizes.push(rest);
            }
        }
        sizes.sort_unstable();
        sizes.dedup();
        let mut identity = setup.identity();
        for ((model, prepared), id) in setup
            .models
            .iter()
            .zip(&mut prepared)
            .zip(&mut identity.models)
        {
            for &n in &sizes {
                prepared.warm_up(n, model.view.canvas_len(&model.model))?;
            }
            *id = model.prepared_identity(prepared.as_ref());
            tracing::info!(
                model = %id.name,
                key = %model.key,
                sha256 = %id.sha256,
                backend = %id.requested_backend,
                runs_on = id.backend.as_deref().unwrap_or_default(),
                view = %model.view.view,
                canvas = %format!("{}x{}", model.view.width, model.view.height),
                device = id.device.as_deref().unwrap_or_default(),
                "model prepared"
            );
        }
        tracing::info!(
            models = identity.models.len(),
            encoding = %identity.encoding.name,
            fitness = %identity.fitness.name,
            "experiment set up"
        );
        Ok(Self {
            setup: Arc::new(setup),
            identity,
            run_id: format!(
                "pareidolia-{}-{}",
                std::process::id(),
                RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
            prepared: Some(prepared),
            gradient,
        })
    }

    /// The config.
    pub fn config(&self) -> &RunConfig {
        &self.setup.config
    }

    /// When checkpoints are due, as the metrics report it.
    pub fn checkpoint_policy(&self, checkpointing: bool) -> CheckpointPolicy {
        let c = &self.config().checkpoint;
        CheckpointPolicy {
            every_generations: c.every_generations,
            every_seconds: c.every_seconds,
            checkpointing,
        }
    }

    /// Runs to the last generation, publishing progress after each one.
    pub async fn run(&mut self, progress: watch::Sender<Progress>) -> Result<RunOutcome, RunError> {
        self.run_with(progress, RunOptions::default()).await
    }

    /// Runs with checkpointing and/or from a checkpoint.
    pub async fn run_with(
        &mut self,
        progress: watch::Sender<Progress>,
        options: RunOptions,
    ) -> Result<RunOutcome, RunError> {
        let run = self.run_id.clone();
        if let Some(model) = self.gradient.take() {
            return self.run_ascent(model, progress, options).await;
        }
        let progress_rx = progress.subscribe();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let c = self.config();
        let plan = ArchivePlan {
            run: run.clone(),
            seed: c.seed,
            generations: c.generations,
            offspring: c.offspring_per_generation,
            initial: c.initial_population(),
            classes: self.identity.classes(),
            cells: self.identity.cells.clone(),
            history: options.run_dir.clone(),
            checkpoint: options.run_dir.as_ref().map(|dir| CheckpointPlan {
                store: CheckpointStore::new(dir, c.checkpoint.keep),
                every_generations: c.checkpoint.every_generations,
                every_seconds: c.checkpoint.every_seconds,
                config: c.clone(),
                identity: self.identity.clone(),
            }),
        };
        let args = SupervisorArgs {
            run: run.clone(),
            mutators: c.mutator_count(),
            setup: self.setup.clone(),
            prepared: self.prepared.take(),
            plan,
            resume: options.resume,
            progress,
            done: done_tx,
        };
        let metrics_actor = spawn_metrics(&run, options.metrics, progress_rx).await;
        let (supervisor, handle) = Actor::spawn(Some(names::supervisor(&run)), Supervisor, args)
            .await
            .map_err(|e| RunError::Spawn(e.to_string()))?;
        let outcome = done_rx.recv().await.unwrap_or_else(|| {
            Err(RunError::ActorFailed {
                actor: "supervisor".into(),
                reason: "stopped without an outcome".into(),
            })
        });
        supervisor.stop(Some("run over".into()));
        let _ = handle.await;
        drain_metrics(metrics_actor).await;
        outcome
    }

    /// The gradient-ascent search: the ascent loop on a blocking thread, the metrics actor
    /// beside it, a stop flag for [`request_stop`].
    async fn run_ascent(
        &mut self,
        model: Box<dyn DifferentiableModel>,
        progress: watch::Sender<Progress>,
        options: RunOptions,
    ) -> Result<RunOutcome, RunError> {
        let run = self.run_id.clone();
        let metrics_actor = spawn_metrics(&run, options.metrics, progress.subscribe()).await;
        let stop = Arc::new(AtomicBool::new(false));
        ASCENT_STOPS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((run.clone(), stop.clone()));
        let args = crate::ascent_run::AscentRun {
            setup: self.setup.clone(),
            identity: self.identity.clone(),
            model,
            prepared: self.prepared.take().and_then(|p| p.into_iter().next()),
            run_dir: options.run_dir,
            resume: options.resume,
            progress,
            stop,
        };
        let outcome = tokio::task::spawn_blocking(move || crate::ascent_run::run(args))
            .await
            .unwrap_or_else(|e| {
                Err(RunError::ActorFailed {
                    actor: "gradient ascent".into(),
                    reason: e.to_string(),
                })
            });
        ASCENT_STOPS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _)| *id != run);
        drain_metrics(metrics_actor).await;
        outcome
    }
}

type MetricsHandle = (
    ActorRef<crate::messages::MetricsMsg>,
    tokio::task::JoinHandle<()>,
);

/// The metrics actor, watching the run's progress. It is not supervised with the run: if it
/// fails, the run goes on without metrics rather than stopping.
async fn spawn_metrics(
    run: &str,
    metrics: Option<Metrics>,
    progress: watch::Receiver<Progress>,
) -> Option<MetricsHandle> {
    let args = MetricsArgs {
        metrics: metrics?,
        progress: Some(progress),
    };
    match Actor::spawn(Some(names::metrics(run)), MetricsActor, args).await {
        Ok((actor, handle)) => Some((actor, handle)),
        Err(e) => {
            tracing::warn!(error = %e, "metrics actor did not start; running without metrics");
            None
        }
    }
}

/// Lets the metrics actor's mailbox drain, so /metrics shows the final generation.
async fn drain_metrics(actor: Option<MetricsHandle>) {
    if let Some((actor, handle)) = actor {
        actor.drain().ok();
        let _ = handle.await;
    }
}

/// The differentiable model of a gradient-ascent run, after checking what the search needs:
/// one model whose graph can be differentiated, and the direct encoding in a
/// colour space that stores pixels as they are (the best images are direct genomes).
fn prepare_gradient(setup: &Setup) -> Result<Box<dyn DifferentiableModel>, SetupError> {
    let m = setup.model();
    let search = |message: String| SetupError::Search { message };
    // The encoding must render a direct genome of pixels back to those pixels (rounded down).
    let probe: Vec<f32> = (0..setup.encoding.image_len())
        .map(|i| ((i * 37) % 256) as f32)
        .collect();
    let mut rendered = vec![0u8; probe.len()];
    let renders = setup
        .encoding
        .render(&crate::ascent_run::direct_genome(&probe), &mut rendered)
        .is_ok()
        && rendered
            .iter()
            .zip(&probe)
            .all(|(r, p)| (f32::from(*r) - p).abs() <= 1.0);
    if !renders {
        return Err(search(format!(
            "gradient ascent keeps its images as direct-encoding genomes, but the encoding `{}` does not render them back as pixels; use [encoding] plugin = \"direct\" with [encoding.params] color_space = \"rgb\"",
            setup.config.encoding.plugin
        )));
    }
    let model = CpuGradient::default().prepare(&m.model, m.view)?;
    model.check_objective(Objective::Probability)?;
    tracing::info!(model = %m.model.name(), backend = model.backend(), device = %model.device(), "differentiable model prepared");
    Ok(model)
}
