//! The daemon's HTTP endpoints (axum): `/livez`, `/readyz`, `/status` (JSON), `/metrics`
//! (Prometheus text) and the live gallery (`/gallery`, and `/champions/{class}.png` rendered
//! on request from the champion's genome). The router is a plain function of [`AppState`],
//! which holds handles only (the progress channel with its shared champion snapshot, the
//! metrics registry, a [`ChampionRenderer`] — the encoding plugin in a run — and the run's
//! identity), so tests drive it without a socket and the server shares nothing mutable with
//! the actors.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::watch;

use pareidolia_core::image_io::{Image, png_bytes};
use pareidolia_core::{EncodingPlugin, ModelIdentity, RunIdentity};

use crate::cluster::keeper::ClusterView;
use crate::cluster::table::NodeStatus;
use crate::metrics::Metrics;
use crate::run::outcome::Progress;

/// The gallery page: static HTML and script that read `/status` (see the file for why).
const GALLERY_HTML: &str = include_str!("gallery.html");

/// Renders a champion's genome as the image the model scored (the run's encoding plugin).
pub trait ChampionRenderer: Send + Sync + 'static {
    /// The image of `genome`, or why it cannot be rendered.
    fn render(&self, genome: &[u8]) -> Result<Image, String>;
}

impl ChampionRenderer for EncodingPlugin {
    fn render(&self, genome: &[u8]) -> Result<Image, String> {
        let canvas = self.canvas();
        let mut pixels = vec![0u8; self.image_len()];
        EncodingPlugin::render(self, genome, &mut pixels).map_err(|e| e.to_string())?;
        Ok(Image {
            width: canvas.width,
            height: canvas.height,
            channels: canvas.channels,
            pixels,
        })
    }
}

/// What the handlers share: handles, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Latest progress of the run.
    pub progress: watch::Receiver<Progress>,
    /// The run folder, as `/status` names it.
    pub run_dir: Arc<str>,
    /// The run's models, plugins and labels.
    pub identity: Arc<RunIdentity>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Renders champions for the gallery.
    pub renderer: Arc<dyn ChampionRenderer>,
    /// Which `Host` headers are answered.
    pub hosts: HostPolicy,
    /// The worker nodes, when the daemon listens for them (`--cluster-listen`).
    pub cluster: Option<ClusterView>,
}

/// Which `Host` headers the endpoints answer: any IP address (v4, or v6 in brackets) and
/// `localhost`, with the listener's port or none, and the names in `http.allowed_hosts`.
/// Every other name is refused, which defeats DNS rebinding: a page on `evil.example` that
/// points its name at 127.0.0.1 still sends `Host: evil.example`. A request without a `Host`
/// header (HTTP/1.0) cannot come from such a page and is answered.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// The listener's port.
    pub port: u16,
    /// `http.allowed_hosts`, lowercase.
    pub allowed: Arc<[String]>,
}

impl HostPolicy {
    /// The policy for a listener on `port` with `http.allowed_hosts`.
    pub fn new(port: u16, allowed: &[String]) -> Self {
        Self {
            port,
            allowed: allowed.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a request with `Host: host` is answered.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self
            .allowed
            .iter()
            .any(|a| *a == host || host_and_port(&host).0 == a.as_str())
        {
            return true;
        }
        let (name, port) = host_and_port(&host);
        let port_ok = match port {
            None => true,
            Some(p) => p.parse::<u16>() == Ok(self.port),
        };
        let name_ok = name == "localhost"
            || name.parse::<std::net::Ipv4Addr>().is_ok()
            || name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok());
        port_ok && name_ok
    }
}

/// `name` and `port` of a `Host` header (`[::1]:80` → `[::1]`, `80`).
fn host_and_port(host: &str) -> (&str, Option<&str>) {
    let after_name = if host.starts_with('[') {
        host.find(']').map_or(host.len(), |i| i + 1)
    } else {
        host.find(':').unwrap_or(host.len())
    };
    let (name, rest) = host.split_at(after_name);
    (name, rest.strip_prefix(':'))
}

