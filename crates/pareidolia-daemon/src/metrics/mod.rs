//! The Prometheus registry of a run and every metric in it (catalogue: `docs/metrics.md`).
//! Names follow Prometheus conventions: `pareidolia_` prefix, base units, `_total` for
//! counters, `_info` for metadata; label values come from bounded sets (stages, queues,
//! thresholds, the run's classes and plugins). The [`MetricsActor`](actor::MetricsActor)
//! feeds it; the HTTP server only renders it.

pub mod actor;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use pareidolia_core::RunIdentity;

use crate::cluster::table::NodeStatus;
use crate::map_elites::messages::{BatchTimings, LossKind, NodeRole, ReissueCause, Rejection};
use crate::run::outcome::Progress;

/// The causes of `pareidolia_cluster_refused_total`.
pub const REFUSAL_CAUSES: [&str; 4] = ["unauthenticated", "version", "identity", "results"];

/// When checkpoints are due, for `pareidolia_checkpoint_interval_seconds`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CheckpointPolicy {
    /// Checkpoint every this many generations (0 = not by count).
    pub every_generations: u64,
    /// Checkpoint every this many seconds (0 = not by time).
    pub every_seconds: f64,
    /// Whether the run writes checkpoints at all.
    pub checkpointing: bool,
}

/// What the metrics need to know of the run besides its progress.
#[derive(Debug)]
struct Facts {
    labels: Vec<String>,
    models: Vec<String>,
    encoding: String,
    fitness: String,
    policy: CheckpointPolicy,
}

/// Pipeline stages timed by `pareidolia_stage_duration_seconds`.
pub const STAGES: [&str; 5] = [
    "breed",
    "queue_wait",
    "inference",
    "fitness",
    "archive_insert",
];
/// Queues measured by `pareidolia_queue_depth`.
pub const QUEUES: [&str; 3] = ["awaiting_results", "batch_filling", "inference_batches"];
/// Thresholds of `pareidolia_classes_at_or_above_confidence` (the archive's own).
pub const THRESHOLD_LABELS: [&str; 4] = ["0.5", "0.9", "0.99", "0.9999"];

/// The registry and handles to every metric in it (cloning shares them).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    facts: std::sync::Arc<Facts>,
    evaluations: IntCounter,
    gradient_steps: IntCounter,
    forward_equivalents: IntCounter,
    lost: IntCounter,
    replacements: IntCounter,
    checkpoint_failures: IntCounter,
    plugin_errors: IntCounterVec,
    generation: IntGauge,
    generations_planned: IntGauge,
    median: Gauge,
    min: Gauge,
    mean: Gauge,
    per_class: GaugeVec,
    at_or_above: IntGaugeVec,
    qd_score: Gauge,
    coverage: Gauge,
    classes: IntGauge,
    stage_seconds: HistogramVec,
    model_inference_seconds: HistogramVec,
    batch_size: Histogram,
    queue_depth: IntGaugeVec,
    last_checkpoint: Gauge,
    checkpoint_interval: Gauge,
    reissues: IntCounterVec,
    rejected: IntCounterVec,
    nodes: IntGaugeVec,
    node_up: IntGaugeVec,
    node_silence: GaugeVec,
    node_work: IntGaugeVec,
    cluster_refused: IntCounterVec,
}

fn register<T: Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone()))
        .expect("metric names are unique and valid");
    m
}

/// Latency buckets from 10 µs to 60 s: per-child rendering of a 28x28 digit takes
/// microseconds, an ImageNet batch on CPU seconds.
fn latency_buckets() -> Vec<f64> {
    vec![
        1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 60.0,
    ]
}

