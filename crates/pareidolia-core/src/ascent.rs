//! The released gradient-ascent recipe (`caffe/ascent/find_fooling_image.py`, `../shared/PAPER.md`
//! section 6) as plain, unit-tested code: one image per target class, pushed up the gradient of
//! that class's probability under the "progress" learning-rate policy, clipped to the valid
//! pixel range, decayed toward the mean, optionally blurred and pruned.
//!
//! The state lives in *mean-subtracted pixel space*, as in the released code: `x = pixel − mean`
//! with pixels in `0..=255` (the units the encodings render in) and `mean` the model's mean in
//! those units (per channel, or a per-pixel mean image). Images are row-major with channels
//! interleaved, like every rendered canvas. The gradient comes from a [`GradientOracle`]; the
//! learning rate `desired_prog / ‖g‖²` makes the first-order change of the objective equal to
//! `desired_prog` whatever the gradient's units, so the recipe's defaults carry over unchanged.
//!
//! Where the paper's summary leaves a detail open the released code's reading is followed and
//! said here: the pruning steps zero pixels in mean-subtracted space (that is, set them to the
//! mean), the benefit of a pixel is `Σ_c g_c·(−x_c)` (the released `pred_0_benefit = grad *
//! -X`: the first-order change of the objective if the pixel were zeroed), and
//! `px_benefit_percentile` zeroes the pixels whose benefit is below the percentile, as the
//! released code does — those whose zeroing would cost the objective most, i.e. the pixels
//! that contribute most (`px_abs_benefit_percentile` zeroes the smallest `|Σ_c x_c·g_c|`); the
//! blur is scipy's `gaussian_filter` (σ = `blur_radius`, truncated
//! at 4σ, mirrored edges) on each channel of `x`.

use serde::{Deserialize, Serialize};

use rand::{RngExt as _, SeedableRng};

pub use crate::choices::AscentStart as Start;
use crate::seeds::{self, HostRng, Stream};

/// Confidence thresholds whose first step is recorded: majority, 99%, 99.9%, 99.99%.
pub const THRESHOLDS: [f64; 4] = [0.5, 0.99, 0.999, 0.9999];

/// The recipe's parameters, named as the released code's command line names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// Steps to take.
    pub steps: u64,
    /// L2 decay: after each step `x *= 1 − decay`.
    pub decay: f64,
    /// Upper bound of the learning rate.
    pub max_lr: f64,
    /// The desired progress of the objective per step, early on.
    pub early_prog: f64,
    /// Late on, the desired progress is `late_prog_mult · (1 − objective)`.
    pub late_prog_mult: f64,
    /// Gaussian blur σ in pixels (0: none).
    pub blur_radius: f64,
    /// Blur every this many steps (on steps `0, k, 2k, …`).
    pub blur_every: u64,
    /// Zero the pixels whose norm (over channels) is below this percentile (0: none).
    pub small_norm_percentile: f64,
    /// Zero the pixels whose benefit is below this percentile (0: none).
    pub px_benefit_percentile: f64,
    /// Zero the pixels whose absolute benefit is below this percentile (0: none).
    pub px_abs_benefit_percentile: f64,
    /// How the images start.
    pub start: Start,
}

impl Default for Recipe {
    /// The released code's command-line defaults.
    fn default() -> Self {
        Self {
            steps: 300,
            decay: 0.01,
            max_lr: 1e12,
            early_prog: 0.03,
            late_prog_mult: 0.1,
            blur_radius: 0.0,
            blur_every: 0,
            small_norm_percentile: 0.0,
            px_benefit_percentile: 0.0,
            px_abs_benefit_percentile: 0.0,
            start: Start::MeanPlus,
        }
    }
}

impl Recipe {
    /// The released code's "seed −1": no regularisation (no decay, blur or pruning), 500
    /// steps, early progress 0.02.
    pub fn unregularised() -> Self {
        Self {
            steps: 500,
            decay: 0.0,
            early_prog: 0.02,
            late_prog_mult: 0.1,
            ..Self::default()
        }
    }

