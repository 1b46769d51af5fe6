//! The command-line surface, as typed: parsing only, no side effects.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{Args, Parser, Subcommand};
use pareidolia_core::{BackendChoice, Choice, StopCondition, View};

/// A clap parser for a choice enum: its names are the possible values (listed in `--help`
/// and in the error for a bad one), parsed into the enum.
fn choice<T: Choice + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::NAMES).try_map(|s| s.parse::<T>())
}

/// Evolve images that a trained classifier labels with near-certainty although a person
/// sees no object in them (Nguyen, Yosinski & Clune, CVPR 2015).
#[derive(Debug, Parser)]
#[command(name = "pareidolia", version, about)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an experiment to its last generation and write its run folder.
    Run(RunArgs),
    /// Print the top classes a model gives image files.
    Classify(ClassifyArgs),
    /// Measure raw inference throughput of a model on a backend (random images).
    Bench(BenchArgs),
    /// Run an experiment as a long-running service: checkpoints, HTTP endpoints, clean
    /// shutdown on SIGTERM/SIGINT.
    Daemon(DaemonArgs),
    /// Continue a stopped or crashed daemon run from its newest valid checkpoint.
    Resume(ResumeArgs),
    /// Show where a run stands, from its folder or its daemon's URL.
    Status(StatusArgs),
    /// Write the gallery, montage, index and summary of a run's newest checkpoint.
    Export(ExportArgs),
    /// Write one champion's genome from a run's newest checkpoint: the raw bytes, the
    /// encoding's JSON description, and Graphviz DOT when the encoding provides it (CPPN).
    ExportGenome(ExportGenomeArgs),
    /// Score a run's champions (newest checkpoint) on other models: do images that fool one
    /// network fool another? Writes transfer.csv, transfer.md and transfer.png.
    Transfer(TransferArgs),
    /// Write a captioned montage of chosen champions from a run folder's gallery (the
    /// highest-scoring ones by default).
    Montage(MontageArgs),
    /// Train a model's weights on a labelled image set (IDX, as MNIST ships it) on the CPU,
    /// with Caffe's LeNet solver recipe, and write a model folder (ONNX, labels, manifest).
    Train(TrainArgs),
    /// The paper's retraining experiment: evolve fooling images, add them to the training
    /// set as an extra class, retrain, evolve again; resumable, one row per iteration in
    /// retrain.csv.
    Retrain(RetrainArgs),
    /// List installed plugins, or check one.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Join a daemon's run from another process or machine and score batches for it (the
    /// daemon listens with --cluster-listen).
    Worker(WorkerArgs),
    /// How foolable is this classifier? MAP-Elites (direct, CPPN) and gradient ascent
    /// against it within a budget, each part a resumable run folder; then confidence and
    /// evaluations per class, PNG rescoring, transfer, OOD detectors; writes report.html,
    /// audit.json and a fooling set. The same command continues an interrupted audit.
    Audit(AuditArgs),
}

/// How a daemon listens for worker nodes (`daemon`, `resume`).
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// Listen for `pareidolia worker` nodes on HOST:PORT (port 0: any free port; the log
    /// says which). An address beyond loopback needs --cookie-file.
    #[arg(long, value_name = "ADDR")]
    pub cluster_listen: Option<String>,
    /// The cluster's shared secret, read from FILE (the same file on every worker); without
    /// it, the daemon only listens on loopback.
    #[arg(long, value_name = "FILE")]
    pub cookie_file: Option<PathBuf>,
    /// Before the first generation, wait until N worker nodes (any role) have joined.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub wait_workers: u32,
}

/// `pareidolia worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The daemon's cluster address (its --cluster-listen), HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub join: String,
    /// The cluster's shared secret (the daemon's --cookie-file); without it, the loopback
    /// default.
    #[arg(long, value_name = "FILE")]
    pub cookie_file: Option<PathBuf>,
    /// What this node does for the run.
    #[arg(long, value_enum, default_value = "evaluator")]
    pub role: WorkerRole,
    /// Inference backend of every model on this node (default: the run's).
    #[arg(long, value_parser = choice::<BackendChoice>())]
    pub backend: Option<BackendChoice>,
    /// A config with this machine's paths to the run's models and plugins (default: the
    /// daemon's config as it is); what it loads must be the run's, checked by sha256.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Leave the run (with a non-zero exit status) when the daemon has not answered a
    /// heartbeat for this many seconds (its machine or the network is gone); a closed
    /// connection ends the worker at once (exit status 0).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub daemon_timeout: u64,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// A worker node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkerRole {
    /// Score batches (inference and fitness).
    Evaluator,
    /// Breed and render children (crossover, mutation, the encoding's rendering).
    Mutator,
    /// Both: a mutator and an evaluator.
    Both,
}

