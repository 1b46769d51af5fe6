//! Training a model folder, and the paper's retraining experiment (section 7): fooling images
//! join the training set as an extra class ("fooling", n + 1 outputs), a new network is
//! trained, and evolution runs again against it, iteration after iteration.
//!
//! The retrain folder (`pareidolia retrain --out DIR`):
//!
//! ```text
//! DIR/retrain.json            the plan: iterations, images per iteration, data, recipe
//! DIR/evolution.toml          the evolution config every run starts from
//! DIR/retrain.csv             one row per finished iteration (rewritten after each)
//! DIR/iteration-00/model/     the shipped model (copied), then iteration-01/model/ ... the
//!                             retrained ones: model.onnx, labels.txt, manifest.toml,
//!                             training.json
//! DIR/iteration-00/runs/seed-N/  one run folder per evolution run (gallery, summary.json,
//!                             history.csv)
//! DIR/iteration-00/result.json   the iteration's row, in full
//! ```
//!
//! Iteration 0 evolves against the shipped model. Iteration `i >= 1` first trains model `i`
//! from scratch (the recipe's initialisation) on the real training images plus every fooling
//! image of iterations `0..i` labelled `fooling`, measures it (held-out accuracy on the real
//! digits; the share of the earlier fooling images it labels `fooling`), then evolves new
//! fooling images against it, the cells being the real classes only while the fitness sees
//! the whole softmax (a fooling image must beat the `fooling` output too).
//!
//! Every step leaves a file that says it is done (a model folder is renamed into place whole,
//! a run folder is done when its `summary.json` reads back), so a re-run continues where the
//! last one stopped. A stop request ends the step in flight without keeping it: a cut-short
//! training or evolution run is done again, from its start, by the next session (both are
//! deterministic, so the result is the same).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use pareidolia_core::config::RunConfig;
use pareidolia_core::image_io;
use pareidolia_core::summary::RunSummary;
use pareidolia_eval::{EvalError, Model, ModelRef, Preprocessor, sha256_hex};
use pareidolia_grad::grad::Network;
use pareidolia_grad::train::{
    self, BatchNormMode, Init, SgdRecipe, TrainProgress, TrainReport, TrainSet,
};
use pareidolia_grad::{LabelledImages, OnnxGraph, TrainingData};
use serde::{Deserialize, Serialize};

use pareidolia_daemon::experiment::{Experiment, RunOptions};
use pareidolia_daemon::run::folder::{self, RunFolderError};
use pareidolia_daemon::run::history;
use pareidolia_daemon::run::outcome::{Progress, RunError};
use pareidolia_daemon::run::setup::SetupError;
use pareidolia_daemon::run::stop::StopHandle;

/// The label of the extra class.
pub const FOOLING_LABEL: &str = "fooling";
/// The plan's file in a retrain folder.
pub const PLAN_FILE: &str = "retrain.json";
/// The evolution config's file in a retrain folder.
pub const CONFIG_FILE: &str = "evolution.toml";
/// The results table.
pub const CSV_FILE: &str = "retrain.csv";
/// Its header.
pub const CSV_HEADER: &str = "iteration,model,classes,train_real,train_fooling,train_iterations,train_s,train_loss,held_out_accuracy,earlier_fooling,earlier_fooling_recognised,runs,images,median_confidence,min_confidence,share_at_least_0.9999,runs_all_fooled,median_generations_all_fooled,evolve_s";

/// What stops a training or a retrain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetrainError {
    /// A model, data set or graph problem.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// An evolution run could not be set up.
    #[error("cannot set up the evolution run {run}: {source}")]
    Setup {
        /// The run folder.
        run: PathBuf,
        /// Why.
        source: Box<SetupError>,
    },
    /// An evolution run failed.
    #[error("the evolution run {run} failed: {source}")]
    Run {
        /// The run folder.
        run: PathBuf,
        /// Why.
        source: Box<RunError>,
    },
    /// A run folder could not be written.
    #[error(transparent)]
    Folder(#[from] RunFolderError),
    /// A file or folder could not be read or written.
    #[error("cannot {what} {path}: {cause}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// Something the retrain refuses, with what to do about it.
    #[error("{0}")]
    Refused(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RetrainError + 'a {
    move |cause| RetrainError::Io {
        what,
        path: path.to_owned(),
        cause,
    }
}

/// 8-bit images with labels, in one model's input size and channels (HWC bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelledBytes {
    /// Bytes of one image.
    pub image_len: usize,
    /// The images, one after the other.
    pub pixels: Vec<u8>,
    /// One class per image.
    pub labels: Vec<u32>,
}

impl LabelledBytes {
    /// Copies an IDX set.
    pub fn from_set(set: &LabelledImages) -> Self {
        Self {
            image_len: set.image_len(),
            pixels: set.pixels().to_vec(),
            labels: set.labels().iter().map(|&l| u32::from(l)).collect(),
        }
    }

    /// Images held.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Appends another set's images.
    pub fn extend(&mut self, other: &LabelledBytes) {
        self.pixels.extend_from_slice(&other.pixels);
        self.labels.extend_from_slice(&other.labels);
    }
}