    /// The learning rate of one step: `min(max_lr, desired_prog / ‖g‖²)` with
    /// `desired_prog = min(early_prog, late_prog_mult · (1 − objective))`. A zero gradient
    /// gives `max_lr` (a step of zero length).
    pub fn learning_rate(&self, objective: f64, grad_norm2: f64) -> f64 {
        let desired = self.early_prog.min(self.late_prog_mult * (1.0 - objective));
        if grad_norm2 > 0.0 {
            self.max_lr.min(desired / grad_norm2)
        } else {
            self.max_lr
        }
    }

    /// Whether step `step` (counted from 0) blurs.
    pub fn blurs_at(&self, step: u64) -> bool {
        self.blur_radius > 0.0 && self.blur_every > 0 && step.is_multiple_of(self.blur_every)
    }

    /// Checks the values: each problem as `(key, what is allowed)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let percent = |key, v: f64| {
            if (0.0..100.0).contains(&v) {
                Ok(())
            } else {
                Err((key, format!("must be a percentile in 0 to 100 (got {v})")))
            }
        };
        if self.steps == 0 {
            return Err(("steps", "must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.decay) {
            return Err(("decay", format!("must be in 0 to 1 (got {})", self.decay)));
        }
        for (key, v) in [
            ("max_lr", self.max_lr),
            ("early_prog", self.early_prog),
            ("late_prog_mult", self.late_prog_mult),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err((key, format!("must be a positive number (got {v})")));
            }
        }
        if !(self.blur_radius.is_finite() && self.blur_radius >= 0.0) {
            return Err((
                "blur_radius",
                format!(
                    "must be 0 (no blur) or a positive σ in pixels (got {})",
                    self.blur_radius
                ),
            ));
        }
        if self.blur_radius > 0.0 && self.blur_every == 0 {
            return Err((
                "blur_every",
                "must be at least 1 when blur_radius is set".into(),
            ));
        }
        percent("small_norm_percentile", self.small_norm_percentile)?;
        percent("px_benefit_percentile", self.px_benefit_percentile)?;
        percent("px_abs_benefit_percentile", self.px_abs_benefit_percentile)?;
        Ok(())
    }
}

/// The shape of one image: `width × height × channels`, channels interleaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Channels per pixel (1 or 3).
    pub channels: usize,
}

impl Shape {
    /// Values in one image.
    pub fn len(&self) -> usize {
        self.width * self.height * self.channels
    }

    /// Pixels in one image.
    pub fn pixels(&self) -> usize {
        self.width * self.height
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a [`GradientOracle`] returns for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The objective: the target class's probability.
    pub objective: f64,
    /// The model's probabilities over every class.
    pub probabilities: Vec<f32>,
    /// d objective / d pixel, in the image's layout and pixel units.
    pub gradient: Vec<f32>,
}

/// The gradient of each image's target-class probability with respect to its pixels.
pub trait GradientOracle {
    /// The error the oracle reports.
    type Error;
    /// Evaluates a batch: `pixels` holds `targets.len()` images of [`Shape::len`] values each,
    /// in pixel units (`0..=255`).
    fn evaluate(&mut self, pixels: &[f32], targets: &[usize]) -> Result<Vec<Sample>, Self::Error>;
}

/// One image's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// The class pushed.
    pub class: usize,
    /// The current image, mean-subtracted.
    pub x: Vec<f32>,
    /// The objective of the current image at its last evaluation (NaN before the first).
    pub objective: f64,
    /// The best objective seen, and the step it was seen at.
    pub best: Option<(f64, u64)>,
    /// The best image, in pixels (`0..=255`), as evaluated.
    pub best_pixels: Vec<f32>,
    /// The model's probabilities for the best image.
    pub best_probabilities: Vec<f32>,
    /// The first step whose image reached each of [`THRESHOLDS`].
    pub first_reaching: [Option<u64>; 4],
    /// The squared norm of the last gradient (0 before the first).
    pub last_grad_norm2: f64,
    /// The last learning rate.
    pub last_lr: f64,
}

