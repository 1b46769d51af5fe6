//! From an ONNX file to a [`Network`]: the protobuf read with `tract_onnx::pb` (prost types,
//! no protoc), every node whose inputs are all constant folded at load (in f64), and the rest
//! translated into differentiable steps. A node the evaluator cannot differentiate is refused
//! here, naming its op and node, so no gradient is ever silently cut.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use prost::Message;
use tract_onnx::pb;

use super::kernels::Lrn;
use super::network::{
    Arg, BatchNorm, Network, Op, Padding, Parameter, Reshape, Step, Tensor, Unary, WindowSpec,
};
use super::real::Real;
use super::shaped::{Binary, SliceAxis, reshape};
use crate::onnx_read::{self, attr, attr_ints, node_name};
use pareidolia_eval::{EvalError, Layout, Model};

/// The ops the evaluator differentiates, for messages.
pub(crate) const DIFFERENTIABLE: &str = "Add, AveragePool, BatchNormalization, Clip, Concat, Conv, Div, Dropout, Erf, Exp, Flatten, Gather (constant indices), Gemm, GlobalAveragePool, HardSigmoid, HardSwish, Identity, LayerNormalization, LRN, MatMul, MaxPool, Mul, Neg, Pow, ReduceMean, ReduceSum, Relu, Reshape, Sigmoid, Slice, Softmax, Split, Sqrt, Squeeze, Sub, Sum, Tanh, Transpose, Unsqueeze";
/// The ops folded when all their inputs are constant.
const FOLDABLE: &str = "Add, Cast, Constant, ConstantOfShape, Div, Identity, Mul, ReduceMean, Reshape, Slice, Sub, Tile, Unsqueeze";

/// A constant: shape and values (integers too, exactly, as f64).
#[derive(Debug, Clone)]
struct Const {
    shape: Vec<usize>,
    data: Arc<Vec<f64>>,
}

impl Const {
    fn scalar(&self) -> Option<f64> {
        (self.data.len() == 1).then(|| self.data[0])
    }
}

/// Why a node cannot be taken.
fn refuse(model: &Model, node: &pb::NodeProto, reason: String) -> EvalError {
    EvalError::NotDifferentiable {
        model: model.name().to_owned(),
        node: node_name(node),
        op: node.op_type.clone(),
        reason,
    }
}

fn attr_int(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    onnx_read::attr_int(node, name).unwrap_or(default)
}

fn attr_float(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    onnx_read::attr_float(node, name).unwrap_or(default)
}

/// Reads a tensor's values as f64 (float, double and integer types; raw or typed fields).
fn read_tensor(t: &pb::TensorProto) -> Result<Const, String> {
    let (shape, data) = onnx_read::values_f64(t)?;
    Ok(Const {
        shape,
        data: Arc::new(data),
    })
}

/// Numpy broadcasting of two shapes.
fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let db = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// Row-major strides of `shape` seen through broadcasting to `out` (0 where broadcast).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; out.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        let o = i + out.len() - shape.len();
        strides[o] = if shape[i] == 1 { 0 } else { s };
        s *= shape[i];
    }
    strides
}

