//! An experiment from config to outcome: setup (model, backend, plugins, all checked before
//! anything runs) and the run itself (the actor tree, until the last generation is in).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pareidolia_core::checkpoint::{Checkpoint, CheckpointStore, ModelIdentity};
use pareidolia_core::config::RunConfig;
use pareidolia_core::plugin_host::{PluginInfo, PluginLibrary, find_plugin, search_path};
use pareidolia_core::summary::{PluginSummary, StageTimes};
use pareidolia_core::{
    ArchiveStats, Champion, EncodingPlugin, FitnessPlugin, PluginError, PluginKind,
};
use pareidolia_eval::{
    BackendChoice, BackendOptions, CudaTuning, EvalError, Model, ModelRef, OrtOptions, OutputKind,
    PreparedModel, View, ViewSpec, backend_with, prepare_viewed,
};
use pareidolia_plugin::abi::CanvasSpec;
use ractor::{Actor, ActorRef};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::archive_actor::{ArchiveMsg, ArchivePlan, CheckpointPlan};
use crate::metrics::{Metrics, RunFacts};
use crate::metrics_actor::{MetricsActor, MetricsArgs, metrics_name};
use crate::supervisor::{Supervisor, SupervisorArgs, mutator_group};

/// Setup failed: nothing ran.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The model could not be loaded or prepared.
    #[error(transparent)]
    Model(#[from] EvalError),
    /// A plugin could not be found, loaded or created.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// The run stopped with an error.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RunError {
    /// Not one child of a generation could be scored: the plugin or backend is broken.
    #[error(
        "no child of generation {generation} could be evaluated; the first was lost in {stage}: {reason}"
    )]
    GenerationLost {
        /// The generation.
        generation: u64,
        /// Where the first child was lost.
        stage: String,
        /// Why.
        reason: String,
    },
    /// An actor failed in a way that cannot be repaired by a restart.
    #[error("the {actor} actor failed: {reason}")]
    ActorFailed {
        /// Which actor.
        actor: String,
        /// Why.
        reason: String,
    },
    /// Restarts kept failing.
    #[error(
        "{restarts} actor restarts within {window_s} s (last: {actor} {last}); stopping instead of spinning"
    )]
    TooManyFailures {
        /// Restarts counted.
        restarts: usize,
        /// The window.
        window_s: u64,
        /// The last actor to fail.
        actor: String,
        /// Its failure.
        last: String,
    },
    /// The actor system could not start.
    #[error("could not start the actors: {0}")]
    Spawn(String),
}

/// Where a run stands after a generation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Last completed generation (0 = initial population).
    pub generation: u64,
    /// Generations planned.
    pub generations: u64,
    /// Children scored.
    pub evaluations: u64,
    /// Children lost.
    pub lost: u64,
    /// Champion replacements.
    pub replacements: u64,
    /// Archive statistics.
    pub stats: ArchiveStats,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Time per stage.
    pub times: StageTimes,
    /// Generation of the newest checkpoint written (or resumed from).
    pub last_checkpoint_generation: Option<u64>,
    /// When it was written (Unix seconds).
    pub last_checkpoint_unix_s: Option<f64>,
    /// Checkpoint writes that failed.
    pub checkpoint_failures: u64,
    /// Per class: the champion (genome and scores shared, not copied).
    #[serde(skip)]
    pub champions: Arc<Vec<Option<Champion>>>,
}

impl Progress {
    /// Per class: the champion's confidence (its score in that class), if the cell is filled.
    pub fn confidences(&self) -> impl Iterator<Item = Option<f32>> + '_ {
        self.champions
            .iter()
            .enumerate()
            .map(|(class, c)| c.as_ref().map(|c| c.score(class)))
    }
}

/// What a finished run leaves: the archive's cells and the final progress.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// One entry per class.
    pub cells: Vec<Option<Champion>>,
    /// Counters and statistics at the end.
    pub progress: Progress,
    /// Stopped by a shutdown request before its last generation.
    pub interrupted: bool,
    /// The last checkpoint written, if checkpointing.
    pub checkpoint: Option<PathBuf>,
}

impl RunOutcome {
    /// The outcome a checkpoint records (for exports of a run that may still be going).
    pub fn from_checkpoint(c: &Checkpoint, path: PathBuf) -> Self {
        let m = &c.meta;
        let archive = pareidolia_core::Archive::restore(c.cells.clone(), m.replacements);
        RunOutcome {
            progress: Progress {
                generation: m.generation,
                generations: m.config.generations,
                evaluations: m.evaluations,
                lost: m.lost,
                replacements: m.replacements,
                stats: archive.stats(),
                elapsed_s: m.elapsed_s,
                times: m.stage_times,
                last_checkpoint_generation: Some(m.generation),
                last_checkpoint_unix_s: Some(m.created_unix_s),
                checkpoint_failures: 0,
                champions: Arc::new(c.cells.clone()),
            },
            interrupted: m.generation < m.config.generations,
            checkpoint: Some(path),
            cells: c.cells.clone(),
        }
    }
}

