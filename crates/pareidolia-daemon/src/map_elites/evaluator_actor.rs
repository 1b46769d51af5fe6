//! EvaluatorActor: one inference worker. It gathers rendered children into batches, runs the
//! backend and the fitness plugin on a dedicated inference thread with up to two batches in
//! flight (so the backend never waits for the actor between batches), and casts scores (and
//! losses) to the archive.
//!
//! It also takes a batch's breeding jobs instead of its children ([`EvaluatorMsg::Breed`]):
//! then the inference thread breeds and renders the batch with the encoding plugin right
//! before scoring it. A CPU run without mutators works so (`mutators = 0`; where, see
//! [`crate::experiment::workers_breed`]): every core runs one thread that breeds and scores
//! its batches, with no hand-off between threads in between and no mutator thread
//! preempting inference on the same core. The children are the same either way (a job
//! carries its parents and seeds).
//!
//! A run has one or more evaluators (`workers`), each with its own prepared models on a
//! single-threaded backend, registered as `names::evaluator(run, i)` and joined to the group
//! `names::evaluator_group(run)`. The archive's [`EvaluatorRoute`](crate::map_elites::messages::EvaluatorRoute)
//! sends each batch whole to one of them, so evaluator `i` only ever sees the children of its
//! own batches and a batch's images, and so its scores, are the same with 1 or N evaluators.
//! The inference threads of a process's evaluators serve one shared [`BatchQueue`]: a batch
//! runs on whichever thread is free first (each thread with its own copy of the same
//! models), so a thread slowed down by breeding on its core does not hold back the end of
//! the generation, and the results still go back through the batch's own evaluator.
//!
//! Batches are formed by child index by a plain [`Batcher`] (see there for why); the actor
//! forwards arriving children to it, runs the batches it completes while later ones are still
//! being rendered, and arms a linger timer so that a child that never arrives (its mutator
//! died) does not hold its batch forever.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pareidolia_core::summary::StageTimes;
use pareidolia_core::{EncodingPlugin, FitnessPlugin};
use pareidolia_eval::{OutputKind, PreparedModel};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::map_elites::batcher::{Batch, Batcher};
use crate::map_elites::messages::{
    ArchiveMsg, BatchTimings, BreedBatch, EvaluatorMsg, LossKind, LostChild, MetricsMsg, Offspring,
    RegistrarMsg, Results, ScoredChild, WorkTally, names, observe,
};
use crate::map_elites::mutator_actor::breed;
use crate::map_elites::shared_queue::{Retire, SharedQueue};
use crate::map_elites::steer::{SteerJob, SteerReport, Steerer, Steering};
use crate::run::setup::ModelSetup;

/// How long a partial batch may wait for more children before it runs anyway.
const LINGER: Duration = Duration::from_millis(500);

/// The actor.
#[derive(Debug, Default)]
pub struct EvaluatorActor;

/// Start-up arguments.
pub struct EvaluatorArgs {
    /// The run's id (prefix of its actors' names).
    pub run: String,
    /// Which evaluator of the run this is (for logs).
    pub index: usize,
    /// The models, each with its view and backend (to prepare again after a restart).
    pub models: Vec<ModelSetup>,
    /// Already prepared models for the first start; `None` prepares them in `pre_start`.
    pub prepared: Option<Vec<Box<dyn PreparedModel>>>,
    /// The fitness plugin instance.
    pub fitness: Arc<FitnessPlugin>,
    /// The encoding plugin instance, for batches that come as breeding jobs.
    pub encoding: Arc<EncodingPlugin>,
    /// Images per batch.
    pub batch_size: usize,
    /// Where the results go: the archive (local evaluators), or the daemon's registrar (an
    /// evaluator on a worker node).
    pub sink: ResultSink,
    /// Counts of batches and scored children (a worker node's heartbeat reports them).
    pub tally: Option<Arc<WorkTally>>,
    /// The gradient operator (`[search.gradient]`), if the run has it: steered children take
    /// their gradient steps here, before the batch is scored.
    pub steering: Option<Steering>,
    /// The batch queue this evaluator's inference thread serves and its batches go to,
    /// shared by every evaluator of the process (see [`BatchQueue`]).
    pub queue: BatchQueue,
}

