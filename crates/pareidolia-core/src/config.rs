//! The run configuration (TOML, unknown keys refused). `configs/example.toml` documents
//! every key; this module only parses and validates. Paths inside a config are relative to
//! the config file's folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ascent::Recipe;
use crate::choices::{
    AscentPreset, AscentStart, BackendChoice, ConvSearch, Objective, SearchKind, SteerTarget, View,
};
use crate::stop::StopConfig;

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {cause}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("invalid config {origin}: {message}")]
    Parse {
        /// The config file (or `<built-in default>`).
        origin: String,
        /// toml's message, which names the line and the key.
        message: String,
    },
    /// A value out of range.
    #[error("invalid config {origin}: `{key}` {message}")]
    Value {
        /// The config file.
        origin: String,
        /// The offending key (`model.canvas`, `models[1].view`, ...).
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// A plugin and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Plugin name (searched for in the plugin folders) or a path to its shared library.
    pub plugin: String,
    /// Parameters, handed to the plugin as JSON.
    #[serde(default)]
    pub params: toml::Table,
}

impl PluginConfig {
    /// The parameters as JSON text.
    pub fn params_json(&self) -> String {
        serde_json::to_string(&self.params).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// The classifier to fool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `builtin:NAME` or a path to a `manifest.toml`.
    pub manifest: String,
    /// Inference backend: `tract`, `ort-cpu`, `cuda` or `auto`.
    #[serde(default)]
    pub backend: BackendChoice,
    /// How the canvas is shown to the model: `center` (the centre crop) or `ten-crop` (the
    /// mean softmax over the four corner crops, the centre crop and their mirrors).
    #[serde(default)]
    pub view: View,
    /// `[width, height]` the encodings render at; absent = the model's input size.
    #[serde(default)]
    pub canvas: Option<[u32; 2]>,
    /// ONNX Runtime settings (`ort-cpu`, `cuda`, `auto`).
    #[serde(default)]
    pub onnxruntime: OnnxRuntimeConfig,
    /// CUDA execution provider settings (`cuda`, `auto`).
    #[serde(default)]
    pub cuda: CudaConfig,
}

/// `[model.onnxruntime]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnnxRuntimeConfig {
    /// `libonnxruntime.so*` or a folder holding it; searched before `ORT_DYLIB_PATH` and an
    /// installed Python `onnxruntime` package. Relative to the config file.
    pub library: Option<PathBuf>,
    /// Threads inside one operator; 0 = one per physical core.
    pub threads: usize,
}

impl Default for OnnxRuntimeConfig {
    fn default() -> Self {
        Self {
            library: None,
            threads: 1,
        }
    }
}

/// `[model.cuda]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CudaConfig {
    /// CUDA device index.
    pub device: i32,
    /// cuDNN convolution algorithm search: `exhaustive`, `heuristic` or `default`.
    pub conv_algorithm_search: ConvSearch,
    /// Let cuDNN use as much workspace as its fastest algorithm wants.
    pub conv_max_workspace: bool,
    /// Convolutions in NHWC layout.
    pub prefer_nhwc: bool,
    /// TF32 tensor-core math (about 1e-3 relative precision instead of FP32's).
    pub tf32: bool,
}

impl Default for CudaConfig {
    fn default() -> Self {
        Self {
            device: 0,
            conv_algorithm_search: ConvSearch::Exhaustive,
            conv_max_workspace: true,
            prefer_nhwc: true,
            tf32: true,
        }
    }
}

/// When checkpoints are written (whichever comes first) and how many are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Every this many generations; 0 = never by count.
    pub every_generations: u64,
    /// Every this many seconds; 0 = never by time.
    pub every_seconds: f64,
    /// Checkpoints kept (the newest ones).
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every_generations: 50,
            every_seconds: 60.0,
            keep: 3,
        }
    }
}

/// `[archive]`: which of the model's classes are MAP-Elites cells.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// The classes (indices into the model's labels) that get a cell; absent = every class.
    /// The fitness still sees the full output, so a champion of class `c` must beat the
    /// skipped classes too (e.g. the 10 digits of an 11-class model with a "fooling" class).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<usize>>,
}

impl ArchiveConfig {
    /// Whether it is the default (every class a cell), which a written config leaves out.
    pub fn is_default(&self) -> bool {
        self.classes.is_none()
    }
}

/// The daemon's HTTP endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on; loopback by default (port 0 picks a free port).
    pub listen: String,
    /// Host names (`Host` header, with or without `:port`) accepted besides IP addresses and
    /// `localhost`; every other name is refused (DNS rebinding). Default: none.
    pub allowed_hosts: Vec<String>,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// Seconds a connection may take to send a request's headers, and may stay idle between
    /// requests, before it is closed.
    pub header_timeout_s: f64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".to_owned(),
            allowed_hosts: Vec::new(),
            max_connections: 64,
            header_timeout_s: 10.0,
        }
    }
}