/// How a run is driven beyond its config.
#[derive(Default)]
pub struct RunOptions {
    /// Write checkpoints into this run folder.
    pub run_dir: Option<PathBuf>,
    /// Continue from this checkpoint.
    pub resume: Option<Checkpoint>,
    /// Feed these Prometheus metrics (a metrics actor runs alongside the others).
    pub metrics: Option<Metrics>,
}

/// Asks a running experiment to finish its generation in flight, checkpoint and end.
/// Returns false when no such run is active.
pub fn request_stop(run_id: &str) -> bool {
    ractor::registry::where_is(crate::supervisor::archive_name(run_id))
        .map(ActorRef::<ArchiveMsg>::from)
        .is_some_and(|a| a.cast(ArchiveMsg::Shutdown).is_ok())
}

/// A checked experiment, ready to run.
pub struct Experiment {
    /// The config (with command-line overrides applied).
    pub config: RunConfig,
    /// The classifier.
    pub model: Arc<Model>,
    /// The backend.
    pub backend: BackendChoice,
    /// Device the backend runs on.
    pub device: String,
    /// The backend that actually runs the model (what `auto` chose).
    pub backend_name: &'static str,
    /// Why `auto` chose it (what it refused first, and why); `None` for a named backend.
    pub backend_selection: Option<String>,
    /// How the canvas is shown to the model.
    pub view: ViewSpec,
    /// ONNX Runtime and CUDA settings.
    pub backend_options: BackendOptions,
    /// The encoding instance.
    pub encoding: Arc<EncodingPlugin>,
    /// The fitness instance.
    pub fitness: Arc<FitnessPlugin>,
    /// Unique prefix of this run's actor names (`<run>.archive`, `<run>.mutator.<i>`, ...).
    pub run_id: String,
    prepared: Option<Box<dyn PreparedModel>>,
}