/// Where an evaluator sends its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultSink {
    /// The run's archive, in this process.
    Archive,
    /// The daemon's registrar, on another node (it checks and forwards them).
    Registrar,
}

/// The sink with the name to find it by.
#[derive(Debug, Clone)]
struct Sink {
    kind: ResultSink,
    archive: String,
    from: u32,
}

/// The evaluator's state.
pub struct EvaluatorState {
    sink: Sink,
    tally: Option<Arc<WorkTally>>,
    metrics: String,
    worker: InferenceWorker,
    in_flight: Arc<tokio::sync::Semaphore>,
    fitness_name: String,
    batcher: Batcher,
    linger_token: u64,
    index: usize,
    /// Batches and children this evaluator ran (logged when it stops).
    batches: u64,
    children: u64,
}

/// What the inference thread answers for a batch.
struct BatchResult {
    /// The batch's children (those bred on the thread included), in id order.
    children: Vec<Offspring>,
    /// Children of its jobs that breeding lost (a plugin error or panic).
    lost: Vec<LostChild>,
    /// The scores and the models' mean probabilities, or the stage that failed and why.
    result: Result<(Vec<f32>, Vec<f32>), (LossKind, String)>,
    times: StageTimes,
    /// Inference seconds of each model.
    model_inference_s: Vec<f64>,
    /// When the thread took the batch from the queue.
    taken: Instant,
    /// When inference began.
    began: Instant,
    /// What steering the marked children did.
    steered: SteerReport,
}

impl BatchResult {
    /// The answer for a batch the inference thread ended without running: its children
    /// (`(id, generation, generation size)`), lost.
    fn not_run(children: &[(u64, u64, u32)]) -> Self {
        let lost = children
            .iter()
            .map(|&(id, generation, generation_size)| LostChild {
                id,
                generation,
                generation_size,
                stage: LossKind::Inference,
                reason: "the inference thread ended".to_owned(),
            })
            .collect();
        Self::empty(Vec::new(), lost)
    }

    /// The answer for a batch without a child to score.
    fn empty(children: Vec<Offspring>, lost: Vec<LostChild>) -> Self {
        let now = Instant::now();
        Self {
            children,
            lost,
            result: Ok((Vec::new(), Vec::new())),
            times: StageTimes::default(),
            model_inference_s: Vec::new(),
            began: now,
            taken: now,
            steered: SteerReport::default(),
        }
    }
}

/// When a batch's children arrived, for the queue-wait metric.
enum Arrivals {
    /// Rendered children, each at its own time (their wait runs until inference begins).
    Rendered(Vec<Instant>),
    /// Children to breed, queued as jobs at this time (their wait runs until the inference
    /// thread takes the jobs).
    Bred(Instant),
}

/// Batches handed to the inference thread and not yet answered.
const BATCHES_IN_FLIGHT: usize = 2;

/// Casts results to the sink, found by name (the archive may be restarting; the registrar is
/// on the daemon's node).
fn send_to(sink: &Sink, scored: Vec<ScoredChild>, lost: Vec<LostChild>, times: StageTimes) {
    if scored.is_empty() && lost.is_empty() {
        return;
    }
    let results = Results {
        from: sink.from,
        scored,
        lost,
        times,
    };
    let sent = match sink.kind {
        ResultSink::Archive => crate::map_elites::messages::find(&sink.archive)
            .map(ActorRef::<ArchiveMsg>::from)
            .map(|a| a.cast(ArchiveMsg::Results(results)).is_ok()),
        ResultSink::Registrar => crate::map_elites::messages::daemon_registrar()
            .map(|r| r.cast(RegistrarMsg::Results(results)).is_ok()),
    };
    match sent {
        Some(true) => {}
        Some(false) => tracing::warn!("{:?} gone; results dropped", sink.kind),
        None => tracing::warn!("no {:?} found; results dropped", sink.kind),
    }
}

