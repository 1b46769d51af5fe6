//! Prometheus metrics of a run, fed from the archive's progress after every generation. Names
//! follow Prometheus conventions: `pareidolia_` prefix, base units, `_total` for counters.

use prometheus::{Encoder, Gauge, IntCounter, IntGauge, Registry, TextEncoder};
use tokio::sync::watch;

use crate::Progress;

/// The registry and the metrics in it (handles; cloning shares them).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    evaluations: IntCounter,
    lost: IntCounter,
    replacements: IntCounter,
    generation: IntGauge,
    median: Gauge,
    min: Gauge,
    mean: Gauge,
    last_checkpoint: Gauge,
    checkpoint_failures: IntCounter,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

impl Metrics {
    /// A fresh registry with the run's metrics (and the process collector on Linux).
    pub fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique");
        let counter = |n: &str, h: &str| register(&r, IntCounter::new(n, h).expect("valid name"));
        let gauge = |n: &str, h: &str| register(&r, Gauge::new(n, h).expect("valid name"));
        Self {
            evaluations: counter(
                "pareidolia_evaluations_total",
                "Children scored by the classifier.",
            ),
            lost: counter(
                "pareidolia_offspring_lost_total",
                "Children lost to plugin or backend errors.",
            ),
            replacements: counter(
                "pareidolia_champion_replacements_total",
                "Champion replacements (the paper's jumps).",
            ),
            generation: register(
                &r,
                IntGauge::new("pareidolia_generation", "Last completed generation.")
                    .expect("valid"),
            ),
            median: gauge(
                "pareidolia_champion_confidence_median",
                "Median champion confidence over classes (0-1).",
            ),
            min: gauge(
                "pareidolia_champion_confidence_min",
                "Minimum champion confidence over classes (0-1).",
            ),
            mean: gauge(
                "pareidolia_champion_confidence_mean",
                "Mean champion confidence over classes (0-1).",
            ),
            last_checkpoint: gauge(
                "pareidolia_last_checkpoint_timestamp_seconds",
                "Unix time of the newest checkpoint (0 before the first).",
            ),
            checkpoint_failures: counter(
                "pareidolia_checkpoint_failures_total",
                "Checkpoint writes that failed.",
            ),
            registry: r,
        }
    }

    /// Brings the metrics up to date with a progress report. Counters only move forward, by
    /// the difference since the last report.
    pub fn observe(&self, p: &Progress) {
        let bump = |c: &IntCounter, to: u64| c.inc_by(to.saturating_sub(c.get()));
        bump(&self.evaluations, p.evaluations);
        bump(&self.lost, p.lost);
        bump(&self.replacements, p.replacements);
        bump(&self.checkpoint_failures, p.checkpoint_failures);
        self.generation.set(p.generation as i64);
        self.median.set(p.stats.median as f64);
        self.min.set(p.stats.min as f64);
        self.mean.set(p.stats.mean as f64);
        self.last_checkpoint
            .set(p.last_checkpoint_unix_s.unwrap_or(0.0));
    }

    /// Follows a progress channel until it closes.
    pub async fn follow(self, mut progress: watch::Receiver<Progress>) {
        loop {
            let p = progress.borrow_and_update().clone();
            self.observe(&p);
            if progress.changed().await.is_err() {
                return;
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