/// The training recipe's settings a command line may change (Caffe's LeNet solver otherwise).
#[derive(Debug, Args)]
pub struct RecipeArgs {
    /// SGD iterations (Caffe's `max_iter`; default 10000).
    #[arg(long = "train-iterations", id = "train_iterations", value_name = "N")]
    pub iterations: Option<u64>,
    /// Seeds the initial weights and the order the data are read in (default 1).
    #[arg(long = "train-seed", id = "train_seed", value_name = "SEED")]
    pub seed: Option<u64>,
    /// The base learning rate (Caffe's `base_lr`, default 0.01, then the `inv` policy); a
    /// model trained elsewhere is often fine-tuned with a smaller one.
    #[arg(long = "train-lr", id = "train_lr", value_name = "RATE")]
    pub lr: Option<f64>,
    /// Images per SGD iteration (default 64).
    #[arg(long = "train-batch", id = "train_batch", value_name = "N")]
    pub batch: Option<usize>,
    /// Threads a batch is split over (default: every core). The result depends on this
    /// number (the order in which per-thread gradient sums are added), not on the load.
    #[arg(long = "train-threads", id = "train_threads", value_name = "N")]
    pub threads: Option<usize>,
    /// BatchNormalization while training (models without one ignore it): `train` normalises
    /// each batch with its own statistics and updates the running ones as PyTorch's `train()`
    /// does (default); `frozen` keeps the running statistics and trains only the scale and bias.
    #[arg(
        long = "batch-norm",
        id = "batch_norm",
        value_enum,
        value_name = "MODE"
    )]
    pub batch_norm: Option<BatchNormArg>,
}

/// `--batch-norm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BatchNormArg {
    /// Batch statistics, running statistics updated (PyTorch's `train()`).
    Train,
    /// Running statistics kept (PyTorch's `eval()` for the BatchNorm layers).
    Frozen,
}

/// `pareidolia train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The model to start from (its graph, input and labels): a manifest.toml path or
    /// `builtin:NAME`.
    #[arg(long, default_value = "builtin:lenet-mnist")]
    pub model: String,
    /// A folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz], and
    /// optionally the held-out t10k-* pair (measured after training).
    /// Default: the repository's `data/mnist-5k` (the checkout this binary was built from),
    /// else `../share/pareidolia/mnist-5k` beside the executable.
    #[arg(long, value_name = "DIR")]
    pub train_data: Option<PathBuf>,
    /// The model folder to write (must not exist).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The new model's name (default: the folder's name).
    #[arg(long)]
    pub name: Option<String>,
    /// The classes' labels, one per line in class order, for data whose classes are not the
    /// model's (Fashion-MNIST on LeNet); as many as the model has outputs.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Keep the model's weights as the start (fine-tuning) instead of Caffe's xavier
    /// initialisation.
    #[arg(long)]
    pub keep_weights: bool,
    /// The recipe.
    #[command(flatten)]
    pub recipe: RecipeArgs,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `pareidolia retrain`.
