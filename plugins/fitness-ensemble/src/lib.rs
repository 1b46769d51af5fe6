//! Ensemble fitness: every model's probability of every class, reduced over the models into
//! one score per class. The transfer experiment's fitness: with `reduce = "min"` an image
//! scores high in a class only if *every* model gives that class a high probability, so
//! MAP-Elites evolves images that fool all the models at once.
//!
//! Parameters (JSON, from `[fitness.params]`):
//!
//! | key | values | default |
//! |---|---|---|
//! | `reduce` | `"min"`, `"mean"` or `"geometric"` | `"min"` |
//!
//! With `p[m][k]` the probability model `m` of `M` gives class `k` (the softmax of its
//! logits where the model outputs logits), the score of class `k` is
//!
//! - `min`: `min_m p[m][k]`, the least fooled model's probability;
//! - `mean`: `(1/M) Σ_m p[m][k]`, the average vote (what `confidence` computes);
//! - `geometric`: `(Π_m p[m][k])^(1/M)`, computed in log space (in `f64`); a probability of
//!   0 in any model gives 0. It rewards agreement more than `mean` and less than `min`.
//!
//! Every score lies in 0..1. Models: at least one. An ensemble of one model is legal and its
//! score is that model's probability whatever `reduce` says (then every reduction is the
//! identity), so one run config can switch between one model and several without changing
//! its fitness, and `pareidolia plugins check` (which creates fitness plugins for one model)
//! works. Zero models or zero classes are refused.
//!
//! The `reduce` parameter and the test helpers are `pareidolia-fitness-reduce`'s, shared with
//! the other reducing fitness plugin.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub use pareidolia_fitness_reduce::Reduce;
use pareidolia_plugin::prelude::*;
use serde::Deserialize;

/// Reduces one class's probabilities, one per model (at least one).
pub fn apply(reduce: Reduce, probs: &[f32]) -> f32 {
    let n = probs.len() as f64;
    match probs {
        [] => 0.0,
        [p] => *p,
        _ => match reduce {
            Reduce::Min => probs.iter().copied().fold(f32::INFINITY, f32::min),
            Reduce::Mean => (probs.iter().map(|&p| p as f64).sum::<f64>() / n) as f32,
            Reduce::Geometric => {
                if probs.iter().any(|&p| p <= 0.0) {
                    return 0.0;
                }
                let log_sum: f64 = probs.iter().map(|&p| (p as f64).ln()).sum();
                (log_sum / n).exp() as f32
            }
        },
    }
}

/// The parameters; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EnsembleParams {
    reduce: Reduce,
}

/// Per-class probabilities reduced over the models.
#[derive(Debug)]
pub struct Ensemble {
    classes: usize,
    reduce: Reduce,
}

impl Ensemble {
    /// The reduction this instance applies.
    pub fn reduce(&self) -> Reduce {
        self.reduce
    }
}

impl Fitness for Ensemble {
    fn new(params: Params<'_>, classes: usize, kinds: &[OutputKind]) -> Result<Self, PluginError> {
        let EnsembleParams { reduce } = params.parse()?;
        if kinds.is_empty() {
            return Err(PluginError::new(
                "ensemble needs at least one model (it was given none); list the models in the run config",
            ));
        }
        if classes == 0 {
            return Err(PluginError::new("ensemble needs at least one class"));
        }
        Ok(Self { classes, reduce })
    }

    fn score(&self, outputs: &ModelOutputs<'_>, scores: &mut [f32]) -> Result<(), PluginError> {
        let classes = self.classes;
        let models = outputs.kinds.len();
        // probs[m * classes + k]: model m's probability of class k, for the current image.
        let mut probs = vec![0.0f32; models * classes];
        let mut column = vec![0.0f32; models];
        for (image, row_out) in scores.chunks_exact_mut(classes).enumerate() {
            for model in 0..models {
                let p = &mut probs[model * classes..(model + 1) * classes];
                outputs.probabilities(model, image, p)?;
            }
            for (class, s) in row_out.iter_mut().enumerate() {
                for (model, c) in column.iter_mut().enumerate() {
                    *c = probs[model * classes + class];
                }
                *s = apply(self.reduce, &column);
            }
        }
        Ok(())
    }
}

export_fitness!(
    Ensemble,
    name = "ensemble",
    version = env!("CARGO_PKG_VERSION")
);

#[cfg(test)]
mod tests {
    use super::*;

    const P: OutputKind = OutputKind::Probabilities;
    const L: OutputKind = OutputKind::Logits;

    use pareidolia_fitness_reduce::testing;

    fn ensemble(params: &str, classes: usize, kinds: &[OutputKind]) -> Ensemble {
        testing::fitness(params, classes, kinds)
    }

    fn refusal(params: &str, classes: usize, kinds: &[OutputKind]) -> String {
        testing::refusal::<Ensemble>(params, classes, kinds)
    }

    fn score(f: &Ensemble, kinds: &[OutputKind], data: &[f32], batch: usize) -> Vec<f32> {
        testing::score(f, kinds, data, batch)
    }

    fn with(reduce: &str, kinds: &[OutputKind], data: &[f32], batch: usize) -> Vec<f32> {
        testing::with::<Ensemble>(reduce, kinds, data, batch)
    }

    #[test]
    fn probabilities_reduce_exactly() {
        // Model 0: [0.25, 0.5, 0.25]; model 1: [1, 0, 0].
        let data = [0.25, 0.5, 0.25, 1.0, 0.0, 0.0];
        assert_eq!(with("min", &[P, P], &data, 1), [0.25, 0.0, 0.0]);
        assert_eq!(with("mean", &[P, P], &data, 1), [0.625, 0.25, 0.125]);
        // sqrt(0.25 * 1) = 0.5; a zero in any model gives exactly 0.
        assert_eq!(with("geometric", &[P, P], &data, 1), [0.5, 0.0, 0.0]);
    }

