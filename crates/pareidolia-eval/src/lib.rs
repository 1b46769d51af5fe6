//! Models and inference: what a classifier is (an ONNX file plus a manifest), how an 8-bit
//! image becomes its input tensor, and the backends that run it.
//!
//! The pipeline has three typed steps, each a distinct type: a [`Manifest`] (parsed, not yet
//! checked against files), a [`Model`] (ONNX bytes, labels and sha256 loaded and verified),
//! and a [`PreparedModel`] (a backend's runnable form). Backends sit behind the [`Backend`]
//! trait and are chosen by name ([`BackendChoice`]): tract is always available and the
//! default; ONNX Runtime ([`OrtBackend`], on the CPU or CUDA) is loaded at run time from a
//! shared library when asked for, and `auto` picks the best that works here.
//!
//! Gradients, training, labelled image sets and ONNX editing live in `pareidolia-grad`,
//! which builds on this crate.
#![deny(missing_docs)]

mod backend;
mod builtin;
mod choice;
mod error;
mod fixed_batch;
mod manifest;
mod model;
mod ort_backend;
mod ort_runtime;
mod output_check;
mod preprocess;
mod simd_state;
mod tract_backend;
mod views;

pub use backend::{Backend, BackendChoice, PreparedModel};
pub use choice::{BackendOptions, backend_for, backend_with};
pub use error::{DatasetProblem, EditProblem, EvalError};
pub use manifest::{ColorOrder, InputSpec, Layout, Manifest, MeanImage, OutputKind, Provenance};
pub use model::{Model, ModelRef, sha256_hex};
pub use ort_backend::{
    ConvSearch, CudaTuning, GraphTensor, OrtBackend, OrtDevice, OrtGraph, OrtOptions,
};
pub use output_check::check_output;
pub use preprocess::Preprocessor;
pub use tract_backend::TractBackend;
pub use views::{View, ViewSpec, ViewedModel, prepare_viewed};
