//! The daemon as a service: an exclusive lock on the run folder, the identity check before a
//! resumed run continues, the HTTP endpoints beside the run, SIGTERM/SIGINT handling, the
//! drain (the generation in flight finishes, a final checkpoint is written) and the run
//! folder written at the end. A final checkpoint that could not be written is an error,
//! after the gallery and summary are written. The command line only chooses the folder and the config and
//! calls [`serve`].
//!
//! [`http`] holds the endpoints, [`signals`] the one shutdown future; this module serves
//! the endpoints beside the run.

pub mod http;
pub mod signals;

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pareidolia_core::checkpoint::Checkpoint;
use pareidolia_core::config::RunConfig;
use pareidolia_core::{AllowedChanges, IdentityMismatch};

use self::http::{AppState, HostPolicy, router};
pub use self::signals::shutdown_signal;
use crate::cluster::{ClusterError, ClusterOptions, DaemonNode};
use crate::experiment::{Experiment, RunOptions};
use crate::metrics::Metrics;
use crate::run::folder::{self, RunFolderError};
use crate::run::outcome::{Progress, RunError, RunOutcome};
use crate::run::setup::{Setup, SetupError};
use crate::run::stop::StopHandle;

/// How long a stop request may take (the generation in flight plus the final checkpoint)
/// before the daemon gives up waiting and exits with an error.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the service could not run or did not end cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The lock file could not be opened.
    #[error("cannot open the lock file {path}: {cause}; is the run folder writable?")]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// Another process holds the run folder.
    #[error(
        "run folder {run_dir} is in use by another pareidolia process (pid {pid}); stop it first or choose another folder"
    )]
    Locked {
        /// The run folder.
        run_dir: PathBuf,
        /// The holder's pid, as its lock file says.
        pid: String,
    },
    /// The HTTP address cannot be bound.
    #[error(
        "cannot listen on {address}: {cause}; choose another address with --listen or http.listen"
    )]
    Listen {
        /// The address.
        address: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// Setup failed (the cause follows in the error chain).
    #[error("cannot set up the experiment")]
    Setup(#[from] SetupError),
    /// The installed models or plugins are not the run's.
    #[error(transparent)]
    Identity(#[from] IdentityMismatch),
    /// The run stopped with an error.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The drain took longer than [`DRAIN_TIMEOUT`].
    #[error(
        "the run did not drain within {} s of the stop request; its newest checkpoint is intact",
        DRAIN_TIMEOUT.as_secs()
    )]
    DrainTimeout,
    /// The run ended but its final checkpoint could not be written (a full disk): the gallery
    /// and summary are of a later generation than the newest checkpoint.
    #[error(
        "the final checkpoint, of generation {generation}, could not be written ({failures} checkpoint write(s) failed; the log says why); the gallery and summary.json show generation {generation}, but {newest}. Free space in {run_dir} or fix it, then run `pareidolia resume {run_dir}`"
    )]
    FinalCheckpoint {
        /// The run folder.
        run_dir: PathBuf,
        /// The generation the run ended at.
        generation: u64,
        /// The newest checkpoint that was written, in words.
        newest: String,
        /// Failed checkpoint writes in this session.
        failures: u64,
    },
    /// The gallery or summary could not be written.
    #[error(transparent)]
    RunFolder(#[from] RunFolderError),
    /// The run ended, but its gallery or summary could not be written (a full disk): says
    /// where a resume continues, since the run itself is in its checkpoints.
    #[error(
        "{cause}; the run ended at generation {generation} and {newest}: free space in {run_dir} or fix it, then `pareidolia resume {run_dir}` (or `pareidolia export {run_dir} --out DIR` for the gallery)"
    )]
    Finish {
        /// Why the gallery or summary could not be written.
        cause: RunFolderError,
        /// The run folder.
        run_dir: PathBuf,
        /// The generation the run ended at.
        generation: u64,
        /// The newest checkpoint, in words.
        newest: String,
    },
    /// The cluster node (`--cluster-listen`) could not start.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The async runtime or the server failed.
    #[error("{what}: {cause}")]
    Io {
        /// What failed.
        what: &'static str,
        /// The I/O error.
        cause: std::io::Error,
    },
}

