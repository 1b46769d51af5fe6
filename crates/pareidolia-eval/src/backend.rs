//! The backend seam: a [`Backend`] prepares a [`Model`] into a [`PreparedModel`] that runs
//! batches of 8-bit images. The backends (`tract_backend`, `ort_backend`) implement these
//! traits; choosing one by name is `choice`'s, so this module uses none of them.

use crate::{EvalError, Model};

/// An inference engine.
pub trait Backend: Send + Sync {
    /// Short name, as configs and logs spell it.
    fn name(&self) -> &'static str;
    /// Compiles a model for this backend; checks the model's input and output shapes against
    /// its manifest.
    fn prepare(&self, model: &Model) -> Result<Box<dyn PreparedModel>, EvalError>;
}

/// A model ready to run on one backend.
pub trait PreparedModel: Send + Sync {
    /// The backend's name (for `auto`, the backend it chose: `cuda`, `ort-cpu` or `tract`).
    fn backend(&self) -> &'static str;
    /// The device it runs on, for logs and status (`cpu`, `cuda:0`).
    fn device(&self) -> String;
    /// Classes per output vector.
    fn classes(&self) -> usize;
    /// Runs `batch` images (`batch * height * width * channels` bytes, row-major, channels
    /// interleaved, gray or RGB) and returns `batch * classes` raw outputs.
    fn infer(&mut self, images: &[u8], batch: usize) -> Result<Vec<f32>, EvalError>;

    /// The batch size this backend runs fastest per image on this model, for configs that
    /// leave `batch_size` to the backend (0). Measured on the development VM and the lab's
    /// H100 (BENCHMARKS.md); a rule of thumb, not a search.
    fn preferred_batch(&self) -> usize {
        32
    }

    /// Why this backend runs the model, when `auto` chose it: the backends it refused first
    /// and their reasons. `None` when the backend was named.
    fn selection(&self) -> Option<String> {
        None
    }

    /// Does the one-off work for a batch size (plan compilation, allocations) before a run,
    /// so it is not counted as inference time. The default runs one batch of black images.
    fn warm_up(&mut self, batch: usize, image_len: usize) -> Result<(), EvalError> {
        self.infer(&vec![0u8; batch * image_len], batch).map(|_| ())
    }
}

/// A backend by name: the config's choice (`pareidolia_core::choices`), re-exported here
/// because this crate maps it onto the backends.
pub use pareidolia_core::BackendChoice;