fn binary(a: &Const, b: &Const, f: impl Fn(f64, f64) -> f64) -> Option<Const> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let (sa, sb) = (
        broadcast_strides(&a.shape, &shape),
        broadcast_strides(&b.shape, &shape),
    );
    let total: usize = shape.iter().product();
    let mut data = Vec::with_capacity(total);
    if a.shape == b.shape {
        data.extend(a.data.iter().zip(b.data.iter()).map(|(&x, &y)| f(x, y)));
    } else if let Some(y) = b.scalar() {
        data.extend(a.data.iter().map(|&x| f(x, y)));
    } else {
        let mut index = vec![0usize; shape.len()];
        for _ in 0..total {
            let (ia, ib) = index
                .iter()
                .enumerate()
                .fold((0, 0), |(p, q), (d, &i)| (p + i * sa[d], q + i * sb[d]));
            data.push(f(a.data[ia], b.data[ib]));
            for d in (0..shape.len()).rev() {
                index[d] += 1;
                if index[d] < shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
    }
    Some(Const {
        shape,
        data: Arc::new(data),
    })
}

/// Evaluates a node whose inputs are all constant.
fn fold(node: &pb::NodeProto, inputs: &[Option<Const>], opset: i64) -> Result<Vec<Const>, String> {
    let input = |i: usize| -> Result<&Const, String> {
        inputs
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("input {i} is missing"))
    };
    let ints = |c: &Const| -> Vec<i64> { c.data.iter().map(|&v| v as i64).collect() };
    let one = |c: Const| Ok(vec![c]);
    match node.op_type.as_str() {
        "Identity" | "Cast" => one(input(0)?.clone()),
        "Constant" => {
            let t = attr(node, "value")
                .and_then(|a| a.t.as_ref())
                .ok_or("Constant without a tensor `value`")?;
            one(read_tensor(t)?)
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = ints(input(0)?).iter().map(|&d| d.max(0) as usize).collect();
            let value = match attr(node, "value").and_then(|a| a.t.as_ref()) {
                Some(t) => read_tensor(t)?.scalar().ok_or("`value` is not one value")?,
                None => 0.0,
            };
            let total = shape.iter().product();
            one(Const {
                shape,
                data: Arc::new(vec![value; total]),
            })
        }
        "Add" | "Sub" | "Mul" | "Div" => {
            let (a, b) = (input(0)?, input(1)?);
            let f: fn(f64, f64) -> f64 = match node.op_type.as_str() {
                "Add" => |x, y| x + y,
                "Sub" => |x, y| x - y,
                "Mul" => |x, y| x * y,
                _ => |x, y| x / y,
            };
            one(binary(a, b, f).ok_or_else(|| {
                format!("shapes {:?} and {:?} do not broadcast", a.shape, b.shape)
            })?)
        }
        "Tile" => {
            let x = input(0)?;
            let reps = ints(input(1)?);
            if reps.len() != x.shape.len() {
                return Err(format!("{} repeats for rank {}", reps.len(), x.shape.len()));
            }
            let mut cur = x.clone();
            // Tile one axis at a time, outermost last.
            for (axis, &r) in reps.iter().enumerate() {
                let r = r.max(0) as usize;
                if r == 1 {
                    continue;
                }
                let outer: usize = cur.shape[..axis].iter().product();
                let inner: usize = cur.shape[axis..].iter().product();
                let mut data = Vec::with_capacity(outer * inner * r);
                for o in 0..outer {
                    let block = &cur.data[o * inner..(o + 1) * inner];
                    for _ in 0..r {
                        data.extend_from_slice(block);
                    }
                }
                cur.shape[axis] *= r;
                cur.data = Arc::new(data);
            }
            one(cur)
        }
        "Slice" => {
            let x = input(0)?;
            let rank = x.shape.len() as i64;
            let (starts, ends, axes, steps) = if opset < 10 {
                let starts = attr_ints(node, "starts").ok_or("no `starts`")?;
                let ends = attr_ints(node, "ends").ok_or("no `ends`")?;
                let axes =
                    attr_ints(node, "axes").unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = vec![1; starts.len()];
                (starts, ends, axes, steps)
            } else {
                let starts = ints(input(1)?);
                let ends = ints(input(2)?);
                let axes = inputs
                    .get(3)
                    .and_then(Option::as_ref)
                    .map_or_else(|| (0..starts.len() as i64).collect(), ints);
                let steps = inputs
                    .get(4)
                    .and_then(Option::as_ref)
                    .map_or_else(|| vec![1; starts.len()], ints);
                (starts, ends, axes, steps)
            };
            let mut ranges: Vec<(usize, usize)> = x.shape.iter().map(|&d| (0, d)).collect();
            for (((&s, &e), &a), &st) in starts.iter().zip(&ends).zip(&axes).zip(&steps) {
                if st != 1 {
                    return Err(format!("step {st} (only 1 is supported)"));
                }
                let a = if a < 0 { a + rank } else { a };
                let dim = *x.shape.get(a as usize).ok_or("axis out of range")? as i64;
                let clamp = |v: i64| (if v < 0 { v + dim } else { v }).clamp(0, dim) as usize;
                let (s, e) = (clamp(s), clamp(e));
                ranges[a as usize] = (s, e.max(s));
            }
            let shape: Vec<usize> = ranges.iter().map(|(s, e)| e - s).collect();
            let total: usize = shape.iter().product();
            let strides = broadcast_strides(&x.shape, &x.shape);
            let mut data = Vec::with_capacity(total);
            let mut index = vec![0usize; shape.len()];
            if total > 0 {
                // Copy contiguous runs along the last axis.
                let last = shape.len() - 1;
                loop {
                    let base: usize = index
                        .iter()
                        .enumerate()
                        .map(|(d, &i)| (i + ranges[d].0) * strides[d])
                        .sum();
                    let step = if x.shape[last] == 1 { 0 } else { 1 };
                    if step == 1 {
                        data.extend_from_slice(&x.data[base..base + shape[last]]);
                    } else {
                        data.push(x.data[base]);
                    }
                    let mut d = last;
                    loop {
                        if d == 0 {
                            return one(Const {
                                shape,
                                data: Arc::new(data),
                            });
                        }
                        d -= 1;
                        index[d] += 1;
                        if index[d] < shape[d] {
                            break;
                        }
                        index[d] = 0;
                    }
                }
            }
            one(Const {
                shape,
                data: Arc::new(data),
            })
        }
        "Reshape" => {
            let x = input(0)?;
            let target = ints(input(1)?);
            let shape = reshape(&x.shape, &target)?;
            one(Const {
                shape,
                data: x.data.clone(),
            })
        }
        "Unsqueeze" => {
            let x = input(0)?;
            let axes = if opset < 13 {
                attr_ints(node, "axes").ok_or("no `axes`")?
            } else {
                ints(input(1)?)
            };
            let rank = (x.shape.len() + axes.len()) as i64;
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&a| (if a < 0 { a + rank } else { a }) as usize)
                .collect();
            axes.sort_unstable();
            let mut shape = x.shape.clone();
            for a in axes {
                shape.insert(a.min(shape.len()), 1);
            }
            one(Const {
                shape,
                data: x.data.clone(),
            })
        }
        "ReduceMean" => {
            let x = input(0)?;
            let rank = x.shape.len() as i64;
            let axes = if opset < 18 {
                attr_ints(node, "axes")
            } else {
                inputs.get(1).and_then(Option::as_ref).map(ints)
            }
            .unwrap_or_else(|| (0..rank).collect());
            let axes: Vec<usize> = axes
                .iter()
                .map(|&a| (if a < 0 { a + rank } else { a }) as usize)
                .collect();
            let keep: Vec<usize> = x
                .shape
                .iter()
                .enumerate()
                .map(|(d, &n)| if axes.contains(&d) { 1 } else { n })
                .collect();
            let total: usize = keep.iter().product();
            let count = x.data.len() / total.max(1);
            let ks = broadcast_strides(&keep, &x.shape);
            let mut sums = vec![0.0; total];
            let mut index = vec![0usize; x.shape.len()];
            for &v in x.data.iter() {
                let k: usize = index.iter().zip(&ks).map(|(i, s)| i * s).sum();
                sums[k] += v;
                for d in (0..index.len()).rev() {
                    index[d] += 1;
                    if index[d] < x.shape[d] {
                        break;
                    }
                    index[d] = 0;
                }
            }
            for s in &mut sums {
                *s /= count as f64;
            }
            let shape = if attr_int(node, "keepdims", 1) == 1 {
                keep
            } else {
                x.shape
                    .iter()
                    .enumerate()
                    .filter(|(d, _)| !axes.contains(d))
                    .map(|(_, &n)| n)
                    .collect()
            };
            one(Const {
                shape,
                data: Arc::new(sums),
            })
        }
        other => Err(format!(
            "`{other}` on constants is not supported (foldable: {FOLDABLE})"
        )),
    }
}

