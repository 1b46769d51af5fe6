//! The evaluator proper: a straight-line program of differentiable steps over value slots,
//! run forward with every value kept (the tape), then backward in reverse order. Batches are
//! split across threads, each chunk with its own tape; parameter gradients are summed.
//!
//! Values are whole tensors with the batch axis included. Convolutions, pooling and the other
//! NCHW ops need it first; the shape ops (`shaped`) take it wherever the graph moved it, so
//! that a transformer's `[3, N, heads, tokens, dim]` runs as exported.

use super::kernels::{self, Lrn, Window};
use super::real::Real;
use super::shaped::{self, Binary, MatMulPlan, SliceAxis};
use crate::EvalError;

/// A constant of the graph (a weight, a bias), in the evaluator's element type.
#[derive(Debug, Clone)]
pub struct Parameter<T> {
    /// The ONNX initializer's name (or the folded node's output name).
    pub name: String,
    /// Its shape (for a convolution weight `[out, in / group, kh, kw]`, for a Gemm weight
    /// `[out, in]` with `transB = 1`).
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<T>,
}

/// What a parameter is to the layer that reads it, for initialisation and per-parameter
/// learning rates ([`Network::parameter_roles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterRole {
    /// A convolution's or Gemm's weight; `fan_in` is the inputs one output sums over
    /// (`in / group * kh * kw`, or the Gemm's `k`), Caffe's `XavierFiller` FAN_IN.
    Weight {
        /// Inputs per output.
        fan_in: usize,
    },
    /// A convolution's or Gemm's bias, an added weight (`Add` after a `MatMul`), a
    /// LayerNormalization's bias.
    Bias,
    /// A multiplier: LayerNormalization's scale, a `Mul` by a weight (layer scale).
    Scale,
}

/// Explicit padding or ONNX `auto_pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Padding {
    /// `[top, left, bottom, right]`.
    Explicit([usize; 4]),
    /// `SAME_UPPER` (extra padding at the end) or `SAME_LOWER` (at the start).
    Same { upper: bool },
}

/// A 2-D window's attributes, resolved against an input size at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowSpec {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub padding: Padding,
    pub ceil: bool,
}

impl WindowSpec {
    pub(crate) fn resolve(&self, h: usize, w: usize) -> Option<Window> {
        let span = |i: usize| self.dilations[i] * (self.kernel[i] - 1) + 1;
        let pads = match self.padding {
            Padding::Explicit(p) => p,
            Padding::Same { upper } => {
                let mut p = [0; 4];
                for (i, len) in [h, w].into_iter().enumerate() {
                    let out = len.div_ceil(self.strides[i]);
                    let total = ((out - 1) * self.strides[i] + span(i)).saturating_sub(len);
                    let (a, b) = if upper {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    };
                    p[i] = a;
                    p[i + 2] = b;
                }
                p
            }
        };
        let out = |i: usize, len: usize| {
            let padded = len + pads[i] + pads[i + 2];
            let span = span(i);
            if padded < span {
                return None;
            }
            let n = padded - span;
            let s = self.strides[i];
            Some(if self.ceil { n.div_ceil(s) } else { n / s } + 1)
        };
        Some(Window {
            h,
            w,
            kh: self.kernel[0],
            kw: self.kernel[1],
            sh: self.strides[0],
            sw: self.strides[1],
            dh: self.dilations[0],
            dw: self.dilations[1],
            pt: pads[0],
            pl: pads[1],
            oh: out(0, h)?,
            ow: out(1, w)?,
        })
    }
}

/// One differentiable operation.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Conv {
        weight: usize,
        bias: Option<usize>,
        group: usize,
        window: WindowSpec,
    },
    MaxPool(WindowSpec),
    /// Average pooling, pads not counted (`count_include_pad = 0`).
    AveragePool(WindowSpec),
    Relu,
    Clip {
        min: f64,
        max: f64,
    },
    /// An elementwise function of one value.
    Unary(Unary),
    /// The sum of two or more values of one shape (`Sum`).
    Add,
    /// `a op b`, numpy-broadcast, each operand a value, a parameter or a constant (`Add`,
    /// `Sub`, `Mul`, `Div`, `Pow`).
    Binary {
        op: Binary,
        a: Arg,
        b: Arg,
    },
    /// `a @ b` (numpy `matmul`).
    MatMul {
        a: Arg,
        b: Arg,
    },
    /// Normalisation over the axes from `axis` on, then `* scale + bias`.
    LayerNorm {
        axis: i64,
        epsilon: f64,
        scale: Arg,
        bias: Option<Arg>,
    },
    /// BatchNormalization over axis 1.
    BatchNorm(BatchNorm),
    /// Along an axis (negative from the end); every input computed from the image.
    Concat(i64),
    /// Any permutation of the axes.
    Transpose(Vec<usize>),
    GlobalAveragePool,
    /// A new shape for the same values.
    Reshape(Reshape),
    /// Constant ranges along some axes.
    Slice(Vec<SliceAxis>),
    /// Part `index` of `parts` equal parts along `axis` (`Split` without sizes).
    SplitPart {
        axis: i64,
        index: usize,
        parts: usize,
    },
    /// Constant indices along an axis.
    Gather {
        axis: i64,
        indices: Vec<i64>,
        shape: Vec<usize>,
    },
    /// `ReduceSum` or `ReduceMean` over `axes` (all when `None`).
    Reduce {
        axes: Option<Vec<i64>>,
        keepdims: bool,
        mean: bool,
    },
    Gemm {
        weight: usize,
        bias: Option<usize>,
        alpha: f64,
        beta: f64,
        trans_b: bool,
    },
    Lrn(Lrn),
    Identity,
    /// Along `axis`; before opset 13 (`legacy`), over everything from `axis` on.
    Softmax {
        axis: i64,
        legacy: bool,
    },
}

/// An operand of an op that may read constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arg {
    /// A value computed from the image: its slot.
    Value(usize),
    /// A trainable parameter (an initializer of the graph): its index.
    Param(usize),
    /// A fixed constant (folded from constant nodes): its index.
    Const(usize),
}

/// How [`Op::Reshape`] finds the new shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reshape {
    /// ONNX `Reshape` (0 copies a dimension, one -1 is inferred).
    To(Vec<i64>),
    /// `[everything before axis, everything from axis on]`.
    Flatten(i64),
    /// Removes these axes of length 1.
    Squeeze(Vec<i64>),
    /// Inserts axes of length 1 at these positions of the output.
    Unsqueeze(Vec<i64>),
}

/// An axis counted from the end when negative, checked against `rank`.
pub(crate) fn shaped_axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} for rank {rank}"))
    }
}

impl Reshape {
    fn shape(&self, shape: &[usize]) -> Result<Vec<usize>, String> {
        match self {
            Reshape::To(target) => shaped::reshape(shape, target),
            Reshape::Flatten(a) => {
                let a = if *a == shape.len() as i64 {
                    shape.len()
                } else {
                    shaped_axis(*a, shape.len())?
                };
                Ok(vec![
                    shape[..a].iter().product(),
                    shape[a..].iter().product(),
                ])
            }
            Reshape::Squeeze(axes) => {
                let axes = axes
                    .iter()
                    .map(|&a| shaped_axis(a, shape.len()))
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(&a) = axes.iter().find(|&&a| shape[a] != 1) {
                    return Err(format!("squeezes axis {a} of shape {shape:?}"));
                }
                Ok(shape
                    .iter()
                    .enumerate()
                    .filter(|(d, _)| !axes.contains(d))
                    .map(|(_, &n)| n)
                    .collect())
            }
            Reshape::Unsqueeze(axes) => {
                let rank = shape.len() + axes.len();
                let mut axes = axes
                    .iter()
                    .map(|&a| shaped_axis(a, rank))
                    .collect::<Result<Vec<_>, _>>()?;
                axes.sort_unstable();
                let mut out = shape.to_vec();
                for a in axes {
                    out.insert(a.min(out.len()), 1);
                }
                Ok(out)
            }
        }
    }
}

/// An elementwise function of one value, with its derivative.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Unary {
    Erf,
    Sqrt,
    Exp,
    Neg,
    Sigmoid,
    Tanh,
    /// `max(0, min(1, alpha * x + beta))`.
    HardSigmoid {
        alpha: f64,
        beta: f64,
    },
    /// `x * max(0, min(1, x / 6 + 1 / 2))`.
    HardSwish,
}

impl Unary {
    fn forward<T: Real>(self, x: T) -> T {
        let clamp01 = |v: T| {
            if v < T::ZERO {
                T::ZERO
            } else if v > T::ONE {
                T::ONE
            } else {
                v
            }
        };
        match self {
            Unary::Erf => x.erf(),
            Unary::Sqrt => x.sqrt(),
            Unary::Exp => x.exp(),
            Unary::Neg => -x,
            Unary::Sigmoid => T::ONE / (T::ONE + (-x).exp()),
            Unary::Tanh => x.tanh(),
            Unary::HardSigmoid { alpha, beta } => {
                clamp01(T::from_f64(alpha) * x + T::from_f64(beta))
            }
            Unary::HardSwish => x * clamp01(x * T::from_f64(1.0 / 6.0) + T::from_f64(0.5)),
        }
    }