/// An exclusive lock on a run folder (`<run>/lock`, holding the owner's pid), held while the
/// value lives.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes `<run>/lock`, or explains who holds it.
    pub fn acquire(run_dir: &Path) -> Result<Self, ServiceError> {
        let path = run_dir.join("lock");
        let lock_err = |cause| ServiceError::LockFile {
            path: path.clone(),
            cause,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        if file.try_lock().is_err() {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(ServiceError::Locked {
                run_dir: run_dir.to_owned(),
                pid: holder.trim().to_owned(),
            });
        }
        file.set_len(0).map_err(lock_err)?;
        write!(file, "{}", std::process::id()).map_err(lock_err)?;
        Ok(Self { _file: file })
    }

    /// The pid of the process that holds the lock now, if any.
    pub fn held_by_other(run_dir: &Path) -> Option<String> {
        let path = run_dir.join("lock");
        let file = File::open(&path).ok()?;
        match file.try_lock() {
            Ok(()) => None,
            Err(_) => Some(
                std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            ),
        }
    }
}

/// A run for [`serve`]: a new one from a config, or a resumed one from a checkpoint.
pub enum Start {
    /// A new run (its folder holds no checkpoint).
    New(RunConfig),
    /// Continue from a checkpoint, with the config to continue with (the checkpoint's, with
    /// overrides) and the differences the user accepts.
    Resume {
        /// The checkpoint.
        checkpoint: Box<Checkpoint>,
        /// The config to go on with.
        config: RunConfig,
        /// What may differ from the run's identity.
        allow: AllowedChanges,
    },
}

/// What [`serve`] needs beyond the run.
pub struct ServeOptions {
    /// The run folder (checkpoints, history, gallery, summary).
    pub run_dir: PathBuf,
    /// The lock on it, held until the service ends.
    pub lock: RunLock,
    /// After the run ends, keep serving until SIGTERM or SIGINT.
    pub keep_serving: bool,
    /// The run's id (`pareidolia_core::resume`), recorded in every checkpoint it writes.
    pub run_id: String,
    /// Listen for worker nodes (`--cluster-listen`), if asked.
    pub cluster: Option<ClusterOptions>,
    /// Called once the run is set up (models and plugins loaded, the HTTP and cluster
    /// listeners bound), before its first generation; an error ends the service before the
    /// run begins. A resume with a new config writes the folder's `config.toml` here, so a
    /// resume that cannot start leaves the folder's config as it was.
    pub on_started: Option<OnStarted>,
}

/// What [`ServeOptions::on_started`] runs.
pub type OnStarted = Box<dyn FnOnce() -> std::io::Result<()> + Send>;

