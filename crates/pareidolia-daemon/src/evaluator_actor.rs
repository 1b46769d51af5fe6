//! EvaluatorActor: gathers rendered children into batches, runs the backend and the fitness
//! plugin on a dedicated inference thread with up to two batches in flight (so the backend
//! never waits for the actor between batches), and casts scores (and losses) to the archive.
//!
//! Batches are formed by child index, not by arrival: batch `k` of a generation holds children
//! `k * batch_size ..` and runs as soon as all of them have arrived (or were lost on the way),
//! in index order. Backends' floating-point results can depend on the batch an image is in, so
//! this keeps a run's numbers independent of how many mutators there are and which finishes
//! first, while inference still overlaps with the rendering of later batches. Duplicates (from
//! re-issued work) are dropped by id. If a child never arrives (its mutator died), a linger
//! timer runs the incomplete batches, so nothing waits forever.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pareidolia_core::summary::StageTimes;

use pareidolia_core::FitnessPlugin;
use pareidolia_eval::{
    BackendChoice, BackendOptions, Model, PreparedModel, ViewSpec, backend_with, prepare_viewed,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::archive_actor::ArchiveMsg;
use crate::messages::{LostChild, Offspring, ScoredChild};
use crate::metrics::LossKind;
use crate::metrics_actor::{BatchTimings, MetricsMsg, observe};

/// How long a partial batch may wait for more children before it runs anyway.
const LINGER: Duration = Duration::from_millis(500);

/// The actor.
#[derive(Debug, Default)]
pub struct EvaluatorActor;

/// Messages an evaluator handles.
#[derive(Debug)]
pub enum EvaluatorMsg {
    /// Children from a mutator (rendered, or lost on the way).
    Children(Vec<Result<Offspring, LostChild>>),
    /// Linger timer; runs the partial batch if nothing arrived since it was set.
    Linger(u64),
}

/// Start-up arguments.
pub struct EvaluatorArgs {
    /// Name of the archive actor.
    pub archive: String,
    /// The model (to prepare again after a restart).
    pub model: Arc<Model>,
    /// The backend to prepare it on.
    pub backend: BackendChoice,
    /// ONNX Runtime and CUDA settings.
    pub backend_options: BackendOptions,
    /// How the canvas is shown to the model.
    pub view: ViewSpec,
    /// An already prepared model for the first start; `None` prepares it in `pre_start`.
    pub prepared: Option<Box<dyn PreparedModel>>,
    /// The fitness plugin instance.
    pub fitness: Arc<FitnessPlugin>,
    /// Images per batch.
    pub batch_size: usize,
    /// Name of the metrics actor (timings go there if it runs).
    pub metrics: String,
}

/// The evaluator's state.
pub struct EvaluatorState {
    archive: String,
    metrics: String,
    worker: InferenceWorker,
    in_flight: Arc<tokio::sync::Semaphore>,
    fitness_name: String,
    batch_size: usize,
    /// Batches being filled, by (generation, batch index).
    filling: BTreeMap<(u64, u32), Filling>,
    lost: Vec<LostChild>,
    seen: BTreeMap<u64, BTreeSet<u64>>,
    linger_token: u64,
}

/// A batch being filled.
#[derive(Default)]
struct Filling {
    children: Vec<Offspring>,
    /// When each child arrived, for the queue-wait metric.
    arrived: Vec<Instant>,
    /// Children arrived or lost.
    accounted: usize,
}

/// A batch's scores (or the stage that failed and why), its times, and when inference began.
type BatchResult = (Result<Vec<f32>, (LossKind, String)>, StageTimes, Instant);

/// Batches handed to the inference thread and not yet answered.
const BATCHES_IN_FLIGHT: usize = 2;

/// Casts results to the archive, found by name (it may be restarting).
fn send_to(archive: &str, scored: Vec<ScoredChild>, lost: Vec<LostChild>, times: StageTimes) {
    if scored.is_empty() && lost.is_empty() {
        return;
    }
    match ractor::registry::where_is(archive).map(ActorRef::<ArchiveMsg>::from) {
        Some(a) => {
            if a.cast(ArchiveMsg::Results {
                scored,
                lost,
                times,
            })
            .is_err()
            {
                tracing::warn!("archive gone; results dropped");
            }
        }
        None => tracing::warn!("no archive registered; results dropped"),
    }
}

/// Splits a batch's outcome into scored children and lost ones: a failed batch loses every
/// child; a non-finite score loses only its child.
fn split_results(
    batch: Vec<Offspring>,
    result: Result<Vec<f32>, (LossKind, String)>,
    fitness: &str,
) -> (Vec<ScoredChild>, Vec<LostChild>) {
    let n = batch.len();
    match result {
        Ok(scores) => {
            let classes = scores.len() / n.max(1);
            let mut scored = Vec::with_capacity(n);
            let mut rejected = Vec::new();
            for (c, s) in batch.into_iter().zip(scores.chunks_exact(classes.max(1))) {
                if let Some(bad) = s.iter().find(|v| !v.is_finite()) {
                    rejected.push(LostChild {
                        id: c.id,
                        generation: c.generation,
                        generation_size: c.generation_size,
                        stage: LossKind::NonFiniteScore.as_str().to_owned(),
                        reason: format!(
                            "fitness plugin `{fitness}` returned a non-finite score ({bad})"
                        ),
                    });
                } else {
                    scored.push(ScoredChild {
                        id: c.id,
                        generation: c.generation,
                        genome: c.genome,
                        scores: s.to_vec(),
                    });
                }
            }
            if !rejected.is_empty() {
                tracing::warn!(children = rejected.len(), reason = %rejected[0].reason, "children rejected");
            }
            (scored, rejected)
        }
        Err((kind, reason)) => {
            tracing::warn!(%reason, children = n, "batch lost");
            let lost = batch
                .into_iter()
                .map(|c| LostChild {
                    id: c.id,
                    generation: c.generation,
                    generation_size: c.generation_size,
                    stage: kind.as_str().to_owned(),
                    reason: reason.clone(),
                })
                .collect();
            (Vec::new(), lost)
        }
    }
}

fn infer_and_score(
    model: &mut dyn PreparedModel,
    fitness: &FitnessPlugin,
    pixels: &[u8],
    n: usize,
) -> BatchResult {
    let mut times = StageTimes {
        batches: 1,
        ..StageTimes::default()
    };
    let began = Instant::now();
    let outputs = model
        .infer(pixels, n)
        .map_err(|e| (LossKind::Inference, e.to_string()));
    times.inference_s = began.elapsed().as_secs_f64();
    let start = Instant::now();
    let result = outputs.and_then(|outputs| {
        fitness
            .score(&outputs, n)
            .map_err(|e| (LossKind::Score, e.to_string()))
    });
    times.fitness_s = start.elapsed().as_secs_f64();
    (result, times, began)
}

/// A dedicated OS thread that owns the prepared model. The model stays on one thread (warm
/// caches; GPU sessions want one owner) and batches reach it without a thread-pool round
/// trip. The thread ends when the evaluator's state, and with it the sender, is dropped.
struct InferenceWorker {
    jobs: std::sync::mpsc::Sender<WorkerJob>,
}

struct WorkerJob {
    pixels: Vec<u8>,
    n: usize,
    reply: tokio::sync::oneshot::Sender<BatchResult>,
}

impl InferenceWorker {
    fn spawn(
        mut model: Box<dyn PreparedModel>,
        fitness: Arc<FitnessPlugin>,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<WorkerJob>();
        std::thread::Builder::new()
            .name("pareidolia-inference".into())
            .spawn(move || {
                for job in rx {
                    let result = infer_and_score(model.as_mut(), &fitness, &job.pixels, job.n);
                    let _ = job.reply.send(result);
                }
            })?;
        Ok(Self { jobs })
    }

    /// Queues a batch; the answer arrives on the returned channel.
    fn submit(
        &self,
        pixels: Vec<u8>,
        n: usize,
    ) -> Result<tokio::sync::oneshot::Receiver<BatchResult>, ActorProcessingErr> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(WorkerJob { pixels, n, reply })
            .map_err(|_| "inference thread ended")?;
        Ok(answer)
    }
}

