//! Errors of this crate: each names the model or file involved and what to do about it.

use std::path::PathBuf;

/// What went wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {cause}")]
    Read {
        /// What the file is (model manifest, ONNX model, labels).
        what: &'static str,
        /// Where we looked.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
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
    /// A name that is not one of a choice's values (backend, view, ...).
    #[error(transparent)]
    UnknownChoice(#[from] pareidolia_core::UnknownChoice),
    /// No ONNX Runtime shared library was found where we looked.
    #[error(
        "the ONNX Runtime library (libonnxruntime.so*) was not found; looked in: {looked}. \
         Install it with `python3 -m pip install onnxruntime==1.24.4` (`onnxruntime-gpu` for CUDA), \
         or set ORT_DYLIB_PATH to the library file, or choose the `tract` backend"
    )]
    OrtNotFound {
        /// Every place searched, in order, with what was (not) there.
        looked: String,
    },
    /// An ONNX Runtime library was found but could not be loaded or initialised.
    #[error("cannot use the ONNX Runtime library {path}: {message}")]
    OrtLibrary {
        /// The library file.
        path: PathBuf,
        /// What failed (wrong version, not a shared library, ...).
        message: String,
    },
    /// The `cuda` backend was asked for and CUDA cannot be used here.
    #[error(
        "the `cuda` backend cannot run model {model}: {reason}. Tried: {tried}. \
         Choose `auto` to fall back to the CPU, or `ort-cpu` or `tract`"
    )]
    CudaUnavailable {
        /// Model name.
        model: String,
        /// What was tried: which library and execution provider, on which device.
        tried: String,
        /// Why it failed: no library, a CPU-only build, no GPU, provider or session error.
        reason: String,
    },
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
    /// The differentiable evaluator cannot take a node of the model's graph.
    #[error(
        "model {model}: node `{node}` ({op}) cannot be differentiated: {reason}. \
         Gradient searches need a graph of supported ops; evolution (the other backends) can still run this model"
    )]
    NotDifferentiable {
        /// Model name.
        model: String,
        /// The node's name (its first output's where it has none).
        node: String,
        /// The node's op type.
        op: String,
        /// What is not supported.
        reason: String,
    },
    /// Every image of a batch has an exactly zero gradient, so a gradient step cannot move.
    #[error(
        "model {model}: the {objective} gradient is exactly zero for all {batch} images of the batch \
         (objective values {values:?}): the objective is saturated (probability 1 in floating point) or \
         no unit responds to the inputs (e.g. every ReLU off); start from other images, or choose \
         objective `log-probability` or `logit`, which do not saturate"
    )]
    ZeroGradient {
        /// Model name.
        model: String,
        /// Images in the batch.
        batch: usize,
        /// The objective.
        objective: pareidolia_core::Objective,
        /// Its value per image.
        values: Vec<f64>,
    },
    /// An image does not fit the model's input.
    #[error("{0}")]
    BadInput(String),
    /// A labelled image set (IDX files) that cannot be used: damaged, inconsistent, or not
    /// fit for the model.
    #[error("training data {path} {problem}")]
    Dataset {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong with it.
        problem: crate::DatasetProblem,
    },
    /// An ONNX file that cannot be edited as asked (weights replaced, last layer widened).
    #[error("ONNX model {origin} {problem}")]
    Edit {
        /// The file (or where the bytes came from).
        origin: String,
        /// What stops the edit.
        problem: crate::EditProblem,
    },
}