impl Metrics {
    /// A fresh registry with the run's metrics, the process collector (on Linux) and the
    /// `_info` series of the run's identity (one `model` and `backend` series per model).
    pub fn new(identity: &RunIdentity, policy: CheckpointPolicy) -> Self {
        let facts = Facts {
            labels: identity.labels.clone(),
            models: identity.models.iter().map(|m| m.name.clone()).collect(),
            encoding: identity.encoding.name.clone(),
            fitness: identity.fitness.name.clone(),
            policy,
        };
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique");
        let counter = |n: &str, h: &str| register(&r, IntCounter::new(n, h).expect("valid"));
        let gauge = |n: &str, h: &str| register(&r, Gauge::new(n, h).expect("valid"));
        let int_gauge = |n: &str, h: &str| register(&r, IntGauge::new(n, h).expect("valid"));
        let info = |n: &str, h: &str, names: &[&str]| {
            register(&r, IntGaugeVec::new(Opts::new(n, h), names).expect("valid"))
        };
        info(
            "pareidolia_build_info",
            "Pareidolia's version (always 1).",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        let backend_info = info(
            "pareidolia_backend_info",
            "The inference backend that runs the model, the one the config asked for, and its device (always 1).",
            &["backend", "requested", "device"],
        );
        let model_info = info(
            "pareidolia_model_info",
            "The classifier and the sha256 of its ONNX file (always 1).",
            &["model", "sha256"],
        );
        for m in &identity.models {
            let requested = m.requested_backend.as_str();
            backend_info
                .with_label_values(&[
                    m.backend.as_deref().unwrap_or(requested),
                    requested,
                    m.device.as_deref().unwrap_or(""),
                ])
                .set(1);
            model_info.with_label_values(&[&m.name, &m.sha256]).set(1);
        }
        let plugins = info(
            "pareidolia_plugin_info",
            "The encoding and fitness plugins and their versions (always 1).",
            &["kind", "name", "version"],
        );
        for (kind, p) in [
            ("encoding", &identity.encoding),
            ("fitness", &identity.fitness),
        ] {
            plugins
                .with_label_values(&[kind, &p.name, &p.version])
                .set(1);
        }

        let plugin_errors = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "pareidolia_plugin_errors_total",
                    "Children lost to a plugin error, by plugin and operation.",
                ),
                &["plugin", "kind"],
            )
            .expect("valid"),
        );
        // Every series exists from the start, so rates and alerts see zeros, not gaps.
        for kind in LossKind::ALL {
            if kind.is_encoding() {
                plugin_errors.with_label_values(&[&facts.encoding, kind.as_str()]);
            } else if kind.is_fitness() {
                plugin_errors.with_label_values(&[&facts.fitness, kind.as_str()]);
            }
        }
        let at_or_above = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "pareidolia_classes_at_or_above_confidence",
                    "Classes whose champion's confidence is at least the threshold.",
                ),
                &["threshold"],
            )
            .expect("valid"),
        );
        for t in THRESHOLD_LABELS {
            at_or_above.with_label_values(&[t]);
        }
        let stage_seconds = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "pareidolia_stage_duration_seconds",
                    "Time per pipeline stage: breed (crossover, mutation and rendering, per child), queue_wait (a rendered child waiting for its batch to start inference), inference and fitness (per batch), archive_insert (per generation).",
                )
                .buckets(latency_buckets()),
                &["stage"],
            )
            .expect("valid"),
        );
        for s in STAGES {
            stage_seconds.with_label_values(&[s]);
        }
        let model_inference_seconds = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "pareidolia_model_inference_duration_seconds",
                    "Inference time per batch of each model of the run (their sum is the inference stage).",
                )
                .buckets(latency_buckets()),
                &["model"],
            )
            .expect("valid"),
        );
        for m in &facts.models {
            model_inference_seconds.with_label_values(&[m]);
        }
        let queue_depth = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "pareidolia_queue_depth",
                    "Work waiting: awaiting_results (children the archive handed out and has not got back), batch_filling (rendered children waiting for their batch), inference_batches (batches queued or running on the backend).",
                ),
                &["queue"],
            )
            .expect("valid"),
        );
        for q in QUEUES {
            queue_depth.with_label_values(&[q]);
        }
        let counter_vec = |n: &str, h: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(Opts::new(n, h), labels).expect("valid"),
            )
        };
        let gauge_vec = |n: &str, h: &str, labels: &[&str]| {
            register(
                &r,
                IntGaugeVec::new(Opts::new(n, h), labels).expect("valid"),
            )
        };
        let reissues = counter_vec(
            "pareidolia_reissues_total",
            "Times the archive sent the work in flight out again, by cause: actor_restart (a local mutator or evaluator restarted), node_lost (a worker node left with work in flight).",
            &["cause"],
        );
        for c in ReissueCause::ALL {
            reissues.with_label_values(&[c.as_str()]);
        }
        let rejected = counter_vec(
            "pareidolia_results_rejected_total",
            "Children in evaluators' results the archive refused, by cause: unrequested (never handed out), misrouted (not sent to that evaluator), malformed (wrong score count, non-finite score, inconsistent id).",
            &["cause"],
        );
        for c in Rejection::ALL {
            rejected.with_label_values(&[c.as_str()]);
        }
        let nodes = gauge_vec(
            "pareidolia_cluster_nodes",
            "Worker nodes in the run now, by role (daemon --cluster-listen).",
            &["role"],
        );
        let cluster_refused = counter_vec(
            "pareidolia_cluster_refused_total",
            "Worker nodes and messages the daemon refused, by cause: unauthenticated (a wrong cookie, not a pareidolia worker), version, identity (other models or plugins), results (results from an evaluator slot no joined node holds).",
            &["cause"],
        );
        for c in REFUSAL_CAUSES {
            cluster_refused.with_label_values(&[c]);
        }
        let node_silence = register(
            &r,
            GaugeVec::new(
                Opts::new(
                    "pareidolia_node_silence_seconds",
                    "Seconds since each worker node was last heard from (heartbeats every 2 s).",
                ),
                &["node", "role", "address"],
            )
            .expect("valid"),
        );
        Self {
            reissues,
            rejected,
            nodes,
            node_up: gauge_vec(
                "pareidolia_node_up",
                "1 while a worker node is in the run, 0 once it left (kept until the daemon ends).",
                &["node", "role", "address"],
            ),
            node_silence,
            node_work: gauge_vec(
                "pareidolia_node_work",
                "What each worker node did since it joined: jobs and bred (its mutator, as it reports), batches (its evaluator, as it reports) and scored (children of its results the daemon forwarded to the archive, counted by the daemon).",
                &["node", "kind"],
            ),
            cluster_refused,
            evaluations: counter(
                "pareidolia_evaluations_total",
                "Children scored by the classifier.",
            ),
            gradient_steps: counter(
                "pareidolia_gradient_steps_total",
                "Gradient steps the gradient operator ([search.gradient]) took on children before they were scored: one forward and one backward pass of one image each (0 without the operator).",
            ),
            forward_equivalents: counter(
                "pareidolia_forward_equivalents_total",
                "Forward-pass equivalents spent: evaluations plus three per gradient step (a backward pass counted as two forward passes); equals the evaluations without the gradient operator.",
            ),
            lost: counter(
                "pareidolia_offspring_lost_total",
                "Children lost to plugin, backend or actor errors.",
            ),
            replacements: counter(
                "pareidolia_champion_replacements_total",
                "Champion replacements (the paper's jumps).",
            ),
            checkpoint_failures: counter(
                "pareidolia_checkpoint_failures_total",
                "Checkpoint writes that failed.",
            ),
            plugin_errors,
            generation: int_gauge(
                "pareidolia_generation",
                "Last completed generation (0 = the initial population).",
            ),
            generations_planned: int_gauge(
                "pareidolia_generations_planned",
                "Generations the run is configured to reach.",
            ),
            median: gauge(
                "pareidolia_champion_confidence_median",
                "Median champion confidence over all classes (empty classes count 0).",
            ),
            min: gauge(
                "pareidolia_champion_confidence_min",
                "Minimum champion confidence over all classes.",
            ),
            mean: gauge(
                "pareidolia_champion_confidence_mean",
                "Mean champion confidence over all classes.",
            ),
            per_class: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "pareidolia_champion_confidence",
                        "Confidence of each class's champion (filled classes only).",
                    ),
                    &["class", "label"],
                )
                .expect("valid"),
            ),
            at_or_above,
            qd_score: gauge(
                "pareidolia_qd_score",
                "QD-score: the sum of the champions' confidences over all classes.",
            ),
            coverage: gauge(
                "pareidolia_archive_coverage_ratio",
                "Fraction of classes that have a champion.",
            ),
            classes: int_gauge(
                "pareidolia_archive_classes",
                "Classes (cells) in the archive.",
            ),
            stage_seconds,
            model_inference_seconds,
            batch_size: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("pareidolia_batch_size", "Images per inference batch.")
                        .buckets(vec![
                            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                        ]),
                )
                .expect("valid"),
            ),
            queue_depth,
            last_checkpoint: gauge(
                "pareidolia_last_checkpoint_timestamp_seconds",
                "Unix time of the newest checkpoint (0 before the first).",
            ),
            checkpoint_interval: gauge(
                "pareidolia_checkpoint_interval_seconds",
                "Expected seconds between checkpoints: the configured interval, or the configured generation count times the mean generation time, whichever is shorter (0 = no checkpoints).",
            ),
            registry: r,
            facts: std::sync::Arc::new(facts),
        }
    }

    /// Brings the run-level metrics up to date with a progress report. Counters only move
    /// forward, by the difference since the last report (a resumed run starts them at the
    /// checkpoint's totals).
    pub fn observe_progress(&self, p: &Progress) {
        let bump = |c: &IntCounter, to: u64| c.inc_by(to.saturating_sub(c.get()));
        bump(&self.evaluations, p.evaluations);
        bump(&self.gradient_steps, p.times.gradient_steps);
        bump(
            &self.forward_equivalents,
            p.times.forward_equivalents(p.evaluations),
        );
        bump(&self.lost, p.lost);
        bump(&self.replacements, p.replacements);
        bump(&self.checkpoint_failures, p.checkpoint_failures);
        self.generation.set(p.generation as i64);
        self.generations_planned.set(p.generations as i64);
        self.median.set(p.stats.median as f64);
        self.min.set(p.stats.min as f64);
        self.mean.set(p.stats.mean as f64);
        self.qd_score.set(p.stats.qd_score);
        self.classes.set(p.stats.cells as i64);
        self.coverage
            .set(p.stats.filled as f64 / p.stats.cells.max(1) as f64);
        for (label, count) in THRESHOLD_LABELS.iter().zip(p.stats.at_least) {
            self.at_or_above
                .with_label_values(&[label])
                .set(count as i64);
        }
        for (class, confidence) in p.confidences().enumerate() {
            if let Some(c) = confidence {
                let label = self.facts.labels.get(class).map_or("", String::as_str);
                self.per_class
                    .with_label_values(&[&class.to_string(), label])
                    .set(c as f64);
            }
        }
        self.last_checkpoint
            .set(p.last_checkpoint_unix_s.unwrap_or(0.0));
        self.checkpoint_interval.set(self.checkpoint_interval(p));
    }

    fn checkpoint_interval(&self, p: &Progress) -> f64 {
        let f = &self.facts.policy;
        if !f.checkpointing {
            return 0.0;
        }
        let by_time = (f.every_seconds > 0.0).then_some(f.every_seconds);
        let by_count = (f.every_generations > 0 && p.generation > 0)
            .then(|| f.every_generations as f64 * p.elapsed_s / p.generation as f64);
        match (by_time, by_count) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => 0.0,
        }
    }

    /// One inference batch: its size, its inference and fitness seconds, and per child the
    /// seconds spent breeding and waiting for the batch.
    pub fn observe_batch(&self, b: &BatchTimings) {
        self.batch_size.observe(b.size as f64);
        let stage = |s: &str| self.stage_seconds.with_label_values(&[s]);
        stage("inference").observe(b.inference_s);
        for (model, &s) in self.facts.models.iter().zip(&b.model_inference_s) {
            self.model_inference_seconds
                .with_label_values(&[model])
                .observe(s);
        }
        stage("fitness").observe(b.fitness_s);
        let breed = stage("breed");
        for &s in &b.breed_s {
            breed.observe(s);
        }
        let wait = stage("queue_wait");
        for &s in &b.queue_wait_s {
            wait.observe(s);
        }
    }

    /// Seconds the archive spent inserting one generation.
    pub fn observe_insert(&self, seconds: f64) {
        self.stage_seconds
            .with_label_values(&["archive_insert"])
            .observe(seconds);
    }

    /// Children lost, by stage; plugin stages count as plugin errors of their plugin.
    pub fn observe_losses(&self, kinds: &[LossKind]) {
        for &kind in kinds {
            let plugin = if kind.is_encoding() {
                &self.facts.encoding
            } else if kind.is_fitness() {
                &self.facts.fitness
            } else {
                continue;
            };
            self.plugin_errors
                .with_label_values(&[plugin, kind.as_str()])
                .inc();
        }
    }

    /// Sets a queue's depth (one of [`QUEUES`]).
    pub fn set_queue_depth(&self, queue: &str, depth: usize) {
        self.queue_depth
            .with_label_values(&[queue])
            .set(depth as i64);
    }

    /// Counts children the archive refused.
    pub fn observe_rejected(&self, causes: &[Rejection]) {
        for c in causes {
            self.rejected.with_label_values(&[c.as_str()]).inc();
        }
    }

    /// Counts a re-issue.
    pub fn observe_reissue(&self, cause: ReissueCause) {
        self.reissues.with_label_values(&[cause.as_str()]).inc();
    }

    /// Brings the worker-node series up to date with the daemon's node table (at scrape),
    /// and the counts of what it refused, by cause.
    pub fn observe_nodes(&self, nodes: &[NodeStatus], refused: &[(&str, u64)]) {
        for role in [NodeRole::Evaluator, NodeRole::Mutator, NodeRole::Both] {
            let live = nodes
                .iter()
                .filter(|n| n.connected && n.role == role)
                .count();
            self.nodes
                .with_label_values(&[role.as_str()])
                .set(live as i64);
        }
        for n in nodes {
            let labels = [n.name.as_str(), n.role.as_str(), n.address.as_str()];
            self.node_up
                .with_label_values(&labels)
                .set(i64::from(n.connected));
            if n.connected {
                self.node_silence.with_label_values(&labels).set(n.silent_s);
            } else {
                let _ = self.node_silence.remove_label_values(&labels);
            }
            for (kind, v) in [
                ("jobs", n.work.jobs),
                ("bred", n.work.bred),
                ("batches", n.work.batches),
                ("scored", n.scored),
            ] {
                self.node_work
                    .with_label_values(&[&n.name, kind])
                    .set(v as i64);
            }
        }
        for (cause, v) in refused {
            let c = self.cluster_refused.with_label_values(&[cause]);
            c.inc_by(v.saturating_sub(c.get()));
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> RunIdentity {
        RunIdentity::sample(&["zero", "one"])
    }

    fn policy() -> CheckpointPolicy {
        CheckpointPolicy {
            every_generations: 10,
            every_seconds: 60.0,
            checkpointing: true,
        }
    }

    #[test]
    fn plugin_errors_go_to_the_plugin_that_made_them() {
        let m = Metrics::new(&identity(), policy());
        m.observe_losses(&[LossKind::Mutate, LossKind::Mutate, LossKind::NonFiniteScore]);
        m.observe_losses(&[LossKind::Inference, LossKind::Actor]);
        let text = m.render().unwrap();
        assert!(
            text.contains(r#"pareidolia_plugin_errors_total{kind="mutate",plugin="direct"} 2"#)
        );
        assert!(text.contains(
            r#"pareidolia_plugin_errors_total{kind="non_finite_score",plugin="confidence"} 1"#
        ));
        assert!(
            text.contains(r#"pareidolia_plugin_errors_total{kind="render",plugin="direct"} 0"#)
        );
    }

    #[test]
    fn checkpoint_interval_is_the_shorter_of_time_and_generations() {
        let m = Metrics::new(&identity(), policy());
        let mut p = Progress {
            generation: 20,
            elapsed_s: 10.0,
            ..Progress::default()
        };
        // 10 generations at 0.5 s each = 5 s, shorter than 60 s.
        assert_eq!(m.checkpoint_interval(&p), 5.0);
        p.elapsed_s = 1000.0;
        assert_eq!(m.checkpoint_interval(&p), 60.0);
        let off = Metrics::new(
            &identity(),
            CheckpointPolicy {
                checkpointing: false,
                ..policy()
            },
        );
        assert_eq!(off.checkpoint_interval(&p), 0.0);
    }

    #[test]
    fn per_class_series_carry_the_label_and_appear_once_filled() {
        let m = Metrics::new(&identity(), policy());
        let champion = pareidolia_core::Champion {
            id: 7,
            generation: 0,
            genome: std::sync::Arc::from(&[][..]),
            scores: std::sync::Arc::from(&[0.0, 0.75][..]),
            probabilities: std::sync::Arc::from(&[][..]),
        };
        let p = Progress {
            champions: std::sync::Arc::new(vec![None, Some(champion)]),
            ..Progress::default()
        };
        m.observe_progress(&p);
        let text = m.render().unwrap();
        assert!(text.contains(r#"pareidolia_champion_confidence{class="1",label="one"} 0.75"#));
        assert!(!text.contains(r#"class="0""#));
    }

    #[test]
    fn every_model_has_its_info_and_inference_series() {
        let mut id = identity();
        let mut second = id.models[0].clone();
        second.name = "n".into();
        second.sha256 = "cd".into();
        second.backend = Some("ort-cpu".into());
        second.requested_backend = pareidolia_core::BackendChoice::OrtCpu;
        id.models.push(second);
        let m = Metrics::new(&id, policy());
        m.observe_batch(&BatchTimings {
            size: 4,
            inference_s: 0.003,
            model_inference_s: vec![0.001, 0.002],
            ..BatchTimings::default()
        });
        let text = m.render().unwrap();
        for line in [
            r#"pareidolia_model_info{model="m",sha256="ab"} 1"#,
            r#"pareidolia_model_info{model="n",sha256="cd"} 1"#,
            r#"pareidolia_backend_info{backend="tract",device="cpu",requested="auto"} 1"#,
            r#"pareidolia_backend_info{backend="ort-cpu",device="cpu",requested="ort-cpu"} 1"#,
            r#"pareidolia_model_inference_duration_seconds_sum{model="m"} 0.001"#,
            r#"pareidolia_model_inference_duration_seconds_sum{model="n"} 0.002"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
