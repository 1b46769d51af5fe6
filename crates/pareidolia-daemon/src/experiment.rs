//! The run: a [`Setup`] with its model prepared, and what runs it until the last generation
//! is in (or a stop request, or an error): the MAP-Elites actor tree, or for
//! `[search] kind = "gradient-ascent"` the ascent loop ([`crate::ascent`]) on a blocking
//! thread, with the same progress, history, checkpoints and metrics.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pareidolia_core::checkpoint::{Checkpoint, CheckpointStore};
use pareidolia_core::config::RunConfig;
use pareidolia_core::{EncodingPlugin, OptionalOperation, RunIdentity, SearchKind};
use pareidolia_eval::PreparedModel;
use pareidolia_grad::grad::{self, DifferentiableModel, Objective};
use ractor::{Actor, ActorRef};
use tokio::sync::{mpsc, watch};

use crate::map_elites::archive_actor::{ArchivePlan, CheckpointPlan};
use crate::map_elites::generation::SteerPlan;
use crate::map_elites::messages::{ArchiveMsg, BreedJob, EvaluatorRoute, Recipe, names};
use crate::map_elites::mutator_actor::breed;
use crate::map_elites::steer::Steering;
use crate::map_elites::supervisor::{Supervisor, SupervisorArgs};
use crate::metrics::actor::{MetricsActor, MetricsArgs};
use crate::metrics::{CheckpointPolicy, Metrics};
use crate::run::ledger::Cadence;
use crate::run::outcome::{Progress, RunError, RunOutcome};
use crate::run::setup::{ModelSetup, Setup, SetupError};
use crate::run::stop::StopHandle;

/// How a run is driven beyond its config.
#[derive(Default)]
pub struct RunOptions {
    /// Write checkpoints and `history.csv` into this run folder.
    pub run_dir: Option<PathBuf>,
    /// Continue from this checkpoint.
    pub resume: Option<Checkpoint>,
    /// Feed these Prometheus metrics (a metrics actor runs alongside the others).
    pub metrics: Option<Metrics>,
    /// A request on it finishes the generation (or gradient-ascent step) in flight,
    /// checkpoints and ends the run; whoever may stop the run keeps a clone.
    pub stop: StopHandle,
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
    /// How the run shares the machine's cores.
    pub cores: CoreSplit,
    /// What runs the search's models, until a run takes it.
    engines: Engines,
    /// Evaluators of worker nodes to wait for before the first generation.
    wait_remote: u32,
    /// The gradient operator, for a MAP-Elites run with `[search.gradient]`.
    steering: Option<Steering>,
}

/// What an experiment prepared to run its search's models.
enum Engines {
    /// MAP-Elites: one set of prepared models per evaluator.
    Evaluators(Vec<Vec<Box<dyn PreparedModel>>>),
    /// Gradient ascent: the differentiable model that takes the steps, and the first
    /// evaluator's prepared model, which scores the 8-bit images at the end.
    Ascent {
        model: Box<dyn DifferentiableModel>,
        scorer: Option<Box<dyn PreparedModel>>,
    },
    /// A run has taken them.
    Taken,
}

/// How a run shares the machine's cores between breeding (mutators) and inference
/// (evaluators, one single-threaded worker each), or has each worker breed its own batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoreSplit {
    /// Mutator actors (0 when the workers breed).
    pub mutators: usize,
    /// Evaluator actors (inference workers).
    pub workers: usize,
    /// Cores the machine offers (`std::thread::available_parallelism`).
    pub cores: usize,
    /// Breeding's measured share of a child's CPU time (breeding + inference), when measured.
    pub breed_share: Option<f64>,
    /// Each worker's inference thread breeds the batches it scores (no mutator actors).
    pub workers_breed: bool,
}