/// Loads `model`'s graph for the evaluator in element type `T`.
pub(crate) fn load<T: Real>(model: &Model) -> Result<Network<T>, EvalError> {
    let spec = &model.manifest.input;
    if spec.layout != Layout::Nchw {
        return Err(EvalError::ShapeMismatch {
            model: model.name().to_owned(),
            message: format!(
                "the differentiable evaluator takes NCHW inputs only; this manifest says {:?}",
                spec.layout
            ),
        });
    }
    let proto = pb::ModelProto::decode(&model.onnx[..]).map_err(|e| EvalError::NotOnnx {
        path: model.onnx_path.clone(),
        backend: "gradient",
        message: e.to_string(),
    })?;
    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(13, |o| o.version);
    let graph = proto.graph.as_ref().ok_or_else(|| EvalError::NotOnnx {
        path: model.onnx_path.clone(),
        backend: "gradient",
        message: "the file has no graph".into(),
    })?;
    let bad_tensor = |name: &str, why: String| EvalError::NotOnnx {
        path: model.onnx_path.clone(),
        backend: "gradient",
        message: format!("initializer `{name}`: {why}"),
    };
    let mut consts: HashMap<String, Const> = HashMap::new();
    for t in &graph.initializer {
        consts.insert(
            t.name.clone(),
            read_tensor(t).map_err(|e| bad_tensor(&t.name, e))?,
        );
    }
    if !graph.input.iter().any(|i| i.name == spec.name) || consts.contains_key(&spec.name) {
        let inputs: Vec<&str> = graph
            .input
            .iter()
            .map(|i| i.name.as_str())
            .filter(|n| !consts.contains_key(*n))
            .collect();
        return Err(EvalError::ShapeMismatch {
            model: model.name().to_owned(),
            message: format!(
                "the manifest's input.name `{}` is not an input of the graph (its inputs: {}); fix `[input] name`",
                spec.name,
                inputs.join(", ")
            ),
        });
    }
    // How often each value is still to be read, so folded intermediates are freed early.
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for node in &graph.node {
        for i in &node.input {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    let mut slots: HashMap<String, usize> = HashMap::from([(spec.name.clone(), 0)]);
    let mut steps: Vec<Step> = Vec::new();
    let mut params: Vec<Parameter<T>> = Vec::new();
    let mut running: Vec<Parameter<T>> = Vec::new();
    let mut param_index: HashMap<String, usize> = HashMap::new();
    let mut param = |name: &str, c: &Const, params: &mut Vec<Parameter<T>>| -> usize {
        *param_index.entry(name.to_owned()).or_insert_with(|| {
            params.push(Parameter {
                name: name.to_owned(),
                shape: c.shape.clone(),
                values: c.data.iter().map(|&v| T::from_f64(v)).collect(),
            });
            params.len() - 1
        })
    };
    let initializers: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let mut fixed: Vec<Tensor<T>> = Vec::new();
    let mut fixed_index: HashMap<String, usize> = HashMap::new();
    for node in &graph.node {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(refuse(
                model,
                node,
                format!("domain `{}` is not supported", node.domain),
            ));
        }
        let activation = node.input.iter().any(|i| slots.contains_key(i));
        if !activation {
            let inputs: Vec<Option<Const>> = node
                .input
                .iter()
                .map(|i| {
                    if i.is_empty() {
                        None
                    } else {
                        consts.get(i).cloned()
                    }
                })
                .collect();
            if let Some(missing) = node
                .input
                .iter()
                .zip(&inputs)
                .find(|(name, c)| !name.is_empty() && c.is_none())
            {
                return Err(refuse(
                    model,
                    node,
                    format!(
                        "input `{}` is neither computed before nor an initializer",
                        missing.0
                    ),
                ));
            }
            let outputs = fold(node, &inputs, opset)
                .map_err(|e| refuse(model, node, format!("cannot fold this constant node: {e}")))?;
            for (name, value) in node.output.iter().zip(outputs) {
                consts.insert(name.clone(), value);
            }
            for i in &node.input {
                if let Some(u) = uses.get_mut(i.as_str()) {
                    *u -= 1;
                    if *u == 0 && !graph.output.iter().any(|o| &o.name == i) {
                        consts.remove(i);
                    }
                }
            }
            continue;
        }
        let slot = |name: &str| slots.get(name).copied();
        let x = || {
            slot(&node.input[0]).ok_or_else(|| {
                refuse(
                    model,
                    node,
                    "its first input is a constant and a later one depends on the image; only the first input may".into(),
                )
            })
        };
        // Operand `i` of an op that may read constants; an initializer is a parameter where
        // `trainable`.
        let mut arg = |i: usize, trainable: bool, params: &mut Vec<Parameter<T>>| {
            let name = node
                .input
                .get(i)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| refuse(model, node, format!("input {i} is missing")))?;
            if let Some(s) = slot(name) {
                return Ok(Arg::Value(s));
            }
            let c = consts.get(name).ok_or_else(|| {
                refuse(
                    model,
                    node,
                    format!("input `{name}` is neither computed before nor a constant"),
                )
            })?;
            Ok::<Arg, EvalError>(if trainable && initializers.contains(name) {
                Arg::Param(param(name, c, params))
            } else {
                Arg::Const(*fixed_index.entry(name.clone()).or_insert_with(|| {
                    fixed.push(Tensor {
                        shape: c.shape.clone(),
                        data: c.data.iter().map(|&v| T::from_f64(v)).collect(),
                    });
                    fixed.len() - 1
                }))
            })
        };
        // Integers from a constant input (`None` when the input is absent).
        let ints_input = |i: usize| -> Result<Option<Vec<i64>>, EvalError> {
            let Some(name) = node.input.get(i).filter(|n| !n.is_empty()) else {
                return Ok(None);
            };
            match consts.get(name) {
                Some(c) => Ok(Some(c.data.iter().map(|&v| v as i64).collect())),
                None => Err(refuse(
                    model,
                    node,
                    format!("input {i} (`{name}`) must be a constant"),
                )),
            }
        };
        if node.op_type == "Split" {
            let input = x()?;
            let axis = attr_int(node, "axis", 0);
            let sizes = if opset < 13 {
                attr_ints(node, "split")
            } else {
                ints_input(1)?
            };
            let parts = node.output.len();
            let mut start = 0;
            for (index, out) in node.output.iter().enumerate() {
                let op = match &sizes {
                    Some(sizes) => {
                        let size = *sizes.get(index).ok_or_else(|| {
                            refuse(
                                model,
                                node,
                                format!("{} sizes for {parts} outputs", sizes.len()),
                            )
                        })?;
                        start += size;
                        Op::Slice(vec![SliceAxis {
                            axis,
                            start: start - size,
                            end: start,
                            step: 1,
                        }])
                    }
                    None => Op::SplitPart { axis, index, parts },
                };
                let output = slots.len();
                slots.insert(out.clone(), output);
                steps.push(Step {
                    op,
                    inputs: vec![input],
                    output,
                    node: node_name(node),
                    op_type: node.op_type.clone(),
                });
            }
            continue;
        }
        let constant = |i: usize| -> Result<Option<(String, Const)>, EvalError> {
            let Some(name) = node.input.get(i).filter(|n| !n.is_empty()) else {
                return Ok(None);
            };
            match consts.get(name) {
                Some(c) => Ok(Some((name.clone(), c.clone()))),
                None => Err(refuse(
                    model,
                    node,
                    format!(
                        "input {i} (`{name}`) depends on the image; only constant {} are supported there",
                        if i == 1 { "weights" } else { "biases" }
                    ),
                )),
            }
        };
        let window = |kernel: Option<Vec<i64>>, pool: bool| -> Result<WindowSpec, EvalError> {
            let kernel = kernel.ok_or_else(|| refuse(model, node, "no kernel_shape".into()))?;
            if kernel.len() != 2 {
                return Err(refuse(
                    model,
                    node,
                    format!("only 2-D windows are supported, kernel_shape {kernel:?}"),
                ));
            }
            let two = |name: &str| -> Result<[usize; 2], EvalError> {
                match attr_ints(node, name) {
                    None => Ok([1, 1]),
                    Some(v) if v.len() == 2 && v.iter().all(|&d| d > 0) => {
                        Ok([v[0] as usize, v[1] as usize])
                    }
                    Some(v) => Err(refuse(model, node, format!("bad {name} {v:?}"))),
                }
            };
            let auto = attr(node, "auto_pad")
                .map(|a| String::from_utf8_lossy(&a.s).into_owned())
                .unwrap_or_default();
            let padding = match auto.as_str() {
                "" | "NOTSET" => match attr_ints(node, "pads") {
                    None => Padding::Explicit([0; 4]),
                    Some(p) if p.len() == 4 && p.iter().all(|&d| d >= 0) => Padding::Explicit([
                        p[0] as usize,
                        p[1] as usize,
                        p[2] as usize,
                        p[3] as usize,
                    ]),
                    Some(p) => return Err(refuse(model, node, format!("bad pads {p:?}"))),
                },
                "VALID" => Padding::Explicit([0; 4]),
                "SAME_UPPER" => Padding::Same { upper: true },
                "SAME_LOWER" => Padding::Same { upper: false },
                other => return Err(refuse(model, node, format!("unknown auto_pad `{other}`"))),
            };
            if pool && attr_int(node, "storage_order", 0) != 0 {
                return Err(refuse(
                    model,
                    node,
                    "storage_order 1 is not supported".into(),
                ));
            }
            Ok(WindowSpec {
                kernel: [kernel[0] as usize, kernel[1] as usize],
                strides: two("strides")?,
                dilations: two("dilations")?,
                padding,
                ceil: pool && attr_int(node, "ceil_mode", 0) == 1,
            })
        };
        let op = match node.op_type.as_str() {
            "Conv" => {
                let (wname, w) =
                    constant(1)?.ok_or_else(|| refuse(model, node, "no weight".into()))?;
                if w.shape.len() != 4 {
                    return Err(refuse(
                        model,
                        node,
                        format!(
                            "weight of shape {:?}; only 2-D convolutions are supported",
                            w.shape
                        ),
                    ));
                }
                let kernel = attr_ints(node, "kernel_shape")
                    .unwrap_or_else(|| vec![w.shape[2] as i64, w.shape[3] as i64]);
                let window = window(Some(kernel), false)?;
                let bias = constant(2)?;
                let weight = param(&wname, &w, &mut params);
                let bias = bias.map(|(n, c)| param(&n, &c, &mut params));
                let group = attr_int(node, "group", 1).max(1) as usize;
                Op::Conv {
                    weight,
                    bias,
                    group,
                    window,
                }
            }
            "MaxPool" => {
                if node.output.len() > 1 && node.output.iter().skip(1).any(|o| !o.is_empty()) {
                    return Err(refuse(
                        model,
                        node,
                        "the Indices output is not supported".into(),
                    ));
                }
                Op::MaxPool(window(attr_ints(node, "kernel_shape"), true)?)
            }
            "Relu" => Op::Relu,
            "Clip" => {
                let (min, max) = if opset < 11 {
                    (
                        f64::from(attr_float(node, "min", f32::MIN)),
                        f64::from(attr_float(node, "max", f32::MAX)),
                    )
                } else {
                    let get = |i: usize, default: f64| -> Result<f64, EvalError> {
                        Ok(match constant(i)? {
                            None => default,
                            Some((_, c)) => c.scalar().ok_or_else(|| {
                                refuse(model, node, "min/max must be scalars".into())
                            })?,
                        })
                    };
                    (get(1, f64::NEG_INFINITY)?, get(2, f64::INFINITY)?)
                };
                Op::Clip { min, max }
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" => {
                if node.input.len() != 2 {
                    return Err(refuse(model, node, format!("{} inputs", node.input.len())));
                }
                let (op, trainable) = match node.op_type.as_str() {
                    "Add" => (Binary::Add, true),
                    "Sub" => (Binary::Sub, true),
                    "Mul" => (Binary::Mul, true),
                    "Div" => (Binary::Div, false),
                    _ => (Binary::Pow, false),
                };
                let a = arg(0, trainable, &mut params)?;
                let b = arg(1, trainable, &mut params)?;
                Op::Binary { op, a, b }
            }
            "Sum" => {
                if node.input.iter().any(|i| slot(i).is_none()) {
                    return Err(refuse(
                        model,
                        node,
                        "a sum of values computed from the image and constants is not supported"
                            .into(),
                    ));
                }
                Op::Add
            }
            "MatMul" => {
                let a = arg(0, true, &mut params)?;
                let b = arg(1, true, &mut params)?;
                Op::MatMul { a, b }
            }
            "LayerNormalization" => {
                if node
                    .output
                    .iter()
                    .skip(1)
                    .any(|o| !o.is_empty() && uses.contains_key(o.as_str()))
                {
                    return Err(refuse(
                        model,
                        node,
                        "its Mean and InvStdDev outputs are used".into(),
                    ));
                }
                let scale = arg(1, true, &mut params)?;
                let bias = if node.input.get(2).is_some_and(|n| !n.is_empty()) {
                    Some(arg(2, true, &mut params)?)
                } else {
                    None
                };
                if matches!(scale, Arg::Value(_)) || matches!(bias, Some(Arg::Value(_))) {
                    return Err(refuse(
                        model,
                        node,
                        "a scale or bias computed from the image is not supported".into(),
                    ));
                }
                Op::LayerNorm {
                    axis: attr_int(node, "axis", -1),
                    epsilon: f64::from(attr_float(node, "epsilon", 1e-5)),
                    scale,
                    bias,
                }
            }
            "Erf" => Op::Unary(Unary::Erf),
            "Sqrt" => Op::Unary(Unary::Sqrt),
            "Exp" => Op::Unary(Unary::Exp),
            "Neg" => Op::Unary(Unary::Neg),
            "Sigmoid" => Op::Unary(Unary::Sigmoid),
            "Tanh" => Op::Unary(Unary::Tanh),
            "HardSigmoid" => Op::Unary(Unary::HardSigmoid {
                alpha: f64::from(attr_float(node, "alpha", 0.2)),
                beta: f64::from(attr_float(node, "beta", 0.5)),
            }),
            "HardSwish" => Op::Unary(Unary::HardSwish),
            "Slice" => {
                let (starts, ends, axes, steps) = if opset < 10 {
                    let starts = attr_ints(node, "starts");
                    let ends = attr_ints(node, "ends");
                    (starts, ends, attr_ints(node, "axes"), None)
                } else {
                    (
                        ints_input(1)?,
                        ints_input(2)?,
                        ints_input(3)?,
                        ints_input(4)?,
                    )
                };
                let (Some(starts), Some(ends)) = (starts, ends) else {
                    return Err(refuse(model, node, "no starts or ends".into()));
                };
                let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
                if axes.len() != starts.len()
                    || ends.len() != starts.len()
                    || steps.len() != starts.len()
                {
                    return Err(refuse(
                        model,
                        node,
                        "starts, ends, axes and steps differ in length".into(),
                    ));
                }
                if let Some(s) = steps.iter().find(|&&s| s <= 0) {
                    return Err(refuse(
                        model,
                        node,
                        format!("step {s}: only positive steps are supported"),
                    ));
                }
                Op::Slice(
                    (0..starts.len())
                        .map(|i| SliceAxis {
                            axis: axes[i],
                            start: starts[i],
                            end: ends[i],
                            step: steps[i],
                        })
                        .collect(),
                )
            }
            "Gather" => {
                let name = node.input.get(1).cloned().unwrap_or_default();
                let indices = consts.get(&name).ok_or_else(|| {
                    refuse(
                        model,
                        node,
                        "only constant indices are supported (gathering from a constant by computed indices has no gradient)".into(),
                    )
                })?;
                Op::Gather {
                    axis: attr_int(node, "axis", 0),
                    indices: indices.data.iter().map(|&v| v as i64).collect(),
                    shape: indices.shape.clone(),
                }
            }
            "ReduceMean" | "ReduceSum" => {
                let from_input = if node.op_type == "ReduceMean" {
                    opset >= 18
                } else {
                    opset >= 13
                };
                let axes = if from_input {
                    ints_input(1)?
                } else {
                    attr_ints(node, "axes")
                };
                if axes.as_ref().is_none_or(|a| a.is_empty())
                    && attr_int(node, "noop_with_empty_axes", 0) == 1
                {
                    Op::Identity
                } else {
                    Op::Reduce {
                        axes: axes.filter(|a| !a.is_empty()),
                        keepdims: attr_int(node, "keepdims", 1) != 0,
                        mean: node.op_type == "ReduceMean",
                    }
                }
            }
            "Squeeze" | "Unsqueeze" => {
                let axes = if opset < 13 {
                    attr_ints(node, "axes")
                } else {
                    ints_input(1)?
                };
                let Some(axes) = axes else {
                    return Err(refuse(
                        model,
                        node,
                        "no axes: which axes have length 1 would depend on the batch size".into(),
                    ));
                };
                Op::Reshape(if node.op_type == "Squeeze" {
                    Reshape::Squeeze(axes)
                } else {
                    Reshape::Unsqueeze(axes)
                })
            }
            "BatchNormalization" => {
                if attr_int(node, "training_mode", 0) != 0 {
                    return Err(refuse(
                        model,
                        node,
                        "training_mode = 1 is not supported; export the model in inference mode"
                            .into(),
                    ));
                }
                if node
                    .output
                    .iter()
                    .skip(1)
                    .any(|o| !o.is_empty() && uses.contains_key(o.as_str()))
                {
                    return Err(refuse(
                        model,
                        node,
                        "its running-statistics outputs are used (training mode)".into(),
                    ));
                }
                let scale = arg(1, true, &mut params)?;
                let bias = arg(2, true, &mut params)?;
                if matches!(scale, Arg::Value(_)) || matches!(bias, Arg::Value(_)) {
                    return Err(refuse(
                        model,
                        node,
                        "a scale or bias computed from the image is not supported".into(),
                    ));
                }
                let stat = |i: usize, running: &mut Vec<Parameter<T>>| {
                    let what = if i == 3 { "mean" } else { "variance" };
                    let name = node.input.get(i).filter(|n| !n.is_empty()).ok_or_else(|| {
                        refuse(
                            model,
                            node,
                            format!("input {i} (the running {what}) is missing"),
                        )
                    })?;
                    let v = consts.get(name).ok_or_else(|| {
                        refuse(
                            model,
                            node,
                            format!("input {i} (`{name}`, the running {what}) must be a constant"),
                        )
                    })?;
                    running.push(Parameter {
                        name: name.clone(),
                        shape: v.shape.clone(),
                        values: v.data.iter().map(|&a| T::from_f64(a)).collect(),
                    });
                    Ok::<usize, EvalError>(running.len() - 1)
                };
                let mean = stat(3, &mut running)?;
                let var = stat(4, &mut running)?;
                Op::BatchNorm(BatchNorm {
                    scale,
                    bias,
                    mean,
                    var,
                    epsilon: f64::from(attr_float(node, "epsilon", 1e-5)),
                    momentum: f64::from(attr_float(node, "momentum", 0.9)),
                })
            }
            "AveragePool" => {
                let window = window(attr_ints(node, "kernel_shape"), true)?;
                if attr_int(node, "count_include_pad", 0) != 0
                    && window.padding != Padding::Explicit([0; 4])
                {
                    return Err(refuse(
                        model,
                        node,
                        "count_include_pad = 1 with padding is not supported".into(),
                    ));
                }
                Op::AveragePool(window)
            }
            "Concat" => {
                if node.input.iter().any(|i| slot(i).is_none()) {
                    return Err(refuse(
                        model,
                        node,
                        "a constant input is not supported".into(),
                    ));
                }
                Op::Concat(attr_int(node, "axis", 1))
            }
            "Transpose" => {
                let perm =
                    attr_ints(node, "perm").ok_or_else(|| refuse(model, node, "no perm".into()))?;
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                if sorted.iter().enumerate().any(|(i, &p)| p != i as i64) {
                    return Err(refuse(
                        model,
                        node,
                        format!("perm {perm:?} is not a permutation"),
                    ));
                }
                Op::Transpose(perm.iter().map(|&p| p as usize).collect())
            }
            "GlobalAveragePool" => Op::GlobalAveragePool,
            "Flatten" => Op::Reshape(Reshape::Flatten(attr_int(node, "axis", 1))),
            "Reshape" => {
                let target =
                    ints_input(1)?.ok_or_else(|| refuse(model, node, "no shape".into()))?;
                if attr_int(node, "allowzero", 0) != 0 && target.contains(&0) {
                    return Err(refuse(
                        model,
                        node,
                        "allowzero = 1 with a 0 in the target shape is not supported".into(),
                    ));
                }
                // A fixed batch would break on any other batch size (micro-batches): the
                // batch must come from -1 or 0.
                Op::Reshape(Reshape::To(target))
            }
            "Gemm" => {
                if attr_int(node, "transA", 0) != 0 {
                    return Err(refuse(model, node, "transA = 1 is not supported".into()));
                }
                let (wname, w) = constant(1)?.ok_or_else(|| refuse(model, node, "no B".into()))?;
                if w.shape.len() != 2 {
                    return Err(refuse(model, node, format!("B of shape {:?}", w.shape)));
                }
                let trans_b = attr_int(node, "transB", 0) != 0;
                let m = if trans_b { w.shape[0] } else { w.shape[1] };
                let bias = constant(2)?;
                if let Some((_, c)) = &bias
                    && c.data.len() != m
                    && c.data.len() != 1
                {
                    return Err(refuse(
                        model,
                        node,
                        format!(
                            "C of shape {:?} for {m} outputs; only a per-output bias broadcasts",
                            c.shape
                        ),
                    ));
                }
                let weight = param(&wname, &w, &mut params);
                let bias = bias.map(|(n, c)| param(&n, &c, &mut params));
                Op::Gemm {
                    weight,
                    bias,
                    alpha: f64::from(attr_float(node, "alpha", 1.0)),
                    beta: f64::from(attr_float(node, "beta", 1.0)),
                    trans_b,
                }
            }
            "LRN" => {
                let size = attr_int(node, "size", 0);
                if size <= 0 {
                    return Err(refuse(model, node, "no positive `size`".into()));
                }
                Op::Lrn(Lrn {
                    size: size as usize,
                    alpha: f64::from(attr_float(node, "alpha", 1e-4)),
                    beta: f64::from(attr_float(node, "beta", 0.75)),
                    bias: f64::from(attr_float(node, "bias", 1.0)),
                })
            }
            // Inference: dropout is the identity (its mask output is not supported).
            "Dropout" | "Identity" => {
                if node
                    .output
                    .iter()
                    .skip(1)
                    .any(|o| !o.is_empty() && uses.contains_key(o.as_str()))
                {
                    return Err(refuse(model, node, "its mask output is used".into()));
                }
                Op::Identity
            }
            "Softmax" => Op::Softmax {
                axis: attr_int(node, "axis", if opset < 13 { 1 } else { -1 }),
                legacy: opset < 13,
            },
            other => {
                return Err(refuse(
                    model,
                    node,
                    format!(
                        "`{other}` cannot be differentiated by this evaluator (supported: {DIFFERENTIABLE})"
                    ),
                ));
            }
        };
        let inputs: Vec<usize> = match &op {
            Op::Add | Op::Concat(_) => node
                .input
                .iter()
                .map(|i| slot(i).expect("checked above"))
                .collect(),
            Op::Binary { a, b, .. } | Op::MatMul { a, b } => [a, b]
                .into_iter()
                .filter_map(|a| match a {
                    Arg::Value(s) => Some(*s),
                    _ => None,
                })
                .collect(),
            _ => vec![x()?],
        };
        let output = slots.len();
        let out_name = node.output.first().cloned().unwrap_or_default();
        slots.insert(out_name, output);
        steps.push(Step {
            op,
            inputs,
            output,
            node: node_name(node),
            op_type: node.op_type.clone(),
        });
    }
    let out_name = &graph
        .output
        .first()
        .ok_or_else(|| EvalError::NotOnnx {
            path: model.onnx_path.clone(),
            backend: "gradient",
            message: "the graph has no output".into(),
        })?
        .name;
    let mut output = *slots
        .get(out_name)
        .ok_or_else(|| EvalError::ShapeMismatch {
            model: model.name().to_owned(),
            message: format!("the graph's output `{out_name}` does not depend on the input"),
        })?;
    // A final Softmax is evaluated outside the network, so that logits are available.
    let mut softmax_removed = false;
    if let Some(last) = steps.iter().position(|s| s.output == output)
        && matches!(steps[last].op, Op::Softmax { axis: 1 | -1, .. })
        && !steps.iter().any(|s| s.inputs.contains(&output))
    {
        output = steps[last].inputs[0];
        steps.remove(last);
        softmax_removed = true;
    }
    // Steps the output does not depend on are dropped.
    let mut needed = vec![false; slots.len()];
    needed[output] = true;
    let mut kept = Vec::new();
    for step in steps.into_iter().rev() {
        if needed[step.output] {
            for &i in &step.inputs {
                needed[i] = true;
            }
            kept.push(step);
        }
    }
    kept.reverse();
    Ok(Network {
        model: model.name().to_owned(),
        steps: kept,
        params,
        consts: fixed,
        slots: slots.len(),
        input: [
            spec.channels as usize,
            spec.height as usize,
            spec.width as usize,
        ],
        output,
        softmax_removed,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        running,
        batch_statistics: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(shape: &[usize], data: Vec<f64>) -> Const {
        Const {
            shape: shape.to_vec(),
            data: Arc::new(data),
        }
    }

    fn node(op: &str, attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        }
    }

    fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            ints: v.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn constant_folding_matches_numpy_semantics() {
        // Tile [1, 2, 3] by 3, slice [2, 7), reshape to [-1, 1], subtract the mean.
        let x = c(&[3], vec![1.0, 2.0, 3.0]);
        let tiled = &fold(
            &node("Tile", vec![]),
            &[Some(x), Some(c(&[1], vec![3.0]))],
            9,
        )
        .unwrap()[0];
        assert_eq!(
            *tiled.data,
            vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
        );
        let slice = node(
            "Slice",
            vec![ints("starts", &[2]), ints("ends", &[7]), ints("axes", &[0])],
        );
        let cut = &fold(&slice, &[Some(tiled.clone())], 9).unwrap()[0];
        assert_eq!(*cut.data, vec![3.0, 1.0, 2.0, 3.0, 1.0]);
        let shaped = &fold(
            &node("Reshape", vec![]),
            &[Some(cut.clone()), Some(c(&[2], vec![-1.0, 1.0]))],
            9,
        )
        .unwrap()[0];
        assert_eq!(shaped.shape, vec![5, 1]);
        let mean = &fold(
            &node("ReduceMean", vec![ints("axes", &[0])]),
            &[Some(shaped.clone())],
            9,
        )
        .unwrap()[0];
        assert_eq!(mean.shape, vec![1, 1]);
        assert_eq!(mean.data[0], 2.0);
        let m = c(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let row = &fold(
            &node("ReduceMean", vec![ints("axes", &[1])]),
            &[Some(m.clone())],
            9,
        )
        .unwrap()[0];
        assert_eq!(
            (row.shape.clone(), (*row.data).clone()),
            (vec![2, 1], vec![2.0, 5.0])
        );
        let centred = &fold(&node("Sub", vec![]), &[Some(m), Some(row.clone())], 9).unwrap()[0];
        assert_eq!(*centred.data, vec![-1.0, 0.0, 1.0, -1.0, 0.0, 1.0]);
        let err = fold(&node("Gather", vec![]), &[Some(c(&[1], vec![1.0]))], 9).unwrap_err();
        assert!(
            err.contains("`Gather` on constants is not supported"),
            "{err}"
        );
    }
}
