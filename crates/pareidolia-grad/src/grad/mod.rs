//! Exact input gradients of the shipped ONNX classifiers, for gradient-ascent searches (and,
//! through [`Network`], weight gradients for training).
//!
//! The route: none of the inference backends computes a gradient (tract and ONNX Runtime only
//! infer; candle 0.11's max-pool backward is wrong and its grouped convolutions run one group
//! at a time, see `shared/notes/gradients.md`), so this module is a small reverse-mode
//! evaluator of its own over the ONNX graph, read with `tract_onnx::pb`. Constant subgraphs
//! are folded at load; every other node must be one of the differentiable ops
//! ([`Network`]), or loading fails naming the op and the node. Kernels are plain loops
//! (depthwise convolution, pooling, LRN; `kernels`), whole-tensor kernels of any rank with the
//! batch axis wherever the graph puts it (broadcasting elementwise ops, LayerNorm, softmax over
//! an axis, slicing, gathering; `shaped`) and `matrixmultiply`'s packed products (im2col
//! convolution, Gemm, batched MatMul), generic over `f32` and `f64` ([`Real`]) so that
//! finite-difference checks can run in double precision. Batches are split across threads.
//!
//! The seam for other implementations (a GPU one) is [`GradientBackend`], which prepares a
//! [`Model`] behind a [`ViewSpec`] into a [`DifferentiableModel`]; [`CpuGradient`] is the
//! implementation here.
//!
//! # Pixel space
//! A [`DifferentiableModel`] takes canvases exactly as encodings render them, but as `f32`
//! values: `batch * height * width * channels` values, row-major, channels interleaved (gray
//! or RGB), each in 8-bit pixel units (`0.0..=255.0`; nothing clamps). The chain to the model's
//! input is the one the inference backends apply to bytes, extended to real values: the view
//! (centre crop, or ten crops with mirrors) cuts the canvas, the channel order is applied, and
//! pixel `p` becomes `((p / 255) * (range[1] - range[0]) + range[0] - mean[c]) / std[c]`, minus
//! `scale * M[c, y, x] / std[c]` with a `[input.mean_image]`. The gradient returned is with
//! respect to those canvas values, in the same layout (zero outside the crops); the gradient
//! in the model's normalised input space comes with it.
//!
//! # Objective
//! [`Objective`]: the probability, log-probability or logit of each image's target class. With
//! the `ten-crop` view the probability is the mean over the ten crops (as the other backends
//! score it) and the log-probability its logarithm; a logit has no such mean, so `logit` is
//! refused there, and for a model whose graph outputs probabilities without a final Softmax.

mod choice;
mod graph;
mod kernels;
mod network;
mod onnx;
mod ort;
mod real;
mod shaped;

pub use choice::{ChosenGradient, prepare_gradient};
pub use network::{Network, Parameter, ParameterRole, Pass, Seed, Wrt};
pub use ort::{GraphModel, OrtGradient};
pub use pareidolia_core::Objective;
pub use real::Real;

use pareidolia_core::View;
use pareidolia_eval::{EvalError, Model, OutputKind, ViewSpec};

impl<T: Real> Network<T> {
    /// Reads a model's graph for the evaluator in element type `T`, in the model's own input
    /// space (NCHW tensors after preprocessing); fails naming the op and node it cannot run.
    pub fn load(model: &Model) -> Result<Self, EvalError> {
        onnx::load(model)
    }
}

/// A way to prepare models for gradients (the seam for a GPU implementation).
pub trait GradientBackend: Send + Sync {
    /// Short name, for logs (`cpu`).
    fn name(&self) -> &'static str;
    /// Reads the model's graph for differentiation, behind `view` (which must fit, see
    /// [`ViewSpec::check`]). Fails, naming the op and the node, when the graph has a node the
    /// backend cannot differentiate, and when its input or output does not match the manifest.
    fn prepare(
        &self,
        model: &Model,
        view: ViewSpec,
    ) -> Result<Box<dyn DifferentiableModel>, EvalError>;
}

