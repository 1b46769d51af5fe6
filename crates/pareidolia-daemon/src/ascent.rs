//! The gradient-ascent search (`[search] kind = "gradient-ascent"`): the released recipe
//! ([`pareidolia_core::ascent`]) on a differentiable model, one image per class, all classes
//! batched, in the same run folder layout as evolution.
//!
//! The run is a loop on one blocking thread (a step is CPU-heavy: forward and backward over
//! every class): it owns the images, so it is the run's one archive owner. Around the
//! recipe it does what the archive actor does for MAP-Elites: after each step it publishes a
//! [`Progress`] (the step counts as the generation; the champions are the best images so far,
//! as direct-encoding genomes, so the gallery, the live gallery, `/status`, the metrics and
//! `export` show them like evolved ones), appends a line to `history.csv`, and checkpoints
//! when due; a stop request ends it at the next step boundary with a final checkpoint, and a
//! checkpoint resumes it exactly.
//!
//! The images are real-valued; the gallery holds them rounded to 8 bits. At the end every
//! best image is rendered to bytes and scored by the run's inference backend and fitness
//! plugin, exactly as an evolved image is: the summary gives both numbers per class.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use pareidolia_core::ascent::{
    Ascent, GradientOracle, Sample, Shape, StepReport, THRESHOLDS, Track,
};
use pareidolia_core::checkpoint::{AscentState, Checkpoint, CheckpointStore, RunCounters};
use pareidolia_core::stop::StopReached;
use pareidolia_core::summary::{AscentSummary, StageTimes};
use pareidolia_core::{Archive, Champion, RunIdentity};
use pareidolia_eval::{EvalError, InputSpec, PreparedModel};
use pareidolia_grad::grad::{DifferentiableModel, Objective};
use tokio::sync::watch;

use crate::run::history::History;
use crate::run::outcome::{Progress, RunError, RunOutcome};
use crate::run::setup::Setup;

/// The mean of the recipe's mean-subtracted space, in canvas pixel units (`0..=255`), one
/// value per canvas value: the pixel whose normalised model input is 0 in each channel, plus
/// the manifest's mean image where the canvas is the model's input (identity view); with
/// another view the mean image is folded into its per-channel means.
pub fn pixel_mean(input: &InputSpec, width: u32, height: u32) -> Vec<f32> {
    let channels = input.channels as usize;
    let pick = |v: &[f32], c: usize| if v.len() == 1 { v[0] } else { v[c] };
    let span = input.range[1] - input.range[0];
    // Model channel c reads canvas channel source(c).
    let source = |c: usize| match input.color {
        pareidolia_eval::ColorOrder::Bgr => channels - 1 - c,
        _ => c,
    };
    let identity = width == input.width && height == input.height;
    let pixels = (width * height) as usize;
    let model_pixels = (input.width * input.height) as usize;
    let mut mean = vec![0.0f32; pixels * channels];
    for c in 0..channels {
        let base = (pick(&input.mean, c) - input.range[0]) / span * 255.0;
        let image = input.mean_image.as_ref();
        for p in 0..pixels {
            // The mean image is in input units before normalisation, scaled by `scale`.
            let extra = match image {
                Some(m) if identity => m.scale * m.values[c * model_pixels + p],
                Some(m) => {
                    let plane = &m.values[c * model_pixels..(c + 1) * model_pixels];
                    m.scale * plane.iter().sum::<f32>() / model_pixels as f32
                }
                None => 0.0,
            } / span
                * 255.0;
            mean[p * channels + source(c)] = base + extra;
        }
    }
    mean
}

/// The recipe's oracle over a differentiable model: the gradient of each image's target-class
/// probability. A batch whose gradients are all exactly zero is not an error here: its
/// images get zero gradients (the step counts them) and their probabilities.
pub struct ModelOracle {
    /// The model.
    pub model: Box<dyn DifferentiableModel>,
    /// Seconds spent in it.
    pub seconds: f64,
    /// Calls made.
    pub calls: u64,
}

impl GradientOracle for ModelOracle {
    type Error = EvalError;

