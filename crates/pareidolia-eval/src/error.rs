//! Errors of this crate: each names the model or file involved and what to do about it.

use std::path::PathBuf;

/// What went wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What the file is (model manifest, ONNX model, labels).
        what: &'static str,
        /// Where we looked.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is not valid TOML or has unknown or missing keys.
    #[error("invalid model manifest {path}: {message}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The ONNX file's hash differs from the manifest's `sha256`.
    #[error(
        "model file {path} has sha256 {actual} but its manifest expects {expected}; \
         the file was changed or replaced: restore it, or update `sha256` in the manifest"
    )]
    Checksum {
        /// The ONNX file.
        path: PathBuf,
        /// From the manifest.
        expected: String,
        /// Of the file.
        actual: String,
    },
    /// The file is not a loadable ONNX model.
    #[error("{path} is not a usable ONNX model ({backend}): {message}")]
    NotOnnx {
        /// The ONNX file.
        path: PathBuf,
        /// The backend that tried.
        backend: &'static str,
        /// The backend's error, with its causes.
        message: String,
    },
    /// The model's input or output does not match its manifest.
    #[error("model {model}: {message}")]
    ShapeMismatch {
        /// Model name.
        model: String,
        /// Expected versus found.
        message: String,
    },
    /// No model of that name ships with the binary.
    #[error(
        "no built-in model named `{name}`; built-in models: {available}. Give a path to a manifest.toml instead"
    )]
    UnknownBuiltin {
        /// The requested name.
        name: String,
        /// What exists.
        available: String,
    },
    /// Unknown backend name.
    #[error("unknown backend `{0}`; choose one of: tract")]
    UnknownBackend(String),
    /// Inference failed.
    #[error("inference with {backend} on model {model} failed: {message}")]
    Inference {
        /// The backend.
        backend: &'static str,
        /// Model name.
        model: String,
        /// The backend's error.
        message: String,
    },
    /// An image does not fit the model's input.
    #[error("{0}")]
    BadInput(String),
}