/// Whether a run's inference workers breed their own batches instead of mutator actors doing
/// it: on CPU backends when `mutators` is not configured, every core gets a worker (a
/// configured worker count, or at least as many batches per generation as cores) and a
/// batch holds whole breeding jobs (an even `batch_size`: a job makes two children). Each
/// core then runs one thread that breeds a batch and scores it, with no hand-off between
/// threads and no mutator preempting inference on the same core: 1.10 times the
/// evaluations/s of mutator threads on the default MNIST run on ort-cpu (BENCHMARKS.md,
/// "Breeding on the inference threads"). Where a generation has fewer batches than cores,
/// mutators on the spare cores breed while the workers score; with an odd batch size (tract's
/// preferred batch of 1) a job straddling two batches would be bred twice, once for each;
/// and a GPU's one worker is fed by mutators on the CPU cores.
pub fn workers_breed(
    cores: usize,
    configured: (u32, u32),
    batches_per_generation: usize,
    batch_size: usize,
    gpu: bool,
) -> bool {
    !gpu && configured.0 == 0
        && batch_size.is_multiple_of(2)
        && (configured.1 != 0 || batches_per_generation >= cores.max(1))
}

/// Splits `cores` between mutators and inference workers. Where [`workers_breed`], each core
/// gets a worker (or the configured count) and there is no mutator. Otherwise breeding takes
/// `breed_share` of a child's CPU time, so the mutators get `ceil(cores * share)`, at least
/// one, and the workers the rest, rounded up (at least 1, at most one per batch of a
/// generation: a worker without a batch idles). Rounding both up oversubscribes by at most
/// one thread, which the OS shares out; rounding down would leave a core idle. There are
/// at least as many mutators as workers (up to the cores): at the start of a generation
/// every worker waits for its first batch, and with fewer mutators those batches are bred
/// one after another while the cores idle (BENCHMARKS.md, issue 15: 2 mutators against 1 with 2 workers gave
/// the default MNIST run 7% on tract); a mutator with nothing to breed costs nothing. A
/// config's non-zero `mutators` or `workers` is taken as it is; `gpu` runs one worker (one
/// per device: a GPU runs one stream of batches best).
pub fn split_cores(
    cores: usize,
    breed_share: Option<f64>,
    configured: (u32, u32),
    batches_per_generation: usize,
    batch_size: usize,
    gpu: bool,
) -> CoreSplit {
    let cores = cores.max(1);
    if workers_breed(cores, configured, batches_per_generation, batch_size, gpu) {
        let workers = match configured.1 {
            0 => cores,
            n => n as usize,
        };
        return CoreSplit {
            mutators: 0,
            workers,
            cores,
            breed_share,
            workers_breed: true,
        };
    }
    let share = breed_share.unwrap_or(0.0).clamp(0.0, 1.0);
    let breeding = cores as f64 * share;
    let workers = match configured.1 {
        0 if gpu => 1,
        0 => ((cores as f64 - breeding - 1e-9).ceil() as usize)
            .clamp(1, cores)
            .min(batches_per_generation.max(1)),
        n => n as usize,
    };
    let mutators = match configured.0 {
        0 => (breeding.ceil() as usize).max(workers).clamp(1, cores),
        n => n as usize,
    };
    CoreSplit {
        mutators,
        workers,
        cores,
        breed_share,
        workers_breed: false,
    }
}

/// `batch_size = 0`: the backend's preferred batch, made smaller on a CPU with many cores so
/// that a generation of `children` has at least two batches per core (a 400-child generation
/// in batches of 32 is 13 batches, which would leave most of a 64-core server idle: there it
/// becomes batches of 4, 100 of them). On a GPU the preferred batch stands (one worker).
pub fn auto_batch(preferred: usize, children: usize, cores: usize, gpu: bool) -> usize {
    let preferred = preferred.max(1);
    if gpu {
        return preferred;
    }
    preferred.min(children.div_ceil(2 * cores.max(1))).max(1)
}

