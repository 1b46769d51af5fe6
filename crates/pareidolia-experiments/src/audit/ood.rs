//! Out-of-distribution detectors against the fooling images: the held-out data (an IDX pair
//! as `train` and `classify --data` read it, or one folder of PNG files per class) give the
//! model's accuracy and each detector's threshold at 95% true-positive rate (95% of the real
//! images score at or above it); the audit then counts the fooling images that score at or
//! above it too, i.e. that the detector lets through as in-distribution.
//!
//! Detectors, each "higher = more in-distribution": max-softmax (Hendrycks & Gimpel), the
//! maximum logit, and the energy score (logsumexp of the logits, the negated free energy of
//! Liu et al.). A model whose output is probabilities gives max-softmax only: its logits are
//! known only up to an additive constant per image (log p), under which the maximum logit
//! orders images as max-softmax does and the energy is 0 for every image.
//!
//! Also here: [`Scorer`], a model prepared on tract at its own input size, which the audit
//! uses for every score it takes from PNG files (held-out data, rescored champions, transfer).

use std::path::Path;

use pareidolia_core::image_io::read_png;
use pareidolia_eval::{
    BackendChoice, Model, ModelRef, OutputKind, PreparedModel, ViewSpec, backend_for, check_output,
    prepare_viewed,
};
use pareidolia_grad::{HeldOut, HeldOutLayout, read_held_out};
use pareidolia_plugin::softmax;
use serde::{Deserialize, Serialize};

/// The detectors.
pub const DETECTORS: [&str; 3] = ["max-softmax", "max-logit", "energy"];

/// The true-positive rate thresholds are set at.
pub const TPR: f64 = 0.95;

/// A model prepared on tract at its own input size, scoring 8-bit images.
pub struct Scorer {
    /// The model.
    pub model: Model,
    prepared: Box<dyn PreparedModel>,
}

impl Scorer {
    /// Loads `manifest` (a path relative to `base`, or `builtin:NAME`) and prepares it.
    pub fn load(manifest: &str, base: &Path) -> Result<Self, String> {
        let model = Model::load(&ModelRef::parse(manifest, base))
            .map_err(|e| format!("cannot load model {manifest}: {e}"))?;
        Self::new(model, manifest)
    }

    /// Prepares a loaded model.
    pub fn new(model: Model, origin: &str) -> Result<Self, String> {
        let view = ViewSpec::identity(&model);
        let mut prepared = prepare_viewed(backend_for(BackendChoice::Tract).as_ref(), &model, view)
            .map_err(|e| format!("cannot prepare model {origin} on tract: {e}"))?;
        check_output(&model, view, prepared.as_mut(), 1, origin)
            .map_err(|e| format!("model {origin}: {e}"))?;
        Ok(Self { model, prepared })
    }

    /// Bytes of one image.
    pub fn image_len(&self) -> usize {
        self.model.image_len()
    }

    /// (width, height, channels) of the model's input.
    pub fn input(&self) -> (u32, u32, u32) {
        let i = &self.model.manifest.input;
        (i.width, i.height, i.channels)
    }