    /// dy/dx at `x`, where `y` is the output.
    fn derivative<T: Real>(self, x: T, y: T) -> T {
        match self {
            // 2 / sqrt(pi) * exp(-x^2)
            Unary::Erf => T::from_f64(std::f64::consts::FRAC_2_SQRT_PI) * (-(x * x)).exp(),
            Unary::Sqrt => T::from_f64(0.5) / y,
            Unary::Exp => y,
            Unary::Neg => -T::ONE,
            Unary::Sigmoid => y * (T::ONE - y),
            Unary::Tanh => T::ONE - y * y,
            Unary::HardSigmoid { alpha, beta } => {
                let v = T::from_f64(alpha) * x + T::from_f64(beta);
                if v > T::ZERO && v < T::ONE {
                    T::from_f64(alpha)
                } else {
                    T::ZERO
                }
            }
            Unary::HardSwish => {
                let three = T::from_f64(3.0);
                if x < -three {
                    T::ZERO
                } else if x > three {
                    T::ONE
                } else {
                    x * T::from_f64(1.0 / 3.0) + T::from_f64(0.5)
                }
            }
        }
    }
}

/// BatchNormalization: `(x - mean) / sqrt(var + epsilon) * scale + bias`, per channel (axis
/// 1, whatever the rank). With the running statistics (inference, PyTorch's `eval()`) it is a
/// per-channel affine map; with batch statistics ([`Network::set_batch_statistics`],
/// PyTorch's `train()`) `mean` and `var` are the batch's own, over every axis but 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BatchNorm {
    /// Per-channel scale and bias: parameters where they are initializers.
    pub scale: Arg,
    pub bias: Arg,
    /// The running mean and variance: indices into [`Network::running_statistics`].
    pub mean: usize,
    pub var: usize,
    pub epsilon: f64,
    /// ONNX's `momentum`: `running = running * momentum + batch * (1 - momentum)` (PyTorch's
    /// default 0.1 is exported as 0.9).
    pub momentum: f64,
}

/// One batch normalisation's statistics over a batch (see [`Pass::batch_statistics`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStatistics<T> {
    /// Per channel: the mean and the (biased) variance the batch was normalised with.
    pub mean: Vec<T>,
    pub variance: Vec<T>,
    /// Values per channel they were taken over (images x the axes after the channel).
    pub count: usize,
}

/// One node of the graph as the evaluator runs it.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub op: Op,
    /// Value slots read (activations only; constants live in the op).
    pub inputs: Vec<usize>,
    pub output: usize,
    /// The ONNX node's name and op type, for errors.
    pub node: String,
    pub op_type: String,
}

/// A value: a shape (batch first) and row-major data.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tensor<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

/// A network ready to run: steps in order, constants, and where the input and output live.
#[derive(Debug, Clone)]
pub struct Network<T> {
    pub(crate) model: String,
    pub(crate) steps: Vec<Step>,
    pub(crate) params: Vec<Parameter<T>>,
    /// Constants the ops read that training leaves alone (see [`Arg::Const`]).
    pub(crate) consts: Vec<Tensor<T>>,
    pub(crate) slots: usize,
    /// Per-image input shape `[channels, height, width]`.
    pub(crate) input: [usize; 3],
    pub(crate) output: usize,
    /// Whether a final Softmax was dropped, so the output is its input (the logits).
    pub(crate) softmax_removed: bool,
    pub(crate) threads: usize,
    /// The BatchNormalizations' running means and variances, named by their initializers.
    pub(crate) running: Vec<Parameter<T>>,
    /// Whether BatchNormalization uses the batch's statistics (PyTorch's `train()` mode).
    pub(crate) batch_statistics: bool,
}

/// The objective's gradient with respect to the outputs of a group of images:
/// `seed(group, outputs, d_outputs)` (see [`Network::gradient`]).
pub type Seed<'a, T> = dyn Fn(usize, &[T], &mut [T]) + Sync + 'a;

/// The gradients a backward pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrt {
    /// The input's only (gradient ascent).
    Input,
    /// The parameters' only (training: the images are data, and the first layer skips the
    /// input gradient; [`Pass::input_gradient`] is empty).
    Parameters,
    /// Both.
    Both,
}

impl Wrt {
    fn parameters(self) -> bool {
        self != Wrt::Input
    }
    fn input(self) -> bool {
        self != Wrt::Parameters
    }
}

/// What one backward pass computed for a batch.
#[derive(Debug, Clone)]
pub struct Pass<T> {
    /// The network's outputs, `batch * outputs` (the logits where a final Softmax was removed).
    pub outputs: Vec<T>,
    /// The gradient with respect to the network's input tensor, in its NCHW layout; empty
    /// unless asked for ([`Wrt`]).
    pub input_gradient: Vec<T>,
    /// The gradient with respect to each parameter ([`Network::parameters`] order), summed over
    /// the batch; `None` unless asked for ([`Wrt`]).
    pub parameter_gradients: Option<Vec<Vec<T>>>,
    /// With batch statistics on ([`Network::set_batch_statistics`]), each BatchNormalization's
    /// statistics over this batch, in graph order, for
    /// [`Network::update_running_statistics`]; empty otherwise.
    pub batch_statistics: Vec<BatchStatistics<T>>,
}

struct Tape<T> {
    values: Vec<Tensor<T>>,
    /// Per step: max-pooling's argmax indices, image-major.
    aux: Vec<Vec<u32>>,
    /// Per step: a BatchNormalization's batch mean, variance and `1 / sqrt(var + epsilon)`,
    /// channel after channel, when it normalised with batch statistics; empty otherwise.
    stats: Vec<Vec<T>>,
}

impl<T: Real> Network<T> {
    /// The model's name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The constants the graph's convolutions and Gemms read (weights and biases), in a fixed
    /// order; training (issue 14) updates them in place with [`Network::parameters_mut`].
    pub fn parameters(&self) -> &[Parameter<T>] {
        &self.params
    }

    /// The parameters, for an optimiser to update.
    pub fn parameters_mut(&mut self) -> &mut [Parameter<T>] {
        &mut self.params
    }

    /// Per parameter ([`Network::parameters`] order), what its layer uses it as.
    pub fn parameter_roles(&self) -> Vec<ParameterRole> {
        let mut roles = vec![ParameterRole::Bias; self.params.len()];
        for step in &self.steps {
            let param = |a: &Arg| match a {
                Arg::Param(p) => Some(*p),
                _ => None,
            };
            match &step.op {
                Op::MatMul { a, b } => {
                    // y = x @ W sums over W's rows; y = W @ x over W's columns.
                    if let Some(p) = param(b) {
                        let s = &self.params[p].shape;
                        let fan_in = if s.len() >= 2 { s[s.len() - 2] } else { s[0] };
                        roles[p] = ParameterRole::Weight {
                            fan_in: fan_in.max(1),
                        };
                    }
                    if let Some(p) = param(a) {
                        let fan_in = self.params[p].shape.last().copied().unwrap_or(1);
                        roles[p] = ParameterRole::Weight {
                            fan_in: fan_in.max(1),
                        };
                    }
                    continue;
                }
                Op::LayerNorm { scale, .. } | Op::BatchNorm(BatchNorm { scale, .. }) => {
                    if let Some(p) = param(scale) {
                        roles[p] = ParameterRole::Scale;
                    }
                    continue;
                }
                Op::Binary {
                    op: Binary::Mul,
                    a,
                    b,
                } => {
                    for p in [param(a), param(b)].into_iter().flatten() {
                        roles[p] = ParameterRole::Scale;
                    }
                    continue;
                }
                _ => {}
            }
            let (weight, bias, fan_in) = match &step.op {
                Op::Conv { weight, bias, .. } => {
                    let shape = &self.params[*weight].shape;
                    (*weight, *bias, shape.iter().skip(1).product::<usize>())
                }
                Op::Gemm {
                    weight,
                    bias,
                    trans_b,
                    ..
                } => {
                    let shape = &self.params[*weight].shape;
                    (*weight, *bias, if *trans_b { shape[1] } else { shape[0] })
                }
                _ => continue,
            };
            roles[weight] = ParameterRole::Weight {
                fan_in: fan_in.max(1),
            };
            if let Some(b) = bias {
                roles[b] = ParameterRole::Bias;
            }
        }
        roles
    }

    /// Per-image input shape `[channels, height, width]` (NCHW).
    pub fn input_shape(&self) -> [usize; 3] {
        self.input
    }

    /// Whether the graph's final Softmax was removed, so that outputs are logits.
    pub fn outputs_logits_of_softmax(&self) -> bool {
        self.softmax_removed
    }

    /// How many threads a batch is split over.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// How many threads a batch is split over (at least 1).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// The BatchNormalizations' running means and variances (PyTorch's buffers), named by
    /// their initializers: mean then variance, layer after layer.
    pub fn running_statistics(&self) -> &[Parameter<T>] {
        &self.running
    }

    /// Sets every running mean to 0 and variance to 1 (a fresh `torch.nn.BatchNorm2d`).
    pub fn reset_running_statistics(&mut self) {
        for step in &self.steps {
            if let Op::BatchNorm(bn) = step.op {
                self.running[bn.mean].values.fill(T::ZERO);
                self.running[bn.var].values.fill(T::ONE);
            }
        }
    }

