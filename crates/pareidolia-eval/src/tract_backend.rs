//! The tract backend: pure Rust ONNX inference on CPU, always built, bit-reproducible.
//!
//! The ONNX graph is typed once with a symbolic batch dimension; a plan is then optimised for
//! each batch size actually used (in a run that is the configured batch size and perhaps one
//! remainder), because tract optimises concrete shapes much better than symbolic ones. A graph
//! whose input fixes the batch dimension at 1 is typed with batch 1 instead, and its batches
//! run one image at a time ([`OneAtATime`]).
//!
//! Before that, every constant subgraph is folded into a constant, however large its result.
//! tract's own optimiser stops at results over 4 MiB that are bigger than their inputs (it
//! keeps small constants small in memory), so a graph that builds its weights from a compact
//! form (`models/alexnet-light` tiles one random block into 61 million weights) would rebuild
//! them on every run: 0.5 s per batch for that model. ONNX Runtime folds such subgraphs; so do
//! we, for results up to [`FOLD_LIMIT`] bytes each.

use std::collections::HashMap;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::fixed_batch::OneAtATime;
use crate::{EvalError, Layout, Model, PreparedModel, Preprocessor};

type Plan = Arc<TypedRunnableModel>;

/// The largest constant (bytes) that preparing a model materialises from a constant subgraph.
const FOLD_LIMIT: u64 = 1 << 30;

/// The tract backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct TractBackend;

/// The error with its causes (tract errors are `anyhow` errors; `{:#}` prints the chain).
fn chain(e: &TractError) -> String {
    format!("{e:#}")
}

impl crate::Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn prepare(&self, model: &Model) -> Result<Box<dyn PreparedModel>, EvalError> {
        let prepared = self.prepare_plain(model);
        // Optimising the graph can run kernels too (constant folding); threads spawned from
        // this one would inherit the state.
        crate::simd_state::clear_upper_state();
        let (prepared, fixed) = prepared?;
        let prepared = Box::new(prepared);
        Ok(if fixed {
            OneAtATime::wrap(model, "tract", prepared)
        } else {
            prepared
        })
    }
}

impl TractBackend {
    /// The model as tract runs it, and whether its graph fixes the batch at one.
    pub(crate) fn prepare_plain(&self, model: &Model) -> Result<(TractModel, bool), EvalError> {
        let not_onnx = |e: TractError| EvalError::NotOnnx {
            path: model.onnx_path.clone(),
            backend: "tract",
            message: chain(&e),
        };
        let mut graph = tract_onnx::onnx()
            .model_for_read(&mut &model.onnx[..])
            .map_err(not_onnx)?;
        let spec = &model.manifest.input;
        check_declared_input(model, &graph)?;
        let fixed = declares_batch_of_one(&graph);
        let batch = graph.sym("N");
        let n: TDim = if fixed {
            1.into()
        } else {
            batch.clone().into()
        };
        let (c, h, w) = (
            spec.channels as usize,
            spec.height as usize,
            spec.width as usize,
        );
        let shape: TVec<TDim> = match spec.layout {
            Layout::Nchw => tvec![n, c.into(), h.into(), w.into()],
            Layout::Nhwc => tvec![n, h.into(), w.into(), c.into()],
        };
        graph
            .set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))
            .map_err(not_onnx)?;
        let typed = graph
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .and_then(fold_constants)
            .map_err(|e| EvalError::ShapeMismatch {
                model: model.name().to_owned(),
                message: format!(
                    "the graph does not accept the manifest's input {:?} {}x{}x{}: {}",
                    spec.layout,
                    c,
                    h,
                    w,
                    chain(&e)
                ),
            })?;
        let out = typed.output_fact(0).map_err(not_onnx)?.shape.to_tvec();
        // [N, classes], or [N, classes, 1, 1] as a final 1x1 convolution or pool leaves it.
        let dim = |i: usize| out.get(i).and_then(|d| d.to_i64().ok()).unwrap_or(-1);
        let classes = dim(1);
        let ones = out.len() == 4 && dim(2) == 1 && dim(3) == 1;
        if !(out.len() == 2 || ones) || classes != model.classes() as i64 {
            return Err(EvalError::ShapeMismatch {
                model: model.name().to_owned(),
                message: format!(
                    "the graph's output has shape {:?}, expected [N, {}] or [N, {}, 1, 1] (one value per label in the labels file)",
                    out,
                    model.classes(),
                    model.classes()
                ),
            });
        }
        let prepared = TractModel {
            name: model.name().to_owned(),
            typed,
            batch,
            plans: HashMap::new(),
            pre: Preprocessor::new(spec),
            classes: model.classes(),
        };
        Ok((prepared, fixed))
    }
}

