//! Models and inference: what a classifier is (an ONNX file plus a manifest), how an 8-bit
//! image becomes its input tensor, and the backends that run it.
//!
//! The pipeline has three typed steps, each a distinct type: a [`Manifest`] (parsed, not yet
//! checked against files), a [`Model`] (ONNX bytes, labels and sha256 loaded and verified),
//! and a [`PreparedModel`] (a backend's runnable form). Backends sit behind the [`Backend`]
//! trait and are chosen by name; tract is always available, ONNX Runtime slots in beside it.
#![deny(missing_docs)]

mod backend;
mod builtin;
mod error;
mod manifest;
mod model;
mod preprocess;
mod tract_backend;

pub use backend::{Backend, BackendChoice, PreparedModel, backend_for};
pub use error::EvalError;
pub use manifest::{ColorOrder, InputSpec, Layout, Manifest, OutputKind, Provenance};
pub use model::{Model, ModelRef, sha256_hex};
pub use preprocess::Preprocessor;
pub use tract_backend::TractBackend;