    /// Whether the graph has a BatchNormalization.
    pub fn has_batch_norm(&self) -> bool {
        self.steps.iter().any(|s| matches!(s.op, Op::BatchNorm(_)))
    }

    /// Whether BatchNormalization normalises with each batch's own statistics (PyTorch's
    /// `train()`; on, every pass runs the batch as one chunk, its convolutions split over the
    /// threads, so that the statistics are the whole batch's) or with the running statistics
    /// (`eval()`, the default).
    pub fn set_batch_statistics(&mut self, on: bool) {
        self.batch_statistics = on;
    }

    /// Whether BatchNormalization uses batch statistics (see [`Network::set_batch_statistics`]).
    pub fn batch_statistics(&self) -> bool {
        self.batch_statistics
    }

    /// Moves the running statistics towards a batch's, as PyTorch's `BatchNorm` does in
    /// `train()`: `running = running * momentum + batch * (1 - momentum)` with ONNX's
    /// `momentum` (PyTorch's 0.1 exports as 0.9), the variance unbiased (`count / (count - 1)`).
    /// `batch` is [`Pass::batch_statistics`] of a pass of this network.
    pub fn update_running_statistics(
        &mut self,
        batch: &[BatchStatistics<T>],
    ) -> Result<(), EvalError> {
        let norms: Vec<BatchNorm> = self
            .steps
            .iter()
            .filter_map(|s| match s.op {
                Op::BatchNorm(bn) => Some(bn),
                _ => None,
            })
            .collect();
        if norms.len() != batch.len() {
            return Err(EvalError::BadInput(format!(
                "model {}: {} batch statistics for {} BatchNormalizations",
                self.model,
                batch.len(),
                norms.len()
            )));
        }
        for (bn, b) in norms.iter().zip(batch) {
            let m = T::from_f64(bn.momentum);
            let keep = T::ONE - m;
            let unbias = T::from_f64(b.count as f64 / (b.count.max(2) - 1) as f64);
            for (r, &v) in self.running[bn.mean].values.iter_mut().zip(&b.mean) {
                *r = *r * m + v * keep;
            }
            for (r, &v) in self.running[bn.var].values.iter_mut().zip(&b.variance) {
                *r = *r * m + v * unbias * keep;
            }
        }
        Ok(())
    }

    /// The per-channel values of a BatchNormalization's scale or bias.
    fn channel_values(&self, a: Arg) -> &[T] {
        match a {
            Arg::Param(p) => &self.params[p].values,
            Arg::Const(c) => &self.consts[c].data,
            Arg::Value(_) => unreachable!("refused when the graph loads"),
        }
    }

    /// A BatchNormalization with its running statistics as the affine map `x * scale +
    /// shift` per channel.
    pub(crate) fn batch_norm_affine(&self, bn: &BatchNorm) -> (Vec<f64>, Vec<f64>) {
        let gamma = self.channel_values(bn.scale);
        let beta = self.channel_values(bn.bias);
        let (mean, var) = (&self.running[bn.mean].values, &self.running[bn.var].values);
        let scale: Vec<f64> = gamma
            .iter()
            .zip(var)
            .map(|(&g, &v)| g.to_f64() / (v.to_f64() + bn.epsilon).sqrt())
            .collect();
        let shift = beta
            .iter()
            .zip(mean)
            .zip(&scale)
            .map(|((&b, &m), &a)| b.to_f64() - m.to_f64() * a)
            .collect();
        (scale, shift)
    }

    /// Whether a pass runs the batch as one chunk (batch statistics need the whole batch).
    fn whole_batch(&self) -> bool {
        self.batch_statistics && self.has_batch_norm()
    }

    fn image_len(&self) -> usize {
        self.input.iter().product()
    }

    fn check_input(&self, input: &[T], batch: usize) -> Result<(), EvalError> {
        if batch == 0 || input.len() != batch * self.image_len() {
            return Err(EvalError::BadInput(format!(
                "model {}: {} input values for {batch} images of {:?} (channels x height x width)",
                self.model,
                input.len(),
                self.input
            )));
        }
        Ok(())
    }

