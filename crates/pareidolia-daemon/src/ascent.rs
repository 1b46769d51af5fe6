//! The gradient-ascent search (`[search] kind = "gradient-ascent"`): the released recipe
//! ([`pareidolia_core::ascent`]) on a differentiable model, one image per class, all classes
//! batched, in the same run folder layout as evolution.
//!
//! The run is a loop on one blocking thread (a step is CPU-heavy: forward and backward over
//! every class): it owns the images, so it is the run's one archive owner. It keeps its run
//! in the same [`Ledger`] as the MAP-Elites archive actor (a step counts as a generation), so
//! counters, checkpoint cadence, stop conditions, `history.csv` and [`Progress`] behave alike
//! by construction. The champions are the best images so far, as genomes of the run's encoding
//! (its `genome_from_pixels`, plugin ABI 1.1: the host never writes a genome format), so
//! the gallery, the live gallery, `/status`, the metrics and `export` show them like evolved
//! ones; a step rebuilds only the champions it improved. A request on the run's
//! [`StopHandle`] ends it at the next step boundary with a final checkpoint, and a
//! checkpoint resumes it exactly. [`run`] reads as its steps: [`AscentLoop::start`] (fresh
//! or from a checkpoint), then per step `step`, progress and history, a checkpoint when due;
//! at the end a final checkpoint and the 8-bit images scored.
//!
//! The images are real-valued; the gallery holds them rounded to 8 bits. At the end every
//! best image is rendered to bytes and scored by the run's inference backend and fitness
//! plugin, exactly as an evolved image is: the summary gives both numbers per class.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use pareidolia_core::ascent::{
    Ascent, GradientOracle, Sample, Shape, StepReport, THRESHOLDS, Track,
};
use pareidolia_core::checkpoint::{AscentState, Checkpoint, CheckpointStore};
use pareidolia_core::config::RunConfig;
use pareidolia_core::summary::{AscentSummary, StageTimes};
use pareidolia_core::{Archive, Champion, EncodingPlugin, OptionalCallError, RunIdentity};
use pareidolia_eval::{EvalError, InputSpec, PreparedModel};
use pareidolia_grad::grad::{DifferentiableModel, Objective};
use tokio::sync::watch;

use crate::run::ledger::{Cadence, Ledger, unix_now};
use crate::run::outcome::{Progress, RunError, RunOutcome};
use crate::run::setup::Setup;
use crate::run::stop::StopHandle;

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

/// The archive a gradient-ascent state shows: one champion per class pushed, its best image
/// as a genome of the run's encoding (`genome_from_pixels`; the host never writes a genome).
pub fn champions(
    tracks: &[Track],
    classes: usize,
    encoding: &EncodingPlugin,
) -> Result<Vec<Option<Champion>>, OptionalCallError> {
    let mut cells = vec![None; classes];
    for t in tracks {
        cells[t.class] = champion(t, encoding)?;
    }
    Ok(cells)
}

/// A track's best image as a champion (`None` before its first step).
fn champion(t: &Track, encoding: &EncodingPlugin) -> Result<Option<Champion>, OptionalCallError> {
    let Some((_, step)) = t.best else {
        return Ok(None);
    };
    Ok(Some(Champion {
        id: t.class as u64,
        generation: step,
        genome: Arc::from(encoding.genome_from_pixels(&t.best_pixels)?),
        // The scores are the probabilities themselves: none recorded apart.
        scores: Arc::from(t.best_probabilities.clone()),
        probabilities: Arc::from(&[][..]),
    }))
}

/// Images x steps per second of gradient computation: this session's where it took steps,
/// else the whole run's from the checkpoint's stage times (a resume with no step left keeps
/// the figure of the sessions before it); `None` where neither measured any.
fn images_steps_per_s(search: &AscentLoop<'_>, session_seconds: f64) -> Option<f64> {
    if session_seconds > 0.0 {
        return Some(search.evaluated as f64 / session_seconds);
    }
    let whole = search.ledger.counters().stage_times.inference_s;
    let images_steps = search.ascent.step as f64 * search.ascent.tracks.len() as f64;
    (whole > 0.0 && images_steps > 0.0).then(|| images_steps / whole)
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
    /// Ends the run at the next step boundary.
    pub stop: StopHandle,
}