/// Refuses requests whose `Host` header [`HostPolicy`] does not allow, with 421 and what to do.
async fn check_host(
    State(policy): State<HostPolicy>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = match request.headers().get(header::HOST) {
        None => return next.run(request).await,
        Some(h) => h.to_str().unwrap_or(""),
    };
    if policy.allows(host) {
        return next.run(request).await;
    }
    let name = host_and_port(host).0;
    (
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "refused: this daemon does not answer to the host name {host:?} (a guard against \
             DNS rebinding); use its IP address or localhost, or add {name:?} to \
             http.allowed_hosts in the run's config\n"
        ),
    )
        .into_response()
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
        .layer(axum::middleware::from_fn_with_state(
            state.hosts.clone(),
            check_host,
        ))
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

/// The `/status` document. `model`, `model_sha256`, `backend`, `device` and
/// `backend_selection` are the first model's, for clients of single-model runs; `models`
/// lists every model.
#[derive(Debug, Serialize)]
struct Status<'a> {
    run_dir: &'a str,
    /// The run's id, as its checkpoints and `run-id` file record it.
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<&'a str>,
    model: &'a str,
    model_sha256: &'a str,
    backend: &'a str,
    device: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_selection: Option<&'a str>,
    /// `name version`.
    encoding: String,
    /// `name version`.
    fitness: String,
    labels: &'a [String],
    models: &'a [ModelIdentity],
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
    /// The stop conditions and the one reached (absent without conditions).
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<pareidolia_core::StopStatus>,
    classes: Vec<ClassStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped_classes: Vec<usize>,
    /// Worker nodes that joined the run (absent without `--cluster-listen`).
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<NodeStatus>>,
}

async fn status(State(state): State<AppState>) -> Json<serde_json::Value> {
    let nodes = match &state.cluster {
        Some(cluster) => Some(cluster.nodes().await),
        None => None,
    };
    let p = state.progress.borrow().clone();
    let id = &*state.identity;
    let model = id.primary();
    let plugin = |p: &pareidolia_core::summary::PluginSummary| format!("{} {}", p.name, p.version);
    let classes = (0..id.classes())
        .filter(|&class| id.is_cell(class))
        .map(|class| {
            let label = id.label(class);
            let champion = p.champions.get(class).and_then(Option::as_ref);
            ClassStatus {
                class,
                label,
                confidence: champion.map(|c| c.score(class)),
                generation: champion.map(|c| c.generation),
                champion: champion.map(|c| format!("{:x}", c.id)),
                image: champion.map(|c| format!("/champions/{class}.png?id={:x}", c.id)),
            }
        })
        .collect();
    let status = Status {
        run_dir: &state.run_dir,
        run_id: id.run_id.as_deref(),
        model: &model.name,
        model_sha256: &model.sha256,
        backend: model
            .backend
            .as_deref()
            .unwrap_or(model.requested_backend.as_str()),
        device: model.device.as_deref().unwrap_or_default(),
        backend_selection: model.backend_selection.as_deref(),
        encoding: plugin(&id.encoding),
        fitness: plugin(&id.fitness),
        labels: &id.labels,
        models: &id.models,
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
        stop: p.stop.clone(),
        classes,
        skipped_classes: id.skipped_classes(),
        nodes,
    };
    Json(serde_json::to_value(status).unwrap_or_default())
}

