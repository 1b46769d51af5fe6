//! The one check every command applies when it loads a model: a manifest that says
//! `output = "probabilities"` must come with a model that gives probabilities. A logits model
//! so declared would otherwise "classify" with confidences of 734.93% (`classify`), report a
//! transfer median of 1001.67% (`transfer`), or score a run's champions with raw logits
//! (`run`), without a word. Logits manifests need no check: any finite vector is a logit
//! vector.
//!
//! The check runs the prepared model (behind its view) on a few fixed images: mid-grey,
//! black, white and seeded noise, in turn. Values within 1e-4 of [0, 1] that sum to 1 within
//! 1e-3 pass; anything else is an [`EvalError::NotProbabilities`] naming the manifest and what
//! the model gave.

use crate::{EvalError, Model, OutputKind, PreparedModel, ViewSpec};

/// The test images, in turn.
const KINDS: [&str; 4] = ["mid-grey", "black", "white", "noise"];

/// `n` test images of `len` bytes each (mid-grey, black, white, noise, mid-grey, ...).
fn test_images(n: usize, len: usize) -> Vec<u8> {
    let mut noise = 0x2545_f491_4f6c_dd1d_u64;
    let mut images = Vec::with_capacity(n * len);
    for i in 0..n {
        images.extend((0..len).map(|_| match i % KINDS.len() {
            0 => 128,
            1 => 0,
            2 => 255,
            _ => {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                (noise >> 56) as u8
            }
        }));
    }
    images
}

/// Checks, on `n` test images (pass a batch size `prepared` is already warmed up for), that a
/// model whose manifest says `output = "probabilities"` gives probabilities. `prepared` is the
/// model behind `view`; `origin` names the manifest in the error (`path/manifest.toml` or
/// `builtin:NAME`). Does nothing for a logits manifest or `n == 0`.
pub fn check_output(
    model: &Model,
    view: ViewSpec,
    prepared: &mut dyn PreparedModel,
    n: usize,
    origin: &str,
) -> Result<(), EvalError> {
    if model.manifest.output != OutputKind::Probabilities || n == 0 {
        return Ok(());
    }
    let out = prepared.infer(&test_images(n, view.canvas_len(model)), n)?;
    for (i, v) in out.chunks(model.classes().max(1)).enumerate() {
        let (min, max) = v
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
        let fine = v.iter().all(|x| x.is_finite())
            && min >= -1e-4
            && max <= 1.0 + 1e-4
            && (sum - 1.0).abs() <= 1e-3;
        if !fine {
            return Err(EvalError::NotProbabilities {
                model: model.name().to_owned(),
                manifest: origin.to_owned(),
                image: KINDS[i % KINDS.len()],
                min,
                max,
                sum,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelRef, TractBackend, backend::Backend};

    fn lenet(output: OutputKind) -> Model {
        let mut m = Model::load(&ModelRef::Builtin("lenet-mnist".into())).unwrap();
        m.manifest.output = output;
        m
    }

    #[test]
    fn a_logits_model_declared_as_probabilities_is_refused_and_as_logits_passes() {
        let declared = lenet(OutputKind::Probabilities);
        let view = ViewSpec::identity(&declared);
        let mut prepared = TractBackend.prepare(&declared).unwrap();
        let err = check_output(&declared, view, prepared.as_mut(), 4, "builtin:lenet-mnist")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("says `output = \"probabilities\"`")
                && err.contains("builtin:lenet-mnist")
                && err.contains("set `output = \"logits\"`"),
            "{err}"
        );
        let honest = lenet(OutputKind::Logits);
        check_output(&honest, view, prepared.as_mut(), 4, "builtin:lenet-mnist").unwrap();
    }

    #[test]
    fn test_images_cycle_through_grey_black_white_and_noise() {
        let images = test_images(5, 3);
        assert_eq!(&images[..9], &[128, 128, 128, 0, 0, 0, 255, 255, 255]);
        assert!(images[9..12].iter().any(|&p| p != images[9]));
        assert_eq!(&images[12..], &[128, 128, 128]);
    }
}
