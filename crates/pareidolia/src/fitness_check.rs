//! `pareidolia plugins check FITNESS`: a fitness plugin run on what a run would give it — real
//! model outputs for real images, from one or several models — with its score table printed
//! and checked (issue 30, item 10). A fitness that passes here can still be a poor search
//! objective; one that fails would break a run or silently search for the wrong thing.
//!
//! What fails the check: a non-finite score; scores that do not depend on the target class
//! (every class of an image scored alike: the search could not tell the classes apart);
//! scores that change when the same image is scored again, or alone instead of in a batch
//! (a run's batches are cut by index, so a score must be a function of its own image). What
//! is reported without failing: how often the best-scoring target is the class the models
//! rank first (a probability or margin fitness agrees on every image), and whether the scores
//! change when each model's outputs are handed over as probabilities instead of logits (a
//! plugin reading raw logits does that on purpose; one meaning probabilities should not).
//!
//! The analysis ([`analyse`]) is plain code over score matrices, unit-tested below; the
//! driver ([`check_fitness`]) loads the models and images and calls the plugin.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use pareidolia_core::image_io::read_png;
use pareidolia_core::plugin_host::PluginLibrary;
use pareidolia_core::{BackendChoice, FitnessPlugin};
use pareidolia_eval::{
    Model, ModelRef, OutputKind, View, ViewSpec, backend_for, check_output, prepare_viewed,
};
use pareidolia_grad::LabelledImages;
use pareidolia_plugin::softmax;

/// What `plugins check` runs a fitness on.
pub struct FitnessInputs {
    /// Models (`builtin:NAME` or manifest paths); empty: `builtin:lenet-mnist`.
    pub models: Vec<String>,
    /// PNG images; empty: held-out digits where the models take 28x28 gray images and the
    /// repository's data is found, and synthetic images (grey, black, white, noise, stripes).
    pub images: Vec<PathBuf>,
    /// Inference backend.
    pub backend: BackendChoice,
}

/// Relative tolerance of "the same score".
const SAME: f32 = 1e-5;

fn differs(a: f32, b: f32) -> bool {
    (a - b).abs() > SAME * a.abs().max(b.abs()).max(1e-6)
}

/// What a score table shows. Scores are `images * classes`, image-major: row `i` holds
/// image `i`'s score with each class as the target.
#[derive(Debug, Default, PartialEq)]
pub struct Findings {
    /// `(image, class, score)` of every non-finite score.
    pub non_finite: Vec<(usize, usize, f32)>,
    /// Images whose scores are the same for every target class.
    pub flat: Vec<usize>,
    /// Images whose best-scoring target is the class the models' mean probability ranks first.
    pub agree: usize,
    /// The first score that differs when scored again: `(image, class, first, again)`.
    pub unstable: Option<(usize, usize, f32, f32)>,
    /// The first score that differs when its image is scored alone.
    pub batch_dependent: Option<(usize, usize, f32, f32)>,
    /// The largest relative change when the outputs are given as probabilities (`None`
    /// when every model gives probabilities already).
    pub as_probabilities: Option<f32>,
}

impl Findings {
    /// Why the plugin fails the check, if it does.
    pub fn failure(&self, images: usize) -> Option<String> {
        if let Some(&(image, class, score)) = self.non_finite.first() {
            return Some(format!(
                "{} scores are non-finite (first: image {image}, class {class}: {score}); the host would reject those children",
                self.non_finite.len()
            ));
        }
        if images > 0 && self.flat.len() == images {
            return Some(
                "every image gets the same score for every target class: the scores ignore the target, so the search could not tell the classes apart (score row i, column c is image i's fitness with class c as the target)"
                    .into(),
            );
        }
        if let Some((image, class, a, b)) = self.unstable {
            return Some(format!(
                "scoring the same outputs twice gave {a} then {b} (image {image}, class {class}): the plugin is not deterministic"
            ));
        }
        if let Some((image, class, a, b)) = self.batch_dependent {
            return Some(format!(
                "image {image} scores {a} for class {class} in a batch but {b} alone: a score must depend only on its own image's outputs"
            ));
        }
        None
    }
}