async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(cluster) = &state.cluster {
        state
            .metrics
            .observe_nodes(&cluster.nodes().await, &cluster.counters.refusals());
    }
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
                    state.identity.classes()
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
    let renderer = state.renderer.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        png_bytes(&renderer.render(&champion.genome)?).map_err(|e| e.to_string())
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

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::{Method, Request};
    use pareidolia_core::Champion;
    use tower::ServiceExt as _;

    use super::*;
    use crate::metrics::CheckpointPolicy;

    /// Renders a genome as a 2x1 grey image of its first two bytes; refuses an empty one.
    struct Bytes;

    impl ChampionRenderer for Bytes {
        fn render(&self, genome: &[u8]) -> Result<Image, String> {
            match genome {
                [a, b, ..] => Ok(Image {
                    width: 2,
                    height: 1,
                    channels: 1,
                    pixels: vec![*a, *b],
                }),
                _ => Err("genome too short".into()),
            }
        }
    }

    fn identity(classes: usize) -> RunIdentity {
        let labels: Vec<String> = (0..classes).map(|c| format!("label{c}")).collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let mut identity = RunIdentity::sample(&labels);
        identity.models[0].backend_selection = Some("cuda refused".into());
        identity
    }

    fn champion(id: u64, genome: &[u8], scores: &[f32]) -> Option<Champion> {
        Some(Champion {
            id,
            generation: 3,
            genome: Arc::from(genome),
            scores: Arc::from(scores),
            probabilities: Arc::from(&[][..]),
        })
    }

    /// A router over a 3-class run: class 0 has a champion, class 1 none, class 2 one that
    /// cannot be rendered. `evaluations` 0 means nothing is scored yet.
    fn app(evaluations: u64) -> Router {
        app_with_cells(evaluations, None)
    }

    /// [`app`] with the run's cells restricted (`archive.classes`).
    fn app_with_cells(evaluations: u64, cells: Option<Vec<usize>>) -> Router {
        let mut id = identity(3);
        id.cells = cells;
        let progress = Progress {
            generation: 3,
            generations: 10,
            evaluations,
            elapsed_s: 2.0,
            champions: Arc::new(vec![
                champion(0x2a, &[10, 20], &[0.9, 0.05, 0.05]),
                None,
                champion(0x2b, &[], &[0.1, 0.1, 0.8]),
            ]),
            ..Progress::default()
        };
        let (_tx, rx) = watch::channel(progress);
        router(AppState {
            progress: rx,
            run_dir: "runs/x".into(),
            metrics: Metrics::new(&id, CheckpointPolicy::default()),
            identity: Arc::new(id),
            renderer: Arc::new(Bytes),
            hosts: HostPolicy::new(9464, &["pareidolia.lab".to_owned()]),
            cluster: None,
        })
    }

    async fn get(
        app: Router,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        request(app, Method::GET, uri, headers).await
    }

    async fn request(
        app: Router,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = to_bytes(body, 1 << 20).await.unwrap().to_vec();
        (parts.status, parts.headers, bytes)
    }

    fn content_type(h: &HeaderMap) -> &str {
        h.get(header::CONTENT_TYPE).unwrap().to_str().unwrap()
    }

    #[tokio::test]
    async fn health_and_readiness() {
        let (status, _, body) = get(app(0), "/livez", &[]).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok\n"[..]));
        let (status, _, body) = get(app(0), "/readyz", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            String::from_utf8(body)
                .unwrap()
                .contains("still being evaluated")
        );
        let (status, _, _) = get(app(200), "/readyz", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn status_lists_the_identity_and_every_class() {
        let (status, headers, body) = get(app(200), "/status", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type(&headers), "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["run_dir"], "runs/x");
        assert_eq!(v["model"], "m");
        assert_eq!(v["model_sha256"], "ab");
        assert_eq!(v["backend"], "tract");
        assert_eq!(v["device"], "cpu");
        assert_eq!(v["backend_selection"], "cuda refused");
        assert_eq!(v["encoding"], "direct 0.1.0");
        assert_eq!(v["fitness"], "confidence 0.1.0");
        assert_eq!(v["models"][0]["requested_backend"], "auto");
        assert_eq!(v["models"].as_array().unwrap().len(), 1);
        assert_eq!(v["ready"], true);
        assert_eq!(v["evaluations_per_s"], 100.0);
        let classes = v["classes"].as_array().unwrap();
        assert_eq!(classes.len(), 3);
        assert_eq!(classes[0]["label"], "label0");
        assert!((classes[0]["confidence"].as_f64().unwrap() - 0.9).abs() < 1e-6);
        assert_eq!(classes[0]["champion"], "2a");
        assert_eq!(classes[0]["image"], "/champions/0.png?id=2a");
        assert!(classes[1]["confidence"].is_null() && classes[1]["image"].is_null());
        assert!(v.get("skipped_classes").is_none(), "{v}");
    }

    #[tokio::test]
    async fn status_lists_only_the_cells_when_the_run_skips_classes() {
        let (_, _, body) = get(app_with_cells(200, Some(vec![0, 2])), "/status", &[]).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let classes: Vec<u64> = v["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["class"].as_u64().unwrap())
            .collect();
        assert_eq!(classes, [0, 2]);
        assert_eq!(v["skipped_classes"], serde_json::json!([1]));
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let (status, headers, body) = get(app(200), "/metrics", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            content_type(&headers),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.contains(r#"pareidolia_model_info{model="m",sha256="ab"} 1"#),
            "{text}"
        );
        assert!(text.contains(
            r#"pareidolia_backend_info{backend="tract",device="cpu",requested="auto"} 1"#
        ));
    }

    #[tokio::test]
    async fn gallery_pages_are_html_whatever_their_query() {
        let (status, headers, _) = get(app(200), "/", &[]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/gallery");
        for uri in ["/gallery", "/gallery?page=10&sort=confidence-desc&q=dog"] {
            let (status, headers, body) = get(app(200), uri, &[]).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert_eq!(content_type(&headers), "text/html; charset=utf-8");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
            let html = String::from_utf8(body).unwrap();
            assert!(
                html.contains("PAGE_SIZE") && html.contains("/status"),
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn champions_render_with_an_etag_and_revalidate_to_304() {
        let (status, headers, body) = get(app(200), "/champions/0.png", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type(&headers), "image/png");
        assert_eq!(headers[header::ETAG], "\"2a\"");
        let png = png_bytes(&Bytes.render(&[10, 20]).unwrap()).unwrap();
        assert_eq!(body, png);
        let (status, headers, body) =
            get(app(200), "/champions/0.png", &[("if-none-match", "\"2a\"")]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(headers[header::ETAG], "\"2a\"");
        assert!(body.is_empty());
        // An old ETag gets the new image.
        let (status, _, _) =
            get(app(200), "/champions/0.png", &[("if-none-match", "\"29\"")]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn missing_things_are_404_with_a_reason_and_writes_are_405() {
        for (uri, says) in [
            ("/champions/1.png", "class 1 has no champion yet"),
            ("/champions/3.png", "no class 3: the model has 3 classes"),
            ("/champions/x.png", "champions are /champions/<class>.png"),
            ("/champions/0.jpg", "champions are /champions/<class>.png"),
        ] {
            let (status, _, body) = get(app(200), uri, &[]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            let text = String::from_utf8(body).unwrap();
            assert!(text.contains(says), "{uri}: {text}");
        }
        let (status, _, _) = get(app(200), "/nothing-here", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, body) = get(app(200), "/champions/2.png", &[]).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            String::from_utf8(body)
                .unwrap()
                .contains("genome too short")
        );
        for uri in ["/status", "/metrics", "/gallery", "/champions/0.png"] {
            let (status, _, _) = request(app(200), Method::POST, uri, &[]).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        }
    }

    #[tokio::test]
    async fn only_addresses_localhost_and_allowed_names_are_answered() {
        for host in [
            "127.0.0.1:9464",
            "127.0.0.1",
            "localhost:9464",
            "LocalHost",
            "[::1]:9464",
            "[::1]",
            "10.1.2.3:9464",
            "pareidolia.lab",
            "pareidolia.lab:8080",
        ] {
            let (status, _, _) = get(app(200), "/livez", &[("host", host)]).await;
            assert_eq!(status, StatusCode::OK, "{host}");
        }
        for host in [
            "evil.example:9464",
            "evil.example",
            "127.0.0.1:9465",
            "localhost:80",
            "[::1]:1",
            "127.0.0.1.evil.example:9464",
            "localhost.evil.example",
            "pareidolia.lab.evil.example",
            "",
        ] {
            let (status, _, body) = get(app(200), "/status", &[("host", host)]).await;
            assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host}");
            let text = String::from_utf8(body).unwrap();
            assert!(text.contains("http.allowed_hosts"), "{host}: {text}");
        }
        // No Host header at all (HTTP/1.0): no browser page sends that.
        let (status, _, _) = get(app(200), "/livez", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
}
