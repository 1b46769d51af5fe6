//! Margin fitness: how far each class stands above the best *other* class. A class scores
//! high only where it is the model's top-1 with nothing close behind; unlike the paper's
//! confidence, a margin cannot be high while a second class is close behind. With several
//! models the per-model margins are reduced into one score per class.
//!
//! Parameters (JSON, from `[fitness.params]`):
//!
//! | key | values | default |
//! |---|---|---|
//! | `form` | `"pairwise"` or `"difference"` | `"pairwise"` |
//! | `reduce` | `"min"`, `"mean"` or `"geometric"` | `"min"` |
//!
//! With `p[m][k]` the probability model `m` of `M` gives class `k` and `r = argmax_{j≠k}
//! p[m][j]` its strongest rival, the per-model margin `g[m][k]` is
//!
//! - `pairwise` (the default): `p[m][k] / (p[m][k] + p[m][r])`, the probability of `k` in a
//!   two-way contest with its rival, i.e. the logistic function of the log-probability gap
//!   `z[k] − z[r]` (`z` the logits, or the logs of given probabilities). Computed from the gap,
//!   not from the probabilities, so it moves however small `p[m][k]` is: an image on which
//!   class `k` has 1e-12 and its rival 0.25 still scores better when `k` reaches 1e-9. In
//!   0..1; 0.5 where `k` ties its rival, 0.9999 where `k` is 9999 times as likely.
//! - `difference`: `p[m][k] − p[m][r]`, the probability gap (plugin version 0.1's only form).
//!   In −1..1. It has almost no signal for a class the model gives ~0: measured on MNIST
//!   (docs/results.md, "A margin fitness"), 6 of 10 classes stall near −0.25 on one image that
//!   spreads the probability over four other classes, where `pairwise` fools every class.
//!
//! The score of class `k` reduces `g[m][k]` over the models:
//!
//! - `min`: `min_m g[m][k]`: high only where class `k` leads its rival for every model;
//! - `mean`: `(1/M) Σ_m g[m][k]`;
//! - `geometric`: the geometric mean, in log space; for `difference`, whose margins range over
//!   −1..1, of `(1 + g) / 2` mapped back, `2 · (Π_m (1 + g[m][k]) / 2)^(1/M) − 1`. A margin
//!   at the bottom of its range (0, or −1) in any model gives that bottom. It lies between
//!   `min` and `mean`.
//!
//! With one model every reduction is the identity and the score is that model's margin.
//! MAP-Elites keeps the highest score per class, so low margins compare like any others.
//! Refused: zero models, and fewer than two classes (there is no other class to compare with).
//!
//! The `reduce` parameter and the test helpers are `pareidolia-fitness-reduce`'s, shared with
//! the other reducing fitness plugin.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub use pareidolia_fitness_reduce::Reduce;
use pareidolia_plugin::prelude::*;
use serde::Deserialize;

/// How a class's standing against its strongest rival becomes a margin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// `p_k / (p_k + p_rival)`, the logistic function of the log-probability gap: 0..1.
    #[default]
    Pairwise,
    /// `p_k − p_rival`: −1..1.
    Difference,
}

impl Form {
    /// The bottom of the form's range: what a margin there makes of a geometric mean.
    fn bottom(self) -> f64 {
        match self {
            Form::Pairwise => 0.0,
            Form::Difference => -1.0,
        }
    }
}

/// Reduces one class's margins, one per model (at least one), of the given form.
pub fn apply(form: Form, reduce: Reduce, margins: &[f64]) -> f32 {
    let n = margins.len() as f64;
    let value = match margins {
        [] => 0.0,
        [g] => *g,
        _ => match reduce {
            Reduce::Min => margins.iter().copied().fold(f64::INFINITY, f64::min),
            Reduce::Mean => margins.iter().sum::<f64>() / n,
            Reduce::Geometric if margins.iter().any(|&g| g <= form.bottom()) => form.bottom(),
            Reduce::Geometric => match form {
                Form::Pairwise => {
                    let log_sum: f64 = margins.iter().map(|g| g.ln()).sum();
                    (log_sum / n).exp()
                }
                Form::Difference => {
                    let log_sum: f64 = margins.iter().map(|&g| ((1.0 + g) / 2.0).ln()).sum();
                    2.0 * (log_sum / n).exp() - 1.0
                }
            },
        },
    };
    value as f32
}