/// Whether the ONNX file declares its input's batch dimension as exactly 1 (not symbolic).
fn declares_batch_of_one(graph: &InferenceModel) -> bool {
    graph
        .input_fact(0)
        .ok()
        .and_then(|fact| fact.shape.dims().next().cloned())
        .and_then(|dim| dim.concretize())
        .is_some_and(|dim| dim.to_i64().ok() == Some(1))
}

/// Replaces every node whose inputs are all constant by its value (up to [`FOLD_LIMIT`]
/// bytes per node), in evaluation order so chains fold completely, then declutters again to
/// drop what became unused. Nodes that cannot be evaluated outside a plan stay as they are.
fn fold_constants(mut model: TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::internal::TypedModelPatch;
    use tract_onnx::tract_core::ops::konst::Const;
    use tract_onnx::tract_core::ops::source::TypedSource;
    let mut folded = 0usize;
    for id in model.eval_order()? {
        let node = model.node(id);
        if node.inputs.is_empty() || node.op_is::<Const>() || node.op_is::<TypedSource>() {
            continue;
        }
        let Some(inputs) = model
            .node_input_facts(id)?
            .iter()
            .map(|f| f.konst.clone().map(|k| k.into_tvalue()))
            .collect::<Option<TVec<TValue>>>()
        else {
            continue;
        };
        let out_bytes: Option<u64> = model
            .node_output_facts(id)?
            .iter()
            .map(|f| f.mem_size().to_i64().ok().map(|b| b as u64))
            .sum();
        if out_bytes.is_none_or(|b| b > FOLD_LIMIT) {
            continue;
        }
        let Ok(Some(outputs)) = node.op.eval_out_of_plan(inputs) else {
            continue;
        };
        let name = node.name.clone();
        let mut patch = TypedModelPatch::default();
        for (slot, value) in outputs.into_iter().enumerate() {
            let wire = patch.add_const(format!("{name}.folded.{slot}"), value.into_arc_tensor())?;
            patch.shunt_outside(&model, OutletId::new(id, slot), wire)?;
        }
        patch.apply(&mut model)?;
        folded += 1;
    }
    if folded == 0 {
        return Ok(model);
    }
    model.into_decluttered()
}

/// Compares the ONNX input's declared C, H, W (when the file declares them) with the manifest.
fn check_declared_input(model: &Model, graph: &InferenceModel) -> Result<(), EvalError> {
    let spec = &model.manifest.input;
    // The manifest's `[input] name` must be the graph's input (the first, which is fed); a
    // wrong name is a manifest written for another file, refused as ONNX Runtime does.
    let names: Vec<&str> = graph
        .input_outlets()
        .map(|outlets| {
            outlets
                .iter()
                .map(|o| graph.node(o.node).name.as_str())
                .collect()
        })
        .unwrap_or_default();
    if names.first().is_some_and(|first| *first != spec.name) {
        return Err(EvalError::ShapeMismatch {
            model: model.name().to_owned(),
            message: format!(
                "the graph has no input named `{}` (its input is {names:?}); fix `input.name` in the manifest",
                spec.name
            ),
        });
    }
    let Ok(fact) = graph.input_fact(0) else {
        return Ok(());
    };
    let Some(dims) = fact.shape.concretize() else {
        return Ok(());
    };
    let declared: Vec<Option<i64>> = dims.iter().map(|d| d.to_i64().ok()).collect();
    let expected = match spec.layout {
        Layout::Nchw => [spec.channels, spec.height, spec.width],
        Layout::Nhwc => [spec.height, spec.width, spec.channels],
    };
    let matches = declared.len() == 4
        && declared[1..]
            .iter()
            .zip(expected)
            .all(|(d, e)| d.is_none_or(|d| d == e as i64));
    if matches {
        Ok(())
    } else {
        Err(EvalError::ShapeMismatch {
            model: model.name().to_owned(),
            message: format!(
                "the ONNX file declares input shape {:?} but the manifest says {:?} {}x{}x{} \
                 (channels x height x width); fix `[input]` in the manifest",
                dims, spec.layout, spec.channels, spec.height, spec.width
            ),
        })
    }
}