/// Compares the score tables: `scores` of the batch, `again` (the same call repeated),
/// `alone` (each image scored in a batch of one), `as_probs` (the outputs handed over as
/// probabilities; `None` when they are already) and `mean_probs` (the models' mean class
/// probabilities per image), all `images * classes`.
pub fn analyse(
    classes: usize,
    scores: &[f32],
    again: &[f32],
    alone: &[f32],
    as_probs: Option<&[f32]>,
    mean_probs: &[f32],
) -> Findings {
    let mut f = Findings::default();
    let rows = scores.chunks_exact(classes.max(1)).enumerate();
    for (image, row) in rows {
        for (class, &s) in row.iter().enumerate() {
            if !s.is_finite() {
                f.non_finite.push((image, class, s));
            }
        }
        if row.iter().all(|&s| !differs(s, row[0])) {
            f.flat.push(image);
        }
        let best = argmax(row);
        let top = argmax(&mean_probs[image * classes..(image + 1) * classes]);
        if best == top && !f.flat.contains(&image) {
            f.agree += 1;
        }
    }
    let first_difference = |other: &[f32]| {
        scores
            .iter()
            .zip(other)
            .enumerate()
            .find(|(_, (a, b))| {
                (a.is_finite() || b.is_finite())
                    && (a.to_bits() != b.to_bits())
                    && differs(**a, **b)
            })
            .map(|(k, (&a, &b))| (k / classes, k % classes, a, b))
    };
    f.unstable = first_difference(again);
    f.batch_dependent = first_difference(alone);
    f.as_probabilities = as_probs.map(|p| {
        scores
            .iter()
            .zip(p)
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .map(|(a, b)| (a - b).abs() / a.abs().max(b.abs()).max(1e-6))
            .fold(0.0f32, f32::max)
    });
    f
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(k, _)| k)
}

/// One model, prepared.
struct Loaded {
    name: String,
    model: Model,
    prepared: Box<dyn pareidolia_eval::PreparedModel>,
    output: OutputKind,
}