/// One training: the graph to start from, the data, the recipe, where to write.
pub struct TrainJob<'a> {
    /// The model whose graph, input spec and labels are the starting point.
    pub base: &'a Model,
    /// Add the class [`FOOLING_LABEL`] (the last layer widened from n to n + 1 outputs).
    pub widen: bool,
    /// The new model's name.
    pub name: String,
    /// Training images.
    pub train: &'a LabelledBytes,
    /// Held-out real images, measured after training (accuracy over every output).
    pub held_out: Option<&'a LabelledBytes>,
    /// The recipe.
    pub recipe: SgdRecipe,
    /// Threads a batch is split over.
    pub threads: usize,
    /// Where the data came from, for the manifest's provenance.
    pub data_provenance: String,
}

/// What training wrote, as `training.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// The model's name.
    pub model: String,
    /// sha256 of the written ONNX file.
    pub sha256: String,
    /// Classes of the trained model.
    pub classes: usize,
    /// Training images, and of them those of each class.
    pub images: usize,
    /// Per class.
    pub per_class: Vec<usize>,
    /// The recipe.
    pub recipe: SgdRecipe,
    /// The run.
    pub report: TrainReport,
    /// Held-out accuracy (fraction) and the held-out count, when measured.
    pub held_out_accuracy: Option<f64>,
    /// Images measured.
    pub held_out_count: usize,
    /// The data's provenance.
    pub data: String,
}

/// The model input tensors of 8-bit images, for one manifest's preprocessing.
fn inputs_of(model: &Model, set: &LabelledBytes) -> Result<Vec<f32>, RetrainError> {
    let pre = Preprocessor::new(&model.manifest.input);
    if set.image_len != pre.image_len() {
        return Err(RetrainError::Refused(format!(
            "images of {} bytes do not fit model {}'s input of {} bytes ({}x{}x{})",
            set.image_len,
            model.name(),
            pre.image_len(),
            model.manifest.input.width,
            model.manifest.input.height,
            model.manifest.input.channels
        )));
    }
    Ok(train::encode_images(&pre, &set.pixels))
}

/// The model with the class `fooling` added: its graph widened (a zero row: the first n
/// outputs are the original model's), its labels extended.
pub fn widened(base: &Model, name: &str) -> Result<(Model, OnnxGraph), RetrainError> {
    let mut graph = OnnxGraph::decode(&base.onnx, base.onnx_path.display().to_string())?;
    let head = graph.head()?;
    graph.widen(&vec![0.0; head.inputs], 0.0)?;
    let mut labels = base.labels.clone();
    if labels.iter().any(|l| l == FOOLING_LABEL) {
        return Err(RetrainError::Refused(format!(
            "model {} already has a class `{FOOLING_LABEL}`; widen the original model instead",
            base.name()
        )));
    }
    labels.push(FOOLING_LABEL.to_owned());
    Ok((model_of(base, name, graph.to_bytes().into(), labels), graph))
}

/// `base`'s manifest for a model folder's files (`model.onnx`, `labels.txt`) with these ONNX
/// bytes (sha256 pinned), name and labels.
fn model_of(base: &Model, name: &str, onnx: Arc<[u8]>, labels: Vec<String>) -> Model {
    let sha256 = sha256_hex(&onnx);
    let mut manifest = base.manifest.clone();
    manifest.name = name.to_owned();
    manifest.onnx = PathBuf::from("model.onnx");
    manifest.labels = PathBuf::from("labels.txt");
    manifest.sha256 = Some(sha256.clone());
    Model {
        manifest,
        sha256,
        onnx,
        onnx_path: PathBuf::from("model.onnx"),
        labels,
    }
}

/// Writes `model` (bytes, labels, manifest) into `dir`, which must not exist yet: through a
/// temporary folder beside it, renamed into place whole. `extra` files are written too.
fn write_model_folder(
    dir: &Path,
    model: &Model,
    base: &Model,
    extra: &[(&str, Vec<u8>)],
) -> Result<(), RetrainError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    let tmp = parent.join(format!(
        ".{}.tmp",
        dir.file_name()
            .map_or("model".into(), |n| n.to_string_lossy())
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io("remove", &tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
    let mut manifest = model.manifest.clone();
    if let Some(mean) = &mut manifest.input.mean_image {
        // The mean image travels with the model.
        let source = base
            .onnx_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&mean.file);
        let name = PathBuf::from("mean.npy");
        std::fs::copy(&source, tmp.join(&name)).map_err(io("copy the mean image", &source))?;
        mean.file = name;
    }
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("model.onnx", model.onnx.to_vec()),
        ("labels.txt", (model.labels.join("\n") + "\n").into_bytes()),
        (
            "manifest.toml",
            format!(
                "# Written by pareidolia (training/retraining); see training.json beside it.\n{}",
                toml::to_string(&manifest).map_err(|e| RetrainError::Refused(format!(
                    "cannot write the manifest of {}: {e}",
                    model.name()
                )))?
            )
            .into_bytes(),
        ),
    ];
    for (name, bytes) in files.iter().chain(extra) {
        let path = tmp.join(name);
        std::fs::write(&path, bytes).map_err(io("write", &path))?;
    }
    // What a run will load must load (sha256, labels, manifest).
    Model::load(&ModelRef::Path(tmp.join("manifest.toml")))?;
    std::fs::rename(&tmp, dir).map_err(io("rename into place", dir))?;
    Ok(())
}