/// The parameters; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MarginParams {
    form: Form,
    reduce: Reduce,
}

/// The index of the largest value and the largest value at any other index.
fn top_two<T: Copy + PartialOrd>(values: &[T], lowest: T) -> (usize, T, T) {
    let (mut first, mut best) = (0, lowest);
    for (k, &v) in values.iter().enumerate() {
        if v > best {
            (first, best) = (k, v);
        }
    }
    let second = values
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != first)
        .map(|(_, &v)| v)
        .fold(lowest, |a, b| if b > a { b } else { a });
    (first, best, second)
}

/// Writes `p[k] − max_{j≠k} p[j]` for every class `k` of one probability vector (at least
/// two classes). Ties at the top give both tied classes a margin of 0.
pub fn margins(probs: &[f32], out: &mut [f64]) {
    let (first, best, second) = top_two(probs, f32::NEG_INFINITY);
    for (k, (o, &p)) in out.iter_mut().zip(probs).enumerate() {
        let other = if k == first { second } else { best };
        *o = p as f64 - other as f64;
    }
}

/// The logistic function, without overflow for either sign.
fn logistic(d: f64) -> f64 {
    if d >= 0.0 {
        1.0 / (1.0 + (-d).exp())
    } else {
        let e = d.exp();
        e / (1.0 + e)
    }
}

/// Writes `σ(z[k] − max_{j≠k} z[j])` for every class `k` of one vector of log-probabilities
/// (or logits: the softmax's shift cancels): `p[k] / (p[k] + p[rival])`. Ties at the top give
/// both tied classes 0.5.
pub fn pairwise_margins(log_probs: &[f64], out: &mut [f64]) {
    let (first, best, second) = top_two(log_probs, f64::NEG_INFINITY);
    for (k, (o, &z)) in out.iter_mut().zip(log_probs).enumerate() {
        let other = if k == first { second } else { best };
        *o = logistic(z - other);
    }
}

/// Per-class confidence gap, reduced over the models.
#[derive(Debug)]
pub struct Margin {
    classes: usize,
    form: Form,
    reduce: Reduce,
}

impl Margin {
    /// The reduction this instance applies.
    pub fn reduce(&self) -> Reduce {
        self.reduce
    }

    /// The form of its margins.
    pub fn form(&self) -> Form {
        self.form
    }
}

impl Fitness for Margin {
    fn new(params: Params<'_>, classes: usize, kinds: &[OutputKind]) -> Result<Self, PluginError> {
        let MarginParams { form, reduce } = params.parse()?;
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
        Ok(Self {
            classes,
            form,
            reduce,
        })
    }

