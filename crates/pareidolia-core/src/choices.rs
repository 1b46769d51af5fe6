//! The closed sets of names that configs, manifests, checkpoints and the command line choose
//! from: the inference backend, the view, cuDNN's algorithm search and a model's output kind.
//! Each is one enum with one list of names, used by serde (configs, manifests, checkpoints),
//! `FromStr` (the command line) and `Display`, so a bad value is refused with the same
//! message everywhere, naming every valid value. `pareidolia-eval` re-exports them and maps
//! them onto its backends; nothing else spells the names.

use std::fmt;
use std::str::FromStr;

/// A name that is not one of a choice's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`; choose one of: {allowed}")]
pub struct UnknownChoice {
    /// What was being chosen, and the config key that chooses it.
    pub what: &'static str,
    /// The value given.
    pub value: String,
    /// Every valid value, comma-separated.
    pub allowed: String,
}

/// What every choice enum offers generically (for command-line parsers and the like).
pub trait Choice: FromStr<Err = UnknownChoice> + Copy + fmt::Display + 'static {
    /// Every value's name, in declaration order.
    const NAMES: &'static [&'static str];
}

/// Defines a choice enum: variants with their names, `ALL`, `NAMES`, `as_str`, `FromStr`,
/// `Display` and serde as the name.
macro_rules! choice {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every value's name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];
            /// What is chosen, as error messages name it.
            pub const WHAT: &'static str = $what;

            /// The name configs and the command line use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl Choice for $name {
            const NAMES: &'static [&'static str] = &[$($text),+];
        }

        impl FromStr for $name {
            type Err = UnknownChoice;
            fn from_str(s: &str) -> Result<Self, UnknownChoice> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|c| c.as_str() == s)
                    .ok_or_else(|| UnknownChoice {
                        what: $what,
                        value: s.to_owned(),
                        allowed: Self::NAMES.join(", "),
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

choice! {
    /// The inference backend, by name (`model.backend`, `--backend`).
    #[derive(Default)]
    BackendChoice, "backend (model.backend, --backend)" {
        /// The first that works here of `cuda`, `ort-cpu` and `tract`; the log says which was
        /// chosen, on which device, and why the ones before it were refused. The default: the
        /// fastest correct path on the machine.
        #[default]
        Auto = "auto",
        /// ONNX Runtime's CUDA execution provider; fails (never falls back) when CUDA cannot
        /// be used.
        Cuda = "cuda",
        /// ONNX Runtime on the CPU.
        OrtCpu = "ort-cpu",
        /// tract: pure Rust, on CPU, always available, bit-reproducible.
        Tract = "tract",
    }
}

choice! {
    /// How a canvas is shown to the model (`model.view`, `--view`).
    #[derive(Default)]
    View, "view (model.view, --view)" {
        /// The centre crop (the whole image when the canvas is the model's input size).
        #[default]
        Center = "center",
        /// The mean softmax over the four corner crops, the centre crop and their mirrors.
        TenCrop = "ten-crop",
    }
}

choice! {
    /// What a gradient search maximises for its target class (`search.objective`): the
    /// differentiable evaluator's objective.
    #[derive(Default)]
    Objective, "objective (search.objective)" {
        /// The softmax probability of the class (the paper's released ascent code).
        #[default]
        Probability = "probability",
        /// Its natural logarithm (does not vanish as the probability saturates).
        LogProbability = "log-probability",
        /// The class's logit (the input of the final softmax).
        Logit = "logit",
    }
}

impl View {
    /// Model inputs per canvas image.
    pub fn crops(self) -> usize {
        match self {
            View::Center => 1,
            View::TenCrop => 10,
        }
    }
}

choice! {
    /// How cuDNN picks convolution algorithms (`model.cuda.conv_algorithm_search`).
    ConvSearch, "cuDNN algorithm search (model.cuda.conv_algorithm_search)" {
        /// Benchmark every algorithm once per shape (slow first batch, fastest after).
        Exhaustive = "exhaustive",
        /// cuDNN's heuristics.
        Heuristic = "heuristic",
        /// cuDNN's default algorithm.
        Default = "default",
    }
}

choice! {
    /// What a model's output vector holds (a manifest's `output`).
    OutputKind, "model output (output)" {
        /// Raw logits.
        Logits = "logits",
        /// Softmax probabilities.
        Probabilities = "probabilities",
    }
}

choice! {
    /// How a run searches (`search.kind`).
    #[derive(Default)]
    SearchKind, "search (search.kind)" {
        /// MAP-Elites with an encoding plugin: evolution, the paper's main method.
        #[default]
        MapElites = "map-elites",
        /// Gradient ascent on the pixels, one image per class (the paper's second method).
        GradientAscent = "gradient-ascent",
    }
}

choice! {
    /// Which class a child's gradient steps push toward (`search.gradient.target`), in
    /// gradient-informed MAP-Elites.
    #[derive(Default)]
    SteerTarget, "gradient target (search.gradient.target)" {
        /// The class whose cell the child's parent was drawn from (each child of a pair has
        /// its own parent): the child improves on a champion where it already leads.
        #[default]
        Parent = "parent",
        /// A class drawn uniformly from the archive's classes, from the child's own seed.
        Uniform = "uniform",
    }
}

choice! {
    /// How gradient-ascent images start (`search.start`).
    #[derive(Default)]
    AscentStart, "gradient-ascent start (search.start)" {
        /// The mean image exactly.
        Zero = "zero",
        /// Uniform noise over the whole pixel range.
        Randu = "randu",
        /// The mean plus unit Gaussian noise (the released code's default).
        #[default]
        MeanPlus = "mean_plus",
    }
}

choice! {
    /// The gradient-ascent parameters a run starts from (`search.preset`); keys set beside it
    /// override single values.
    #[derive(Default)]
    AscentPreset, "gradient-ascent preset (search.preset)" {
        /// The released code's command-line defaults: decay 0.01, max_lr 1e12, early_prog
        /// 0.03, late_prog_mult 0.1, no blur or pruning.
        #[default]
        Released = "released",
        /// The released code's "seed -1", no regularisation: decay 0, early_prog 0.02,
        /// late_prog_mult 0.1 (it ran 500 steps: `generations = 500`).
        Unregularised = "unregularised",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_fromstr_display_and_serde() {
        for &b in BackendChoice::ALL {
            assert_eq!(b.as_str().parse::<BackendChoice>(), Ok(b));
            assert_eq!(b.to_string(), b.as_str());
            let json = serde_json::to_string(&b).unwrap();
            assert_eq!(json, format!("\"{b}\""));
            assert_eq!(serde_json::from_str::<BackendChoice>(&json).unwrap(), b);
        }
        assert_eq!(View::NAMES, ["center", "ten-crop"]);
        assert_eq!("ten-crop".parse::<View>(), Ok(View::TenCrop));
        assert_eq!(View::TenCrop.crops(), 10);
    }

    #[test]
    fn a_bad_name_is_refused_with_every_valid_one() {
        let e = "gpu".parse::<BackendChoice>().unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown backend (model.backend, --backend) `gpu`; choose one of: auto, cuda, ort-cpu, tract"
        );
        let e = serde_json::from_str::<ConvSearch>("\"fast\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.cuda.conv_algorithm_search")
                && e.contains("exhaustive, heuristic, default"),
            "{e}"
        );
    }
}
