//! The gradient operator of gradient-informed MAP-Elites (`[search.gradient]`): before a batch
//! is scored, each child the archive marked for steering takes gradient steps on its genome
//! toward its target class. One step: the model's forward and backward pass gives the gradient
//! of the objective with respect to the child's pixels (the evaluator's differentiable model,
//! all steered children of the batch in one call); the encoding pulls it back to the genome
//! (`Encoding::pullback`, plugin ABI 1.1); the released ascent code's "progress" policy sets
//! the learning rate (`min(max_lr, desired / ‖g‖²)` with
//! `desired = min(early_prog, late_prog_mult · (1 − p))`, `g` the genome gradient and `p` the
//! target's probability), so the objective's first-order change is the desired progress
//! whatever the genome's units; the encoding applies the step (`Encoding::apply_step`) and
//! renders the moved genome. The child then competes for every class as any child does.
//!
//! Everything here is a pure function of the batch (the archive decides which children are
//! steered from the run's seed; the differentiable model runs on one thread), so a steered run
//! is as deterministic and resumable as the paper's loop. Plain code, tested without actors.

use std::sync::Arc;
use std::time::Instant;

use pareidolia_core::ascent::Recipe;
use pareidolia_core::{
    BackendChoice, EncodingPlugin, GradientOperator, Objective, OptionalOperation,
};
use pareidolia_eval::EvalError;
use pareidolia_grad::grad::{DifferentiableModel, prepare_gradient};

use crate::run::setup::{ModelSetup, Setup, SetupError};

/// What an evaluator needs to steer children: the model to differentiate, the encoding that
/// maps pixel gradients to genome steps, and the operator's settings.
#[derive(Clone)]
pub struct Steering {
    /// The run's model (one: the config refuses the operator with several).
    pub model: ModelSetup,
    /// The run's encoding.
    pub encoding: Arc<EncodingPlugin>,
    /// `[search.gradient]`.
    pub operator: GradientOperator,
    /// Where the gradients run (`[search] backend`, else the model's backend).
    pub backend: BackendChoice,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("model", &self.model.key)
            .field("encoding", &self.encoding.name())
            .field("operator", &self.operator)
            .finish()
    }
}

impl Steering {
    /// The steering of a run whose config has `[search.gradient]`, after checking that it can
    /// run: the encoding offers `pullback` and `apply_step`, and the model's graph can be
    /// differentiated for the objective. `None` for a run without the operator.
    pub fn of(setup: &Setup) -> Result<Option<Self>, SetupError> {
        let Some(operator) = setup.config.search.gradient.clone() else {
            return Ok(None);
        };
        let search = |message: String| SetupError::Search { message };
        for operation in [OptionalOperation::Pullback, OptionalOperation::ApplyStep] {
            setup.encoding.check_offers(operation).map_err(|e| {
                search(format!(
                    "[search.gradient] steps children's genomes along the model's gradient, which needs the encoding's `pullback` and `apply_step` (plugin ABI 1.1): {e}; use an encoding that offers them (direct, cppn) or remove [search.gradient]"
                ))
            })?;
        }
        let steering = Self {
            model: setup.model().clone(),
            encoding: setup.encoding.clone(),
            operator,
            backend: setup.config.search.backend.unwrap_or(setup.model().backend),
        };
        let model = steering.prepare_model()?;
        tracing::info!(
            model = %steering.model.model.name(),
            backend = model.backend(),
            share = steering.operator.share,
            steps = steering.operator.steps,
            target = %steering.operator.target,
            "gradient operator on"
        );
        Ok(Some(steering))
    }

    /// The differentiable model on the run's gradient backend (`[search] backend`, else the
    /// model's), on one thread (an evaluator is one thread of work; this keeps its gradients
    /// the same whatever the machine).
    fn prepare_model(&self) -> Result<Box<dyn DifferentiableModel>, EvalError> {
        let chosen = prepare_gradient(
            self.backend,
            &self.model.options.ort,
            1,
            &self.model.model,
            self.model.view,
        )?;
        chosen.model.check_objective(self.operator.objective)?;
        Ok(chosen.model)
    }

    /// A steerer for one evaluator.
    pub fn prepare(&self) -> Result<Steerer, EvalError> {
        Ok(Steerer {
            model: self.prepare_model()?,
            encoding: self.encoding.clone(),
            recipe: self.operator.recipe(),
            objective: self.operator.objective,
            steps: self.operator.steps,
        })
    }
}