pub(crate) struct TractModel {
    name: String,
    typed: TypedModel,
    batch: Symbol,
    plans: HashMap<usize, Plan>,
    pre: Preprocessor,
    classes: usize,
}

impl TractModel {
    fn plan(&mut self, n: usize) -> TractResult<Plan> {
        if let Some(p) = self.plans.get(&n) {
            return Ok(p.clone());
        }
        let subs = HashMap::from([(self.batch.clone(), TDim::from(n as i64))]);
        let plan = self
            .typed
            .set_symbols(&subs)?
            .into_optimized()?
            .into_runnable()?;
        self.plans.insert(n, plan.clone());
        Ok(plan)
    }
}

impl PreparedModel for TractModel {
    fn backend(&self) -> &'static str {
        "tract"
    }

    fn device(&self) -> String {
        "cpu".to_owned()
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn preferred_batch(&self) -> usize {
        // On one thread tract is fastest per image on small LeNet batches (the working set
        // stays in cache; 20 amortises the actor round trip), and on ImageNet-size images at
        // batch 1: EfficientNet-Lite0 33 images/s at 1, 13 at 32 (BENCHMARKS.md).
        if self.pre.image_len() <= 64 * 64 * 3 {
            20
        } else {
            1
        }
    }

    fn infer(&mut self, images: &[u8], batch: usize) -> Result<Vec<f32>, EvalError> {
        let out = self.run(images, batch);
        // tract's kernels leave the vector registers' upper halves dirty (see `simd_state`).
        crate::simd_state::clear_upper_state();
        out
    }
}