impl EvaluatorState {
    /// Hands a batch to the inference thread and returns as soon as it is queued (after
    /// waiting for a free slot), so up to [`BATCHES_IN_FLIGHT`] batches are in flight: the
    /// backend finds the next batch waiting when it finishes one. A task per batch takes the
    /// results to the archive.
    async fn run_batch(
        &mut self,
        batch: Vec<Offspring>,
        arrived: Vec<Instant>,
    ) -> Result<(), ActorProcessingErr> {
        let permit = self.in_flight.clone().acquire_owned().await?;
        let n = batch.len();
        let mut pixels = Vec::with_capacity(n * batch[0].pixels.len());
        for child in &batch {
            pixels.extend_from_slice(&child.pixels);
        }
        let answer = self.worker.submit(pixels, n)?;
        let mut earlier_losses = std::mem::take(&mut self.lost);
        let (archive, fitness) = (self.archive.clone(), self.fitness_name.clone());
        let (metrics, in_flight) = (self.metrics.clone(), self.in_flight.clone());
        let batch_filling = self.filling.values().map(|f| f.children.len()).sum();
        tokio::spawn(async move {
            let (result, mut times, began) = match answer.await {
                Ok(r) => r,
                Err(_) => (
                    Err((LossKind::Inference, "the inference thread ended".to_owned())),
                    StageTimes::default(),
                    Instant::now(),
                ),
            };
            drop(permit);
            times.breed_s = batch.iter().map(|c| c.breed_s).sum();
            observe(
                &metrics,
                MetricsMsg::Batch(BatchTimings {
                    size: batch.len(),
                    inference_s: times.inference_s,
                    fitness_s: times.fitness_s,
                    breed_s: batch.iter().map(|c| c.breed_s).collect(),
                    queue_wait_s: arrived
                        .iter()
                        .map(|a| began.saturating_duration_since(*a).as_secs_f64())
                        .collect(),
                    batch_filling,
                    inference_batches: BATCHES_IN_FLIGHT - in_flight.available_permits(),
                }),
            );
            let (scored, mut lost) = split_results(batch, result, &fitness);
            lost.append(&mut earlier_losses);
            send_to(&archive, scored, lost, times);
        });
        Ok(())
    }