/// Trains a model as `job` says and writes its folder `out` (which must not exist). Returns
/// `None` when `progress` stopped it (nothing is written then).
pub fn train_model(
    job: &TrainJob<'_>,
    out: &Path,
    progress: &mut dyn FnMut(&TrainProgress) -> ControlFlow<()>,
) -> Result<Option<TrainingRecord>, RetrainError> {
    if out.exists() {
        return Err(RetrainError::Refused(format!(
            "the model folder {} exists already; choose another --out or remove it",
            out.display()
        )));
    }
    let (mut model, mut graph) = if job.widen {
        widened(job.base, &job.name)?
    } else {
        let graph = OnnxGraph::decode(&job.base.onnx, job.base.onnx_path.display().to_string())?;
        (
            model_of(
                job.base,
                &job.name,
                job.base.onnx.clone(),
                job.base.labels.clone(),
            ),
            graph,
        )
    };
    let classes = model.classes();
    if let Some(&l) = job.train.labels.iter().find(|&&l| l as usize >= classes) {
        return Err(RetrainError::Refused(format!(
            "a training label is {l}, but model {} has {classes} classes (labels 0 to {})",
            model.name(),
            classes - 1
        )));
    }
    let mut per_class = vec![0usize; classes];
    for &l in &job.train.labels {
        per_class[l as usize] += 1;
    }
    if let Some(c) = per_class.iter().position(|&n| n == 0) {
        return Err(RetrainError::Refused(format!(
            "the training set has no image of class {c} ({}) of model {}; every class needs examples",
            model.labels[c],
            model.name()
        )));
    }
    let inputs = inputs_of(&model, job.train)?;
    let mut network = Network::<f32>::load(&model)?;
    network.set_threads(job.threads);
    let set = TrainSet {
        inputs: &inputs,
        labels: &job.train.labels,
    };
    let report = train::train(&mut network, &set, &job.recipe, 100, progress)?;
    if report.stopped {
        return Ok(None);
    }
    // The running statistics change with batch statistics or a fresh start.
    let running = network.has_batch_norm()
        && (job.recipe.batch_norm == BatchNormMode::Train || job.recipe.init == Init::Xavier);
    train::write_parameters(&mut graph, &network, running)?;
    let (held_out_accuracy, held_out_count) = match job.held_out {
        Some(h) => {
            let x = inputs_of(&model, h)?;
            let acc = train::accuracy(
                &network,
                &TrainSet {
                    inputs: &x,
                    labels: &h.labels,
                },
            )?;
            (Some(acc), h.len())
        }
        None => (None, 0),
    };
    model = model_of(job.base, &job.name, graph.to_bytes().into(), model.labels);
    let recipe = &job.recipe;
    let mut p = pareidolia_eval::Provenance {
        made_by: "pareidolia train (pareidolia_grad::train)".into(),
        other: toml::Table::new(),
    };
    p.other
        .insert("data".into(), job.data_provenance.clone().into());
    p.other.insert(
        "training".into(),
        format!(
            "Caffe SGDSolver: base_lr {}, momentum {}, weight decay {} (biases too), bias lr x{}, lr_policy inv gamma {} power {}, batch {}, {} iterations, init {:?}, seed {}, softmax cross-entropy, BatchNormalization {}, {} threads, {:.0} s",
            recipe.base_lr,
            recipe.momentum,
            recipe.weight_decay,
            recipe.bias_lr_mult,
            recipe.lr_gamma,
            recipe.lr_power,
            recipe.batch,
            report.iterations,
            recipe.init,
            recipe.seed,
            if network.has_batch_norm() {
                match recipe.batch_norm {
                    BatchNormMode::Train => "with batch statistics (train)",
                    BatchNormMode::Frozen => "frozen",
                }
            } else {
                "none"
            },
            report.threads,
            report.seconds
        )
        .into(),
    );
    if let Some(acc) = held_out_accuracy {
        p.other.insert("held_out_accuracy".into(), acc.into());
        p.other
            .insert("held_out_count".into(), (held_out_count as i64).into());
    }
    model.manifest.provenance = p;
    let record = TrainingRecord {
        model: job.name.clone(),
        sha256: model.sha256.clone(),
        classes,
        images: job.train.len(),
        per_class,
        recipe: recipe.clone(),
        report,
        held_out_accuracy,
        held_out_count,
        data: job.data_provenance.clone(),
    };
    let json = serde_json::to_vec_pretty(&record).expect("plain data serialises");
    write_model_folder(out, &model, job.base, &[("training.json", json)])?;
    Ok(Some(record))
}

/// The most fooling images an iteration evolves by default: as many as the smallest real
/// class has training images, but no more than this (400 on `data/mnist-5k`; 6,000 on
/// Fashion-MNIST would be 600 runs per iteration, this keeps it to 50).
pub const DEFAULT_MAX_IMAGES: usize = 500;

/// The default fooling images per iteration for a smallest real class of `smallest` images.
pub fn default_images(smallest: Option<usize>) -> usize {
    smallest.unwrap_or(0).clamp(1, DEFAULT_MAX_IMAGES)
}