    /// Runs the network on `batch` NCHW images; returns `batch * outputs` values.
    pub fn forward(&self, input: &[T], batch: usize) -> Result<Vec<T>, EvalError> {
        self.check_input(input, batch)?;
        let chunks = self.chunks(batch);
        let par = (self.threads / chunks.len()).max(1);
        let per = self.image_len();
        let results: Vec<Result<Vec<T>, EvalError>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|&(start, n)| {
                    let x = &input[start * per..(start + n) * per];
                    s.spawn(move || self.run(x, n, false, par).map(|t| self.take_output(t)))
                })
                .collect();
            handles.into_iter().map(join).collect()
        });
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    /// Runs the network forward and backward on `batch` NCHW images, in groups of `group`
    /// consecutive images (the crops of one canvas; `batch` must be a multiple). `seed(group,
    /// outputs, d_outputs)` is called once per group with the outputs of its images and fills
    /// the gradient of the objective with respect to them (zeroed beforehand). `wrt` says
    /// which gradients to compute.
    pub fn gradient(
        &self,
        input: &[T],
        batch: usize,
        group: usize,
        wrt: Wrt,
        seed: &Seed<'_, T>,
    ) -> Result<Pass<T>, EvalError> {
        self.check_input(input, batch)?;
        let group = group.max(1);
        if !batch.is_multiple_of(group) {
            return Err(EvalError::BadInput(format!(
                "model {}: {batch} images are not groups of {group}",
                self.model
            )));
        }
        let chunks: Vec<(usize, usize)> = self
            .chunks(batch / group)
            .into_iter()
            .map(|(s, n)| (s * group, n * group))
            .collect();
        let par = (self.threads / chunks.len()).max(1);
        let per = self.image_len();
        let whole = self.whole_batch();
        type Part<T> = (Vec<T>, Vec<T>, Option<Vec<Vec<T>>>, Vec<BatchStatistics<T>>);
        let results: Vec<Result<Part<T>, EvalError>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|&(start, n)| {
                    let x = &input[start * per..(start + n) * per];
                    s.spawn(move || {
                        // Micro-batches keep the tape small (cache, page faults); batch
                        // statistics need the whole batch at once.
                        let micro = if whole {
                            n
                        } else {
                            (self.micro_batch() / group).max(1) * group
                        };
                        let (mut outputs, mut dx) = (Vec::new(), Vec::new());
                        let mut dp: Option<Vec<Vec<T>>> = None;
                        let mut stats = Vec::new();
                        let mut done = 0;
                        while done < n {
                            let m = micro.min(n - done);
                            let xm = &x[done * per..(done + m) * per];
                            let tape = self.run(xm, m, true, par)?;
                            if whole {
                                stats = self.batch_statistics_of(&tape);
                            }
                            let out = &tape.values[self.output];
                            let row = out.data.len() / m * group;
                            let mut d = vec![T::ZERO; out.data.len()];
                            for (i, (o, g)) in out
                                .data
                                .chunks_exact(row)
                                .zip(d.chunks_exact_mut(row))
                                .enumerate()
                            {
                                seed((start + done) / group + i, o, g);
                            }
                            outputs.extend_from_slice(&out.data);
                            let (dxm, dpm) = self.backward(tape, d, wrt, par)?;
                            dx.extend(dxm);
                            match (&mut dp, dpm) {
                                (None, p) => dp = p,
                                (Some(sum), Some(p)) => add_all(sum, p),
                                (Some(_), None) => {}
                            }
                            done += m;
                        }
                        Ok((outputs, dx, dp, stats))
                    })
                })
                .collect();
            handles.into_iter().map(join).collect()
        });
        let mut pass = Pass {
            outputs: Vec::with_capacity(batch),
            input_gradient: Vec::with_capacity(input.len()),
            parameter_gradients: None,
            batch_statistics: Vec::new(),
        };
        for r in results {
            let (o, dx, dp, stats) = r?;
            pass.batch_statistics.extend(stats);
            pass.outputs.extend(o);
            pass.input_gradient.extend(dx);
            match (&mut pass.parameter_gradients, dp) {
                (None, dp) => pass.parameter_gradients = dp,
                (Some(sum), Some(dp)) => add_all(sum, dp),
                (Some(_), None) => {}
            }
        }
        Ok(pass)
    }

    /// The batch statistics each BatchNormalization of a tape normalised with.
    fn batch_statistics_of(&self, tape: &Tape<T>) -> Vec<BatchStatistics<T>> {
        self.steps
            .iter()
            .zip(&tape.stats)
            .filter(|(s, _)| matches!(s.op, Op::BatchNorm(_)))
            .map(|(s, st)| {
                let x = &tape.values[s.inputs[0]];
                let c = st.len() / 3;
                BatchStatistics {
                    mean: st[..c].to_vec(),
                    variance: st[c..2 * c].to_vec(),
                    count: x.data.len() / c.max(1),
                }
            })
            .collect()
    }

    /// Images a thread runs through forward and backward at once: about 64 Ki input values
    /// (all of a LeNet batch, one ImageNet image), so the tape stays small.
    fn micro_batch(&self) -> usize {
        ((1 << 16) / self.image_len()).max(1)
    }

    /// Splits a batch over at most `threads` chunks of at least one image (one chunk with
    /// batch statistics on).
    fn chunks(&self, batch: usize) -> Vec<(usize, usize)> {
        let k = if self.whole_batch() {
            1
        } else {
            self.threads.min(batch).max(1)
        };
        let (q, r) = (batch / k, batch % k);
        let mut start = 0;
        (0..k)
            .map(|i| {
                let n = q + usize::from(i < r);
                let c = (start, n);
                start += n;
                c
            })
            .collect()
    }

    /// Each value slot's shape when the network runs on `batch` images (mid-grey inputs);
    /// empty for a slot no step writes.
    pub(crate) fn slot_shapes(&self, batch: usize) -> Result<Vec<Vec<usize>>, EvalError> {
        let input = vec![T::from_f64(0.5); batch * self.image_len()];
        let tape = self.run(&input, batch, true, 1)?;
        Ok(tape.values.into_iter().map(|t| t.shape).collect())
    }

    fn take_output(&self, mut tape: Tape<T>) -> Vec<T> {
        std::mem::take(&mut tape.values[self.output].data)
    }

    fn failed(&self, step: &Step, message: String) -> EvalError {
        EvalError::ShapeMismatch {
            model: self.model.clone(),
            message: format!(
                "node `{}` ({}) in the differentiable evaluator: {message}",
                step.node, step.op_type
            ),
        }
    }

    fn run(&self, input: &[T], n: usize, keep: bool, par: usize) -> Result<Tape<T>, EvalError> {
        let mut values: Vec<Tensor<T>> = vec![Tensor::default(); self.slots];
        let [c, h, w] = self.input;
        values[0] = Tensor {
            shape: vec![n, c, h, w],
            data: input.to_vec(),
        };
        let mut aux = vec![Vec::new(); self.steps.len()];
        let mut stats = vec![Vec::new(); self.steps.len()];
        // Without a tape, a value is dropped after its last reader.
        let mut last_use = vec![0usize; self.slots];
        if !keep {
            for (i, step) in self.steps.iter().enumerate() {
                for &s in &step.inputs {
                    last_use[s] = i;
                }
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            let out = self.step_forward(step, &values, n, &mut aux[i], &mut stats[i], par)?;
            values[step.output] = out;
            if !keep {
                for &s in &step.inputs {
                    if last_use[s] == i && s != self.output {
                        values[s] = Tensor::default();
                    }
                }
            }
        }
        let out = &values[self.output];
        if out.shape.first() != Some(&n) {
            return Err(EvalError::ShapeMismatch {
                model: self.model.clone(),
                message: format!("the output has shape {:?} for {n} images", out.shape),
            });
        }
        Ok(Tape { values, aux, stats })
    }

    fn step_forward(
        &self,
        step: &Step,
        values: &[Tensor<T>],
        n: usize,
        aux: &mut Vec<u32>,
        stats: &mut Vec<T>,
        par: usize,
    ) -> Result<Tensor<T>, EvalError> {
        let x = &values[step.inputs[0]];
        let bad = |m: String| Err(self.failed(step, m));
        let image4 = |x: &Tensor<T>| -> Result<[usize; 3], EvalError> {
            match x.shape[..] {
                [_, c, h, w] => Ok([c, h, w]),
                _ => Err(self.failed(step, format!("expects NCHW input, got shape {:?}", x.shape))),
            }
        };
        Ok(match &step.op {
            Op::Conv {
                weight,
                bias,
                group,
                window,
            } => {
                let [cin, h, w] = image4(x)?;
                let wt = &self.params[*weight];
                let (cout, cg) = (wt.shape[0], wt.shape[1]);
                if cg * group != cin || cout % group != 0 {
                    return bad(format!(
                        "weight {:?} with group {group} does not fit {cin} input channels",
                        wt.shape
                    ));
                }
                let Some(g) = window.resolve(h, w) else {
                    return bad(format!("kernel larger than the padded {h}x{w} input"));
                };
                let b = bias.map(|b| &self.params[b].values[..]);
                let mut out = vec![T::ZERO; n * cout * g.out_len()];
                conv_forward(&x.data, &wt.values, b, cin, cout, *group, &g, &mut out, par);
                Tensor {
                    shape: vec![n, cout, g.oh, g.ow],
                    data: out,
                }
            }
            Op::MaxPool(window) => {
                let [c, h, w] = image4(x)?;
                let Some(g) = window.resolve(h, w) else {
                    return bad(format!("kernel larger than the padded {h}x{w} input"));
                };
                let ohw = g.out_len();
                let mut out = vec![T::ZERO; n * c * ohw];
                aux.resize(n * c * ohw, 0);
                kernels::max_pool_forward(&x.data, &g, &mut out, aux);
                Tensor {
                    shape: vec![n, c, g.oh, g.ow],
                    data: out,
                }
            }
            Op::AveragePool(window) => {
                let [c, h, w] = image4(x)?;
                let Some(g) = window.resolve(h, w) else {
                    return bad(format!("kernel larger than the padded {h}x{w} input"));
                };
                let (hw, ohw) = (h * w, g.out_len());
                let mut out = vec![T::ZERO; n * c * ohw];
                for p in 0..n * c {
                    kernels::avg_pool_forward(
                        &x.data[p * hw..(p + 1) * hw],
                        &g,
                        &mut out[p * ohw..(p + 1) * ohw],
                    );
                }
                Tensor {
                    shape: vec![n, c, g.oh, g.ow],
                    data: out,
                }
            }
            Op::BatchNorm(bn) => {
                let (c, inner) = match x.shape[..] {
                    [_, c, ..] if c > 0 => (c, x.shape[2..].iter().product::<usize>()),
                    _ => return bad(format!("expects a channel axis, got shape {:?}", x.shape)),
                };
                if inner == 0 {
                    return bad(format!("an empty input of shape {:?}", x.shape));
                }
                let gamma = self.channel_values(bn.scale);
                let beta = self.channel_values(bn.bias);
                let (rm, rv) = (&self.running[bn.mean].values, &self.running[bn.var].values);
                if [gamma.len(), beta.len(), rm.len(), rv.len()]
                    .iter()
                    .any(|&l| l != c)
                {
                    return bad(format!(
                        "{} scales, {} biases, {} means and {} variances for {c} channels",
                        gamma.len(),
                        beta.len(),
                        rm.len(),
                        rv.len()
                    ));
                }
                let eps = T::from_f64(bn.epsilon);
                let (mean, inv): (Vec<T>, Vec<T>) = if self.batch_statistics {
                    let (mean, var) = channel_moments(&x.data, n, c, inner);
                    let inv: Vec<T> = var.iter().map(|&v| T::ONE / (v + eps).sqrt()).collect();
                    stats.clear();
                    stats.extend_from_slice(&mean);
                    stats.extend_from_slice(&var);
                    stats.extend_from_slice(&inv);
                    (mean, inv)
                } else {
                    (
                        rm.clone(),
                        rv.iter().map(|&v| T::ONE / (v + eps).sqrt()).collect(),
                    )
                };
                let mut out = x.data.clone();
                for img in out.chunks_exact_mut(c * inner) {
                    for (k, plane) in img.chunks_exact_mut(inner.max(1)).enumerate() {
                        let a = gamma[k] * inv[k];
                        let b = beta[k] - mean[k] * a;
                        for v in plane {
                            *v = *v * a + b;
                        }
                    }
                }
                Tensor {
                    shape: x.shape.clone(),
                    data: out,
                }
            }
            Op::Concat(a) => {
                let parts: Vec<(&[usize], &[T])> = step
                    .inputs
                    .iter()
                    .map(|&i| (&values[i].shape[..], &values[i].data[..]))
                    .collect();
                let a = shaped_axis(*a, x.shape.len()).map_err(|m| self.failed(step, m))?;
                let (shape, data) =
                    shaped::concat_forward(&parts, a).map_err(|m| self.failed(step, m))?;
                Tensor { shape, data }
            }
            Op::Unary(f) => map(x, |v| f.forward(v)),
            Op::Binary { op, a, b } => {
                let (shape, data) = op
                    .forward(self.arg(values, *a), self.arg(values, *b))
                    .map_err(|m| self.failed(step, m))?;
                Tensor { shape, data }
            }
            Op::MatMul { a, b } => {
                let (a, b) = (self.arg(values, *a), self.arg(values, *b));
                let plan = MatMulPlan::new(a.0, b.0).map_err(|m| self.failed(step, m))?;
                Tensor {
                    data: plan.forward(a.1, b.1),
                    shape: plan.out,
                }
            }
            Op::LayerNorm {
                axis,
                epsilon,
                scale,
                bias,
            } => {
                let inner = self.norm_inner(step, &x.shape, *axis, *scale, *bias)?;
                let scale = self.arg(values, *scale).1;
                let bias = bias.map(|b| self.arg(values, b).1);
                Tensor {
                    shape: x.shape.clone(),
                    data: shaped::layer_norm_forward(&x.data, inner, scale, bias, *epsilon),
                }
            }
            Op::Slice(axes) => {
                let plan = shaped::slice_plan(&x.shape, axes).map_err(|m| self.failed(step, m))?;
                Tensor {
                    data: shaped::slice_forward(&x.data, &plan),
                    shape: plan.0,
                }
            }
            Op::SplitPart { axis, index, parts } => {
                let plan = self.split_plan(step, &x.shape, *axis, *index, *parts)?;
                Tensor {
                    data: shaped::slice_forward(&x.data, &plan),
                    shape: plan.0,
                }
            }
            Op::Gather {
                axis,
                indices,
                shape,
            } => {
                let a = shaped_axis(*axis, x.shape.len()).map_err(|m| self.failed(step, m))?;
                let out = shaped::gather_shape(&x.shape, a, indices, shape)
                    .map_err(|m| self.failed(step, m))?;
                let mut data = vec![T::ZERO; out.iter().product()];
                shaped::gather(&x.shape, a, indices, &x.data, &mut data, true);
                Tensor { shape: out, data }
            }
            Op::Reduce {
                axes,
                keepdims,
                mean,
            } => {
                let (kept, scale) = self.reduction(step, &x.shape, axes, *mean)?;
                let data = shaped::reduce_forward(&x.data, &x.shape, &kept, scale);
                let shape = if *keepdims {
                    kept
                } else {
                    let axes = self.reduced_axes(step, &x.shape, axes)?;
                    x.shape
                        .iter()
                        .enumerate()
                        .filter(|(d, _)| !axes.contains(d))
                        .map(|(_, &n)| n)
                        .collect()
                };
                Tensor { shape, data }
            }
            Op::Transpose(perm) => {
                if perm.len() != x.shape.len() {
                    return bad(format!("perm {perm:?} for shape {:?}", x.shape));
                }
                let (shape, data) = shaped::transpose(&x.shape, perm, &x.data);
                Tensor { shape, data }
            }
            Op::Relu => map(x, |v| if v > T::ZERO { v } else { T::ZERO }),
            Op::Clip { min, max } => {
                let (lo, hi) = (T::from_f64(*min), T::from_f64(*max));
                map(x, |v| {
                    if v < lo {
                        lo
                    } else if v > hi {
                        hi
                    } else {
                        v
                    }
                })
            }
            Op::Add => {
                let mut data = x.data.clone();
                for &i in &step.inputs[1..] {
                    let y = &values[i];
                    if x.shape != y.shape {
                        return bad(format!(
                            "adds shapes {:?} and {:?}; only equal shapes are supported",
                            x.shape, y.shape
                        ));
                    }
                    for (a, &b) in data.iter_mut().zip(&y.data) {
                        *a += b;
                    }
                }
                Tensor {
                    shape: x.shape.clone(),
                    data,
                }
            }
            Op::GlobalAveragePool => {
                let [c, h, w] = image4(x)?;
                let hw = h * w;
                let k = T::from_f64(1.0 / hw as f64);
                Tensor {
                    shape: vec![n, c, 1, 1],
                    data: x
                        .data
                        .chunks_exact(hw)
                        .map(|p| p.iter().copied().sum::<T>() * k)
                        .collect(),
                }
            }
            Op::Reshape(r) => Tensor {
                shape: r.shape(&x.shape).map_err(|m| self.failed(step, m))?,
                data: x.data.clone(),
            },
            Op::Gemm {
                weight,
                bias,
                alpha,
                beta,
                trans_b,
            } => {
                let k = x.data.len() / n;
                if x.shape.len() != 2 {
                    return bad(format!("expects a matrix, got shape {:?}", x.shape));
                }
                let wt = &self.params[*weight];
                let (wk, m) = if *trans_b {
                    (wt.shape[1], wt.shape[0])
                } else {
                    (wt.shape[0], wt.shape[1])
                };
                if wk != k {
                    return bad(format!("weight {:?} does not fit {k} inputs", wt.shape));
                }
                let mut out = vec![T::ZERO; n * m];
                if let Some(b) = bias {
                    let b = &self.params[*b].values;
                    let beta = T::from_f64(*beta);
                    for row in out.chunks_exact_mut(m) {
                        for (j, o) in row.iter_mut().enumerate() {
                            *o = beta * b[if b.len() == 1 { 0 } else { j }];
                        }
                    }
                }
                let b = if *trans_b { (1, k) } else { (m, 1) };
                T::gemm(
                    n,
                    k,
                    m,
                    T::from_f64(*alpha),
                    (&x.data, k, 1),
                    (&wt.values, b.0, b.1),
                    T::ONE,
                    (&mut out, m, 1),
                );
                Tensor {
                    shape: vec![n, m],
                    data: out,
                }
            }
            Op::Lrn(lrn) => {
                let [c, h, w] = image4(x)?;
                let per = c * h * w;
                let mut out = vec![T::ZERO; x.data.len()];
                for (src, dst) in x.data.chunks_exact(per).zip(out.chunks_exact_mut(per)) {
                    lrn.forward(src, c, h * w, dst);
                }
                Tensor {
                    shape: x.shape.clone(),
                    data: out,
                }
            }
            Op::Identity => x.clone(),
            Op::Softmax { axis, legacy } => {
                let (len, inner) = self.softmax_axis(step, &x.shape, *axis, *legacy)?;
                let mut out = x.data.clone();
                shaped::softmax_forward(&mut out, len, inner);
                Tensor {
                    shape: x.shape.clone(),
                    data: out,
                }
            }
        })
    }

    /// An operand's shape and values.
    fn arg<'a>(&'a self, values: &'a [Tensor<T>], a: Arg) -> (&'a [usize], &'a [T]) {
        match a {
            Arg::Value(s) => (&values[s].shape, &values[s].data),
            Arg::Param(p) => (&self.params[p].shape, &self.params[p].values),
            Arg::Const(c) => (&self.consts[c].shape, &self.consts[c].data),
        }
    }

    /// The values per normalised row of a LayerNormalization, checking its scale and bias.
    fn norm_inner(
        &self,
        step: &Step,
        shape: &[usize],
        axis: i64,
        scale: Arg,
        bias: Option<Arg>,
    ) -> Result<usize, EvalError> {
        let a = shaped_axis(axis, shape.len()).map_err(|m| self.failed(step, m))?;
        let inner: usize = shape[a..].iter().product();
        let len = |a: Arg| match a {
            Arg::Param(p) => self.params[p].values.len(),
            Arg::Const(c) => self.consts[c].data.len(),
            Arg::Value(_) => 0,
        };
        for arg in std::iter::once(scale).chain(bias) {
            let l = len(arg);
            if l != inner && l != 1 {
                return Err(self.failed(
                    step,
                    format!("{l} scale or bias values for rows of {inner} (shape {shape:?})"),
                ));
            }
        }
        Ok(inner)
    }

    /// The `(len, inner)` of a softmax over `axis` of `shape`.
    fn softmax_axis(
        &self,
        step: &Step,
        shape: &[usize],
        axis: i64,
        legacy: bool,
    ) -> Result<(usize, usize), EvalError> {
        let a = shaped_axis(axis, shape.len()).map_err(|m| self.failed(step, m))?;
        Ok(if legacy {
            (shape[a..].iter().product(), 1)
        } else {
            (shape[a], shape[a + 1..].iter().product())
        })
    }

    /// The slice that is part `index` of `parts` equal parts along `axis`.
    fn split_plan(
        &self,
        step: &Step,
        shape: &[usize],
        axis: i64,
        index: usize,
        parts: usize,
    ) -> Result<(Vec<usize>, usize, Vec<usize>), EvalError> {
        let a = shaped_axis(axis, shape.len()).map_err(|m| self.failed(step, m))?;
        // ONNX: parts of ceil(len / parts), the last one smaller.
        let size = shape[a].div_ceil(parts) as i64;
        let start = size * index as i64;
        shaped::slice_plan(
            shape,
            &[SliceAxis {
                axis: a as i64,
                start,
                end: start + size,
                step: 1,
            }],
        )
        .map_err(|m| self.failed(step, m))
    }

    fn reduced_axes(
        &self,
        step: &Step,
        shape: &[usize],
        axes: &Option<Vec<i64>>,
    ) -> Result<Vec<usize>, EvalError> {
        match axes {
            None => Ok((0..shape.len()).collect()),
            Some(axes) => axes
                .iter()
                .map(|&a| shaped_axis(a, shape.len()))
                .collect::<Result<_, _>>()
                .map_err(|m| self.failed(step, m)),
        }
    }

    /// The kept shape of a reduction and its scale (1, or 1 / count for a mean).
    fn reduction(
        &self,
        step: &Step,
        shape: &[usize],
        axes: &Option<Vec<i64>>,
        mean: bool,
    ) -> Result<(Vec<usize>, T), EvalError> {
        let axes = self.reduced_axes(step, shape, axes)?;
        let kept = shaped::reduced_shape(shape, &axes);
        let count = shape.iter().product::<usize>() / kept.iter().product::<usize>().max(1);
        let scale = if mean {
            T::from_f64(1.0 / count.max(1) as f64)
        } else {
            T::ONE
        };
        Ok((kept, scale))
    }

    /// Backward through the tape from `d_output`; returns the input gradient (empty unless
    /// asked for) and, when asked, the parameter gradients.
    #[allow(clippy::type_complexity)]
    fn backward(
        &self,
        tape: Tape<T>,
        d_output: Vec<T>,
        wrt: Wrt,
        par: usize,
    ) -> Result<(Vec<T>, Option<Vec<Vec<T>>>), EvalError> {
        let Tape { values, aux, stats } = tape;
        let n = values[0].shape[0];
        let needed = self.gradients_needed(wrt);
        let mut grads: Vec<Option<Vec<T>>> = vec![None; self.slots];
        grads[self.output] = Some(d_output);
        let mut dparams: Option<Vec<Vec<T>>> = wrt.parameters().then(|| {
            self.params
                .iter()
                .map(|p| vec![T::ZERO; p.values.len()])
                .collect()
        });
        for (i, step) in self.steps.iter().enumerate().rev() {
            let Some(dy) = grads[step.output].take() else {
                continue; // nothing downstream depends on this value
            };
            let x = &values[step.inputs[0]];
            let y = &values[step.output];
            let add =
                |slot: usize, g: Vec<T>, grads: &mut Vec<Option<Vec<T>>>| match &mut grads[slot] {
                    Some(acc) => {
                        for (a, b) in acc.iter_mut().zip(g) {
                            *a += b;
                        }
                    }
                    none => *none = Some(g),
                };
            // Whether an operand needs its gradient; where it goes.
            let wants = |a: Arg, dparams: &Option<Vec<Vec<T>>>| match a {
                Arg::Value(_) => true,
                Arg::Param(_) => dparams.is_some(),
                Arg::Const(_) => false,
            };
            let give = |a: Arg,
                        g: Option<Vec<T>>,
                        grads: &mut Vec<Option<Vec<T>>>,
                        dparams: &mut Option<Vec<Vec<T>>>| {
                let Some(g) = g else { return };
                match a {
                    Arg::Value(s) => add(s, g, grads),
                    Arg::Param(p) => {
                        if let Some(dp) = dparams.as_mut() {
                            for (s, v) in dp[p].iter_mut().zip(g) {
                                *s += v;
                            }
                        }
                    }
                    Arg::Const(_) => {}
                }
            };
            match &step.op {
                Op::Conv {
                    weight,
                    bias,
                    group,
                    window,
                } => {
                    let [_, cin, h, w] = x.shape[..] else {
                        unreachable!("checked forward")
                    };
                    let wt = &self.params[*weight];
                    let cout = wt.shape[0];
                    let g = window.resolve(h, w).expect("resolved forward");
                    let mut dx = needed[step.inputs[0]].then(|| vec![T::ZERO; x.data.len()]);
                    let (mut dw, mut db) = (None, None);
                    if let Some(dp) = dparams.as_mut() {
                        dw = Some(std::mem::take(&mut dp[*weight]));
                        db = bias.map(|b| std::mem::take(&mut dp[b]));
                    }
                    conv_backward(
                        &x.data,
                        &wt.values,
                        &dy,
                        cin,
                        cout,
                        *group,
                        &g,
                        dx.as_deref_mut(),
                        dw.as_deref_mut(),
                        db.as_deref_mut(),
                        par,
                    );
                    if let Some(dp) = dparams.as_mut() {
                        dp[*weight] = dw.expect("taken above");
                        if let (Some(b), Some(db)) = (bias, db) {
                            dp[*b] = db;
                        }
                    }
                    if let Some(dx) = dx {
                        add(step.inputs[0], dx, &mut grads);
                    }
                }
                Op::MaxPool(_) => {
                    let [_, c, h, w] = x.shape[..] else {
                        unreachable!("checked forward")
                    };
                    let (hw, ohw) = (h * w, y.shape[2] * y.shape[3]);
                    let mut dx = vec![T::ZERO; x.data.len()];
                    for p in 0..n * c {
                        kernels::max_pool_backward(
                            &dy[p * ohw..(p + 1) * ohw],
                            &aux[i][p * ohw..(p + 1) * ohw],
                            &mut dx[p * hw..(p + 1) * hw],
                        );
                    }
                    add(step.inputs[0], dx, &mut grads);
                }
                Op::AveragePool(window) => {
                    let [_, c, h, w] = x.shape[..] else {
                        unreachable!("checked forward")
                    };
                    let g = window.resolve(h, w).expect("resolved forward");
                    let (hw, ohw) = (h * w, g.out_len());
                    let mut dx = vec![T::ZERO; x.data.len()];
                    for p in 0..n * c {
                        kernels::avg_pool_backward(
                            &dy[p * ohw..(p + 1) * ohw],
                            &g,
                            &mut dx[p * hw..(p + 1) * hw],
                        );
                    }
                    add(step.inputs[0], dx, &mut grads);
                }
                Op::BatchNorm(bn) => {
                    let c = x.shape[1];
                    let inner = x.data.len() / (n * c).max(1);
                    let gamma = self.channel_values(bn.scale);
                    let eps = T::from_f64(bn.epsilon);
                    let batch = !stats[i].is_empty();
                    let (mean, inv): (Vec<T>, Vec<T>) = if batch {
                        (stats[i][..c].to_vec(), stats[i][2 * c..].to_vec())
                    } else {
                        let r = &self.running;
                        (
                            r[bn.mean].values.clone(),
                            r[bn.var]
                                .values
                                .iter()
                                .map(|&v| T::ONE / (v + eps).sqrt())
                                .collect(),
                        )
                    };
                    // Per channel: sum of dy and of dy * xhat (in f64).
                    let (mut s1, mut s2) = (vec![0.0f64; c], vec![0.0f64; c]);
                    for (xi, di) in x
                        .data
                        .chunks_exact(c * inner)
                        .zip(dy.chunks_exact(c * inner))
                    {
                        for k in 0..c {
                            let plane = k * inner..(k + 1) * inner;
                            let (u, s) = (mean[k].to_f64(), inv[k].to_f64());
                            for (&xv, &d) in xi[plane.clone()].iter().zip(&di[plane]) {
                                s1[k] += d.to_f64();
                                s2[k] += d.to_f64() * (xv.to_f64() - u) * s;
                            }
                        }
                    }
                    let sdy: Vec<T> = s1.into_iter().map(T::from_f64).collect();
                    let sdyx: Vec<T> = s2.into_iter().map(T::from_f64).collect();
                    let count = T::from_f64((x.data.len() / c.max(1)) as f64);
                    let mut dx = dy;
                    for (xi, di) in x
                        .data
                        .chunks_exact(c * inner)
                        .zip(dx.chunks_exact_mut(c * inner))
                    {
                        for k in 0..c {
                            let a = gamma[k] * inv[k];
                            let plane = k * inner..(k + 1) * inner;
                            for (&xv, d) in xi[plane.clone()].iter().zip(&mut di[plane]) {
                                *d = if batch {
                                    let xhat = (xv - mean[k]) * inv[k];
                                    a * (*d - sdy[k] / count - xhat * sdyx[k] / count)
                                } else {
                                    a * *d
                                };
                            }
                        }
                    }
                    add(step.inputs[0], dx, &mut grads);
                    if wants(bn.scale, &dparams) {
                        give(bn.scale, Some(sdyx), &mut grads, &mut dparams);
                    }
                    if wants(bn.bias, &dparams) {
                        give(bn.bias, Some(sdy), &mut grads, &mut dparams);
                    }
                }
                Op::Concat(a) => {
                    let a = shaped_axis(*a, x.shape.len()).expect("checked forward");
                    let shapes: Vec<&[usize]> =
                        step.inputs.iter().map(|&i| &values[i].shape[..]).collect();
                    for (&i, dx) in step
                        .inputs
                        .iter()
                        .zip(shaped::concat_backward(&dy, &shapes, a))
                    {
                        add(i, dx, &mut grads);
                    }
                }
                Op::Unary(f) => {
                    let dx = dy
                        .iter()
                        .zip(&x.data)
                        .zip(&y.data)
                        .map(|((&d, &v), &o)| d * f.derivative(v, o))
                        .collect();
                    add(step.inputs[0], dx, &mut grads);
                }
                Op::Binary { op, a, b } => {
                    let (va, vb) = (self.arg(&values, *a), self.arg(&values, *b));
                    let zeros = |v: (&[usize], &[T])| vec![T::ZERO; v.1.len()];
                    let mut da = wants(*a, &dparams).then(|| zeros(va));
                    let mut db = wants(*b, &dparams).then(|| zeros(vb));
                    op.backward(
                        va,
                        vb,
                        (&y.shape, &y.data),
                        &dy,
                        da.as_deref_mut(),
                        db.as_deref_mut(),
                    );
                    give(*a, da, &mut grads, &mut dparams);
                    give(*b, db, &mut grads, &mut dparams);
                }
                Op::MatMul { a, b } => {
                    let (va, vb) = (self.arg(&values, *a), self.arg(&values, *b));
                    let plan = MatMulPlan::new(va.0, vb.0).expect("checked forward");
                    let zeros = |v: (&[usize], &[T])| vec![T::ZERO; v.1.len()];
                    let mut da = wants(*a, &dparams).then(|| zeros(va));
                    let mut db = wants(*b, &dparams).then(|| zeros(vb));
                    plan.backward(va.1, vb.1, &dy, da.as_deref_mut(), db.as_deref_mut());
                    give(*a, da, &mut grads, &mut dparams);
                    give(*b, db, &mut grads, &mut dparams);
                }
                Op::LayerNorm {
                    axis,
                    epsilon,
                    scale,
                    bias,
                } => {
                    let inner = self.norm_inner(step, &x.shape, *axis, *scale, *bias)?;
                    let vs = self.arg(&values, *scale).1;
                    let mut dx = vec![T::ZERO; x.data.len()];
                    let mut ds = wants(*scale, &dparams).then(|| vec![T::ZERO; vs.len()]);
                    let mut db = bias
                        .filter(|b| wants(*b, &dparams))
                        .map(|b| vec![T::ZERO; self.arg(&values, b).1.len()]);
                    shaped::layer_norm_backward(
                        &x.data,
                        inner,
                        vs,
                        *epsilon,
                        &dy,
                        Some(&mut dx),
                        ds.as_deref_mut(),
                        db.as_deref_mut(),
                    );
                    give(*scale, ds, &mut grads, &mut dparams);
                    if let Some(b) = bias {
                        give(*b, db, &mut grads, &mut dparams);
                    }
                    add(step.inputs[0], dx, &mut grads);
                }
                Op::Slice(axes) => {
                    let plan = shaped::slice_plan(&x.shape, axes).expect("checked forward");
                    let mut dx = vec![T::ZERO; x.data.len()];
                    shaped::slice_backward(&dy, &plan, &mut dx);
                    add(step.inputs[0], dx, &mut grads);
                }
                Op::SplitPart { axis, index, parts } => {
                    let plan = self.split_plan(step, &x.shape, *axis, *index, *parts)?;
                    let mut dx = vec![T::ZERO; x.data.len()];
                    shaped::slice_backward(&dy, &plan, &mut dx);
                    add(step.inputs[0], dx, &mut grads);
                }
                Op::Gather { axis, indices, .. } => {
                    let a = shaped_axis(*axis, x.shape.len()).expect("checked forward");
                    let mut dx = vec![T::ZERO; x.data.len()];
                    shaped::gather(&x.shape, a, indices, &dy, &mut dx, false);
                    add(step.inputs[0], dx, &mut grads);
                }
                Op::Reduce { axes, mean, .. } => {
                    let (kept, scale) = self.reduction(step, &x.shape, axes, *mean)?;
                    let mut dx = vec![T::ZERO; x.data.len()];
                    shaped::reduce_backward(&dy, &x.shape, &kept, scale, &mut dx);
                    add(step.inputs[0], dx, &mut grads);
                }
                Op::Transpose(perm) => {
                    // The adjoint of a permutation is the inverse permutation.
                    let y_shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
                    let mut inverse = vec![0; perm.len()];
                    for (i, &p) in perm.iter().enumerate() {
                        inverse[p] = i;
                    }
                    let (_, dx) = shaped::transpose(&y_shape, &inverse, &dy);
                    add(step.inputs[0], dx, &mut grads);
                }
                Op::Relu => {
                    let dx = dy
                        .iter()
                        .zip(&x.data)
                        .map(|(&d, &v)| if v > T::ZERO { d } else { T::ZERO })
                        .collect();
                    add(step.inputs[0], dx, &mut grads);
                }
                Op::Clip { min, max } => {
                    let (lo, hi) = (T::from_f64(*min), T::from_f64(*max));
                    let dx = dy
                        .iter()
                        .zip(&x.data)
                        .map(|(&d, &v)| if v > lo && v < hi { d } else { T::ZERO })
                        .collect();
                    add(step.inputs[0], dx, &mut grads);
                }
                Op::Add => {
                    for &i in &step.inputs[1..] {
                        add(i, dy.clone(), &mut grads);
                    }
                    add(step.inputs[0], dy, &mut grads);
                }
                Op::GlobalAveragePool => {
                    let hw = x.shape[2] * x.shape[3];
                    let k = T::from_f64(1.0 / hw as f64);
                    let mut dx = vec![T::ZERO; x.data.len()];
                    for (p, &d) in dx.chunks_exact_mut(hw).zip(&dy) {
                        p.fill(d * k);
                    }
                    add(step.inputs[0], dx, &mut grads);
                }
                Op::Reshape(_) | Op::Identity => add(step.inputs[0], dy, &mut grads),
                Op::Gemm {
                    weight,
                    bias,
                    alpha,
                    beta,
                    trans_b,
                } => {
                    let k = x.data.len() / n;
                    let wt = &self.params[*weight];
                    let m = dy.len() / n;
                    let alpha = T::from_f64(*alpha);
                    // dx (n x k) = alpha * dy (n x m) * op(W)^T (m x k)
                    let wv = if *trans_b { (k, 1) } else { (1, m) };
                    let mut dx = vec![T::ZERO; x.data.len()];
                    T::gemm(
                        n,
                        m,
                        k,
                        alpha,
                        (&dy, m, 1),
                        (&wt.values, wv.0, wv.1),
                        T::ZERO,
                        (&mut dx, k, 1),
                    );
                    if let Some(dp) = dparams.as_mut() {
                        // d op(W) (k x m) = alpha * x^T (k x n) * dy (n x m); W is op(W) or
                        // its transpose.
                        let c = if *trans_b { (1, k) } else { (m, 1) };
                        T::gemm(
                            k,
                            n,
                            m,
                            alpha,
                            (&x.data, 1, k),
                            (&dy, m, 1),
                            T::ONE,
                            (&mut dp[*weight], c.0, c.1),
                        );
                        if let Some(b) = bias {
                            let beta = T::from_f64(*beta);
                            let db = &mut dp[*b];
                            let scalar = db.len() == 1;
                            for row in dy.chunks_exact(m) {
                                for (j, &d) in row.iter().enumerate() {
                                    db[if scalar { 0 } else { j }] += beta * d;
                                }
                            }
                        }
                    }
                    add(step.inputs[0], dx, &mut grads);
                }
                Op::Lrn(lrn) => {
                    let [_, c, h, w] = x.shape[..] else {
                        unreachable!("checked forward")
                    };
                    let per = c * h * w;
                    let mut dx = vec![T::ZERO; x.data.len()];
                    for ((src, d), out) in x
                        .data
                        .chunks_exact(per)
                        .zip(dy.chunks_exact(per))
                        .zip(dx.chunks_exact_mut(per))
                    {
                        lrn.backward(src, d, c, h * w, out);
                    }
                    add(step.inputs[0], dx, &mut grads);
                }
                Op::Softmax { axis, legacy } => {
                    let (len, inner) = self.softmax_axis(step, &x.shape, *axis, *legacy)?;
                    let mut dx = vec![T::ZERO; dy.len()];
                    shaped::softmax_backward(&y.data, &dy, len, inner, &mut dx);
                    add(step.inputs[0], dx, &mut grads);
                }
            }
        }
        let dx = match grads[0].take() {
            Some(dx) if wrt.input() => dx,
            _ if wrt.input() => vec![T::ZERO; values[0].data.len()],
            _ => Vec::new(),
        };
        Ok((dx, dparams))
    }

    /// Per value slot, whether its gradient is needed: a slot computed from the input when
    /// the input's gradient is asked for, and one computed from a parameter when theirs are.
    fn gradients_needed(&self, wrt: Wrt) -> Vec<bool> {
        let mut needed = vec![false; self.slots];
        needed[0] = wrt.input();
        for step in &self.steps {
            needed[step.output] = (wrt.parameters() && step.op.reads_parameters())
                || step.inputs.iter().any(|&i| needed[i]);
        }
        needed
    }
}

