//! MetricsActor: turns the archive's progress and the pipeline's timings into Prometheus
//! metrics. The other actors cast plain-data observations to it by name and never wait for
//! it ([`observe`](crate::map_elites::messages::observe)); when no metrics actor runs (a plain
//! `pareidolia run`), the casts go nowhere.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;

use crate::map_elites::messages::MetricsMsg;
use crate::metrics::Metrics;
use crate::run::outcome::Progress;

/// The actor.
#[derive(Debug, Default)]
pub struct MetricsActor;

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
            MetricsMsg::Lost(kinds) => metrics.observe_losses(&kinds),
            MetricsMsg::AwaitingResults(n) => metrics.set_queue_depth("awaiting_results", n),
            MetricsMsg::Rejected(causes) => metrics.observe_rejected(&causes),
            MetricsMsg::Reissued(cause) => metrics.observe_reissue(cause),
        }
        Ok(())
    }
}
