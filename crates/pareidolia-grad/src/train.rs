//! Training a classifier's weights on the CPU: Caffe's `SGDSolver` over the differentiable
//! evaluator ([`crate::grad::Network`]), with the weights as the variables. Softmax
//! cross-entropy on the logits, averaged over the batch (Caffe's `SoftmaxWithLoss`); momentum
//! SGD with L2 weight decay on every parameter and a per-role learning-rate multiplier
//! (biases ×2 in Caffe's LeNet); the `inv` learning-rate policy; Caffe's `xavier` filler
//! (`U(±sqrt(3 / fan_in))`, zero biases, unit scales: LayerNorm's, a `Mul` by a weight) for a
//! model trained from scratch.
//!
//! The data are the model's input tensors (already preprocessed, [`encode_images`]), so
//! training sees exactly what inference sees. Batches are drawn as Caffe's data layer reads a
//! shuffled set: each pass over the data is a fresh seeded permutation, and a batch may
//! straddle two passes. Everything random comes from the recipe's seed, so two runs with the
//! same seed, data and thread count give the same weights bit for bit (the per-thread
//! gradient sums are added in a fixed order; another thread count changes their rounding).

use std::ops::ControlFlow;
use std::time::Instant;

use pareidolia_core::seeds::{self, HostRng, Stream};
use rand::seq::SliceRandom;
use rand::{RngExt as _, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::OnnxGraph;
use crate::grad::{Network, ParameterRole, Wrt};
use pareidolia_eval::{EvalError, Preprocessor};

/// How the weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// Caffe's `xavier` weights and zero biases, drawn from the seed (training from scratch).
    Xavier,
    /// The graph's own weights (fine-tuning).
    Keep,
}

/// What training does with a BatchNormalization's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatchNormMode {
    /// PyTorch's `train()`: each batch is normalised with its own mean and (biased) variance,
    /// gradients flow through them, and the running statistics move towards the batch's by
    /// the layer's momentum (unbiased variance), as `torch.nn.BatchNorm2d` does. Inference
    /// afterwards uses the running statistics.
    #[default]
    Train,
    /// The running statistics stay as they are and normalise every batch (PyTorch's `eval()`
    /// for the BatchNorm layers while training); the scale and bias are still trained.
    Frozen,
}

/// Caffe's `SGDSolver` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdRecipe {
    /// `base_lr`.
    pub base_lr: f64,
    /// `momentum`.
    pub momentum: f64,
    /// `weight_decay` (L2, on biases too: Caffe's `decay_mult` defaults to 1).
    pub weight_decay: f64,
    /// `lr_policy: "inv"`: `rate = base_lr * (1 + gamma * iteration) ^ -power`.
    pub lr_gamma: f64,
    /// The `inv` policy's power.
    pub lr_power: f64,
    /// `lr_mult` of the biases (the weights have 1).
    pub bias_lr_mult: f64,
    /// Images per iteration.
    pub batch: usize,
    /// `max_iter`.
    pub iterations: u64,
    /// Seeds the initial weights and the data order.
    pub seed: u64,
    /// How the weights start.
    pub init: Init,
    /// BatchNormalization's statistics while training (graphs without one ignore it).
    #[serde(default)]
    pub batch_norm: BatchNormMode,
}

impl SgdRecipe {
    /// Caffe's `examples/mnist/lenet_solver.prototxt` with `lenet_train_test.prototxt`'s batch
    /// and multipliers, as `models/lenet-mnist/train.py` applies it.
    pub fn caffe_lenet(seed: u64) -> Self {
        Self {
            base_lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0005,
            lr_gamma: 0.0001,
            lr_power: 0.75,
            bias_lr_mult: 2.0,
            batch: 64,
            iterations: 10_000,
            seed,
            init: Init::Xavier,
            batch_norm: BatchNormMode::Train,
        }
    }

    /// The learning rate at `iteration` (0-based), Caffe's `GetLearningRate` for `inv`.
    pub fn rate(&self, iteration: u64) -> f64 {
        self.base_lr * (1.0 + self.lr_gamma * iteration as f64).powf(-self.lr_power)
    }