/// The plan of a retrain, `retrain.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Retrained models after the shipped one (iterations 1 to this).
    pub iterations: u32,
    /// Fooling images evolved per iteration (at least; every champion is kept).
    pub images_per_iteration: usize,
    /// Evolution runs per iteration (seeds `seed`, `seed + 1`, ...).
    pub runs_per_iteration: usize,
    /// The real training data (an IDX folder with a held-out `t10k` set).
    pub train_data: PathBuf,
    /// How each model is trained.
    pub recipe: SgdRecipe,
    /// Training threads.
    pub threads: usize,
    /// The folder the evolution config's relative paths are resolved against.
    pub base_dir: PathBuf,
}

/// What a retrain is asked to do (the command line).
#[derive(Debug, Clone)]
pub struct Request {
    /// The evolution config.
    pub config: RunConfig,
    /// Retrained models.
    pub iterations: u32,
    /// Fooling images per iteration; `None`: as many as the smallest real class has training
    /// images.
    pub images_per_iteration: Option<usize>,
    /// The real training data.
    pub train_data: PathBuf,
    /// The recipe.
    pub recipe: SgdRecipe,
    /// Training threads (0 = every core).
    pub threads: usize,
}

/// One iteration's results, `iteration-NN/result.json`; a row of `retrain.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationResult {
    /// The iteration (0: the shipped model).
    pub iteration: u32,
    /// The model's name and sha256.
    pub model: String,
    /// Its sha256.
    pub model_sha256: String,
    /// Its classes.
    pub classes: usize,
    /// Its training (none for the shipped model).
    pub training: Option<TrainingSummary>,
    /// Accuracy on the real held-out images (over every output, `fooling` included).
    pub held_out_accuracy: f64,
    /// Fooling images of earlier iterations.
    pub earlier_fooling: usize,
    /// The share of them this model labels `fooling` (none at iteration 0).
    pub earlier_fooling_recognised: Option<f64>,
    /// Evolution runs.
    pub runs: usize,
    /// Champions they left (the new fooling images).
    pub images: usize,
    /// Their median confidence.
    pub median_confidence: f64,
    /// Their lowest.
    pub min_confidence: f64,
    /// The share at 99.99% or more.
    pub share_at_least_9999: f64,
    /// Runs in which every cell reached 99.99%.
    pub runs_all_fooled: usize,
    /// The median over those runs of the first generation where every cell was at 99.99%.
    pub median_generations_all_fooled: Option<f64>,
    /// Seconds the evolution runs took (summed over runs, this session's and earlier).
    pub evolve_s: f64,
}

/// The training part of a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Real training images.
    pub real: usize,
    /// Fooling images among the training images.
    pub fooling: usize,
    /// Iterations.
    pub iterations: u64,
    /// Seconds.
    pub seconds: f64,
    /// Mean loss of the last 100 iterations.
    pub final_loss: f64,
}

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.6}"))
}

impl IterationResult {
    /// The CSV row ([`CSV_HEADER`]).
    pub fn csv_row(&self) -> String {
        let t = self.training.as_ref();
        [
            self.iteration.to_string(),
            self.model.clone(),
            self.classes.to_string(),
            t.map_or(String::new(), |t| t.real.to_string()),
            t.map_or(String::new(), |t| t.fooling.to_string()),
            t.map_or(String::new(), |t| t.iterations.to_string()),
            opt(t.map(|t| t.seconds)),
            opt(t.map(|t| t.final_loss)),
            format!("{:.6}", self.held_out_accuracy),
            self.earlier_fooling.to_string(),
            opt(self.earlier_fooling_recognised),
            self.runs.to_string(),
            self.images.to_string(),
            format!("{:.6}", self.median_confidence),
            format!("{:.6}", self.min_confidence),
            format!("{:.6}", self.share_at_least_9999),
            self.runs_all_fooled.to_string(),
            opt(self.median_generations_all_fooled),
            format!("{:.1}", self.evolve_s),
        ]
        .join(",")
    }
}

/// The median of some values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The first generation in a `history.csv` at which `cells` classes were at 99.99%.
pub fn first_generation_all_fooled(history_csv: &str, cells: usize) -> Option<u64> {
    let mut lines = history_csv.lines();
    let header: Vec<&str> = lines.next()?.split(',').collect();
    let g = header.iter().position(|h| *h == "generation")?;
    let a = header.iter().position(|h| *h == "at_least_0.9999")?;
    lines.find_map(|line| {
        let f: Vec<&str> = line.split(',').collect();
        let n: usize = f.get(a)?.parse().ok()?;
        (n >= cells).then(|| f.get(g)?.parse().ok())?
    })
}

/// Progress of a retrain, for a display.
#[derive(Debug)]
pub enum Event<'a> {
    /// Training model `iteration`.
    Training {
        /// The iteration.
        iteration: u32,
        /// Where training is.
        progress: &'a TrainProgress,
    },
    /// Model `iteration` measured.
    Measured {
        /// The iteration.
        iteration: u32,
        /// Held-out accuracy.
        held_out_accuracy: f64,
        /// Share of earlier fooling images labelled `fooling`.
        recognised: Option<f64>,
    },
    /// An evolution run is done (or was done by an earlier session).
    Run {
        /// The iteration.
        iteration: u32,
        /// Runs done in this iteration.
        done: usize,
        /// Of how many.
        runs: usize,
        /// Its summary.
        summary: &'a RunSummary,
    },
    /// An iteration is done.
    Iteration(&'a IterationResult),
}