/// Runs the experiment with its HTTP endpoints until it ends or is stopped. Blocking: it
/// starts its own tokio runtime.
///
/// A new run that cannot start (the address is taken, a model or plugin does not load)
/// leaves nothing behind: the folder's `config.toml`, `history.csv` and lock file are
/// removed, while the lock is still held, so the same command can simply be run again.
pub fn serve(start: Start, options: ServeOptions) -> Result<RunOutcome, ServiceError> {
    let ServeOptions {
        run_dir,
        lock: _lock,
        keep_serving,
        run_id,
        cluster,
        on_started,
    } = options;
    let new_run = matches!(start, Start::New(_));
    let (listener, addr, mut experiment, resume) = match prepare(start, &run_dir) {
        Ok(mut prepared) => {
            prepared.2.identity.run_id = Some(run_id);
            prepared
        }
        Err(e) => {
            if new_run {
                remove_unstarted(&run_dir);
            }
            return Err(e);
        }
    };
    let io = |what| move |cause| ServiceError::Io { what, cause };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io("cannot start tokio"))?;
    runtime.block_on(async {
        let node = match &cluster {
            Some(options) => match DaemonNode::start(options, &mut experiment).await {
                Ok(node) => Some(node),
                Err(e) => {
                    if new_run {
                        remove_unstarted(&run_dir);
                    }
                    return Err(e.into());
                }
            },
            None => None,
        };
        let (tx, rx) = tokio::sync::watch::channel(Progress::default());
        let metrics = Metrics::new(&experiment.identity, experiment.checkpoint_policy(true));
        let state = AppState {
            progress: rx.clone(),
            run_dir: run_dir.display().to_string().into(),
            identity: Arc::new(experiment.identity.clone()),
            metrics: metrics.clone(),
            renderer: experiment.setup.encoding.clone(),
            hosts: HostPolicy::new(addr.port(), &experiment.setup.config.http.allowed_hosts),
            cluster: node.as_ref().map(|n| n.view.clone()),
        };
        let limits = ConnectionLimits::of(&experiment.setup.config.http);
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(io("cannot serve HTTP"))?;
        if let Some(started) = on_started {
            started().map_err(io("cannot record the run's start in its folder"))?;
        }
        let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_http(listener, router(state), limits, http_stopped));
        // SIGTERM or SIGINT requests a stop; the handle remembers it, so it is seen whenever
        // it came.
        let stop = StopHandle::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!(
                "stop requested: finishing the generation in flight, then a final checkpoint"
            );
            on_signal.request();
        });
        let options = RunOptions {
            run_dir: Some(run_dir.clone()),
            resume,
            metrics: Some(metrics),
            stop: stop.clone(),
        };
        let mut run = Box::pin(experiment.run_with(tx, options));
        let mut stop_requested = false;
        let outcome = tokio::select! {
            outcome = &mut run => outcome.map_err(ServiceError::from),
            _ = stop.requested() => {
                stop_requested = true;
                match tokio::time::timeout(DRAIN_TIMEOUT, &mut run).await {
                    Ok(outcome) => outcome.map_err(ServiceError::from),
                    Err(_) => Err(ServiceError::DrainTimeout),
                }
            }
        };
        drop(run);
        if let Some(node) = node {
            node.stop();
        }
        let written = outcome
            .as_ref()
            .ok()
            .map(|outcome| tokio::task::block_in_place(|| finish(&run_dir, &experiment, outcome)));
        if keep_serving && !stop_requested && matches!(written, Some(Ok(()))) {
            tracing::info!(
                url = %format!("http://{addr}/gallery"),
                "run over; still serving the gallery, /status and /metrics until SIGTERM or SIGINT"
            );
            stop.requested().await;
        }
        let _ = http_stop.send(());
        let _ = server.await;
        let outcome = outcome?;
        written.unwrap_or(Ok(()))?;
        Ok(outcome)
    })
}

/// How many connections the HTTP server holds and how long it waits for a request.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    max_connections: usize,
    header_timeout: Duration,
}

impl ConnectionLimits {
    fn of(http: &pareidolia_core::HttpConfig) -> Self {
        Self {
            max_connections: http.max_connections,
            header_timeout: Duration::from_secs_f64(http.header_timeout_s),
        }
    }
}

/// How long a connection beyond `max_connections` waits for a place (idle kept-alive
/// connections are asked to close when it arrives) before it is answered 503.
const OVERFLOW_WAIT: Duration = Duration::from_secs(2);