#[derive(Debug, Args)]
pub struct RetrainArgs {
    /// The evolution config of every run (default: the built-in MNIST direct experiment).
    /// Leave it out to continue the retrain in --out.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The retrain folder: created, or continued where it holds a retrain.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Retrained models after the shipped one (the paper: about 15).
    #[arg(long)]
    pub iterations: Option<u32>,
    /// Fooling images to evolve per iteration (default: as many as the smallest real class
    /// has training images, at most 500: 400 on data/mnist-5k, 500 on Fashion-MNIST); runs =
    /// images / cells, rounded up.
    #[arg(long)]
    pub images: Option<usize>,
    /// The real training data (IDX, with a held-out t10k set). Default: the repository's
    /// `data/mnist-5k` (the checkout this binary was built from), else
    /// `../share/pareidolia/mnist-5k` beside the executable.
    #[arg(long, value_name = "DIR")]
    pub train_data: Option<PathBuf>,
    /// The training recipe.
    #[command(flatten)]
    pub recipe: RecipeArgs,
    /// Generations of each evolution run (overrides the config's).
    #[arg(long)]
    pub generations: Option<u64>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `pareidolia montage`.
#[derive(Debug, Args)]
pub struct MontageArgs {
    /// A run folder (with `summary.json` and `gallery/`, as `run`, `daemon` and `export`
    /// leave them).
    pub run_dir: PathBuf,
    /// The PNG file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// How many champions, highest confidence first.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// These classes instead (indices, comma-separated), in this order.
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<usize>,
}

/// `pareidolia transfer`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// The run folder.
    pub run_dir: PathBuf,
    /// The run's config at its new place, when the run folder was moved from where it ran
    /// (another checkout or machine) and the paths its own config names no longer resolve;
    /// it must be the same run (seed, models, encoding, fitness: what `resume --config`
    /// checks).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A target model: a manifest.toml path or `builtin:NAME` (repeat for several). Each
    /// must have the run's classes (the same labels) unless --class-map or --ignore-labels
    /// says how its classes answer for the run's; it sees the champions at the run's canvas
    /// and view (scaled up, bilinear, when its input is larger than the canvas).
    #[arg(long = "model", value_name = "MODEL", required = true)]
    pub models: Vec<String>,
    /// For targets whose labels differ from the run's: a file of `RUN LABEL,TARGET LABEL`
    /// pairs, one per line (labels or class indices; a run class listed with several target
    /// classes scores their summed probability; unlisted run classes are not scored).
    #[arg(long, value_name = "FILE", conflicts_with = "ignore_labels")]
    pub class_map: Option<PathBuf>,
    /// For targets whose labels differ from the run's: score run class k as target class k
    /// (the same number of classes is required).
    #[arg(long)]
    pub ignore_labels: bool,
    /// Backend of the target models.
    #[arg(long, default_value = "tract", value_parser = choice::<BackendChoice>())]
    pub backend: BackendChoice,
    /// How the target models see the champions: `center` or `ten-crop` (default: the run's
    /// view). With the run's own model as the target, this rescores its champions the other
    /// way, e.g. a centre-crop run as the paper's ten-crop averaging would score it.
    #[arg(long, value_parser = choice::<View>())]
    pub view: Option<View>,
    /// Folder for transfer.csv, transfer.md and transfer.png (default: RUN_DIR/transfer).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Images per inference batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
}

/// `pareidolia export-genome`.
#[derive(Debug, Args)]
pub struct ExportGenomeArgs {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Class whose champion to export (index).
    #[arg(long)]
    pub class: usize,
    /// Folder to write `genome-<class>.{bin,json,dot}` into.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

/// `pareidolia plugins ...`.
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// The plugins found along the search path: kind, name, version, ABI, file.
    List {
        /// Extra folders to search first.
        #[arg(long, value_name = "DIR")]
        dir: Vec<PathBuf>,
        /// Also list the workspace's deliberately broken test fixtures
        /// (`libpareidolia_fixture_*`), which a build leaves beside the real plugins.
        #[arg(long)]
        all: bool,
    },
    /// Load a plugin library, validate its descriptor and exercise it on a small canvas:
    /// random -> mutate -> render -> serialise -> deserialise with timings, then many seeded
    /// bounded round trips (encodings), or a batch of scores (fitness).
    Check {
        /// The plugin's shared library.
        path: PathBuf,
        /// Parameters as JSON.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Canvas WIDTHxHEIGHTxCHANNELS for encodings.
        #[arg(long, default_value = "28x28x1")]
        canvas: String,
        /// Encodings: seeded rounds of random, crossover, mutate, render and a second
        /// instance's decode, at most this many...
        #[arg(long, default_value_t = 1000)]
        rounds: u64,
        /// ...and at most this many seconds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Write the first images the rounds draw (up to 32) as PNG files into DIR.
        #[arg(long, value_name = "DIR")]
        png: Option<PathBuf>,
        /// Fitness plugins: score the outputs of this model (`builtin:NAME` or a manifest;
        /// repeat for several models, of one label space). Default: builtin:lenet-mnist.
        #[arg(long = "model", value_name = "MANIFEST")]
        models: Vec<String>,
        /// Fitness plugins: score these PNG images (the first model's input size). Default:
        /// a held-out digit per class (28x28 gray models, when the repository's data is
        /// found), mid-grey, black, white, noise and stripes.
        #[arg(long = "image", value_name = "PNG")]
        images: Vec<PathBuf>,
        /// Fitness plugins: the inference backend of the models.
        #[arg(long, default_value = "tract", value_parser = choice::<BackendChoice>())]
        backend: BackendChoice,
    },
}

/// Log output of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `pareidolia daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The experiment.
    #[command(flatten)]
    pub experiment: ExperimentArgs,
    /// If the run folder already holds checkpoints, continue from the newest instead of
    /// refusing (what a service manager restarting the daemon wants). The config and the
    /// flags given may change what `resume --config` may change; other differences from the
    /// run (seed, encoding, fitness, models) are refused.
    #[arg(long)]
    pub resume: bool,
    /// Serving, logging, worker nodes.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// What `daemon` and `resume` share: where to serve, how to log, what to do after the run,