    fn evaluate(&mut self, pixels: &[f32], targets: &[usize]) -> Result<Vec<Sample>, EvalError> {
        let started = Instant::now();
        let n = targets.len();
        let classes = self.model.classes();
        let len = self.model.canvas_len();
        let result = match self.model.gradient(pixels, targets, Objective::Probability) {
            Ok(g) => Ok((0..n)
                .map(|i| Sample {
                    objective: g.objective[i],
                    probabilities: g.probabilities[i * classes..(i + 1) * classes]
                        .iter()
                        .map(|p| *p as f32)
                        .collect(),
                    gradient: g.pixels[i * len..(i + 1) * len].to_vec(),
                })
                .collect()),
            Err(EvalError::ZeroGradient { .. }) => {
                let p = self.model.probabilities(pixels, n)?;
                Ok((0..n)
                    .map(|i| {
                        let probs = &p[i * classes..(i + 1) * classes];
                        Sample {
                            objective: probs[targets[i]],
                            probabilities: probs.iter().map(|p| *p as f32).collect(),
                            gradient: vec![0.0; len],
                        }
                    })
                    .collect())
            }
            Err(e) => Err(e),
        };
        self.seconds += started.elapsed().as_secs_f64();
        self.calls += 1;
        result
    }
}

/// Encodes pixels (`0..=255`) as a direct-encoding genome (format 1: a version byte, a
/// little-endian `u32` gene count, then the genes `pixel / 255` as little-endian `f32`),
/// which the direct plugin renders back to the pixels rounded to bytes.
pub fn direct_genome(pixels: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + 4 * pixels.len());
    out.push(1);
    out.extend_from_slice(&(pixels.len() as u32).to_le_bytes());
    for p in pixels {
        out.extend_from_slice(&(p / 255.0).clamp(0.0, 1.0).to_le_bytes());
    }
    out
}

/// The archive a gradient-ascent state shows: one champion per class pushed, its best image.
pub fn champions(tracks: &[Track], classes: usize) -> Vec<Option<Champion>> {
    let mut cells = vec![None; classes];
    for t in tracks {
        let Some((_, step)) = t.best else { continue };
        cells[t.class] = Some(Champion {
            id: t.class as u64,
            generation: step,
            genome: Arc::from(direct_genome(&t.best_pixels)),
            scores: Arc::from(t.best_probabilities.clone()),
        });
    }
    cells
}

/// What [`run`] needs.
pub struct AscentRun {
    /// The setup (config, model, plugins).
    pub setup: Arc<Setup>,
    /// The run's identity.
    pub identity: RunIdentity,
    /// The differentiable model.
    pub model: Box<dyn DifferentiableModel>,
    /// The inference backend's prepared model, to score the 8-bit images at the end.
    pub prepared: Option<Box<dyn PreparedModel>>,
    /// Run folder for checkpoints and history.
    pub run_dir: Option<PathBuf>,
    /// Resume from this checkpoint.
    pub resume: Option<Checkpoint>,
    /// Progress after every step.
    pub progress: watch::Sender<Progress>,
    /// Set to stop at the next step boundary.
    pub stop: Arc<AtomicBool>,
}

/// The newest checkpoint written (or resumed from), and the writes that failed.
struct LastCheckpoint {
    generation: Option<u64>,
    /// When the last write was tried (for `every_seconds`).
    at: Instant,
    path: Option<PathBuf>,
    unix_s: Option<f64>,
    failures: u64,
}

impl LastCheckpoint {
    /// Records a write of step `step`'s checkpoint and logs it; a failure keeps the previous
    /// checkpoint as the newest (`failed` says which write failed, in the log).
    fn record(&mut self, step: u64, result: Result<PathBuf, String>, failed: &str) {
        self.at = Instant::now();
        match result {
            Ok(path) => {
                tracing::info!(generation = step, path = %path.display(), "checkpoint written");
                self.generation = Some(step);
                self.path = Some(path);
                self.unix_s = Some(unix_now());
            }
            Err(e) => {
                self.failures += 1;
                tracing::error!(generation = step, error = %e, "{failed}; the previous checkpoint is kept");
            }
        }
    }
}

