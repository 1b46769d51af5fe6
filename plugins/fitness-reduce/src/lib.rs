//! What the fitness plugins that reduce per-model values over several models share
//! (`plugins/fitness-ensemble`, `plugins/fitness-margin`): the `reduce` parameter, as configs
//! spell it, and helpers for their unit tests. A plain library, not a plugin: each plugin is
//! its own cdylib exporting the one descriptor symbol, so neither can link the other, and
//! both link this. What a reduction computes is each plugin's (probabilities and margins
//! reduce differently).
#![deny(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// How the models' values of one class become one score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduce {
    /// The smallest value: high only if every model agrees.
    #[default]
    Min,
    /// The arithmetic mean.
    Mean,
    /// The geometric mean (each plugin says over what).
    Geometric,
}

/// The `reduce` values as configs spell them.
pub const REDUCE_VALUES: &str = r#""min", "mean", "geometric""#;

impl Reduce {
    /// The value named `name` in a config.
    pub fn from_name(name: &str) -> Option<Reduce> {
        match name {
            "min" => Some(Reduce::Min),
            "mean" => Some(Reduce::Mean),
            "geometric" => Some(Reduce::Geometric),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Reduce {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Reduce;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "`reduce` to be one of {REDUCE_VALUES}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Reduce, E> {
                Reduce::from_name(v).ok_or_else(|| {
                    E::custom(format!(
                        "`reduce` must be one of {REDUCE_VALUES}, got {v:?}"
                    ))
                })
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// Helpers for a fitness plugin's unit tests: create it from JSON parameters and score
/// model outputs through the SDK's [`Fitness`](pareidolia_plugin::Fitness) trait, as the
/// host would.
pub mod testing {
    use pareidolia_plugin::{Fitness, ModelOutputs, OutputKind, Params};

    /// The plugin made from `params` (JSON) for `classes` classes and models of `kinds`;
    /// panics if it refuses.
    pub fn fitness<F: Fitness>(params: &str, classes: usize, kinds: &[OutputKind]) -> F {
        match F::new(Params::new(params), classes, kinds) {
            Ok(f) => f,
            Err(e) => panic!("refused {params}: {}", e.message()),
        }
    }

    /// Why the plugin refuses `params` for `classes` classes and models of `kinds`; panics if
    /// it accepts them.
    pub fn refusal<F: Fitness>(params: &str, classes: usize, kinds: &[OutputKind]) -> String {
        match F::new(Params::new(params), classes, kinds) {
            Ok(_) => panic!("accepted {params}"),
            Err(e) => e.message().to_owned(),
        }
    }

    /// Scores `batch` images; `data` is model-major as the host passes it.
    pub fn score<F: Fitness>(f: &F, kinds: &[OutputKind], data: &[f32], batch: usize) -> Vec<f32> {
        let classes = data.len() / (kinds.len() * batch);
        let outputs = ModelOutputs {
            data,
            batch,
            classes,
            kinds,
        };
        let mut scores = vec![f32::NAN; batch * classes];
        if let Err(e) = f.score(&outputs, &mut scores) {
            panic!("scoring failed: {}", e.message());
        }
        scores
    }

    /// Scores `batch` images with the plugin made with `reduce`.
    pub fn with<F: Fitness>(
        reduce: &str,
        kinds: &[OutputKind],
        data: &[f32],
        batch: usize,
    ) -> Vec<f32> {
        let classes = data.len() / (kinds.len() * batch);
        let f = fitness::<F>(&format!(r#"{{"reduce":"{reduce}"}}"#), classes, kinds);
        score(&f, kinds, data, batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct P {
        reduce: Reduce,
    }

    #[test]
    fn reduce_is_spelled_as_in_configs_and_others_are_refused_with_the_choices() {
        for (name, r) in [
            ("min", Reduce::Min),
            ("mean", Reduce::Mean),
            ("geometric", Reduce::Geometric),
        ] {
            assert_eq!(Reduce::from_name(name), Some(r));
        }
        assert_eq!(Reduce::from_name("max"), None);
        assert_eq!(Reduce::default(), Reduce::Min);
        let p: P = serde_json::from_str(r#"{"reduce":"mean"}"#).unwrap();
        assert_eq!(p.reduce, Reduce::Mean);
        let e = serde_json::from_str::<P>(r#"{"reduce":"max"}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"`reduce` must be one of "min", "mean", "geometric", got "max""#),
            "{e}"
        );
    }
}
