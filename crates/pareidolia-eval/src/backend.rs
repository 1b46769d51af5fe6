//! The backend seam: a [`Backend`] prepares a [`Model`] into a [`PreparedModel`] that runs
//! batches of 8-bit images. Backends are chosen by name through [`BackendChoice`].

use std::fmt;
use std::str::FromStr;

use crate::{EvalError, Model, TractBackend};

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
    /// The backend's name.
    fn backend(&self) -> &'static str;
    /// The device it runs on, for logs and status (e.g. `cpu`).
    fn device(&self) -> String;
    /// Classes per output vector.
    fn classes(&self) -> usize;
    /// Runs `batch` images (`batch * height * width * channels` bytes, row-major, channels
    /// interleaved, gray or RGB) and returns `batch * classes` raw outputs.
    fn infer(&mut self, images: &[u8], batch: usize) -> Result<Vec<f32>, EvalError>;

    /// Does the one-off work for a batch size (plan compilation, allocations) before a run,
    /// so it is not counted as inference time. The default runs one batch of black images.
    fn warm_up(&mut self, batch: usize, image_len: usize) -> Result<(), EvalError> {
        self.infer(&vec![0u8; batch * image_len], batch).map(|_| ())
    }
}

/// A backend by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    /// tract: pure Rust, on CPU, always available, bit-reproducible.
    #[default]
    Tract,
}

impl FromStr for BackendChoice {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self, EvalError> {
        match s {
            "tract" => Ok(BackendChoice::Tract),
            other => Err(EvalError::UnknownBackend(other.to_owned())),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Tract => "tract",
        })
    }
}

/// The backend for a choice.
pub fn backend_for(choice: BackendChoice) -> Box<dyn Backend> {
    match choice {
        BackendChoice::Tract => Box::new(TractBackend),
    }
}