    /// Checks the settings, naming the first one out of range.
    pub fn validate(&self) -> Result<(), EvalError> {
        let bad = |key: &str, why: &str| {
            Err(EvalError::BadInput(format!(
                "training recipe: `{key}` {why}"
            )))
        };
        let finite = [
            ("base_lr", self.base_lr),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
            ("lr_gamma", self.lr_gamma),
            ("lr_power", self.lr_power),
            ("bias_lr_mult", self.bias_lr_mult),
        ];
        if let Some((key, _)) = finite.iter().find(|(_, v)| !v.is_finite() || *v < 0.0) {
            return bad(key, "must be a finite number >= 0");
        }
        if self.base_lr <= 0.0 {
            return bad("base_lr", "must be > 0");
        }
        if self.momentum >= 1.0 {
            return bad("momentum", "must be below 1");
        }
        if self.batch == 0 {
            return bad("batch", "must be at least 1");
        }
        if self.iterations == 0 {
            return bad("iterations", "must be at least 1");
        }
        Ok(())
    }
}

/// Labelled model inputs: `labels.len()` images of `image_len` values each.
#[derive(Debug, Clone, Copy)]
pub struct TrainSet<'a> {
    /// The model's input tensors, image after image.
    pub inputs: &'a [f32],
    /// One class per image.
    pub labels: &'a [u32],
}

/// Where a training run is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainProgress {
    /// Iterations done.
    pub iteration: u64,
    /// Of how many.
    pub iterations: u64,
    /// Mean loss over the iterations since the last report.
    pub loss: f64,
    /// The learning rate of the last iteration.
    pub rate: f64,
    /// Seconds so far.
    pub elapsed_s: f64,
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Iterations done (fewer than the recipe's when stopped).
    pub iterations: u64,
    /// Whether the progress callback stopped it early.
    pub stopped: bool,
    /// `(iteration, mean loss over the preceding block)`, one point per `report_every`.
    pub loss_curve: Vec<(u64, f64)>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Images through forward and backward per second.
    pub images_per_s: f64,
    /// Threads the batches were split over.
    pub threads: usize,
}

/// Turns 8-bit images into the model's input tensors with the manifest's preprocessing.
pub fn encode_images(pre: &Preprocessor, images: &[u8]) -> Vec<f32> {
    let n = images.len() / pre.image_len().max(1);
    let mut out = vec![0.0f32; images.len()];
    pre.fill(&images[..n * pre.image_len()], &mut out);
    out
}

/// Softmax cross-entropy of one image's logits against `label`, and its gradient
/// `softmax - onehot`, scaled by `scale`, into `d`.
fn cross_entropy(logits: &[f32], label: usize, scale: f32, d: Option<&mut [f32]>) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&z| f64::from(z - max).exp()).sum();
    if let Some(d) = d {
        for (k, (g, &z)) in d.iter_mut().zip(logits).enumerate() {
            let p = (f64::from(z - max).exp() / sum) as f32;
            *g = scale * (p - if k == label { 1.0 } else { 0.0 });
        }
    }
    sum.ln() - f64::from(logits[label] - max)
}

/// Draws Caffe's `xavier` weights, zero biases and unit scales into `network`; a
/// BatchNormalization's running statistics start as PyTorch's (mean 0, variance 1).
pub fn xavier(network: &mut Network<f32>, seed: u64) {
    network.reset_running_statistics();
    let roles = network.parameter_roles();
    let mut rng = HostRng::seed_from_u64(seeds::derive(seed, Stream::TrainInit, 0, 0));
    for (p, role) in network.parameters_mut().iter_mut().zip(roles) {
        match role {
            ParameterRole::Weight { fan_in } => {
                let scale = (3.0 / fan_in as f64).sqrt();
                for v in &mut p.values {
                    *v = rng.random_range(-scale..scale) as f32;
                }
            }
            ParameterRole::Bias => p.values.iter_mut().for_each(|v| *v = 0.0),
            ParameterRole::Scale => p.values.iter_mut().for_each(|v| *v = 1.0),
        }
    }
}