/// and worker nodes.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for the HTTP endpoints (overrides the config's `http.listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// After the run ends, keep serving the gallery, /status and /metrics until SIGTERM or
    /// SIGINT (to browse the result, or let Prometheus take a last scrape).
    #[arg(long)]
    pub keep_serving: bool,
    /// Worker nodes.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `pareidolia resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Go on with this config instead of the run's: what a resumed run may change
    /// (generations, mutators, plugin_dirs, the models' backend, onnxruntime and cuda
    /// settings, [checkpoint], [http]) is taken from it; any other difference (seed,
    /// encoding, fitness, models, population sizes) is refused.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run to this many generations in all (default: the config's); at least the run's
    /// generation.
    #[arg(long)]
    pub generations: Option<u64>,
    /// Inference backend of every model from now on (overrides the config).
    #[arg(long, value_parser = choice::<BackendChoice>())]
    pub backend: Option<BackendChoice>,
    /// When to end the run early (replace the checkpoint's config).
    #[command(flatten)]
    pub stop: StopArgs,
    /// Continue although the model file differs from the one the run started with.
    #[arg(long)]
    pub allow_model_change: bool,
    /// Continue although a plugin's version differs from the one the run started with.
    #[arg(long)]
    pub allow_plugin_change: bool,
    /// Serving, logging, worker nodes.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `pareidolia status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A run folder, or the daemon's URL (http://127.0.0.1:9464).
    pub target: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `pareidolia export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run folder.
    pub run_dir: PathBuf,
    /// The run's config at its new place, when the run folder was moved from where it ran
    /// (another checkout or machine) and the paths its own config names no longer resolve;
    /// it must be the same run (seed, models, encoding, fitness: what `resume --config`
    /// checks).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to write the export (created; must be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `pareidolia bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model: a manifest.toml path or `builtin:NAME`.
    #[arg(long, default_value = "builtin:lenet-mnist")]
    pub model: String,
    /// Backend.
    #[arg(long, default_value = "tract", value_parser = choice::<BackendChoice>())]
    pub backend: BackendChoice,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,32,100,256")]
    pub batch: Vec<usize>,
    /// Seconds to measure each batch size (after one warm-up batch).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Inference workers running side by side, each with its own copy of the model on one
    /// thread (as a run's evaluators): the all-cores ceiling a run is compared against.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
}

/// The experiment flags `run` and `daemon` share.
#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// Experiment config (TOML); without it, the built-in default (MNIST, direct encoding).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The model to fool: a manifest.toml path or `builtin:NAME`; replaces the config's
    /// `[model]` (with the built-in default, runs the default experiment on that model).
    #[arg(long, value_name = "MANIFEST")]
    pub model: Option<String>,
    /// Seed of every random decision (overrides the config).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Generations after the initial population (overrides the config).
    #[arg(long)]
    pub generations: Option<u64>,
    /// Mutator actors (overrides the config). 0 = none on a CPU where every core gets an
    /// inference worker, which then breeds its own batches; else as many as breeding's
    /// measured share of the cores needs and at least one per inference worker.
    #[arg(long)]
    pub mutators: Option<u32>,
    /// Inference workers (evaluator actors, one thread and one copy of the models each),
    /// 0 = one per core on a CPU (the cores left after breeding's measured share where
    /// mutators breed), one on CUDA (overrides the config). The result does not depend on it.
    #[arg(long)]
    pub workers: Option<u32>,
    /// Generations of lag in parent selection (overrides the config's `lag`): 0 = the
    /// paper's synchronous generations; L = 1 to 4 breeds generation g from the archive
    /// after generation g - 1 - L, so the workers never wait at a generation boundary.
    /// Deterministic either way, but another run than lag 0.
    #[arg(long, value_name = "L")]
    pub lag: Option<u32>,
    /// Inference backend of every model (overrides `backend` in `[model]` and `[[models]]`): `auto` takes CUDA, else ONNX Runtime
    /// on CPU, else tract, and logs why.
    #[arg(long, value_parser = choice::<BackendChoice>())]
    pub backend: Option<BackendChoice>,
    /// Run folder to create; default `runs/<config name>-<unix time>`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// When to end the run early.
    #[command(flatten)]
    pub stop: StopArgs,
}

/// One `--until` value: a condition, or `none` to clear the config's.
#[derive(Debug, Clone, PartialEq)]
pub enum Until {
    /// No condition (clears `stop.until`).
    None,
    /// A condition.
    Condition(StopCondition),
}

fn until(text: &str) -> Result<Until, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Until::None);
    }
    text.parse()
        .map(Until::Condition)
        .map_err(|e| e.to_string())
}