/// `[search]`: how the run searches. MAP-Elites (evolution) needs nothing here; gradient
/// ascent takes the released recipe's parameters (`../shared/PAPER.md` section 6), each key
/// overriding the preset's value. A gradient-ascent run takes `generations` steps and pushes
/// one image for each of its cells (`[archive] classes`, default every class).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// `map-elites` or `gradient-ascent`.
    pub kind: SearchKind,
    /// Gradient ascent: the parameters the keys below override.
    pub preset: AscentPreset,
    /// L2 decay toward the mean after each step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay: Option<f64>,
    /// Upper bound of the learning rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_lr: Option<f64>,
    /// Desired progress of the objective per step, early on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_prog: Option<f64>,
    /// Late on, the desired progress is `late_prog_mult * (1 - objective)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_prog_mult: Option<f64>,
    /// Gaussian blur sigma in pixels (0: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blur_radius: Option<f64>,
    /// Blur every this many steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blur_every: Option<u64>,
    /// Zero the pixels whose norm is below this percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub small_norm_percentile: Option<f64>,
    /// Zero the pixels whose benefit is below this percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub px_benefit_percentile: Option<f64>,
    /// Zero the pixels whose absolute benefit is below this percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub px_abs_benefit_percentile: Option<f64>,
    /// `zero`, `randu` or `mean_plus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<AscentStart>,
    /// MAP-Elites only: the gradient operator (`[search.gradient]`); absent, the paper's loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gradient: Option<GradientOperator>,
    /// Where gradients run (gradient ascent, the gradient operator): `tract` (the built-in
    /// evaluator), `ort-cpu` or `cuda` (the backward pass as an ONNX graph on ONNX Runtime)
    /// or `auto`; absent, the model's `backend`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendChoice>,
}

/// `[search.gradient]`: gradient-informed MAP-Elites. After crossover and mutation, a share of
/// each generation's children take `steps` gradient steps on their genome toward a target
/// class (the encoding pulls the pixel gradient back to its genome and applies the step), with
/// the released ascent code's "progress" learning rate; then each competes for every class as
/// any child does. Which children, and toward which class, is drawn from the run's seed, so a
/// run stays a pure function of seed, config and backend. Costs: a step is one forward and one
/// backward pass of the model (three forward-pass equivalents), counted apart from evaluations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GradientOperator {
    /// Share of the children that take gradient steps (0 < share <= 1; default 0.1).
    pub share: f64,
    /// Gradient steps per chosen child (1 to 100; default 2).
    pub steps: u32,
    /// `parent` (the class the child's parent was drawn for) or `uniform`.
    pub target: SteerTarget,
    /// What the steps maximise: `probability` (the released ascent code's), `log-probability`
    /// or `logit`.
    pub objective: Objective,
    /// Upper bound of the learning rate.
    pub max_lr: f64,
    /// The desired progress of the objective per step, early on.
    pub early_prog: f64,
    /// Late on, the desired progress is `late_prog_mult * (1 - p)`, `p` the target class's
    /// probability (default 1; the released ascent code's is 0.1).
    pub late_prog_mult: f64,
}

impl Default for GradientOperator {
    fn default() -> Self {
        // The released progress policy with a bolder late phase (a step may aim at the whole
        // remaining 1 - p: a child that overshoots simply loses its competition), on one child
        // in ten, two steps each: measured on MNIST, direct and CPPN (docs/results.md,
        // "Gradient-informed MAP-Elites"; longer runs of a step suit the direct encoding, not
        // the CPPN's).
        let released = Recipe::default();
        Self {
            share: 0.1,
            steps: 2,
            target: SteerTarget::Parent,
            objective: Objective::Probability,
            max_lr: released.max_lr,
            early_prog: released.early_prog,
            late_prog_mult: 1.0,
        }
    }
}

impl GradientOperator {
    /// The step's learning-rate policy as the ascent recipe computes it (the released "progress"
    /// policy; decay, blur and pruning play no part here).
    pub fn recipe(&self) -> Recipe {
        Recipe {
            steps: u64::from(self.steps),
            decay: 0.0,
            max_lr: self.max_lr,
            early_prog: self.early_prog,
            late_prog_mult: self.late_prog_mult,
            ..Recipe::default()
        }
    }

    /// Checks the values: the problem as `(key, what is allowed)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(self.share > 0.0 && self.share <= 1.0) {
            return Err((
                "share",
                format!(
                    "must be in (0, 1], the share of children that take gradient steps (got {})",
                    self.share
                ),
            ));
        }
        if !(1..=100).contains(&self.steps) {
            return Err(("steps", format!("must be 1 to 100 (got {})", self.steps)));
        }
        self.recipe().check()
    }
}

impl SearchConfig {
    /// Whether this is the default search (written configs leave `[search]` out then).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The gradient-ascent recipe: the preset with the keys set here, `steps` steps.
    pub fn recipe(&self, steps: u64) -> Recipe {
        let base = match self.preset {
            AscentPreset::Released => Recipe::default(),
            AscentPreset::Unregularised => Recipe::unregularised(),
        };
        Recipe {
            steps,
            decay: self.decay.unwrap_or(base.decay),
            max_lr: self.max_lr.unwrap_or(base.max_lr),
            early_prog: self.early_prog.unwrap_or(base.early_prog),
            late_prog_mult: self.late_prog_mult.unwrap_or(base.late_prog_mult),
            blur_radius: self.blur_radius.unwrap_or(base.blur_radius),
            blur_every: self.blur_every.unwrap_or(base.blur_every),
            small_norm_percentile: self
                .small_norm_percentile
                .unwrap_or(base.small_norm_percentile),
            px_benefit_percentile: self
                .px_benefit_percentile
                .unwrap_or(base.px_benefit_percentile),
            px_abs_benefit_percentile: self
                .px_abs_benefit_percentile
                .unwrap_or(base.px_abs_benefit_percentile),
            start: self.start.unwrap_or(base.start),
        }
    }