/// Caffe's data layer over a shuffled set: fresh seeded permutations, read in order, a batch
/// straddling two passes when the set size is not a multiple of the batch.
struct Order {
    rng: HostRng,
    n: usize,
    queue: Vec<usize>,
    at: usize,
}

impl Order {
    fn new(n: usize, seed: u64) -> Self {
        Self {
            rng: HostRng::seed_from_u64(seeds::derive(seed, Stream::TrainOrder, 0, 0)),
            n,
            queue: Vec::new(),
            at: 0,
        }
    }

    fn next_batch(&mut self, batch: usize, out: &mut Vec<usize>) {
        out.clear();
        while out.len() < batch {
            if self.at == self.queue.len() {
                self.queue = (0..self.n).collect();
                self.queue.shuffle(&mut self.rng);
                self.at = 0;
            }
            let take = (batch - out.len()).min(self.queue.len() - self.at);
            out.extend_from_slice(&self.queue[self.at..self.at + take]);
            self.at += take;
        }
    }
}

/// Checks a set against a network: whole images, labels below the output count.
fn check_set(network: &Network<f32>, set: &TrainSet<'_>, classes: usize) -> Result<(), EvalError> {
    let per: usize = network.input_shape().iter().product();
    if set.labels.is_empty() || set.inputs.len() != set.labels.len() * per {
        return Err(EvalError::BadInput(format!(
            "model {}: {} input values for {} labelled images of {per} values each",
            network.model(),
            set.inputs.len(),
            set.labels.len()
        )));
    }
    if let Some((i, &l)) = set
        .labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        return Err(EvalError::BadInput(format!(
            "model {}: image {i} has label {l}, but the model has {classes} outputs (labels 0 to {})",
            network.model(),
            classes - 1
        )));
    }
    Ok(())
}

/// The number of outputs per image.
fn outputs_of(network: &Network<f32>) -> Result<usize, EvalError> {
    let per: usize = network.input_shape().iter().product();
    Ok(network.forward(&vec![0.0; per], 1)?.len())
}

/// Trains `network` on `set` with `recipe`. `progress` is called every `report_every`
/// iterations (and after the last) and may stop the run early ([`ControlFlow::Break`]); the
/// weights are then those of the last iteration done.
pub fn train(
    network: &mut Network<f32>,
    set: &TrainSet<'_>,
    recipe: &SgdRecipe,
    report_every: u64,
    progress: &mut dyn FnMut(&TrainProgress) -> ControlFlow<()>,
) -> Result<TrainReport, EvalError> {
    recipe.validate()?;
    if !network.outputs_logits_of_softmax() {
        tracing::debug!(
            model = network.model(),
            "no final Softmax was removed: the outputs are taken as logits"
        );
    }
    let classes = outputs_of(network)?;
    check_set(network, set, classes)?;
    if recipe.init == Init::Xavier {
        xavier(network, recipe.seed);
    }
    let batch_statistics = recipe.batch_norm == BatchNormMode::Train && network.has_batch_norm();
    network.set_batch_statistics(batch_statistics);
    let result = sgd(network, set, recipe, classes, report_every, progress);
    // Inference (held-out accuracy, the written model) uses the running statistics.
    network.set_batch_statistics(false);
    result
}

