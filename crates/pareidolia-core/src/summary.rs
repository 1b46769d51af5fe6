//! `summary.json`: what a finished (or stopped) run reached, per class and overall.

use serde::{Deserialize, Serialize};

use crate::ArchiveStats;
use crate::ascent::{Recipe, Track};
use crate::identity::ModelIdentity;
pub use crate::identity::PluginSummary;
use crate::stop::StopStatus;

/// One class's champion in the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassSummary {
    /// Class index.
    pub class: usize,
    /// Label.
    pub label: String,
    /// Champion's confidence in this class: the models' probability of it (its fitness where
    /// the probability was not recorded); absent for an empty cell.
    pub confidence: Option<f32>,
    /// Champion's fitness in this class, the score MAP-Elites compares (the probability with
    /// the `confidence` fitness); absent for an empty cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitness: Option<f32>,
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
    /// Gradient steps taken on children (gradient-informed MAP-Elites; each is a forward and
    /// a backward pass of one image, three forward-pass equivalents); absent when none.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub gradient_steps: u64,
    /// Seconds of those steps (forward, backward, pull-back, step and render again).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub gradient_s: f64,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

/// Forward-pass equivalents of a backward pass (the field's convention: a backward pass costs
/// about two forward passes), so a gradient step of one image costs `1 + this`.
pub const BACKWARD_COST: u64 = 2;

impl StageTimes {
    /// Forward-pass equivalents spent: one per evaluation plus `1 + BACKWARD_COST` per gradient
    /// step.
    pub fn forward_equivalents(&self, evaluations: u64) -> u64 {
        evaluations + (1 + BACKWARD_COST) * self.gradient_steps
    }
}

impl std::ops::AddAssign for StageTimes {
    fn add_assign(&mut self, o: Self) {
        self.breed_s += o.breed_s;
        self.inference_s += o.inference_s;
        self.fitness_s += o.fitness_s;
        self.batches += o.batches;
        self.gradient_steps += o.gradient_steps;
        self.gradient_s += o.gradient_s;
    }
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
    /// Convergence statistics of the fitness (the probability with the `confidence`
    /// fitness).
    pub stats: ArchiveStats,
    /// The same statistics of the champions' probabilities, where a fitness other than
    /// `confidence` makes them differ; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence_stats: Option<ArchiveStats>,
    /// Time per stage.
    pub stage_times: StageTimes,
    /// The run's stop conditions (`[stop]`, `--until`, `--max-seconds`) and the one that
    /// ended it, with the generation and evolution time it was reached; absent when the run
    /// had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopStatus>,
    /// Per cell (every class, unless the run skips some).
    pub classes: Vec<ClassSummary>,
    /// A gradient-ascent run's recipe and per-class records (absent for MAP-Elites).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ascent: Option<AscentSummary>,
    /// The model's classes that were not cells (`archive.classes` left them out): scored by
    /// the fitness, never given a champion. Absent when every class was a cell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_classes: Vec<usize>,
}

/// What the summary says about one class of a gradient-ascent run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AscentClass {
    /// The class.
    pub class: usize,
    /// The best image's probability of the class, as the differentiable model computed it on
    /// the real-valued image (absent before the first step).
    pub confidence: Option<f64>,
    /// The step that image was seen at.
    pub best_step: Option<u64>,
    /// The first step reaching 50%, 99%, 99.9% and 99.99% (absent if never).
    pub first_step_reaching: FirstSteps,
    /// The gallery's PNG (the image rounded to 8 bits) scored by the inference backend and
    /// the fitness plugin, as an evolved image is.
    pub png_confidence: Option<f32>,
}

/// The first step reaching each threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstSteps {
    /// Majority (50%).
    #[serde(rename = "0.5")]
    pub majority: Option<u64>,
    /// 99%.
    #[serde(rename = "0.99")]
    pub p99: Option<u64>,
    /// 99.9%.
    #[serde(rename = "0.999")]
    pub p999: Option<u64>,
    /// 99.99%.
    #[serde(rename = "0.9999")]
    pub p9999: Option<u64>,
}

impl From<[Option<u64>; 4]> for FirstSteps {
    fn from(s: [Option<u64>; 4]) -> Self {
        Self {
            majority: s[0],
            p99: s[1],
            p999: s[2],
            p9999: s[3],
        }
    }
}

/// A gradient-ascent run in `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AscentSummary {
    /// The recipe that ran.
    pub recipe: Recipe,
    /// Steps taken.
    pub steps: u64,
    /// Images x steps per second of gradient computation (forward and backward); absent
    /// where not measured (an export from a checkpoint).
    pub images_steps_per_s: Option<f64>,
    /// Steps at which every image's gradient was exactly zero.
    pub zero_gradient_steps: u64,
    /// Where the gradients ran (`[search] backend` resolved: `ort-cpu on cpu (2 threads)`,
    /// `cpu on cpu (2 threads)` for the built-in evaluator); absent in older summaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_backend: Option<String>,
    /// Per class pushed, in the order pushed.
    pub classes: Vec<AscentClass>,
}

impl AscentSummary {
    /// The summary of a state; `png[class]` is the 8-bit image's score where it was measured.
    pub fn new(
        recipe: &Recipe,
        steps: u64,
        tracks: &[Track],
        zero_gradient_steps: u64,
        images_steps_per_s: Option<f64>,
        png: &[Option<f32>],
    ) -> Self {
        Self {
            recipe: recipe.clone(),
            steps,
            images_steps_per_s,
            zero_gradient_steps,
            gradient_backend: None,
            classes: tracks
                .iter()
                .map(|t| AscentClass {
                    class: t.class,
                    confidence: t.best.map(|b| b.0),
                    best_step: t.best.map(|b| b.1),
                    first_step_reaching: t.first_reaching.into(),
                    png_confidence: png.get(t.class).copied().flatten(),
                })
                .collect(),
        }
    }
}
