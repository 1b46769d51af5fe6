//! The paper's fitness: the classifier's softmax probability of every class, the number
//! MAP-Elites compares cell by cell. Logit outputs go through a numerically stable softmax
//! first; with several models the probabilities are averaged (an ensemble vote), which for
//! one model is exactly the paper's fitness.
#![deny(unsafe_code)]

use pareidolia_plugin::prelude::*;
use serde::Deserialize;

/// This fitness takes no parameters; the empty struct makes unknown keys an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// Softmax confidence per class.
#[derive(Debug)]
pub struct Confidence {
    classes: usize,
}

impl Fitness for Confidence {
    fn new(params: Params<'_>, classes: usize, kinds: &[OutputKind]) -> Result<Self, PluginError> {
        let _: NoParams = params.parse()?;
        if kinds.is_empty() || classes == 0 {
            return Err(PluginError::new(
                "confidence needs at least one model with at least one class",
            ));
        }
        Ok(Self { classes })
    }

    fn score(&self, outputs: &ModelOutputs<'_>, scores: &mut [f32]) -> Result<(), PluginError> {
        let models = outputs.kinds.len();
        let mut probs = vec![0.0f32; self.classes];
        for (image, row_out) in scores.chunks_exact_mut(self.classes).enumerate() {
            row_out.fill(0.0);
            for model in 0..models {
                outputs.probabilities(model, image, &mut probs)?;
                for (s, p) in row_out.iter_mut().zip(&probs) {
                    *s += p / models as f32;
                }
            }
        }
        Ok(())
    }
}

export_fitness!(
    Confidence,
    name = "confidence",
    version = env!("CARGO_PKG_VERSION")
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_become_probabilities() {
        let f = Confidence::new(Params::new("{}"), 3, &[OutputKind::Logits]).unwrap();
        let data = [1.0, 2.0, 3.0, 1000.0, 0.0, -1000.0];
        let outputs = ModelOutputs {
            data: &data,
            batch: 2,
            classes: 3,
            kinds: &[OutputKind::Logits],
        };
        let mut scores = [0.0; 6];
        f.score(&outputs, &mut scores).unwrap();
        let e = [1f64.exp(), 2f64.exp(), 3f64.exp()];
        let s: f64 = e.iter().sum();
        for i in 0..3 {
            assert!((scores[i] as f64 - e[i] / s).abs() < 1e-6);
        }
        assert_eq!(&scores[3..], &[1.0, 0.0, 0.0]);
    }

    #[test]
    fn ensembles_average_probabilities() {
        let kinds = [OutputKind::Probabilities, OutputKind::Probabilities];
        let f = Confidence::new(Params::new(""), 2, &kinds).unwrap();
        let data = [0.2, 0.8, 0.6, 0.4];
        let outputs = ModelOutputs {
            data: &data,
            batch: 1,
            classes: 2,
            kinds: &kinds,
        };
        let mut scores = [0.0; 2];
        f.score(&outputs, &mut scores).unwrap();
        assert!((scores[0] - 0.4).abs() < 1e-6 && (scores[1] - 0.6).abs() < 1e-6);
    }

    #[test]
    fn rejects_parameters_and_nan() {
        assert!(Confidence::new(Params::new(r#"{"x":1}"#), 2, &[OutputKind::Logits]).is_err());
        let f = Confidence::new(Params::new("{}"), 2, &[OutputKind::Logits]).unwrap();
        let data = [f32::NAN, 0.0];
        let outputs = ModelOutputs {
            data: &data,
            batch: 1,
            classes: 2,
            kinds: &[OutputKind::Logits],
        };
        assert!(f.score(&outputs, &mut [0.0; 2]).is_err());
    }
}
