//! `summary.json`: what a finished (or stopped) run reached, per class and overall.

use serde::{Deserialize, Serialize};

use crate::ArchiveStats;
use crate::identity::ModelIdentity;
use crate::stop::StopStatus;

/// One class's champion in the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassSummary {
    /// Class index.
    pub class: usize,
    /// Label.
    pub label: String,
    /// Champion's confidence (score) for this class; absent for an empty cell.
    pub confidence: Option<f32>,
    /// Generation the champion was found in.
    pub generation: Option<u64>,
    /// Gallery file, relative to the run folder.
    pub image: Option<String>,
}

/// Where the time went, summed over the run (seconds of work; stages overlap in wall time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimes {
    /// Crossover, mutation and rendering in the encoding plugin, summed over mutators.
    pub breed_s: f64,
    /// Backend inference (preprocessing included).
    pub inference_s: f64,
    /// The fitness plugin.
    pub fitness_s: f64,
    /// Inference batches run.
    pub batches: u64,
}

impl std::ops::AddAssign for StageTimes {
    fn add_assign(&mut self, o: Self) {
        self.breed_s += o.breed_s;
        self.inference_s += o.inference_s;
        self.fitness_s += o.fitness_s;
        self.batches += o.batches;
    }
}

/// A plugin as the run used it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSummary {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
}

/// The whole summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Pareidolia's version.
    pub pareidolia_version: String,
    /// Run seed.
    pub seed: u64,
    /// Generations run after the initial population.
    pub generations: u64,
    /// Children evaluated (initial population included).
    pub evaluations: u64,
    /// Children lost to plugin or backend errors.
    pub lost: u64,
    /// Champion replacements (the paper's "jumps").
    pub replacements: u64,
    /// Wall time of the evolution, seconds.
    pub wall_time_s: f64,
    /// Evaluations per second.
    pub evaluations_per_s: f64,
    /// Model name.
    pub model: String,
    /// sha256 of the ONNX file.
    pub model_sha256: String,
    /// Inference backend and device.
    pub backend: String,
    /// Why `auto` chose that backend (what it refused first, and why); absent when the
    /// config named the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_selection: Option<String>,
    /// Encoding plugin.
    pub encoding: PluginSummary,
    /// Fitness plugin.
    pub fitness: PluginSummary,
    /// Every model of the run, with the backend that ran it (`model`, `model_sha256` and
    /// `backend` above repeat the first, for readers of single-model summaries).
    #[serde(default)]
    pub models: Vec<ModelIdentity>,
    /// Convergence statistics.
    pub stats: ArchiveStats,
    /// Time per stage.
    pub stage_times: StageTimes,
    /// The run's stop conditions (`[stop]`, `--until`, `--max-seconds`) and the one that
    /// ended it, with the generation and evolution time it was reached; absent when the run
    /// had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopStatus>,
    /// Per cell (every class, unless the run skips some).
    pub classes: Vec<ClassSummary>,
    /// The model's classes that were not cells (`archive.classes` left them out): scored by
    /// the fitness, never given a champion. Absent when every class was a cell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_classes: Vec<usize>,
}
