//! Errors of this crate and of `pareidolia-grad` (gradients, training, datasets, ONNX editing),
//! which reports through the same [`EvalError`] so that callers handle one error type: each
//! names the model or file involved and what to do about it.

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
    /// A model whose manifest says `output = "probabilities"` gives values that are not
    /// probabilities (found by [`crate::check_output`] when a command loads it).
    #[error(
        "model {model}: the manifest {manifest} says `output = \"probabilities\"`, but on a {image} image \
         the model gives values from {min} to {max} that sum to {sum}, which are not probabilities; \
         if it outputs scores before softmax, set `output = \"logits\"` in the manifest (softmax is \
         then applied wherever probabilities are shown or scored); see docs/models.md"
    )]
    NotProbabilities {
        /// Model name.
        model: String,
        /// Its manifest (`path/manifest.toml` or `builtin:NAME`).
        manifest: String,
        /// Which test image.
        image: &'static str,
        /// Smallest value.
        min: f32,
        /// Largest value.
        max: f32,
        /// Their sum.
        sum: f64,
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
        problem: DatasetProblem,
    },
    /// An ONNX file that cannot be edited as asked (weights replaced, last layer widened).
    #[error("ONNX model {origin} {problem}")]
    Edit {
        /// The file (or where the bytes came from).
        origin: String,
        /// What stops the edit.
        problem: EditProblem,
    },
}

/// What is wrong with an image set read by `pareidolia-grad` (the file is in [`EvalError::Dataset`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetProblem {
    /// A file the set needs is not in the folder.
    #[error("has no {what}: looked for {looked}")]
    Missing {
        /// `training images`, `held-out labels`, ...
        what: &'static str,
        /// The names tried.
        looked: String,
    },
    /// A gzip stream that does not decompress (cut short or damaged).
    #[error("is a damaged gzip stream ({0}); download or copy it again")]
    Gzip(String),
    /// Not an IDX file: the first bytes are not `00 00 type rank`.
    #[error(
        "is not an IDX file: it starts with {found}, where IDX has two zero bytes, the type \
         (0x08 for unsigned bytes) and the rank"
    )]
    NotIdx {
        /// The first bytes, in hex.
        found: String,
    },
    /// An IDX element type other than unsigned bytes.
    #[error(
        "holds IDX type 0x{0:02x}; only unsigned bytes (0x08) are read, as MNIST and Fashion-MNIST use"
    )]
    ElementType(u8),
    /// The wrong number of dimensions for what the file should hold.
    #[error("has rank {found}; {expected}")]
    Rank {
        /// The file's rank.
        found: u8,
        /// What was expected, in words.
        expected: &'static str,
    },
    /// Fewer data bytes than the header's dimensions promise.
    #[error(
        "is truncated: its header {dims:?} promises {expected} data bytes, the file has {found}"
    )]
    Truncated {
        /// The header's dimensions.
        dims: Vec<u32>,
        /// Bytes the dimensions call for.
        expected: u64,
        /// Bytes present after the header.
        found: u64,
    },
    /// More data bytes than the header's dimensions say (a damaged header or two files joined).
    #[error(
        "has {extra} bytes after the {expected} its header {dims:?} describes; the header is \
         damaged or the file is not one IDX array"
    )]
    TrailingBytes {
        /// The header's dimensions.
        dims: Vec<u32>,
        /// Bytes the dimensions call for.
        expected: u64,
        /// Bytes beyond them.
        extra: u64,
    },
    /// An image file whose images have no pixels, or a channel count other than 1 or 3.
    #[error(
        "holds images of {height}x{width} with {channels} channels; expected at least 1x1 with 1 (gray) or 3 (RGB)"
    )]
    ImageShape {
        /// Rows.
        height: u32,
        /// Columns.
        width: u32,
        /// Channels.
        channels: u32,
    },
    /// No images at all.
    #[error("holds no images")]
    Empty,
    /// Image and label files of different lengths.
    #[error("holds {images} images but its labels file {labels_file} holds {labels} labels")]
    CountMismatch {
        /// Images.
        images: usize,
        /// Labels.
        labels: usize,
        /// The labels file.
        labels_file: PathBuf,
    },
    /// Images of another size than the model's input.
    #[error(
        "holds {found} images but model {model} takes {expected}; resize the set to the \
         model's input or train a model with that input"
    )]
    ImageSize {
        /// The set's `WxHxC`.
        found: String,
        /// The model's `WxHxC`.
        expected: String,
        /// The model.
        model: String,
    },
    /// Held-out images of another size than the training images.
    #[error("holds {found} images but the training images {train} are {expected}")]
    SplitMismatch {
        /// The held-out `WxHxC`.
        found: String,
        /// The training `WxHxC`.
        expected: String,
        /// The training images file.
        train: PathBuf,
    },
    /// A label that is not one of the model's classes.
    #[error(
        "has label {label} at image {index} ({count} such labels in all), but model {model} has \
         {classes} classes (labels 0..={max}); the labels file and the model's labels disagree"
    )]
    LabelOutOfRange {
        /// The first offending label.
        label: u8,
        /// Its position (0-based).
        index: usize,
        /// How many labels are out of range.
        count: usize,
        /// The model's class count.
        classes: usize,
        /// `classes - 1`.
        max: usize,
        /// The model.
        model: String,
    },
    /// Classes of the model with no training image.
    #[error(
        "has no training image of class {classes} of model {model}; every class needs examples \
         to be learnt (a set for fewer classes needs a model with fewer outputs)"
    )]
    EmptyClass {
        /// The empty classes, as `index (label)` text.
        classes: String,
        /// The model.
        model: String,
    },
}

/// What stops an edit by `pareidolia-grad` (the file is in [`EvalError::Edit`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EditProblem {
    /// Not an ONNX protobuf.
    #[error("is not an ONNX model: {0}")]
    Decode(String),
    /// No `Gemm`, `MatMul` + `Add` or `MatMul` makes the classifier's output.
    #[error(
        "has no final Gemm, MatMul + Add or MatMul to widen: its output {output} {found}; \
         widening needs a fully connected last layer whose weight is an initializer"
    )]
    NoHead {
        /// The graph output followed.
        output: String,
        /// What the search met instead.
        found: String,
    },
    /// A head that has the right op but cannot be widened as it stands.
    #[error("cannot widen its last layer {node}: {reason}")]
    Unsupported {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// No initializer of that name.
    #[error("has no initializer named `{name}`; its float initializers are: {available}")]
    UnknownInitializer {
        /// The name asked for.
        name: String,
        /// What exists.
        available: String,
    },
    /// An initializer that is not float32 stored in the file.
    #[error("initializer `{name}` is {kind}; only float32 tensors stored in the file are edited")]
    NotFloat {
        /// The initializer.
        name: String,
        /// Its type or storage.
        kind: String,
    },
    /// Replacement values of another count than the initializer's shape holds.
    #[error(
        "initializer `{name}` has shape {shape:?} ({expected} values) but {found} values were \
         given; a replacement keeps the shape (widen the model first to add a class)"
    )]
    ValueCount {
        /// The initializer.
        name: String,
        /// Its dimensions.
        shape: Vec<i64>,
        /// Values it holds.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A NaN or infinite weight.
    #[error("initializer `{name}` would get the non-finite value {value} at index {index}")]
    NonFinite {
        /// The initializer.
        name: String,
        /// Where.
        index: usize,
        /// The value.
        value: f32,
    },
}
