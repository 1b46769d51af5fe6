//! Plugin parameters: the JSON the host made from the run's TOML config.

use serde::de::DeserializeOwned;

use crate::PluginError;

/// A plugin's parameters as JSON text. Plugins deserialize them into their own struct
/// (with `#[serde(deny_unknown_fields, default)]`) and validate the values.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    json: &'a str,
}

impl<'a> Params<'a> {
    /// Wraps JSON text; the host passes `{}` when the config sets nothing.
    pub fn new(json: &'a str) -> Self {
        Self { json }
    }

    /// The raw JSON text.
    pub fn json(&self) -> &'a str {
        self.json
    }

    /// Deserializes the parameters; an empty text counts as `{}`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        let json = if self.json.trim().is_empty() {
            "{}"
        } else {
            self.json
        };
        serde_json::from_str(json).map_err(|e| PluginError::new(format!("invalid parameters: {e}")))
    }
}
