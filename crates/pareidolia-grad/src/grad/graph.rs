//! The backward pass as an ONNX graph, for the backends that only infer (issue 25, item 3).
//!
//! From a loaded [`Network`] (the evaluator's own program: constant subgraphs folded, every
//! op one the evaluator differentiates) this writes a new ONNX model, opset 17, that computes
//! the network's outputs *and* the gradient of an [`Objective`] with respect to its input,
//! from standard ops only: a convolution's adjoint is a `ConvTranspose` with the same weights
//! (or, at stride 1 where ONNX Runtime's blocked layout applies, a `Conv` with the weights
//! flipped and transposed within groups), max-pooling's is a `ScatterElements` (`reduction = "add"`) of the gradient to the indices
//! `MaxPool` returns, average pooling's a depthwise `ConvTranspose` of ones after dividing by
//! the counts, and the rest closed forms (softmax, LayerNorm, LRN, broadcasting's sums). Any
//! runtime that runs ONNX runs it — ONNX Runtime on the CPU or on CUDA, with its own kernels
//! and graph optimisations — so no op needs a GPU kernel of ours. The evaluator stays the
//! reference these graphs are tested against (`tests/integration/gradient_graph.rs`).
//!
//! The graph's inputs are `x` (`[rows, C, H, W]`, the model's normalised input, one row per
//! crop) and `target` (`[rows, classes]`, each row's target class one-hot); its outputs are
//! `out` (the network's outputs, the logits where a final Softmax was removed) and `dx` (d
//! objective / d x). The objective's seed is computed inside the graph (`seed`), with the
//! ten-crop mean over each canvas's `crops` consecutive rows, exactly as
//! [`super::CpuModel::evaluate`] seeds the evaluator. Shapes that depend on the batch are taken
//! at run time (`Shape`) or written with `-1` on the one axis that carries the batch (found by
//! running the evaluator on batches of 1 and 2 at setup), so one graph serves every batch
//! size.

use prost::Message;
use tract_onnx::pb;

use super::network::{Arg, Network, Op, Padding, Reshape, Unary, WindowSpec, shaped_axis};
use super::shaped::Binary;
use crate::EvalError;
use pareidolia_core::Objective;

/// The opset the graphs are written in (`ScatterElements` with `reduction` needs 16,
/// `HardSwish` 14, axes as inputs 13; LayerNorm is written out, not the opset-17 op).
const OPSET: i64 = 17;

/// What the graph's tail computes from the network's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeedSpec {
    pub objective: Objective,
    /// Consecutive rows that are one canvas's crops (1, or 10 with `ten-crop`).
    pub crops: usize,
    /// Whether the outputs are logits (else probabilities).
    pub logits: bool,
}

/// The per-slot shapes the emitter needs, with the axis that carries the batch.
struct Shapes {
    /// Each slot's shape for a batch of 2 (empty for slots never computed).
    two: Vec<Vec<usize>>,
    /// Each slot's batch axis (`None`: the shape does not change with the batch).
    batch_axis: Vec<Option<usize>>,
}

struct Emit<'n> {
    net: &'n Network<f32>,
    shapes: Shapes,
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    names: usize,
    /// Per step: the `MaxPool` indices output, when the step is a max-pooling.
    indices: Vec<Option<String>>,
    /// Per LayerNorm step: the normalised values, `1 / sd` and the shaped scale.
    norms: Vec<Option<(String, String, String)>>,
    backward: bool,
}

fn attr_i(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        i: v,
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    }
}

fn attr_f(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        f: v,
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ..Default::default()
    }
}

/// A 2-D window attribute (`kernel_shape`, `strides`, `dilations`).
fn attr_pair(name: &str, v: [usize; 2]) -> pb::AttributeProto {
    attr_ints(name, &[v[0] as i64, v[1] as i64])
}

fn attr_s(name: &str, v: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        s: v.as_bytes().to_vec(),
        r#type: pb::attribute_proto::AttributeType::String as i32,
        ..Default::default()
    }
}