fn ascent_error(step: u64, reason: impl std::fmt::Display) -> RunError {
    RunError::Ascent {
        step,
        reason: reason.to_string(),
    }
}

/// Runs gradient ascent to its last step, a stop condition or a stop request. Blocking.
pub fn run(r: AscentRun) -> Result<RunOutcome, RunError> {
    let AscentRun {
        setup,
        identity,
        model,
        mut prepared,
        run_dir,
        resume,
        progress,
        stop,
    } = r;
    let mut search = AscentLoop::start(&setup, identity, model, run_dir, resume.as_ref())?;
    let interrupted = loop {
        if search.ascent.done() || search.ledger.ending() {
            break false;
        }
        if stop.is_requested() {
            break true;
        }
        search.step()?;
        let p = search.ledger.progress(&search.archive);
        search.ledger.append_history(&p);
        progress.send_replace(p);
        if !search.ledger.ending() && search.ledger.checkpoint_due() {
            search.write_checkpoint();
            progress.send_replace(search.ledger.progress(&search.archive));
        }
    };
    search.ledger.flush_history();
    search.write_checkpoint();
    let last = search.ledger.progress(&search.archive);
    progress.send_replace(last.clone());
    let cells = search.archive.cells().to_vec();
    let png = score_bytes(&setup, prepared.as_deref_mut(), &cells);
    let oracle = &search.oracle;
    let mut summary = AscentSummary::new(
        &search.ascent.recipe,
        search.ascent.step,
        &search.ascent.tracks,
        search.zero_gradient_steps,
        images_steps_per_s(&search, oracle.seconds),
        &png,
    );
    summary.gradient_backend = Some(format!(
        "{} on {}",
        oracle.model.backend(),
        oracle.model.device()
    ));
    Ok(RunOutcome {
        cells,
        progress: last,
        interrupted,
        checkpoint: search.ledger.last_checkpoint().path.clone(),
        ascent: Some(summary),
    })
}

/// A gradient-ascent run under way: the recipe's state, the archive its best images make
/// (updated where a step improved an image, once per step) and the run's [`Ledger`].
struct AscentLoop<'a> {
    config: &'a RunConfig,
    identity: RunIdentity,
    ascent: Ascent,
    /// The best image of each class pushed, as a champion (`None` elsewhere).
    cells: Vec<Option<Champion>>,
    /// The run's encoding, which turns the best images into genomes.
    encoding: Arc<EncodingPlugin>,
    /// Champions replaced (or cells filled) so far.
    replacements: u64,
    archive: Archive,
    ledger: Ledger,
    store: Option<CheckpointStore>,
    oracle: ModelOracle,
    zero_gradient_steps: u64,
    /// Images evaluated in this session.
    evaluated: u64,
}

impl<'a> AscentLoop<'a> {
    /// A fresh ascent over the classes pushed (the run's cells), or the checkpoint's.
    fn start(
        setup: &'a Setup,
        identity: RunIdentity,
        model: Box<dyn DifferentiableModel>,
        run_dir: Option<PathBuf>,
        resume: Option<&Checkpoint>,
    ) -> Result<Self, RunError> {
        let config = &setup.config;
        let m = setup.model();
        let canvas = m.canvas();
        let shape = Shape {
            width: canvas.width as usize,
            height: canvas.height as usize,
            channels: canvas.channels as usize,
        };
        let classes = m.model.classes();
        let recipe = config.search.recipe(config.generations);
        let mean = pixel_mean(&m.model.manifest.input, canvas.width, canvas.height);
        let (ascent, replacements) = match resume {
            Some(c) => {
                let state = c.ascent.clone().ok_or_else(|| {
                    ascent_error(
                        c.meta.generation,
                        "the checkpoint is of a MAP-Elites run, not a gradient-ascent one",
                    )
                })?;
                let mut a = Ascent::new(recipe, shape, mean, &[], config.seed);
                a.step = state.step;
                a.tracks = state.tracks;
                (a, c.meta.replacements)
            }
            None => {
                let pushed: Vec<usize> = identity
                    .cells
                    .clone()
                    .unwrap_or_else(|| (0..classes).collect());
                (Ascent::new(recipe, shape, mean, &pushed, config.seed), 0)
            }
        };
        let cadence = run_dir.as_ref().map(|_| Cadence::of(&config.checkpoint));
        let mut ledger = Ledger::new(ascent.recipe.steps, config.stop.clone(), cadence);
        let cells = champions(&ascent.tracks, classes, &setup.encoding)
            .map_err(|e| ascent_error(ascent.step, e))?;
        let archive = archive_of(&identity, cells.clone(), replacements);
        if let Some(c) = resume {
            ledger.resume(c, &archive);
        }
        if let Some(dir) = &run_dir {
            ledger.open_history(dir, false);
        }
        let r = &ascent.recipe;
        tracing::info!(
            classes = ascent.tracks.len(),
            steps = r.steps,
            from_step = ascent.step,
            decay = r.decay,
            blur_radius = r.blur_radius,
            start = %r.start,
            "gradient ascent starts"
        );
        Ok(Self {
            config,
            identity,
            store: run_dir.map(|d| CheckpointStore::new(&d, config.checkpoint.keep)),
            ascent,
            cells,
            encoding: Arc::clone(&setup.encoding),
            replacements,
            archive,
            ledger,
            oracle: ModelOracle {
                model,
                seconds: 0.0,
                calls: 0,
            },
            zero_gradient_steps: 0,
            evaluated: 0,
        })
    }