    /// Whether gradient-ascent keys are set (they mean nothing to MAP-Elites).
    fn has_ascent_keys(&self) -> bool {
        let plain = SearchConfig {
            kind: self.kind,
            gradient: self.gradient.clone(),
            backend: self.backend,
            ..SearchConfig::default()
        };
        *self != plain
    }
}

/// One experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Seed of every random decision.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Generations after the initial population.
    #[serde(default = "default_generations")]
    pub generations: u64,
    /// Children per generation (the paper's `pop::size`).
    #[serde(default = "default_offspring")]
    pub offspring_per_generation: u32,
    /// Random genomes in the initial population (default: `offspring_per_generation`).
    #[serde(default)]
    pub initial_population: Option<u32>,
    /// Images per inference batch; 0 = the backend's preferred size for the model.
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// Mutator actors; 0 = as many as breeding's measured share of the cores needs, at least
    /// one per inference worker (up to the cores).
    #[serde(default)]
    pub mutators: u32,
    /// Inference workers (evaluator actors, each with its own copy of the models on one
    /// thread); 0 = the cores left after breeding's measured share on CPU backends, one on
    /// CUDA. The number does not change a run's result.
    #[serde(default)]
    pub workers: u32,
    /// Generations of lag in parent selection. 0 (the default) is the paper's algorithm:
    /// generation g is bred from the archive after generation g - 1, so every generation
    /// waits for the last batch of the one before. L >= 1 breeds generation g from the
    /// archive after generation g - 1 - L (generation 0's archive for the first L + 1), so
    /// L + 1 generations are in flight and the inference workers never idle at a generation
    /// boundary. Any L gives the same run on any number of workers and mutators; a run
    /// with L >= 1 is another run than with 0 (at most [`MAX_LAG`]; MAP-Elites only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lag: u32,
    /// Extra folders to search for plugins, relative to this file.
    #[serde(default)]
    pub plugin_dirs: Vec<PathBuf>,
    /// Memory the run may need at most (`"8 GiB"`, `"512 MiB"`, a byte count); setup refuses
    /// a config whose estimate exceeds it (or, without it, the machine's memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<String>,
    /// The classifier (`[model]`); a run may name more in `models`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelConfig>,
    /// More classifiers (`[[models]]` tables), after `model`. Every model scores every
    /// child; the fitness plugin gets all their outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelConfig>,
    /// The image encoding (default: the default experiment's, `direct` with its parameters).
    #[serde(default = "default_encoding")]
    pub encoding: PluginConfig,
    /// The fitness variant (default: the default experiment's, `confidence`).
    #[serde(default = "default_fitness")]
    pub fitness: PluginConfig,
    /// Checkpoint policy.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// HTTP endpoints of the daemon.
    #[serde(default)]
    pub http: HttpConfig,
    /// How the run searches (`[search]`; MAP-Elites without it).
    #[serde(default, skip_serializing_if = "SearchConfig::is_default")]
    pub search: SearchConfig,
    /// Which classes are cells.
    #[serde(default, skip_serializing_if = "ArchiveConfig::is_default")]
    pub archive: ArchiveConfig,
    /// When the run ends before its last generation (`[stop]`: conditions, a time budget).
    #[serde(default, skip_serializing_if = "StopConfig::is_empty")]
    pub stop: StopConfig,
    /// Folder that relative paths are resolved against (the config file's folder).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// A size in bytes from `"8 GiB"`, `"512MiB"`, `"2 GB"`, `"1.5G"` or `"123456"`; `None` when
/// it is not one.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "tb" => 1e12,
        _ => return None,
    };
    let bytes = n * scale;
    (bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// The largest `lag`: more generations in flight buy nothing once every worker always has a
/// batch queued, and parents grow staler.
pub const MAX_LAG: u32 = 4;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_seed() -> u64 {
    1
}
fn default_generations() -> u64 {
    200
}
fn default_offspring() -> u32 {
    200
}
fn default_batch() -> u32 {
    100
}

/// The first value in plugin parameters that JSON cannot carry, with its key and what is
/// wrong. Parameters reach plugins as JSON and are stored in every checkpoint as JSON, which
/// has no NaN, infinity or date: serde_json writes a non-finite float as `null`, so a run
/// with one would write checkpoints that do not read back (found by fuzz/, config_parse).
fn json_unsafe(table: &toml::Table, key: &str) -> Option<(String, String)> {
    fn check(value: &toml::Value, key: String) -> Option<(String, String)> {
        match value {
            toml::Value::Float(f) if !f.is_finite() => Some((
                key,
                format!(
                    "is {f}: plugin parameters travel as JSON, which has no NaN or infinity; give a finite number"
                ),
            )),
            toml::Value::Datetime(d) => Some((
                key,
                format!(
                    "is the date/time {d}: plugin parameters travel as JSON, which has no dates; write it as a string, \"{d}\""
                ),
            )),
            toml::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| check(v, format!("{key}[{i}]"))),
            toml::Value::Table(t) => t.iter().find_map(|(k, v)| check(v, format!("{key}.{k}"))),
            _ => None,
        }
    }
    table
        .iter()
        .find_map(|(k, v)| check(v, format!("{key}.{k}")))
}