    /// The model's raw outputs (logits or probabilities, as its manifest says), one row of
    /// `classes` per image.
    pub fn raw(&mut self, pixels: &[u8]) -> Result<Vec<f32>, String> {
        let len = self.image_len().max(1);
        let mut out = Vec::with_capacity(pixels.len() / len * self.model.classes());
        for chunk in pixels.chunks(32 * len) {
            let rows = self
                .prepared
                .infer(chunk, chunk.len() / len)
                .map_err(|e| format!("inference on {} failed: {e}", self.model.name()))?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Probabilities, one row per image.
    pub fn probabilities(&mut self, pixels: &[u8]) -> Result<Vec<f32>, String> {
        let raw = self.raw(pixels)?;
        Ok(to_probabilities(&raw, self.model.classes(), self.output()))
    }

    /// The output kind.
    pub fn output(&self) -> OutputKind {
        self.model.manifest.output
    }

    /// Reads a PNG as this model's input (its channels); `None`-free: a size other than the
    /// model's is an error naming the file.
    pub fn read_image(&self, path: &Path) -> Result<Vec<u8>, String> {
        let (w, h, c) = self.input();
        let image = read_png(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .to_channels(c);
        if (image.width, image.height) != (w, h) {
            return Err(format!(
                "{} is {}x{} pixels, but model {} takes {w}x{h}",
                path.display(),
                image.width,
                image.height,
                self.model.name()
            ));
        }
        Ok(image.pixels)
    }
}

/// Softmax of every row of logits; probabilities as they are.
pub fn to_probabilities(raw: &[f32], classes: usize, kind: OutputKind) -> Vec<f32> {
    let mut out = raw.to_vec();
    if kind == OutputKind::Logits {
        for row in out.chunks_mut(classes.max(1)) {
            let logits = row.to_vec();
            softmax(&logits, row);
        }
    }
    out
}

/// Labelled images read from `--data`.
pub type Labelled = HeldOut;

/// Reads `--data` as `classify --data` does ([`read_held_out`]: the held-out IDX pair or one
/// PNG folder per class, at the model's input size, labels among its classes), and refuses
/// data that does not cover the model's classes exactly: the detectors' thresholds are for
/// the model's whole label space.
pub fn read_data(dir: &Path, model: &Model) -> Result<Labelled, String> {
    let data = read_held_out(dir, model)?;
    let (name, classes) = (model.name(), model.classes());
    match data.layout {
        HeldOutLayout::Idx if data.label_span() != classes => Err(format!(
            "--data {}: its labels run from 0 to {} ({} classes), but model {name} has {classes} labels; audit a model with the data's classes, or give data labelled with the model's",
            data.what,
            data.label_span().saturating_sub(1),
            data.label_span()
        )),
        HeldOutLayout::Folders(n) if n != classes => Err(format!(
            "--data {} has {n} class folders, but model {name} has {classes} labels; give one folder per class of the model",
            dir.display()
        )),
        _ => Ok(data),
    }
}

/// The detectors' scores of one raw output row: max-softmax, max-logit, energy (the last two
/// `None` for a probabilities output).
pub fn detector_scores(row: &[f32], kind: OutputKind) -> [Option<f64>; 3] {
    match kind {
        OutputKind::Probabilities => {
            let msp = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            [Some(f64::from(msp)), None, None]
        }
        OutputKind::Logits => {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
            let lse = max + sum.ln();
            // max softmax = exp(max - logsumexp)
            [Some((max - lse).exp()), Some(max), Some(lse)]
        }
    }
}

/// The threshold at true-positive rate `tpr`: the largest score that at least `tpr` of the
/// in-distribution scores reach. `None` for no scores.
pub fn threshold_at_tpr(scores: &[f64], tpr: f64) -> Option<f64> {
    let mut s: Vec<f64> = scores.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let k = (((1.0 - tpr) * s.len() as f64) + 1e-9).floor() as usize;
    Some(s[k.min(s.len() - 1)])
}

/// Share of `scores` at or above `threshold` (passed as in-distribution).
pub fn pass_share(scores: &[f64], threshold: f64) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    scores.iter().filter(|&&s| s >= threshold).count() as f64 / scores.len() as f64
}

/// One detector's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorResult {
    /// Its name (one of [`DETECTORS`]).
    pub detector: String,
    /// Available for this model; otherwise why not.
    pub available: bool,
    /// Why not, when not.
    pub unavailable_because: Option<String>,
    /// Threshold at 95% TPR on the held-out data.
    pub threshold: Option<f64>,
    /// The real TPR at that threshold.
    pub tpr: Option<f64>,
    /// Share of all fooling images passed as in-distribution.
    pub fooling_passed: Option<f64>,
    /// The same per method (method name, share).
    pub fooling_passed_by_method: Vec<(String, f64)>,
}

/// The OOD section of the audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OodResult {
    /// What was read.
    pub data: String,
    /// Held-out images.
    pub images: usize,
    /// Top-1 accuracy on them.
    pub accuracy: f64,
    /// Fooling images scored.
    pub fooling_images: usize,
    /// Per detector.
    pub detectors: Vec<DetectorResult>,
}