    fn send(&mut self, scored: Vec<ScoredChild>, lost: Vec<LostChild>, times: StageTimes) {
        send_to(&self.archive, scored, lost, times);
    }

    /// Runs every incomplete batch (linger) and sends pending losses.
    async fn flush(&mut self) -> Result<(), ActorProcessingErr> {
        for (_, filling) in std::mem::take(&mut self.filling) {
            if !filling.children.is_empty() {
                self.run_batch(filling.children, filling.arrived).await?;
            }
        }
        let lost = std::mem::take(&mut self.lost);
        self.send(Vec::new(), lost, StageTimes::default());
        Ok(())
    }

    /// Accounts one child; returns the batch it completed (children in id order, with their
    /// arrival times), if any.
    fn account(
        &mut self,
        child: Result<Offspring, LostChild>,
    ) -> Option<(Vec<Offspring>, Vec<Instant>)> {
        let (generation, size, id) = match &child {
            Ok(o) => (o.generation, o.generation_size, o.id),
            Err(l) => (l.generation, l.generation_size, l.id),
        };
        if !self.seen.entry(generation).or_default().insert(id) {
            return None;
        }
        // Older generations can no longer complete; forget them.
        self.seen.retain(|&g, _| g + 1 >= generation);
        let batch = self.batch_size as u32;
        let index = (id & 0xFFFF_FFFF) as u32;
        let key = (generation, index / batch);
        let expected = (size.saturating_sub(key.1 * batch)).min(batch) as usize;
        let filling = self.filling.entry(key).or_default();
        filling.accounted += 1;
        match child {
            Ok(o) => {
                filling.children.push(o);
                filling.arrived.push(Instant::now());
            }
            Err(l) => self.lost.push(l),
        }
        let filling = &self.filling[&key];
        if filling.accounted < expected {
            return None;
        }
        let done = self.filling.remove(&key).unwrap_or_default();
        let mut children: Vec<(Offspring, Instant)> =
            done.children.into_iter().zip(done.arrived).collect();
        children.sort_by_key(|(c, _)| c.id);
        Some(children.into_iter().unzip())
    }
}

impl Actor for EvaluatorActor {
    type Msg = EvaluatorMsg;
    type State = EvaluatorState;
    type Arguments = EvaluatorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: EvaluatorArgs,
    ) -> Result<EvaluatorState, ActorProcessingErr> {
        let model = match args.prepared {
            Some(m) => m,
            None => {
                let (model, backend, view) = (args.model.clone(), args.backend, args.view);
                let options = args.backend_options.clone();
                tokio::task::spawn_blocking(move || {
                    prepare_viewed(backend_with(backend, &options).as_ref(), &model, view)
                })
                .await??
            }
        };
        Ok(EvaluatorState {
            archive: args.archive,
            metrics: args.metrics,
            in_flight: Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT)),
            fitness_name: args.fitness.name().to_owned(),
            worker: InferenceWorker::spawn(model, args.fitness)?,
            batch_size: args.batch_size.max(1),
            filling: BTreeMap::new(),
            lost: Vec::new(),
            seen: BTreeMap::new(),
            linger_token: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: EvaluatorMsg,
        state: &mut EvaluatorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EvaluatorMsg::Children(children) => {
                for child in children {
                    if let Some((batch, arrived)) = state.account(child) {
                        if batch.is_empty() {
                            let lost = std::mem::take(&mut state.lost);
                            state.send(Vec::new(), lost, StageTimes::default());
                        } else {
                            state.run_batch(batch, arrived).await?;
                        }
                    }
                }
                state.linger_token += 1;
                if !state.filling.is_empty() || !state.lost.is_empty() {
                    let token = state.linger_token;
                    myself.send_after(LINGER, move || EvaluatorMsg::Linger(token));
                }
            }
            EvaluatorMsg::Linger(token) => {
                if token == state.linger_token {
                    state.flush().await?;
                }
            }
        }
        Ok(())
    }
}
