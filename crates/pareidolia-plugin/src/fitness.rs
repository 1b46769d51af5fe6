//! The safe trait a fitness plugin implements: model outputs in, one score per class out.

use crate::{Params, PluginError};

/// What a model's output vector holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Softmax probabilities.
    Probabilities,
    /// Raw logits; apply softmax to get probabilities.
    Logits,
}

/// The outputs of every model of a run for one batch of images.
#[derive(Debug, Clone, Copy)]
pub struct ModelOutputs<'a> {
    /// `models * batch * classes` values: model-major, then image, then class.
    pub data: &'a [f32],
    /// Images in the batch.
    pub batch: usize,
    /// Classes per output vector.
    pub classes: usize,
    /// Per model: what its outputs are.
    pub kinds: &'a [OutputKind],
}

impl<'a> ModelOutputs<'a> {
    /// The output vector of model `model` for image `image`.
    pub fn row(&self, model: usize, image: usize) -> &'a [f32] {
        let start = (model * self.batch + image) * self.classes;
        &self.data[start..start + self.classes]
    }

    /// Writes model `model`'s class probabilities for image `image` into `out`: the softmax
    /// of its logits, or its probabilities as given. Refuses a non-finite output, naming the
    /// model and the image.
    pub fn probabilities(
        &self,
        model: usize,
        image: usize,
        out: &mut [f32],
    ) -> Result<(), PluginError> {
        let row = self.row(model, image);
        if let Some(bad) = row.iter().find(|v| !v.is_finite()) {
            return Err(PluginError::new(format!(
                "model {model} gave a non-finite output ({bad}) for image {image}"
            )));
        }
        match self.kinds[model] {
            OutputKind::Logits => softmax(row, out),
            OutputKind::Probabilities => out.copy_from_slice(row),
        }
        Ok(())
    }
}

/// A fitness variant: turns classifier outputs into the per-class scores MAP-Elites compares
/// (higher is better). One instance serves a whole run, from several threads.
pub trait Fitness: Send + Sync + Sized + 'static {
    /// Builds the fitness from its parameters for `classes` classes and these models.
    fn new(params: Params<'_>, classes: usize, kinds: &[OutputKind]) -> Result<Self, PluginError>;

    /// Writes `batch * classes` scores (image-major) into `scores`.
    fn score(&self, outputs: &ModelOutputs<'_>, scores: &mut [f32]) -> Result<(), PluginError>;
}

/// Writes the softmax of `logits` into `out` (numerically stable; accumulates in f64).
pub fn softmax(logits: &[f32], out: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for (o, &l) in out.iter_mut().zip(logits) {
        let e = ((l - max) as f64).exp();
        *o = e as f32;
        sum += e;
    }
    for o in out.iter_mut() {
        *o = (*o as f64 / sum) as f32;
    }
}