/// How a retrain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Every iteration is done.
    Done,
    /// A stop request ended it during this iteration; a re-run continues there.
    Stopped {
        /// The iteration in progress.
        iteration: u32,
    },
}

/// A retrain folder, opened.
pub struct Retrain {
    dir: PathBuf,
    plan: Plan,
    config: RunConfig,
    base: Model,
    train: LabelledBytes,
    held_out: LabelledBytes,
    data_provenance: String,
    /// The real classes (the cells).
    real_classes: usize,
}

fn read_plan(dir: &Path) -> Result<Option<(Plan, RunConfig)>, RetrainError> {
    let path = dir.join(PLAN_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
    let plan: Plan = serde_json::from_str(&text).map_err(|e| {
        RetrainError::Refused(format!(
            "{} is not a retrain plan ({e}); the folder was not made by `pareidolia retrain`, or the file is damaged",
            path.display()
        ))
    })?;
    let cpath = dir.join(CONFIG_FILE);
    let ctext = std::fs::read_to_string(&cpath).map_err(io("read", &cpath))?;
    let config = RunConfig::parse(&ctext, &cpath.display().to_string(), plan.base_dir.clone())
        .map_err(|e| RetrainError::Refused(e.to_string()))?;
    Ok(Some((plan, config)))
}

fn config_text(config: &RunConfig) -> Result<String, RetrainError> {
    toml::to_string(config)
        .map_err(|e| RetrainError::Refused(format!("cannot serialise the evolution config: {e}")))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RetrainError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))
}

fn write_plan(dir: &Path, plan: &Plan) -> Result<(), RetrainError> {
    write_atomic(
        &dir.join(PLAN_FILE),
        &serde_json::to_vec_pretty(plan).expect("plain data"),
    )
}