impl Track {
    /// A track that has not been evaluated yet.
    pub fn new(class: usize, x: Vec<f32>) -> Self {
        Self {
            class,
            x,
            objective: f64::NAN,
            best: None,
            best_pixels: Vec::new(),
            best_probabilities: Vec::new(),
            first_reaching: [None; 4],
            last_grad_norm2: 0.0,
            last_lr: 0.0,
        }
    }
}

/// A standard normal draw (Box-Muller on two uniform draws).
fn normal(rng: &mut HostRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A run of the recipe over several classes: its state, checkpointed as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ascent {
    /// The parameters.
    pub recipe: Recipe,
    /// The image shape.
    pub shape: Shape,
    /// The mean, in pixel units, one value per image value.
    pub mean: Vec<f32>,
    /// Steps taken.
    pub step: u64,
    /// One track per class pushed.
    pub tracks: Vec<Track>,
}

/// What one [`Ascent::step`] saw.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The step's number (from 0).
    pub step: u64,
    /// The objective of each track at this step (before its update).
    pub objectives: Vec<f64>,
    /// Tracks whose gradient was exactly zero.
    pub zero_gradients: usize,
    /// Tracks that crossed a threshold this step: (track index, threshold index).
    pub crossed: Vec<(usize, usize)>,
}

/// Something the step could not use.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AscentError<E> {
    /// The oracle failed.
    #[error(transparent)]
    Oracle(E),
    /// The oracle answered with the wrong number of images or gradient values.
    #[error("the gradient oracle returned {got} for {expected}")]
    Shape {
        /// What it returned, in words.
        got: String,
        /// What was asked, in words.
        expected: String,
    },
    /// An objective or gradient that is not a finite number.
    #[error("class {class}: the objective or its gradient is not finite at step {step}")]
    NotFinite {
        /// The class.
        class: usize,
        /// The step.
        step: u64,
    },
}

impl Ascent {
    /// Starts one image per class. `mean` has one value per image value, in pixel units. Each
    /// class's start noise comes from its own stream of the run seed, so it does not depend on
    /// which other classes are pushed.
    pub fn new(recipe: Recipe, shape: Shape, mean: Vec<f32>, classes: &[usize], seed: u64) -> Self {
        assert_eq!(mean.len(), shape.len(), "one mean value per image value");
        let tracks = classes
            .iter()
            .map(|&class| {
                let mut rng = HostRng::seed_from_u64(seeds::derive(
                    seed,
                    Stream::AscentStart,
                    0,
                    class as u64,
                ));
                let x: Vec<f32> = match recipe.start {
                    Start::Zero => vec![0.0; shape.len()],
                    Start::MeanPlus => (0..shape.len()).map(|_| normal(&mut rng) as f32).collect(),
                    Start::Randu => mean
                        .iter()
                        .map(|m| (255.0 * rng.random::<f64>()) as f32 - m)
                        .collect(),
                };
                Track::new(class, x)
            })
            .collect();
        Self {
            recipe,
            shape,
            mean,
            step: 0,
            tracks,
        }
    }

    /// Whether every step has been taken.
    pub fn done(&self) -> bool {
        self.step >= self.recipe.steps
    }

