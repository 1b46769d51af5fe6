//! Setup: everything a config names, loaded and checked before anything runs — the models
//! (manifest, ONNX file, sha256, labels), how each is shown its canvas and which backend
//! runs it, the backends' settings, the encoding and fitness plugins. Any search (MAP-Elites
//! today) and any command that only reads a run (export, export-genome, transfer) starts here.
//!
//! Loading does not prepare a model on its backend (compilation, warm-up): that costs
//! seconds for ImageNet-size models and happens only where something infers
//! ([`ModelSetup::prepare`], called by the search).

use std::path::Path;
use std::sync::Arc;

use pareidolia_core::config::{ModelConfig, RunConfig};
use pareidolia_core::plugin_host::{PluginInfo, PluginLibrary, find_plugin, search_path};
use pareidolia_core::summary::PluginSummary;
use pareidolia_core::{
    EncodingPlugin, FitnessPlugin, ModelIdentity, OutputKind, PluginError, PluginKind, RunIdentity,
};
use pareidolia_eval::{
    BackendChoice, BackendOptions, CudaTuning, EvalError, Model, ModelRef, OrtOptions,
    PreparedModel, ViewSpec, backend_with, prepare_viewed,
};
use pareidolia_plugin::abi::CanvasSpec;

/// Setup failed: nothing ran.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A model could not be loaded or prepared.
    #[error(transparent)]
    Model(#[from] EvalError),
    /// A plugin could not be found, loaded or created.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// Two models of a run disagree on their classes.
    #[error(
        "the run's models must have the same classes, but {first} and {other} differ at class {class}: \
         `{first_label}` against `{other_label}`; give every model of a run the same labels file content"
    )]
    Classes {
        /// The first model's labels file.
        first: String,
        /// The other model's labels file.
        other: String,
        /// The first class where they differ.
        class: usize,
        /// Its label in the first file (`<none>` past its end).
        first_label: String,
        /// Its label in the other file.
        other_label: String,
    },
    /// The config needs more memory than it may use.
    #[error(
        "this config needs about {} ({}), more than {limit_source} ({}); lower offspring_per_generation, \
         initial_population or the canvas{}",
        gib(*estimate), breakdown, gib(*limit),
        if limit_source.starts_with("max_memory") { ", or raise max_memory" } else { ", or set max_memory to allow it" }
    )]
    Memory {
        /// Estimated bytes.
        estimate: u64,
        /// The allowed bytes.
        limit: u64,
        /// `max_memory` or the machine's memory.
        limit_source: String,
        /// Where the estimate comes from.
        breakdown: String,
    },
    /// The encoding cannot decode champions of the archive a run resumes with.
    #[error(
        "encoding {now} cannot decode {failed} of the {total} champions in the checkpoint{was} (first: class \
         {class}, {message}); nothing was run. Restore the plugin the run was made with, or start a new run"
    )]
    Undecodable {
        /// `name version` of the encoding now.
        now: String,
        /// `, which the run made with name version` where the plugin changed; else empty.
        was: String,
        /// Champions that do not decode.
        failed: usize,
        /// Distinct champions.
        total: usize,
        /// The first class whose champion does not decode.
        class: usize,
        /// The plugin's error.
        message: String,
    },
    /// The search cannot run with this config (what and why, in words).
    #[error("{message}")]
    Search {
        /// What is wrong and what to do.
        message: String,
    },
    /// `archive.classes` names classes the model does not have (or is otherwise unusable).
    #[error(
        "config key `archive.classes` {problem}; list class indices of {model} ({labels}), or leave the key out for every class"
    )]
    Cells {
        /// What is wrong.
        problem: pareidolia_core::CellsError,
        /// The first model's name.
        model: String,
        /// Its labels, abbreviated.
        labels: String,
    },
    /// Two models of a run see different canvases (the encoding renders one).
    #[error(
        "the run's models must share one canvas, but `{first}` is shown {first_canvas} and `{other}` \
         {other_canvas}; set the same `canvas = [width, height]` (and channels) for every model"
    )]
    Canvas {
        /// The first model's config key.
        first: String,
        /// Its canvas, `WxHxC`.
        first_canvas: String,
        /// The other model's config key.
        other: String,
        /// Its canvas.
        other_canvas: String,
    },
    /// A stop condition that cannot hold for the run's model (more classes than it has).
    #[error("invalid stop condition (`{key}`): {message}")]
    Stop {
        /// The config key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// One model of a run: loaded and checked, with its view, backend and backend settings, not
/// yet prepared.
#[derive(Debug, Clone)]
pub struct ModelSetup {
    /// Its config key (`model`, `models[0]`, ...), for messages.
    pub key: String,
    /// The classifier.
    pub model: Arc<Model>,
    /// The backend the config asks for.
    pub backend: BackendChoice,
    /// How the canvas is shown to it.
    pub view: ViewSpec,
    /// ONNX Runtime and CUDA settings for its backend.
    pub options: BackendOptions,
    /// Where its labels come from (for messages).
    pub labels_origin: String,
    /// Its manifest (`path/manifest.toml` or `builtin:NAME`), for messages.
    pub manifest_origin: String,
}

impl ModelSetup {
    /// Loads one model of a config.
    pub fn load(key: &str, m: &ModelConfig, base_dir: &Path) -> Result<Self, EvalError> {
        let model_ref = ModelRef::parse(&m.manifest, base_dir);
        let model = Model::load(&model_ref)?;
        let input = &model.manifest.input;
        let view = ViewSpec {
            view: m.view,
            width: m.canvas.map_or(input.width, |c| c[0]),
            height: m.canvas.map_or(input.height, |c| c[1]),
        };
        let labels_origin = match &model_ref {
            ModelRef::Path(p) => p
                .parent()
                .unwrap_or(Path::new(""))
                .join(&model.manifest.labels)
                .display()
                .to_string(),
            ModelRef::Builtin(name) => format!("the labels of builtin:{name}"),
        };
        let options = backend_options(m, base_dir);
        // A library the user names must be there: it is not replaced by one found elsewhere.
        if let Some(library) = &options.ort.library
            && !library.exists()
        {
            return Err(EvalError::BadInput(format!(
                "`{key}.onnxruntime.library` names {}, which does not exist; give the path of \
                 libonnxruntime.so* or of a folder holding it, or remove the key to search \
                 ORT_DYLIB_PATH and the Python onnxruntime package",
                library.display()
            )));
        }
        Ok(Self {
            key: key.to_owned(),
            model: Arc::new(model),
            backend: m.backend,
            view,
            options,
            labels_origin,
            manifest_origin: model_ref.to_string(),
        })
    }

    /// Checks, on `n` images (a size `prepared` is warmed up for), that a model whose manifest
    /// says `output = "probabilities"` gives probabilities ([`pareidolia_eval::check_output`],
    /// the check every command applies).
    pub fn check_output(
        &self,
        prepared: &mut dyn PreparedModel,
        n: usize,
    ) -> Result<(), SetupError> {
        let origin = format!("{} ({})", self.manifest_origin, self.key);
        Ok(pareidolia_eval::check_output(
            &self.model,
            self.view,
            prepared,
            n,
            &origin,
        )?)
    }

    /// Prepares the model on its backend (compiles it; blocking, seconds for large models).
    pub fn prepare(&self) -> Result<Box<dyn PreparedModel>, EvalError> {
        prepare_viewed(
            backend_with(self.backend, &self.options).as_ref(),
            &self.model,
            self.view,
        )
    }

    /// Prepares each of `models` on its backend, in order (blocking): one evaluator's set.
    pub fn prepare_all(models: &[ModelSetup]) -> Result<Vec<Box<dyn PreparedModel>>, EvalError> {
        models.iter().map(ModelSetup::prepare).collect()
    }

    /// The canvas the encoding renders for this model.
    pub fn canvas(&self) -> CanvasSpec {
        CanvasSpec {
            width: self.view.width,
            height: self.view.height,
            channels: self.model.manifest.input.channels,
        }
    }

    /// What the fitness plugin gets from this model: probabilities or logits.
    pub fn output(&self) -> OutputKind {
        self.view.output(&self.model)
    }

    /// The model's identity; the backend that runs it is filled in once it is prepared
    /// ([`ModelSetup::prepared_identity`]).
    pub fn identity(&self) -> ModelIdentity {
        ModelIdentity {
            name: self.model.name().to_owned(),
            sha256: self.model.sha256.clone(),
            classes: self.model.classes(),
            output: Some(self.output()),
            requested_backend: self.backend,
            backend: None,
            device: None,
            backend_selection: None,
        }
    }

    /// The identity with the backend that runs `prepared`.
    pub fn prepared_identity(&self, prepared: &dyn PreparedModel) -> ModelIdentity {
        ModelIdentity {
            backend: Some(prepared.backend().to_owned()),
            device: Some(prepared.device()),
            backend_selection: prepared.selection(),
            ..self.identity()
        }
    }
}

/// Everything a config names, loaded and checked.
pub struct Setup {
    /// The config (with command-line overrides applied).
    pub config: RunConfig,
    /// The models, in config order (at least one).
    pub models: Vec<ModelSetup>,
    /// The encoding instance.
    pub encoding: Arc<EncodingPlugin>,
    /// The fitness instance.
    pub fitness: Arc<FitnessPlugin>,
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

/// A model's backend settings from its `onnxruntime` and `cuda` tables.
pub fn backend_options(m: &ModelConfig, base_dir: &Path) -> BackendOptions {
    let (ort, cuda) = (&m.onnxruntime, &m.cuda);
    BackendOptions {
        ort: OrtOptions {
            library: ort.library.as_ref().map(|p| base_dir.join(p)),
            intra_threads: ort.threads,
            cuda: CudaTuning {
                device: cuda.device,
                conv_algorithm_search: cuda.conv_algorithm_search,
                conv_max_workspace: cuda.conv_max_workspace,
                prefer_nhwc: cuda.prefer_nhwc,
                tf32: cuda.tf32,
            },
        },
    }
}

/// Refuses two models whose labels differ (count or text), naming both labels files and the
/// first class where they differ.
pub fn check_same_classes(first: &ModelSetup, other: &ModelSetup) -> Result<(), SetupError> {
    let (a, b) = (&first.model.labels, &other.model.labels);
    let Some(class) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) else {
        return Ok(());
    };
    let label = |l: &[String]| l.get(class).cloned().unwrap_or_else(|| "<none>".into());
    Err(SetupError::Classes {
        first: first.labels_origin.clone(),
        other: other.labels_origin.clone(),
        class,
        first_label: label(a),
        other_label: label(b),
    })
}

/// Bytes as GiB with one decimal (or MiB below 1 GiB), for messages.
fn gib(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

/// The machine's memory (`MemTotal` of `/proc/meminfo`), where it can be read.
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Estimates the memory a run of `config` needs and refuses one beyond `max_memory` or the
/// machine's memory (issue 18, item 7: `offspring_per_generation = 4000000000` aborted with
/// "memory allocation of 176000000000 bytes failed", exit 134). A generation's children are
/// all in memory at once (parent and child genomes, the rendered image, the scores); each
/// batch in inference holds every model's input tensors (f32, ten of them per image for
/// `ten-crop`); the archive holds a genome and the scores per class; each model's ONNX bytes
/// are held about three times (the file, the backend's graph, its plans). Counted with
/// checked arithmetic, so a count that overflows is refused as too large.
fn check_memory(
    config: &RunConfig,
    models: &[ModelSetup],
    encoding: &EncodingPlugin,
) -> Result<(), SetupError> {
    let image = encoding.image_len() as u64;
    // A random genome's size stands for every genome (the direct encoding's is the image).
    let genome = encoding.random(0).map_or(image, |g| g.len() as u64);
    let classes = models.first().map_or(0, |m| m.model.classes()) as u64;
    let scores = 4 * classes * models.len() as u64;
    let children = u64::from(
        config
            .offspring_per_generation
            .max(config.initial_population()),
    );
    let batch = u64::from(config.batch_size.max(1)).min(children.max(1));
    let input: u64 = models
        .iter()
        .map(|m| {
            let crops = if m.view.view == pareidolia_eval::View::TenCrop {
                10
            } else {
                1
            };
            let i = &m.model.manifest.input;
            4 * crops * u64::from(i.width) * u64::from(i.height) * u64::from(i.channels)
        })
        .sum();
    let weights: u64 = models.iter().map(|m| 3 * m.model.onnx.len() as u64).sum();
    let per_child = (2 * genome)
        .checked_add(image)
        .and_then(|b| b.checked_add(scores));
    let estimate = per_child
        .and_then(|c| c.checked_mul(children))
        .and_then(|b| b.checked_add(batch.checked_mul(input)?.checked_mul(2)?))
        .and_then(|b| b.checked_add(classes.checked_mul(genome + 4 * classes)?))
        .and_then(|b| b.checked_add(weights))
        .unwrap_or(u64::MAX);
    let (limit, limit_source) = match config
        .max_memory
        .as_deref()
        .map(pareidolia_core::config::parse_bytes)
    {
        Some(Some(limit)) => (
            limit,
            format!(
                "max_memory = \"{}\"",
                config.max_memory.as_deref().unwrap_or_default()
            ),
        ),
        _ => match machine_memory() {
            Some(total) => (total, "this machine's memory".to_owned()),
            None => return Ok(()),
        },
    };
    if estimate <= limit {
        return Ok(());
    }
    Err(SetupError::Memory {
        estimate,
        limit,
        limit_source,
        breakdown: format!(
            "{children} children of {} each (genome {genome} bytes twice, image {image} bytes), \
             batches of {batch} images of {} model input, the {classes}-class archive, {} of weights",
            gib(per_child.unwrap_or(u64::MAX)),
            gib(input),
            gib(weights)
        ),
    })
}

/// `0 = "zero", 1 = "one", ...`, the first few and the last of a model's labels.
fn labels_text(labels: &[String]) -> String {
    let show = |(i, l): (usize, &String)| format!("{i} = {l:?}");
    let n = labels.len();
    if n <= 6 {
        return labels
            .iter()
            .enumerate()
            .map(show)
            .collect::<Vec<_>>()
            .join(", ");
    }
    let head: Vec<String> = labels.iter().enumerate().take(4).map(show).collect();
    format!(
        "{}, ..., {}",
        head.join(", "),
        show((n - 1, &labels[n - 1]))
    )
}

fn plugin_summary(info: &PluginInfo) -> PluginSummary {
    PluginSummary {
        name: info.name.clone(),
        version: info.version.clone(),
    }
}

impl Setup {
    /// Loads and checks everything the config names, without preparing any model. Blocking
    /// (file reads, sha256, plugin loading). Every model must have the same classes and see
    /// the same canvas (the encoding renders one image per child for all of them).
    pub fn load(config: RunConfig) -> Result<Self, SetupError> {
        let models = config
            .model_keys()
            .into_iter()
            .map(|(key, m)| ModelSetup::load(&key, m, &config.base_dir))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = models.first() else {
            // A validated config names a model; one built by hand may not.
            return Err(EvalError::BadInput(
                "the config names no model; add a [model] table".into(),
            )
            .into());
        };
        for other in &models[1..] {
            check_same_classes(first, other)?;
            let (a, b) = (first.canvas(), other.canvas());
            if (a.width, a.height, a.channels) != (b.width, b.height, b.channels) {
                let text = |c: CanvasSpec| format!("{}x{}x{}", c.width, c.height, c.channels);
                return Err(SetupError::Canvas {
                    first: first.key.clone(),
                    first_canvas: text(a),
                    other: other.key.clone(),
                    other_canvas: text(b),
                });
            }
        }
        if let Some(cells) = &config.archive.classes {
            let labels = &first.model.labels;
            pareidolia_core::Archive::new(labels.len())
                .restrict(cells)
                .map_err(|problem| SetupError::Cells {
                    problem,
                    model: first.model.name().to_owned(),
                    labels: labels_text(labels),
                })?;
        }
        // `classes>=C:N` counts cells: the listed classes when the run skips some.
        let cells = config
            .archive
            .classes
            .as_ref()
            .map_or(first.model.classes(), Vec::len);
        if let Err((key, message)) = config.stop.check(Some(cells)) {
            return Err(SetupError::Stop {
                key: key.to_owned(),
                message,
            });
        }
        let canvas = first.canvas();
        let encoding_lib = load_plugin(PluginKind::Encoding, &config.encoding.plugin, &config)?;
        let encoding =
            EncodingPlugin::create(encoding_lib, &config.encoding.params_json(), canvas)?;
        let fitness_lib = load_plugin(PluginKind::Fitness, &config.fitness.plugin, &config)?;
        let logits: Vec<bool> = models
            .iter()
            .map(|m| m.output() == OutputKind::Logits)
            .collect();
        let fitness = FitnessPlugin::create(
            fitness_lib,
            &config.fitness.params_json(),
            first.model.classes(),
            &logits,
        )?;
        Ok(Self {
            config,
            models,
            encoding: Arc::new(encoding),
            fitness: Arc::new(fitness),
        })
    }

    /// Renders every distinct champion of `cells` once, so that an archive the encoding
    /// cannot decode (a plugin changed under `--allow-plugin-change`, a genome written by
    /// something else) fails here, once and clearly, before anything runs — instead of one
    /// "child lost" per child bred from it and a failed generation later. `made_with` is the
    /// encoding the checkpoint records.
    pub fn check_champions(
        &self,
        cells: &[Option<pareidolia_core::Champion>],
        made_with: &PluginSummary,
    ) -> Result<(), SetupError> {
        let mut pixels = vec![0u8; self.encoding.image_len()];
        let mut seen = std::collections::HashSet::new();
        let mut first = None;
        let mut failed = 0;
        for (class, champion) in cells.iter().enumerate() {
            let Some(c) = champion else { continue };
            if !seen.insert(c.id) {
                continue;
            }
            if let Err(e) = self.encoding.render(&c.genome, &mut pixels) {
                failed += 1;
                first.get_or_insert((class, e.to_string()));
            }
        }
        let Some((class, message)) = first else {
            return Ok(());
        };
        let now = plugin_summary(self.encoding.library().info());
        let text = |p: &PluginSummary| format!("`{} {}`", p.name, p.version);
        Err(SetupError::Undecodable {
            now: text(&now),
            was: if &now == made_with {
                String::new()
            } else {
                format!(", which the run made with {}", text(made_with))
            },
            failed,
            total: seen.len(),
            class,
            message,
        })
    }

    /// Refuses a search whose memory estimate exceeds `max_memory` or the machine's memory
    /// (the commands that only read a run do not search, and do not check).
    pub fn check_memory(&self) -> Result<(), SetupError> {
        check_memory(&self.config, &self.models, &self.encoding)
    }

    /// The first model (every run has one).
    pub fn model(&self) -> &ModelSetup {
        &self.models[0]
    }

    /// The run's identity with the backend that runs each model of `prepared`, a set made
    /// by [`ModelSetup::prepare_all`] of [`Setup::models`]: what a run records, and what a
    /// worker node sends the daemon.
    pub fn prepared_identity(&self, prepared: &[Box<dyn PreparedModel>]) -> RunIdentity {
        let mut identity = self.identity();
        for ((model, p), id) in self.models.iter().zip(prepared).zip(&mut identity.models) {
            *id = model.prepared_identity(p.as_ref());
        }
        identity
    }

    /// The run's identity as loaded (models not yet prepared: no backend recorded).
    pub fn identity(&self) -> RunIdentity {
        RunIdentity {
            models: self.models.iter().map(ModelSetup::identity).collect(),
            encoding: plugin_summary(self.encoding.library().info()),
            fitness: plugin_summary(self.fitness.library().info()),
            labels: self.model().model.labels.clone(),
            run_id: None,
            cells: self.config.archive.classes.as_ref().map(|c| {
                let mut c = c.clone();
                c.sort_unstable();
                c
            }),
        }
    }
}
