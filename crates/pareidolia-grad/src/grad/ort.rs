//! Gradients on ONNX Runtime, on the CPU (`ort-cpu`) or on CUDA (`cuda`): the evaluator's
//! program written out as a forward + backward ONNX graph ([`super::graph`]) and run as any
//! model is. The canvas-to-input chain (views, normalisation, channel order) and its adjoint
//! stay on the host, shared with [`CpuModel`]; one session per objective is built on first use
//! (ONNX Runtime plans the whole graph, so a probabilities-only call has its own forward
//! graph).

use pareidolia_eval::{EvalError, Model, OrtBackend, OrtDevice, OrtGraph, ViewSpec};

use super::graph::SeedSpec;
use super::{CpuModel, DifferentiableModel, GradientBackend, Gradients, Objective, checked};

/// Gradients on ONNX Runtime ([`OrtBackend`]'s device and settings).
#[derive(Debug, Clone)]
pub struct OrtGradient {
    /// The ONNX Runtime backend the graphs run on.
    pub backend: OrtBackend,
}

impl GradientBackend for OrtGradient {
    fn name(&self) -> &'static str {
        match self.backend.device() {
            OrtDevice::Cpu => "ort-cpu",
            OrtDevice::Cuda(_) => "cuda",
        }
    }

    fn prepare(
        &self,
        model: &Model,
        view: ViewSpec,
    ) -> Result<Box<dyn DifferentiableModel>, EvalError> {
        let mut m = GraphModel::new(model, view, self.backend.clone())?;
        // The probability objective's session now, so that a graph ONNX Runtime refuses (or a
        // device that cannot run it) fails at setup, not at a search's first step.
        m.warm(Objective::Probability)?;
        Ok(Box::new(m))
    }
}

/// A model whose gradients run as ONNX graphs on ONNX Runtime.
#[derive(Debug)]
pub struct GraphModel {
    chain: CpuModel<f32>,
    backend: OrtBackend,
    forward: OrtGraph,
    gradients: Vec<(Objective, OrtGraph)>,
}

impl GraphModel {
    /// Reads `model` behind `view` (refusing, as the CPU evaluator does, a graph with an op it
    /// cannot differentiate) and builds its forward graph's session; the gradient graphs are
    /// built per objective on first use, or up front by [`GraphModel::warm`].
    pub fn new(model: &Model, view: ViewSpec, backend: OrtBackend) -> Result<Self, EvalError> {
        let mut chain = CpuModel::<f32>::new(model, view)?;
        chain.network.set_threads(1);
        let forward = backend.graph(model.name(), &chain.network.forward_graph()?)?;
        Ok(Self {
            chain,
            backend,
            forward,
            gradients: Vec::new(),
        })
    }

    /// Builds the gradient graph's session for `objective` now (setup errors at setup).
    pub fn warm(&mut self, objective: Objective) -> Result<(), EvalError> {
        self.chain.check(objective)?;
        self.session(objective).map(|_| ())
    }

    /// The ONNX model this backend runs for `objective` (to save beside a model, or to read).
    pub fn gradient_onnx(&self, objective: Objective) -> Result<Vec<u8>, EvalError> {
        self.chain.check(objective)?;
        self.chain.network.gradient_graph(self.seed(objective))
    }

    fn seed(&self, objective: Objective) -> SeedSpec {
        SeedSpec {
            objective,
            crops: self.chain.crops.len(),
            logits: self.chain.logits,
        }
    }

    fn session(&mut self, objective: Objective) -> Result<&mut OrtGraph, EvalError> {
        let at = match self.gradients.iter().position(|(o, _)| *o == objective) {
            Some(at) => at,
            None => {
                let onnx = self.chain.network.gradient_graph(self.seed(objective))?;
                let graph = self.backend.graph(&self.chain.model, &onnx)?;
                self.gradients.push((objective, graph));
                self.gradients.len() - 1
            }
        };
        Ok(&mut self.gradients[at].1)
    }

    /// The objective, probabilities and gradients, unchecked (see [`CpuModel::evaluate`]).
    pub fn evaluate(
        &mut self,
        pixels: &[f32],
        targets: &[usize],
        objective: Objective,
    ) -> Result<Gradients<f32>, EvalError> {
        let batch = self.chain.check_call(pixels, targets, objective)?;
        let input = self.chain.to_input(pixels, batch);
        let (k, m) = (self.chain.crops.len(), self.chain.classes);
        let rows = batch * k;
        let mut onehot = vec![0f32; rows * m];
        for (r, row) in onehot.chunks_exact_mut(m).enumerate() {
            row[targets[r / k]] = 1.0;
        }
        let [c, h, w] = self.chain.network.input_shape();
        let x_shape = [rows, c, h, w];
        let t_shape = [rows, m];
        let outs = self.session(objective)?.run(
            &[("x", &x_shape, &input), ("target", &t_shape, &onehot)],
            &["out", "dx"],
        )?;
        let [out, dx] = <[_; 2]>::try_from(outs).expect("two outputs asked");
        let objective_values = out
            .values
            .chunks_exact(k * m)
            .zip(targets)
            .map(|(o, &t)| self.chain.objective_of(o, t, objective))
            .collect();
        Ok(Gradients {
            batch,
            classes: m,
            objective: objective_values,
            probabilities: self.chain.probabilities_of(&out.values),
            pixels: self.chain.to_pixels(&dx.values, batch),
            input: dx.values,
        })
    }
}

impl DifferentiableModel for GraphModel {
    fn backend(&self) -> &'static str {
        self.forward.backend()
    }

    fn device(&self) -> String {
        self.forward.device().to_owned()
    }

    fn classes(&self) -> usize {
        self.chain.classes
    }

    fn view(&self) -> ViewSpec {
        self.chain.view
    }

    fn channels(&self) -> usize {
        self.chain.source.len()
    }

    fn check_objective(&self, objective: Objective) -> Result<(), EvalError> {
        self.chain.check(objective)
    }

    fn probabilities(&mut self, pixels: &[f32], batch: usize) -> Result<Vec<f64>, EvalError> {
        self.chain.check_batch(pixels, batch)?;
        let input = self.chain.to_input(pixels, batch);
        let [c, h, w] = self.chain.network.input_shape();
        let rows = batch * self.chain.crops.len();
        let out = self
            .forward
            .run(&[("x", &[rows, c, h, w], &input)], &["out"])?;
        Ok(self.chain.probabilities_of(&out[0].values))
    }

    fn gradient(
        &mut self,
        pixels: &[f32],
        targets: &[usize],
        objective: Objective,
    ) -> Result<Gradients<f32>, EvalError> {
        let g = self.evaluate(pixels, targets, objective)?;
        checked(g, &self.chain.model, objective)
    }
}