/// The gradient operator on one evaluator's inference thread.
pub struct Steerer {
    model: Box<dyn DifferentiableModel>,
    encoding: Arc<EncodingPlugin>,
    recipe: Recipe,
    objective: Objective,
    steps: u32,
}

/// A child of a batch to steer: its place in the batch, its genome and its target class.
#[derive(Debug, Clone, PartialEq)]
pub struct SteerJob {
    /// Index in the batch.
    pub index: usize,
    /// Its genome as bred.
    pub genome: Vec<u8>,
    /// The class to push toward.
    pub target: u32,
}

/// What steering a batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SteerReport {
    /// Gradient steps computed (one per child per step; a forward and a backward pass each).
    pub steps: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// The children that moved: batch index and new genome (their pixels in the batch are
    /// the new genome's rendering).
    pub moved: Vec<(usize, Vec<u8>)>,
    /// Why a step was not taken, for a child or the batch (logged; the child is then scored
    /// as far as it got).
    pub problems: Vec<String>,
}

impl Steerer {
    /// Steps the children of `jobs` toward their targets, `steps` times, rewriting their
    /// canvases in `pixels` (the batch's canvases, `image_len` bytes each).
    pub fn steer(&mut self, pixels: &mut [u8], jobs: Vec<SteerJob>) -> SteerReport {
        let start = Instant::now();
        let len = self.encoding.image_len();
        let mut report = SteerReport::default();
        let mut active = jobs;
        for _ in 0..self.steps {
            if active.is_empty() {
                break;
            }
            let mut x = Vec::with_capacity(active.len() * len);
            for job in &active {
                x.extend(
                    pixels[job.index * len..][..len]
                        .iter()
                        .map(|&p| f32::from(p)),
                );
            }
            let targets: Vec<usize> = active.iter().map(|j| j.target as usize).collect();
            report.steps += active.len() as u64;
            let g = match self.model.gradient(&x, &targets, self.objective) {
                Ok(g) => g,
                Err(e) => {
                    report
                        .problems
                        .push(format!("no gradient for the batch: {e}"));
                    break;
                }
            };
            let mut next = Vec::with_capacity(active.len());
            for (j, job) in active.into_iter().enumerate() {
                let gp = &g.pixels[j * len..][..len];
                if gp.iter().all(|&v| v == 0.0) {
                    continue;
                }
                let p = g.probabilities[j * g.classes + job.target as usize];
                match self.step(&job.genome, gp, p) {
                    Ok(Some((genome, canvas))) => {
                        pixels[job.index * len..][..len].copy_from_slice(&canvas);
                        next.push(SteerJob { genome, ..job });
                    }
                    Ok(None) => {}
                    Err(e) => report.problems.push(e),
                }
            }
            active = next;
            for job in &active {
                match report.moved.iter_mut().find(|(i, _)| *i == job.index) {
                    Some((_, genome)) => genome.clone_from(&job.genome),
                    None => report.moved.push((job.index, job.genome.clone())),
                }
            }
        }
        report.moved.sort_by_key(|(i, _)| *i);
        report.seconds = start.elapsed().as_secs_f64();
        report
    }

    /// One step of one genome along its pixel gradient `gp` (target probability `p`): the new
    /// genome and its canvas, `None` where the step has no length.
    #[allow(clippy::type_complexity)]
    fn step(
        &self,
        genome: &[u8],
        gp: &[f32],
        p: f64,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>, String> {
        let pulled = self
            .encoding
            .pullback(genome, gp)
            .map_err(|e| format!("pullback: {e}"))?;
        let norm2: f64 = pulled.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        if !(norm2 > 0.0 && norm2.is_finite()) {
            return Ok(None);
        }
        let lr = self.recipe.learning_rate(p, norm2);
        let step: Vec<f32> = pulled.iter().map(|&v| (lr * f64::from(v)) as f32).collect();
        let moved = self
            .encoding
            .apply_step(genome, &step)
            .map_err(|e| format!("apply_step: {e}"))?;
        let mut canvas = vec![0u8; self.encoding.image_len()];
        self.encoding
            .render(&moved, &mut canvas)
            .map_err(|e| format!("render after a step: {e}"))?;
        Ok(Some((moved, canvas)))
    }
}