    /// The current images in pixel units, clipped to `0..=255` (what the next step
    /// evaluates), one after another.
    pub fn pixels(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.tracks.len() * self.shape.len());
        for t in &self.tracks {
            out.extend(
                t.x.iter()
                    .zip(&self.mean)
                    .map(|(x, m)| (x + m).clamp(0.0, 255.0)),
            );
        }
        out
    }

    /// One step of every track, the oracle evaluating the tracks `batch` at a time (0: all at
    /// once).
    pub fn step<O: GradientOracle>(
        &mut self,
        oracle: &mut O,
        batch: usize,
    ) -> Result<StepReport, AscentError<O::Error>> {
        let step = self.step;
        let n = self.shape.len();
        // 1. Clip to the valid pixel range.
        for t in &mut self.tracks {
            for (x, m) in t.x.iter_mut().zip(&self.mean) {
                *x = (*x + m).clamp(0.0, 255.0) - m;
            }
        }
        let pixels = self.pixels();
        let targets: Vec<usize> = self.tracks.iter().map(|t| t.class).collect();
        let batch = if batch == 0 { targets.len() } else { batch };
        let mut evaluated = Vec::with_capacity(targets.len());
        for (chunk, t) in pixels.chunks(batch * n).zip(targets.chunks(batch)) {
            let e = oracle.evaluate(chunk, t).map_err(AscentError::Oracle)?;
            if e.len() != t.len() || e.iter().any(|e| e.gradient.len() != n) {
                return Err(AscentError::Shape {
                    got: format!(
                        "{} images with gradients of {:?} values",
                        e.len(),
                        e.iter().map(|e| e.gradient.len()).collect::<Vec<_>>()
                    ),
                    expected: format!("{} images of {n} values", t.len()),
                });
            }
            evaluated.extend(e);
        }
        let mut report = StepReport {
            step,
            objectives: Vec::with_capacity(self.tracks.len()),
            zero_gradients: 0,
            crossed: Vec::new(),
        };
        for (i, (t, e)) in self.tracks.iter_mut().zip(evaluated).enumerate() {
            let norm2: f64 = e.gradient.iter().map(|g| f64::from(*g).powi(2)).sum();
            if !e.objective.is_finite() || !norm2.is_finite() {
                return Err(AscentError::NotFinite {
                    class: t.class,
                    step,
                });
            }
            if norm2 == 0.0 {
                report.zero_gradients += 1;
            }
            // 2. Record the image just evaluated.
            t.objective = e.objective;
            report.objectives.push(e.objective);
            if t.best.is_none_or(|(b, _)| e.objective > b) {
                t.best = Some((e.objective, step));
                t.best_pixels.clear();
                t.best_pixels.extend_from_slice(&pixels[i * n..(i + 1) * n]);
                t.best_probabilities.clone_from(&e.probabilities);
            }
            for (k, &threshold) in THRESHOLDS.iter().enumerate() {
                if t.first_reaching[k].is_none() && e.objective >= threshold {
                    t.first_reaching[k] = Some(step);
                    report.crossed.push((i, k));
                }
            }
            // 3. The progress policy, the step and the L2 decay.
            let lr = self.recipe.learning_rate(e.objective, norm2);
            t.last_grad_norm2 = norm2;
            t.last_lr = lr;
            let keep = 1.0 - self.recipe.decay;
            for (x, g) in t.x.iter_mut().zip(&e.gradient) {
                *x = ((f64::from(*x) + lr * f64::from(*g)) * keep) as f32;
            }
            // 4. Blur and pruning.
            if self.recipe.blurs_at(step) {
                blur(&mut t.x, self.shape, self.recipe.blur_radius);
            }
            if self.recipe.small_norm_percentile > 0.0 {
                let norms = pixel_values(&t.x, None, self.shape, false);
                zero_below(
                    &mut t.x,
                    &norms,
                    self.recipe.small_norm_percentile,
                    self.shape,
                );
            }
            if self.recipe.px_benefit_percentile > 0.0 {
                let benefit = zeroing_benefit(&t.x, &e.gradient, self.shape);
                zero_below(
                    &mut t.x,
                    &benefit,
                    self.recipe.px_benefit_percentile,
                    self.shape,
                );
            }
            if self.recipe.px_abs_benefit_percentile > 0.0 {
                let benefit = pixel_values(&t.x, Some(&e.gradient), self.shape, true);
                zero_below(
                    &mut t.x,
                    &benefit,
                    self.recipe.px_abs_benefit_percentile,
                    self.shape,
                );
            }
        }
        self.step += 1;
        Ok(report)
    }
}

