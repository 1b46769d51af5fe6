//! The one error type a plugin returns: a message for the host's log.

use std::fmt;

/// An error a plugin reports to the host. The message should say what was wrong and what to
/// do, e.g. "parameter `eta_m` must be positive, got -1".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    message: String,
    unsupported: bool,
}

impl PluginError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unsupported: false,
        }
    }

    /// The error of an optional operation the plugin does not offer (what the [`crate::Encoding`]
    /// defaults return); the host reports it as "not offered", not as a failed call. A plugin
    /// that offers an operation only for some parameters (say, one colour space) returns it
    /// for the others, with a message saying why.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unsupported: true,
        }
    }

    /// Whether this is an [`PluginError::unsupported`] error.
    pub fn is_unsupported(&self) -> bool {
        self.unsupported
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<String> for PluginError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for PluginError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}