impl Op {
    /// Whether the op reads a trainable parameter.
    fn reads_parameters(&self) -> bool {
        let param = |a: &Arg| matches!(a, Arg::Param(_));
        match self {
            Op::Conv { .. } | Op::Gemm { .. } => true,
            Op::Binary { a, b, .. } | Op::MatMul { a, b } => param(a) || param(b),
            Op::LayerNorm { scale, bias, .. } => param(scale) || bias.as_ref().is_some_and(param),
            Op::BatchNorm(bn) => param(&bn.scale) || param(&bn.bias),
            _ => false,
        }
    }
}

fn add_all<T: Real>(sum: &mut [Vec<T>], more: Vec<Vec<T>>) {
    for (s, d) in sum.iter_mut().zip(more) {
        for (a, b) in s.iter_mut().zip(d) {
            *a += b;
        }
    }
}

fn join<R>(h: std::thread::ScopedJoinHandle<'_, Result<R, EvalError>>) -> Result<R, EvalError> {
    h.join().unwrap_or_else(|_| {
        Err(EvalError::BadInput(
            "a thread of the differentiable evaluator panicked".into(),
        ))
    })
}

fn map<T: Real>(x: &Tensor<T>, f: impl Fn(T) -> T) -> Tensor<T> {
    Tensor {
        shape: x.shape.clone(),
        data: x.data.iter().map(|&v| f(v)).collect(),
    }
}