    fn score(&self, outputs: &ModelOutputs<'_>, scores: &mut [f32]) -> Result<(), PluginError> {
        let classes = self.classes;
        let models = outputs.kinds.len();
        let mut probs = vec![0.0f32; classes];
        let mut logs = vec![0.0f64; classes];
        // gaps[m * classes + k]: model m's margin of class k, for the current image.
        let mut gaps = vec![0.0f64; models * classes];
        let mut column = vec![0.0f64; models];
        for (image, row_out) in scores.chunks_exact_mut(classes).enumerate() {
            for model in 0..models {
                // Checks the row (non-finite outputs are refused, naming model and image).
                outputs.probabilities(model, image, &mut probs)?;
                let gap = &mut gaps[model * classes..(model + 1) * classes];
                match self.form {
                    Form::Difference => margins(&probs, gap),
                    Form::Pairwise => {
                        let row = outputs.row(model, image);
                        for (l, &v) in logs.iter_mut().zip(row) {
                            *l = match outputs.kinds[model] {
                                OutputKind::Logits => f64::from(v),
                                // ln 0 would be -inf: the smallest positive f64 instead.
                                OutputKind::Probabilities => {
                                    f64::from(v).max(f64::MIN_POSITIVE).ln()
                                }
                            };
                        }
                        pairwise_margins(&logs, gap);
                    }
                }
            }
            for (class, s) in row_out.iter_mut().enumerate() {
                for (model, c) in column.iter_mut().enumerate() {
                    *c = gaps[model * classes + class];
                }
                *s = apply(self.form, self.reduce, &column);
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

    /// Scores with `form = "difference"` and `reduce`.
    fn with(reduce: &str, kinds: &[OutputKind], data: &[f32], batch: usize) -> Vec<f32> {
        let classes = data.len() / (kinds.len() * batch);
        let params = format!(r#"{{"form":"difference","reduce":"{reduce}"}}"#);
        score(&margin(&params, classes, kinds), kinds, data, batch)
    }

    /// Scores with the default form (pairwise) and `reduce`.
    fn pairwise(reduce: &str, kinds: &[OutputKind], data: &[f32], batch: usize) -> Vec<f32> {
        testing::with::<Margin>(reduce, kinds, data, batch)
    }

    fn close(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!(
                // The inputs are f32: their logs carry relative errors of about 1e-7.
                (f64::from(*g) - w).abs() <= 1e-5 * w.abs().max(1e-30),
                "{got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn pairwise_is_the_share_of_each_class_against_its_strongest_rival() {
        // k / (k + rival): 0.125 / 0.75, 0.625 / 0.875, 0.25 / 0.875.
        let want = [1.0 / 6.0, 0.625 / 0.875, 0.25 / 0.875];
        close(&pairwise("min", &[P], &[0.125, 0.625, 0.25], 1), &want);
        // The same probabilities as logits (softmax of ln p), and shifted: the same margins.
        let logits = [0.125f32.ln(), 0.625f32.ln(), 0.25f32.ln()];
        close(&pairwise("min", &[L], &logits, 1), &want);
        let shifted = logits.map(|l| l + 40.0);
        close(&pairwise("min", &[L], &shifted, 1), &want);
        // A tie at the top: 0.5 each.
        close(
            &pairwise("min", &[P], &[0.375, 0.375, 0.25], 1),
            &[0.5, 0.5, 0.4],
        );
        let f = margin("{}", 2, &[P]);
        assert_eq!((f.form(), f.reduce()), (Form::Pairwise, Reduce::Min));
    }

    /// Issue 30 item 9: the image that stalls `difference` (four classes at 25%, the rest ~0)
    /// still ranks a child that raises an absent class from 1e-12 to 1e-9 higher, by a
    /// thousand times; `difference` sees -0.25 for both.
    #[test]
    fn pairwise_has_signal_where_the_class_is_all_but_absent() {
        let image = |absent: f32| {
            let mut logits = vec![-40.0f32; 10];
            logits[..4].fill(0.0);
            // p(4) = e^absent / (4 + ...) : ln(4e-12) and ln(4e-9) relative to the four.
            logits[4] = absent;
            logits
        };
        let (before, after) = (image((4e-12f32).ln()), image((4e-9f32).ln()));
        let (b, a) = (
            pairwise("min", &[L], &before, 1)[4],
            pairwise("min", &[L], &after, 1)[4],
        );
        assert!(a > b && (a / b - 1000.0).abs() < 1.0, "{b} -> {a}");
        let (db, da) = (
            with("min", &[L], &before, 1)[4],
            with("min", &[L], &after, 1)[4],
        );
        assert_eq!(
            (db, da),
            (-0.25, -0.25),
            "difference cannot tell them apart"
        );
    }

    #[test]
    fn pairwise_margins_reduce_over_models() {
        // Model 0 [0.75, 0.25] -> [0.75, 0.25]; model 1 [0.5, 0.5] -> [0.5, 0.5].
        let kinds = [P, L];
        let data = [0.75, 0.25, 0.0, 0.0];
        close(&pairwise("min", &kinds, &data, 1), &[0.5, 0.25]);
        close(&pairwise("mean", &kinds, &data, 1), &[0.625, 0.375]);
        close(
            &pairwise("geometric", &kinds, &data, 1),
            &[0.375f64.sqrt(), 0.125f64.sqrt()],
        );
        // A probability of 0 in one model gives 0 (a share below what f32 holds).
        let g = pairwise("geometric", &[P, P], &[1.0, 0.0, 0.5, 0.5], 1);
        assert!(g[1] == 0.0 && g[0] > 0.7, "{g:?}");
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
        let f = margin(r#"{"form":"difference"}"#, 2, &[P, P, P]);
        assert_eq!((f.form(), f.reduce()), (Form::Difference, Reduce::Min));
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
