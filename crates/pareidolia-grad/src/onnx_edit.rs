//! Editing an ONNX classifier as a file: replacing its weights (initializers) by name, and
//! widening its last layer from `n` to `n + 1` classes (the paper's retraining adds a
//! "fooling" class). The graph is read and written as the ONNX protobuf (`ModelProto`) with
//! tract's own prost types (`tract_onnx::pb`), so nothing else is parsed or compiled and the
//! written file is the original graph with the edited tensors, not a re-export.
//!
//! Limits: tract's `onnx.proto` is the subset tract reads. Fields it does not know (value
//! types other than plain tensors, for one) are dropped when the file is written again, and
//! prost writes proto3-style (repeated numbers packed, scalars equal to their default left
//! out), so the bytes differ from the exporter's while saying the same: the tests check that
//! an unedited LeNet written back computes the same bits in tract and ONNX Runtime, and
//! `onnx.checker.check_model(full_check=True)` accepts the widened files. Only float32
//! initializers stored inside the file are edited (not external data, not weights computed by
//! nodes).
//!
//! Widening looks for the layer that makes the classifier's one output: from the graph
//! output back through ops that keep the class axis as it is (`Softmax`, `LogSoftmax`,
//! `Identity`, `Flatten`, and a `Reshape` whose class count is updated), to a `Gemm`, a
//! `MatMul` + `Add` or a lone `MatMul` whose weight (and bias) are initializers used by that
//! node alone. The weight gets one more row (or column, as the layout has it), the bias one
//! more entry, and every shape on the way to the output (`value_info`, graph output, graph
//! inputs that mirror initializers in old files) says `n + 1`. Anything else is an
//! [`EvalError::Edit`] saying what was found instead.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;

use crate::onnx_read::data_type::{FLOAT, INT64};
use crate::onnx_read::{attr_int, element_count as count, float_values, int64_values, is_external};
use pareidolia_eval::{EditProblem, EvalError};

/// How the last layer computes the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// `Gemm(x, W, b)`; `transposed` = `transB = 1` (W is `[n, k]`, PyTorch's layout).
    Gemm {
        /// W is stored `[n, k]`.
        transposed: bool,
    },
    /// `MatMul(x, W)` then `Add(·, b)`, W `[k, n]`.
    MatMulAdd,
    /// `MatMul(x, W)` with no bias, W `[k, n]`.
    MatMul,
}

/// The classifier's last layer, as [`OnnxGraph::head`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifierHead {
    /// Its form.
    pub kind: HeadKind,
    /// The node's name (or `#index op` when it has none).
    pub node: String,
    /// The weight initializer.
    pub weight: String,
    /// The bias initializer, if any.
    pub bias: Option<String>,
    /// Inputs per class (k).
    pub inputs: usize,
    /// Classes (n).
    pub classes: usize,
    /// The graph output it feeds.
    pub output: String,
}

/// What a widening changed, for logs and provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Widened {
    /// The head before widening.
    pub head: ClassifierHead,
    /// Tensors whose declared shape now ends in `n + 1`.
    pub shapes: Vec<String>,
    /// Reshape targets whose class count was `n` and is now `n + 1`.
    pub reshapes: Vec<String>,
}

/// An ONNX model held as its protobuf, to edit and write back.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxGraph {
    proto: pb::ModelProto,
    origin: String,
}

/// A float32 initializer's shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatTensor {
    /// Dimensions.
    pub dims: Vec<i64>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

/// Ops between the last layer and the output that leave the class axis as it is.
const PASS_THROUGH: &[&str] = &["Softmax", "LogSoftmax", "Identity", "Flatten", "Reshape"];

impl OnnxGraph {
    /// Decodes ONNX bytes; `origin` names the file in errors.
    pub fn decode(bytes: &[u8], origin: impl Into<String>) -> Result<Self, EvalError> {
        let origin = origin.into();
        let proto = pb::ModelProto::decode(bytes).map_err(|e| EvalError::Edit {
            origin: origin.clone(),
            problem: EditProblem::Decode(e.to_string()),
        })?;
        if proto.graph.is_none() {
            return Err(EvalError::Edit {
                origin,
                problem: EditProblem::Decode("the model has no graph".into()),
            });
        }
        Ok(Self { proto, origin })
    }