/// Seconds of breeding per child (crossover, mutation, rendering) and of inference per image
/// (every model, one set, after warm-up), measured on the run's own plugin library and
/// models before the clock starts: what [`split_cores`] divides the cores by. The breeding
/// runs on a second instance of the encoding made for this, so the run's own instance is
/// never called outside the run (a plugin may count its calls). `None` when the encoding
/// fails here (the run will report that itself).
fn measure_breed_share(
    setup: &Setup,
    models: &mut [Box<dyn PreparedModel>],
    batch: usize,
) -> Option<f64> {
    let encoding = EncodingPlugin::create(
        setup.encoding.library().clone(),
        &setup.config.encoding.params_json(),
        setup.model().canvas(),
    )
    .ok()?;
    let encoding = &encoding;
    let job = |recipe, k: u64| BreedJob {
        generation: 1,
        generation_size: 2,
        first_index: 0,
        children: 2,
        recipe,
        crossover_seed: k,
        child_seeds: vec![2 * k + 1, 2 * k + 2],
        steer: Vec::new(),
    };
    let parents: Vec<_> = breed(encoding, &job(Recipe::Random, 0))
        .into_iter()
        .collect::<Result<_, _>>()
        .ok()?;
    let (a, b) = (parents[0].genome.clone(), parents[1].genome.clone());
    let (start, mut children) = (Instant::now(), 0usize);
    for k in 1..=64 {
        let made = breed(
            encoding,
            &job(
                Recipe::Breed {
                    a: a.clone(),
                    b: b.clone(),
                },
                k,
            ),
        );
        children += made.iter().filter(|c| c.is_ok()).count();
        if k >= 2 && start.elapsed() > Duration::from_millis(20) {
            break;
        }
    }
    let breed_s = start.elapsed().as_secs_f64() / children.max(1) as f64;
    let image = &parents[0].pixels;
    let pixels: Vec<u8> = (0..batch).flat_map(|_| image.iter().copied()).collect();
    let start = Instant::now();
    for model in models.iter_mut() {
        model.infer(&pixels, batch).ok()?;
    }
    let infer_s = start.elapsed().as_secs_f64() / batch as f64;
    (children > 0 && breed_s + infer_s > 0.0).then(|| breed_s / (breed_s + infer_s))
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
        setup.check_memory()?;
        let gradient = match setup.config.search.kind {
            SearchKind::MapElites => None,
            SearchKind::GradientAscent => Some(prepare_gradient(&setup)?),
        };
        let steering = Steering::of(&setup)?;
        let first = ModelSetup::prepare_all(&setup.models)?;
        let mut prepared = vec![first];
        let config = &mut setup.config;
        if config.batch_size == 0 {
            let preferred = prepared[0].iter().map(|p| p.preferred_batch()).min();
            let gpu = prepared[0].iter().any(|p| p.device() != "cpu");
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            config.batch_size = auto_batch(
                preferred.unwrap_or(1),
                config.offspring_per_generation as usize,
                cores,
                gpu,
            ) as u32;
            tracing::info!(
                batch_size = config.batch_size,
                preferred = preferred.unwrap_or(1),
                cores,
                backend = prepared[0][0].backend(),
                "batch size chosen by the backend and the core count"
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
        let warm_up = |set: &mut Vec<Box<dyn PreparedModel>>| -> Result<(), SetupError> {
            for (model, prepared) in setup.models.iter().zip(set.iter_mut()) {
                for &n in &sizes {
                    prepared.warm_up(n, model.view.canvas_len(&model.model))?;
                }
            }
            Ok(())
        };
        warm_up(&mut prepared[0])?;
        for (model, p) in setup.models.iter().zip(prepared[0].iter_mut()) {
            model.check_output(p.as_mut(), sizes[0])?;
        }
        let c = &setup.config;
        let batches = (c.offspring_per_generation as usize).div_ceil(batch);
        let gpu = prepared[0].iter().any(|p| p.device() != "cpu");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let configured = (c.mutators, c.workers);
        let needs_share = (c.mutators == 0 || c.workers == 0)
            && !gpu
            && !workers_breed(cores, configured, batches, batch, gpu);
        let share = needs_share
            .then(|| measure_breed_share(&setup, &mut prepared[0], sizes[sizes.len() - 1]))
            .flatten();
        let split = split_cores(cores, share, configured, batches, batch, gpu);
        // The other workers' models, prepared and warmed up side by side.
        let more: Vec<Result<Vec<Box<dyn PreparedModel>>, SetupError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (1..split.workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut set = ModelSetup::prepare_all(&setup.models)?;
                        warm_up(&mut set)?;
                        Ok(set)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("preparing a model does not panic"))
                .collect()
        });
        for set in more {
            prepared.push(set?);
        }
        tracing::info!(
            workers = split.workers,
            mutators = split.mutators,
            breeding = if split.workers_breed {
                "on the inference workers"
            } else {
                "on the mutators"
            },
            cores = split.cores,
            breed_share = split
                .breed_share
                .map(|s| format!("{:.1}%", 100.0 * s))
                .unwrap_or_else(|| "not measured".into()),
            "cores shared out: inference workers (evaluators) and mutators"
        );
        let identity = setup.prepared_identity(&prepared[0]);
        for (model, id) in setup.models.iter().zip(&identity.models) {
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
            cores: split,
            engines: match gradient {
                None => Engines::Evaluators(prepared),
                Some(model) => Engines::Ascent {
                    model,
                    scorer: prepared
                        .into_iter()
                        .next()
                        .and_then(|set| set.into_iter().next()),
                },
            },
            wait_remote: 0,
            steering,
        })
    }

    /// Makes the run wait, before its first generation, until `nodes` worker nodes (any
    /// role) have joined (`daemon --wait-workers`).
    pub fn wait_for_workers(&mut self, nodes: u32) {
        self.wait_remote = nodes;
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
        let prepared = match std::mem::replace(&mut self.engines, Engines::Taken) {
            Engines::Evaluators(prepared) => prepared,
            Engines::Ascent { model, scorer } => {
                return self.run_ascent(model, scorer, progress, options).await;
            }
            Engines::Taken => return Err(RunError::Spawn("the experiment has run already".into())),
        };
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
            lag: c.lag,
            breed_on_evaluators: self.cores.workers_breed,
            route: EvaluatorRoute {
                batch_size: c.batch_size.max(1),
                evaluators: self.cores.workers as u32,
            },
            wait_nodes: self.wait_remote,
            steer: c.search.gradient.as_ref().map(|op| SteerPlan {
                share: op.share,
                target: op.target,
                classes: match &self.identity.cells {
                    Some(cells) => cells.iter().map(|&c| c as u32).collect(),
                    None => (0..self.identity.classes() as u32).collect(),
                },
            }),
            cells: self.identity.cells.clone(),
            history: options.run_dir.clone(),
            checkpoint: options.run_dir.as_ref().map(|dir| CheckpointPlan {
                store: CheckpointStore::new(dir, c.checkpoint.keep),
                cadence: Cadence::of(&c.checkpoint),
                config: c.clone(),
                identity: self.identity.clone(),
            }),
            stop: c.stop.clone(),
        };
        let args = SupervisorArgs {
            run: run.clone(),
            mutators: self.cores.mutators,
            evaluators: self.cores.workers,
            setup: self.setup.clone(),
            prepared,
            steering: self.steering.clone(),
            plan,
            resume: options.resume,
            progress,
            done: done_tx,
        };
        let metrics_actor = spawn_metrics(&run, options.metrics, progress_rx).await;
        let (supervisor, handle) = Actor::spawn(Some(names::supervisor(&run)), Supervisor, args)
            .await
            .map_err(|e| RunError::Spawn(e.to_string()))?;
        // A stop request goes to the archive (spawned with the supervisor) as a shutdown.
        let archive = names::archive(&run);
        let stop = options.stop.clone();
        let forward_stop = tokio::spawn(async move {
            stop.requested().await;
            if let Some(a) = ractor::registry::where_is(archive) {
                let _ = ActorRef::<ArchiveMsg>::from(a).cast(ArchiveMsg::Shutdown);
            }
        });
        let outcome = done_rx.recv().await.unwrap_or_else(|| {
            Err(RunError::ActorFailed {
                actor: "supervisor".into(),
                reason: "stopped without an outcome".into(),
            })
        });
        forward_stop.abort();
        supervisor.stop(Some("run over".into()));
        let _ = handle.await;
        drain_metrics(metrics_actor).await;
        outcome
    }
    /// The gradient-ascent search: the ascent loop on a blocking thread (it checks the stop
    /// handle before every step), the metrics actor beside it.
    async fn run_ascent(
        &mut self,
        model: Box<dyn DifferentiableModel>,
        scorer: Option<Box<dyn PreparedModel>>,
        progress: watch::Sender<Progress>,
        options: RunOptions,
    ) -> Result<RunOutcome, RunError> {
        let run = self.run_id.clone();
        let metrics_actor = spawn_metrics(&run, options.metrics, progress.subscribe()).await;
        let args = crate::ascent::AscentRun {
            setup: self.setup.clone(),
            identity: self.identity.clone(),
            model,
            prepared: scorer,
            run_dir: options.run_dir,
            resume: options.resume,
            progress,
            stop: options.stop,
        };
        let outcome = tokio::task::spawn_blocking(move || crate::ascent::run(args))
            .await
            .unwrap_or_else(|e| {
                Err(RunError::ActorFailed {
                    actor: "gradient ascent".into(),
                    reason: e.to_string(),
                })
            });
        drain_metrics(metrics_actor).await;
        outcome
    }
}