impl Retrain {
    /// Starts a retrain in `dir` (empty or absent), or continues the one there: the request
    /// must then match the plan there, except for `iterations`, which may grow.
    pub fn create(dir: &Path, request: Request) -> Result<Self, RetrainError> {
        let data = TrainingData::open(&request.train_data)?;
        let train_data =
            std::path::absolute(&request.train_data).map_err(io("resolve", &request.train_data))?;
        let threads = if request.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            request.threads
        };
        let config = request.config;
        let base = Self::base_model(&config)?;
        let cells = Self::cells_of(&config, &base);
        let smallest = data.train.class_counts(base.classes()).into_iter().min();
        let images = request
            .images_per_iteration
            .unwrap_or_else(|| default_images(smallest))
            .max(1);
        let plan = Plan {
            iterations: request.iterations,
            images_per_iteration: images,
            runs_per_iteration: images.div_ceil(cells.max(1)),
            train_data,
            recipe: request.recipe,
            threads,
            base_dir: config.base_dir.clone(),
        };
        plan.recipe.validate()?;
        match read_plan(dir)? {
            Some((stored, stored_config)) => {
                let mut differences = Vec::new();
                let mut s = stored.clone();
                s.iterations = plan.iterations;
                if s != plan {
                    let a = serde_json::to_value(&stored).expect("plain data");
                    let b = serde_json::to_value(&plan).expect("plain data");
                    for (k, v) in a.as_object().into_iter().flatten() {
                        if k != "iterations" && b.get(k) != Some(v) {
                            differences.push(format!("`{k}` was {v}, now {}", b[k]));
                        }
                    }
                }
                if config_text(&stored_config)? != config_text(&config)? {
                    differences.push(format!("the evolution config differs from {CONFIG_FILE}"));
                }
                if !differences.is_empty() {
                    return Err(RetrainError::Refused(format!(
                        "{} holds a retrain with another plan ({}); continue it with `pareidolia retrain --out {}` and no other settings, or choose another --out",
                        dir.display(),
                        differences.join("; "),
                        dir.display()
                    )));
                }
                let mut plan = stored;
                plan.iterations = request.iterations;
                write_plan(dir, &plan)?;
                Self::assemble(dir, plan, config, base, data)
            }
            None => {
                if dir.exists()
                    && std::fs::read_dir(dir)
                        .map_err(io("read", dir))?
                        .next()
                        .is_some()
                {
                    return Err(RetrainError::Refused(format!(
                        "{} holds files but no {PLAN_FILE}: it is not a retrain folder; choose another --out",
                        dir.display()
                    )));
                }
                std::fs::create_dir_all(dir).map_err(io("create", dir))?;
                write_atomic(&dir.join(CONFIG_FILE), config_text(&config)?.as_bytes())?;
                write_plan(dir, &plan)?;
                Self::assemble(dir, plan, config, base, data)
            }
        }
    }

    /// Continues the retrain in `dir` as planned (with more iterations when given).
    pub fn open(dir: &Path, iterations: Option<u32>) -> Result<Self, RetrainError> {
        let Some((mut plan, config)) = read_plan(dir)? else {
            return Err(RetrainError::Refused(format!(
                "{} has no {PLAN_FILE}: start a retrain there with `pareidolia retrain --config CONFIG --out {}`",
                dir.display(),
                dir.display()
            )));
        };
        if let Some(k) = iterations {
            plan.iterations = k;
            write_plan(dir, &plan)?;
        }
        let data = TrainingData::open(&plan.train_data)?;
        let base = Self::base_model(&config)?;
        Self::assemble(dir, plan, config, base, data)
    }

    fn base_model(config: &RunConfig) -> Result<Model, RetrainError> {
        if !config.models.is_empty() {
            return Err(RetrainError::Refused(
                "the evolution config names several models; a retrain retrains one: keep `[model]` only".into(),
            ));
        }
        let m = config.primary_model().ok_or_else(|| {
            RetrainError::Refused("the evolution config names no `[model]`".into())
        })?;
        Ok(Model::load(&ModelRef::parse(
            &m.manifest,
            &config.base_dir,
        ))?)
    }

    fn cells_of(config: &RunConfig, base: &Model) -> usize {
        config
            .archive
            .classes
            .as_ref()
            .map_or(base.classes(), Vec::len)
    }

    fn assemble(
        dir: &Path,
        plan: Plan,
        config: RunConfig,
        base: Model,
        data: TrainingData,
    ) -> Result<Self, RetrainError> {
        // Refused early: a model whose last layer cannot be widened, data that do not fit it.
        widened(&base, base.name())?;
        data.check_for(&base.manifest.input, &base.labels, base.name())?;
        let Some(held_out) = &data.held_out else {
            return Err(RetrainError::Refused(format!(
                "the training data {} has no held-out set (t10k-images/t10k-labels); a retrain measures every model on one",
                data.dir.display()
            )));
        };
        if base.labels.iter().any(|l| l == FOOLING_LABEL) {
            return Err(RetrainError::Refused(format!(
                "model {} already has a class `{FOOLING_LABEL}`; retrain from the original model",
                base.name()
            )));
        }
        let spec = &base.manifest.input;
        let canvas = config.primary_model().and_then(|m| m.canvas);
        if canvas.is_some_and(|c| c != [spec.width, spec.height]) {
            return Err(RetrainError::Refused(format!(
                "the evolution config's canvas is not model {}'s input size {}x{}; fooling images become training images only at the input size",
                base.name(),
                spec.width,
                spec.height
            )));
        }
        Ok(Self {
            dir: dir.to_owned(),
            data_provenance: format!(
                "{} (train {} images, held-out {}) plus the fooling images of earlier iterations as class `{FOOLING_LABEL}`",
                data.dir.display(),
                data.train.len(),
                held_out.len()
            ),
            train: LabelledBytes::from_set(&data.train),
            held_out: LabelledBytes::from_set(held_out),
            real_classes: base.classes(),
            plan,
            config,
            base,
        })
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    fn iteration_dir(&self, i: u32) -> PathBuf {
        self.dir.join(format!("iteration-{i:02}"))
    }

    fn model_dir(&self, i: u32) -> PathBuf {
        self.iteration_dir(i).join("model")
    }

    fn run_dir(&self, i: u32, seed: u64) -> PathBuf {
        self.iteration_dir(i)
            .join("runs")
            .join(format!("seed-{seed}"))
    }

    fn seeds(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.plan.runs_per_iteration as u64).map(|k| self.config.seed.wrapping_add(k))
    }

    fn load_model(&self, i: u32) -> Result<Model, RetrainError> {
        Ok(Model::load(&ModelRef::Path(
            self.model_dir(i).join("manifest.toml"),
        ))?)
    }

    /// Runs every iteration not done yet. `stop` ends it at the next step boundary.
    pub fn run(
        &self,
        events: &mut dyn FnMut(Event<'_>),
        stop: StopHandle,
    ) -> Result<Finish, RetrainError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(io("start tokio for", &self.dir))?;
        let mut results = Vec::new();
        for i in 0..=self.plan.iterations {
            let path = self.iteration_dir(i).join("result.json");
            if let Some(r) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<IterationResult>(&b).ok())
            {
                events(Event::Iteration(&r));
                results.push(r);
                continue;
            }
            let Some(r) = self.iteration(i, &runtime, events, &stop)? else {
                self.write_csv(&results)?;
                return Ok(Finish::Stopped { iteration: i });
            };
            write_atomic(&path, &serde_json::to_vec_pretty(&r).expect("plain data"))?;
            events(Event::Iteration(&r));
            results.push(r);
            self.write_csv(&results)?;
        }
        self.write_csv(&results)?;
        Ok(Finish::Done)
    }

    fn write_csv(&self, rows: &[IterationResult]) -> Result<(), RetrainError> {
        let mut text = String::from(CSV_HEADER);
        text.push('\n');
        for r in rows {
            text.push_str(&r.csv_row());
            text.push('\n');
        }
        write_atomic(&self.dir.join(CSV_FILE), text.as_bytes())
    }

    /// The champions of iteration `i`'s runs, as training images of class `fooling`.
    fn fooling_of(&self, i: u32) -> Result<LabelledBytes, RetrainError> {
        let spec = &self.base.manifest.input;
        let mut out = LabelledBytes {
            image_len: (spec.width * spec.height * spec.channels) as usize,
            ..LabelledBytes::default()
        };
        for seed in self.seeds() {
            let run = self.run_dir(i, seed);
            let summary = read_summary(&run).ok_or_else(|| {
                RetrainError::Refused(format!(
                    "the run folder {} has no readable summary.json although iteration {i} is done; remove iteration-{i:02}/result.json to run it again",
                    run.display()
                ))
            })?;
            for c in &summary.classes {
                let Some(image) = &c.image else { continue };
                let path = run.join(image);
                let img = image_io::read_png(&path)
                    .map_err(|e| RetrainError::Refused(format!("{}: {e}", path.display())))?
                    .to_channels(spec.channels);
                if (img.width, img.height) != (spec.width, spec.height) {
                    return Err(RetrainError::Refused(format!(
                        "{} is {}x{}, model {} takes {}x{}",
                        path.display(),
                        img.width,
                        img.height,
                        self.base.name(),
                        spec.width,
                        spec.height
                    )));
                }
                out.pixels.extend_from_slice(&img.pixels);
                out.labels.push(self.real_classes as u32);
            }
        }
        Ok(out)
    }

    fn iteration(
        &self,
        i: u32,
        runtime: &tokio::runtime::Runtime,
        events: &mut dyn FnMut(Event<'_>),
        stop: &StopHandle,
    ) -> Result<Option<IterationResult>, RetrainError> {
        let model_dir = self.model_dir(i);
        let mut earlier = LabelledBytes::default();
        for j in 0..i {
            let f = self.fooling_of(j)?;
            earlier.image_len = f.image_len;
            earlier.extend(&f);
        }
        if !model_dir.join("manifest.toml").exists() {
            if i == 0 {
                // The very bytes of the shipped model.
                let model = model_of(
                    &self.base,
                    self.base.name(),
                    self.base.onnx.clone(),
                    self.base.labels.clone(),
                );
                write_model_folder(&model_dir, &model, &self.base, &[])?;
            } else {
                let mut train = self.train.clone();
                train.extend(&earlier);
                let job = TrainJob {
                    base: &self.base,
                    widen: true,
                    name: format!("{}-retrain-{i}", self.base.name()),
                    train: &train,
                    held_out: Some(&self.held_out),
                    recipe: self.plan.recipe.clone(),
                    threads: self.plan.threads,
                    data_provenance: format!(
                        "{}; {} fooling images from iterations 0 to {}",
                        self.data_provenance,
                        earlier.len(),
                        i - 1
                    ),
                };
                let trained = train_model(&job, &model_dir, &mut |p| {
                    events(Event::Training {
                        iteration: i,
                        progress: p,
                    });
                    if stop.is_requested() {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })?;
                if trained.is_none() {
                    return Ok(None);
                }
            }
        }
        let model = self.load_model(i)?;
        let network = Network::<f32>::load(&model)?;
        let x = inputs_of(&model, &self.held_out)?;
        let held_out_accuracy = train::accuracy(
            &network,
            &TrainSet {
                inputs: &x,
                labels: &self.held_out.labels,
            },
        )?;
        let recognised = if i == 0 || earlier.is_empty() {
            None
        } else {
            let x = inputs_of(&model, &earlier)?;
            let predicted = train::predict(&network, &x)?;
            let hits = predicted
                .iter()
                .filter(|&&p| p == self.real_classes)
                .count();
            Some(hits as f64 / predicted.len() as f64)
        };
        events(Event::Measured {
            iteration: i,
            held_out_accuracy,
            recognised,
        });
        // Evolution against this model.
        let mut summaries = Vec::new();
        let runs = self.plan.runs_per_iteration;
        for seed in self.seeds() {
            let dir = self.run_dir(i, seed);
            let summary = match read_summary(&dir) {
                Some(s) => s,
                None => {
                    let Some(s) = self.evolve(i, seed, &dir, runtime, stop)? else {
                        return Ok(None);
                    };
                    s
                }
            };
            summaries.push((dir, summary));
            events(Event::Run {
                iteration: i,
                done: summaries.len(),
                runs,
                summary: &summaries.last().expect("just pushed").1,
            });
        }
        let confidences: Vec<f64> = summaries
            .iter()
            .flat_map(|(_, s)| s.classes.iter().filter_map(|c| c.confidence))
            .map(f64::from)
            .collect();
        let mut all_fooled = Vec::new();
        for (dir, s) in &summaries {
            let path = dir.join(history::FILE_NAME);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(g) = first_generation_all_fooled(&text, s.classes.len()) {
                all_fooled.push(g as f64);
            }
        }
        let training = if i == 0 {
            None
        } else {
            let path = model_dir.join("training.json");
            let bytes = std::fs::read(&path).map_err(io("read", &path))?;
            let t: TrainingRecord = serde_json::from_slice(&bytes).map_err(|e| {
                RetrainError::Refused(format!("{} is damaged: {e}", path.display()))
            })?;
            Some(TrainingSummary {
                real: self.train.len(),
                fooling: t.images - self.train.len(),
                iterations: t.report.iterations,
                seconds: t.report.seconds,
                final_loss: t.report.loss_curve.last().map_or(f64::NAN, |p| p.1),
            })
        };
        Ok(Some(IterationResult {
            iteration: i,
            model: model.name().to_owned(),
            model_sha256: model.sha256.clone(),
            classes: model.classes(),
            training,
            held_out_accuracy,
            earlier_fooling: earlier.len(),
            earlier_fooling_recognised: recognised,
            runs,
            images: confidences.len(),
            median_confidence: median(&confidences).unwrap_or(0.0),
            min_confidence: confidences
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min)
                .min(1.0),
            share_at_least_9999: confidences.iter().filter(|&&c| c >= 0.9999).count() as f64
                / confidences.len().max(1) as f64,
            runs_all_fooled: all_fooled.len(),
            median_generations_all_fooled: median(&all_fooled),
            evolve_s: summaries.iter().map(|(_, s)| s.wall_time_s).sum(),
        }))
    }

    /// One evolution run into `dir`; `None` when a stop request cut it short (its folder is
    /// removed: the next session runs it again).
    fn evolve(
        &self,
        i: u32,
        seed: u64,
        dir: &Path,
        runtime: &tokio::runtime::Runtime,
        stop: &StopHandle,
    ) -> Result<Option<RunSummary>, RetrainError> {
        if stop.is_requested() {
            return Ok(None);
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io("remove the unfinished run", dir))?;
        }
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let mut config = self.config.clone();
        config.seed = seed;
        let manifest = std::path::absolute(self.model_dir(i).join("manifest.toml"))
            .map_err(io("resolve", dir))?;
        if let Some(m) = config.model.as_mut() {
            m.manifest = manifest.display().to_string();
        }
        if i > 0 && config.archive.classes.is_none() {
            config.archive.classes = Some((0..self.real_classes).collect());
        }
        std::fs::write(dir.join("config.toml"), config_text(&config)?).map_err(io("write", dir))?;
        let mut experiment = Experiment::setup(config).map_err(|source| RetrainError::Setup {
            run: dir.to_owned(),
            source: Box::new(source),
        })?;
        let (tx, _rx) = tokio::sync::watch::channel(Progress::default());
        let options = RunOptions {
            run_dir: Some(dir.to_owned()),
            resume: None,
            metrics: None,
            stop: stop.clone(),
        };
        let outcome = runtime.block_on(experiment.run_with(tx, options));
        let outcome = outcome.map_err(|source| RetrainError::Run {
            run: dir.to_owned(),
            source: Box::new(source),
        })?;
        if stop.is_requested() {
            std::fs::remove_dir_all(dir).map_err(io("remove the stopped run", dir))?;
            return Ok(None);
        }
        let started = Instant::now();
        let summary = folder::write(
            dir,
            &experiment.setup.encoding,
            &experiment.identity,
            seed,
            &outcome,
        )?;
        tracing::debug!(
            run = %dir.display(),
            seconds = started.elapsed().as_secs_f64(),
            "run folder written"
        );
        Ok(Some(summary))
    }
}