/// A model ready for gradients with respect to its canvas pixels.
pub trait DifferentiableModel: Send {
    /// The backend's name (`cpu`).
    fn backend(&self) -> &'static str;
    /// Where it runs, for logs (`cpu (2 threads)`).
    fn device(&self) -> String;
    /// Classes per probability vector.
    fn classes(&self) -> usize;
    /// The view and canvas size the pixels are given in.
    fn view(&self) -> ViewSpec;
    /// Channels per canvas pixel (1 gray, 3 RGB).
    fn channels(&self) -> usize;
    /// Values in one canvas (`width * height * channels`).
    fn canvas_len(&self) -> usize {
        let v = self.view();
        v.width as usize * v.height as usize * self.channels()
    }
    /// Whether `objective` can be computed for this model and view; the error says why not.
    fn check_objective(&self, objective: Objective) -> Result<(), EvalError>;
    /// The probability vectors of `batch` canvases (`batch * classes`), without a backward
    /// pass.
    fn probabilities(&mut self, pixels: &[f32], batch: usize) -> Result<Vec<f64>, EvalError>;
    /// The objective for `targets[i]` on canvas `i` (one target per canvas), the probability
    /// vectors, and the gradient of each canvas's objective with respect to its pixels.
    ///
    /// Fails with [`EvalError::ZeroGradient`] when the gradient of every canvas in the batch is
    /// exactly zero (a saturated objective, inputs where no unit is active), and with
    /// [`EvalError::Inference`] when a gradient is not finite; a single zero canvas is reported
    /// by [`Gradients::zero_images`].
    fn gradient(
        &mut self,
        pixels: &[f32],
        targets: &[usize],
        objective: Objective,
    ) -> Result<Gradients<f32>, EvalError>;
}

/// What a gradient call returns for a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients<T = f32> {
    /// Canvases in the batch.
    pub batch: usize,
    /// Classes per probability vector.
    pub classes: usize,
    /// Per canvas, the objective of its target class (computed in f64 from the outputs).
    pub objective: Vec<f64>,
    /// `batch * classes`: each canvas's probability vector (with `ten-crop`, the mean of the
    /// crops'), computed in f64.
    pub probabilities: Vec<f64>,
    /// `batch * canvas_len`: d objective / d pixel, in the canvas layout and pixel units.
    pub pixels: Vec<T>,
    /// d objective / d model input, NCHW, one block per crop (`batch * crops * C * H * W`).
    pub input: Vec<T>,
}

impl<T: Real> Gradients<T> {
    /// The canvases whose pixel gradient is exactly zero.
    pub fn zero_images(&self) -> Vec<usize> {
        let n = self.pixels.len() / self.batch.max(1);
        self.pixels
            .chunks_exact(n.max(1))
            .enumerate()
            .filter(|(_, g)| g.iter().all(|&v| v == T::ZERO))
            .map(|(i, _)| i)
            .collect()
    }
}

/// The CPU implementation: [`CpuModel`] in `f32`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuGradient {
    /// Threads a batch is split over; 0 for one per core.
    pub threads: usize,
}

impl GradientBackend for CpuGradient {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn prepare(
        &self,
        model: &Model,
        view: ViewSpec,
    ) -> Result<Box<dyn DifferentiableModel>, EvalError> {
        let mut m = CpuModel::<f32>::new(model, view)?;
        if self.threads > 0 {
            m.network.set_threads(self.threads);
        }
        Ok(Box::new(m))
    }
}

/// One crop of the canvas: its top-left corner and whether it is mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Crop {
    x0: usize,
    y0: usize,
    mirror: bool,
}

/// A model on the CPU evaluator in element type `T`, with the canvas-to-input chain.
#[derive(Debug, Clone)]
pub struct CpuModel<T> {
    network: Network<T>,
    view: ViewSpec,
    crops: Vec<Crop>,
    /// Model channel `c` reads canvas channel `source[c]`.
    source: Vec<usize>,
    /// Per model channel: `input = gain * pixel + shift - offset[c][y][x]`.
    gain: Vec<f64>,
    shift: Vec<f64>,
    offset: Option<Vec<f64>>,
    /// Whether the network's outputs are logits (else probabilities).
    logits: bool,
    classes: usize,
    model: String,
}

impl<T: Real> CpuModel<T> {
    /// Loads `model`'s graph behind `view` and checks it on one canvas: its output must hold
    /// one value per label.
    pub fn new(model: &Model, view: ViewSpec) -> Result<Self, EvalError> {
        view.check(model)?;
        let network = onnx::load::<T>(model)?;
        let spec = &model.manifest.input;
        let (w, h) = (spec.width as usize, spec.height as usize);
        let (dx, dy) = (view.width as usize - w, view.height as usize - h);
        let centre = (dx / 2, dy / 2);
        let origins = match view.view {
            View::Center => vec![centre],
            View::TenCrop => vec![(0, 0), (dx, 0), (0, dy), (dx, dy), centre],
        };
        let mut crops: Vec<Crop> = origins
            .iter()
            .map(|&(x0, y0)| Crop {
                x0,
                y0,
                mirror: false,
            })
            .collect();
        if view.view == View::TenCrop {
            crops.extend(origins.iter().map(|&(x0, y0)| Crop {
                x0,
                y0,
                mirror: true,
            }));
        }
        let channels = spec.channels as usize;
        let pick = |v: &[f32], c: usize| f64::from(if v.len() == 1 { v[0] } else { v[c] });
        let span = f64::from(spec.range[1]) - f64::from(spec.range[0]);
        let gain = (0..channels)
            .map(|c| span / 255.0 / pick(&spec.std, c))
            .collect();
        let shift = (0..channels)
            .map(|c| (f64::from(spec.range[0]) - pick(&spec.mean, c)) / pick(&spec.std, c))
            .collect();
        let offset = spec.mean_image.as_ref().map(|m| {
            m.values
                .iter()
                .enumerate()
                .map(|(k, &v)| f64::from(m.scale) * f64::from(v) / pick(&spec.std, k / (w * h)))
                .collect()
        });
        let source = match spec.color {
            pareidolia_eval::ColorOrder::Bgr => vec![2, 1, 0],
            _ => (0..channels).collect(),
        };
        let logits =
            network.outputs_logits_of_softmax() || model.manifest.output == OutputKind::Logits;
        let me = Self {
            network,
            view,
            crops,
            source,
            gain,
            shift,
            offset,
            logits,
            classes: model.classes(),
            model: model.name().to_owned(),
        };
        let probe = me.to_input(&vec![T::from_f64(127.0); me.canvas_len()], 1);
        let out = me
            .network
            .forward(&probe[..me.network.input_shape().iter().product()], 1)?;
        if out.len() != me.classes {
            return Err(EvalError::ShapeMismatch {
                model: me.model.clone(),
                message: format!(
                    "the graph outputs {} values per image but the labels file has {} classes",
                    out.len(),
                    me.classes
                ),
            });
        }
        Ok(me)
    }