/// Splits a batch's outcome into scored children and lost ones: a failed batch loses every
/// child; a non-finite score loses only its child.
fn split_results(
    batch: Vec<Offspring>,
    result: Result<(Vec<f32>, Vec<f32>), (LossKind, String)>,
    fitness: &str,
) -> (Vec<ScoredChild>, Vec<LostChild>) {
    let n = batch.len();
    match result {
        Ok((scores, probabilities)) => {
            let classes = scores.len() / n.max(1);
            let mut scored = Vec::with_capacity(n);
            let mut rejected = Vec::new();
            let probabilities = probabilities.chunks_exact(classes.max(1));
            for ((c, s), p) in batch
                .into_iter()
                .zip(scores.chunks_exact(classes.max(1)))
                .zip(probabilities)
            {
                if let Some(bad) = s.iter().find(|v| !v.is_finite()) {
                    rejected.push(LostChild {
                        id: c.id,
                        generation: c.generation,
                        generation_size: c.generation_size,
                        stage: LossKind::NonFiniteScore,
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
                        probabilities: p.to_vec(),
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
                    stage: kind,
                    reason: reason.clone(),
                })
                .collect();
            (Vec::new(), lost)
        }
    }
}

/// Per image, the models' mean probability of every class, from their outputs (model-major,
/// `kinds[m]` saying whether model `m` gives logits or probabilities): what the word
/// "confidence" means in summaries and galleries, whatever the fitness makes of the outputs.
/// Computed exactly as the `confidence` fitness plugin computes its scores (the SDK's softmax,
/// the mean in `f32` in model order), so with that fitness the two are the same numbers.
fn mean_probabilities(outputs: &[f32], kinds: &[OutputKind], batch: usize) -> Vec<f32> {
    use pareidolia_plugin::{ModelOutputs, OutputKind as Kind};
    let kinds: Vec<Kind> = kinds
        .iter()
        .map(|k| match k {
            OutputKind::Logits => Kind::Logits,
            OutputKind::Probabilities => Kind::Probabilities,
        })
        .collect();
    let models = kinds.len();
    let classes = outputs.len() / (models * batch).max(1);
    let view = ModelOutputs {
        data: outputs,
        batch,
        classes,
        kinds: &kinds,
    };
    let mut mean = vec![0f32; batch * classes];
    let mut probs = vec![0f32; classes];
    for (image, row) in mean.chunks_exact_mut(classes.max(1)).enumerate() {
        for model in 0..models {
            // A non-finite output is the fitness plugin's to refuse; it shows as 0 here.
            if view.probabilities(model, image, &mut probs).is_err() {
                probs.fill(0.0);
            }
            for (s, p) in row.iter_mut().zip(&probs) {
                *s += p / models as f32;
            }
        }
    }
    mean
}

/// Runs every model on the batch, one after the other on this thread (their costs add up;
/// nothing else waits), and hands all outputs to the fitness plugin, model-major as the
/// plugin ABI wants them.
fn infer_and_score(
    models: &mut [Box<dyn PreparedModel>],
    kinds: &[OutputKind],
    fitness: &FitnessPlugin,
    steerer: Option<&mut Steerer>,
    pixels: &mut [u8],
    n: usize,
    steer: Vec<SteerJob>,
) -> Scored {
    let report = match steerer {
        Some(s) if !steer.is_empty() => s.steer(pixels, steer),
        _ => SteerReport::default(),
    };
    let mut times = StageTimes {
        batches: 1,
        gradient_steps: report.steps,
        gradient_s: report.seconds,
        ..StageTimes::default()
    };
    let began = Instant::now();
    let mut per_model = Vec::with_capacity(models.len());
    let mut outputs = Ok(Vec::new());
    for model in models.iter_mut() {
        let start = Instant::now();
        let these = model.infer(pixels, n);
        per_model.push(start.elapsed().as_secs_f64());
        match (these, &mut outputs) {
            (Ok(o), Ok(all)) => all.extend_from_slice(&o),
            (Err(e), _) => {
                outputs = Err((LossKind::Inference, e.to_string()));
                break;
            }
            (Ok(_), Err(_)) => unreachable!("the loop stops at the first error"),
        }
    }
    times.inference_s = began.elapsed().as_secs_f64();
    let start = Instant::now();
    let result = outputs.and_then(|outputs| {
        let scores = fitness
            .score(&outputs, n)
            .map_err(|e| (LossKind::Score, e.to_string()))?;
        Ok((scores, mean_probabilities(&outputs, kinds, n)))
    });
    times.fitness_s = start.elapsed().as_secs_f64();
    (result, times, per_model, began, report)
}

/// [`infer_and_score`]'s answer: the scores (or the failure), times, each model's inference
/// seconds, when inference began, and the steering report.
type Scored = (
    Result<(Vec<f32>, Vec<f32>), (LossKind, String)>,
    StageTimes,
    Vec<f64>,
    Instant,
    SteerReport,
);

/// The inference thread's part of one batch: breeds the batch's children (if it came as
/// jobs; a job's child of another batch is left to that batch), lays the images out in id
/// order, takes the steered children's gradient steps and scores the batch.
fn run_job(
    mut children: Vec<Offspring>,
    breeding: Option<&BreedBatch>,
    encoding: &EncodingPlugin,
    models: &mut [Box<dyn PreparedModel>],
    kinds: &[OutputKind],
    fitness: &FitnessPlugin,
    steerer: Option<&mut Steerer>,
) -> BatchResult {
    let taken = Instant::now();
    let mut lost = Vec::new();
    if let Some(batch) = breeding {
        for child in batch.jobs.iter().flat_map(|j| breed(encoding, j)) {
            match child {
                Ok(c) if batch.holds(c.id) => children.push(c),
                Err(l) if batch.holds(l.id) => lost.push(l),
                _ => {}
            }
        }
    }
    if !lost.is_empty() {
        tracing::warn!(children = lost.len(), reason = %lost[0].reason, "children lost");
    }
    if children.is_empty() {
        return BatchResult::empty(children, lost);
    }
    let n = children.len();
    let mut pixels = Vec::with_capacity(n * children[0].pixels.len());
    for child in &children {
        pixels.extend_from_slice(&child.pixels);
    }
    let steer: Vec<SteerJob> = children
        .iter()
        .enumerate()
        .filter_map(|(index, c)| {
            c.steer.map(|target| SteerJob {
                index,
                genome: c.genome.to_vec(),
                target,
            })
        })
        .collect();
    let (result, times, model_inference_s, began, steered) =
        infer_and_score(models, kinds, fitness, steerer, &mut pixels, n, steer);
    BatchResult {
        children,
        lost,
        result,
        times,
        model_inference_s,
        taken,
        began,
        steered,
    }
}

/// The batches of one process's evaluators, taken by whichever of their inference threads
/// is free ([`SharedQueue`]): the supervisor gives every local evaluator of a run the same
/// queue, a worker node its own.
pub type BatchQueue = SharedQueue<InferenceJob>;

/// A dedicated OS thread that owns the prepared models. They stay on one thread (warm
/// caches; GPU sessions want one owner) and batches reach it without a thread-pool round
/// trip. It serves the process's [`BatchQueue`], its own evaluator's batches and the
/// others', until the evaluator's state, and with it the [`Retire`] handle, is dropped.
struct InferenceWorker {
    queue: BatchQueue,
    /// Set when the thread has ended (returned or panicked): this evaluator then fails its
    /// next batch and is restarted, as when it had its own thread.
    ended: Arc<AtomicBool>,
    _retire: Retire<InferenceJob>,
}

/// One batch for an inference thread: its rendered children, or the jobs that breed them.
pub struct InferenceJob {
    children: Vec<Offspring>,
    breeding: Option<BreedBatch>,
    reply: tokio::sync::oneshot::Sender<BatchResult>,
}

/// Sets its flag when dropped, also while unwinding.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl InferenceWorker {
    fn spawn(
        index: usize,
        queue: BatchQueue,
        mut models: Vec<Box<dyn PreparedModel>>,
        kinds: Vec<OutputKind>,
        fitness: Arc<FitnessPlugin>,
        encoding: Arc<EncodingPlugin>,
        mut steerer: Option<Steerer>,
    ) -> std::io::Result<Self> {
        let (consumer, retire) = queue.consumer();
        let ended = Arc::new(AtomicBool::new(false));
        let flag = SetOnDrop(ended.clone());
        std::thread::Builder::new()
            .name(format!("pareidolia-inference-{index}"))
            .spawn(move || {
                let _flag = flag;
                while let Some(job) = consumer.next() {
                    let InferenceJob {
                        children,
                        breeding,
                        reply,
                    } = job;
                    let result = run_job(
                        children,
                        breeding.as_ref(),
                        &encoding,
                        &mut models,
                        &kinds,
                        &fitness,
                        steerer.as_mut(),
                    );
                    let _ = reply.send(result);
                }
            })?;
        Ok(Self {
            queue,
            ended,
            _retire: retire,
        })
    }

    /// Queues a batch (its children, or the jobs that breed them); the answer arrives on the
    /// returned channel.
    fn submit(
        &self,
        children: Vec<Offspring>,
        breeding: Option<BreedBatch>,
    ) -> Result<tokio::sync::oneshot::Receiver<BatchResult>, ActorProcessingErr> {
        if self.ended.load(Ordering::Acquire) {
            return Err("inference thread ended".into());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue.push(InferenceJob {
            children,
            breeding,
            reply,
        });
        Ok(answer)
    }
}

impl EvaluatorState {
    /// Hands a batch the batcher completed to the inference thread (see [`Self::submit`]),
    /// with the losses the batcher accounted before it.
    async fn run_batch(&mut self, batch: Batch) -> Result<(), ActorProcessingErr> {
        let Batch { children, arrived } = batch;
        let earlier_losses = self.batcher.take_lost();
        self.submit(children, None, Arrivals::Rendered(arrived), earlier_losses)
            .await
    }

    /// Hands a batch's breeding jobs to the inference thread, which breeds, renders and
    /// scores the batch ([`EvaluatorMsg::Breed`]); like [`Self::run_batch`] otherwise.
    async fn breed_batch(&mut self, batch: BreedBatch) -> Result<(), ActorProcessingErr> {
        let arrivals = Arrivals::Bred(Instant::now());
        self.submit(Vec::new(), Some(batch), arrivals, Vec::new())
            .await
    }

    /// Hands a batch to the inference thread and returns as soon as it is queued (after
    /// waiting for a free slot), so up to [`BATCHES_IN_FLIGHT`] batches are in flight: the
    /// backend finds the next batch waiting when it finishes one. A task per batch takes the
    /// results (and `earlier_losses`) to the sink.
    async fn submit(
        &mut self,
        children: Vec<Offspring>,
        breeding: Option<BreedBatch>,
        arrivals: Arrivals,
        mut earlier_losses: Vec<LostChild>,
    ) -> Result<(), ActorProcessingErr> {
        let permit = self.in_flight.clone().acquire_owned().await?;
        // Who is in the batch, to account for its children if the thread ends before answering.
        let members: Vec<(u64, u64, u32)> = children
            .iter()
            .map(|c| (c.id, c.generation, c.generation_size))
            .chain(breeding.iter().flat_map(BreedBatch::members))
            .collect();
        let n = members.len() as u64;
        self.batches += 1;
        self.children += n;
        if let Some(t) = &self.tally {
            use std::sync::atomic::Ordering::Relaxed;
            t.batches.fetch_add(1, Relaxed);
            t.scored.fetch_add(n, Relaxed);
            if let Some(b) = &breeding {
                t.jobs.fetch_add(b.jobs.len() as u64, Relaxed);
                t.bred.fetch_add(n, Relaxed);
            }
        }
        let answer = self.worker.submit(children, breeding)?;
        let (sink, fitness) = (self.sink.clone(), self.fitness_name.clone());
        let (metrics, in_flight) = (self.metrics.clone(), self.in_flight.clone());
        let batch_filling = self.batcher.waiting();
        tokio::spawn(async move {
            let BatchResult {
                mut children,
                lost: mut bred_lost,
                result,
                mut times,
                model_inference_s,
                began,
                taken,
                steered,
            } = answer
                .await
                .unwrap_or_else(|_| BatchResult::not_run(&members));
            drop(permit);
            if let Some(problem) = steered.problems.first() {
                tracing::warn!(problems = steered.problems.len(), first = %problem, "gradient steps not taken");
            }
            for (index, genome) in steered.moved {
                children[index].genome = genome.into();
            }
            times.breed_s = children.iter().map(|c| c.breed_s).sum();
            let queue_wait_s = match arrivals {
                Arrivals::Rendered(arrived) => arrived
                    .iter()
                    .map(|a| began.saturating_duration_since(*a).as_secs_f64())
                    .collect(),
                Arrivals::Bred(queued) => {
                    let wait = taken.saturating_duration_since(queued).as_secs_f64();
                    vec![wait; children.len()]
                }
            };
            observe(
                &metrics,
                MetricsMsg::Batch(BatchTimings {
                    size: children.len(),
                    inference_s: times.inference_s,
                    model_inference_s,
                    fitness_s: times.fitness_s,
                    breed_s: children.iter().map(|c| c.breed_s).collect(),
                    queue_wait_s,
                    batch_filling,
                    inference_batches: BATCHES_IN_FLIGHT - in_flight.available_permits(),
                }),
            );
            let (scored, mut lost) = split_results(children, result, &fitness);
            lost.append(&mut bred_lost);
            lost.append(&mut earlier_losses);
            send_to(&sink, scored, lost, times);
        });
        Ok(())
    }

    fn send(&mut self, scored: Vec<ScoredChild>, lost: Vec<LostChild>, times: StageTimes) {
        send_to(&self.sink, scored, lost, times);
    }

    /// Runs every incomplete batch (linger) and sends pending losses.
    async fn flush(&mut self) -> Result<(), ActorProcessingErr> {
        for batch in self.batcher.flush() {
            self.run_batch(batch).await?;
        }
        let lost = self.batcher.take_lost();
        self.send(Vec::new(), lost, StageTimes::default());
        Ok(())
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
        let models = match args.prepared {
            Some(m) => m,
            None => {
                let models = args.models.clone();
                tokio::task::spawn_blocking(move || ModelSetup::prepare_all(&models)).await??
            }
        };
        let steerer = match args.steering {
            Some(steering) => Some(tokio::task::spawn_blocking(move || steering.prepare()).await??),
            None => None,
        };
        Ok(EvaluatorState {
            sink: Sink {
                kind: args.sink,
                archive: names::archive(&args.run),
                from: args.index as u32,
            },
            tally: args.tally,
            metrics: names::metrics(&args.run),
            in_flight: Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT)),
            fitness_name: args.fitness.name().to_owned(),
            worker: InferenceWorker::spawn(
                args.index,
                args.queue,
                models,
                args.models.iter().map(ModelSetup::output).collect(),
                args.fitness,
                args.encoding,
                steerer,
            )?,
            batcher: Batcher::new(args.batch_size),
            linger_token: 0,
            index: args.index,
            batches: 0,
            children: 0,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut EvaluatorState,
    ) -> Result<(), ActorProcessingErr> {
        tracing::info!(
            index = state.index,
            batches = state.batches,
            children = state.children,
            "evaluator stopped"
        );
        Ok(())
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
                    if let Some(batch) = state.batcher.account(child, Instant::now()) {
                        if batch.children.is_empty() {
                            let lost = state.batcher.take_lost();
                            state.send(Vec::new(), lost, StageTimes::default());
                        } else {
                            state.run_batch(batch).await?;
                        }
                    }
                }
                state.linger_token += 1;
                if !state.batcher.is_idle() {
                    let token = state.linger_token;
                    myself.send_after(LINGER, move || EvaluatorMsg::Linger(token));
                }
            }
            EvaluatorMsg::Breed(batch) => state.breed_batch(batch).await?,
            EvaluatorMsg::Linger(token) => {
                if token == state.linger_token {
                    state.flush().await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_probability_averages_softmaxed_logits_and_given_probabilities() {
        // Two images, two classes; model 0 gives logits, model 1 probabilities.
        let outputs = [0.0, 0.0, 2.0f32.ln(), 0.0, 0.5, 0.5, 0.9, 0.1];
        let p = mean_probabilities(
            &outputs,
            &[OutputKind::Logits, OutputKind::Probabilities],
            2,
        );
        let expect = [0.5, 0.5, (2.0 / 3.0 + 0.9) / 2.0, (1.0 / 3.0 + 0.1) / 2.0];
        for (a, b) in p.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{p:?}");
        }
    }
}