/// Whether the convolution reads its input directly as the im2col matrix (1x1, stride 1,
/// no padding).
fn pointwise(g: &Window) -> bool {
    g.kh == 1
        && g.kw == 1
        && g.sh == 1
        && g.sw == 1
        && g.pt == 0
        && g.pl == 0
        && g.oh == g.h
        && g.ow == g.w
}

/// A batch of convolutions: depthwise (one input and one output channel per group) as a direct
/// loop, the rest as im2col and a matrix product per image and group (a first layer's one input
/// channel with many outputs, LeNet's, is a product too: the direct loop would read its plane
/// once per output channel).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_forward<T: Real>(
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    cin: usize,
    cout: usize,
    group: usize,
    g: &Window,
    out: &mut [T],
    par: usize,
) {
    let (hw, ohw) = (g.h * g.w, g.out_len());
    let (cg, og) = (cin / group, cout / group);
    let kk = g.kh * g.kw;
    let k = cg * kk;
    let depthwise = cg == 1 && og == 1;
    let mut col = if depthwise || pointwise(g) {
        Vec::new()
    } else {
        vec![T::ZERO; k * ohw]
    };
    for (xi, oi) in x
        .chunks_exact(cin * hw)
        .zip(out.chunks_exact_mut(cout * ohw))
    {
        if depthwise {
            split_rows(oi, ohw, par, &|oc0, planes: &mut [T]| {
                for (j, plane) in planes.chunks_exact_mut(ohw).enumerate() {
                    let oc = oc0 + j;
                    let ic = oc / og;
                    kernels::depthwise_forward(
                        &xi[ic * hw..(ic + 1) * hw],
                        &w[oc * kk..(oc + 1) * kk],
                        b.map_or(T::ZERO, |b| b[oc]),
                        g,
                        plane,
                    );
                }
            });
            continue;
        }
        for gi in 0..group {
            let xg = &xi[gi * cg * hw..(gi + 1) * cg * hw];
            let src: &[T] = if pointwise(g) {
                xg
            } else {
                kernels::im2col(xg, cg, g, &mut col);
                &col
            };
            let og_out = &mut oi[gi * og * ohw..(gi + 1) * og * ohw];
            let wg = &w[gi * og * k..(gi + 1) * og * k];
            split_rows(og_out, ohw, par, &|r0, rows: &mut [T]| {
                for (j, plane) in rows.chunks_exact_mut(ohw).enumerate() {
                    plane.fill(b.map_or(T::ZERO, |b| b[gi * og + r0 + j]));
                }
                T::gemm(
                    rows.len() / ohw,
                    k,
                    ohw,
                    T::ONE,
                    (&wg[r0 * k..], k, 1),
                    (src, ohw, 1),
                    T::ONE,
                    (rows, ohw, 1),
                );
            });
        }
    }
}