    #[test]
    fn min_is_the_default() {
        let f = ensemble("{}", 3, &[P, P]);
        assert_eq!(f.reduce(), Reduce::Min);
        assert_eq!(ensemble("", 3, &[P, P]).reduce(), Reduce::Min);
        let data = [0.25, 0.5, 0.25, 1.0, 0.0, 0.0];
        assert_eq!(score(&f, &[P, P], &data, 1), [0.25, 0.0, 0.0]);
    }

    #[test]
    fn logits_go_through_softmax_and_kinds_may_mix() {
        // Model 0 (logits): image 0 [0, 0] -> [0.5, 0.5]; image 1 [1000, -1000] -> [1, 0].
        // Model 1 (probabilities): image 0 [0.75, 0.25]; image 1 [0.5, 0.5].
        let kinds = [L, P];
        let data = [0.0, 0.0, 1000.0, -1000.0, 0.75, 0.25, 0.5, 0.5];
        assert_eq!(with("min", &kinds, &data, 2), [0.5, 0.25, 0.5, 0.0]);
        assert_eq!(with("mean", &kinds, &data, 2), [0.625, 0.375, 0.75, 0.25]);
        let g = with("geometric", &kinds, &data, 2);
        let want = [0.375f64.sqrt(), 0.125f64.sqrt(), 0.5f64.sqrt(), 0.0];
        for (got, want) in g.iter().zip(want) {
            assert!((*got as f64 - want).abs() < 1e-7, "{g:?}");
        }
        // Logits that are not trivial: compared with a softmax done here in f64.
        let data = [1.0, 2.0, 3.0, 3.0, 2.0, 1.0];
        let mean = with("mean", &[L, L], &data, 1);
        let e: Vec<f64> = [1f64, 2.0, 3.0].iter().map(|l| l.exp()).collect();
        let sum: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|v| v / sum).collect();
        let want = [(p[0] + p[2]) / 2.0, p[1], (p[2] + p[0]) / 2.0];
        for (got, want) in mean.iter().zip(want) {
            assert!((*got as f64 - want).abs() < 1e-7, "{mean:?}");
        }
    }

    #[test]
    fn three_models_are_read_model_major() {
        // 3 models x 2 images x 2 classes; image 1 is fooled by every model in class 1.
        let data = [
            0.9, 0.1, 0.2, 0.8, // model 0: image 0, image 1
            0.6, 0.4, 0.4, 0.6, // model 1
            0.3, 0.7, 0.1, 0.9, // model 2
        ];
        let min = with("min", &[P, P, P], &data, 2);
        assert_eq!(min, [0.3, 0.1, 0.1, 0.6]);
        let mean = with("mean", &[P, P, P], &data, 2);
        let want = [0.6, 0.4, 0.7 / 3.0, 2.3 / 3.0];
        for (got, want) in mean.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{mean:?}");
        }
        let geo = with("geometric", &[P, P, P], &data, 2);
        let want = [
            0.162f64.cbrt(),
            0.028f64.cbrt(),
            0.008f64.cbrt(),
            0.432f64.cbrt(),
        ];
        for (got, want) in geo.iter().zip(want) {
            assert!((*got as f64 - want).abs() < 1e-6, "{geo:?}");
        }
    }

    #[test]
    fn one_model_is_the_identity_for_every_reduce() {
        let logits = [0.3, -1.0, 2.5];
        let mut p = [0.0; 3];
        softmax(&logits, &mut p);
        for reduce in ["min", "mean", "geometric"] {
            assert_eq!(with(reduce, &[L], &logits, 1), p, "{reduce}");
            assert_eq!(with(reduce, &[P], &[0.2, 0.0, 0.8], 1), [0.2, 0.0, 0.8]);
        }
    }

    #[test]
    fn refuses_bad_parameters_naming_the_key_and_the_values() {
        let err = refusal(r#"{"reduce":"max"}"#, 3, &[P, P]);
        assert!(
            err.contains("`reduce`") && err.contains(r#""min", "mean", "geometric""#),
            "{err}"
        );
        assert!(err.contains(r#"got "max""#), "{err}");
        let err = refusal(r#"{"reduce":2}"#, 3, &[P, P]);
        assert!(
            err.contains("`reduce`") && err.contains("integer") && err.contains(r#""geometric""#),
            "{err}"
        );
        let err = refusal(r#"{"reduction":"min"}"#, 3, &[P, P]);
        assert!(
            err.contains("unknown field `reduction`") && err.contains("`reduce`"),
            "{err}"
        );
        let err = refusal("not json", 3, &[P, P]);
        assert!(err.starts_with("invalid parameters"), "{err}");
    }

    #[test]
    fn refuses_no_models_and_no_classes() {
        let err = refusal("{}", 3, &[]);
        assert!(err.contains("at least one model"), "{err}");
        let err = refusal("{}", 0, &[P, P]);
        assert!(err.contains("at least one class"), "{err}");
    }

    #[test]
    fn refuses_non_finite_outputs_naming_model_and_image() {
        let f = ensemble("{}", 2, &[L, L]);
        let data = [0.0, 0.0, 1.0, 2.0, 0.0, 0.0, f32::INFINITY, 0.0];
        let outputs = ModelOutputs {
            data: &data,
            batch: 2,
            classes: 2,
            kinds: &[L, L],
        };
        let err = f.score(&outputs, &mut [0.0; 4]).unwrap_err();
        assert!(err.message().contains("model 1") && err.message().contains("image 1"));
    }
}