/// Per pixel: the norm of `x` over channels (no gradient), or the contribution `Σ_c x_c·g_c`
/// (absolute if `abs`; the released code's benefit of zeroing is its negative).
fn pixel_values(x: &[f32], grad: Option<&[f32]>, shape: Shape, abs: bool) -> Vec<f64> {
    let c = shape.channels;
    (0..shape.pixels())
        .map(|p| {
            let xs = &x[p * c..(p + 1) * c];
            match grad {
                None => xs.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt(),
                Some(g) => {
                    let b: f64 = xs
                        .iter()
                        .zip(&g[p * c..(p + 1) * c])
                        .map(|(x, g)| f64::from(*x) * f64::from(*g))
                        .sum();
                    if abs { b.abs() } else { b }
                }
            }
        })
        .collect()
}

/// Per pixel, the released code's `pred_0_benefit` summed over channels: `Σ_c g_c·(−x_c)`, the
/// first-order change of the objective if the pixel were zeroed.
fn zeroing_benefit(x: &[f32], grad: &[f32], shape: Shape) -> Vec<f64> {
    pixel_values(x, Some(grad), shape, false)
        .into_iter()
        .map(|b| -b)
        .collect()
}

/// Zeroes every pixel whose value is below the `pct` percentile of `values`.
fn zero_below(x: &mut [f32], values: &[f64], pct: f64, shape: Shape) {
    let cut = percentile(values, pct);
    let c = shape.channels;
    for (p, v) in values.iter().enumerate() {
        if *v < cut {
            x[p * c..(p + 1) * c].fill(0.0);
        }
    }
}