    /// The network (its parameters, and gradients in the model's input space).
    pub fn network(&self) -> &Network<T> {
        &self.network
    }

    /// The network, to change its parameters or threads.
    pub fn network_mut(&mut self) -> &mut Network<T> {
        &mut self.network
    }

    /// Crops per canvas (1, or 10 with `ten-crop`).
    pub fn crops(&self) -> usize {
        self.crops.len()
    }

    fn canvas_len(&self) -> usize {
        self.view.width as usize * self.view.height as usize * self.source.len()
    }

    /// The model input for `batch` canvases: `batch * crops` NCHW images.
    pub fn to_input(&self, pixels: &[T], batch: usize) -> Vec<T> {
        let [c, h, w] = self.network.input_shape();
        let (cw, ch) = (self.view.width as usize, self.source.len());
        let mut out = vec![T::ZERO; batch * self.crops.len() * c * h * w];
        let canvas_len = self.canvas_len();
        let mut k = 0;
        for canvas in pixels.chunks_exact(canvas_len).take(batch) {
            for crop in &self.crops {
                let img = &mut out[k * c * h * w..(k + 1) * c * h * w];
                k += 1;
                for m in 0..c {
                    let (g, s, src) = (self.gain[m], self.shift[m], self.source[m]);
                    for y in 0..h {
                        for x in 0..w {
                            let cx = crop.x0 + if crop.mirror { w - 1 - x } else { x };
                            let p = canvas[((crop.y0 + y) * cw + cx) * ch + src].to_f64();
                            let i = (m * h + y) * w + x;
                            let off = self.offset.as_ref().map_or(0.0, |o| o[i]);
                            img[i] = T::from_f64(g * p + s - off);
                        }
                    }
                }
            }
        }
        out
    }

    /// The adjoint of [`CpuModel::to_input`]'s linear part: input gradients to pixel
    /// gradients.
    fn to_pixels(&self, input: &[T], batch: usize) -> Vec<T> {
        let [c, h, w] = self.network.input_shape();
        let (cw, ch) = (self.view.width as usize, self.source.len());
        let canvas_len = self.canvas_len();
        let mut out = vec![T::ZERO; batch * canvas_len];
        let per = c * h * w;
        for (n, canvas) in out.chunks_exact_mut(canvas_len).enumerate() {
            for (k, crop) in self.crops.iter().enumerate() {
                let img = &input[(n * self.crops.len() + k) * per..][..per];
                for m in 0..c {
                    let (g, src) = (T::from_f64(self.gain[m]), self.source[m]);
                    for y in 0..h {
                        for x in 0..w {
                            let cx = crop.x0 + if crop.mirror { w - 1 - x } else { x };
                            canvas[((crop.y0 + y) * cw + cx) * ch + src] +=
                                g * img[(m * h + y) * w + x];
                        }
                    }
                }
            }
        }
        out
    }

    fn check(&self, objective: Objective) -> Result<(), EvalError> {
        if objective == Objective::Logit && (!self.logits || self.crops.len() > 1) {
            let why = if self.logits {
                "the ten-crop view averages probabilities, so there is no single logit; use probability or log-probability"
            } else {
                "its graph outputs probabilities (no final Softmax to take logits from); use probability or log-probability"
            };
            return Err(EvalError::BadInput(format!(
                "model {}: objective `logit` is not available: {why}",
                self.model
            )));
        }
        Ok(())
    }

