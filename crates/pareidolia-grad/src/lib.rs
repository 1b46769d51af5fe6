//! Gradients of ONNX classifiers and what is built on them: the reverse-mode evaluator
//! ([`grad`]), SGD training ([`train`]), labelled image sets in IDX ([`TrainingData`]) or in
//! class folders ([`read_held_out`], to measure a model on) and editing an ONNX file's
//! weights and last layer ([`OnnxGraph`]). Inference (manifests,
//! preprocessing, backends) stays in `pareidolia-eval`, which this crate builds on; errors are
//! its [`EvalError`]. Both the gradient builder and the editor read ONNX through one reader
//! (`onnx_read`).
#![deny(missing_docs)]

mod dataset;
pub mod grad;
mod held_out;
mod memory;
mod onnx_edit;
mod onnx_read;
pub mod train;

pub use dataset::{LabelledImages, TrainingData};
pub use held_out::{HeldOut, HeldOutLayout, read_held_out};
pub use memory::keep_freed_memory;
pub use onnx_edit::{ClassifierHead, FloatTensor, HeadKind, OnnxGraph, Widened};
pub use pareidolia_eval::{DatasetProblem, EditProblem, EvalError};
