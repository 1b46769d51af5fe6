//! The daemon's HTTP endpoints (axum): `/livez`, `/readyz`, `/status` (JSON), `/metrics`
//! (Prometheus text) and the live gallery (`/gallery`, and `/champions/{class}.png` rendered
//! on request from the champion's genome). The router is a plain function of [`AppState`],
//! which holds handles only (the progress channel with its shared champion snapshot, the
//! metrics registry, the encoding plugin, static run facts), so tests drive it without a
//! socket and the server shares nothing mutable with the actors.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::watch;

use pareidolia_core::EncodingPlugin;
use pareidolia_core::image_io::{Image, png_bytes};

use crate::Progress;
use crate::metrics::Metrics;

/// The gallery page: static HTML and script that read `/status` (see the file for why).
const GALLERY_HTML: &str = include_str!("gallery.html");

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
    /// Why `auto` chose the backend; absent for a named backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_selection: Option<String>,
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
    /// The encoding plugin, to render champions for the gallery.
    pub encoding: Arc<EncodingPlugin>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/gallery") }),
        )
        .route("/gallery", get(gallery))
        .route("/champions/{file}", get(champion_png))
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
    /// Generation the champion was born in.
    generation: Option<u64>,
    /// The champion's id (hex), which changes when the champion does.
    champion: Option<String>,
    /// Its image, a URL that changes with the champion (so browsers cache it safely).
    image: Option<String>,
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
        .map(|(class, label)| {
            let champion = p.champions.get(class).and_then(Option::as_ref);
            ClassStatus {
                class,
                label: label.clone(),
                confidence: champion.map(|c| c.score(class)),
                generation: champion.map(|c| c.generation),
                champion: champion.map(|c| format!("{:x}", c.id)),
                image: champion.map(|c| format!("/champions/{class}.png?id={:x}", c.id)),
            }
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

async fn gallery() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        GALLERY_HTML,
    )
        .into_response()
}

fn not_found(message: String) -> Response {
    (StatusCode::NOT_FOUND, message).into_response()
}

/// The current champion of a class as a PNG, rendered by the encoding plugin at the model's
/// input size. The ETag is the champion's id: a browser revalidating an unchanged champion
/// gets 304 without a render.
async fn champion_png(
    State(state): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(class) = file
        .strip_suffix(".png")
        .and_then(|c| c.parse::<usize>().ok())
    else {
        return not_found(format!(
            "no such image {file:?}; champions are /champions/<class>.png\n"
        ));
    };
    let champion = {
        let p = state.progress.borrow();
        match p.champions.get(class) {
            Some(Some(c)) => c.clone(),
            Some(None) => return not_found(format!("class {class} has no champion yet\n")),
            None => {
                return not_found(format!(
                    "no class {class}: the model has {} classes\n",
                    state.info.labels.len()
                ));
            }
        }
    };
    let etag = format!("\"{:x}\"", champion.id);
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let encoding = state.encoding.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        let canvas = encoding.canvas();
        let mut pixels = vec![0u8; encoding.image_len()];
        encoding
            .render(&champion.genome, &mut pixels)
            .map_err(|e| e.to_string())?;
        png_bytes(&Image {
            width: canvas.width,
            height: canvas.height,
            channels: canvas.channels,
            pixels,
        })
        .map_err(|e| e.to_string())
    })
    .await;
    match rendered {
        Ok(Ok(png)) => (
            [
                (header::CONTENT_TYPE, "image/png".to_owned()),
                (header::CACHE_CONTROL, "no-cache".to_owned()),
                (header::ETAG, etag),
            ],
            png,
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render the champion of class {class}: {e}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the champion of class {class} failed: {e}\n"),
        )
            .into_response(),
    }
}
