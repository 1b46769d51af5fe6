//! Margin fitness: how far each class's probability stands above the best *other* class,
//! `p[k] − max_{j≠k} p[j]`, the confidence gap. A class scores above 0 only where it is the
//! model's top-1, and near 1 only where nothing else is left; unlike the paper's confidence, a
//! margin cannot be high while a second class is close behind. With several models the
//! per-model margins are reduced into one score per class.
//!
//! Parameters (JSON, from `[fitness.params]`):
//!
//! | key | values | default |
//! |---|---|---|
//! | `reduce` | `"min"`, `"mean"` or `"geometric"` | `"min"` |
//!
//! With `p[m][k]` the probability model `m` of `M` gives class `k` (the softmax of its
//! logits where the model outputs logits), `g[m][k] = p[m][k] − max_{j≠k} p[m][j]`, and the
//! score of class `k` is
//!
//! - `min`: `min_m g[m][k]`: positive only where class `k` is top-1 for every model;
//! - `mean`: `(1/M) Σ_m g[m][k]`;
//! - `geometric`: margins range over −1..1, so the geometric mean is taken of `(1 + g) / 2`
//!   (in 0..1) and mapped back: `2 · (Π_m (1 + g[m][k]) / 2)^(1/M) − 1`, in log space; a
//!   margin of −1 in any model gives −1. It lies between `min` and `mean`.
//!
//! With one model every reduction is the identity and the score is that model's margin.
//! Scores range over −1..1; MAP-Elites keeps the highest score per class, so negative
//! margins compare like any others (an image whose class-`k` margin rises from −0.9 to −0.2
//! is a better champion for `k`). Refused: zero models, and fewer than two classes (there is
//! no other class to compare with).
//!
//! The `reduce` parameter and the test helpers are `pareidolia-fitness-reduce`'s, shared with
//! the other reducing fitness plugin.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub use pareidolia_fitness_reduce::Reduce;
use pareidolia_plugin::prelude::*;
use serde::Deserialize;

/// Reduces one class's margins, one per model (at least one).
pub fn apply(reduce: Reduce, margins: &[f64]) -> f32 {
    let n = margins.len() as f64;
    let value = match margins {
        [] => 0.0,
        [g] => *g,
        _ => match reduce {
            Reduce::Min => margins.iter().copied().fold(f64::INFINITY, f64::min),
            Reduce::Mean => margins.iter().sum::<f64>() / n,
            Reduce::Geometric => {
                if margins.iter().any(|&g| g <= -1.0) {
                    -1.0
                } else {
                    let log_sum: f64 = margins.iter().map(|&g| ((1.0 + g) / 2.0).ln()).sum();
                    2.0 * (log_sum / n).exp() - 1.0
                }
            }
        },
    };
    value as f32
}

/// The parameters; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MarginParams {
    reduce: Reduce,
}

/// Writes `p[k] − max_{j≠k} p[j]` for every class `k` of one probability vector (at least
/// two classes). Ties at the top give both tied classes a margin of 0.
pub fn margins(probs: &[f32], out: &mut [f64]) {
    let (mut first, mut best) = (0, f32::NEG_INFINITY);
    for (k, &p) in probs.iter().enumerate() {
        if p > best {
            (first, best) = (k, p);
        }
    }
    let second = probs
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != first)
        .map(|(_, &p)| p)
        .fold(f32::NEG_INFINITY, f32::max);
    for (k, (o, &p)) in out.iter_mut().zip(probs).enumerate() {
        let other = if k == first { second } else { best };
        *o = p as f64 - other as f64;
    }
}

/// Per-class confidence gap, reduced over the models.
#[derive(Debug)]
pub struct Margin {
    classes: usize,
    reduce: Reduce,
}

impl Margin {
    /// The reduction this instance applies.
    pub fn reduce(&self) -> Reduce {
        self.reduce
    }
}