    /// Reads an ONNX file.
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        let bytes = std::fs::read(path).map_err(|cause| EvalError::Read {
            what: "ONNX model",
            path: path.to_owned(),
            cause,
        })?;
        Self::decode(&bytes, path.display().to_string())
    }

    /// The model as ONNX bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.proto.encode_to_vec()
    }

    /// Writes the model to `path` (through a temporary file in the same folder, renamed, so a
    /// reader never sees half a file).
    pub fn write(&self, path: &Path) -> Result<(), EvalError> {
        let tmp = path.with_extension("onnx.tmp");
        let io = |cause| EvalError::Read {
            what: "ONNX model (writing)",
            path: path.to_owned(),
            cause,
        };
        std::fs::write(&tmp, self.to_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The protobuf, for inspection.
    pub fn proto(&self) -> &pb::ModelProto {
        &self.proto
    }

    fn graph(&self) -> &pb::GraphProto {
        self.proto.graph.as_ref().expect("checked by decode")
    }

    fn graph_mut(&mut self) -> &mut pb::GraphProto {
        self.proto.graph.as_mut().expect("checked by decode")
    }

    fn fail(&self, problem: EditProblem) -> EvalError {
        EvalError::Edit {
            origin: self.origin.clone(),
            problem,
        }
    }

    /// Names and shapes of the float32 initializers (the trainable tensors), in file order.
    pub fn float_initializers(&self) -> Vec<(String, Vec<i64>)> {
        self.graph()
            .initializer
            .iter()
            .filter(|t| t.data_type == FLOAT && !is_external(t))
            .map(|t| (t.name.clone(), t.dims.clone()))
            .collect()
    }

    fn initializer_index(&self, name: &str) -> Result<usize, EvalError> {
        let g = self.graph();
        let i = g
            .initializer
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| {
                let available: Vec<String> = self
                    .float_initializers()
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect();
                self.fail(EditProblem::UnknownInitializer {
                    name: name.to_owned(),
                    available: available.join(", "),
                })
            })?;
        let t = &g.initializer[i];
        if t.data_type != FLOAT || is_external(t) {
            let kind = if is_external(t) {
                "stored outside the file".to_owned()
            } else {
                DataType::try_from(t.data_type)
                    .map_or(format!("of data type {}", t.data_type), |d| {
                        d.as_str_name().to_owned()
                    })
            };
            return Err(self.fail(EditProblem::NotFloat {
                name: name.to_owned(),
                kind,
            }));
        }
        Ok(i)
    }

    /// A float32 initializer's shape and values.
    pub fn initializer(&self, name: &str) -> Result<FloatTensor, EvalError> {
        let t = &self.graph().initializer[self.initializer_index(name)?];
        let values = float_values(t);
        let expected = count(&t.dims);
        if values.len() != expected {
            return Err(self.fail(EditProblem::ValueCount {
                name: name.to_owned(),
                shape: t.dims.clone(),
                expected,
                found: values.len(),
            }));
        }
        Ok(FloatTensor {
            dims: t.dims.clone(),
            values,
        })
    }

    /// Replaces initializers' values by name, keeping their shapes (training writes its
    /// weights through this). All are checked (name, float32, count, finite) before any is
    /// changed, so a failed call leaves the model as it was.
    pub fn replace_initializers<'a>(
        &mut self,
        replacements: impl IntoIterator<Item = (&'a str, &'a [f32])>,
    ) -> Result<(), EvalError> {
        let mut checked = Vec::new();
        for (name, values) in replacements {
            let i = self.initializer_index(name)?;
            let t = &self.graph().initializer[i];
            let expected = count(&t.dims);
            if values.len() != expected {
                return Err(self.fail(EditProblem::ValueCount {
                    name: name.to_owned(),
                    shape: t.dims.clone(),
                    expected,
                    found: values.len(),
                }));
            }
            if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(self.fail(EditProblem::NonFinite {
                    name: name.to_owned(),
                    index,
                    value,
                }));
            }
            checked.push((i, values));
        }
        let g = self.graph_mut();
        for (i, values) in checked {
            let dims = g.initializer[i].dims.clone();
            set_floats(&mut g.initializer[i], dims, values);
        }
        Ok(())
    }

    /// Replaces one initializer's values; see [`OnnxGraph::replace_initializers`].
    pub fn replace_initializer(&mut self, name: &str, values: &[f32]) -> Result<(), EvalError> {
        self.replace_initializers([(name, values)])
    }

    /// Finds the classifier's last layer (see the module doc).
    pub fn head(&self) -> Result<ClassifierHead, EvalError> {
        self.trace().map(|t| t.head)
    }

    fn trace(&self) -> Result<Trace, EvalError> {
        let g = self.graph();
        let [output] = &g.output[..] else {
            return Err(self.fail(EditProblem::NoHead {
                output: format!("(of {})", g.output.len()),
                found: format!(
                    "is one of {} graph outputs; a classifier to widen has exactly one",
                    g.output.len()
                ),
            }));
        };
        let output = output.name.clone();
        let no_head = |found: String| {
            self.fail(EditProblem::NoHead {
                output: output.clone(),
                found,
            })
        };
        let producer: HashMap<&str, usize> = g
            .node
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
            .collect();
        let initializer = |name: &str| g.initializer.iter().find(|t| t.name == name);
        let mut chain = vec![output.clone()];
        let mut reshapes = Vec::new();
        let mut tensor = output.clone();
        loop {
            let Some(&i) = producer.get(tensor.as_str()) else {
                return Err(no_head(format!(
                    "is traced back to `{tensor}`, a graph input or initializer, without meeting one"
                )));
            };
            let node = &g.node[i];
            let label = node_label(node, i);
            match node.op_type.as_str() {
                "Gemm" | "MatMul" => return self.head_at(i, None, chain, reshapes, &output),
                "Add" => {
                    let [a, b] = &node.input[..] else {
                        return Err(no_head(format!(
                            "comes from {label} with {} inputs",
                            node.input.len()
                        )));
                    };
                    let (x, bias) = match (initializer(a), initializer(b)) {
                        (None, Some(_)) => (a, b),
                        (Some(_), None) => (b, a),
                        _ => {
                            return Err(no_head(format!(
                                "comes from {label}, which does not add an initializer (a bias) to one computed tensor"
                            )));
                        }
                    };
                    match producer.get(x.as_str()) {
                        Some(&m) if g.node[m].op_type == "MatMul" => {
                            chain.push(x.clone());
                            return self.head_at(
                                m,
                                Some((i, bias.clone())),
                                chain,
                                reshapes,
                                &output,
                            );
                        }
                        _ => {
                            return Err(no_head(format!(
                                "comes from {label}, an Add whose other input `{x}` is not a MatMul's output"
                            )));
                        }
                    }
                }
                op if PASS_THROUGH.contains(&op) => {
                    if let Some(axis) = attr_int(node, "axis")
                        && matches!(op, "Softmax" | "LogSoftmax")
                        && axis != 1
                        && axis != -1
                    {
                        return Err(no_head(format!(
                            "comes from {label} over axis {axis}, not the class axis (1 or -1)"
                        )));
                    }
                    if op == "Reshape" {
                        reshapes.push(i);
                    }
                    let Some(input) = node.input.first() else {
                        return Err(no_head(format!("comes from {label}, which has no input")));
                    };
                    tensor = input.clone();
                    chain.push(tensor.clone());
                }
                _ => {
                    return Err(no_head(format!(
                        "comes from {label}, which is not a fully connected layer (and not one of \
                         {} that may follow one)",
                        PASS_THROUGH.join(", ")
                    )));
                }
            }
        }
    }

    /// The head at node `i` (a Gemm or MatMul), with the Add that supplies its bias.
    fn head_at(
        &self,
        i: usize,
        add: Option<(usize, String)>,
        chain: Vec<String>,
        reshapes: Vec<usize>,
        output: &str,
    ) -> Result<Trace, EvalError> {
        let g = self.graph();
        let node = &g.node[i];
        let label = node_label(node, i);
        let unsupported = |reason: String| {
            self.fail(EditProblem::Unsupported {
                node: label.clone(),
                reason,
            })
        };
        let gemm = node.op_type == "Gemm";
        if gemm && attr_int(node, "transA").unwrap_or(0) != 0 {
            return Err(unsupported(
                "its transA = 1 transposes the activations".into(),
            ));
        }
        let transposed = gemm && attr_int(node, "transB").unwrap_or(0) != 0;
        let weight = node.input.get(1).cloned().unwrap_or_default();
        let bias = match &add {
            Some((_, b)) => Some(b.clone()),
            None if gemm => node.input.get(2).filter(|b| !b.is_empty()).cloned(),
            None => None,
        };
        let kind = match (gemm, &add) {
            (true, _) => HeadKind::Gemm { transposed },
            (false, Some(_)) => HeadKind::MatMulAdd,
            (false, None) => HeadKind::MatMul,
        };
        let w = g
            .initializer
            .iter()
            .find(|t| t.name == weight)
            .ok_or_else(|| {
                unsupported(format!(
                    "its weight `{weight}` is computed, not an initializer"
                ))
            })?;
        if w.dims.len() != 2 {
            return Err(unsupported(format!(
                "its weight `{weight}` has shape {:?}, not 2-D",
                w.dims
            )));
        }
        let (classes, inputs) = if transposed {
            (w.dims[0], w.dims[1])
        } else {
            (w.dims[1], w.dims[0])
        };
        let (classes, inputs) = (classes as usize, inputs as usize);
        self.initializer_index(&weight)?;
        let uses = |name: &str| {
            g.node
                .iter()
                .flat_map(|n| &n.input)
                .filter(|x| *x == name)
                .count()
        };
        if uses(&weight) != 1 {
            return Err(unsupported(format!(
                "its weight `{weight}` is shared with other nodes"
            )));
        }
        if let Some(b) = &bias {
            let t = g.initializer.iter().find(|t| &t.name == b).ok_or_else(|| {
                unsupported(format!("its bias `{b}` is computed, not an initializer"))
            })?;
            self.initializer_index(b)?;
            let per_class = matches!(&t.dims[..], [n] if *n as usize == classes)
                || matches!(&t.dims[..], [1, n] if *n as usize == classes);
            if !per_class {
                return Err(unsupported(format!(
                    "its bias `{b}` has shape {:?}, not one value per class ([{classes}] or [1, {classes}])",
                    t.dims
                )));
            }
            if uses(b) != 1 {
                return Err(unsupported(format!(
                    "its bias `{b}` is shared with other nodes"
                )));
            }
        }
        let mut chain = chain;
        chain.extend(node.output.first().cloned());
        if let Some((a, _)) = &add {
            chain.extend(g.node[*a].output.first().cloned());
        }
        chain.dedup();
        Ok(Trace {
            head: ClassifierHead {
                kind,
                node: label,
                weight,
                bias,
                inputs,
                classes,
                output: output.to_owned(),
            },
            chain,
            reshapes,
        })
    }

    /// Widens the last layer from `n` to `n + 1` classes: class `n` gets the weights
    /// `new_row` (`k` values, one per input of the layer) and the bias `new_bias` (ignored
    /// when the layer has no bias). With a zero row, the first `n` outputs are unchanged
    /// and the new logit is `new_bias` for every image.
    pub fn widen(&mut self, new_row: &[f32], new_bias: f32) -> Result<Widened, EvalError> {
        let trace = self.trace()?;
        let head = trace.head.clone();
        let (n, k) = (head.classes, head.inputs);
        if new_row.len() != k {
            return Err(self.fail(EditProblem::ValueCount {
                name: format!("{} (the new class's row)", head.weight),
                shape: vec![k as i64],
                expected: k,
                found: new_row.len(),
            }));
        }
        if let Some((index, &value)) = new_row
            .iter()
            .chain([&new_bias])
            .enumerate()
            .find(|(_, v)| !v.is_finite())
        {
            return Err(self.fail(EditProblem::NonFinite {
                name: format!("{} (the new class)", head.weight),
                index,
                value,
            }));
        }
        // Reshape targets: check every one before changing anything.
        let mut reshape_targets = Vec::new();
        for &r in &trace.reshapes {
            let node = &self.graph().node[r];
            let shape_name = node.input.get(1).cloned().unwrap_or_default();
            let found = self.int64_constant(&shape_name);
            let Some((place, values)) = found else {
                return Err(self.fail(EditProblem::Unsupported {
                    node: node_label(node, r),
                    reason: format!(
                        "its target shape `{shape_name}` is computed, not a constant; the class count in it cannot be updated"
                    ),
                }));
            };
            match values.last() {
                Some(&last) if last == n as i64 => {
                    reshape_targets.push((place, values, shape_name))
                }
                Some(&-1) => {}
                _ => {
                    return Err(self.fail(EditProblem::Unsupported {
                        node: node_label(node, r),
                        reason: format!(
                            "its target shape {values:?} does not end in the class count {n} (or -1)"
                        ),
                    }));
                }
            }
        }
        let w = self.initializer(&head.weight)?;
        let values = match head.kind {
            HeadKind::Gemm { transposed: true } => [&w.values[..], new_row].concat(),
            _ => w
                .values
                .chunks_exact(n)
                .zip(new_row)
                .flat_map(|(row, &extra)| row.iter().copied().chain([extra]))
                .collect(),
        };
        let dims = match head.kind {
            HeadKind::Gemm { transposed: true } => vec![(n + 1) as i64, k as i64],
            _ => vec![k as i64, (n + 1) as i64],
        };
        let bias = match &head.bias {
            Some(b) => {
                let t = self.initializer(b)?;
                let mut dims = t.dims.clone();
                *dims.last_mut().expect("checked per class") += 1;
                Some((b.clone(), dims, [&t.values[..], &[new_bias]].concat()))
            }
            None => None,
        };
        let weight_name = head.weight.clone();
        let g = self.graph_mut();
        let wi = g
            .initializer
            .iter()
            .position(|t| t.name == weight_name)
            .expect("found above");
        set_floats(&mut g.initializer[wi], dims.clone(), &values);
        let mut resized = vec![(weight_name.clone(), dims)];
        if let Some((name, dims, values)) = bias {
            let bi = g
                .initializer
                .iter()
                .position(|t| t.name == name)
                .expect("found above");
            set_floats(&mut g.initializer[bi], dims.clone(), &values);
            resized.push((name, dims));
        }
        let mut reshapes = Vec::new();
        for (place, mut values, name) in reshape_targets {
            *values.last_mut().expect("matched above") = (n + 1) as i64;
            let t = match place {
                ConstPlace::Initializer(i) => &mut g.initializer[i],
                ConstPlace::Node(i) => g.node[i]
                    .attribute
                    .iter_mut()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.as_mut())
                    .expect("found by int64_constant"),
            };
            let dims = t.dims.clone();
            set_int64s(t, dims, &values);
            reshapes.push(name);
        }
        // Old files list initializers among the graph inputs, with their shapes.
        for (name, dims) in &resized {
            for v in g.input.iter_mut().filter(|v| &v.name == name) {
                set_shape(v, dims);
            }
        }
        let mut shapes = Vec::new();
        for v in g.output.iter_mut().chain(g.value_info.iter_mut()) {
            if trace.chain.contains(&v.name) && widen_last_dim(v, n) {
                shapes.push(v.name.clone());
            }
        }
        self.proto.metadata_props.push(pb::StringStringEntryProto {
            key: "pareidolia.widened".into(),
            value: format!(
                "{n} -> {} classes at {} (weight {}{})",
                n + 1,
                head.node,
                head.weight,
                head.bias
                    .as_ref()
                    .map_or(String::new(), |b| format!(", bias {b}"))
            ),
        });
        Ok(Widened {
            head,
            shapes,
            reshapes,
        })
    }

    /// An int64 constant by tensor name: an initializer, or a `Constant` node's `value`.
    fn int64_constant(&self, name: &str) -> Option<(ConstPlace, Vec<i64>)> {
        let g = self.graph();
        if let Some(i) = g.initializer.iter().position(|t| t.name == name) {
            let t = &g.initializer[i];
            return (t.data_type == INT64).then(|| (ConstPlace::Initializer(i), int64_values(t)));
        }
        let i = g
            .node
            .iter()
            .position(|n| n.op_type == "Constant" && n.output.iter().any(|o| o == name))?;
        let t = g.node[i]
            .attribute
            .iter()
            .find(|a| a.name == "value")
            .and_then(|a| a.t.as_ref())?;
        (t.data_type == INT64).then(|| (ConstPlace::Node(i), int64_values(t)))
    }
}

