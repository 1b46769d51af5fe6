//! Choosing a backend by name through [`BackendChoice`]: `tract`, `ort-cpu` and `cuda` (ONNX
//! Runtime), or `auto` (the default), which takes the first of CUDA, ONNX Runtime on the CPU
//! and tract that works here and logs why it passed over the others. Unlike tract's own
//! `gpu-or-cpu`, the reason for every refusal is logged and kept with the prepared model
//! ([`PreparedModel::selection`]: a run's summary, `/status` and checkpoints record it).

use crate::{
    Backend, BackendChoice, EvalError, Model, OrtBackend, OrtOptions, PreparedModel, TractBackend,
};

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
                    // Info, not a warning: `auto` is the default, and on most machines CUDA
                    // (or ONNX Runtime) is missing by design; the reason is also kept in the
                    // selection note the run records.
                    tracing::info!(
                        model = model.name(),
                        refused = %choice,
                        reason = %e,
                        "backend auto: {choice} refused"
                    );
                    // The reason without the advice meant for someone who asked for `cuda`
                    // by name (to choose `auto`, which is what is running).
                    let why = match &e {
                        EvalError::CudaUnavailable { reason, tried, .. } => {
                            format!("{reason}; tried {tried}")
                        }
                        other => other.to_string(),
                    };
                    refused.push((choice.as_str(), why));
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
        assert_eq!(BackendChoice::default(), BackendChoice::Auto);
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