/// numpy's `percentile` with linear interpolation (`pct` in 0 to 100).
pub fn percentile(values: &[f64], pct: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pos = pct / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// scipy's `gaussian_filter(sigma, truncate=4.0, mode='reflect')` on each channel of an
/// interleaved image, separably.
pub fn blur(x: &mut [f32], shape: Shape, sigma: f64) {
    let radius = (4.0 * sigma + 0.5) as isize;
    if radius == 0 {
        return;
    }
    let mut kernel: Vec<f64> = (-radius..=radius)
        .map(|i| (-0.5 * (i as f64 / sigma).powi(2)).exp())
        .collect();
    let sum: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let Shape {
        width: w,
        height: h,
        channels: c,
    } = shape;
    // 'reflect': (d c b a | a b c d | d c b a).
    let reflect = |i: isize, n: isize| -> usize {
        let period = 2 * n;
        let mut i = i.rem_euclid(period);
        if i >= n {
            i = period - 1 - i;
        }
        i as usize
    };
    let mut tmp = vec![0.0f64; x.len()];
    for row in 0..h {
        for col in 0..w {
            for ch in 0..c {
                let mut acc = 0.0;
                for (k, weight) in kernel.iter().enumerate() {
                    let cc = reflect(col as isize + k as isize - radius, w as isize);
                    acc += weight * f64::from(x[(row * w + cc) * c + ch]);
                }
                tmp[(row * w + col) * c + ch] = acc;
            }
        }
    }
    for row in 0..h {
        for col in 0..w {
            for ch in 0..c {
                let mut acc = 0.0;
                for (k, weight) in kernel.iter().enumerate() {
                    let rr = reflect(row as isize + k as isize - radius, h as isize);
                    acc += weight * tmp[(rr * w + col) * c + ch];
                }
                x[(row * w + col) * c + ch] = acc as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn benefit_pruning_zeroes_the_pixels_that_contribute_most_as_the_released_code_does() {
        // Released: pred_0_benefit = grad * -X; zero where it is below the percentile.
        let shape = Shape {
            width: 4,
            height: 1,
            channels: 1,
        };
        let mut x = vec![1.0f32; 4];
        let g = [4.0f32, 3.0, 2.0, 1.0];
        let benefit = zeroing_benefit(&x, &g, shape);
        // numpy.percentile([-4, -3, -2, -1], 30) = -3.1: only the first pixel is below.
        zero_below(&mut x, &benefit, 30.0, shape);
        assert_eq!(x, vec![0.0, 1.0, 1.0, 1.0]);
    }

    use super::*;

    /// A softmax over linear scores `s_k = w_k · (pixels / 255)`, with its exact gradient.
    struct Linear {
        weights: Vec<Vec<f32>>,
        calls: usize,
    }

    impl Linear {
        fn new(classes: usize, n: usize) -> Self {
            let weights = (0..classes)
                .map(|k| {
                    (0..n)
                        .map(|i| (((i * 7 + k * 13) % 11) as f32 - 5.0) * 1.0)
                        .collect()
                })
                .collect();
            Self { weights, calls: 0 }
        }

        fn probabilities(&self, image: &[f32]) -> Vec<f64> {
            let s: Vec<f64> = self
                .weights
                .iter()
                .map(|w| {
                    w.iter()
                        .zip(image)
                        .map(|(w, p)| f64::from(*w) * f64::from(*p) / 255.0)
                        .sum()
                })
                .collect();
            let max = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
            let z: f64 = e.iter().sum();
            e.iter().map(|v| v / z).collect()
        }
    }

    impl GradientOracle for Linear {
        type Error = String;
        fn evaluate(&mut self, pixels: &[f32], targets: &[usize]) -> Result<Vec<Sample>, String> {
            self.calls += 1;
            let n = pixels.len() / targets.len();
            Ok(pixels
                .chunks(n)
                .zip(targets)
                .map(|(image, &t)| {
                    let p = self.probabilities(image);
                    // d p_t / d x_i = p_t (w_t,i − Σ_k p_k w_k,i) / 255.
                    let gradient = (0..n)
                        .map(|i| {
                            let mix: f64 = p
                                .iter()
                                .zip(&self.weights)
                                .map(|(pk, w)| pk * f64::from(w[i]))
                                .sum();
                            (p[t] * (f64::from(self.weights[t][i]) - mix) / 255.0) as f32
                        })
                        .collect();
                    Sample {
                        objective: p[t],
                        probabilities: p.iter().map(|v| *v as f32).collect(),
                        gradient,
                    }
                })
                .collect())
        }
    }

    fn shape() -> Shape {
        Shape {
            width: 6,
            height: 5,
            channels: 1,
        }
    }

    #[test]
    fn the_progress_policy_is_the_released_formula() {
        let r = Recipe::default();
        // Early: desired = min(0.03, 0.1 * (1 - 0.2)) = 0.03.
        assert!((r.learning_rate(0.2, 4.0) - 0.0075).abs() < 1e-15);
        // Late: desired = 0.1 * (1 - 0.9) = 0.01.
        assert!((r.learning_rate(0.9, 0.5) - 0.02).abs() < 1e-15);
        // Capped by max_lr.
        assert_eq!(r.learning_rate(0.2, 1e-20), 1e12);
        assert_eq!(r.learning_rate(0.2, 0.0), 1e12);
    }

    #[test]
    fn ascent_raises_every_class_to_the_last_threshold_and_records_first_steps() {
        let shape = shape();
        let mut oracle = Linear::new(4, shape.len());
        let recipe = Recipe {
            steps: 400,
            ..Recipe::unregularised()
        };
        let mean = vec![127.0; shape.len()];
        let mut a = Ascent::new(recipe, shape, mean, &[0, 1, 2, 3], 7);
        let mut crossings = 0;
        while !a.done() {
            let r = a.step(&mut oracle, 3).unwrap();
            assert_eq!(r.zero_gradients, 0);
            crossings += r.crossed.len();
        }
        assert_eq!(a.step, 400);
        // Batches of 3: two calls a step.
        assert_eq!(oracle.calls, 800);
        for t in &a.tracks {
            let (best, _) = t.best.unwrap();
            assert!(best >= 0.9999, "class {}: {best}", t.class);
            let steps: Vec<u64> = t.first_reaching.iter().map(|s| s.unwrap()).collect();
            assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
            // The best image, evaluated again, has the recorded objective.
            let p = oracle.probabilities(&t.best_pixels);
            assert!((p[t.class] - best).abs() < 1e-12);
            assert!(t.best_pixels.iter().all(|v| (0.0..=255.0).contains(v)));
        }
        assert_eq!(crossings, 16);
    }

    #[test]
    fn the_same_start_and_oracle_give_the_same_images_in_any_batch_size() {
        let shape = shape();
        let run = |batch| {
            let mut oracle = Linear::new(3, shape.len());
            let mut a = Ascent::new(
                Recipe {
                    steps: 20,
                    blur_radius: 0.5,
                    blur_every: 2,
                    small_norm_percentile: 10.0,
                    ..Recipe::default()
                },
                shape,
                vec![100.0; shape.len()],
                &[2, 0, 1],
                7,
            );
            while !a.done() {
                a.step(&mut oracle, batch).unwrap();
            }
            a
        };
        assert_eq!(run(1), run(0));
    }

    #[test]
    fn decay_pulls_toward_the_mean_and_clipping_keeps_pixels_valid() {
        let shape = shape();
        let mut oracle = Linear::new(2, shape.len());
        let mean: Vec<f32> = (0..shape.len()).map(|i| (i * 8) as f32).collect();
        let recipe = Recipe {
            steps: 1,
            decay: 0.5,
            max_lr: 1e-30,
            start: Start::Randu,
            ..Recipe::default()
        };
        let mut a = Ascent::new(recipe, shape, mean.clone(), &[1], 7);
        let before: Vec<f32> = a.pixels().iter().zip(&mean).map(|(p, m)| p - m).collect();
        a.step(&mut oracle, 0).unwrap();
        for (x, b) in a.tracks[0].x.iter().zip(&before) {
            assert!((x - b * 0.5).abs() < 1e-4, "{x} vs {b}");
        }
        assert!(a.pixels().iter().all(|v| (0.0..=255.0).contains(v)));
    }

    #[test]
    fn a_zero_gradient_is_counted_and_a_nan_is_refused() {
        struct Flat(f64);
        impl GradientOracle for Flat {
            type Error = String;
            fn evaluate(&mut self, p: &[f32], t: &[usize]) -> Result<Vec<Sample>, String> {
                Ok(t.iter()
                    .map(|_| Sample {
                        objective: self.0,
                        probabilities: vec![],
                        gradient: vec![0.0; p.len() / t.len()],
                    })
                    .collect())
            }
        }
        let shape = shape();
        let mut a = Ascent::new(Recipe::default(), shape, vec![0.0; shape.len()], &[0, 1], 7);
        let r = a.step(&mut Flat(0.1), 0).unwrap();
        assert_eq!(r.zero_gradients, 2);
        let e = a.step(&mut Flat(f64::NAN), 0).unwrap_err();
        assert_eq!(e, AscentError::NotFinite { class: 0, step: 1 });
    }

    #[test]
    fn blur_matches_scipy() {
        // scipy.ndimage.gaussian_filter(np.arange(12.).reshape(3, 4) ** 2, 0.7), float64.
        let shape = Shape {
            width: 4,
            height: 3,
            channels: 1,
        };
        let mut x: Vec<f32> = (0..12).map(|v| (v * v) as f32).collect();
        blur(&mut x, shape, 0.7);
        let expected = [
            4.757651, 7.436188, 12.217169, 17.098138, 25.011242, 32.437083, 43.222891, 52.851163,
            56.623049, 68.796193, 85.586829, 99.962404,
        ];
        for (got, want) in x.iter().zip(expected) {
            assert!((f64::from(*got) - want).abs() < 2e-3, "{got} vs {want}");
        }
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert!((percentile(&v, 10.0) - 1.3).abs() < 1e-12);
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = Recipe {
            blur_radius: 1.0,
            ..Recipe::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "blur_every");
        let bad = Recipe {
            decay: 1.5,
            ..Recipe::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "decay");
        assert!(Recipe::default().check().is_ok());
        assert!(Recipe::unregularised().check().is_ok());
    }
}
