//! The daemon's HTTP endpoints (axum): `/livez`, `/readyz`, `/status` (JSON) and `/metrics`
//! (Prometheus text). The router is a plain function of [`AppState`], which holds handles
//! only (the progress channel, the metrics registry, static run facts), so tests drive it
//! without a socket and the server shares nothing mutable with the actors.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::watch;

use crate::Progress;
use crate::metrics::Metrics;

/// Facts about the run that do not change while it runs.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// The run folder.
    pub run_dir: String,
    /// Model name.
    pub model: String,
    /// sha256 of the model file.
    pub model_sha256: String,
    /// Backend name.
    pub backend: String,
    /// Device the backend runs on.
    pub device: String,
    /// Encoding plugin `name version`.
    pub encoding: String,
    /// Fitness plugin `name version`.
    pub fitness: String,
    /// Class labels, by index.
    pub labels: Vec<String>,
}

/// What the handlers share: handles, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Latest progress of the run.
    pub progress: watch::Receiver<Progress>,
    /// Static facts.
    pub info: Arc<RunInfo>,
    /// Prometheus metrics.
    pub metrics: Metrics,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Ready once the model and plugins are loaded (they are, or the server would not run) and a
/// first generation has been scored.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.progress.borrow().evaluations > 0 {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the first generation is still being evaluated\n",
        )
            .into_response()
    }
}

/// One class in `/status`.
#[derive(Debug, Serialize)]
struct ClassStatus {
    class: usize,
    label: String,
    confidence: Option<f32>,
}

/// The `/status` document.
#[derive(Debug, Serialize)]
struct Status {
    #[serde(flatten)]
    info: RunInfo,
    ready: bool,
    generation: u64,
    generations: u64,
    evaluations: u64,
    evaluations_per_s: f64,
    lost: u64,
    replacements: u64,
    elapsed_s: f64,
    median_confidence: f32,
    min_confidence: f32,
    mean_confidence: f32,
    last_checkpoint_generation: Option<u64>,
    last_checkpoint_unix_s: Option<f64>,
    classes: Vec<ClassStatus>,
}

async fn status(State(state): State<AppState>) -> Json<serde_json::Value> {
    let p = state.progress.borrow().clone();
    let info = (*state.info).clone();
    let classes = info
        .labels
        .iter()
        .enumerate()
        .map(|(class, label)| ClassStatus {
            class,
            label: label.clone(),
            confidence: p.confidences.get(class).copied().flatten(),
        })
        .collect();
    let status = Status {
        info,
        ready: p.evaluations > 0,
        generation: p.generation,
        generations: p.generations,
        evaluations: p.evaluations,
        evaluations_per_s: p.evaluations as f64 / p.elapsed_s.max(1e-9),
        lost: p.lost,
        replacements: p.replacements,
        elapsed_s: p.elapsed_s,
        median_confidence: p.stats.median,
        min_confidence: p.stats.min,
        mean_confidence: p.stats.mean,
        last_checkpoint_generation: p.last_checkpoint_generation,
        last_checkpoint_unix_s: p.last_checkpoint_unix_s,
        classes,
    };
    Json(serde_json::to_value(status).unwrap_or_default())
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render metrics: {e}\n"),
        )
            .into_response(),
    }
}