fn ascent_error(step: u64, reason: impl std::fmt::Display) -> RunError {
    RunError::Ascent {
        step,
        reason: reason.to_string(),
    }
}

/// Runs gradient ascent to its last step or a stop request. Blocking.
pub fn run(mut r: AscentRun) -> Result<RunOutcome, RunError> {
    let config = r.setup.config.clone();
    let model = r.setup.model();
    let canvas = model.canvas();
    let shape = Shape {
        width: canvas.width as usize,
        height: canvas.height as usize,
        channels: canvas.channels as usize,
    };
    let classes = model.model.classes();
    let recipe = config.search.recipe(config.generations);
    let mean = pixel_mean(&model.model.manifest.input, canvas.width, canvas.height);
    let pushed: Vec<usize> = r
        .identity
        .cells
        .clone()
        .unwrap_or_else(|| (0..classes).collect());
    // The archive the images make: its cells are the classes pushed.
    let cells_listed = r.identity.cells.clone();
    let archive_of = |cells: Vec<Option<Champion>>, replacements: u64| {
        let mut archive = Archive::restore(cells, replacements);
        if let Some(listed) = &cells_listed {
            archive
                .restrict(listed)
                .expect("the setup checked the cells, and only they hold images");
        }
        archive
    };
    let (mut ascent, mut counters, mut replacements, resumed_from) = match &r.resume {
        Some(c) => {
            let state = c.ascent.clone().ok_or_else(|| {
                ascent_error(
                    c.meta.generation,
                    "the checkpoint is of a MAP-Elites run, not a gradient-ascent one",
                )
            })?;
            let mut a = Ascent::new(recipe.clone(), shape, mean.clone(), &[], config.seed);
            a.step = state.step;
            a.tracks = state.tracks;
            (
                a,
                c.counters(),
                c.meta.replacements,
                Some(c.meta.generation),
            )
        }
        None => (
            Ascent::new(recipe.clone(), shape, mean.clone(), &pushed, config.seed),
            RunCounters::default(),
            0,
            None,
        ),
    };
    let mut history = match &r.run_dir {
        Some(dir) => Some(
            History::open(dir, resumed_from)
                .map_err(|e| ascent_error(ascent.step, format!("cannot open history.csv: {e}")))?,
        ),
        None => None,
    };
    let store = r
        .run_dir
        .as_ref()
        .map(|d| CheckpointStore::new(d, config.checkpoint.keep));
    let mut oracle = ModelOracle {
        model: r.model,
        seconds: 0.0,
        calls: 0,
    };
    let batch = config.batch_size as usize;
    let started = Instant::now();
    let base_elapsed = counters.elapsed_s;
    let base_times = counters.stage_times;
    let mut last_checkpoint = LastCheckpoint {
        generation: resumed_from,
        at: Instant::now(),
        path: None,
        unix_s: None,
        failures: 0,
    };
    let mut zero_gradient_steps = 0;
    let mut interrupted = false;
    let mut evaluated = 0u64;
    let mut stop_reached = r.resume.as_ref().and_then(|c| c.meta.stop_reached.clone());
    let make_progress = |ascent: &Ascent,
                         counters: &RunCounters,
                         replacements: u64,
                         last: &LastCheckpoint,
                         stop_reached: &Option<StopReached>| {
        let cells = champions(&ascent.tracks, classes);
        let stats = archive_of(cells.clone(), replacements).stats();
        Progress {
            generation: ascent.step,
            generations: ascent.recipe.steps,
            evaluations: counters.evaluations,
            lost: 0,
            replacements,
            stats,
            elapsed_s: counters.elapsed_s,
            times: counters.stage_times,
            last_checkpoint_generation: last.generation,
            last_checkpoint_unix_s: last.unix_s,
            checkpoint_failures: last.failures,
            stop: config.stop.status(stop_reached.clone()),
            champions: Arc::new(cells),
        }
    };
    let write_checkpoint = |ascent: &Ascent,
                            counters: RunCounters,
                            replacements: u64,
                            stop_reached: Option<&StopReached>|
     -> Option<Result<PathBuf, String>> {
        let store = store.as_ref()?;
        let cells = champions(&ascent.tracks, classes);
        let archive = archive_of(cells, replacements);
        let state = AscentState {
            step: ascent.step,
            tracks: ascent.tracks.clone(),
        };
        let bytes = Checkpoint::capture_ascent(
            &archive,
            &state,
            counters,
            &config,
            &r.identity,
            stop_reached,
            unix_now(),
        );
        Some(store.write(ascent.step, &bytes).map_err(|e| e.to_string()))
    };
    tracing::info!(
        classes = ascent.tracks.len(),
        steps = recipe.steps,
        from_step = ascent.step,
        decay = recipe.decay,
        blur_radius = recipe.blur_radius,
        start = %recipe.start,
        "gradient ascent starts"
    );
    // A resumed run that meets a stop condition already takes no step.
    if let Some(reached) = config.stop.reached(
        &archive_of(champions(&ascent.tracks, classes), replacements),
        ascent.step,
        counters.elapsed_s,
    ) && ascent.step > 0
    {
        tracing::warn!(condition = %reached.condition, "the resumed run meets a stop condition already; nothing to run (give a stricter --until, --until none, or a larger --max-seconds)");
        stop_reached = stop_reached.or(Some(reached));
    }
    while !ascent.done() && stop_reached.is_none() {
        if r.stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let before: Vec<Option<(f64, u64)>> = ascent.tracks.iter().map(|t| t.best).collect();
        let report: StepReport = ascent
            .step(&mut oracle, batch)
            .map_err(|e| ascent_error(ascent.step, e))?;
        if report.zero_gradients == ascent.tracks.len() {
            zero_gradient_steps += 1;
            tracing::warn!(
                step = report.step,
                images = report.zero_gradients,
                "every image's gradient is exactly zero at this step: the images cannot move (a saturated or dead objective); try another start (search.start) or less decay"
            );
        } else if report.zero_gradients > 0 {
            tracing::debug!(
                step = report.step,
                images = report.zero_gradients,
                "some images have an exactly zero gradient"
            );
        }
        for (i, k) in &report.crossed {
            tracing::debug!(
                class = ascent.tracks[*i].class,
                step = report.step,
                threshold = THRESHOLDS[*k],
                "threshold reached"
            );
        }
        replacements += ascent
            .tracks
            .iter()
            .zip(&before)
            .filter(|(t, b)| t.best != **b)
            .count() as u64;
        counters.generation = ascent.step;
        counters.evaluations += ascent.tracks.len() as u64;
        evaluated += ascent.tracks.len() as u64;
        counters.elapsed_s = base_elapsed + started.elapsed().as_secs_f64();
        counters.stage_times = StageTimes {
            inference_s: base_times.inference_s + oracle.seconds,
            batches: base_times.batches + oracle.calls,
            ..base_times
        };
        if let Some(reached) = config.stop.reached(
            &archive_of(champions(&ascent.tracks, classes), replacements),
            ascent.step,
            counters.elapsed_s,
        ) {
            tracing::info!(condition = %reached.condition, generation = ascent.step, "stop condition reached: ending the run");
            stop_reached = Some(reached);
        }
        let c = &config.checkpoint;
        let due = store.is_some()
            && ((c.every_generations > 0 && ascent.step.is_multiple_of(c.every_generations))
                || (c.every_seconds > 0.0
                    && last_checkpoint.at.elapsed().as_secs_f64() >= c.every_seconds));
        if due
            && let Some(result) =
                write_checkpoint(&ascent, counters, replacements, stop_reached.as_ref())
        {
            last_checkpoint.record(ascent.step, result, "checkpoint failed");
        }
        let progress = make_progress(
            &ascent,
            &counters,
            replacements,
            &last_checkpoint,
            &stop_reached,
        );
        if let Some(h) = &mut history
            && let Err(e) = h.append(&progress)
        {
            tracing::warn!(path = %h.path().display(), error = %e, "cannot append to the history; its lines are kept and written once there is room");
        }
        r.progress.send_replace(progress);
    }
    if let Some(h) = &mut history
        && h.flush().is_err()
    {
        tracing::warn!(path = %h.path().display(), missing = h.pending(), "the history lacks the last steps: they could not be written");
    }
    // The final checkpoint (unless the last step's was just written).
    if last_checkpoint.generation != Some(ascent.step)
        && ascent.step > 0
        && let Some(result) =
            write_checkpoint(&ascent, counters, replacements, stop_reached.as_ref())
    {
        last_checkpoint.record(ascent.step, result, "the final checkpoint failed");
    }
    let progress = make_progress(
        &ascent,
        &counters,
        replacements,
        &last_checkpoint,
        &stop_reached,
    );
    r.progress.send_replace(progress.clone());
    let cells = champions(&ascent.tracks, classes);
    let png = score_bytes(&r.setup, r.prepared.as_deref_mut(), &cells);
    let summary = AscentSummary::new(
        &ascent.recipe,
        ascent.step,
        &ascent.tracks,
        zero_gradient_steps,
        (oracle.seconds > 0.0).then(|| evaluated as f64 / oracle.seconds),
        &png,
    );
    Ok(RunOutcome {
        cells,
        progress,
        interrupted,
        checkpoint: last_checkpoint.path,
        ascent: Some(summary),
    })
}