/// The OOD figures: `data_raw` / `fooling_raw` are raw output rows; `fooling_methods` names
/// each fooling image's method.
pub fn evaluate(
    data: &Labelled,
    data_raw: &[f32],
    fooling_raw: &[f32],
    fooling_methods: &[String],
    classes: usize,
    kind: OutputKind,
) -> OodResult {
    let rows: Vec<&[f32]> = data_raw.chunks_exact(classes).collect();
    let right = rows
        .iter()
        .zip(&data.labels)
        .filter(|(row, label)| {
            let top = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(usize::MAX, |(i, _)| i);
            top == **label
        })
        .count();
    let id: Vec<[Option<f64>; 3]> = rows.iter().map(|r| detector_scores(r, kind)).collect();
    let fool: Vec<[Option<f64>; 3]> = fooling_raw
        .chunks_exact(classes)
        .map(|r| detector_scores(r, kind))
        .collect();
    let mut methods: Vec<String> = fooling_methods.to_vec();
    methods.dedup();
    let detectors = (0..DETECTORS.len())
        .map(|d| {
            let ids: Vec<f64> = id.iter().filter_map(|s| s[d]).collect();
            if ids.is_empty() {
                return DetectorResult {
                    detector: DETECTORS[d].to_owned(),
                    available: false,
                    unavailable_because: Some(
                        "the model outputs probabilities: its logits are known only up to a constant per image (log p), under which the maximum logit ranks images as max-softmax does and the energy is the same for every image".to_owned(),
                    ),
                    threshold: None,
                    tpr: None,
                    fooling_passed: None,
                    fooling_passed_by_method: Vec::new(),
                };
            }
            let threshold = threshold_at_tpr(&ids, TPR).expect("non-empty");
            let fools: Vec<f64> = fool.iter().filter_map(|s| s[d]).collect();
            let by_method = methods
                .iter()
                .map(|m| {
                    let of: Vec<f64> = fool
                        .iter()
                        .zip(fooling_methods)
                        .filter(|(_, fm)| *fm == m)
                        .filter_map(|(s, _)| s[d])
                        .collect();
                    (m.clone(), pass_share(&of, threshold))
                })
                .collect();
            DetectorResult {
                detector: DETECTORS[d].to_owned(),
                available: true,
                unavailable_because: None,
                threshold: Some(threshold),
                tpr: Some(pass_share(&ids, threshold)),
                fooling_passed: (!fools.is_empty()).then(|| pass_share(&fools, threshold)),
                fooling_passed_by_method: by_method,
            }
        })
        .collect();
    OodResult {
        data: data.what.clone(),
        images: rows.len(),
        accuracy: right as f64 / rows.len().max(1) as f64,
        fooling_images: fool.len(),
        detectors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_keeps_95_percent_of_the_real_images() {
        let scores: Vec<f64> = (1..=100).map(f64::from).collect();
        let t = threshold_at_tpr(&scores, 0.95).unwrap();
        assert_eq!(t, 6.0);
        assert!((pass_share(&scores, t) - 0.95).abs() < 1e-12);
        assert_eq!(threshold_at_tpr(&[], 0.95), None);
        assert_eq!(threshold_at_tpr(&[2.0], 0.95), Some(2.0));
        assert_eq!(pass_share(&[1.0, 7.0, 9.0], 6.0), 2.0 / 3.0);
    }

    #[test]
    fn detector_scores_of_logits_and_probabilities() {
        let [msp, ml, e] = detector_scores(&[0.0, (3.0f32).ln()], OutputKind::Logits);
        assert!((msp.unwrap() - 0.75).abs() < 1e-6);
        assert!((ml.unwrap() - 3f64.ln()).abs() < 1e-6);
        assert!((e.unwrap() - 4f64.ln()).abs() < 1e-6);
        let p = detector_scores(&[0.2, 0.8], OutputKind::Probabilities);
        assert!((p[0].unwrap() - 0.8).abs() < 1e-6);
        assert_eq!((p[1], p[2]), (None, None));
    }

    #[test]
    fn evaluate_counts_accuracy_and_passes() {
        let data = Labelled {
            what: "test".into(),
            pixels: Vec::new(),
            labels: vec![0, 1, 1, 0],
            layout: HeldOutLayout::Folders(2),
        };
        // Two classes, logits: three right, one wrong.
        let data_raw = [5.0, 0.0, 0.0, 5.0, 0.0, 4.0, 1.0, 0.0];
        // One confident fooling image, one unsure.
        let fooling_raw = [9.0, 0.0, 0.1, 0.0];
        let methods = vec!["direct".to_owned(), "cppn".to_owned()];
        let r = evaluate(
            &data,
            &data_raw,
            &fooling_raw,
            &methods,
            2,
            OutputKind::Logits,
        );
        assert_eq!(r.accuracy, 1.0);
        assert_eq!(r.images, 4);
        let msp = &r.detectors[0];
        assert!(msp.available);
        assert_eq!(msp.fooling_passed, Some(0.5));
        assert_eq!(
            msp.fooling_passed_by_method,
            vec![("direct".to_owned(), 1.0), ("cppn".to_owned(), 0.0)]
        );
        let probs = evaluate(
            &data,
            &[0.9, 0.1, 0.2, 0.8, 0.3, 0.7, 0.6, 0.4],
            &[0.99, 0.01],
            &methods[..1],
            2,
            OutputKind::Probabilities,
        );
        assert!(probs.detectors[0].available);
        assert!(!probs.detectors[1].available);
        assert!(probs.detectors[2].unavailable_because.is_some());
    }
}