/// The SGD loop of [`train`].
fn sgd(
    network: &mut Network<f32>,
    set: &TrainSet<'_>,
    recipe: &SgdRecipe,
    classes: usize,
    report_every: u64,
    progress: &mut dyn FnMut(&TrainProgress) -> ControlFlow<()>,
) -> Result<TrainReport, EvalError> {
    let per: usize = network.input_shape().iter().product();
    let roles = network.parameter_roles();
    let mut history: Vec<Vec<f32>> = network
        .parameters()
        .iter()
        .map(|p| vec![0.0; p.values.len()])
        .collect();
    let mut order = Order::new(set.labels.len(), recipe.seed);
    let (mut picks, mut x, mut y) = (Vec::new(), Vec::new(), Vec::new());
    let start = Instant::now();
    let report_every = report_every.max(1);
    let mut report = TrainReport {
        iterations: 0,
        stopped: false,
        loss_curve: Vec::new(),
        seconds: 0.0,
        images_per_s: 0.0,
        threads: network.threads(),
    };
    let (mut block_loss, mut block_n) = (0.0f64, 0u64);
    let scale = 1.0 / recipe.batch as f32;
    for it in 0..recipe.iterations {
        order.next_batch(recipe.batch, &mut picks);
        x.clear();
        y.clear();
        for &i in &picks {
            x.extend_from_slice(&set.inputs[i * per..(i + 1) * per]);
            y.push(set.labels[i] as usize);
        }
        let labels = &y;
        let seed = move |i: usize, out: &[f32], d: &mut [f32]| {
            cross_entropy(out, labels[i], scale, Some(d));
        };
        let pass = network.gradient(&x, recipe.batch, 1, Wrt::Parameters, &seed)?;
        let loss: f64 = pass
            .outputs
            .chunks_exact(classes)
            .zip(&y)
            .map(|(o, &l)| cross_entropy(o, l, 1.0, None))
            .sum::<f64>()
            / recipe.batch as f64;
        if !loss.is_finite() {
            return Err(EvalError::BadInput(format!(
                "model {}: the training loss became {loss} at iteration {it}; lower `base_lr`",
                network.model()
            )));
        }
        if network.batch_statistics() {
            network.update_running_statistics(&pass.batch_statistics)?;
        }
        let grads = pass
            .parameter_gradients
            .ok_or_else(|| EvalError::BadInput("no parameter gradients were computed".into()))?;
        let rate = recipe.rate(it);
        // Caffe's SGDSolver::ApplyUpdate: Regularize, ComputeUpdateValue, Update.
        for (((p, g), h), role) in network
            .parameters_mut()
            .iter_mut()
            .zip(&grads)
            .zip(&mut history)
            .zip(&roles)
        {
            let lr = (rate
                * match role {
                    ParameterRole::Weight { .. } | ParameterRole::Scale => 1.0,
                    ParameterRole::Bias => recipe.bias_lr_mult,
                }) as f32;
            let (wd, m) = (recipe.weight_decay as f32, recipe.momentum as f32);
            for ((w, &g), h) in p.values.iter_mut().zip(g).zip(h.iter_mut()) {
                let diff = g + wd * *w;
                *h = m * *h + lr * diff;
                *w -= *h;
            }
        }
        block_loss += loss;
        block_n += 1;
        report.iterations = it + 1;
        if report.iterations.is_multiple_of(report_every) || report.iterations == recipe.iterations
        {
            let mean = block_loss / block_n as f64;
            report.loss_curve.push((report.iterations, mean));
            (block_loss, block_n) = (0.0, 0);
            let p = TrainProgress {
                iteration: report.iterations,
                iterations: recipe.iterations,
                loss: mean,
                rate,
                elapsed_s: start.elapsed().as_secs_f64(),
            };
            if progress(&p).is_break() {
                report.stopped = report.iterations < recipe.iterations;
                break;
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.images_per_s =
        (report.iterations as f64 * recipe.batch as f64) / report.seconds.max(1e-9);
    Ok(report)
}

/// The class each image is given (argmax of the outputs), in batches.
pub fn predict(network: &Network<f32>, inputs: &[f32]) -> Result<Vec<usize>, EvalError> {
    Ok(outputs(network, inputs)?
        .iter()
        .map(|o| argmax(o))
        .collect())
}

/// The outputs of every image (logits, or probabilities where the graph ends in them), in
/// batches of 256.
pub fn outputs(network: &Network<f32>, inputs: &[f32]) -> Result<Vec<Vec<f32>>, EvalError> {
    let per: usize = network.input_shape().iter().product();
    let mut all = Vec::with_capacity(inputs.len() / per.max(1));
    for chunk in inputs.chunks(256 * per) {
        let n = chunk.len() / per;
        let out = network.forward(chunk, n)?;
        let k = out.len() / n;
        all.extend(out.chunks_exact(k).map(<[f32]>::to_vec));
    }
    Ok(all)
}

/// The index of the largest value (the first of equal ones).
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// The fraction of images whose argmax is their label.
pub fn accuracy(network: &Network<f32>, set: &TrainSet<'_>) -> Result<f64, EvalError> {
    let predicted = predict(network, set.inputs)?;
    let right = predicted
        .iter()
        .zip(set.labels)
        .filter(|&(&p, &l)| p == l as usize)
        .count();
    Ok(right as f64 / set.labels.len().max(1) as f64)
}

/// Writes `network`'s parameters into `graph` (the graph it was loaded from, or one of the
/// same shapes), by initializer name, and with `running` its BatchNormalizations' running
/// statistics (what [`BatchNormMode::Train`] or a xavier start changes).
pub fn write_parameters(
    graph: &mut OnnxGraph,
    network: &Network<f32>,
    running: bool,
) -> Result<(), EvalError> {
    let names: Vec<(String, Vec<i64>)> = graph.float_initializers();
    let stats: &[_] = if running {
        network.running_statistics()
    } else {
        &[]
    };
    let written = || network.parameters().iter().chain(stats);
    if let Some(p) = written().find(|p| !names.iter().any(|(n, _)| *n == p.name)) {
        return Err(EvalError::BadInput(format!(
            "model {}: the trained parameter `{}` is not an initializer of the ONNX graph (it is computed from constants when the graph loads), so the trained weights cannot be written back; export the model with its weights as initializers",
            network.model(),
            p.name
        )));
    }
    graph.replace_initializers(written().map(|p| (p.name.as_str(), &p.values[..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inv_policy_matches_caffe() {
        let r = SgdRecipe::caffe_lenet(1);
        assert_eq!(r.rate(0), 0.01);
        // Caffe: base_lr * (1 + gamma * iter)^(-power) at iter 10000.
        let expected = 0.01 * 2.0f64.powf(-0.75);
        assert!((r.rate(10_000) - expected).abs() < 1e-15);
    }

    #[test]
    fn cross_entropy_and_its_gradient() {
        let logits = [1.0f32, 2.0, 3.0];
        let mut d = [0.0f32; 3];
        let loss = cross_entropy(&logits, 2, 0.5, Some(&mut d));
        let sum: f64 = logits.iter().map(|&z| f64::from(z).exp()).sum();
        let p: Vec<f64> = logits.iter().map(|&z| f64::from(z).exp() / sum).collect();
        assert!((loss - (-p[2].ln())).abs() < 1e-9);
        for k in 0..3 {
            let want = 0.5 * (p[k] - if k == 2 { 1.0 } else { 0.0 });
            assert!(
                (f64::from(d[k]) - want).abs() < 1e-6,
                "{k}: {} vs {want}",
                d[k]
            );
        }
        // The gradient sums to zero: softmax is invariant to a shift of the logits.
        assert!(d.iter().sum::<f32>().abs() < 1e-6);
    }

    #[test]
    fn batches_are_permutations_and_straddle_passes() {
        let mut order = Order::new(10, 7);
        let mut seen = Vec::new();
        let mut b = Vec::new();
        for _ in 0..5 {
            order.next_batch(4, &mut b);
            assert_eq!(b.len(), 4);
            seen.extend_from_slice(&b);
        }
        // Two whole passes of 10 in the first 20 draws, each a permutation.
        for pass in seen.chunks(10) {
            let mut s = pass.to_vec();
            s.sort_unstable();
            assert_eq!(s, (0..10).collect::<Vec<_>>());
        }
        assert_ne!(&seen[..10], &seen[10..20], "each pass is reshuffled");
        let mut again = Order::new(10, 7);
        let mut b2 = Vec::new();
        again.next_batch(4, &mut b2);
        assert_eq!(&b2[..], &seen[..4], "the order is a function of the seed");
    }

    #[test]
    fn a_recipe_out_of_range_is_named() {
        let mut r = SgdRecipe::caffe_lenet(1);
        r.momentum = 1.0;
        assert!(r.validate().unwrap_err().to_string().contains("momentum"));
        let mut r = SgdRecipe::caffe_lenet(1);
        r.base_lr = f64::NAN;
        assert!(r.validate().unwrap_err().to_string().contains("base_lr"));
        let mut r = SgdRecipe::caffe_lenet(1);
        r.batch = 0;
        assert!(r.validate().unwrap_err().to_string().contains("batch"));
    }
}