/// The backward of [`conv_forward`]: adds into `dx` when given (a network's input needs no
/// gradient when only the parameters are trained), and into `dw` and `db` when given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_backward<T: Real>(
    x: &[T],
    w: &[T],
    dout: &[T],
    cin: usize,
    cout: usize,
    group: usize,
    g: &Window,
    dx: Option<&mut [T]>,
    mut dw: Option<&mut [T]>,
    mut db: Option<&mut [T]>,
    par: usize,
) {
    let (hw, ohw) = (g.h * g.w, g.out_len());
    let (cg, og) = (cin / group, cout / group);
    let kk = g.kh * g.kw;
    let k = cg * kk;
    let direct = pointwise(g);
    let depthwise = cg == 1 && og == 1;
    let mut dcol = if depthwise || dx.is_none() {
        Vec::new()
    } else {
        vec![T::ZERO; k * ohw]
    };
    let mut col = if depthwise || direct || dw.is_none() {
        Vec::new()
    } else {
        vec![T::ZERO; k * ohw]
    };
    // Without an input gradient the depthwise loop still wants a plane to write into.
    let mut scratch = if dx.is_none() && depthwise {
        vec![T::ZERO; x.len()]
    } else {
        Vec::new()
    };
    let dx: &mut [T] = match dx {
        Some(dx) => dx,
        None => &mut scratch,
    };
    let want_dx = !dx.is_empty();
    for (n, (xi, di)) in x
        .chunks_exact(cin * hw)
        .zip(dout.chunks_exact(cout * ohw))
        .enumerate()
    {
        let dxi: &mut [T] = if want_dx {
            &mut dx[n * cin * hw..(n + 1) * cin * hw]
        } else {
            &mut []
        };
        if let Some(db) = db.as_deref_mut() {
            for (oc, plane) in di.chunks_exact(ohw).enumerate() {
                db[oc] += plane.iter().copied().sum::<T>();
            }
        }
        if depthwise && par > 1 && cin * hw >= SPLIT_MIN {
            // One output channel per input channel: planes are independent.
            let threads = par.min(cout);
            let per = cout.div_ceil(threads);
            std::thread::scope(|s| {
                let mut dws: Vec<Option<&mut [T]>> = match dw.as_deref_mut() {
                    Some(dw) => dw.chunks_mut(per * kk).map(Some).collect(),
                    None => (0..threads).map(|_| None).collect(),
                };
                for (t, dxs) in dxi.chunks_mut(per * hw).enumerate() {
                    let mut dwt = dws.get_mut(t).and_then(Option::take);
                    s.spawn(move || {
                        for (j, dplane) in dxs.chunks_exact_mut(hw).enumerate() {
                            let c = t * per + j;
                            kernels::depthwise_backward(
                                &xi[c * hw..(c + 1) * hw],
                                &w[c * kk..(c + 1) * kk],
                                &di[c * ohw..(c + 1) * ohw],
                                g,
                                dplane,
                                dwt.as_deref_mut().map(|dw| &mut dw[j * kk..(j + 1) * kk]),
                            );
                        }
                    });
                }
            });
            continue;
        }
        if depthwise {
            for oc in 0..cout {
                let ic = oc / og;
                kernels::depthwise_backward(
                    &xi[ic * hw..(ic + 1) * hw],
                    &w[oc * kk..(oc + 1) * kk],
                    &di[oc * ohw..(oc + 1) * ohw],
                    g,
                    &mut dxi[ic * hw..(ic + 1) * hw],
                    dw.as_deref_mut().map(|dw| &mut dw[oc * kk..(oc + 1) * kk]),
                );
            }
            continue;
        }
        for gi in 0..group {
            let wg = &w[gi * og * k..(gi + 1) * og * k];
            let dg = &di[gi * og * ohw..(gi + 1) * og * ohw];
            let xg = &xi[gi * cg * hw..(gi + 1) * cg * hw];
            // dcol (k x ohw) = W_g^T (k x og) * dout_g (og x ohw)
            let dcol_rows = |beta: T| {
                move |r0: usize, rows: &mut [T]| {
                    T::gemm(
                        rows.len() / ohw,
                        og,
                        ohw,
                        T::ONE,
                        (&wg[r0..], 1, k),
                        (dg, ohw, 1),
                        beta,
                        (rows, ohw, 1),
                    )
                }
            };
            if !want_dx {
                // the parameters' gradients only
            } else if direct {
                split_rows(
                    &mut dxi[gi * cg * hw..(gi + 1) * cg * hw],
                    ohw,
                    par,
                    &dcol_rows(T::ONE),
                );
            } else {
                split_rows(&mut dcol, ohw, par, &dcol_rows(T::ZERO));
                kernels::col2im(&dcol, cg, g, &mut dxi[gi * cg * hw..(gi + 1) * cg * hw]);
            }
            if let Some(dw) = dw.as_deref_mut() {
                let src: &[T] = if direct {
                    xg
                } else {
                    kernels::im2col(xg, cg, g, &mut col);
                    &col
                };
                // dW_g (og x k) += dout_g (og x ohw) * col^T (ohw x k)
                T::gemm(
                    og,
                    ohw,
                    k,
                    T::ONE,
                    (dg, ohw, 1),
                    (src, 1, ohw),
                    T::ONE,
                    (&mut dw[gi * og * k..(gi + 1) * og * k], k, 1),
                );
            }
        }
    }
}

