//! `pareidolia daemon` and `pareidolia resume`: an experiment as a long-running service. The
//! run folder is locked against a second daemon; the first log lines name the folder and the
//! URL; checkpoints are written as configured; SIGTERM or SIGINT lets the generation in
//! flight finish, writes a final checkpoint and exits 0.

use std::fs::File;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pareidolia_core::RunConfig;
use pareidolia_core::checkpoint::{Checkpoint, CheckpointStore};
use pareidolia_daemon::http::{AppState, RunInfo, router};
use pareidolia_daemon::metrics::Metrics;
use pareidolia_daemon::{Experiment, Progress, RunOptions, RunOutcome, request_stop, run_folder};

use crate::cli::{DaemonArgs, LogFormat, ResumeArgs};
use crate::run::{default_out, resolve_config};

/// How long a stop request may take (the generation in flight plus the final checkpoint)
/// before the daemon gives up waiting and exits with an error.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// An exclusive lock on a run folder, held while the daemon lives.
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes `<run>/lock`, or explains who holds it.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| {
                format!(
                    "cannot open the lock file {}; is the run folder writable?",
                    path.display()
                )
            })?;
        if file.try_lock().is_err() {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "run folder {} is in use by another pareidolia process (pid {}); stop it first or choose another folder",
                run_dir.display(),
                holder.trim()
            );
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file })
    }

    /// Whether some process holds the lock now.
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

/// Sets up logging for the daemon (text or JSON lines on stderr).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `pareidolia daemon`.
pub fn daemon(args: DaemonArgs) -> Result<()> {
    let (mut config, name) = resolve_config(&args.experiment)?;
    if let Some(listen) = &args.listen {
        config.http.listen = listen.clone();
    }
    config.validate("the command line")?;
    let run_dir = args
        .experiment
        .out
        .clone()
        .unwrap_or_else(|| default_out(&name));
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create run folder {}", run_dir.display()))?;
    let lock = RunLock::acquire(&run_dir)?;
    let store = CheckpointStore::new(&run_dir, config.checkpoint.keep);
    if !store.list().is_empty() {
        if args.resume {
            drop(lock);
            return resume(ResumeArgs {
                run_dir,
                generations: args.experiment.generations,
                listen: args.listen,
                allow_model_change: false,
                allow_plugin_change: false,
                log_format: args.log_format,
                keep_serving: args.keep_serving,
            });
        }
        bail!(
            "run folder {} already holds checkpoints; continue it with `pareidolia resume {}` (or `daemon --resume`), or choose another --out",
            run_dir.display(),
            run_dir.display()
        );
    }
    std::fs::write(run_dir.join("config.toml"), crate::run::toml_of(&config)?).with_context(
        || {
            format!(
                "cannot write to run folder {}; is it writable?",
                run_dir.display()
            )
        },
    )?;
    serve(config, run_dir, None, lock, args.keep_serving)
}

/// `pareidolia resume`.
pub fn resume(args: ResumeArgs) -> Result<()> {
    let lock = RunLock::acquire(&args.run_dir)?;
    let store = CheckpointStore::new(&args.run_dir, 1);
    let (checkpoint, path, skipped) = store.load_newest()?;
    for (bad, why) in &skipped {
        tracing::warn!(checkpoint = %bad.display(), reason = %why, "skipping a damaged checkpoint");
    }
    tracing::info!(checkpoint = %path.display(), generation = checkpoint.meta.generation, "resuming");
    let mut config = checkpoint.meta.config.clone();
    config.base_dir = checkpoint.meta.base_dir.clone();
    if let Some(g) = args.generations {
        config.generations = g;
    }
    if let Some(listen) = &args.listen {
        config.http.listen = listen.clone();
    }
    config.validate("the command line")?;
    let check = IdentityCheck {
        allow_model_change: args.allow_model_change,
        allow_plugin_change: args.allow_plugin_change,
    };
    serve(
        config,
        args.run_dir,
        Some((checkpoint, check)),
        lock,
        args.keep_serving,
    )
}

struct IdentityCheck {
    allow_model_change: bool,
    allow_plugin_change: bool,
}

fn verify_identity(experiment: &Experiment, c: &Checkpoint, check: &IdentityCheck) -> Result<()> {
    let (model, encoding, fitness) = experiment.identity();
    let m = &c.meta;
    if model.sha256 != m.model.sha256 && !check.allow_model_change {
        bail!(
            "the model file changed since this run started (sha256 {} then, {} now); resuming would mix scores \
             of two models. Restore the model, or pass --allow-model-change",
            m.model.sha256,
            model.sha256
        );
    }
    for (was, now) in [(&m.encoding, &encoding), (&m.fitness, &fitness)] {
        if (was.name != now.name || was.version != now.version) && !check.allow_plugin_change {
            bail!(
                "plugin {} {} started this run, {} {} is installed now; pass --allow-plugin-change to continue anyway",
                was.name,
                was.version,
                now.name,
                now.version
            );
        }
    }
    Ok(())
}