/// What a connection that found no place within [`OVERFLOW_WAIT`] is answered.
fn busy_response() -> String {
    let body = "busy: every HTTP connection is in use (http.max_connections)\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Serves `app` on `listener` until `stop` fires, then lets the connections finish their
/// request in flight. Instead of `axum::serve`, which has neither, each connection gets
/// hyper's header-read timeout (which also runs while a kept-alive connection waits for its
/// next request, so idle and half-sent connections are closed), and at most
/// `max_connections` are served at once. A connection beyond them asks the kept-alive ones to
/// close when idle (a request in flight is answered first) and waits up to
/// [`OVERFLOW_WAIT`] for a place: so a liveness probe or a Prometheus scrape gets in even
/// while clients hold every place open, and one that finds none is answered 503 with
/// `Retry-After`, never reset. At most `max_connections` more wait at once; beyond those a
/// connection is closed at once.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let waiting = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let evict = Arc::new(tokio::sync::Notify::new());
    let (closing, closing_seen) = tokio::sync::watch::channel(false);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::warn!("cannot accept an HTTP connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let served = Served {
            app: app.clone(),
            limits,
            closing: closing_seen.clone(),
            evict: evict.clone(),
        };
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            tokio::spawn(served.serve(stream, permit));
            continue;
        }
        let Ok(wait) = waiting.clone().try_acquire_owned() else {
            tracing::debug!(
                %peer,
                "HTTP connection closed: {} connections are open and as many wait (http.max_connections)",
                limits.max_connections
            );
            drop(stream);
            continue;
        };
        evict.notify_waiters();
        let permits = permits.clone();
        tokio::spawn(async move {
            let _wait = wait;
            match tokio::time::timeout(OVERFLOW_WAIT, permits.acquire_owned()).await {
                Ok(Ok(permit)) => served.serve(stream, permit).await,
                _ => {
                    tracing::debug!(%peer, "HTTP connection answered 503: no place freed in time");
                    let mut stream = stream;
                    use tokio::io::AsyncWriteExt as _;
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        let _ = stream.write_all(busy_response().as_bytes()).await;
                        let _ = stream.shutdown().await;
                    })
                    .await;
                }
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    // Idle connections close at once, a request in flight is answered; a client that does not
    // read its answer, or sends half a request, is not waited for past the bound (at most
    // 15 s, whatever the header timeout: a stop is not held up by a stalled client).
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let bound = limits.header_timeout.min(Duration::from_secs(10)) + Duration::from_secs(5);
    let _ = tokio::time::timeout(bound, permits.acquire_many(all)).await;
}

/// What one HTTP connection is served with.
struct Served {
    app: axum::Router,
    limits: ConnectionLimits,
    /// Fires when the server stops: finish the request in flight, then close.
    closing: tokio::sync::watch::Receiver<bool>,
    /// Fires when a connection waits for a place: close when idle.
    evict: Arc<tokio::sync::Notify>,
}

impl Served {
    /// Serves `stream` while it holds `permit`, until the client closes it, the header
    /// timeout, an eviction (once idle) or the server's stop.
    async fn serve(
        mut self,
        stream: tokio::net::TcpStream,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        use hyper_util::rt::{TokioIo, TokioTimer};
        let _permit = permit;
        let service = hyper_util::service::TowerToHyperService::new(self.app);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let mut connection = std::pin::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = self.closing.wait_for(|closing| *closing) => {}
            _ = self.evict.notified() => {}
        }
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
    }
}

/// A listener bound to the run's address, the experiment set up (for a resume: after the
/// identity check), and the checkpoint to resume from.
type Prepared = (
    std::net::TcpListener,
    std::net::SocketAddr,
    Experiment,
    Option<Checkpoint>,
);