#[derive(Debug)]
struct Trace {
    head: ClassifierHead,
    /// Tensors from the graph output back to the head's output.
    chain: Vec<String>,
    /// Reshape nodes on the way.
    reshapes: Vec<usize>,
}

#[derive(Debug, Clone, Copy)]
enum ConstPlace {
    Initializer(usize),
    Node(usize),
}

fn node_label(node: &pb::NodeProto, i: usize) -> String {
    if node.name.is_empty() {
        format!("#{i} {}", node.op_type)
    } else {
        format!("{} ({})", node.name, node.op_type)
    }
}

/// Stores floats as the exporters do: little-endian `raw_data`.
fn set_floats(t: &mut pb::TensorProto, dims: Vec<i64>, values: &[f32]) {
    t.dims = dims;
    t.float_data.clear();
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
}

/// Stores int64s where the tensor had them.
fn set_int64s(t: &mut pb::TensorProto, dims: Vec<i64>, values: &[i64]) {
    t.dims = dims;
    if t.raw_data.is_empty() {
        t.int64_data = values.to_vec();
    } else {
        t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
}

fn tensor_shape(v: &mut pb::ValueInfoProto) -> Option<&mut pb::TensorShapeProto> {
    match v.r#type.as_mut()?.value.as_mut()? {
        pb::type_proto::Value::TensorType(t) => t.shape.as_mut(),
    }
}