/// Each champion rendered to bytes by the encoding and scored by the inference backend and
/// the fitness plugin (its score in its own class); `None` where that failed (logged).
fn score_bytes(
    setup: &Setup,
    prepared: Option<&mut (dyn PreparedModel + 'static)>,
    cells: &[Option<Champion>],
) -> Vec<Option<f32>> {
    let mut out = vec![None; cells.len()];
    let Some(prepared) = prepared else {
        return out;
    };
    let encoding = &setup.encoding;
    let mut pixels = vec![0u8; encoding.image_len()];
    for (class, cell) in cells.iter().enumerate() {
        let Some(c) = cell else { continue };
        let scored = encoding
            .render(&c.genome, &mut pixels)
            .map_err(|e| e.to_string())
            .and_then(|()| prepared.infer(&pixels, 1).map_err(|e| e.to_string()))
            .and_then(|outputs| setup.fitness.score(&outputs, 1).map_err(|e| e.to_string()));
        match scored {
            Ok(scores) => out[class] = scores.get(class).copied(),
            Err(e) => {
                tracing::warn!(class, error = %e, "cannot score the 8-bit image of this class")
            }
        }
    }
    out
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pareidolia_eval::{Manifest, MeanImage};

    #[test]
    fn a_direct_genome_of_pixels_is_format_one_with_genes_in_unit_range() {
        let g = direct_genome(&[0.0, 255.0, 127.5, 300.0]);
        assert_eq!(g[0], 1);
        assert_eq!(u32::from_le_bytes(g[1..5].try_into().unwrap()), 4);
        let genes: Vec<f32> = g[5..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(genes, [0.0, 1.0, 0.5, 1.0]);
    }

    #[test]
    fn the_pixel_mean_is_where_the_normalised_input_is_zero() {
        let text = r#"
name = "m"
onnx = "m.onnx"
labels = "l.txt"
output = "logits"
[input]
name = "x"
layout = "NCHW"
width = 2
height = 1
channels = 3
color = "bgr"
range = [0.0, 1.0]
mean = [0.5, 0.25, 0.0]
std = [0.2, 0.2, 0.2]
"#;
        let manifest = Manifest::parse(text, std::path::Path::new("m/manifest.toml")).unwrap();
        let mean = pixel_mean(&manifest.input, 2, 1);
        // BGR: model channel 0 (mean 0.5) reads canvas channel 2.
        assert_eq!(mean, [0.0, 63.75, 127.5, 0.0, 63.75, 127.5]);
        let mut input = manifest.input.clone();
        input.mean_image = Some(MeanImage {
            file: "mean.npy".into(),
            sha256: None,
            scale: 1.0,
            values: vec![0.1, 0.3, 0.0, 0.0, 0.0, 0.0],
        });
        let with = pixel_mean(&input, 2, 1);
        assert!((with[2] - (127.5 + 25.5)).abs() < 1e-4, "{with:?}");
        assert!((with[5] - (127.5 + 76.5)).abs() < 1e-4, "{with:?}");
    }
}
