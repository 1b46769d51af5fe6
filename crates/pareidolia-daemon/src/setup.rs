//! Setup: everything a config names, loaded and checked before anything runs — the models
//! (manifest, ONNX file, sha256, labels), how each is shown its canvas and which backend
//! runs it, the backends' settings, the encoding and fitness plugins. Any search (MAP-Elites
//! today) and any command that only reads a run (export, export-genome) starts here.
//!
//! Loading does not prepare a model on its backend (compilation, warm-up): that costs
//! seconds for ImageNet-size models and happens only where something infers
//! ([`ModelSetup::prepare`], called by the search).

use std::sync::Arc;

use pareidolia_core::config::RunConfig;
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
}

/// One model of a run: loaded and checked, with its view and backend, not yet prepared.
#[derive(Debug, Clone)]
pub struct ModelSetup {
    /// The classifier.
    pub model: Arc<Model>,
    /// The backend the config asks for.
    pub backend: BackendChoice,
    /// How the canvas is shown to it.
    pub view: ViewSpec,
}

impl ModelSetup {
    /// Loads the config's `[model]`.
    pub fn load(config: &RunConfig) -> Result<Self, EvalError> {
        let m = &config.model;
        let model = Model::load(&ModelRef::parse(&m.manifest, &config.base_dir))?;
        let input = &model.manifest.input;
        let view = ViewSpec {
            view: m.view,
            width: m.canvas.map_or(input.width, |c| c[0]),
            height: m.canvas.map_or(input.height, |c| c[1]),
        };
        Ok(Self {
            model: Arc::new(model),
            backend: m.backend,
            view,
        })
    }

    /// Prepares the model on its backend (compiles it; blocking, seconds for large models).
    pub fn prepare(&self, options: &BackendOptions) -> Result<Box<dyn PreparedModel>, EvalError> {
        prepare_viewed(
            backend_with(self.backend, options).as_ref(),
            &self.model,
            self.view,
        )
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
    /// The models, in config order.
    pub models: Vec<ModelSetup>,
    /// ONNX Runtime and CUDA settings for every backend prepared.
    pub backend_options: BackendOptions,
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

/// The backends' settings from `[model.onnxruntime]` and `[model.cuda]`.
pub fn backend_options(config: &RunConfig) -> BackendOptions {
    let (ort, cuda) = (&config.model.onnxruntime, &config.model.cuda);
    BackendOptions {
        ort: OrtOptions {
            library: ort.library.as_ref().map(|p| config.base_dir.join(p)),
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

fn plugin_summary(info: &PluginInfo) -> PluginSummary {
    PluginSummary {
        name: info.name.clone(),
        version: info.version.clone(),
    }
}

impl Setup {
    /// Loads and checks everything the config names, without preparing any model. Blocking
    /// (file reads, sha256, plugin loading).
    pub fn load(config: RunConfig) -> Result<Self, SetupError> {
        let model = ModelSetup::load(&config)?;
        let backend_options = backend_options(&config);
        let canvas = CanvasSpec {
            width: model.view.width,
            height: model.view.height,
            channels: model.model.manifest.input.channels,
        };
        let encoding_lib = load_plugin(PluginKind::Encoding, &config.encoding.plugin, &config)?;
        let encoding =
            EncodingPlugin::create(encoding_lib, &config.encoding.params_json(), canvas)?;
        let fitness_lib = load_plugin(PluginKind::Fitness, &config.fitness.plugin, &config)?;
        let models = vec![model];
        let logits: Vec<bool> = models
            .iter()
            .map(|m| m.output() == OutputKind::Logits)
            .collect();
        let fitness = FitnessPlugin::create(
            fitness_lib,
            &config.fitness.params_json(),
            models[0].model.classes(),
            &logits,
        )?;
        Ok(Self {
            config,
            models,
            backend_options,
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
        }
    }
}