    fn batch_of(&self, pixels: &[T]) -> Result<usize, EvalError> {
        let n = self.canvas_len();
        if pixels.is_empty() || !pixels.len().is_multiple_of(n) {
            return Err(EvalError::BadInput(format!(
                "model {}: {} pixel values are not a whole number of {}x{}x{} canvases ({n} values each)",
                self.model,
                pixels.len(),
                self.view.width,
                self.view.height,
                self.source.len()
            )));
        }
        Ok(pixels.len() / n)
    }

    /// Checks that `pixels` holds exactly `batch` canvases.
    fn check_batch(&self, pixels: &[T], batch: usize) -> Result<(), EvalError> {
        if self.batch_of(pixels)? != batch {
            return Err(EvalError::BadInput(format!(
                "model {}: {} pixel values for {batch} canvases of {}",
                self.model,
                pixels.len(),
                self.canvas_len()
            )));
        }
        Ok(())
    }

    /// Each canvas's probability vector from its crops' outputs (f64).
    fn probabilities_of(&self, outputs: &[T]) -> Vec<f64> {
        let (k, m) = (self.crops.len(), self.classes);
        let mut out = vec![0.0; outputs.len() / k];
        for (image, dst) in outputs.chunks_exact(k * m).zip(out.chunks_exact_mut(m)) {
            for row in image.chunks_exact(m) {
                let p = self.row_probabilities(row);
                for (d, p) in dst.iter_mut().zip(p) {
                    *d += p / k as f64;
                }
            }
        }
        out
    }

    fn row_probabilities(&self, row: &[T]) -> Vec<f64> {
        let mut p: Vec<f64> = row.iter().map(|v| v.to_f64()).collect();
        if self.logits {
            shaped::softmax_in_place(&mut p);
        }
        p
    }

    /// Forward only: each canvas's probability vector.
    pub fn probabilities(&self, pixels: &[T]) -> Result<Vec<f64>, EvalError> {
        let batch = self.batch_of(pixels)?;
        let input = self.to_input(pixels, batch);
        let out = self.network.forward(&input, batch * self.crops.len())?;
        Ok(self.probabilities_of(&out))
    }

    /// Checks a gradient call's canvases and targets; returns the batch.
    fn check_call(
        &self,
        pixels: &[T],
        targets: &[usize],
        objective: Objective,
    ) -> Result<usize, EvalError> {
        self.check(objective)?;
        let batch = self.batch_of(pixels)?;
        if targets.len() != batch {
            return Err(EvalError::BadInput(format!(
                "model {}: {} targets for {batch} canvases; give one target class per canvas",
                self.model,
                targets.len()
            )));
        }
        if let Some(&t) = targets.iter().find(|&&t| t >= self.classes) {
            return Err(EvalError::BadInput(format!(
                "model {}: target class {t} is out of range (the model has {} classes, 0..={})",
                self.model,
                self.classes,
                self.classes - 1
            )));
        }
        Ok(batch)
    }

    /// The objective of target `t` from one canvas's outputs (its crops' rows), in f64.
    fn objective_of(&self, outputs: &[T], t: usize, objective: Objective) -> f64 {
        let (k, m) = (self.crops.len(), self.classes);
        let mean_t = outputs
            .chunks_exact(m)
            .map(|r| self.row_probabilities(r)[t])
            .sum::<f64>()
            / k as f64;
        match objective {
            Objective::Probability => mean_t,
            Objective::LogProbability if self.logits && k == 1 => {
                // z_t - logsumexp(z), exactly.
                let z: Vec<f64> = outputs.iter().map(|v| v.to_f64()).collect();
                let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                z[t] - max - z.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
            }
            Objective::LogProbability => mean_t.ln(),
            Objective::Logit => outputs[t].to_f64(),
        }
    }