/// Outputs below which a layer of one image is not split across threads: spawning and joining
/// scoped threads costs more than the work (measured on LeNet, the MNIST ResNet and
/// MobileNetV3 at batch 1, BENCHMARKS.md).
const SPLIT_MIN: usize = 1 << 14;

/// Per channel of `n` images of `c` planes of `inner` values: the mean and the biased variance
/// (two passes, accumulated in f64).
fn channel_moments<T: Real>(x: &[T], n: usize, c: usize, inner: usize) -> (Vec<T>, Vec<T>) {
    let m = (n * inner).max(1) as f64;
    let planes = || {
        x.chunks_exact(c * inner)
            .take(n)
            .flat_map(|img| img.chunks_exact(inner).enumerate())
    };
    let mut mean = vec![0.0f64; c];
    for (k, plane) in planes() {
        mean[k] += plane.iter().map(|v| v.to_f64()).sum::<f64>();
    }
    mean.iter_mut().for_each(|u| *u /= m);
    let mut var = vec![0.0f64; c];
    for (k, plane) in planes() {
        var[k] += plane
            .iter()
            .map(|v| (v.to_f64() - mean[k]).powi(2))
            .sum::<f64>();
    }
    (
        mean.into_iter().map(T::from_f64).collect(),
        var.into_iter().map(|v| T::from_f64(v / m)).collect(),
    )
}

/// Runs `f(first_row, rows)` on `par` consecutive blocks of whole rows of `data` (rows of
/// `row_len`), in scoped threads when `par > 1`.
fn split_rows<T: Real>(
    data: &mut [T],
    row_len: usize,
    par: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    let rows = data.len() / row_len.max(1);
    if par <= 1 || rows < 2 || data.len() < SPLIT_MIN {
        f(0, data);
        return;
    }
    let per = rows.div_ceil(par.min(rows));
    std::thread::scope(|s| {
        for (i, block) in data.chunks_mut(per * row_len).enumerate() {
            s.spawn(move || f(i * per, block));
        }
    });
}