/// The default experiment (MNIST, direct encoding), built into the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../../../configs/mnist-direct.toml");

/// A section of the default experiment, the default of a config that leaves it out (a config
/// with only `[model]` runs the default experiment on that model).
fn default_section(key: &str) -> PluginConfig {
    let table: toml::Table = toml::from_str(DEFAULT_CONFIG).expect("the default config is TOML");
    table[key]
        .clone()
        .try_into()
        .expect("the default config's plugin sections are valid (tested)")
}

fn default_encoding() -> PluginConfig {
    default_section("encoding")
}

fn default_fitness() -> PluginConfig {
    default_section("fitness")
}

impl RunConfig {
    /// Reads a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            cause: source,
        })?;
        // Absolute, so that the run folder (config.toml, checkpoints) names paths that still
        // resolve when `resume`, `export` or `transfer` run from another folder.
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = std::path::absolute(&base).unwrap_or(base);
        Self::parse(&text, &path.display().to_string(), base)
    }

    /// The built-in default experiment.
    pub fn builtin_default() -> Self {
        Self::parse(DEFAULT_CONFIG, "<built-in default>", PathBuf::from("."))
            .expect("the built-in default config is valid (tested)")
    }

    /// Parses config text; `origin` names it in errors, `base_dir` anchors relative paths.
    pub fn parse(text: &str, origin: &str, base_dir: PathBuf) -> Result<Self, ConfigError> {
        let mut config: RunConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.base_dir = base_dir;
        config.validate(origin)?;
        Ok(config)
    }

    /// Checks ranges; called by `parse` and again after command-line overrides.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let err = |key: &str, message: &str| {
            Err(ConfigError::Value {
                origin: origin.to_owned(),
                key: key.to_owned(),
                message: message.to_owned(),
            })
        };
        if self.offspring_per_generation == 0 {
            return err("offspring_per_generation", "must be at least 1");
        }
        if self.initial_population == Some(0) {
            return err("initial_population", "must be at least 1");
        }
        if self.lag > MAX_LAG {
            return err(
                "lag",
                &format!(
                    "must be from 0 (the paper's synchronous generations) to {MAX_LAG}; 1 already keeps every worker busy"
                ),
            );
        }
        if self.lag > 0 && self.search.kind != SearchKind::MapElites {
            return err(
                "lag",
                "applies to MAP-Elites only: gradient ascent ([search] kind) has no generations to overlap; remove it",
            );
        }
        if !(self.checkpoint.every_seconds.is_finite() && self.checkpoint.every_seconds >= 0.0) {
            return err(
                "checkpoint.every_seconds",
                "must be a number >= 0 (0 = never by time)",
            );
        }
        if self.checkpoint.keep == 0 {
            return err("checkpoint.keep", "must be at least 1");
        }
        // A name (`localhost:9464`) is resolved here, so a typo fails before anything runs.
        let resolves = std::net::ToSocketAddrs::to_socket_addrs(self.http.listen.as_str())
            .is_ok_and(|mut a| a.next().is_some());
        if !resolves {
            return err(
                "http.listen",
                "must be a host and a port that resolve to an address, like 127.0.0.1:9464 or localhost:9464",
            );
        }
        if !(1..=100_000).contains(&self.http.max_connections) {
            return err("http.max_connections", "must be from 1 to 100000");
        }
        if !(self.http.header_timeout_s.is_finite()
            && self.http.header_timeout_s > 0.0
            && self.http.header_timeout_s <= 86_400.0)
        {
            return err(
                "http.header_timeout_s",
                "must be a number of seconds above 0 and at most 86400",
            );
        }
        if let Some(bad) = self.http.allowed_hosts.iter().find(|h| {
            h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == '/' || c == '*')
        }) {
            return err(
                "http.allowed_hosts",
                &format!(
                    "{bad:?} is not a host name: list names as clients type them, like \"pareidolia.lab\" or \"pareidolia.lab:9464\" (no scheme, path or wildcard)"
                ),
            );
        }
        let models = self.model_keys();
        if models.is_empty() {
            return err(
                "model",
                "is missing: a run needs a classifier, a [model] table or [[models]] tables",
            );
        }
        for (i, (key, m)) in models.iter().enumerate() {
            if m.canvas
                .is_some_and(|[w, h]| w == 0 || h == 0 || w > 8192 || h > 8192)
            {
                return err(
                    &format!("{key}.canvas"),
                    "must be [width, height] with sizes from 1 to 8192 pixels",
                );
            }
            if m.cuda.device < 0 {
                return err(
                    &format!("{key}.cuda.device"),
                    "must be a CUDA device index, 0 or more",
                );
            }
            if let Some((first, _)) = models[..i].iter().find(|(_, o)| o.manifest == m.manifest) {
                return err(
                    &format!("{key}.manifest"),
                    &format!(
                        "names `{}`, which {first} names already; a run scores each model once",
                        m.manifest
                    ),
                );
            }
        }
        if let Err((key, message)) = self.stop.check(None) {
            return err(key, &message);
        }
        if let Some(text) = &self.max_memory
            && parse_bytes(text).is_none()
        {
            return err(
                "max_memory",
                "must be a size like \"8 GiB\", \"512 MiB\", \"2GB\" or a byte count",
            );
        }
        for (section, plugin) in [("encoding", &self.encoding), ("fitness", &self.fitness)] {
            if let Some((key, message)) = json_unsafe(&plugin.params, &format!("{section}.params"))
            {
                return err(&key, &message);
            }
        }
        if self.mutators > 256 {
            return err(
                "mutators",
                "must be at most 256 (0 = chosen from the cores)",
            );
        }
        if self.workers > 256 {
            return err("workers", "must be at most 256 (0 = chosen from the cores)");
        }
        match self.search.kind {
            SearchKind::MapElites if self.search.has_ascent_keys() => {
                return err(
                    "search",
                    "sets gradient-ascent keys, but `search.kind` is `map-elites`; set kind = \"gradient-ascent\" or remove them",
                );
            }
            SearchKind::MapElites
                if self.search.backend.is_some() && self.search.gradient.is_none() =>
            {
                return err(
                    "search.backend",
                    "chooses where gradients run, but this MAP-Elites run takes none; set kind = \"gradient-ascent\", add [search.gradient], or remove it (the evolution's inference backend is [model] backend)",
                );
            }
            SearchKind::MapElites => {
                if let Some(op) = &self.search.gradient {
                    if let Err((key, message)) = op.check() {
                        return err(&format!("search.gradient.{key}"), &message);
                    }
                    if self.model_keys().len() > 1 {
                        return err(
                            "search.gradient",
                            "the gradient operator steps toward one model's class; name one [model], or remove [search.gradient] for a run on several models",
                        );
                    }
                }
            }
            SearchKind::GradientAscent if self.search.gradient.is_some() => {
                return err(
                    "search.gradient",
                    "is the gradient operator of a MAP-Elites run; gradient ascent takes its recipe from the [search] keys themselves. Remove [search.gradient] or set kind = \"map-elites\"",
                );
            }
            SearchKind::GradientAscent => {
                if let Err((key, message)) = self.search.recipe(self.generations).check() {
                    let key = if key == "steps" { "generations" } else { key };
                    let key = if key == "generations" {
                        key.to_owned()
                    } else {
                        format!("search.{key}")
                    };
                    return err(&key, &message);
                }
                if self.model_keys().len() > 1 {
                    return err(
                        "models",
                        "gradient ascent pushes one model's probabilities; name one [model] (score the images on others with `pareidolia transfer`)",
                    );
                }
            }
        }
        if let Some(classes) = &self.archive.classes {
            if classes.is_empty() {
                return err(
                    "archive.classes",
                    "is empty: list the class indices that get a cell (at least one), or leave the key out for every class",
                );
            }
            let mut seen = std::collections::BTreeSet::new();
            if let Some(twice) = classes.iter().find(|&&c| !seen.insert(c)) {
                return err(
                    "archive.classes",
                    &format!("names class {twice} twice; list each class once"),
                );
            }
        }
        Ok(())
    }

    /// Every model of the run with its config key (`model`, `models[0]`, ...), in order.
    pub fn model_keys(&self) -> Vec<(String, &ModelConfig)> {
        self.model
            .iter()
            .map(|m| ("model".to_owned(), m))
            .chain(
                self.models
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (format!("models[{i}]"), m)),
            )
            .collect()
    }

    /// Every model of the run, in order (`model` first, then `models`).
    pub fn model_configs(&self) -> impl Iterator<Item = &ModelConfig> {
        self.model.iter().chain(&self.models)
    }

    /// Every model of the run, to change them all (command-line overrides).
    pub fn model_configs_mut(&mut self) -> impl Iterator<Item = &mut ModelConfig> {
        self.model.iter_mut().chain(&mut self.models)
    }

    /// The first model (a validated config has one).
    pub fn primary_model(&self) -> Option<&ModelConfig> {
        self.model_configs().next()
    }

    /// Size of the initial population.
    pub fn initial_population(&self) -> u32 {
        self.initial_population
            .unwrap_or(self.offspring_per_generation)
    }

    /// Plugin folders from the config, resolved against its folder.
    pub fn plugin_dirs(&self) -> Vec<PathBuf> {
        self.plugin_dirs
            .iter()
            .map(|d| self.base_dir.join(d))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_memory_takes_sizes_with_units() {
        assert_eq!(parse_bytes("8 GiB"), Some(8 << 30));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("2 GB"), Some(2_000_000_000));
        assert_eq!(parse_bytes("1.5G"), Some(3 << 29));
        assert_eq!(parse_bytes("4096"), Some(4096));
        for bad in ["", "lots", "8 parsecs", "-1 GiB", "0"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
        let text = format!("max_memory = \"eight\"\n{DEFAULT_CONFIG}");
        let e = RunConfig::parse(&text, "x.toml", PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`max_memory`"), "{e}");
    }

    #[test]
    fn the_builtin_default_parses() {
        let c = RunConfig::builtin_default();
        assert_eq!(c.encoding.plugin, "direct");
        assert_eq!(c.fitness.plugin, "confidence");
        assert_eq!(c.offspring_per_generation, 200);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let text = format!("{DEFAULT_CONFIG}\nmutation_strenght = 3\n");
        let e = RunConfig::parse(&text, "x.toml", PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mutation_strenght") && e.contains("x.toml"),
            "{e}"
        );
    }

    #[test]
    fn zero_batch_leaves_the_choice_to_the_backend() {
        let text = DEFAULT_CONFIG.replace("batch_size = 20", "batch_size = 0");
        let c = RunConfig::parse(&text, "x.toml", PathBuf::new()).unwrap();
        assert_eq!(c.batch_size, 0);
    }

    #[test]
    fn workers_default_to_the_machine_and_are_bounded() {
        assert_eq!(RunConfig::builtin_default().workers, 0);
        let text = DEFAULT_CONFIG.replace("mutators = 0", "mutators = 0\nworkers = 3");
        let c = RunConfig::parse(&text, "x.toml", PathBuf::new()).unwrap();
        assert_eq!(c.workers, 3);
        let text = DEFAULT_CONFIG.replace("mutators = 0", "mutators = 0\nworkers = 257");
        let e = RunConfig::parse(&text, "x.toml", PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`workers` must be at most 256"), "{e}");
    }

    #[test]
    fn model_views_and_backend_settings_are_checked_by_key() {
        let bad = [
            ("view = \"corners\"", "model.view"),
            ("canvas = [0, 256]", "model.canvas"),
            (
                "[model.cuda]\nconv_algorithm_search = \"fast\"",
                "model.cuda.conv_algorithm_search",
            ),
            ("[model.cuda]\ndevice = -1", "model.cuda.device"),
            ("[model.onnxruntime]\nthreds = 2", "threds"),
        ];
        for (line, key) in bad {
            let text = DEFAULT_CONFIG.replace(
                "backend = \"auto\"\n",
                &format!("backend = \"auto\"\n{line}\n"),
            );
            let e = RunConfig::parse(&text, "x.toml", PathBuf::new())
                .expect_err(line)
                .to_string();
            assert!(e.contains(key), "{line}: {e}");
        }
        let text = DEFAULT_CONFIG.replace(
            "backend = \"auto\"\n",
            "backend = \"auto\"\nview = \"ten-crop\"\ncanvas = [32, 32]\n[model.cuda]\ntf32 = false\n",
        );
        let c = RunConfig::parse(&text, "x.toml", PathBuf::new()).unwrap();
        let m = c.primary_model().unwrap();
        assert_eq!((m.view, m.canvas), (View::TenCrop, Some([32, 32])));
        assert!(!m.cuda.tf32 && m.cuda.prefer_nhwc);
    }

    #[test]
    fn a_run_names_one_model_or_several() {
        let two = format!(
            "{DEFAULT_CONFIG}\n[[models]]\nmanifest = \"b/manifest.toml\"\nbackend = \"ort-cpu\"\n\n[[models]]\nmanifest = \"c/manifest.toml\"\nview = \"ten-crop\"\n"
        );
        let c = RunConfig::parse(&two, "x.toml", PathBuf::new()).unwrap();
        let keys: Vec<String> = c.model_keys().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["model", "models[0]", "models[1]"]);
        let backends: Vec<BackendChoice> = c.model_configs().map(|m| m.backend).collect();
        assert_eq!(
            backends,
            [
                BackendChoice::Auto,
                BackendChoice::OrtCpu,
                BackendChoice::Auto
            ]
        );
        // Written back, it reads the same.
        let again = RunConfig::parse(&toml::to_string(&c).unwrap(), "y.toml", PathBuf::new());
        assert_eq!(again.unwrap(), c);
        // [[models]] alone is a run too.
        let only = "[[models]]\nmanifest = \"builtin:lenet-mnist\"\n[encoding]\nplugin = \"direct\"\n[fitness]\nplugin = \"confidence\"\n";
        let c = RunConfig::parse(only, "z.toml", PathBuf::new()).unwrap();
        assert_eq!(c.primary_model().unwrap().manifest, "builtin:lenet-mnist");
        // The default config writes back as it was: one [model] table, no `models`.
        let text = toml::to_string(&RunConfig::builtin_default()).unwrap();
        assert!(
            text.contains("[model]") && !text.contains("models"),
            "{text}"
        );
    }

    /// Issue 30, item 6: a config with only `[model]` is the default experiment on that model
    /// (it used to fail with "missing field `encoding`").
    #[test]
    fn a_config_with_only_a_model_takes_every_other_section_from_the_default() {
        let only = "[model]\nmanifest = \"fashion/manifest.toml\"\n";
        let c = RunConfig::parse(only, "z.toml", PathBuf::new()).unwrap();
        let d = RunConfig::builtin_default();
        assert_eq!(c.encoding, d.encoding);
        assert_eq!(c.fitness, d.fitness);
        assert_eq!(c.encoding.plugin, "direct");
        assert!(!c.encoding.params.is_empty());
        assert_eq!(c.primary_model().unwrap().manifest, "fashion/manifest.toml");
    }

    #[test]
    fn a_gradient_backend_is_taken_where_gradients_run_and_refused_where_none_do() {
        let parse = |extra: &str| {
            RunConfig::parse(
                &format!("{DEFAULT_CONFIG}\n{extra}"),
                "x.toml",
                PathBuf::new(),
            )
        };
        let c = parse("[search]\nkind = \"gradient-ascent\"\nbackend = \"ort-cpu\"\n").unwrap();
        assert_eq!(c.search.backend, Some(BackendChoice::OrtCpu));
        let c = parse("[search]\nbackend = \"cuda\"\n[search.gradient]\n").unwrap();
        assert_eq!(c.search.backend, Some(BackendChoice::Cuda));
        let e = parse("[search]\nbackend = \"tract\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("search.backend") && e.contains("takes none"),
            "{e}"
        );
        let e = parse("[search]\nkind = \"gradient-ascent\"\nbackend = \"gpu\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gpu"), "{e}");
    }

    #[test]
    fn no_model_or_the_same_model_twice_is_refused_by_key() {
        let none = "[encoding]\nplugin = \"direct\"\n[fitness]\nplugin = \"confidence\"\n";
        let e = RunConfig::parse(none, "x.toml", PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`model` is missing") && e.contains("[[models]]"),
            "{e}"
        );
        let twice = format!("{DEFAULT_CONFIG}\n[[models]]\nmanifest = \"builtin:lenet-mnist\"\n");
        let e = RunConfig::parse(&twice, "x.toml", PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "`models[0].manifest` names `builtin:lenet-mnist`, which model names already"
            ),
            "{e}"
        );
        let bad = format!("{DEFAULT_CONFIG}\n[[models]]\nmanifest = \"b.toml\"\ncanvas = [0, 1]\n");
        let e = RunConfig::parse(&bad, "x.toml", PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`models[0].canvas`"), "{e}");
    }

    /// Found by `fuzz/` (config_parse): `nan`, `inf` and dates are valid TOML, and were
    /// accepted in plugin parameters; JSON has none of them, so the plugin got `null` (or a
    /// toml-private wrapper object) and every checkpoint of the run failed to read back
    /// ("invalid type: null, expected any valid TOML value").
    #[test]
    fn plugin_parameters_json_cannot_carry_are_refused_by_key() {
        let cases = [
            ("encoding", "x = nan", "`encoding.params.x` is NaN"),
            ("encoding", "x = -inf", "`encoding.params.x` is -inf"),
            (
                "encoding",
                "x = { y = [1.0, inf] }",
                "`encoding.params.x.y[1]` is inf",
            ),
            (
                "fitness",
                "when = 1979-05-27",
                "`fitness.params.when` is the date/time 1979-05-27",
            ),
        ];
        for (section, line, want) in cases {
            let text = match section {
                "encoding" => DEFAULT_CONFIG.replace(
                    "[encoding.params]\n",
                    &format!("[encoding.params]\n{line}\n"),
                ),
                _ => format!("{DEFAULT_CONFIG}\n[fitness.params]\n{line}\n"),
            };
            let e = RunConfig::parse(&text, "x.toml", PathBuf::new())
                .expect_err(line)
                .to_string();
            assert!(e.contains(want) && e.contains("JSON"), "{line}: {e}");
        }
        // What is accepted reads back from a checkpoint's JSON as it was.
        let text = DEFAULT_CONFIG.replace(
            "[encoding.params]\n",
            "[encoding.params]\nlist = [1, 2.5, \"a\"]\nnested = { big = 1e300, tiny = -0.0 }\n",
        );
        let c = RunConfig::parse(&text, "x.toml", PathBuf::new()).unwrap();
        let back: RunConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back.encoding, c.encoding);
    }

    /// Found by the `config_parse` fuzz target: `eta_m = 15.2222222222222222222222222222220`
    /// came back from a checkpoint's JSON one ulp off (serde_json's default float parser is not
    /// correctly rounded), so a resumed run would have mutated with another parameter than
    /// the one it started with. Every float must read back bit for bit.
    #[test]
    fn plugin_parameters_read_back_from_a_checkpoint_bit_for_bit() {
        let values = [
            "15.2222222222222222222222222222220",
            "0.30000000000000004",
            "2.2250738585072014e-308",
            "1796161436.7278866",
            "0.1",
        ];
        let lines: String = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("x{i} = {v}\n"))
            .collect();
        let text = DEFAULT_CONFIG.replace(
            "[encoding.params]\n",
            &format!("[encoding.params]\n{lines}"),
        );
        let c = RunConfig::parse(&text, "x.toml", PathBuf::new()).unwrap();
        let back: RunConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        for (i, v) in values.iter().enumerate() {
            let key = format!("x{i}");
            let want: f64 = v.parse().unwrap();
            let got = |c: &RunConfig| c.encoding.params[&key].as_float().unwrap();
            assert_eq!(got(&c).to_bits(), want.to_bits(), "{key} as parsed");
            assert_eq!(
                got(&back).to_bits(),
                want.to_bits(),
                "{key} = {v} after JSON"
            );
        }
        assert_eq!(back, c);
    }

    #[test]
    fn archive_classes_must_be_a_list_of_distinct_classes() {
        let with = |line: &str| {
            let text = format!("{DEFAULT_CONFIG}\n[archive]\n{line}\n");
            RunConfig::parse(&text, "x.toml", PathBuf::new())
        };
        let c = with("classes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]").unwrap();
        assert_eq!(c.archive.classes, Some((0..10).collect()));
        // Written back, it reads the same; the default writes no [archive] table.
        let again = RunConfig::parse(&toml::to_string(&c).unwrap(), "y.toml", PathBuf::new());
        assert_eq!(again.unwrap(), c);
        let text = toml::to_string(&RunConfig::builtin_default()).unwrap();
        assert!(!text.contains("archive"), "{text}");
        for (line, want) in [
            ("classes = []", "`archive.classes` is empty"),
            (
                "classes = [3, 1, 3]",
                "`archive.classes` names class 3 twice",
            ),
            ("classes = [-1]", "classes"),
            ("clases = [1]", "clases"),
        ] {
            let e = with(line).expect_err(line).to_string();
            assert!(e.contains(want) && e.contains("x.toml"), "{line}: {e}");
        }
    }

    #[test]
    fn stop_conditions_are_parsed_and_checked_by_key() {
        let with = |table: &str| {
            let text = format!("{DEFAULT_CONFIG}\n[stop]\n{table}\n");
            RunConfig::parse(&text, "x.toml", PathBuf::new())
        };
        let c = with("until = [\"min>=0.9999\", \"classes>=0.99:95%\"]\nmax_seconds = 30").unwrap();
        assert_eq!(c.stop.until.len(), 2);
        assert_eq!(c.stop.max_seconds, 30.0);
        // Written back, it reads the same.
        let again = RunConfig::parse(&toml::to_string(&c).unwrap(), "y.toml", PathBuf::new());
        assert_eq!(again.unwrap(), c);
        let e = with("until = [\"mni>=0.9\"]").unwrap_err().to_string();
        assert!(
            e.contains("x.toml")
                && e.contains("unknown statistic `mni`")
                && e.contains("classes>=C:N"),
            "{e}"
        );
        let e = with("max_seconds = -5").unwrap_err().to_string();
        assert!(e.contains("`stop.max_seconds` must be"), "{e}");
        let e = with("untill = []").unwrap_err().to_string();
        assert!(e.contains("untill"), "{e}");
        // Without a [stop] table, none is written back.
        let text = toml::to_string(&RunConfig::builtin_default()).unwrap();
        assert!(!text.contains("stop"), "{text}");
    }

    #[test]
    fn http_guards_take_sane_values_and_refuse_the_rest() {
        let with = |keys: &str| {
            let text = format!("{DEFAULT_CONFIG}\n[http]\n{keys}\n");
            RunConfig::parse(&text, "x.toml", PathBuf::new())
        };
        let c = with("allowed_hosts = [\"Lab.Example\", \"lab.example:9464\"]\nmax_connections = 8\nheader_timeout_s = 0.5").unwrap();
        assert_eq!(c.http.max_connections, 8);
        assert_eq!(c.http.header_timeout_s, 0.5);
        assert_eq!(with("").unwrap().http, HttpConfig::default());
        for (keys, says) in [
            (
                "max_connections = 0",
                "`http.max_connections` must be from 1",
            ),
            ("header_timeout_s = 0.0", "`http.header_timeout_s` must be"),
            ("header_timeout_s = nan", "`http.header_timeout_s` must be"),
            (
                "allowed_hosts = [\"http://lab\"]",
                "no scheme, path or wildcard",
            ),
            ("allowed_hosts = [\"*.lab\"]", "no scheme, path or wildcard"),
            ("allowed_hosts = [\"\"]", "is not a host name"),
        ] {
            let e = with(keys).unwrap_err().to_string();
            assert!(e.contains(says), "{keys}: {e}");
        }
    }

    #[test]
    fn listen_takes_names_that_resolve_and_refuses_the_rest() {
        let with = |listen: &str| {
            let text = format!("{DEFAULT_CONFIG}\n[http]\nlisten = \"{listen}\"\n");
            RunConfig::parse(&text, "x.toml", PathBuf::new())
        };
        assert!(with("localhost:9464").is_ok());
        assert!(with("[::1]:0").is_ok());
        for bad in ["localhost", "127.0.0.1", ":9464x"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(
                e.contains("`http.listen`") && e.contains("localhost:9464"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_config_file_anchors_relative_paths_at_its_absolute_folder() {
        let dir = std::env::temp_dir().join(format!("pareidolia-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, DEFAULT_CONFIG).unwrap();
        let c = RunConfig::from_file(&path).unwrap();
        assert!(c.base_dir.is_absolute(), "{}", c.base_dir.display());
        assert_eq!(c.base_dir, dir);
        std::fs::remove_dir_all(&dir).ok();
    }
}
