//! Template fitness plugin: the softmax confidence of every class at a temperature `T`
//! (`[fitness.params] temperature = 2.0`), averaged over the run's models. `T = 1` is the
//! shipped `confidence` fitness; `T > 1` flattens the probabilities, so an image has to push
//! its class's logit further ahead of the others before it scores near 1.
//!
//! What a fitness gets and gives (docs/plugins.md, "Writing a fitness"):
//!
//! - `new(params, classes, kinds)`: `classes` is the models' class count (every model of a
//!   run has the same labels); `kinds` has one entry per model of the run (`[model]`, then
//!   each `[[models]]`), saying whether that model outputs `Logits` or `Probabilities`, so
//!   `kinds.len()` is the number of models.
//! - `score(outputs, scores)`: `outputs.data` holds `models * batch * classes` values,
//!   model-major, then image, then class (`outputs.row(model, image)` is one vector);
//!   `scores` has `batch * classes` slots, image-major: `scores[image * classes + c]` is the
//!   image's score for class `c`, higher is better. MAP-Elites compares each class's score
//!   with that class's champion. Write every slot; an `Err` costs the batch, not the run.
#![deny(unsafe_code)]

use pareidolia_plugin::prelude::*;
use serde::Deserialize;

/// `[fitness.params]`; unknown keys are an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TemperatureParams {
    temperature: f32,
}

impl Default for TemperatureParams {
    fn default() -> Self {
        Self { temperature: 1.0 }
    }
}

/// Temperature-scaled softmax confidence per class.
#[derive(Debug)]
pub struct Tempered {
    classes: usize,
    temperature: f32,
}

impl Fitness for Tempered {
    fn new(params: Params<'_>, classes: usize, kinds: &[OutputKind]) -> Result<Self, PluginError> {
        let p: TemperatureParams = params.parse()?;
        if !(p.temperature.is_finite() && p.temperature > 0.0) {
            return Err(PluginError::new(format!(
                "temperature must be a finite number above 0, got {}",
                p.temperature
            )));
        }
        if kinds.is_empty() || classes == 0 {
            return Err(PluginError::new(
                "tempered needs at least one model with at least one class",
            ));
        }
        Ok(Self {
            classes,
            temperature: p.temperature,
        })
    }

    fn score(&self, outputs: &ModelOutputs<'_>, scores: &mut [f32]) -> Result<(), PluginError> {
        let models = outputs.kinds.len();
        let mut probs = vec![0.0f32; self.classes];
        let mut scaled = vec![0.0f32; self.classes];
        for (image, row_out) in scores.chunks_exact_mut(self.classes).enumerate() {
            row_out.fill(0.0);
            for model in 0..models {
                // Probabilities of either kind of model (softmax of logits; refuses NaN).
                outputs.probabilities(model, image, &mut probs)?;
                // Their logs are logits up to a constant; divide by T and softmax again.
                for (s, p) in scaled.iter_mut().zip(&probs) {
                    *s = p.max(f32::MIN_POSITIVE).ln() / self.temperature;
                }
                softmax(&scaled, &mut probs);
                for (s, p) in row_out.iter_mut().zip(&probs) {
                    *s += p / models as f32;
                }
            }
        }
        Ok(())
    }
}

export_fitness!(
    Tempered,
    name = "tempered",
    version = env!("CARGO_PKG_VERSION")
);

#[cfg(test)]
mod tests {
    use super::*;

    fn score(params: &str, kinds: &[OutputKind], data: &[f32], batch: usize) -> Vec<f32> {
        let f = Tempered::new(Params::new(params), 3, kinds).unwrap();
        let outputs = ModelOutputs {
            data,
            batch,
            classes: 3,
            kinds,
        };
        let mut scores = vec![0.0; batch * 3];
        f.score(&outputs, &mut scores).unwrap();
        scores
    }

    #[test]
    fn temperature_one_is_the_softmax_confidence() {
        let s = score("{}", &[OutputKind::Logits], &[1.0, 2.0, 3.0], 1);
        let e = [1f64.exp(), 2f64.exp(), 3f64.exp()];
        let sum: f64 = e.iter().sum();
        for (got, want) in s.iter().zip(e) {
            assert!((f64::from(*got) - want / sum).abs() < 1e-6, "{s:?}");
        }
    }

    #[test]
    fn a_higher_temperature_flattens_and_keeps_the_order() {
        let cold = score("{}", &[OutputKind::Logits], &[1.0, 2.0, 3.0], 1);
        let hot = score(
            r#"{"temperature": 4.0}"#,
            &[OutputKind::Logits],
            &[1.0, 2.0, 3.0],
            1,
        );
        assert!(hot[2] < cold[2] && hot[0] > cold[0], "{cold:?} {hot:?}");
        assert!(hot[0] < hot[1] && hot[1] < hot[2]);
    }

    #[test]
    fn scores_are_image_major_and_models_are_averaged() {
        // Two models, two images: model-major data in, image-major scores out.
        let kinds = [OutputKind::Probabilities, OutputKind::Probabilities];
        let data = [
            1.0, 0.0, 0.0, /* m0 i0 */ 0.0, 1.0, 0.0, /* m0 i1 */
            0.0, 0.0, 1.0, /* m1 i0 */ 0.0, 1.0, 0.0, /* m1 i1 */
        ];
        let s = score("{}", &kinds, &data, 2);
        assert!(
            (s[0] - 0.5).abs() < 1e-6 && (s[2] - 0.5).abs() < 1e-6,
            "{s:?}"
        );
        assert!((s[4] - 1.0).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn bad_parameters_are_refused() {
        for bad in [
            r#"{"temperature": 0}"#,
            r#"{"temperature": -1}"#,
            r#"{"temp": 2}"#,
        ] {
            assert!(
                Tempered::new(Params::new(bad), 3, &[OutputKind::Logits]).is_err(),
                "{bad}"
            );
        }
    }
}
