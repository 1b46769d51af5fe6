//! The backend seam: a [`Backend`] prepares a [`Model`] into a [`PreparedModel`] that runs
//! batches of 8-bit images. Backends are chosen by name through [`BackendChoice`]:
//! `tract` (the default), `ort-cpu` and `cuda` (ONNX Runtime), or `auto`, which takes the
//! first of CUDA, ONNX Runtime on the CPU and tract that works here and logs why it passed
//! over the others. Unlike tract's own `gpu-or-cpu`, the reason for every refusal is logged.

use crate::{EvalError, Model, OrtBackend, OrtOptions, TractBackend};

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

/// Settings shared by the backends; [`backend_for`] uses the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendOptions {
    /// ONNX Runtime settings (`ort-cpu`, `cuda`, and `auto`'s first two tries).
    pub ort: OrtOptions,
}

/// The backend for a choice, with default options.
pub fn backend_for(choice: BackendChoice) -> Box<dyn Backend> {
    backend_with(choice, &BackendOptions::default())
}

/// The backend for a choice, with options. Nothing is loaded until `prepare`, so this cannot
/// fail; an unusable backend fails there with the reason.
pub fn backend_with(choice: BackendChoice, options: &BackendOptions) -> Box<dyn Backend> {
    match choice {
        BackendChoice::Auto => Box::new(AutoBackend {
            options: options.clone(),
        }),
        BackendChoice::Cuda => Box::new(OrtBackend::cuda(
            options.ort.cuda.device,
            options.ort.clone(),
        )),
        BackendChoice::OrtCpu => Box::new(OrtBackend::cpu(options.ort.clone())),
        BackendChoice::Tract => Box::new(TractBackend),
    }
}

/// `auto`: CUDA, else ONNX Runtime on the CPU, else tract.
///
/// The choice is made per `prepare`, on the model at hand: CUDA counts as usable when its
/// provider registers (with `error_on_failure`) and a session on it builds. If every backend
/// fails, tract's error is returned, since tract is the one that is always available.
struct AutoBackend {
    options: BackendOptions,
}

impl Backend for AutoBackend {
    fn name(&self) -> &'static str {
        "auto"
    }

    fn prepare(&self, model: &Model) -> Result<Box<dyn PreparedModel>, EvalError> {
        let mut refused: Vec<(&str, String)> = Vec::new();
        for choice in [BackendChoice::Cuda, BackendChoice::OrtCpu] {
            match backend_with(choice, &self.options).prepare(model) {
                Ok(prepared) => return Ok(chosen(model, prepared, &refused)),
                Err(e) => {
                    tracing::warn!(
                        model = model.name(),
                        refused = %choice,
                        reason = %e,
                        "backend auto: {choice} refused"
                    );
                    refused.push((choice.as_str(), e.to_string()));
                }
            }
        }
        let prepared = TractBackend.prepare(model)?;
        Ok(chosen(model, prepared, &refused))
    }
}

fn chosen(
    model: &Model,
    prepared: Box<dyn PreparedModel>,
    refused: &[(&str, String)],
) -> Box<dyn PreparedModel> {
    let (backend, device) = (prepared.backend(), prepared.device());
    let note = if refused.is_empty() {
        format!("auto chose {backend} on {device}, the first it tried")
    } else {
        let reasons: Vec<String> = refused
            .iter()
            .map(|(name, why)| format!("{name} ({why})"))
            .collect();
        format!(
            "auto chose {backend} on {device} after refusing {}",
            reasons.join("; ")
        )
    };
    if refused.is_empty() {
        tracing::info!(
            model = model.name(),
            backend,
            device,
            "backend auto chose {backend} on {device}"
        );
    } else {
        tracing::info!(
            model = model.name(),
            backend,
            device,
            "backend auto chose {backend} on {device}, falling back after refusing {} (reasons above)",
            refused
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Box::new(Chosen {
        inner: prepared,
        note,
    })
}

/// What `auto` prepared, with the reason it was chosen.
struct Chosen {
    inner: Box<dyn PreparedModel>,
    note: String,
}

impl PreparedModel for Chosen {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn device(&self) -> String {
        self.inner.device()
    }
    fn classes(&self) -> usize {
        self.inner.classes()
    }
    fn infer(&mut self, images: &[u8], batch: usize) -> Result<Vec<f32>, EvalError> {
        self.inner.infer(images, batch)
    }
    fn preferred_batch(&self) -> usize {
        self.inner.preferred_batch()
    }
    fn selection(&self) -> Option<String> {
        Some(self.note.clone())
    }
    fn warm_up(&mut self, batch: usize, image_len: usize) -> Result<(), EvalError> {
        self.inner.warm_up(batch, image_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_str_display_and_serde() {
        for &choice in BackendChoice::ALL {
            let name = choice.to_string();
            assert_eq!(name.parse::<BackendChoice>().unwrap(), choice);
            let toml = toml::to_string(&std::collections::BTreeMap::from([("b", choice)])).unwrap();
            assert_eq!(toml.trim(), format!("b = \"{name}\""));
            let back: std::collections::BTreeMap<String, BackendChoice> =
                toml::from_str(&toml).unwrap();
            assert_eq!(back["b"], choice);
        }
        assert_eq!(BackendChoice::default(), BackendChoice::Tract);
        assert_eq!(
            "ort-cpu".parse::<BackendChoice>().unwrap(),
            BackendChoice::OrtCpu
        );
        let err = "gpu".parse::<BackendChoice>().unwrap_err().to_string();
        assert!(err.contains("auto, cuda, ort-cpu, tract"), "{err}");
    }

    #[test]
    fn backends_are_named_as_chosen() {
        for &choice in BackendChoice::ALL {
            assert_eq!(backend_for(choice).name(), choice.as_str());
        }
    }
}