impl TractModel {
    /// One batch through the plan for its size (made on first use).
    pub(crate) fn run(&mut self, images: &[u8], batch: usize) -> Result<Vec<f32>, EvalError> {
        self.pre.check_batch(&self.name, images, batch)?;
        let name = self.name.clone();
        let failed = |e: TractError| EvalError::Inference {
            backend: "tract",
            model: name.clone(),
            message: chain(&e),
        };
        let plan = self.plan(batch).map_err(failed)?;
        let spec_shape: Vec<usize> = plan
            .model()
            .input_fact(0)
            .map_err(failed)?
            .shape
            .as_concrete()
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let mut input = Tensor::zero::<f32>(&spec_shape).map_err(failed)?;
        {
            let mut view = input.try_as_plain_ram_mut().map_err(failed)?;
            self.pre
                .fill(images, view.as_slice_mut::<f32>().map_err(failed)?);
        }
        let outputs = plan.run(tvec![input.into_tvalue()]).map_err(failed)?;
        let view = outputs[0].try_as_plain_ram().map_err(failed)?;
        let out = view.as_slice::<f32>().map_err(failed)?;
        if out.len() != batch * self.classes {
            return Err(EvalError::Inference {
                backend: "tract",
                model: self.name.clone(),
                message: format!(
                    "output holds {} values, expected {}",
                    out.len(),
                    batch * self.classes
                ),
            });
        }
        Ok(out.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, OutputKind};

    /// Protobuf wire format, just enough to write a tiny ONNX model.
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn int(out: &mut Vec<u8>, field: u64, v: u64) {
        varint(out, field << 3);
        varint(out, v);
    }

    fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, (field << 3) | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    /// A float tensor's ValueInfoProto; a dimension of `None` is the symbol `N`.
    fn value_info(name: &str, dims: &[Option<u64>]) -> Vec<u8> {
        let mut shape = Vec::new();
        for d in dims {
            let mut dim = Vec::new();
            match d {
                Some(v) => int(&mut dim, 1, *v),
                None => bytes(&mut dim, 2, b"N"),
            }
            bytes(&mut shape, 1, &dim);
        }
        let mut tensor = Vec::new();
        int(&mut tensor, 1, 1); // float
        bytes(&mut tensor, 2, &shape);
        let mut ty = Vec::new();
        bytes(&mut ty, 1, &tensor);
        let mut info = Vec::new();
        bytes(&mut info, 1, name.as_bytes());
        bytes(&mut info, 2, &ty);
        info
    }

    /// `x [batch, 1, 2, 2] -> Reshape(x, [reshape_batch, 4]) -> Softmax -> y [batch, 4]`,
    /// opset 13; `batch` None is symbolic.
    fn tiny_onnx(batch: Option<u64>, reshape_batch: i64) -> Vec<u8> {
        let mut shape = Vec::new();
        int(&mut shape, 1, 2); // dims [2]
        int(&mut shape, 2, 7); // int64
        bytes(&mut shape, 8, b"shape");
        let raw: Vec<u8> = [reshape_batch, 4]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        bytes(&mut shape, 9, &raw);
        let node = |inputs: &[&str], output: &str, op: &str| {
            let mut n = Vec::new();
            for i in inputs {
                bytes(&mut n, 1, i.as_bytes());
            }
            bytes(&mut n, 2, output.as_bytes());
            bytes(&mut n, 3, output.as_bytes());
            bytes(&mut n, 4, op.as_bytes());
            n
        };
        let mut graph = Vec::new();
        bytes(&mut graph, 1, &node(&["x", "shape"], "flat", "Reshape"));
        bytes(&mut graph, 1, &node(&["flat"], "y", "Softmax"));
        bytes(&mut graph, 2, b"tiny");
        bytes(&mut graph, 5, &shape);
        bytes(
            &mut graph,
            11,
            &value_info("x", &[batch, Some(1), Some(2), Some(2)]),
        );
        bytes(&mut graph, 12, &value_info("y", &[batch, Some(4)]));
        let mut opset = Vec::new();
        bytes(&mut opset, 1, b"");
        int(&mut opset, 2, 13);
        let mut model = Vec::new();
        int(&mut model, 1, 7); // IR version
        bytes(&mut model, 7, &graph);
        bytes(&mut model, 8, &opset);
        model
    }

    fn tiny_model(onnx: Vec<u8>) -> Model {
        Model::tiny(
            onnx,
            (2, 2),
            255.0,
            OutputKind::Probabilities,
            &["a", "b", "c", "d"],
        )
    }

    #[test]
    fn a_graph_with_a_batch_fixed_at_one_runs_batches_image_by_image() {
        let images = [0u8, 1, 2, 3, 3, 2, 1, 0, 5, 5, 5, 5];
        let mut expected = vec![0f32; 12];
        for (x, p) in images.chunks(4).zip(expected.chunks_mut(4)) {
            let x: Vec<f32> = x.iter().map(|&v| f32::from(v)).collect();
            pareidolia_plugin::softmax(&x, p);
        }
        // Input [1, 1, 2, 2] and a flatten to [1, 4], like the ONNX model zoo's AlexNet; and
        // the same graph with a dynamic batch.
        for (batch, reshape) in [(Some(1), 1), (None, -1)] {
            let model = tiny_model(tiny_onnx(batch, reshape));
            let mut prepared = TractBackend.prepare(&model).unwrap();
            assert_eq!(prepared.backend(), "tract");
            let out = prepared.infer(&images, 3).unwrap();
            for (o, e) in out.iter().zip(&expected) {
                assert!(
                    (o - e).abs() < 1e-6,
                    "batch {batch:?}: {out:?} vs {expected:?}"
                );
            }
            assert_eq!(prepared.infer(&images[4..8], 1).unwrap(), out[4..8]);
            prepared.warm_up(5, 4).unwrap();
        }
        // A batch fixed at 2 is not a batch of one: typed with a symbolic batch as before, the
        // fixed flatten does not fit it.
        assert!(
            TractBackend
                .prepare(&tiny_model(tiny_onnx(Some(2), 2)))
                .is_err()
        );
    }
}