fn seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!(
            "`{text}` is not a number of seconds >= 0 (0 = no budget)"
        )),
    }
}

/// The stop flags of `run`, `daemon` and `resume`.
#[derive(Debug, Clone, Default, Args)]
pub struct StopArgs {
    /// End the run after the first generation at which the archive meets CONDITION:
    /// `min>=C`, `median>=C`, `mean>=C` (C a score, 0.9999 or 99.99%) or
    /// `classes>=C:N` (N classes, or N% of them, at C or more). It compares the champions'
    /// fitness (the probability with the `confidence` fitness); prefixed `probability:`
    /// (`probability:min>=0.99`) the models' probability, whatever the fitness. Repeat it for
    /// several (the first met ends the run); replaces the config's `stop.until`; `none`
    /// clears it.
    #[arg(long, value_name = "CONDITION", value_parser = until)]
    pub until: Vec<Until>,
    /// Wall-clock budget of the evolution in seconds, summed over resumed sessions (like
    /// --generations); checked after every generation; 0 = none. Overrides
    /// `stop.max_seconds`.
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub max_seconds: Option<f64>,
}

impl StopArgs {
    /// Applies the flags to a config's `[stop]`.
    pub fn apply(&self, stop: &mut pareidolia_core::StopConfig) -> Result<(), String> {
        if !self.until.is_empty() {
            if self.until.contains(&Until::None) && self.until.len() > 1 {
                return Err(
                    "--until none clears the stop conditions and cannot be combined with others"
                        .into(),
                );
            }
            stop.until = self
                .until
                .iter()
                .filter_map(|u| match u {
                    Until::Condition(c) => Some(*c),
                    Until::None => None,
                })
                .collect();
        }
        if let Some(s) = self.max_seconds {
            stop.max_seconds = s;
        }
        Ok(())
    }
}

/// `pareidolia run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The experiment.
    #[command(flatten)]
    pub experiment: ExperimentArgs,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `pareidolia classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// PNG files.
    #[arg(
        value_name = "IMAGE",
        required_unless_present = "data",
        conflicts_with = "data"
    )]
    pub images: Vec<PathBuf>,
    /// Model: a manifest.toml path or `builtin:NAME`. Default: the run's first model when
    /// every image is in one run folder's gallery, else builtin:lenet-mnist (stderr says which).
    #[arg(long)]
    pub model: Option<String>,
    /// Measure the model's accuracy (top-1, top-5, per class) on labelled images instead: a
    /// folder with an IDX pair (`t10k-images-idx3-ubyte[.gz]` and `t10k-labels-idx1-ubyte[.gz]`,
    /// else the `train-*` pair) or with one folder of PNG files per class, named by class
    /// index or label. Run it first on a new model's manifest (docs/models.md).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Print JSON (one object per image, with all probabilities) instead of text.
    #[arg(long)]
    pub json: bool,
    /// How an image larger than the model's input is shown to it: `center` (the centre crop)
    /// or `ten-crop` (mean softmax over the corner and centre crops and their mirrors); use
    /// the view the run used (`model.view`; default: the run's, for a run's gallery, else
    /// `center`).
    #[arg(long, value_parser = choice::<View>())]
    pub view: Option<View>,
    /// Backend (`tract` is bit-reproducible).
    #[arg(long, default_value = "tract", value_parser = choice::<BackendChoice>())]
    pub backend: BackendChoice,
    /// Images per inference batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
}

/// `pareidolia audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The model to audit: a manifest.toml path or `builtin:NAME`.
    #[arg(long, value_name = "MANIFEST")]
    pub model: String,
    /// Labelled held-out images for the OOD detectors: an IDX pair (t10k-*, else train-*) or
    /// one folder of PNG files per class.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Time for the searches, shared equally by the parts: 90s, 2m, 1h (default: by the
    /// model's input size, 60s up to 64x64x3 such as MNIST, 30m from 224x224x3 such as
    /// ImageNet, log-linear in between).
    #[arg(long, value_name = "DURATION")]
    pub budget: Option<String>,
    /// Only these classes (indices, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<usize>>,
    /// Seeds per method.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub seeds: u64,
    /// A model to transfer the champions to: MANIFEST, or MANIFEST@CLASS_MAP for other
    /// labels (lines SOURCE,REFERENCE, labels or class indices, as transfer --class-map reads
    /// them). Repeat for several. Shipped models with the same labels are added.
    #[arg(long = "reference", value_name = "MANIFEST[@MAP]")]
    pub references: Vec<String>,
    /// The audit folder: created, or continued where it holds an audit.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}