    /// The objective, probabilities and gradients for `targets` (one per canvas), in `T`;
    /// no check for zero gradients (see [`DifferentiableModel::gradient`]).
    pub fn evaluate(
        &self,
        pixels: &[T],
        targets: &[usize],
        objective: Objective,
    ) -> Result<Gradients<T>, EvalError> {
        let batch = self.check_call(pixels, targets, objective)?;
        let input = self.to_input(pixels, batch);
        let (k, m) = (self.crops.len(), self.classes);
        let objectives = std::sync::Mutex::new(vec![0.0; batch]);
        let seed = |image: usize, outputs: &[T], d: &mut [T]| {
            let t = targets[image];
            let rows: Vec<Vec<f64>> = outputs
                .chunks_exact(m)
                .map(|r| self.row_probabilities(r))
                .collect();
            let mean_t = rows.iter().map(|p| p[t]).sum::<f64>() / k as f64;
            objectives.lock().expect("not poisoned")[image] =
                self.objective_of(outputs, t, objective);
            for (p, dr) in rows.iter().zip(d.chunks_exact_mut(m)) {
                // d value / d p_t for this crop, then through the softmax where there is one.
                let scale = match objective {
                    Objective::Probability => 1.0 / k as f64,
                    Objective::LogProbability if self.logits && k == 1 => f64::NAN,
                    Objective::LogProbability => 1.0 / (k as f64 * mean_t),
                    Objective::Logit => f64::NAN,
                };
                for (j, dj) in dr.iter_mut().enumerate() {
                    let e = if j == t { 1.0 } else { 0.0 };
                    let v = match objective {
                        Objective::Logit => e,
                        Objective::LogProbability if self.logits && k == 1 => e - p[j],
                        _ if self.logits => scale * p[t] * (e - p[j]),
                        _ => scale * e,
                    };
                    *dj = T::from_f64(v);
                }
            }
        };
        let pass = self
            .network
            .gradient(&input, batch * k, k, Wrt::Input, &seed)?;
        let pixels = self.to_pixels(&pass.input_gradient, batch);
        Ok(Gradients {
            batch,
            classes: m,
            objective: objectives.into_inner().expect("not poisoned"),
            probabilities: self.probabilities_of(&pass.outputs),
            pixels,
            input: pass.input_gradient,
        })
    }
}

/// A gradient as [`DifferentiableModel::gradient`] returns it: an error when it is not finite
/// or zero for the whole batch.
fn checked(
    g: Gradients<f32>,
    model: &str,
    objective: Objective,
) -> Result<Gradients<f32>, EvalError> {
    if g.pixels.iter().any(|v| !v.is_finite()) {
        return Err(EvalError::Inference {
            backend: "gradient",
            model: model.to_owned(),
            message: format!(
                "the {objective} gradient is not finite (objective values {:?}); the inputs may be far outside the pixel range",
                g.objective
            ),
        });
    }
    if g.zero_images().len() == g.batch {
        return Err(EvalError::ZeroGradient {
            model: model.to_owned(),
            batch: g.batch,
            objective,
            values: g.objective.clone(),
        });
    }
    Ok(g)
}

