//! Choosing where gradients run, by the names the evolution's backends use: `tract` (the
//! pure-Rust evaluator of this crate, which runs wherever tract does), `ort-cpu` and `cuda`
//! (the backward pass as an ONNX graph on ONNX Runtime, [`OrtGradient`]), or `auto`: CUDA,
//! else ONNX Runtime on the CPU, else the evaluator, with the reason for every refusal kept
//! (as the evolution's `auto` does). `cuda` named on a machine without it is refused loudly,
//! never run on the CPU.

use pareidolia_core::BackendChoice;
use pareidolia_eval::{EvalError, Model, OrtBackend, OrtOptions, ViewSpec};

use super::{CpuGradient, DifferentiableModel, GradientBackend, OrtGradient};

/// A differentiable model and how it was chosen.
pub struct ChosenGradient {
    /// The prepared model.
    pub model: Box<dyn DifferentiableModel>,
    /// The backends `auto` passed over before it, with the reasons.
    pub refused: Vec<(BackendChoice, String)>,
}

impl ChosenGradient {
    /// One line for logs and summaries: `ort-cpu (cuda refused: ...)`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} on {}", self.model.backend(), self.model.device());
        for (choice, why) in &self.refused {
            s.push_str(&format!("; {choice} refused: {why}"));
        }
        s
    }
}

/// The gradient backend for a named choice (`auto` is [`prepare_gradient`]'s loop; here it is
/// the evaluator); `threads` is the evaluator's thread count and ONNX Runtime's intra-op
/// threads (0: one per core).
fn gradient_backend(
    choice: BackendChoice,
    ort: &OrtOptions,
    threads: usize,
) -> Box<dyn GradientBackend> {
    let mut options = ort.clone();
    options.intra_threads = threads;
    match choice {
        BackendChoice::Tract => Box::new(CpuGradient { threads }),
        BackendChoice::OrtCpu => Box::new(OrtGradient {
            backend: OrtBackend::cpu(options),
        }),
        BackendChoice::Cuda => Box::new(OrtGradient {
            backend: OrtBackend::cuda(options.cuda.device, options),
        }),
        BackendChoice::Auto => Box::new(CpuGradient { threads }),
    }
}

/// Prepares `model` behind `view` on the gradient backend `choice` (see the module docs).
/// A graph the evaluator cannot differentiate is refused by every choice, naming op and
/// node (`auto` returns the evaluator's own refusal, the last it tries).
pub fn prepare_gradient(
    choice: BackendChoice,
    ort: &OrtOptions,
    threads: usize,
    model: &Model,
    view: ViewSpec,
) -> Result<ChosenGradient, EvalError> {
    if choice != BackendChoice::Auto {
        return Ok(ChosenGradient {
            model: gradient_backend(choice, ort, threads).prepare(model, view)?,
            refused: Vec::new(),
        });
    }
    let mut refused = Vec::new();
    for c in [BackendChoice::Cuda, BackendChoice::OrtCpu] {
        match gradient_backend(c, ort, threads).prepare(model, view) {
            Ok(m) => return Ok(ChosenGradient { model: m, refused }),
            Err(e) => {
                let why = match &e {
                    EvalError::CudaUnavailable { reason, tried, .. } => {
                        format!("{reason}; tried {tried}")
                    }
                    other => other.to_string(),
                };
                tracing::info!(model = model.name(), refused = %c, reason = %why, "gradient backend auto: {c} refused");
                refused.push((c, why));
            }
        }
    }
    Ok(ChosenGradient {
        model: CpuGradient { threads }.prepare(model, view)?,
        refused,
    })
}