fn set_shape(v: &mut pb::ValueInfoProto, dims: &[i64]) {
    if let Some(shape) = tensor_shape(v) {
        shape.dim = dims
            .iter()
            .map(|&d| pb::tensor_shape_proto::Dimension {
                denotation: String::new(),
                value: Some(Dim::DimValue(d)),
            })
            .collect();
    }
}

/// A declared shape ending in `n` now ends in `n + 1`; says whether it changed.
fn widen_last_dim(v: &mut pb::ValueInfoProto, n: usize) -> bool {
    let Some(last) = tensor_shape(v).and_then(|s| s.dim.last_mut()) else {
        return false;
    };
    match &mut last.value {
        Some(Dim::DimValue(d)) if *d == n as i64 => {
            *d += 1;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::TrainingData;
    use pareidolia_eval::{
        Backend, Model, ModelRef, OrtBackend, OrtOptions, OutputKind, TractBackend,
    };

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn shipped(dir: &str) -> Model {
        Model::load(&ModelRef::Path(
            repo().join("models").join(dir).join("manifest.toml"),
        ))
        .unwrap()
    }

    /// `graph` written to a file, read back as a model with `classes` labels (the backends
    /// run the bytes; the file is removed again). `PAREIDOLIA_KEEP_EDITED=DIR` keeps the files
    /// there, e.g. for `onnx.checker`.
    fn as_model(base: &Model, graph: &OnnxGraph, classes: usize, name: &str) -> Model {
        let keep = std::env::var_os("PAREIDOLIA_KEEP_EDITED").map(PathBuf::from);
        let dir = keep.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("pareidolia-edit-{}-{name}", std::process::id()))
        });
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.onnx"));
        graph.write(&path).unwrap();
        let onnx = std::fs::read(&path).unwrap();
        if keep.is_none() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let mut manifest = base.manifest.clone();
        manifest.sha256 = None;
        manifest.name = name.to_owned();
        Model {
            manifest,
            sha256: pareidolia_eval::sha256_hex(&onnx),
            onnx: onnx.into(),
            onnx_path: path,
            labels: (0..classes).map(|c| format!("c{c}")).collect(),
        }
    }

    /// Outputs of `model` on `images` with tract and with ONNX Runtime.
    fn run_both(model: &Model, images: &[u8], n: usize) -> (Vec<f32>, Vec<f32>) {
        let t = TractBackend
            .prepare(model)
            .unwrap()
            .infer(images, n)
            .unwrap();
        let o = OrtBackend::cpu(OrtOptions::default())
            .prepare(model)
            .unwrap_or_else(|e| panic!("ONNX Runtime: {e}"))
            .infer(images, n)
            .unwrap();
        (t, o)
    }

    fn held_out_digits(n: usize) -> Vec<u8> {
        let data = TrainingData::open(&repo().join("data/mnist-5k")).unwrap();
        let h = data.held_out.unwrap();
        // Every 1000/n-th digit, so each class is in.
        (0..n)
            .flat_map(|i| h.image(i * (1000 / n)).to_vec())
            .collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Row `i`'s first `n` values of an output with `width` per row.
    fn first(out: &[f32], width: usize, n: usize) -> Vec<f32> {
        out.chunks_exact(width)
            .flat_map(|r| r[..n].to_vec())
            .collect()
    }

    #[test]
    fn an_unedited_model_written_back_computes_the_same_bits() {
        let lenet = shipped("lenet-mnist");
        let g = OnnxGraph::decode(&lenet.onnx, "lenet").unwrap();
        let again = as_model(&lenet, &g, 10, "lenet-same");
        // prost writes repeated numbers packed and leaves out scalars equal to their default,
        // so the bytes are not PyTorch's; what they say is, and a second trip is stable.
        assert!(OnnxGraph::decode(&again.onnx, "again").unwrap().proto() == g.proto());
        assert!(again.onnx[..] == g.to_bytes()[..]);
        let images = held_out_digits(10);
        assert_eq!(run_both(&again, &images, 10), run_both(&lenet, &images, 10));
    }

    #[test]
    fn widening_lenet_keeps_its_ten_logits_in_tract_and_onnx_runtime() {
        let lenet = shipped("lenet-mnist");
        let mut g = OnnxGraph::decode(&lenet.onnx, "lenet").unwrap();
        let head = g.head().unwrap();
        assert_eq!(
            head,
            ClassifierHead {
                kind: HeadKind::Gemm { transposed: true },
                node: "/fc2/Gemm (Gemm)".into(),
                weight: "fc2.weight".into(),
                bias: Some("fc2.bias".into()),
                inputs: 500,
                classes: 10,
                output: "logits".into(),
            }
        );
        let widened = g.widen(&[0.0; 500], 0.25).unwrap();
        assert_eq!(widened.shapes, ["logits"]);
        assert_eq!(g.initializer("fc2.weight").unwrap().dims, [11, 500]);
        assert_eq!(g.initializer("fc2.bias").unwrap().dims, [11]);
        assert_eq!(g.head().unwrap().classes, 11);
        let wide = as_model(&lenet, &g, 11, "lenet-wide");
        let n = 50;
        let mut images = held_out_digits(n);
        images.extend((0..5 * 784).map(|i| (i * 37 % 251) as u8)); // and 5 of noise
        let n = n + 5;
        let (t0, o0) = run_both(&lenet, &images, n);
        let (t1, o1) = run_both(&wide, &images, n);
        let (dt, d_o) = (
            max_diff(&first(&t1, 11, 10), &t0),
            max_diff(&first(&o1, 11, 10), &o0),
        );
        eprintln!("first 10 logits, widened vs original: tract {dt:e}, ort {d_o:e}");
        assert!(dt <= 1e-5 && d_o <= 1e-5, "tract {dt}, ort {d_o}");
        // The untrained class's logit is its bias, for every image, on both.
        for out in [&t1, &o1] {
            assert!(
                out.chunks_exact(11).all(|r| r[10] == 0.25),
                "{:?}",
                &out[..11]
            );
        }
        assert!(max_diff(&t1, &o1) < 1e-4);
        // The provenance is in the file.
        let back = OnnxGraph::decode(&wide.onnx, "wide").unwrap();
        let note = back
            .proto()
            .metadata_props
            .iter()
            .find(|p| p.key == "pareidolia.widened")
            .unwrap();
        assert_eq!(
            note.value,
            "10 -> 11 classes at /fc2/Gemm (Gemm) (weight fc2.weight, bias fc2.bias)"
        );
    }

    #[test]
    fn the_new_row_is_wired_to_the_new_logit() {
        let lenet = shipped("lenet-mnist");
        let mut g = OnnxGraph::decode(&lenet.onnx, "lenet").unwrap();
        let w = g.initializer("fc2.weight").unwrap().values;
        let b = g.initializer("fc2.bias").unwrap().values;
        g.widen(&w[3 * 500..4 * 500], b[3]).unwrap(); // a copy of class 3
        let wide = as_model(&lenet, &g, 11, "lenet-copy3");
        let images = held_out_digits(20);
        let (t, o) = run_both(&wide, &images, 20);
        for out in [t, o] {
            for r in out.chunks_exact(11) {
                assert!((r[10] - r[3]).abs() <= 1e-5, "{r:?}");
            }
        }
    }

    /// LeNet with its last Gemm rewritten as MatMul(x, W^T) + Add(b), then a Reshape to
    /// `[-1, 10]` (a hard-coded class count) and a Softmax: the same function, other ops.
    fn lenet_as_matmul_add_reshape_softmax(lenet: &Model) -> OnnxGraph {
        let mut g = OnnxGraph::decode(&lenet.onnx, "lenet-matmul").unwrap();
        let w = g.initializer("fc2.weight").unwrap().values;
        let wt: Vec<f32> = (0..500)
            .flat_map(|k| (0..10).map(move |c| (k, c)))
            .map(|(k, c)| w[c * 500 + k])
            .collect();
        let gr = g.graph_mut();
        let at = gr
            .node
            .iter()
            .position(|n| n.op_type == "Gemm" && n.output[0] == "logits")
            .unwrap();
        let x = gr.node[at].input[0].clone();
        let node = |op: &str, inputs: &[&str], output: &str| pb::NodeProto {
            op_type: op.into(),
            name: format!("my_{op}"),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        };
        gr.node.splice(
            at..=at,
            [
                node("MatMul", &[&x, "fc2.weight"], "mm"),
                node("Add", &["fc2.bias", "mm"], "z"),
                node("Reshape", &["z", "shape"], "z2"),
                node("Softmax", &["z2"], "logits"),
            ],
        );
        let wi = gr
            .initializer
            .iter()
            .position(|t| t.name == "fc2.weight")
            .unwrap();
        set_floats(&mut gr.initializer[wi], vec![500, 10], &wt);
        gr.initializer.push(pb::TensorProto {
            name: "shape".into(),
            data_type: INT64,
            dims: vec![2],
            int64_data: vec![-1, 10],
            ..Default::default()
        });
        g
    }

    #[test]
    fn matmul_add_with_a_reshape_and_softmax_widens_too() {
        let lenet = shipped("lenet-mnist");
        let g0 = lenet_as_matmul_add_reshape_softmax(&lenet);
        let mut g = g0.clone();
        let head = g.head().unwrap();
        assert_eq!(
            (head.kind, head.node.as_str(), head.inputs, head.classes),
            (HeadKind::MatMulAdd, "my_MatMul (MatMul)", 500, 10)
        );
        let widened = g.widen(&[0.0; 500], 0.0).unwrap();
        assert_eq!(widened.reshapes, ["shape"]);
        let mut probs = lenet.clone();
        probs.manifest.output = OutputKind::Probabilities;
        let before = as_model(&probs, &g0, 10, "lenet-mm");
        let after = as_model(&probs, &g, 11, "lenet-mm-wide");
        let images = held_out_digits(20);
        let (t0, o0) = run_both(&before, &images, 20);
        let (t1, o1) = run_both(&after, &images, 20);
        // The same function as the Gemm: the derived model's softmax of LeNet's logits.
        let (tl, _) = run_both(&lenet, &images, 20);
        for (p, l) in t0.chunks_exact(10).zip(tl.chunks_exact(10)) {
            let mut want = vec![0.0; 10];
            pareidolia_plugin::softmax(l, &mut want);
            assert!(max_diff(p, &want) < 1e-5);
        }
        // Renormalised over the first ten classes, the widened model's probabilities are the
        // original's: the extra class only takes its share.
        for (wide, narrow) in [(&t1, &t0), (&o1, &o0)] {
            for (p1, p0) in wide.chunks_exact(11).zip(narrow.chunks_exact(10)) {
                let s: f32 = p1[..10].iter().sum();
                let renorm: Vec<f32> = p1[..10].iter().map(|p| p / s).collect();
                assert!(max_diff(&renorm, p0) < 1e-5, "{p1:?} vs {p0:?}");
            }
        }
    }

    #[test]
    fn efficientnet_lite0_widens_to_1001_classes() {
        let lite = shipped("efficientnet-lite0");
        let mut g = OnnxGraph::decode(&lite.onnx, "efficientnet-lite0").unwrap();
        let head = g.head().unwrap();
        assert_eq!(
            (head.classes, head.inputs, head.weight.as_str()),
            (1000, 1280, "fc.weight")
        );
        g.widen(&vec![0.0; 1280], -1.5).unwrap();
        let wide = as_model(&lite, &g, 1001, "efficientnet-lite0-wide");
        let image: Vec<u8> = (0..lite.image_len()).map(|i| (i * 7 % 256) as u8).collect();
        let (t0, o0) = run_both(&lite, &image, 1);
        let (t1, o1) = run_both(&wide, &image, 1);
        let (dt, d_o) = (max_diff(&t1[..1000], &t0), max_diff(&o1[..1000], &o0));
        eprintln!(
            "efficientnet-lite0 first 1000 logits, widened vs original: tract {dt:e}, ort {d_o:e}"
        );
        assert!(dt <= 1e-5 && d_o <= 1e-5, "tract {dt}, ort {d_o}");
        assert_eq!((t1[1000], o1[1000]), (-1.5, -1.5));
    }

    #[test]
    fn alexnet_lights_computed_weights_are_refused_by_name() {
        // Its weights are computed from one shared block (models/alexnet-light/make.py), so
        // there is no initializer to widen.
        let alex = shipped("alexnet-light");
        let mut g = OnnxGraph::decode(&alex.onnx, "alexnet-light.onnx").unwrap();
        let e = g.widen(&[0.0; 4096], 0.0).unwrap_err().to_string();
        assert_eq!(
            e,
            "ONNX model alexnet-light.onnx cannot widen its last layer n22 (Gemm): its weight \
             `fc8_w_0` is computed, not an initializer"
        );
    }

    #[test]
    fn a_model_without_a_widenable_last_layer_says_what_it_found() {
        let lenet = shipped("lenet-mnist");
        let edit = |f: &dyn Fn(&mut pb::GraphProto)| {
            let mut g = OnnxGraph::decode(&lenet.onnx, "cut.onnx").unwrap();
            f(g.graph_mut());
            let before = g.clone();
            let e = g.widen(&[0.0; 500], 0.0).unwrap_err().to_string();
            assert!(g == before, "an error leaves the model as it was");
            e
        };
        // The last Gemm cut off: the output comes from a ReLU.
        let e = edit(&|gr| {
            gr.node.pop();
            gr.node.last_mut().unwrap().output[0] = "logits".into();
        });
        assert!(
            e.starts_with("ONNX model cut.onnx has no final Gemm, MatMul + Add or MatMul to widen: its output logits comes from /Relu (Relu)"),
            "{e}"
        );
        // A softmax over the batch axis.
        let e = edit(&|gr| {
            gr.node.last_mut().unwrap().output[0] = "z".into();
            gr.node.push(pb::NodeProto {
                op_type: "Softmax".into(),
                input: vec!["z".into()],
                output: vec!["logits".into()],
                attribute: vec![pb::AttributeProto {
                    name: "axis".into(),
                    i: 0,
                    ..Default::default()
                }],
                ..Default::default()
            });
        });
        assert!(
            e.contains("comes from #8 Softmax over axis 0, not the class axis"),
            "{e}"
        );
        // Two outputs.
        let e = edit(&|gr| {
            let o = gr.output[0].clone();
            gr.output.push(o);
        });
        assert!(e.contains("is one of 2 graph outputs"), "{e}");
        // The weight shared with another node.
        let e = edit(&|gr| {
            let mut n = gr.node.last().unwrap().clone();
            n.output = vec!["spare".into()];
            gr.node.push(n);
        });
        assert!(
            e.contains("its weight `fc2.weight` is shared with other nodes"),
            "{e}"
        );
        // A wrong-length new row.
        let mut g = OnnxGraph::decode(&lenet.onnx, "lenet.onnx").unwrap();
        let e = g.widen(&[0.0; 499], 0.0).unwrap_err().to_string();
        assert!(e.contains("500 values) but 499 values were given"), "{e}");
        // Not ONNX at all.
        let e = OnnxGraph::decode(b"\x89PNG\r\n\x1a\n", "x.png")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("ONNX model x.png is not an ONNX model"),
            "{e}"
        );
    }

    #[test]
    fn initializers_are_replaced_by_name_all_or_nothing() {
        let lenet = shipped("lenet-mnist");
        let mut g = OnnxGraph::decode(&lenet.onnx, "lenet.onnx").unwrap();
        let names: Vec<String> = g.float_initializers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "conv1.weight",
                "conv1.bias",
                "conv2.weight",
                "conv2.bias",
                "fc1.weight",
                "fc1.bias",
                "fc2.weight",
                "fc2.bias"
            ]
        );
        let original = g.clone();
        let bias: Vec<f32> = (0..10).map(|c| c as f32 - 4.5).collect();
        let zeros = vec![0.0; 5000];
        let e = g
            .replace_initializers([("fc2.weight", &zeros[..]), ("fc2.bais", &bias[..])])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no initializer named `fc2.bais`") && e.contains("fc2.bias"),
            "{e}"
        );
        assert_eq!(g, original, "nothing changed");
        let e = g
            .replace_initializer("fc2.bias", &bias[..9])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shape [10] (10 values) but 9 values were given"),
            "{e}"
        );
        let mut nan = bias.clone();
        nan[7] = f32::NAN;
        let e = g
            .replace_initializer("fc2.bias", &nan)
            .unwrap_err()
            .to_string();
        assert!(e.contains("non-finite value NaN at index 7"), "{e}");
        assert_eq!(g, original);
        // With a zero last weight, every image's logits are the bias, on both backends.
        g.replace_initializers([("fc2.weight", &zeros[..]), ("fc2.bias", &bias[..])])
            .unwrap();
        assert_eq!(g.initializer("fc2.bias").unwrap().values, bias);
        let m = as_model(&lenet, &g, 10, "lenet-replaced");
        let (t, o) = run_both(&m, &held_out_digits(5), 5);
        for out in [t, o] {
            assert!(out.chunks_exact(10).all(|r| r == &bias[..]), "{out:?}");
        }
    }
}
