//! `pareidolia daemon` and `pareidolia resume`: which run folder and config, new run or
//! resume, then the service (`pareidolia_daemon::service`) does the rest — lock, identity
//! check, HTTP, signals, drain, final checkpoint.

use std::io::IsTerminal as _;
use std::path::Path;

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

/// Files a daemon writes into a run folder before its first checkpoint: a folder that holds
/// only these (and the lock among them) is a run that never reached its first checkpoint,
/// and a new run may start over there.
const BEFORE_FIRST_CHECKPOINT: [&str; 3] =
    ["lock", "config.toml", pareidolia_daemon::history::FILE_NAME];

/// What a run folder holds, as `daemon` sees it before it takes the lock.
#[derive(Debug, PartialEq)]
enum Folder {
    /// Absent or empty: a new run starts there.
    Empty,
    /// A run that never reached its first checkpoint (only [`BEFORE_FIRST_CHECKPOINT`] files,
    /// the lock among them, and at most a `checkpoints/` with the temporary file of a write
    /// that was cut short): a new run starts over there.
    NoCheckpoint(Vec<String>),
    /// A run: `checkpoints/` holds checkpoint files. `--resume` continues it.
    Run,
    /// Anything else: files that are not a daemon's run, never overwritten. The first few
    /// names (folders with a trailing `/`).
    Other(Vec<String>),
}

/// Looks at a run folder without changing it.
fn inspect(run_dir: &Path, store: &CheckpointStore) -> Result<Folder> {
    if !run_dir.exists() {
        return Ok(Folder::Empty);
    }
    if !store.list().is_empty() {
        return Ok(Folder::Run);
    }
    let read = |dir: &Path| -> Result<Vec<(String, bool)>> {
        let mut names = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read run folder {}", dir.display()))?
            .map(|e| {
                let e = e.with_context(|| format!("cannot read run folder {}", dir.display()))?;
                Ok((
                    e.file_name().to_string_lossy().into_owned(),
                    e.file_type().is_ok_and(|t| t.is_dir()),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    };
    let entries = read(run_dir)?;
    if entries.is_empty() {
        return Ok(Folder::Empty);
    }
    let mut ours = Vec::new();
    let mut other = Vec::new();
    for (name, is_dir) in entries {
        let expected = if is_dir {
            name == "checkpoints"
                && read(store.dir())?
                    .iter()
                    .all(|(n, d)| !d && n.starts_with(".ckpt-") && n.contains(".tmp-"))
        } else {
            BEFORE_FIRST_CHECKPOINT.contains(&name.as_str())
        };
        let shown = if is_dir { format!("{name}/") } else { name };
        if expected {
            ours.push(shown)
        } else {
            other.push(shown)
        }
    }
    Ok(if other.is_empty() && ours.iter().any(|n| n == "lock") {
        Folder::NoCheckpoint(ours)
    } else {
        other.extend(ours);
        Folder::Other(other)
    })
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
    let store = CheckpointStore::new(&run_dir, config.checkpoint.keep);
    let existed = run_dir.exists();
    if let Some(pid) = RunLock::held_by_other(&run_dir) {
        return Err(service::ServiceError::Locked { run_dir, pid }.into());
    }
    match inspect(&run_dir, &store)? {
        Folder::Empty => {}
        Folder::NoCheckpoint(files) => tracing::warn!(
            run_dir = %run_dir.display(),
            files = %files.join(", "),
            "the run folder holds a run that never reached its first checkpoint; starting it afresh"
        ),
        Folder::Run if args.resume => {
            return resume(ResumeArgs {
                run_dir,
                generations: args.experiment.generations,
                listen: args.listen,
                stop: args.experiment.stop.clone(),
                allow_model_change: false,
                allow_plugin_change: false,
                log_format: args.log_format,
                keep_serving: args.keep_serving,
            });
        }
        Folder::Run => bail!(
            "run folder {} is a pareidolia run: it already holds checkpoints in {}; continue it with `pareidolia resume {}` (or `daemon --resume`), or choose another --out",
            run_dir.display(),
            store.dir().display(),
            run_dir.display()
        ),
        Folder::Other(names) => {
            const SHOWN: usize = 5;
            let more = names.len().saturating_sub(SHOWN);
            let mut list = names.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
            if more > 0 {
                list.push_str(&format!(" and {more} more"));
            }
            bail!(
                "run folder {} already holds files that are not a pareidolia run ({list}); a daemon starts a new run only in an empty or new folder, and continues a run (with --resume) only from its checkpoints/; choose another --out, or empty the folder",
                run_dir.display()
            )
        }
    }
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create run folder {}", run_dir.display()))?;
    let result = RunLock::acquire(&run_dir)
        .map_err(anyhow::Error::from)
        .and_then(|lock| {
            std::fs::write(run_dir.join("config.toml"), crate::run::toml_of(&config)?)
                .with_context(|| {
                    format!(
                        "cannot write to run folder {}; is it writable?",
                        run_dir.display()
                    )
                })?;
            let options = ServeOptions {
                run_dir: run_dir.clone(),
                lock,
                keep_serving: args.keep_serving,
            };
            service::serve(Start::New(config), options)?;
            Ok(())
        });
    if result.is_err() && !existed {
        // A start that failed before the run began has removed what it wrote (see
        // `service::serve`); the folder it created goes too, if it is empty now.
        let _ = std::fs::remove_dir(&run_dir);
    }
    result
}

/// `pareidolia resume`.
pub fn resume(args: ResumeArgs) -> Result<()> {
    let store = CheckpointStore::new(&args.run_dir, 1);
    if let Some(pid) = RunLock::held_by_other(&args.run_dir) {
        let run_dir = args.run_dir;
        return Err(service::ServiceError::Locked { run_dir, pid }.into());
    }
    // Before the lock, which would leave a lock file in a folder that is not a run.
    store.check_any()?;
    let lock = RunLock::acquire(&args.run_dir)?;
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
    args.stop
        .apply(&mut config.stop)
        .map_err(anyhow::Error::msg)?;
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
