//! MetricsActor: turns the archive's progress and the pipeline's timings into Prometheus
//! metrics. The other actors cast plain-data observations to it by name and never wait for
//! it; when no metrics actor runs (a plain `pareidolia run`), the casts go nowhere.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::Progress;
use crate::metrics::Metrics;

/// The actor.
#[derive(Debug, Default)]
pub struct MetricsActor;

/// Timings of one inference batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchTimings {
    /// Images in the batch.
    pub size: usize,
    /// Seconds in the backend (preprocessing included).
    pub inference_s: f64,
    /// Seconds in the fitness plugin.
    pub fitness_s: f64,
    /// Per child: seconds its mutator spent making it.
    pub breed_s: Vec<f64>,
    /// Per child: seconds from arriving at the evaluator to its batch's inference start.
    pub queue_wait_s: Vec<f64>,
    /// Rendered children waiting for their batches when this one was submitted.
    pub batch_filling: usize,
    /// Batches queued or running on the backend, this one included.
    pub inference_batches: usize,
}

/// Observations the metrics actor handles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetricsMsg {
    /// The archive's progress after a generation (or a checkpoint).
    Progress(Box<Progress>),
    /// One inference batch.
    Batch(BatchTimings),
    /// Seconds the archive spent inserting a generation.
    ArchiveInsert(f64),
    /// Children lost, by stage (`LossKind` names).
    Lost(Vec<String>),
    /// Children the archive handed out and has not got back.
    AwaitingResults(usize),
}

/// The metrics actor's name in a run.
pub fn metrics_name(run: &str) -> String {
    format!("{run}.metrics")
}

/// Casts an observation to the run's metrics actor, if there is one.
pub fn observe(metrics_actor: &str, msg: MetricsMsg) {
    if let Some(cell) = ractor::registry::where_is(metrics_actor) {
        let actor: ActorRef<MetricsMsg> = cell.into();
        // A metrics actor that is gone costs observations, never the run.
        let _ = actor.cast(msg);
    }
}

/// Start-up arguments.
pub struct MetricsArgs {
    /// The registry to feed.
    pub metrics: Metrics,
    /// The archive's progress channel, forwarded to the actor as messages.
    pub progress: Option<watch::Receiver<Progress>>,
}

impl Actor for MetricsActor {
    type Msg = MetricsMsg;
    type State = Metrics;
    type Arguments = MetricsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MetricsArgs,
    ) -> Result<Metrics, ActorProcessingErr> {
        if let Some(mut progress) = args.progress {
            tokio::spawn(async move {
                loop {
                    let p = progress.borrow_and_update().clone();
                    if myself.cast(MetricsMsg::Progress(Box::new(p))).is_err() {
                        return;
                    }
                    if progress.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
        Ok(args.metrics)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: MetricsMsg,
        metrics: &mut Metrics,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MetricsMsg::Progress(p) => metrics.observe_progress(&p),
            MetricsMsg::Batch(b) => {
                metrics.observe_batch(&b);
                metrics.set_queue_depth("batch_filling", b.batch_filling);
                metrics.set_queue_depth("inference_batches", b.inference_batches);
            }
            MetricsMsg::ArchiveInsert(s) => metrics.observe_insert(s),
            MetricsMsg::Lost(stages) => metrics.observe_losses(&stages),
            MetricsMsg::AwaitingResults(n) => metrics.set_queue_depth("awaiting_results", n),
        }
        Ok(())
    }
}