/// A finished run's summary, when its `summary.json` reads back.
fn read_summary(dir: &Path) -> Option<RunSummary> {
    let bytes = std::fs::read(dir.join("summary.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_images_are_the_smallest_class_up_to_500() {
        assert_eq!(default_images(Some(400)), 400); // data/mnist-5k
        assert_eq!(default_images(Some(6000)), DEFAULT_MAX_IMAGES); // Fashion-MNIST
        assert_eq!(default_images(None), 1);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
    }

    #[test]
    fn the_first_generation_with_every_cell_fooled() {
        let csv = format!(
            "{}\n0,200,0.1,0.5,0.1,0.5,5,10,4,2,1,0,0,0\n1,400,0.2,0.9,0.2,0.8,8,10,9,8,5,9,3,0\n2,600,0.3,1,0.9,0.99,9.9,10,10,10,10,10,2,0\n",
            history::HEADER
        );
        assert_eq!(first_generation_all_fooled(&csv, 10), Some(2));
        assert_eq!(first_generation_all_fooled(&csv, 9), Some(1));
        assert_eq!(first_generation_all_fooled(&csv, 11), None);
        assert_eq!(first_generation_all_fooled("", 1), None);
    }

    #[test]
    fn a_row_has_a_field_per_column() {
        let r = IterationResult {
            iteration: 1,
            model: "m".into(),
            model_sha256: "x".into(),
            classes: 11,
            training: Some(TrainingSummary {
                real: 4000,
                fooling: 400,
                iterations: 100,
                seconds: 1.5,
                final_loss: 0.1,
            }),
            held_out_accuracy: 0.97,
            earlier_fooling: 400,
            earlier_fooling_recognised: Some(1.0),
            runs: 40,
            images: 400,
            median_confidence: 0.9999,
            min_confidence: 0.5,
            share_at_least_9999: 0.6,
            runs_all_fooled: 3,
            median_generations_all_fooled: None,
            evolve_s: 12.0,
        };
        let header = CSV_HEADER.split(',').count();
        assert_eq!(r.csv_row().split(',').count(), header);
        let mut r0 = r.clone();
        r0.training = None;
        r0.earlier_fooling_recognised = None;
        assert_eq!(r0.csv_row().split(',').count(), header);
    }
}