impl Fitness for Margin {
    fn new(params: Params<'_>, classes: usize, kinds: &[OutputKind]) -> Result<Self, PluginError> {
        let MarginParams { reduce } = params.parse()?;
        if kinds.is_empty() {
            return Err(PluginError::new(
                "margin needs at least one model (it was given none); list the models in the run config",
            ));
        }
        if classes < 2 {
            return Err(PluginError::new(format!(
                "margin needs at least two classes (p_k minus the best other class), the models have {classes}"
            )));
        }
        Ok(Self { classes, reduce })
    }

    fn score(&self, outputs: &ModelOutputs<'_>, scores: &mut [f32]) -> Result<(), PluginError> {
        let classes = self.classes;
        let models = outputs.kinds.len();
        let mut probs = vec![0.0f32; classes];
        // gaps[m * classes + k]: model m's margin of class k, for the current image.
        let mut gaps = vec![0.0f64; models * classes];
        let mut column = vec![0.0f64; models];
        for (image, row_out) in scores.chunks_exact_mut(classes).enumerate() {
            for model in 0..models {
                outputs.probabilities(model, image, &mut probs)?;
                margins(&probs, &mut gaps[model * classes..(model + 1) * classes]);
            }
            for (class, s) in row_out.iter_mut().enumerate() {
                for (model, c) in column.iter_mut().enumerate() {
                    *c = gaps[model * classes + class];
                }
                *s = apply(self.reduce, &column);
            }
        }
        Ok(())
    }
}