fn load_plugin(
    kind: PluginKind,
    value: &str,
    config: &RunConfig,
) -> Result<Arc<PluginLibrary>, PluginError> {
    let dirs = search_path(&config.plugin_dirs());
    let path = find_plugin(kind, value, &config.base_dir, &dirs)?;
    let library = PluginLibrary::open(&path)?;
    library.expect_kind(kind)?;
    Ok(library)
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The backends' settings from `[model.onnxruntime]` and `[model.cuda]`.
fn backend_options(config: &RunConfig) -> Result<BackendOptions, EvalError> {
    let (ort, cuda) = (&config.model.onnxruntime, &config.model.cuda);
    Ok(BackendOptions {
        ort: OrtOptions {
            library: ort.library.as_ref().map(|p| config.base_dir.join(p)),
            intra_threads: ort.threads,
            cuda: CudaTuning {
                device: cuda.device,
                conv_algorithm_search: cuda.conv_algorithm_search.parse()?,
                conv_max_workspace: cuda.conv_max_workspace,
                prefer_nhwc: cuda.prefer_nhwc,
                tf32: cuda.tf32,
            },
        },
    })
}

impl Experiment {
    /// Loads and checks everything the config names. Blocking (model compilation): call it
    /// from a blocking context.
    pub fn setup(mut config: RunConfig) -> Result<Self, SetupError> {
        let model = Model::load(&ModelRef::parse(&config.model.manifest, &config.base_dir))?;
        let backend = BackendChoice::from_str(&config.model.backend)?;
        let view = ViewSpec {
            view: View::from_str(&config.model.view)?,
            width: config
                .model
                .canvas
                .map_or(model.manifest.input.width, |c| c[0]),
            height: config
                .model
                .canvas
                .map_or(model.manifest.input.height, |c| c[1]),
        };
        let backend_options = backend_options(&config)?;
        let mut prepared = prepare_viewed(
            backend_with(backend, &backend_options).as_ref(),
            &model,
            view,
        )?;
        if config.batch_size == 0 {
            // Resolved once and recorded in the config (and so in checkpoints): a resumed run
            // keeps the batches it started with.
            config.batch_size = prepared.preferred_batch() as u32;
            tracing::info!(
                batch_size = config.batch_size,
                backend = prepared.backend(),
                "batch size chosen by the backend"
            );
        }
        // Compile for the batch sizes the run will use, before the clock starts.
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
        for n in sizes {
            prepared.warm_up(n, view.canvas_len(&model))?;
        }
        let device = prepared.device();
        let backend_name = prepared.backend();
        let backend_selection = prepared.selection();
        let canvas = CanvasSpec {
            width: view.width,
            height: view.height,
            channels: model.manifest.input.channels,
        };
        let encoding_lib = load_plugin(PluginKind::Encoding, &config.encoding.plugin, &config)?;
        let encoding =
            EncodingPlugin::create(encoding_lib, &config.encoding.params_json(), canvas)?;
        let fitness_lib = load_plugin(PluginKind::Fitness, &config.fitness.plugin, &config)?;
        let logits = view.output(&model) == OutputKind::Logits;
        let fitness = FitnessPlugin::create(
            fitness_lib,
            &config.fitness.params_json(),
            model.classes(),
            &[logits],
        )?;
        tracing::info!(
            model = model.name(),
            sha256 = %model.sha256,
            backend = %backend,
            runs_on = backend_name,
            view = %view.view,
            canvas = %format!("{}x{}", view.width, view.height),
            device = %device,
            encoding = %encoding.library().info().name,
            fitness = %fitness.library().info().name,
            "experiment set up"
        );
        Ok(Self {
            config,
            model: Arc::new(model),
            backend,
            device,
            backend_name,
            backend_selection,
            view,
            backend_options,
            encoding: Arc::new(encoding),
            fitness: Arc::new(fitness),
            run_id: format!(
                "pareidolia-{}-{}",
                std::process::id(),
                RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
            prepared: Some(prepared),
        })
    }

    /// Runs to the last generation, publishing progress after each one.
    pub async fn run(&mut self, progress: watch::Sender<Progress>) -> Result<RunOutcome, RunError> {
        self.run_with(progress, RunOptions::default()).await
    }

    /// The model, plugins and versions as a checkpoint records them.
    pub fn identity(&self) -> (ModelIdentity, PluginSummary, PluginSummary) {
        let summary = |i: &PluginInfo| PluginSummary {
            name: i.name.clone(),
            version: i.version.clone(),
        };
        (
            ModelIdentity {
                name: self.model.name().to_owned(),
                sha256: self.model.sha256.clone(),
            },
            summary(self.encoding.library().info()),
            summary(self.fitness.library().info()),
        )
    }

    /// What the metrics label their `_info` and per-class series with.
    pub fn run_facts(&self, checkpointing: bool) -> RunFacts {
        let (model, encoding, fitness) = self.identity();
        RunFacts {
            backend: self.backend_name.to_owned(),
            requested_backend: self.backend.to_string(),
            device: self.device.clone(),
            model: model.name,
            model_sha256: model.sha256,
            encoding: (encoding.name, encoding.version),
            fitness: (fitness.name, fitness.version),
            labels: self.model.labels.clone(),
            checkpoint_every_generations: self.config.checkpoint.every_generations,
            checkpoint_every_seconds: self.config.checkpoint.every_seconds,
            checkpointing,
        }
    }

    /// Runs with checkpointing and/or from a checkpoint.
    pub async fn run_with(
        &mut self,
        progress: watch::Sender<Progress>,
        options: RunOptions,
    ) -> Result<RunOutcome, RunError> {
        let run = self.run_id.clone();
        let progress_rx = progress.subscribe();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let c = &self.config;
        let plan = ArchivePlan {
            seed: c.seed,
            generations: c.generations,
            offspring: c.offspring_per_generation,
            initial: c.initial_population(),
            classes: self.model.classes(),
            mutator_group: mutator_group(&run),
            metrics: metrics_name(&run),
            history: options.run_dir.clone(),
            checkpoint: options.run_dir.as_ref().map(|dir| {
                let (model, encoding, fitness) = self.identity();
                CheckpointPlan {
                    store: CheckpointStore::new(dir, c.checkpoint.keep),
                    every_generations: c.checkpoint.every_generations,
                    every_seconds: c.checkpoint.every_seconds,
                    config: c.clone(),
                    model,
                    encoding,
                    fitness,
                }
            }),
        };
        let args = SupervisorArgs {
            run: run.clone(),
            mutators: c.mutator_count(),
            encoding: self.encoding.clone(),
            fitness: self.fitness.clone(),
            model: self.model.clone(),
            backend: self.backend,
            backend_options: self.backend_options.clone(),
            view: self.view,
            prepared: self.prepared.take(),
            batch_size: c.batch_size as usize,
            plan,
            resume: options.resume,
            progress,
            done: done_tx,
        };
        // The metrics actor is not supervised with the run: if it fails, the run goes on
        // without metrics rather than stopping.
        let metrics_actor = match options.metrics {
            Some(metrics) => {
                let args = MetricsArgs {
                    metrics,
                    progress: Some(progress_rx),
                };
                match Actor::spawn(Some(metrics_name(&run)), MetricsActor, args).await {
                    Ok((actor, handle)) => Some((actor, handle)),
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics actor did not start; running without metrics");
                        None
                    }
                }
            }
            None => None,
        };
        let (supervisor, handle) =
            Actor::spawn(Some(format!("{run}.supervisor")), Supervisor, args)
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
        if let Some((actor, handle)) = metrics_actor {
            // Its mailbox drains first, so /metrics shows the final generation.
            actor.drain().ok();
            let _ = handle.await;
        }
        outcome
    }
}