/// Runs the experiment with its HTTP endpoints until it ends or is stopped; `_lock` is held
/// throughout.
fn serve(
    config: RunConfig,
    run_dir: PathBuf,
    resume: Option<(Checkpoint, IdentityCheck)>,
    _lock: RunLock,
    keep_serving: bool,
) -> Result<()> {
    tracing::info!(run_dir = %run_dir.display(), "pareidolia {} daemon: run folder", env!("CARGO_PKG_VERSION"));
    let listener = std::net::TcpListener::bind(&config.http.listen).with_context(|| {
        format!(
            "cannot listen on {}; choose another address with --listen or http.listen",
            config.http.listen
        )
    })?;
    let addr = listener.local_addr()?;
    tracing::info!(url = %format!("http://{addr}"), "serving /metrics, /livez, /readyz, /status");
    listener.set_nonblocking(true)?;

    let mut experiment = Experiment::setup(config).context("cannot set up the experiment")?;
    let resume = match resume {
        Some((c, check)) => {
            verify_identity(&experiment, &c, &check)?;
            Some(c)
        }
        None => None,
    };
    let (model, encoding, fitness) = experiment.identity();
    let info = Arc::new(RunInfo {
        run_dir: run_dir.display().to_string(),
        model: model.name,
        model_sha256: model.sha256,
        backend: experiment.backend_name.to_owned(),
        device: experiment.device.clone(),
        backend_selection: experiment.backend_selection.clone(),
        encoding: format!("{} {}", encoding.name, encoding.version),
        fitness: format!("{} {}", fitness.name, fitness.version),
        labels: experiment.model.labels.clone(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start tokio")?;
    runtime.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(Progress::default());
        let metrics = Metrics::new(experiment.run_facts(true));
        let state = AppState {
            progress: rx.clone(),
            info,
            metrics: metrics.clone(),
            encoding: experiment.encoding.clone(),
        };
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router(state))
                .with_graceful_shutdown(async {
                    let _ = http_stopped.await;
                })
                .await
        });
        let run_id = experiment.run_id.clone();
        // A permit stays stored until taken, so a signal is seen whenever it came.
        let signalled = Arc::new(tokio::sync::Notify::new());
        let signal_seen = signalled.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("stop requested: finishing the generation in flight, then a final checkpoint");
            request_stop(&run_id);
            signal_seen.notify_one();
        });
        let options = RunOptions {
            run_dir: Some(run_dir.clone()),
            resume,
            metrics: Some(metrics),
        };
        let mut run = Box::pin(experiment.run_with(tx, options));
        let mut stop_requested = false;
        let outcome = tokio::select! {
            outcome = &mut run => outcome.map_err(anyhow::Error::from),
            _ = signalled.notified() => {
                stop_requested = true;
                match tokio::time::timeout(DRAIN_TIMEOUT, &mut run).await {
                    Ok(outcome) => outcome.map_err(anyhow::Error::from),
                    Err(_) => Err(anyhow::anyhow!(
                        "the run did not drain within {} s of the stop request; its newest checkpoint is intact",
                        DRAIN_TIMEOUT.as_secs()
                    )),
                }
            }
        };
        drop(run);
        let written = outcome
            .as_ref()
            .ok()
            .map(|outcome| tokio::task::block_in_place(|| finish(&run_dir, &experiment, outcome)));
        if keep_serving && !stop_requested && matches!(written, Some(Ok(()))) {
            tracing::info!(
                url = %format!("http://{addr}/gallery"),
                "run over; still serving the gallery, /status and /metrics until SIGTERM or SIGINT"
            );
            signalled.notified().await;
        }
        let _ = http_stop.send(());
        let _ = server.await;
        outcome.and_then(|o| written.unwrap_or(Ok(())).map(|()| o))
    })?;
    Ok(())
}

/// Writes the run folder's gallery and summary, and logs where the run stopped.
fn finish(run_dir: &Path, experiment: &Experiment, outcome: &RunOutcome) -> Result<()> {
    let summary = run_folder::write(run_dir, experiment, outcome)?;
    tracing::info!(
        generation = summary.generations,
        evaluations = summary.evaluations,
        median = summary.stats.median,
        min = summary.stats.min,
        interrupted = outcome.interrupted,
        checkpoint = %outcome.checkpoint.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        "run stopped; gallery and summary written"
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