/// The images a check runs on when none are given: the first held-out digit of each class
/// (for a 28x28 gray input, where `data/mnist-5k` is found as `train` finds it), then mid-grey,
/// black, white, three noise images and vertical stripes.
fn default_images(width: u32, height: u32, channels: u32) -> Vec<(String, Vec<u8>)> {
    let len = (width * height * channels) as usize;
    let mut images = Vec::new();
    if (width, height, channels) == (28, 28, 1)
        && let Ok(data) = crate::retrain::default_train_data()
        && let Ok(set) = LabelledImages::read(
            &data.join("t10k-images-idx3-ubyte.gz"),
            &data.join("t10k-labels-idx1-ubyte.gz"),
        )
    {
        for class in 0..10 {
            if let Some(k) = set.labels().iter().position(|&l| l as usize == class) {
                let pixels = set.image(k).to_vec();
                images.push((format!("held-out {class}"), pixels));
            }
        }
    }
    for (name, value) in [("mid-grey", 128u8), ("black", 0), ("white", 255)] {
        images.push((name.into(), vec![value; len]));
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for k in 0..3 {
        let noise = (0..len)
            .map(|_| {
                // xorshift64*: fixed images, no dependency for three noise pictures.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect();
        images.push((format!("noise {k}"), noise));
    }
    let stripes = (0..len)
        .map(|i| {
            let x = (i / channels as usize) % width as usize;
            if (x / 2).is_multiple_of(2) { 255 } else { 0 }
        })
        .collect();
    images.push(("stripes".into(), stripes));
    images
}

fn read_images(
    paths: &[PathBuf],
    width: u32,
    height: u32,
    channels: u32,
) -> Result<Vec<(String, Vec<u8>)>> {
    paths
        .iter()
        .map(|path| {
            let image = read_png(path)?.to_channels(channels);
            if (image.width, image.height) != (width, height) {
                bail!(
                    "{} is {}x{} pixels, but the first model takes {width}x{height}; give images of its input size",
                    path.display(),
                    image.width,
                    image.height
                );
            }
            Ok((path.display().to_string(), image.pixels))
        })
        .collect()
}

/// Scores of `batch` images from `outputs` (model-major), by a fresh instance of the plugin.
fn score(
    lib: &Arc<PluginLibrary>,
    params: &str,
    classes: usize,
    logits: &[bool],
    outputs: &[f32],
    batch: usize,
) -> Result<Vec<f32>> {
    let fit = FitnessPlugin::create(lib.clone(), params, classes, logits)?;
    Ok(fit.score(outputs, batch)?)
}

/// Runs a fitness plugin on real outputs and prints its score table; errors when it fails.
pub fn check_fitness(
    out: &mut impl Write,
    lib: Arc<PluginLibrary>,
    params: &str,
    inputs: &FitnessInputs,
) -> Result<()> {
    let names = if inputs.models.is_empty() {
        vec!["builtin:lenet-mnist".to_owned()]
    } else {
        inputs.models.clone()
    };
    let here = Path::new(".");
    let backend = backend_for(inputs.backend);
    let mut models: Vec<Loaded> = Vec::new();
    let mut canvas = None;
    for name in &names {
        let model = Model::load(&ModelRef::parse(name, here))
            .with_context(|| format!("cannot load model {name} (--model)"))?;
        let input = model.manifest.input.clone();
        let (width, height) = *canvas.get_or_insert((input.width, input.height));
        if let Some(first) = models.first()
            && first.model.classes() != model.classes()
        {
            bail!(
                "model {name} has {} classes but {} has {}; a fitness scores models of one label space",
                model.classes(),
                first.name,
                first.model.classes()
            );
        }
        let view = ViewSpec {
            view: View::Center,
            width,
            height,
        };
        let mut prepared = prepare_viewed(backend.as_ref(), &model, view)
            .with_context(|| format!("cannot prepare model {name}"))?;
        check_output(&model, view, prepared.as_mut(), 4, name)?;
        models.push(Loaded {
            name: name.clone(),
            output: view.output(&model),
            model,
            prepared,
        });
    }
    let (channels, classes) = (
        models[0].model.manifest.input.channels,
        models[0].model.classes(),
    );
    let (width, height) = canvas.unwrap_or_default();
    let images = if inputs.images.is_empty() {
        default_images(width, height, channels)
    } else {
        read_images(&inputs.images, width, height, channels)?
    };
    let batch = images.len();
    let pixels: Vec<u8> = images.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    // Model-major outputs, as the host hands them over; the same as probabilities; and every
    // model's probabilities averaged, for the agreement column.
    let mut outputs = Vec::with_capacity(models.len() * batch * classes);
    let mut probabilities = Vec::with_capacity(outputs.capacity());
    let mut mean_probs = vec![0.0f32; batch * classes];
    for m in &mut models {
        let row = m
            .prepared
            .infer(&pixels, batch)
            .with_context(|| format!("inference of model {} failed", m.name))?;
        let mut probs = row.clone();
        if m.output == OutputKind::Logits {
            for (p, l) in probs
                .chunks_exact_mut(classes)
                .zip(row.chunks_exact(classes))
            {
                softmax(l, p);
            }
        }
        for (mean, p) in mean_probs.iter_mut().zip(&probs) {
            *mean += p / names.len() as f32;
        }
        outputs.extend(row);
        probabilities.extend(probs);
    }
    let logits: Vec<bool> = models
        .iter()
        .map(|m| m.output == OutputKind::Logits)
        .collect();
    let scores = score(&lib, params, classes, &logits, &outputs, batch)?;
    let again = score(&lib, params, classes, &logits, &outputs, batch)?;
    let mut alone = Vec::with_capacity(scores.len());
    for image in 0..batch {
        let single: Vec<f32> = (0..models.len())
            .flat_map(|m| {
                let start = (m * batch + image) * classes;
                outputs[start..start + classes].iter().copied()
            })
            .collect();
        alone.extend(score(&lib, params, classes, &logits, &single, 1)?);
    }
    let as_probs = if logits.iter().any(|&l| l) {
        Some(score(
            &lib,
            params,
            classes,
            &vec![false; models.len()],
            &probabilities,
            batch,
        )?)
    } else {
        None
    };
    let findings = analyse(
        classes,
        &scores,
        &again,
        &alone,
        as_probs.as_deref(),
        &mean_probs,
    );

    let first = &models[0].model;
    writeln!(
        out,
        "  scored {batch} images by {} model(s) ({}), {classes} classes, {} backend:",
        models.len(),
        models
            .iter()
            .map(|m| format!("{} [{}]", m.name, output_name(m.output)))
            .collect::<Vec<_>>()
            .join(", "),
        backend.name()
    )?;
    writeln!(
        out,
        "  {:<14} {:<22} {:<24} {:>12} {:>24}",
        "IMAGE", "MODELS' TOP CLASS", "BEST TARGET (SCORE)", "SCORE @ TOP", "SCORES MIN .. MAX"
    )?;
    for (image, (name, _)) in images.iter().enumerate() {
        let row = &scores[image * classes..(image + 1) * classes];
        let probs = &mean_probs[image * classes..(image + 1) * classes];
        let (top, best) = (argmax(probs), argmax(row));
        let (min, max) = row
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &s| {
                (lo.min(s), hi.max(s))
            });
        writeln!(
            out,
            "  {:<14} {:<22} {:<24} {:>12.6} {:>11.6} .. {:.6}",
            truncate(name, 14),
            truncate(
                &format!("{} {:.2}%", first.label(top), probs[top] * 100.0),
                22
            ),
            truncate(&format!("{} ({:.6})", first.label(best), row[best]), 24),
            row[top],
            min,
            max
        )?;
    }
    writeln!(
        out,
        "  best target = the models' top class on {} of {batch} images",
        findings.agree
    )?;
    if findings.agree == 0 && findings.flat.len() < batch {
        writeln!(
            out,
            "  note: the best-scoring target is never the class the models rank first; a fitness that rewards the target's probability or margin agrees on every image (does the plugin read the right row?)"
        )?;
    }
    match findings.as_probabilities {
        Some(change) if change > 1e-3 => writeln!(
            out,
            "  note: the scores change (up to {:.1}%) when the same outputs are given as probabilities instead of logits: the plugin reads raw outputs (deliberate for a logit margin; wrong if it means probabilities)",
            change * 100.0
        )?,
        Some(_) => writeln!(
            out,
            "  the same outputs given as probabilities instead of logits score alike"
        )?,
        None => {}
    }
    if let Some(why) = findings.failure(batch) {
        bail!("{why}");
    }
    writeln!(
        out,
        "  finite, target-dependent, deterministic and independent of the batch"
    )?;
    Ok(())
}

fn output_name(kind: OutputKind) -> &'static str {
    match kind {
        OutputKind::Logits => "logits",
        OutputKind::Probabilities => "probabilities",
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut t: String = text.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two images, three classes; image 0 is class 2, image 1 class 0.
    const PROBS: [f32; 6] = [0.1, 0.2, 0.7, 0.8, 0.15, 0.05];

    #[test]
    fn a_probability_fitness_passes_and_agrees() {
        let f = analyse(3, &PROBS, &PROBS, &PROBS, Some(&PROBS), &PROBS);
        assert_eq!(f.failure(2), None);
        assert_eq!(f.agree, 2);
        assert_eq!(f.as_probabilities, Some(0.0));
        assert!(f.flat.is_empty());
    }

    #[test]
    fn non_finite_scores_fail_naming_image_and_class() {
        let mut s = PROBS;
        s[4] = f32::NAN;
        let f = analyse(3, &s, &s, &s, None, &PROBS);
        assert_eq!(f.non_finite.len(), 1);
        let why = f.failure(2).unwrap();
        assert!(
            why.contains("non-finite") && why.contains("image 1, class 1"),
            "{why}"
        );
    }

    #[test]
    fn scores_that_ignore_the_target_fail() {
        let s = [0.3, 0.3, 0.3, 0.9, 0.9, 0.9];
        let f = analyse(3, &s, &s, &s, None, &PROBS);
        assert_eq!(f.flat, vec![0, 1]);
        assert_eq!(f.agree, 0, "a flat row agrees with nothing");
        assert!(f.failure(2).unwrap().contains("ignore the target"));
        // One flat image of two is no failure (a saturated image can score alike).
        let s = [0.3, 0.3, 0.3, 0.8, 0.15, 0.05];
        assert_eq!(analyse(3, &s, &s, &s, None, &PROBS).failure(2), None);
    }

    #[test]
    fn unstable_and_batch_dependent_scores_fail() {
        let mut again = PROBS;
        again[2] = 0.69;
        let f = analyse(3, &PROBS, &again, &PROBS, None, &PROBS);
        assert_eq!(f.unstable, Some((0, 2, 0.7, 0.69)));
        assert!(f.failure(2).unwrap().contains("not deterministic"));
        let mut alone = PROBS;
        alone[3] = 0.5;
        let f = analyse(3, &PROBS, &PROBS, &alone, None, &PROBS);
        assert_eq!(f.batch_dependent, Some((1, 0, 0.8, 0.5)));
        assert!(f.failure(2).unwrap().contains("in a batch but 0.5 alone"));
        // Differences within the tolerance are the same score.
        let mut close = PROBS;
        close[0] *= 1.0 + 1e-7;
        assert_eq!(
            analyse(3, &PROBS, &close, &close, None, &PROBS).failure(2),
            None
        );
    }

    #[test]
    fn a_fitness_that_prefers_other_classes_is_reported_not_failed() {
        // Scores 1 - p: the best target is the least likely class.
        let s: Vec<f32> = PROBS.iter().map(|p| 1.0 - p).collect();
        let f = analyse(3, &s, &s, &s, Some(&s), &PROBS);
        assert_eq!(f.agree, 0);
        assert_eq!(f.failure(2), None);
    }

    #[test]
    fn default_images_fit_the_input() {
        for (w, h, c) in [(28, 28, 1), (32, 16, 3)] {
            let images = default_images(w, h, c);
            assert!(images.len() >= 7);
            assert!(images.iter().all(|(_, p)| p.len() == (w * h * c) as usize));
        }
        // The repository's digits, one per class, lead for a 28x28 gray input.
        let digits = default_images(28, 28, 1);
        assert_eq!(digits[0].0, "held-out 0");
        assert_eq!(digits[9].0, "held-out 9");
    }
}