fn value_info(name: &str, rank: usize) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = (0..rank)
        .map(|i| Dimension {
            value: Some(Value::DimParam(format!("{name}_{i}"))),
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

/// The slot's value name in the graph.
fn value(slot: usize) -> String {
    if slot == 0 {
        "x".into()
    } else {
        format!("v{slot}")
    }
}

impl<'n> Emit<'n> {
    fn refuse(&self, step: usize, message: impl std::fmt::Display) -> EvalError {
        let s = &self.net.steps[step];
        EvalError::ShapeMismatch {
            model: self.net.model.clone(),
            message: format!(
                "node `{}` ({}): its backward cannot be written as an ONNX graph: {message}",
                s.node, s.op_type
            ),
        }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.names += 1;
        format!("{hint}_{}", self.names)
    }

    fn node_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: usize,
        attrs: Vec<pb::AttributeProto>,
    ) -> Vec<String> {
        let outs: Vec<String> = (0..outputs)
            .map(|_| self.fresh(&op.to_lowercase()))
            .collect();
        self.nodes.push(pb::NodeProto {
            op_type: op.into(),
            name: outs[0].clone(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outs.clone(),
            attribute: attrs,
            ..Default::default()
        });
        outs
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<pb::AttributeProto>) -> String {
        self.node_n(op, inputs, 1, attrs).remove(0)
    }

    /// A node whose output is a fixed name (a slot's value).
    fn node_to(&mut self, out: &str, op: &str, inputs: &[&str], attrs: Vec<pb::AttributeProto>) {
        self.nodes.push(pb::NodeProto {
            op_type: op.into(),
            name: format!("{out}_{}", op.to_lowercase()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.into()],
            attribute: attrs,
            ..Default::default()
        });
    }

    fn f32s(&mut self, dims: &[usize], values: Vec<f32>) -> String {
        let name = self.fresh("c");
        self.inits.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: 1,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Per-channel values as a constant that broadcasts over a rank-`rank` value's axis 1.
    fn channel_constant(&mut self, v: &[f64], rank: usize) -> String {
        let mut dims = vec![v.len()];
        dims.extend(std::iter::repeat_n(1, rank.saturating_sub(2)));
        self.f32s(&dims, v.iter().map(|&a| a as f32).collect())
    }

    fn scalar(&mut self, v: f32) -> String {
        self.f32s(&[], vec![v])
    }

    fn i64s(&mut self, values: &[i64]) -> String {
        let name = self.fresh("i");
        self.inits.push(pb::TensorProto {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: 7,
            int64_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    fn i64s_shaped(&mut self, dims: &[usize], values: &[i64]) -> String {
        let name = self.fresh("i");
        self.inits.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: 7,
            int64_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    /// An operand's name: a slot's value, or an initializer holding the parameter/constant.
    fn arg(&mut self, a: Arg, cache: &mut ArgCache) -> String {
        match a {
            Arg::Value(s) => value(s),
            Arg::Param(p) => {
                if let Some(n) = &cache.params[p] {
                    return n.clone();
                }
                let prm = &self.net.params[p];
                let n = self.f32s(&prm.shape, prm.values.clone());
                cache.params[p] = Some(n.clone());
                n
            }
            Arg::Const(c) => {
                if let Some(n) = &cache.consts[c] {
                    return n.clone();
                }
                let t = &self.net.consts[c];
                let n = self.f32s(&t.shape, t.data.clone());
                cache.consts[c] = Some(n.clone());
                n
            }
        }
    }

    /// An operand's shape (for a batch of 2).
    fn arg_shape(&self, a: Arg) -> Vec<usize> {
        match a {
            Arg::Value(s) => self.shapes.two[s].clone(),
            Arg::Param(p) => self.net.params[p].shape.clone(),
            Arg::Const(c) => self.net.consts[c].shape.clone(),
        }
    }

    /// The slot's shape with `-1` on its batch axis, for `Reshape`.
    fn sym(&self, slot: usize) -> Vec<i64> {
        sym_of(&self.shapes.two[slot], self.shapes.batch_axis[slot])
    }

    fn shape_of(&mut self, name: &str) -> String {
        self.node("Shape", &[name], vec![])
    }

    fn reshape_like(&mut self, g: &str, like: &str) -> String {
        let s = self.shape_of(like);
        self.node("Reshape", &[g, &s], vec![])
    }

    /// `g` (the gradient of a broadcast result of shape `out`) summed down to an operand of
    /// shape `shape` (`like` names the operand, whose run-time shape the sum takes).
    fn unbroadcast(&mut self, g: &str, out: &[usize], shape: &[usize], like: &str) -> String {
        let lead = out.len() - shape.len();
        let mut axes: Vec<i64> = (0..lead as i64).collect();
        for (i, &d) in shape.iter().enumerate() {
            if d == 1 && out[lead + i] != 1 {
                axes.push((lead + i) as i64);
            }
        }
        if axes.is_empty() {
            return g.to_owned();
        }
        let a = self.i64s(&axes);
        let summed = self.node("ReduceSum", &[g, &a], vec![attr_i("keepdims", 1)]);
        self.reshape_like(&summed, like)
    }

    fn zeros_like(&mut self, like: &str) -> String {
        let s = self.shape_of(like);
        let zero = pb::TensorProto {
            name: String::new(),
            dims: vec![1],
            data_type: 1,
            float_data: vec![0.0],
            ..Default::default()
        };
        let mut attr = pb::AttributeProto {
            name: "value".into(),
            r#type: pb::attribute_proto::AttributeType::Tensor as i32,
            ..Default::default()
        };
        attr.t = Some(zero);
        self.node("ConstantOfShape", &[&s], vec![attr])
    }
}

/// Initializer names already written for parameters and constants.
struct ArgCache {
    params: Vec<Option<String>>,
    consts: Vec<Option<String>>,
}

fn sym_of(shape: &[usize], batch_axis: Option<usize>) -> Vec<i64> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if Some(i) == batch_axis { -1 } else { d as i64 })
        .collect()
}

fn window_attrs(w: &WindowSpec, ceil: bool) -> Vec<pb::AttributeProto> {
    let mut a = vec![
        attr_pair("kernel_shape", w.kernel),
        attr_pair("strides", w.strides),
    ];
    match w.padding {
        Padding::Explicit(p) => a.push(attr_ints("pads", &p.map(|v| v as i64))),
        Padding::Same { upper } => a.push(attr_s(
            "auto_pad",
            if upper { "SAME_UPPER" } else { "SAME_LOWER" },
        )),
    }
    if ceil {
        a.push(attr_i("ceil_mode", i64::from(w.ceil)));
    }
    a
}

/// For the adjoint `ConvTranspose` of a window over an `h x w` input: its pads and output
/// padding, so that its output is exactly `h x w`.
fn transpose_pads(w: &WindowSpec, h: usize, wd: usize) -> Option<(Vec<i64>, Vec<i64>)> {
    let r = w.resolve(h, wd)?;
    let mut pads = [0i64; 4];
    let mut out_pad = [0i64; 2];
    for (i, (len, o, s, d, k, begin)) in [
        (h, r.oh, r.sh, r.dh, r.kh, r.pt),
        (wd, r.ow, r.sw, r.dw, r.kw, r.pl),
    ]
    .into_iter()
    .enumerate()
    {
        let full = ((o - 1) * s + d * (k - 1) + 1) as i64;
        let excess = full - begin as i64 - len as i64;
        pads[i] = begin as i64;
        if excess >= 0 {
            pads[i + 2] = excess;
        } else {
            out_pad[i] = -excess;
        }
    }
    Some((pads.to_vec(), out_pad.to_vec()))
}

impl Network<f32> {
    /// The per-slot shapes at batches 1 and 2, and each slot's batch axis; fails for a value
    /// whose shape changes with the batch in more than one axis.
    fn graph_shapes(&self) -> Result<Shapes, EvalError> {
        let one = self.slot_shapes(1)?;
        let two = self.slot_shapes(2)?;
        let mut batch_axis = vec![None; one.len()];
        for (slot, (a, b)) in one.iter().zip(&two).enumerate() {
            if a.len() != b.len() {
                return Err(self.shape_failure(slot, "changes rank with the batch size"));
            }
            let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
            match diff[..] {
                [] => {}
                [i] if b[i] == 2 * a[i] => batch_axis[slot] = Some(i),
                _ => {
                    return Err(self.shape_failure(
                        slot,
                        &format!("shape {a:?} at batch 1 and {b:?} at batch 2"),
                    ));
                }
            }
        }
        Ok(Shapes { two, batch_axis })
    }

    fn shape_failure(&self, slot: usize, message: &str) -> EvalError {
        let node = self.steps.iter().find(|s| s.output == slot).map_or_else(
            || "the input".to_owned(),
            |s| format!("`{}` ({})", s.node, s.op_type),
        );
        EvalError::ShapeMismatch {
            model: self.model.clone(),
            message: format!(
                "the output of node {node} {message}; the gradient graph needs one batch axis"
            ),
        }
    }

    /// The forward graph alone (`x` to `out`), in the form the gradient graph runs it.
    pub(crate) fn forward_graph(&self) -> Result<Vec<u8>, EvalError> {
        self.emit(None)
    }

    /// The forward and backward graph for `seed` (see the module documentation).
    pub(crate) fn gradient_graph(&self, seed: SeedSpec) -> Result<Vec<u8>, EvalError> {
        self.emit(Some(seed))
    }

    fn emit(&self, seed: Option<SeedSpec>) -> Result<Vec<u8>, EvalError> {
        let mut e = Emit {
            net: self,
            shapes: self.graph_shapes()?,
            nodes: Vec::new(),
            inits: Vec::new(),
            names: 0,
            indices: vec![None; self.steps.len()],
            norms: vec![None; self.steps.len()],
            backward: seed.is_some(),
        };
        let mut cache = ArgCache {
            params: vec![None; self.params.len()],
            consts: vec![None; self.consts.len()],
        };
        for i in 0..self.steps.len() {
            e.forward(i, &mut cache)?;
        }
        let out = value(self.output);
        e.node_to("out", "Identity", &[&out], vec![]);
        let mut outputs = vec![value_info("out", e.shapes.two[self.output].len())];
        if let Some(seed) = seed {
            let d_out = e.seed(seed, &out);
            let mut grads: Vec<Vec<String>> = vec![Vec::new(); self.slots];
            grads[self.output].push(d_out);
            for i in (0..self.steps.len()).rev() {
                e.backward(i, &mut grads, &mut cache)?;
            }
            let dx = match grads[0].len() {
                0 => e.zeros_like("x"),
                1 => grads[0][0].clone(),
                _ => {
                    let parts: Vec<&str> = grads[0].iter().map(String::as_str).collect();
                    e.node("Sum", &parts, vec![])
                }
            };
            e.node_to("dx", "Identity", &[&dx], vec![]);
            outputs.push(value_info("dx", 4));
        }
        let mut inputs = vec![value_info("x", 4)];
        if seed.is_some() {
            inputs.push(value_info("target", 2));
        }
        let graph = pb::GraphProto {
            name: format!("{} gradient", self.model),
            node: e.nodes,
            initializer: e.inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        };
        Ok(pb::ModelProto {
            ir_version: 8,
            producer_name: "pareidolia-grad".into(),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            graph: Some(graph),
            ..Default::default()
        }
        .encode_to_vec())
    }
}

impl Emit<'_> {
    fn forward(&mut self, i: usize, cache: &mut ArgCache) -> Result<(), EvalError> {
        let step = &self.net.steps[i];
        let y = value(step.output);
        let x = value(step.inputs[0]);
        match &step.op {
            Op::Conv {
                weight,
                bias,
                group,
                window,
            } => {
                let w = self.arg(Arg::Param(*weight), cache);
                let mut ins = vec![x, w];
                if let Some(b) = bias {
                    ins.push(self.arg(Arg::Param(*b), cache));
                }
                let mut attrs = window_attrs(window, false);
                attrs.push(attr_i("group", *group as i64));
                attrs.push(attr_pair("dilations", window.dilations));
                let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
                self.node_to(&y, "Conv", &ins, attrs);
            }
            Op::MaxPool(window) => {
                let mut attrs = window_attrs(window, true);
                attrs.push(attr_pair("dilations", window.dilations));
                if self.backward {
                    let idx = self.fresh("argmax");
                    self.nodes.push(pb::NodeProto {
                        op_type: "MaxPool".into(),
                        name: format!("{y}_maxpool"),
                        input: vec![x],
                        output: vec![y, idx.clone()],
                        attribute: attrs,
                        ..Default::default()
                    });
                    self.indices[i] = Some(idx);
                } else {
                    self.node_to(&y, "MaxPool", &[&x], attrs);
                }
            }
            Op::AveragePool(window) => {
                if window.dilations != [1, 1] {
                    return Err(self.refuse(i, "dilated average pooling"));
                }
                let mut attrs = window_attrs(window, true);
                attrs.push(attr_i("count_include_pad", 0));
                self.node_to(&y, "AveragePool", &[&x], attrs);
            }
            Op::Relu => self.node_to(&y, "Relu", &[&x], vec![]),
            Op::Clip { min, max } => {
                let lo = self.scalar(*min as f32);
                let hi = self.scalar(*max as f32);
                self.node_to(&y, "Clip", &[&x, &lo, &hi], vec![]);
            }
            Op::Unary(f) => {
                let (op, attrs) = match f {
                    Unary::Erf => ("Erf", vec![]),
                    Unary::Sqrt => ("Sqrt", vec![]),
                    Unary::Exp => ("Exp", vec![]),
                    Unary::Neg => ("Neg", vec![]),
                    Unary::Sigmoid => ("Sigmoid", vec![]),
                    Unary::Tanh => ("Tanh", vec![]),
                    Unary::HardSigmoid { alpha, beta } => (
                        "HardSigmoid",
                        vec![attr_f("alpha", *alpha as f32), attr_f("beta", *beta as f32)],
                    ),
                    Unary::HardSwish => ("HardSwish", vec![]),
                };
                self.node_to(&y, op, &[&x], attrs);
            }
            Op::Add => {
                let ins: Vec<String> = step.inputs.iter().map(|&s| value(s)).collect();
                let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
                self.node_to(&y, "Sum", &ins, vec![]);
            }
            Op::Binary { op, a, b } => {
                let (a, b) = (self.arg(*a, cache), self.arg(*b, cache));
                let name = match op {
                    Binary::Add => "Add",
                    Binary::Sub => "Sub",
                    Binary::Mul => "Mul",
                    Binary::Div => "Div",
                    Binary::Pow => "Pow",
                };
                self.node_to(&y, name, &[&a, &b], vec![]);
            }
            Op::MatMul { a, b } => {
                for arg in [*a, *b] {
                    if self.arg_shape(arg).len() < 2 {
                        return Err(self.refuse(i, "a matrix product with a vector operand"));
                    }
                }
                let (a, b) = (self.arg(*a, cache), self.arg(*b, cache));
                self.node_to(&y, "MatMul", &[&a, &b], vec![]);
            }
            Op::LayerNorm {
                axis,
                epsilon,
                scale,
                bias,
            } => {
                // Written out, as the backward needs the normalised values anyway.
                let xshape = self.shapes.two[step.inputs[0]].clone();
                let rank = xshape.len();
                let a = shaped_axis(*axis, rank).map_err(|m| self.refuse(i, m))?;
                let axes: Vec<i64> = (a as i64..rank as i64).collect();
                let (xhat, inv) = self.normalise(&x, &axes, *epsilon);
                let s = self.arg(*scale, cache);
                let s = self.norm_operand(&s, *scale, &xshape, a);
                self.norms[i] = Some((xhat.clone(), inv, s.clone()));
                let scaled = self.node("Mul", &[&xhat, &s], vec![]);
                match bias {
                    Some(b) => {
                        let bn = self.arg(*b, cache);
                        let bn = self.norm_operand(&bn, *b, &xshape, a);
                        self.node_to(&y, "Add", &[&scaled, &bn], vec![]);
                    }
                    None => self.node_to(&y, "Identity", &[&scaled], vec![]),
                }
            }
            Op::BatchNorm(bn) => {
                // Inference mode: the affine map of the running statistics.
                let rank = self.shapes.two[step.inputs[0]].len();
                let (scale, shift) = self.net.batch_norm_affine(bn);
                let mut cur = x;
                for (v, op) in [(scale, "Mul"), (shift, "Add")] {
                    let c = self.channel_constant(&v, rank);
                    cur = self.node(op, &[&cur, &c], vec![]);
                }
                self.node_to(&y, "Identity", &[&cur], vec![]);
            }
            Op::Concat(axis) => {
                let ins: Vec<String> = step.inputs.iter().map(|&s| value(s)).collect();
                let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
                self.node_to(&y, "Concat", &ins, vec![attr_i("axis", *axis)]);
            }
            Op::Transpose(perm) => {
                let perm: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
                self.node_to(&y, "Transpose", &[&x], vec![attr_ints("perm", &perm)]);
            }
            Op::GlobalAveragePool => self.node_to(&y, "GlobalAveragePool", &[&x], vec![]),
            Op::Reshape(r) => match r {
                Reshape::To(target) => {
                    let t = self.i64s(target);
                    self.node_to(&y, "Reshape", &[&x, &t], vec![]);
                }
                Reshape::Flatten(a) => {
                    self.node_to(&y, "Flatten", &[&x], vec![attr_i("axis", *a)]);
                }
                Reshape::Squeeze(axes) => {
                    let t = self.i64s(axes);
                    self.node_to(&y, "Squeeze", &[&x, &t], vec![]);
                }
                Reshape::Unsqueeze(axes) => {
                    let t = self.i64s(axes);
                    self.node_to(&y, "Unsqueeze", &[&x, &t], vec![]);
                }
            },
            Op::Slice(axes) => {
                let starts = self.i64s(&axes.iter().map(|s| s.start).collect::<Vec<_>>());
                let ends = self.i64s(&axes.iter().map(|s| s.end).collect::<Vec<_>>());
                let ax = self.i64s(&axes.iter().map(|s| s.axis).collect::<Vec<_>>());
                let steps = self.i64s(&axes.iter().map(|s| s.step).collect::<Vec<_>>());
                self.node_to(&y, "Slice", &[&x, &starts, &ends, &ax, &steps], vec![]);
            }
            Op::SplitPart { axis, index, parts } => {
                let shape = &self.shapes.two[step.inputs[0]];
                let a = shaped_axis(*axis, shape.len()).map_err(|m| self.refuse(i, m))?;
                if self.shapes.batch_axis[step.inputs[0]] == Some(a) {
                    return Err(self.refuse(i, "a split along the batch axis"));
                }
                let size = shape[a].div_ceil(*parts) as i64;
                let start = size * *index as i64;
                let starts = self.i64s(&[start]);
                let ends = self.i64s(&[start + size]);
                let ax = self.i64s(&[a as i64]);
                self.node_to(&y, "Slice", &[&x, &starts, &ends, &ax], vec![]);
            }
            Op::Gather {
                axis,
                indices,
                shape,
            } => {
                let t = self.i64s_shaped(shape, indices);
                self.node_to(&y, "Gather", &[&x, &t], vec![attr_i("axis", *axis)]);
            }
            Op::Reduce {
                axes,
                keepdims,
                mean,
            } => {
                let op = if *mean { "ReduceMean" } else { "ReduceSum" };
                let keep = attr_i("keepdims", i64::from(*keepdims));
                match (axes, *mean) {
                    (None, _) => self.node_to(&y, op, &[&x], vec![keep]),
                    (Some(a), true) => {
                        self.node_to(&y, op, &[&x], vec![keep, attr_ints("axes", a)]);
                    }
                    (Some(a), false) => {
                        let t = self.i64s(a);
                        self.node_to(&y, op, &[&x, &t], vec![keep]);
                    }
                }
            }
            Op::Gemm {
                weight,
                bias,
                alpha,
                beta,
                trans_b,
            } => {
                let w = self.arg(Arg::Param(*weight), cache);
                let mut ins = vec![x, w];
                if let Some(b) = bias {
                    ins.push(self.arg(Arg::Param(*b), cache));
                }
                let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
                self.node_to(
                    &y,
                    "Gemm",
                    &ins,
                    vec![
                        attr_f("alpha", *alpha as f32),
                        attr_f("beta", *beta as f32),
                        attr_i("transB", i64::from(*trans_b)),
                    ],
                );
            }
            Op::Lrn(l) => self.node_to(
                &y,
                "LRN",
                &[&x],
                vec![
                    attr_i("size", l.size as i64),
                    attr_f("alpha", l.alpha as f32),
                    attr_f("beta", l.beta as f32),
                    attr_f("bias", l.bias as f32),
                ],
            ),
            Op::Identity => self.node_to(&y, "Identity", &[&x], vec![]),
            Op::Softmax { axis, legacy } => {
                if *legacy {
                    let flat = self.node("Flatten", &[&x], vec![attr_i("axis", *axis)]);
                    let s = self.node("Softmax", &[&flat], vec![attr_i("axis", 1)]);
                    let shape = self.shape_of(&x);
                    self.node_to(&y, "Reshape", &[&s, &shape], vec![]);
                } else {
                    self.node_to(&y, "Softmax", &[&x], vec![attr_i("axis", *axis)]);
                }
            }
        }
        Ok(())
    }

    /// `(x - mean) / sqrt(var + eps)` over `axes`, and `1 / sqrt(var + eps)`.
    fn normalise(&mut self, x: &str, axes: &[i64], epsilon: f64) -> (String, String) {
        let ax = attr_ints("axes", axes);
        let mu = self.node("ReduceMean", &[x], vec![ax.clone(), attr_i("keepdims", 1)]);
        let d = self.node("Sub", &[x, &mu], vec![]);
        let d2 = self.node("Mul", &[&d, &d], vec![]);
        let var = self.node("ReduceMean", &[&d2], vec![ax, attr_i("keepdims", 1)]);
        let eps = self.scalar(epsilon as f32);
        let ve = self.node("Add", &[&var, &eps], vec![]);
        let sd = self.node("Sqrt", &[&ve], vec![]);
        let inv = self.node("Reciprocal", &[&sd], vec![]);
        let xhat = self.node("Mul", &[&d, &inv], vec![]);
        (xhat, inv)
    }

    /// A LayerNorm scale or bias (`name`, flat per row or shaped like the normalised axes)
    /// shaped to broadcast against the normalised axes `axis..` of a value of shape `xshape`.
    fn norm_operand(&mut self, name: &str, a: Arg, xshape: &[usize], axis: usize) -> String {
        let shape = self.arg_shape(a);
        let len: usize = shape.iter().product();
        let trailing = &xshape[axis..];
        if matches!(a, Arg::Value(_)) || len == 1 || shape == trailing {
            return name.to_owned();
        }
        let t: Vec<i64> = trailing.iter().map(|&d| d as i64).collect();
        let t = self.i64s(&t);
        self.node("Reshape", &[name, &t], vec![])
    }

    /// d objective / d out, from `target` and the network's outputs.
    fn seed(&mut self, s: SeedSpec, out: &str) -> String {
        let z = self.node("Flatten", &[out], vec![attr_i("axis", 1)]);
        let one = attr_i("keepdims", 1);
        let k = s.crops.max(1);
        // The group mean of each row's target value, repeated per row: [rows, 1].
        let group_mean = |e: &mut Self, q: &str| -> String {
            if k == 1 {
                return q.to_owned();
            }
            let g = e.i64s(&[-1, k as i64]);
            let grouped = e.node("Reshape", &[q, &g], vec![]);
            let m = e.node(
                "ReduceMean",
                &[&grouped],
                vec![attr_ints("axes", &[1]), one.clone()],
            );
            let ones = e.f32s(&[1, k], vec![1.0; k]);
            let rep = e.node("Mul", &[&m, &ones], vec![]);
            let col = e.i64s(&[-1, 1]);
            e.node("Reshape", &[&rep, &col], vec![])
        };
        let d = match (s.objective, s.logits) {
            (Objective::Logit, _) => self.node("Identity", &["target"], vec![]),
            (Objective::LogProbability, true) if k == 1 => {
                let p = self.node("Softmax", &[&z], vec![attr_i("axis", 1)]);
                self.node("Sub", &["target", &p], vec![])
            }
            (objective, true) => {
                let p = self.node("Softmax", &[&z], vec![attr_i("axis", 1)]);
                let pt = self.node("Mul", &[&p, "target"], vec![]);
                let ax = self.i64s(&[1]);
                let q = self.node("ReduceSum", &[&pt, &ax], vec![one.clone()]);
                let e = self.node("Sub", &["target", &p], vec![]);
                let scaled = self.node("Mul", &[&q, &e], vec![]);
                let inv_k = self.scalar(1.0 / k as f32);
                let d = self.node("Mul", &[&scaled, &inv_k], vec![]);
                if objective == Objective::LogProbability {
                    let m = group_mean(self, &q);
                    self.node("Div", &[&d, &m], vec![])
                } else {
                    d
                }
            }
            (Objective::Probability, false) => {
                let inv_k = self.scalar(1.0 / k as f32);
                self.node("Mul", &["target", &inv_k], vec![])
            }
            (Objective::LogProbability, false) => {
                let pt = self.node("Mul", &[&z, "target"], vec![]);
                let ax = self.i64s(&[1]);
                let q = self.node("ReduceSum", &[&pt, &ax], vec![one.clone()]);
                let m = group_mean(self, &q);
                let kc = self.scalar(k as f32);
                let km = self.node("Mul", &[&m, &kc], vec![]);
                self.node("Div", &["target", &km], vec![])
            }
        };
        self.reshape_like(&d, out)
    }

    /// Adds the gradients of step `i`'s inputs, from its output's gradient.
    fn backward(
        &mut self,
        i: usize,
        grads: &mut [Vec<String>],
        cache: &mut ArgCache,
    ) -> Result<(), EvalError> {
        let step = &self.net.steps[i];
        let gy = match grads[step.output].len() {
            0 => return Ok(()), // nothing downstream depends on this value
            1 => grads[step.output][0].clone(),
            _ => {
                let parts = grads[step.output].clone();
                let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                self.node("Sum", &parts, vec![])
            }
        };
        let xs = step.inputs[0];
        let x = value(xs);
        let y = value(step.output);
        let xshape = self.shapes.two[xs].clone();
        let yshape = self.shapes.two[step.output].clone();
        let give = |grads: &mut [Vec<String>], slot: usize, g: String| grads[slot].push(g);
        match &step.op {
            Op::Conv {
                weight,
                group,
                window,
                ..
            } => {
                let (h, w) = (xshape[2], xshape[3]);
                let (pads, out_pad) = transpose_pads(window, h, w)
                    .ok_or_else(|| self.refuse(i, "window larger than the input"))?;
                let span = |a: usize| (window.dilations[a] * (window.kernel[a] - 1)) as i64;
                let flipped_pads: Vec<i64> = (0..4).map(|k| span(k % 2) - pads[k]).collect();
                // ONNX Runtime's convolutions are fast in its blocked layout (NCHWc), which
                // needs channel counts that are multiples of 8; its ConvTranspose is im2col +
                // col2im per group. Measured: the flipped convolution is 1.3x faster on
                // ResNet-50 and 1.7x on EfficientNet-Lite0's depthwise layers, ConvTranspose
                // 2.3x faster on LeNet's 20 and 50 channels.
                let cin = xshape[1];
                let cout = yshape[1];
                let blocked = cin.is_multiple_of(8) && cout.is_multiple_of(8);
                if window.strides == [1, 1]
                    && (blocked || *group > 1)
                    && out_pad == [0, 0]
                    && flipped_pads.iter().all(|&p| p >= 0)
                {
                    // Stride 1: the adjoint is a plain convolution of the gradient with the
                    // weights flipped in space and transposed within each group.
                    let wt = self.flipped_weight(*weight, *group);
                    let g = self.node(
                        "Conv",
                        &[&gy, &wt],
                        vec![
                            attr_pair("kernel_shape", window.kernel),
                            attr_pair("dilations", window.dilations),
                            attr_ints("pads", &flipped_pads),
                            attr_i("group", *group as i64),
                        ],
                    );
                    give(grads, xs, g);
                    return Ok(());
                }
                let wt = self.arg(Arg::Param(*weight), cache);
                let g = self.node(
                    "ConvTranspose",
                    &[&gy, &wt],
                    vec![
                        attr_pair("kernel_shape", window.kernel),
                        attr_pair("strides", window.strides),
                        attr_pair("dilations", window.dilations),
                        attr_ints("pads", &pads),
                        attr_ints("output_padding", &out_pad),
                        attr_i("group", *group as i64),
                    ],
                );
                give(grads, xs, g);
            }
            Op::MaxPool(_) => {
                let idx = self.indices[i].clone().expect("written forward");
                let flat = self.i64s(&[-1]);
                let xf = self.node("Reshape", &[&x, &flat], vec![]);
                let zeros = self.zeros_like(&xf);
                let gf = self.node("Reshape", &[&gy, &flat], vec![]);
                let idf = self.node("Reshape", &[&idx, &flat], vec![]);
                let sc = self.node(
                    "ScatterElements",
                    &[&zeros, &idf, &gf],
                    vec![attr_i("axis", 0), attr_s("reduction", "add")],
                );
                let g = self.reshape_like(&sc, &x);
                give(grads, xs, g);
            }
            Op::AveragePool(window) => {
                let (c, h, w) = (xshape[1], xshape[2], xshape[3]);
                let r = window
                    .resolve(h, w)
                    .ok_or_else(|| self.refuse(i, "window larger than the input"))?;
                // Per output position, the input values its window covers.
                let mut counts = vec![0f32; r.oh * r.ow];
                for oy in 0..r.oh {
                    for ox in 0..r.ow {
                        let mut n = 0;
                        for ky in 0..r.kh {
                            for kx in 0..r.kw {
                                let iy = (oy * r.sh + ky * r.dh) as i64 - r.pt as i64;
                                let ix = (ox * r.sw + kx * r.dw) as i64 - r.pl as i64;
                                if (0..h as i64).contains(&iy) && (0..w as i64).contains(&ix) {
                                    n += 1;
                                }
                            }
                        }
                        counts[oy * r.ow + ox] = 1.0 / n.max(1) as f32;
                    }
                }
                let inv = self.f32s(&[r.oh, r.ow], counts);
                let scaled = self.node("Mul", &[&gy, &inv], vec![]);
                let ones = self.f32s(&[c, 1, r.kh, r.kw], vec![1.0; c * r.kh * r.kw]);
                let (pads, out_pad) = transpose_pads(window, h, w).expect("resolved above");
                let g = self.node(
                    "ConvTranspose",
                    &[&scaled, &ones],
                    vec![
                        attr_ints("kernel_shape", &[r.kh as i64, r.kw as i64]),
                        attr_ints("strides", &[r.sh as i64, r.sw as i64]),
                        attr_ints("pads", &pads),
                        attr_ints("output_padding", &out_pad),
                        attr_i("group", c as i64),
                    ],
                );
                give(grads, xs, g);
            }
            Op::Relu => {
                // gy * (y > 0), y > 0 exactly where x > 0; reading y, not x, lets ONNX
                // Runtime fuse the activation into the convolution before it. A comparison
                // cast to 0/1 is its fastest mask (a Where, a Sign or a saturated Clip took
                // 1.1 to 1.7x as long, measured).
                let zero = self.scalar(0.0);
                let on = self.node("Greater", &[&y, &zero], vec![]);
                let g = self.masked(&gy, &on);
                give(grads, xs, g);
            }
            Op::Clip { min, max } => {
                // y = clip(x) is strictly inside (min, max) exactly where x is (see Relu).
                let mut on = None;
                if min.is_finite() {
                    let lo = self.scalar(*min as f32);
                    on = Some(self.node("Greater", &[&y, &lo], vec![]));
                }
                if max.is_finite() {
                    let hi = self.scalar(*max as f32);
                    let below = self.node("Less", &[&y, &hi], vec![]);
                    on = Some(match on {
                        Some(above) => self.node("And", &[&above, &below], vec![]),
                        None => below,
                    });
                }
                let g = match on {
                    Some(on) => self.masked(&gy, &on),
                    None => gy,
                };
                give(grads, xs, g);
            }
            Op::Unary(f) => {
                let d = match f {
                    Unary::Erf => {
                        let x2 = self.node("Mul", &[&x, &x], vec![]);
                        let n = self.node("Neg", &[&x2], vec![]);
                        let ex = self.node("Exp", &[&n], vec![]);
                        let c = self.scalar(std::f32::consts::FRAC_2_SQRT_PI);
                        self.node("Mul", &[&ex, &c], vec![])
                    }
                    Unary::Sqrt => {
                        let half = self.scalar(0.5);
                        self.node("Div", &[&half, &y], vec![])
                    }
                    Unary::Exp => y.clone(),
                    Unary::Neg => self.scalar(-1.0),
                    Unary::Sigmoid => {
                        let one = self.scalar(1.0);
                        let om = self.node("Sub", &[&one, &y], vec![]);
                        self.node("Mul", &[&y, &om], vec![])
                    }
                    Unary::Tanh => {
                        let one = self.scalar(1.0);
                        let y2 = self.node("Mul", &[&y, &y], vec![]);
                        self.node("Sub", &[&one, &y2], vec![])
                    }
                    Unary::HardSigmoid { alpha, .. } => {
                        let (zero, one) = (self.scalar(0.0), self.scalar(1.0));
                        let a = self.node("Greater", &[&y, &zero], vec![]);
                        let b = self.node("Less", &[&y, &one], vec![]);
                        let on = self.node("And", &[&a, &b], vec![]);
                        let al = self.scalar(*alpha as f32);
                        self.node("Where", &[&on, &al, &zero], vec![])
                    }
                    Unary::HardSwish => {
                        let (zero, one) = (self.scalar(0.0), self.scalar(1.0));
                        let (m3, p3) = (self.scalar(-3.0), self.scalar(3.0));
                        let third = self.scalar(1.0 / 3.0);
                        let half = self.scalar(0.5);
                        let lin = self.node("Mul", &[&x, &third], vec![]);
                        let lin = self.node("Add", &[&lin, &half], vec![]);
                        let hi = self.node("Greater", &[&x, &p3], vec![]);
                        let inner = self.node("Where", &[&hi, &one, &lin], vec![]);
                        let lo = self.node("Less", &[&x, &m3], vec![]);
                        self.node("Where", &[&lo, &zero, &inner], vec![])
                    }
                };
                let g = self.node("Mul", &[&gy, &d], vec![]);
                give(grads, xs, g);
            }
            Op::Add => {
                for &s in &step.inputs {
                    give(grads, s, gy.clone());
                }
            }
            Op::Binary { op, a, b } => {
                let (an, bn) = (self.arg(*a, cache), self.arg(*b, cache));
                let ashape = self.arg_shape(*a);
                let bshape = self.arg_shape(*b);
                let da = match (op, *a) {
                    (_, Arg::Param(_) | Arg::Const(_)) => None,
                    (Binary::Add | Binary::Sub, _) => Some(gy.clone()),
                    (Binary::Mul, _) => Some(self.node("Mul", &[&gy, &bn], vec![])),
                    (Binary::Div, _) => Some(self.node("Div", &[&gy, &bn], vec![])),
                    (Binary::Pow, _) => {
                        // b * a^(b - 1)
                        let one = self.scalar(1.0);
                        let bm = self.node("Sub", &[&bn, &one], vec![]);
                        let p = self.node("Pow", &[&an, &bm], vec![]);
                        let d = self.node("Mul", &[&p, &bn], vec![]);
                        Some(self.node("Mul", &[&gy, &d], vec![]))
                    }
                };
                let db = match (op, *b) {
                    (_, Arg::Param(_) | Arg::Const(_)) => None,
                    (Binary::Add, _) => Some(gy.clone()),
                    (Binary::Sub, _) => Some(self.node("Neg", &[&gy], vec![])),
                    (Binary::Mul, _) => Some(self.node("Mul", &[&gy, &an], vec![])),
                    (Binary::Div, _) => {
                        // -g * y / b
                        let q = self.node("Div", &[&y, &bn], vec![]);
                        let m = self.node("Mul", &[&gy, &q], vec![]);
                        Some(self.node("Neg", &[&m], vec![]))
                    }
                    (Binary::Pow, _) => {
                        // y * ln(a)
                        let l = self.node("Log", &[&an], vec![]);
                        let d = self.node("Mul", &[&y, &l], vec![]);
                        Some(self.node("Mul", &[&gy, &d], vec![]))
                    }
                };
                if let (Some(d), Arg::Value(s)) = (da, *a) {
                    let g = self.unbroadcast(&d, &yshape, &ashape, &an);
                    grads[s].push(g);
                }
                if let (Some(d), Arg::Value(s)) = (db, *b) {
                    let g = self.unbroadcast(&d, &yshape, &bshape, &bn);
                    grads[s].push(g);
                }
            }
            Op::MatMul { a, b } => {
                let (an, bn) = (self.arg(*a, cache), self.arg(*b, cache));
                let ashape = self.arg_shape(*a);
                let bshape = self.arg_shape(*b);
                let swap = |r: usize| -> Vec<i64> {
                    let mut p: Vec<i64> = (0..r as i64).collect();
                    p.swap(r - 2, r - 1);
                    p
                };
                if let Arg::Value(s) = *a {
                    let bt = self.node(
                        "Transpose",
                        &[&bn],
                        vec![attr_ints("perm", &swap(bshape.len()))],
                    );
                    let d = self.node("MatMul", &[&gy, &bt], vec![]);
                    // The product's batch axes, summed down to a's.
                    let dshape = broadcast_batch(&yshape, &ashape);
                    let g = self.unbroadcast(&d, &dshape, &ashape, &an);
                    grads[s].push(g);
                }
                if let Arg::Value(s) = *b {
                    let at = self.node(
                        "Transpose",
                        &[&an],
                        vec![attr_ints("perm", &swap(ashape.len()))],
                    );
                    let d = self.node("MatMul", &[&at, &gy], vec![]);
                    let dshape = broadcast_batch(&yshape, &bshape);
                    let g = self.unbroadcast(&d, &dshape, &bshape, &bn);
                    grads[s].push(g);
                }
            }
            Op::LayerNorm {
                axis, scale, bias, ..
            } => {
                let rank = xshape.len();
                let a = shaped_axis(*axis, rank).map_err(|m| self.refuse(i, m))?;
                let axes: Vec<i64> = (a as i64..rank as i64).collect();
                let (xhat, inv, sn) = self.norms[i].clone().expect("written forward");
                // g' = gy * scale; dx = inv * (g' - mean(g') - xhat * mean(g' * xhat)).
                let gs = self.node("Mul", &[&gy, &sn], vec![]);
                let ax = attr_ints("axes", &axes);
                let keep = attr_i("keepdims", 1);
                let m1 = self.node("ReduceMean", &[&gs], vec![ax.clone(), keep.clone()]);
                let gx = self.node("Mul", &[&gs, &xhat], vec![]);
                let m2 = self.node("ReduceMean", &[&gx], vec![ax, keep]);
                let t = self.node("Mul", &[&xhat, &m2], vec![]);
                let u = self.node("Sub", &[&gs, &m1], vec![]);
                let v = self.node("Sub", &[&u, &t], vec![]);
                let g = self.node("Mul", &[&v, &inv], vec![]);
                give(grads, xs, g);
                if let Arg::Value(s) = *scale {
                    let sshape = self.arg_shape(*scale);
                    let d = self.node("Mul", &[&gy, &xhat], vec![]);
                    let g = self.unbroadcast(&d, &yshape, &sshape, &value(s));
                    grads[s].push(g);
                }
                if let Some(Arg::Value(s)) = *bias {
                    let bshape = self.arg_shape(Arg::Value(s));
                    let bn = value(s);
                    let g = self.unbroadcast(&gy, &yshape, &bshape, &bn);
                    grads[s].push(g);
                }
            }
            Op::BatchNorm(bn) => {
                let (scale, _) = self.net.batch_norm_affine(bn);
                let c = self.channel_constant(&scale, xshape.len());
                let g = self.node("Mul", &[&gy, &c], vec![]);
                give(grads, xs, g);
            }
            Op::Concat(axis) => {
                let a = shaped_axis(*axis, yshape.len()).map_err(|m| self.refuse(i, m))?;
                let mut sizes = Vec::new();
                for &s in &step.inputs {
                    if self.shapes.batch_axis[s] == Some(a) {
                        return Err(self.refuse(i, "a concatenation along the batch axis"));
                    }
                    sizes.push(self.shapes.two[s][a] as i64);
                }
                let split = self.i64s(&sizes);
                let parts = self.node_n(
                    "Split",
                    &[&gy, &split],
                    step.inputs.len(),
                    vec![attr_i("axis", a as i64)],
                );
                for (&s, g) in step.inputs.iter().zip(parts) {
                    grads[s].push(g);
                }
            }
            Op::Transpose(perm) => {
                let mut inverse = vec![0i64; perm.len()];
                for (k, &p) in perm.iter().enumerate() {
                    inverse[p] = k as i64;
                }
                let g = self.node("Transpose", &[&gy], vec![attr_ints("perm", &inverse)]);
                give(grads, xs, g);
            }
            Op::GlobalAveragePool => {
                let hw = (xshape[2] * xshape[3]) as f32;
                let k = self.scalar(1.0 / hw);
                let scaled = self.node("Mul", &[&gy, &k], vec![]);
                let s = self.shape_of(&x);
                let g = self.node("Expand", &[&scaled, &s], vec![]);
                give(grads, xs, g);
            }
            Op::Reshape(_) | Op::Identity => {
                let g = if matches!(step.op, Op::Identity) {
                    gy
                } else {
                    let t = self.sym(xs);
                    let t = self.i64s(&t);
                    self.node("Reshape", &[&gy, &t], vec![])
                };
                give(grads, xs, g);
            }
            Op::Slice(axes) => {
                let mut g = gy;
                let mut cur = yshape.clone();
                for s in axes {
                    let a = shaped_axis(s.axis, xshape.len()).map_err(|m| self.refuse(i, m))?;
                    if self.shapes.batch_axis[xs] == Some(a) {
                        return Err(self.refuse(i, "a slice along the batch axis"));
                    }
                    let len = xshape[a] as i64;
                    let clamp = |v: i64| {
                        let v = if v < 0 { v + len } else { v };
                        v.clamp(0, len)
                    };
                    let start = clamp(s.start);
                    let count = cur[a] as i64;
                    g = self.place(
                        &g,
                        &mut cur,
                        self.shapes.batch_axis[xs],
                        a,
                        start,
                        s.step,
                        count,
                        len,
                    );
                }
                give(grads, xs, g);
            }
            Op::SplitPart { axis, index, parts } => {
                let a = shaped_axis(*axis, xshape.len()).map_err(|m| self.refuse(i, m))?;
                let len = xshape[a] as i64;
                let size = xshape[a].div_ceil(*parts) as i64;
                let start = size * *index as i64;
                let mut cur = yshape.clone();
                let count = cur[a] as i64;
                let g = self.place(
                    &gy,
                    &mut cur,
                    self.shapes.batch_axis[xs],
                    a,
                    start,
                    1,
                    count,
                    len,
                );
                give(grads, xs, g);
            }
            Op::Gather { axis, indices, .. } => {
                let a = shaped_axis(*axis, xshape.len()).map_err(|m| self.refuse(i, m))?;
                let len = xshape[a] as i64;
                let idx: Vec<i64> = indices
                    .iter()
                    .map(|&v| if v < 0 { v + len } else { v })
                    .collect();
                let n = idx.len();
                // gy: x[..a] + shape + x[a+1..] -> x[..a] + [n] + x[a+1..]
                let mut flat_shape = xshape.clone();
                flat_shape[a] = n;
                let t = sym_of(&flat_shape, self.shapes.batch_axis[xs]);
                let t = self.i64s(&t);
                let g2 = self.node("Reshape", &[&gy, &t], vec![]);
                let mut idims = vec![1usize; xshape.len()];
                idims[a] = n;
                let ic = self.i64s_shaped(&idims, &idx);
                let gs = self.shape_of(&g2);
                let ie = self.node("Expand", &[&ic, &gs], vec![]);
                let zeros = self.zeros_like(&x);
                let g = self.node(
                    "ScatterElements",
                    &[&zeros, &ie, &g2],
                    vec![attr_i("axis", a as i64), attr_s("reduction", "add")],
                );
                give(grads, xs, g);
            }
            Op::Reduce {
                axes,
                keepdims,
                mean,
            } => {
                let rank = xshape.len();
                let ax: Vec<i64> = match axes {
                    None => (0..rank as i64).collect(),
                    Some(v) => v
                        .iter()
                        .map(|&a| shaped_axis(a, rank).map(|a| a as i64))
                        .collect::<Result<_, _>>()
                        .map_err(|m| self.refuse(i, m))?,
                };
                let mut g = gy;
                if !keepdims {
                    let t = self.i64s(&ax);
                    g = self.node("Unsqueeze", &[&g, &t], vec![]);
                }
                if *mean {
                    let nx = self.node("Size", &[&x], vec![]);
                    let ny = self.node("Size", &[&y], vec![]);
                    let fx = self.node("Cast", &[&nx], vec![attr_i("to", 1)]);
                    let fy = self.node("Cast", &[&ny], vec![attr_i("to", 1)]);
                    let k = self.node("Div", &[&fy, &fx], vec![]);
                    g = self.node("Mul", &[&g, &k], vec![]);
                }
                let s = self.shape_of(&x);
                let g = self.node("Expand", &[&g, &s], vec![]);
                give(grads, xs, g);
            }
            Op::Gemm {
                weight,
                alpha,
                trans_b,
                ..
            } => {
                let p = &self.net.params[*weight];
                // dx = alpha * gy @ op(W)^T: W itself when transB, else W^T.
                let wt = if *trans_b {
                    self.arg(Arg::Param(*weight), cache)
                } else {
                    let (r, c) = (p.shape[0], p.shape[1]);
                    let mut t = vec![0f32; r * c];
                    for i in 0..r {
                        for j in 0..c {
                            t[j * r + i] = p.values[i * c + j];
                        }
                    }
                    self.f32s(&[c, r], t)
                };
                let d = self.node("MatMul", &[&gy, &wt], vec![]);
                let g = if *alpha == 1.0 {
                    d
                } else {
                    let al = self.scalar(*alpha as f32);
                    self.node("Mul", &[&d, &al], vec![])
                };
                give(grads, xs, g);
            }
            Op::Lrn(l) => {
                let (c, h, w) = (xshape[1], xshape[2], xshape[3]);
                let lo = (l.size - 1) / 2;
                let hi = l.size - 1 - lo;
                let k = self.f32s(&[1, 1, l.size, 1], vec![1.0; l.size]);
                let col = self.i64s(&[-1, 1, c as i64, (h * w) as i64]);
                let back = self.i64s(&[-1, c as i64, h as i64, w as i64]);
                let window_sum = |e: &mut Self, v: &str, before: usize, after: usize| {
                    let r = e.node("Reshape", &[v, &col], vec![]);
                    let s = e.node(
                        "Conv",
                        &[&r, &k],
                        vec![
                            attr_ints("kernel_shape", &[l.size as i64, 1]),
                            attr_ints("pads", &[before as i64, 0, after as i64, 0]),
                        ],
                    );
                    e.node("Reshape", &[&s, &back], vec![])
                };
                let x2 = self.node("Mul", &[&x, &x], vec![]);
                let sum = window_sum(self, &x2, lo, hi);
                let ak = self.scalar((l.alpha / l.size as f64) as f32);
                let bias = self.scalar(l.bias as f32);
                let t = self.node("Mul", &[&sum, &ak], vec![]);
                let s = self.node("Add", &[&t, &bias], vec![]);
                let nb = self.scalar(-l.beta as f32);
                let nb1 = self.scalar((-l.beta - 1.0) as f32);
                let sb = self.node("Pow", &[&s, &nb], vec![]);
                let sb1 = self.node("Pow", &[&s, &nb1], vec![]);
                let first = self.node("Mul", &[&gy, &sb], vec![]);
                let gx = self.node("Mul", &[&gy, &x], vec![]);
                let u = self.node("Mul", &[&gx, &sb1], vec![]);
                let ut = window_sum(self, &u, hi, lo);
                let coef = self.scalar((2.0 * l.alpha * l.beta / l.size as f64) as f32);
                let xu = self.node("Mul", &[&x, &ut], vec![]);
                let second = self.node("Mul", &[&xu, &coef], vec![]);
                let g = self.node("Sub", &[&first, &second], vec![]);
                give(grads, xs, g);
            }
            Op::Softmax { axis, legacy } => {
                let (yy, gg, red) = if *legacy {
                    let f = attr_i("axis", *axis);
                    let yf = self.node("Flatten", &[&y], vec![f.clone()]);
                    let gf = self.node("Flatten", &[&gy], vec![f]);
                    (yf, gf, 1i64)
                } else {
                    (y.clone(), gy, *axis)
                };
                let p = self.node("Mul", &[&gg, &yy], vec![]);
                let ax = self.i64s(&[red]);
                let s = self.node("ReduceSum", &[&p, &ax], vec![attr_i("keepdims", 1)]);
                let d = self.node("Sub", &[&gg, &s], vec![]);
                let mut g = self.node("Mul", &[&yy, &d], vec![]);
                if *legacy {
                    g = self.reshape_like(&g, &x);
                }
                give(grads, xs, g);
            }
        }
        Ok(())
    }

    /// `g` where the boolean `on` holds, else 0.
    fn masked(&mut self, g: &str, on: &str) -> String {
        let m = self.node("Cast", &[on], vec![attr_i("to", 1)]);
        self.node("Mul", &[g, &m], vec![])
    }

    /// A convolution weight `[M, C / g, kh, kw]` as the weight of its stride-1 adjoint, a
    /// convolution from M to C channels in `g` groups: `[C, M / g, kh, kw]`, flipped in space.
    fn flipped_weight(&mut self, weight: usize, group: usize) -> String {
        let p = &self.net.params[weight];
        let [m, cg, kh, kw] = p.shape[..] else {
            unreachable!("a 2-D convolution weight")
        };
        let (g, mg) = (group.max(1), m / group.max(1));
        let c = cg * g;
        let mut out = vec![0f32; p.values.len()];
        for oc in 0..m {
            let gi = oc / mg;
            for ic in 0..cg {
                for y in 0..kh {
                    for x in 0..kw {
                        let v = p.values[((oc * cg + ic) * kh + y) * kw + x];
                        let (nc, nm) = (gi * cg + ic, oc % mg);
                        out[((nc * mg + nm) * kh + (kh - 1 - y)) * kw + (kw - 1 - x)] = v;
                    }
                }
            }
        }
        self.f32s(&[c, mg, kh, kw], out)
    }

    /// Places `g` (of shape `cur`, `count` elements along axis `a`) at positions `start,
    /// start + step, ...` of an axis of length `len`, zeros elsewhere; updates `cur`.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        g: &str,
        cur: &mut [usize],
        batch_axis: Option<usize>,
        a: usize,
        start: i64,
        step: i64,
        count: i64,
        len: i64,
    ) -> String {
        let rank = cur.len();
        let mut g = g.to_owned();
        let mut span = count;
        if step > 1 && count > 0 {
            // [.., count, ..] -> [.., count, 1, ..] -> pad to [.., count, step, ..] -> merge.
            let ua = self.i64s(&[a as i64 + 1]);
            let u = self.node("Unsqueeze", &[&g, &ua], vec![]);
            let mut pads = vec![0i64; 2 * (rank + 1)];
            pads[rank + 1 + a + 1] = step - 1;
            let p = self.i64s(&pads);
            let padded = self.node("Pad", &[&u, &p], vec![]);
            span = count * step;
            let mut merged = cur.to_vec();
            merged[a] = span as usize;
            let t = sym_of(&merged, batch_axis);
            let t = self.i64s(&t);
            g = self.node("Reshape", &[&padded, &t], vec![]);
        }
        let after = len - start - span;
        if after < 0 {
            let st = self.i64s(&[0]);
            let en = self.i64s(&[span + after]);
            let ax = self.i64s(&[a as i64]);
            g = self.node("Slice", &[&g, &st, &en, &ax], vec![]);
        }
        let mut pads = vec![0i64; 2 * rank];
        pads[a] = start;
        pads[rank + a] = after.max(0);
        let p = self.i64s(&pads);
        let out = self.node("Pad", &[&g, &p], vec![]);
        cur[a] = len as usize;
        out
    }
}

/// The shape of `d op/d operand` before summing broadcast axes: the product's batch axes with
/// the operand's last two.
fn broadcast_batch(product: &[usize], operand: &[usize]) -> Vec<usize> {
    let mut s = product[..product.len() - 2].to_vec();
    s.extend_from_slice(&operand[operand.len() - 2..]);
    s
}