    /// One step of the recipe over every image, then the champions it improved, the
    /// ledger's counters and the stop conditions.
    fn step(&mut self) -> Result<(), RunError> {
        let before: Vec<Option<(f64, u64)>> = self.ascent.tracks.iter().map(|t| t.best).collect();
        let (seconds, calls) = (self.oracle.seconds, self.oracle.calls);
        let report = self
            .ascent
            .step(&mut self.oracle, self.config.batch_size as usize)
            .map_err(|e| ascent_error(self.ascent.step, e))?;
        self.log(&report);
        let images = self.ascent.tracks.len() as u64;
        for (t, b) in self.ascent.tracks.iter().zip(&before) {
            if t.best != *b {
                self.replacements += 1;
                self.cells[t.class] =
                    champion(t, &self.encoding).map_err(|e| ascent_error(self.ascent.step, e))?;
            }
        }
        self.evaluated += images;
        let times = StageTimes {
            inference_s: self.oracle.seconds - seconds,
            batches: self.oracle.calls - calls,
            ..StageTimes::default()
        };
        self.ledger.record(self.ascent.step, images, 0, times);
        self.archive = archive_of(&self.identity, self.cells.clone(), self.replacements);
        self.ledger.check_stop(&self.archive);
        Ok(())
    }

    /// Logs what a step did beyond moving the images.
    fn log(&mut self, report: &StepReport) {
        if report.zero_gradients == self.ascent.tracks.len() {
            self.zero_gradient_steps += 1;
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
                class = self.ascent.tracks[*i].class,
                step = report.step,
                threshold = THRESHOLDS[*k],
                "threshold reached"
            );
        }
    }

    /// Writes the checkpoint of the last step, when the run keeps checkpoints and it is not
    /// written yet; the ledger records the write (or its failure).
    fn write_checkpoint(&mut self) {
        let Some(store) = &self.store else { return };
        if !self.ledger.final_checkpoint_due() {
            return;
        }
        let started = Instant::now();
        let state = AscentState {
            step: self.ascent.step,
            tracks: self.ascent.tracks.clone(),
        };
        let bytes = Checkpoint::capture_ascent(
            &self.archive,
            &state,
            self.ledger.counters(),
            self.config,
            &self.identity,
            self.ledger.stop_reached(),
            unix_now(),
        );
        let written = store
            .write(self.ascent.step, &bytes)
            .map_err(|e| e.to_string());
        self.ledger.record_checkpoint(
            self.ascent.step,
            written,
            bytes.len(),
            started.elapsed().as_secs_f64(),
        );
    }
}

/// The archive the images make: its cells are the classes pushed.
fn archive_of(identity: &RunIdentity, cells: Vec<Option<Champion>>, replacements: u64) -> Archive {
    let mut archive = Archive::restore(cells, replacements);
    if let Some(listed) = &identity.cells {
        archive
            .restrict(listed)
            .expect("the setup checked the cells, and only they hold images");
    }
    archive
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

#[cfg(test)]
mod tests {
    use super::*;
    use pareidolia_eval::{Manifest, MeanImage};

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
