//! `pareidolia daemon` and `pareidolia resume`: which run folder and config, new run or
//! resume, then the service (`pareidolia_daemon::service`) does the rest — lock, identity
//! check, HTTP, signals, drain, final checkpoint.

use std::io::IsTerminal as _;

use anyhow::{Context, Result, bail};
use pareidolia_core::AllowedChanges;
use pareidolia_core::checkpoint::CheckpointStore;
use pareidolia_daemon::service::{self, RunLock, ServeOptions, Start};

use crate::cli::{DaemonArgs, LogFormat, ResumeArgs};
use crate::run::{default_out, resolve_config};

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
    let options = ServeOptions {
        run_dir,
        lock,
        keep_serving: args.keep_serving,
    };
    service::serve(Start::New(config), options)?;
    Ok(())
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
    let mut config = checkpoint.config();
    if let Some(g) = args.generations {
        config.generations = g;
    }
    if let Some(listen) = &args.listen {
        config.http.listen = listen.clone();
    }
    config.validate("the command line")?;
    let start = Start::Resume {
        checkpoint: Box::new(checkpoint),
        config,
        allow: AllowedChanges {
            model: args.allow_model_change,
            plugins: args.allow_plugin_change,
        },
    };
    let options = ServeOptions {
        run_dir: args.run_dir,
        lock,
        keep_serving: args.keep_serving,
    };
    service::serve(start, options)?;
    Ok(())
}