type MetricsHandle = (
    ActorRef<crate::map_elites::messages::MetricsMsg>,
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
/// one model whose graph can be differentiated, and an encoding that stores pixels as they
/// are (the best images become genomes through the encoding's `genome_from_pixels`, plugin
/// ABI 1.1, and must render back to those pixels).
fn prepare_gradient(setup: &Setup) -> Result<Box<dyn DifferentiableModel>, SetupError> {
    let m = setup.model();
    let search = |message: String| SetupError::Search { message };
    let encoding = &setup.config.encoding.plugin;
    let advice = "use [encoding] plugin = \"direct\" with [encoding.params] color_space = \"rgb\"";
    setup
        .encoding
        .check_offers(OptionalOperation::GenomeFromPixels)
        .map_err(|e| {
            search(format!(
                "gradient ascent keeps its best images as genomes of the run's encoding, made from pixels: {e}; {advice}"
            ))
        })?;
    // The encoding must render a genome made from pixels back to those pixels (rounded down).
    let probe: Vec<f32> = (0..setup.encoding.image_len())
        .map(|i| ((i * 37) % 256) as f32)
        .collect();
    let mut rendered = vec![0u8; probe.len()];
    let renders = setup
        .encoding
        .genome_from_pixels(&probe)
        .ok()
        .is_some_and(|genome| setup.encoding.render(&genome, &mut rendered).is_ok())
        && rendered
            .iter()
            .zip(&probe)
            .all(|(r, p)| (f32::from(*r) - p).abs() <= 1.0);
    if !renders {
        return Err(search(format!(
            "gradient ascent keeps its best images as genomes of the run's encoding, but the encoding `{encoding}` does not render a genome made from pixels back as those pixels; {advice}"
        )));
    }
    let choice = setup.config.search.backend.unwrap_or(m.backend);
    let chosen = grad::prepare_gradient(choice, &m.options.ort, 0, &m.model, m.view)?;
    chosen.model.check_objective(Objective::Probability)?;
    tracing::info!(
        model = %m.model.name(),
        requested = %choice,
        backend = chosen.model.backend(),
        device = %chosen.model.device(),
        selection = %chosen.describe(),
        "differentiable model prepared"
    );
    Ok(chosen.model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_automatic_batch_gives_every_core_two_batches_on_a_cpu() {
        // 2 cores: ONNX Runtime's 32 stands (400 children: 13 batches).
        assert_eq!(auto_batch(32, 400, 2, false), 32);
        // 64 cores: 400 children in batches of 4, 100 batches for 64 workers.
        assert_eq!(auto_batch(32, 400, 64, false), 4);
        // More cores than children: batches of one.
        assert_eq!(auto_batch(32, 200, 256, false), 1);
        // tract's preferred 1 is never raised; a GPU keeps its preferred batch.
        assert_eq!(auto_batch(1, 400, 2, false), 1);
        assert_eq!(auto_batch(256, 400, 64, true), 256);
    }

    fn split(
        cores: usize,
        share: Option<f64>,
        configured: (u32, u32),
        gpu: bool,
    ) -> (usize, usize) {
        let s = split_cores(cores, share, configured, 10, 20, gpu);
        (s.mutators, s.workers)
    }

    #[test]
    fn on_cpu_every_core_gets_a_worker_that_breeds_its_own_batches() {
        // 2 cores, 10 batches per generation: two workers, no mutators, the share unused.
        let s = split_cores(2, None, (0, 0), 10, 20, false);
        assert_eq!((s.mutators, s.workers, s.workers_breed), (0, 2, true));
        // 64 cores and 400 children in batches of 4 (auto_batch): 64 breeding workers.
        let big = split_cores(64, None, (0, 0), 100, 20, false);
        assert_eq!(
            (big.mutators, big.workers, big.workers_breed),
            (0, 64, true)
        );
        // A configured worker count breeds too, whatever the cores.
        let s = split_cores(2, None, (0, 8), 10, 20, false);
        assert_eq!((s.mutators, s.workers, s.workers_breed), (0, 8, true));
        assert!(workers_breed(64, (0, 3), 10, 20, false));
        // Configured mutators, or a GPU, breed on mutators.
        assert!(!workers_breed(2, (1, 0), 10, 20, false));
        assert!(!workers_breed(2, (0, 0), 10, 20, true));
        // Fewer batches than cores: the spare cores breed for the workers.
        assert!(!workers_breed(64, (0, 0), 10, 20, false));
        // Odd batches (a job's children in two batches): mutators breed.
        assert!(!workers_breed(2, (0, 0), 200, 1, false));
        assert!(!workers_breed(2, (0, 0), 40, 5, false));
    }

    #[test]
    fn the_cores_left_after_breeding_go_to_inference() {
        // Where mutators breed (here: more cores than the 10 batches of a generation), LeNet
        // with the direct encoding (breeding ~12% of a child's CPU time): the workers get
        // the cores breeding leaves, capped at the batches of a generation, the mutators at
        // least one per worker (each worker's first batch of a generation is bred at once).
        assert_eq!(split(64, Some(0.12), (0, 0), false), (10, 10));
        // A GPU's one worker: the mutators breeding needs.
        assert_eq!(split(64, Some(0.12), (0, 0), true), (8, 1));
        // Configured mutators: the workers get what breeding leaves, breeding-heavy (a costly
        // renderer, a small model) or not, and at least one.
        assert_eq!(split(2, Some(0.12), (2, 0), false), (2, 2));
        assert_eq!(split(2, Some(0.9), (2, 0), false), (2, 1));
        assert_eq!(split(4, Some(0.5), (1, 0), false), (1, 2));
        // Not measured: every core infers.
        assert_eq!(split(4, None, (1, 0), false), (1, 4));
        // More cores than batches, breeding-heavy: mutators on the spare cores.
        assert_eq!(split(16, Some(0.5), (0, 0), false), (8, 8));
    }

    #[test]
    fn a_config_wins_and_a_gpu_runs_one_worker() {
        assert_eq!(split(2, Some(0.1), (3, 4), false), (3, 4));
        assert_eq!(split(16, Some(0.1), (0, 0), true), (2, 1));
        assert_eq!(split(16, Some(0.1), (0, 2), true), (2, 2));
    }
}