export_fitness!(Margin, name = "margin", version = env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    const P: OutputKind = OutputKind::Probabilities;
    const L: OutputKind = OutputKind::Logits;

    use pareidolia_fitness_reduce::testing;

    fn margin(params: &str, classes: usize, kinds: &[OutputKind]) -> Margin {
        testing::fitness(params, classes, kinds)
    }

    fn refusal(params: &str, classes: usize, kinds: &[OutputKind]) -> String {
        testing::refusal::<Margin>(params, classes, kinds)
    }

    fn score(f: &Margin, kinds: &[OutputKind], data: &[f32], batch: usize) -> Vec<f32> {
        testing::score(f, kinds, data, batch)
    }

    fn with(reduce: &str, kinds: &[OutputKind], data: &[f32], batch: usize) -> Vec<f32> {
        testing::with::<Margin>(reduce, kinds, data, batch)
    }

    #[test]
    fn one_model_gives_the_gap_to_the_best_other_class() {
        // Top-1 gets p1 - p2; every other class gets p - p1.
        let s = with("min", &[P], &[0.125, 0.625, 0.25], 1);
        assert_eq!(s, [-0.5, 0.375, -0.375]);
        // A certain image: +1 for its class, -1 for the others.
        assert_eq!(with("mean", &[P], &[0.0, 1.0, 0.0], 1), [-1.0, 1.0, -1.0]);
        // A tie at the top gives both tied classes 0.
        assert_eq!(
            with("min", &[P], &[0.375, 0.375, 0.25], 1),
            [0.0, 0.0, -0.125]
        );
        // Every reduce is the identity for one model.
        for reduce in ["min", "mean", "geometric"] {
            assert_eq!(
                with(reduce, &[P], &[0.125, 0.625, 0.25], 1),
                [-0.5, 0.375, -0.375],
                "{reduce}"
            );
        }
    }

    #[test]
    fn logits_go_through_softmax() {
        // [0, 0] -> [0.5, 0.5]: margins 0; [1000, -1000] -> [1, 0]: margins 1 and -1.
        assert_eq!(
            with("min", &[L], &[0.0, 0.0, 1000.0, -1000.0], 2),
            [0.0, 0.0, 1.0, -1.0]
        );
        // Against a softmax done here in f64.
        let logits = [1.0f32, 2.0, 3.0];
        let e: Vec<f64> = logits.iter().map(|&l| (l as f64).exp()).collect();
        let sum: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|v| v / sum).collect();
        let want = [p[0] - p[2], p[1] - p[2], p[2] - p[1]];
        let got = with("min", &[L], &logits, 1);
        for (got, want) in got.iter().zip(want) {
            assert!((*got as f64 - want).abs() < 1e-7, "{got} vs {want}");
        }
    }

    #[test]
    fn several_models_reduce_their_margins() {
        // Model 0 (probabilities) [0.75, 0.25] -> margins [0.5, -0.5];
        // model 1 (logits) [0, 0] -> [0.5, 0.5] -> margins [0, 0].
        let kinds = [P, L];
        let data = [0.75, 0.25, 0.0, 0.0];
        assert_eq!(with("min", &kinds, &data, 1), [0.0, -0.5]);
        assert_eq!(with("mean", &kinds, &data, 1), [0.25, -0.25]);
        // 2 * sqrt((1.5 / 2) * (1 / 2)) - 1 and 2 * sqrt((0.5 / 2) * (1 / 2)) - 1.
        let g = with("geometric", &kinds, &data, 1);
        let want = [2.0 * 0.375f64.sqrt() - 1.0, 2.0 * 0.125f64.sqrt() - 1.0];
        for (got, want) in g.iter().zip(want) {
            assert!((*got as f64 - want).abs() < 1e-7, "{g:?}");
        }
        assert!(g[0] > 0.0 && g[0] < 0.25, "between min and mean: {g:?}");
        // A margin of -1 in any model gives -1.
        let data = [1.0, 0.0, 0.0, 1.0];
        assert_eq!(with("geometric", &[P, P], &data, 1), [-1.0, -1.0]);
    }

    #[test]
    fn min_is_the_default_and_means_top1_everywhere() {
        let f = margin("{}", 2, &[P, P, P]);
        assert_eq!(f.reduce(), Reduce::Min);
        // 3 models x 2 images x 2 classes. Image 0: class 0 is top-1 for every model.
        // Image 1: models disagree, so no class has a positive min margin.
        let data = [
            0.75, 0.25, 0.25, 0.75, // model 0: image 0, image 1
            0.625, 0.375, 0.75, 0.25, // model 1
            0.875, 0.125, 0.5, 0.5, // model 2
        ];
        let s = score(&f, &[P, P, P], &data, 2);
        assert_eq!(s, [0.25, -0.75, -0.5, -0.5]);
    }

    #[test]
    fn refuses_bad_parameters_naming_the_key_and_the_values() {
        let err = refusal(r#"{"reduce":"median"}"#, 3, &[P, P]);
        assert!(
            err.contains("`reduce`")
                && err.contains(r#""min", "mean", "geometric""#)
                && err.contains(r#"got "median""#),
            "{err}"
        );
        let err = refusal(r#"{"reduce":["min"]}"#, 3, &[P]);
        assert!(
            err.contains("`reduce`") && err.contains("sequence"),
            "{err}"
        );
        let err = refusal(r#"{"reduce":"min","temperature":2}"#, 3, &[P]);
        assert!(
            err.contains("unknown field `temperature`") && err.contains("`reduce`"),
            "{err}"
        );
    }

    #[test]
    fn refuses_no_models_and_too_few_classes() {
        let err = refusal("{}", 3, &[]);
        assert!(err.contains("at least one model"), "{err}");
        let err = refusal("{}", 1, &[P]);
        assert!(
            err.contains("at least two classes") && err.contains("have 1"),
            "{err}"
        );
    }

    #[test]
    fn refuses_non_finite_outputs() {
        let f = margin("{}", 2, &[L]);
        let outputs = ModelOutputs {
            data: &[f32::NAN, 0.0],
            batch: 1,
            classes: 2,
            kinds: &[L],
        };
        let err = f.score(&outputs, &mut [0.0; 2]).unwrap_err();
        assert!(err.message().contains("non-finite"), "{err}");
    }
}
