//! `CppnParams`: the run config's `[encoding.params]` table, with the released code's values
//! as defaults (PAPER.md sections 3 and 9), and its validation.

use pareidolia_plugin::PluginError;
use pareidolia_plugin::color::ColorSpace;
use serde::Deserialize;

use crate::activation::Activation;

/// What the x and y inputs of the network are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coordinates {
    /// The raw column and row index, 0..W-1 and 0..H-1 (the released code; its figures came
    /// from it).
    Pixel,
    /// x / (W-1) and y / (H-1), in [0, 1] (what the paper's text suggests).
    Unit,
}

/// Parameters of the CPPN encoding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CppnParams {
    /// The x and y inputs: `"pixel"` (default) or `"unit"`. The d input is always computed
    /// from coordinates normalised to [-1, 1].
    pub coordinates: Coordinates,
    /// How the three outputs of a colour canvas are read (`hsv`, `hls-opencv`, `rgb`).
    pub color_space: ColorSpace,
    /// The activation set new and re-drawn nodes pick from, uniformly over the list (a name
    /// listed twice is drawn twice as often).
    pub activations: Vec<String>,
    /// Per-edge probability of polynomial mutation of the weight gene.
    pub weight_mutation_rate: f64,
    /// Distribution index of the polynomial mutation.
    pub eta_m: f64,
    /// Per-node probability of re-drawing the activation (inputs and outputs included).
    pub activation_mutation_rate: f64,
    /// Probability, per child, of adding one feed-forward connection.
    pub add_connection_rate: f64,
    /// Probability, per child, of deleting one random connection.
    pub delete_connection_rate: f64,
    /// Probability, per child, of splitting one random connection with a new node.
    pub add_node_rate: f64,
    /// Probability, per child, of deleting one random hidden node with its connections.
    pub delete_node_rate: f64,
}

impl Default for CppnParams {
    fn default() -> Self {
        Self {
            coordinates: Coordinates::Pixel,
            color_space: ColorSpace::Hsv,
            activations: Activation::ALL
                .iter()
                .map(|a| a.name().to_owned())
                .collect(),
            weight_mutation_rate: 0.1,
            eta_m: 15.0,
            activation_mutation_rate: 0.1,
            add_connection_rate: 0.5,
            delete_connection_rate: 0.3,
            add_node_rate: 0.5,
            delete_node_rate: 0.2,
        }
    }
}

impl CppnParams {
    /// Checks every value and returns the activation set.
    pub fn validate(&self) -> Result<Vec<Activation>, PluginError> {
        for (name, v) in [
            ("weight_mutation_rate", self.weight_mutation_rate),
            ("activation_mutation_rate", self.activation_mutation_rate),
            ("add_connection_rate", self.add_connection_rate),
            ("delete_connection_rate", self.delete_connection_rate),
            ("add_node_rate", self.add_node_rate),
            ("delete_node_rate", self.delete_node_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(PluginError::new(format!(
                    "parameter `{name}` must lie in [0, 1], got {v}"
                )));
            }
        }
        if !(self.eta_m.is_finite() && self.eta_m >= 0.0) {
            return Err(PluginError::new(format!(
                "parameter `eta_m` must be a finite number >= 0, got {}",
                self.eta_m
            )));
        }
        if self.activations.is_empty() {
            return Err(PluginError::new(
                "parameter `activations` is empty; list at least one of sine, sigmoid, gaussian, linear",
            ));
        }
        self.activations
            .iter()
            .map(|name| {
                Activation::from_name(name).ok_or_else(|| {
                    PluginError::new(format!(
                        "parameter `activations` names unknown activation `{name}`; \
                         known: sine, sigmoid, gaussian, linear"
                    ))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pareidolia_plugin::Params;

    fn parse(json: &str) -> Result<Vec<Activation>, PluginError> {
        Params::new(json).parse::<CppnParams>()?.validate()
    }

    #[test]
    fn defaults_are_the_released_codes() {
        let p = CppnParams::default();
        assert_eq!(p.coordinates, Coordinates::Pixel);
        assert_eq!(p.color_space, ColorSpace::Hsv);
        assert_eq!(p.validate().unwrap(), Activation::ALL.to_vec());
        assert_eq!(
            [
                p.weight_mutation_rate,
                p.eta_m,
                p.activation_mutation_rate,
                p.add_connection_rate,
                p.delete_connection_rate,
                p.add_node_rate,
                p.delete_node_rate
            ],
            [0.1, 15.0, 0.1, 0.5, 0.3, 0.5, 0.2]
        );
        let empty: CppnParams = Params::new("").parse().unwrap();
        assert_eq!(empty.activations.len(), 4);
    }

    #[test]
    fn options_parse() {
        let p: CppnParams = Params::new(
            r#"{"coordinates": "unit", "color_space": "hls-opencv", "activations": ["linear", "sine"]}"#,
        )
        .parse()
        .unwrap();
        assert_eq!(p.coordinates, Coordinates::Unit);
        assert_eq!(p.color_space, ColorSpace::HlsOpencv);
        assert_eq!(
            p.validate().unwrap(),
            vec![Activation::Linear, Activation::Sine]
        );
    }

    #[test]
    fn bad_values_name_their_parameter() {
        for (json, name) in [
            (r#"{"weight_mutation_rate": 1.5}"#, "weight_mutation_rate"),
            (
                r#"{"activation_mutation_rate": -0.1}"#,
                "activation_mutation_rate",
            ),
            (r#"{"add_connection_rate": 2}"#, "add_connection_rate"),
            (r#"{"delete_connection_rate": 7}"#, "delete_connection_rate"),
            (r#"{"add_node_rate": -1}"#, "add_node_rate"),
            (r#"{"delete_node_rate": 1.01}"#, "delete_node_rate"),
            (r#"{"eta_m": -1}"#, "eta_m"),
            (r#"{"activations": []}"#, "activations"),
            (r#"{"activations": ["sine", "tanh"]}"#, "tanh"),
            (r#"{"coordinates": "polar"}"#, "polar"),
            (r#"{"color_space": "lab"}"#, "lab"),
            (r#"{"mutation_rate": 0.1}"#, "mutation_rate"),
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.message().contains(name), "{json}: {e}");
        }
    }
}
