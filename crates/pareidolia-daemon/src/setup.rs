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
        Ok(Self {
            key: key.to_owned(),
            model: Arc::new(model),
            backend: m.backend,
            view,
            options: backend_options(m, base_dir),
            labels_origin,
        })
    }

    /// Prepares the model on its backend (compiles it; blocking, seconds for large models).
    pub fn prepare(&self) -> Result<Box<dyn PreparedModel>, EvalError> {
        prepare_viewed(
            backend_with(self.backend, &self.options).as_ref(),
            &self.model,
            self.view,
        )
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
pub(crate) fn check_same_classes(first: &ModelSetup, other: &ModelSetup) -> Result<(), SetupError> {
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

    /// The first model (every run has one).
    pub fn model(&self) -> &ModelSetup {
        &self.models[0]
    }

    /// The run's identity as loaded (models not yet prepared: no backend recorded).
    pub fn identity(&self) -> RunIdentity {
        RunIdentity {
            models: self.models.iter().map(ModelSetup::identity).collect(),
            encoding: plugin_summary(self.encoding.library().info()),
            fitness: plugin_summary(self.fitness.library().info()),
            labels: self.model().model.labels.clone(),
            cells: self.config.archive.classes.as_ref().map(|c| {
                let mut c = c.clone();
                c.sort_unstable();
                c
            }),
        }
    }
}