/// Everything before the run starts: the address, the setup, the identity check.
fn prepare(start: Start, run_dir: &Path) -> Result<Prepared, ServiceError> {
    let config = match &start {
        Start::New(c) | Start::Resume { config: c, .. } => c,
    };
    tracing::info!(run_dir = %run_dir.display(), "pareidolia {} daemon: run folder", env!("CARGO_PKG_VERSION"));
    let address = config.http.listen.clone();
    let listener = std::net::TcpListener::bind(&address).map_err(|cause| ServiceError::Listen {
        address: address.clone(),
        cause,
    })?;
    let io = |what| move |cause| ServiceError::Io { what, cause };
    let addr = listener
        .local_addr()
        .map_err(io("cannot read the listening address"))?;
    tracing::info!(url = %format!("http://{addr}"), "serving /metrics, /livez, /readyz, /status");
    listener
        .set_nonblocking(true)
        .map_err(io("cannot configure the listening socket"))?;

    let (setup, resume) = match start {
        Start::New(config) => (Setup::load(config)?, None),
        Start::Resume {
            checkpoint,
            config,
            allow,
        } => {
            let setup = Setup::load(config)?;
            // Checked before the model is prepared: a refused resume costs no compilation.
            checkpoint
                .meta
                .identity
                .check_resume(&setup.identity(), allow)?;
            setup.check_champions(&checkpoint.cells, &checkpoint.meta.identity.encoding)?;
            (setup, Some(*checkpoint))
        }
    };
    let experiment = Experiment::new(setup)?;
    Ok((listener, addr, experiment, resume))
}

/// Removes what a new run wrote into its folder before it could start (its config and run
/// id, a history from an earlier attempt, the lock file, an empty `checkpoints/`).
fn remove_unstarted(run_dir: &Path) {
    for name in [
        "config.toml",
        pareidolia_core::resume::RUN_ID_FILE,
        crate::run::history::FILE_NAME,
        "lock",
    ] {
        let _ = std::fs::remove_file(run_dir.join(name));
    }
    let _ = std::fs::remove_dir(run_dir.join("checkpoints"));
}

/// Writes the run folder's gallery and summary, and logs where the run stopped.
fn finish(
    run_dir: &Path,
    experiment: &Experiment,
    outcome: &RunOutcome,
) -> Result<(), ServiceError> {
    let p = &outcome.progress;
    let newest = match p.last_checkpoint_generation {
        Some(g) => format!("the newest checkpoint is of generation {g}, where a resume continues"),
        None => "there is no checkpoint to resume from".to_owned(),
    };
    let summary = folder::write(
        run_dir,
        &experiment.setup.encoding,
        &experiment.identity,
        experiment.config().seed,
        outcome,
    )
    .map_err(|cause| ServiceError::Finish {
        cause,
        run_dir: run_dir.to_owned(),
        generation: p.generation,
        newest: newest.clone(),
    })?;
    tracing::info!(
        generation = summary.generations,
        evaluations = summary.evaluations,
        median = summary.stats.median,
        min = summary.stats.min,
        interrupted = outcome.interrupted,
        checkpoint = %outcome.checkpoint.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        "run stopped; gallery and summary written"
    );
    // A missing final checkpoint without a failed write means no generation was completed,
    // so there was nothing to checkpoint.
    if p.checkpoint_failures > 0 && p.last_checkpoint_generation != Some(p.generation) {
        return Err(ServiceError::FinalCheckpoint {
            run_dir: run_dir.to_owned(),
            generation: p.generation,
            newest,
            failures: p.checkpoint_failures,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pareidolia-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_lock_keeps_a_second_holder_out_until_it_is_dropped() {
        let dir = temp_dir("lock");
        let lock = RunLock::acquire(&dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("lock")).unwrap(),
            std::process::id().to_string()
        );
        // flock locks are per open file description: a second open in this process is
        // refused like another process would be.
        let e = RunLock::acquire(&dir).unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "is in use by another pareidolia process (pid {})",
                std::process::id()
            )),
            "{e}"
        );
        assert_eq!(
            RunLock::held_by_other(&dir),
            Some(std::process::id().to_string())
        );
        drop(lock);
        assert_eq!(RunLock::held_by_other(&dir), None);
        let _again = RunLock::acquire(&dir).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_lock_in_a_missing_folder_says_which_file() {
        let dir = temp_dir("lock-missing").join("nowhere");
        let e = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(e.contains("nowhere/lock") && e.contains("writable"), "{e}");
    }
}