impl DifferentiableModel for CpuModel<f32> {
    fn backend(&self) -> &'static str {
        "cpu"
    }

    fn device(&self) -> String {
        format!("cpu ({} threads)", self.network.threads)
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn view(&self) -> ViewSpec {
        self.view
    }

    fn channels(&self) -> usize {
        self.source.len()
    }

    fn check_objective(&self, objective: Objective) -> Result<(), EvalError> {
        self.check(objective)
    }

    fn probabilities(&mut self, pixels: &[f32], batch: usize) -> Result<Vec<f64>, EvalError> {
        self.check_batch(pixels, batch)?;
        CpuModel::probabilities(self, pixels)
    }

    fn gradient(
        &mut self,
        pixels: &[f32],
        targets: &[usize],
        objective: Objective,
    ) -> Result<Gradients<f32>, EvalError> {
        let g = self.evaluate(pixels, targets, objective)?;
        checked(g, &self.model, objective)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pareidolia_eval::{OutputKind, TractBackend};
    use prost::Message;
    use tract_onnx::pb;

    fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{Dimension, dimension::Value};
        let dim = dims
            .iter()
            .map(|&d| Dimension {
                value: Some(if d < 0 {
                    Value::DimParam("N".into())
                } else {
                    Value::DimValue(d)
                }),
                ..Default::default()
            })
            .collect();
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn tensor(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 1,
            float_data: values.to_vec(),
            ..Default::default()
        }
    }

    fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    /// `graph` as a serialised ONNX model of that IR version and default-domain opset.
    fn model_bytes(graph: pb::GraphProto, ir_version: i64, opset: i64) -> Vec<u8> {
        pb::ModelProto {
            ir_version,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            graph: Some(graph),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// `x [N, 1, 2, 2] -> Conv 1x1 (weight 1, bias `bias`) -> <middle op> -> Flatten -> Gemm
    /// (4 -> 3) -> logits`, opset 13.
    fn tiny_onnx(middle: &str, bias: f32) -> Vec<u8> {
        let gemm_w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 4.0).collect();
        let graph = pb::GraphProto {
            name: "tiny".into(),
            node: vec![
                node("Conv", "conv", &["x", "w", "b"], "c"),
                node(middle, "the_middle", &["c"], "m"),
                node("Flatten", "flat", &["m"], "f"),
                pb::NodeProto {
                    attribute: vec![pb::AttributeProto {
                        name: "transB".into(),
                        i: 1,
                        r#type: pb::attribute_proto::AttributeType::Int as i32,
                        ..Default::default()
                    }],
                    ..node("Gemm", "fc", &["f", "fw", "fb"], "y")
                },
            ],
            initializer: vec![
                tensor("w", &[1, 1, 1, 1], &[1.0]),
                tensor("b", &[1], &[bias]),
                tensor("fw", &[3, 4], &gemm_w),
                tensor("fb", &[3], &[0.1, -0.2, 0.3]),
            ],
            input: vec![value_info("x", &[-1, 1, 2, 2])],
            output: vec![value_info("y", &[-1, 3])],
            ..Default::default()
        };
        model_bytes(graph, 7, 13)
    }

    fn tiny_model(onnx: Vec<u8>) -> Model {
        Model::tiny(onnx, (2, 2), 1.0, OutputKind::Logits, &["a", "b", "c"])
    }

    fn identity_view(model: &Model) -> ViewSpec {
        ViewSpec::identity(model)
    }

    #[test]
    fn a_graph_with_an_op_without_a_backward_is_refused_at_setup_naming_op_and_node() {
        let model = tiny_model(tiny_onnx("Floor", 0.0));
        // tract runs it: the graph is fine, only not differentiable here.
        let mut tract = pareidolia_eval::Backend::prepare(&TractBackend, &model).unwrap();
        assert_eq!(tract.infer(&[0, 64, 128, 255], 1).unwrap().len(), 3);
        let err = CpuGradient::default()
            .prepare(&model, identity_view(&model))
            .err()
            .expect("refused")
            .to_string();
        for needle in [
            "tiny",
            "`the_middle`",
            "(Floor)",
            "cannot be differentiated",
            "supported: Add",
        ] {
            assert!(err.contains(needle), "{needle} missing from: {err}");
        }
        // A supported op used in a way whose shapes would depend on the batch size: a Squeeze
        // without axes (which would drop the batch axis of a batch of one).
        let model = tiny_model(tiny_onnx("Squeeze", 0.0));
        let err = CpuGradient::default()
            .prepare(&model, identity_view(&model))
            .err()
            .expect("refused")
            .to_string();
        for needle in ["`the_middle`", "(Squeeze)", "no axes", "batch size"] {
            assert!(err.contains(needle), "{needle} missing from: {err}");
        }
    }

    #[test]
    fn an_all_zero_gradient_batch_is_reported_and_a_single_zero_image_flagged() {
        // Bias -10 with inputs in [0, 1]: every ReLU is off, the logits are constant.
        let model = tiny_model(tiny_onnx("Relu", -10.0));
        let mut m = CpuGradient::default()
            .prepare(&model, identity_view(&model))
            .unwrap();
        let err = m
            .gradient(
                &[0.0, 50.0, 100.0, 255.0, 10.0, 0.0, 0.0, 0.0],
                &[0, 2],
                Objective::LogProbability,
            )
            .unwrap_err();
        assert!(
            matches!(err, EvalError::ZeroGradient { batch: 2, .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("exactly zero for all 2 images"), "{text}");
        // Bias -0.5: a dark image is dead, a bright one is not.
        let model = tiny_model(tiny_onnx("Relu", -0.5));
        let mut m = CpuGradient { threads: 2 }
            .prepare(&model, identity_view(&model))
            .unwrap();
        let g = m
            .gradient(
                &[0.0, 10.0, 20.0, 30.0, 200.0, 250.0, 180.0, 255.0],
                &[0, 1],
                Objective::Probability,
            )
            .unwrap();
        assert_eq!(g.zero_images(), vec![0]);
        assert!(g.pixels[4..].iter().all(|&v| v != 0.0));
    }

    #[test]
    fn tiny_graph_gradients_match_finite_differences_for_every_objective() {
        let model = tiny_model(tiny_onnx("Relu", -0.2));
        let m = CpuModel::<f64>::new(&model, identity_view(&model)).unwrap();
        let pixels = vec![40.0, 90.0, 200.0, 250.0, 120.0, 30.0, 230.0, 160.0];
        // The forward agrees with tract on whole pixel values.
        let bytes: Vec<u8> = pixels.iter().map(|&p| p as u8).collect();
        let mut tract = pareidolia_eval::Backend::prepare(&TractBackend, &model).unwrap();
        let logits = tract.infer(&bytes, 2).unwrap();
        let probs = m.probabilities(&pixels).unwrap();
        for (row, p) in logits.chunks(3).zip(probs.chunks(3)) {
            let mut q = [0.0; 3];
            pareidolia_plugin::softmax(row, &mut q);
            for (a, b) in q.iter().zip(p) {
                assert!((f64::from(*a) - b).abs() < 1e-6, "{q:?} vs {p:?}");
            }
        }
        for objective in Objective::ALL.iter().copied() {
            let g = m.evaluate(&pixels, &[2, 0], objective).unwrap();
            for image in 0..2 {
                let f = |x: &[f64]| {
                    let mut p = pixels.clone();
                    p[image * 4..image * 4 + 4].copy_from_slice(x);
                    m.evaluate(&p, &[2, 0], objective).unwrap().objective[image]
                };
                kernels::tests::check_gradient(
                    &f,
                    &pixels[image * 4..image * 4 + 4],
                    &g.pixels[image * 4..image * 4 + 4],
                    &format!("{objective} image {image}"),
                );
            }
        }
    }

    /// `x [N, 1, 2, 2] -> Conv 1x1 (2 channels: x and 0.25 - x / 2) -> BatchNormalization
    /// (epsilon 1e-3, momentum 0.9) -> Flatten -> y [N, 8]`, opset 15.
    fn batch_norm_onnx() -> Vec<u8> {
        let attr = |name: &str, f: f32| pb::AttributeProto {
            name: name.into(),
            f,
            r#type: pb::attribute_proto::AttributeType::Float as i32,
            ..Default::default()
        };
        let graph = pb::GraphProto {
            name: "tiny".into(),
            node: vec![
                node("Conv", "conv", &["x", "w", "b"], "c"),
                pb::NodeProto {
                    attribute: vec![attr("epsilon", 1e-3), attr("momentum", 0.9)],
                    ..node("BatchNormalization", "bn", &["c", "s", "sb", "m", "v"], "n")
                },
                node("Flatten", "flat", &["n"], "y"),
            ],
            initializer: vec![
                tensor("w", &[2, 1, 1, 1], &[1.0, -0.5]),
                tensor("b", &[2], &[0.0, 0.25]),
                tensor("s", &[2], &[1.5, 0.5]),
                tensor("sb", &[2], &[0.1, -0.3]),
                tensor("m", &[2], &[0.2, 0.4]),
                tensor("v", &[2], &[0.8, 1.3]),
            ],
            input: vec![value_info("x", &[-1, 1, 2, 2])],
            output: vec![value_info("y", &[-1, 8])],
            ..Default::default()
        };
        model_bytes(graph, 8, 15)
    }

    fn batch_norm_model() -> Model {
        Model::tiny(
            batch_norm_onnx(),
            (2, 2),
            1.0,
            OutputKind::Logits,
            &["0", "1", "2", "3", "4", "5", "6", "7"],
        )
    }

    /// The batch-norm graph's expected output for NCHW inputs `x` ([N, 1, 2, 2]) normalised
    /// with per-channel `mean` and `var`.
    fn batch_norm_expected(x: &[f64], mean: &[f64; 2], var: &[f64; 2]) -> Vec<f64> {
        // The graph holds f32 values.
        let f = |v: f64| f64::from(v as f32);
        let (scale, bias, eps) = ([f(1.5), f(0.5)], [f(0.1), f(-0.3)], f(1e-3));
        let mut y = Vec::new();
        for img in x.chunks(4) {
            for k in 0..2 {
                for &v in img {
                    let c = if k == 0 { v } else { 0.25 - 0.5 * v };
                    y.push((c - mean[k]) / (var[k] + eps).sqrt() * scale[k] + bias[k]);
                }
            }
        }
        y
    }

    #[test]
    fn batch_norm_runs_on_running_statistics_and_on_batch_statistics() {
        let model = batch_norm_model();
        let x = [
            0.1, 0.9, 0.4, 0.7, 0.2, 0.3, 0.8, 0.05, 0.6, 0.5, 0.95, 0.15,
        ];
        let mut net = Network::<f64>::load(&model).unwrap();
        assert!(net.has_batch_norm() && !net.batch_statistics());
        let names: Vec<&str> = net.parameters().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["w", "b", "s", "sb"]);
        let roles = net.parameter_roles();
        assert_eq!(roles[2], ParameterRole::Scale);
        assert_eq!(roles[3], ParameterRole::Bias);
        let running: Vec<&str> = net
            .running_statistics()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(running, ["m", "v"]);
        // Inference: the running statistics, as tract computes it.
        let eval = net.forward(&x, 3).unwrap();
        let f = |v: f64| f64::from(v as f32);
        let running = batch_norm_expected(&x, &[f(0.2), f(0.4)], &[f(0.8), f(1.3)]);
        for (a, b) in eval.iter().zip(running) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        let bytes: Vec<u8> = x.iter().map(|&v| (v * 255.0).round() as u8).collect();
        let mut tract = pareidolia_eval::Backend::prepare(&TractBackend, &model).unwrap();
        let t = tract.infer(&bytes, 3).unwrap();
        let here = net
            .forward(
                &bytes
                    .iter()
                    .map(|&b| f64::from(b) / 255.0)
                    .collect::<Vec<_>>(),
                3,
            )
            .unwrap();
        for (a, b) in t.iter().zip(&here) {
            assert!((f64::from(*a) - b).abs() < 1e-5, "tract {a} vs {b}");
        }
        // Batch statistics: each channel over the 3 images x 4 pixels, biased variance.
        net.set_batch_statistics(true);
        let moments = |k: usize| {
            let c: Vec<f64> = x
                .iter()
                .map(|&v| if k == 0 { v } else { 0.25 - 0.5 * v })
                .collect();
            let m = c.iter().sum::<f64>() / 12.0;
            (m, c.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 12.0)
        };
        let ((m0, v0), (m1, v1)) = (moments(0), moments(1));
        let train = net.forward(&x, 3).unwrap();
        for (a, b) in train
            .iter()
            .zip(batch_norm_expected(&x, &[m0, m1], &[v0, v1]))
        {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        // An image's outputs depend on the others in the batch.
        assert_ne!(net.forward(&x[..8], 2).unwrap()[..8], train[..8]);
        // The pass reports the statistics; the running ones move as PyTorch's do.
        let pass = net
            .gradient(&x, 3, 1, Wrt::Both, &|_, _, d: &mut [f64]| d.fill(1.0))
            .unwrap();
        assert_eq!(pass.batch_statistics.len(), 1);
        assert_eq!(pass.batch_statistics[0].count, 12);
        net.update_running_statistics(&pass.batch_statistics)
            .unwrap();
        let r = net.running_statistics();
        let unbiased = 12.0 / 11.0;
        // ONNX's momentum 0.9 (an f32 attribute) keeps 0.9 of the running value.
        let (keep, take) = (f(0.9), 1.0 - f(0.9));
        let want_mean = [keep * f(0.2) + take * m0, keep * f(0.4) + take * m1];
        let want_var = [
            keep * f(0.8) + take * v0 * unbiased,
            keep * f(1.3) + take * v1 * unbiased,
        ];
        for k in 0..2 {
            assert!((r[0].values[k] - want_mean[k]).abs() < 1e-12);
            assert!((r[1].values[k] - want_var[k]).abs() < 1e-12);
        }
        // Without batch statistics a pass reports none.
        net.set_batch_statistics(false);
        let pass = net
            .gradient(&x, 3, 1, Wrt::Both, &|_, _, d: &mut [f64]| d.fill(1.0))
            .unwrap();
        assert!(pass.batch_statistics.is_empty());
        net.reset_running_statistics();
        assert_eq!(net.running_statistics()[0].values, [0.0, 0.0]);
        assert_eq!(net.running_statistics()[1].values, [1.0, 1.0]);
    }

    #[test]
    fn batch_norm_gradients_match_finite_differences_with_either_statistics() {
        let model = batch_norm_model();
        let x = vec![
            0.1, 0.9, 0.4, 0.7, 0.2, 0.3, 0.8, 0.05, 0.6, 0.5, 0.95, 0.15,
        ];
        let r = kernels::tests::noise(9, 24);
        for batch_statistics in [true, false] {
            let mut net = Network::<f64>::load(&model).unwrap();
            net.set_threads(2);
            net.set_batch_statistics(batch_statistics);
            // The objective: a fixed random linear function of every output of the batch.
            let loss = |net: &Network<f64>, x: &[f64]| -> f64 {
                let y = net.forward(x, 3).unwrap();
                y.iter().zip(&r).map(|(a, b)| a * b).sum()
            };
            let seed = |i: usize, _: &[f64], d: &mut [f64]| {
                d.copy_from_slice(&r[i * 8..(i + 1) * 8]);
            };
            let pass = net.gradient(&x, 3, 1, Wrt::Both, &seed).unwrap();
            let what = format!("batch statistics {batch_statistics}");
            // Asking for one kind of gradient gives exactly that part of both.
            let only = net.gradient(&x, 3, 1, Wrt::Parameters, &seed).unwrap();
            assert!(only.input_gradient.is_empty(), "{what}");
            assert_eq!(only.parameter_gradients, pass.parameter_gradients, "{what}");
            let only = net.gradient(&x, 3, 1, Wrt::Input, &seed).unwrap();
            assert!(only.parameter_gradients.is_none(), "{what}");
            assert_eq!(only.input_gradient, pass.input_gradient, "{what}");
            kernels::tests::check_gradient(
                &|v| loss(&net, v),
                &x,
                &pass.input_gradient,
                &format!("{what}: input"),
            );
            let grads = pass.parameter_gradients.unwrap();
            for (k, g) in grads.iter().enumerate() {
                let name = net.parameters()[k].name.clone();
                if batch_statistics && name == "b" {
                    // A bias before a batch-normalised layer is subtracted out with the mean.
                    assert!(g.iter().all(|v| v.abs() < 1e-12), "{what}: {g:?}");
                    continue;
                }
                let f = |v: &[f64]| {
                    let mut moved = net.clone();
                    moved.parameters_mut()[k].values = v.to_vec();
                    loss(&moved, &x)
                };
                let at = net.parameters()[k].values.clone();
                kernels::tests::check_gradient(&f, &at, g, &format!("{what}: {name}"));
            }
        }
    }
}
