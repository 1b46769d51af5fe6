//! `pareidolia daemon` and `pareidolia resume`: which run folder and config, new run or
//! resume, then the service (`pareidolia_daemon::service`) does the rest — lock, identity
//! check, HTTP, signals, drain, final checkpoint.

use std::io::IsTerminal as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use pareidolia_core::checkpoint::CheckpointStore;
use pareidolia_core::resume::{self, RUN_ID_FILE};
use pareidolia_core::{AllowedChanges, BackendChoice, RunConfig};
use pareidolia_daemon::cluster::{self, ClusterOptions};
use pareidolia_daemon::service::{self, RunLock, ServeOptions, Start};

use crate::cli::{ClusterArgs, DaemonArgs, LogFormat, ResumeArgs, StopArgs};
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
const BEFORE_FIRST_CHECKPOINT: [&str; 4] = [
    "lock",
    "config.toml",
    RUN_ID_FILE,
    pareidolia_daemon::run::history::FILE_NAME,
];

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
    if let Some(listen) = &args.serve.listen {
        config.http.listen = listen.clone();
    }
    config.validate("the command line")?;
    let run_dir = args
        .experiment
        .out
        .clone()
        .unwrap_or_else(|| default_out(&name));
    let store = CheckpointStore::new(&run_dir, config.checkpoint.keep);
    let cluster = cluster_options(&args.serve.cluster)?;
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
            let e = args.experiment;
            let asked = GoOn {
                config: e.config,
                seed: e.seed,
                generations: e.generations,
                mutators: e.mutators,
                backend: e.backend,
                listen: args.serve.listen,
                stop: e.stop,
            };
            return resume_run(
                run_dir,
                asked,
                AllowedChanges::default(),
                args.serve.keep_serving,
                cluster,
            );
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
            let unwritable = || {
                format!(
                    "cannot write to run folder {}; is it writable?",
                    run_dir.display()
                )
            };
            std::fs::write(run_dir.join("config.toml"), crate::run::toml_of(&config)?)
                .with_context(unwritable)?;
            let run_id = resume::new_run_id();
            resume::write_run_id(&run_dir, &run_id).with_context(unwritable)?;
            let options = ServeOptions {
                run_dir: run_dir.clone(),
                lock,
                keep_serving: args.serve.keep_serving,
                run_id,
                cluster,
                on_started: None,
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

/// What a resume is asked to go on with: a new config file and command-line overrides
/// (each `None` keeps the run's).
struct GoOn {
    config: Option<std::path::PathBuf>,
    seed: Option<u64>,
    generations: Option<u64>,
    mutators: Option<u32>,
    backend: Option<BackendChoice>,
    listen: Option<String>,
    stop: StopArgs,
}

impl GoOn {
    /// The config asked for — the new file's, else the run's — with the overrides applied,
    /// and a name for it in messages.
    fn config(&self, run: &RunConfig) -> Result<(RunConfig, String)> {
        let (mut config, origin) = match &self.config {
            Some(path) => (RunConfig::from_file(path)?, path.display().to_string()),
            None => (run.clone(), "the command line".to_owned()),
        };
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        if let Some(g) = self.generations {
            config.generations = g;
        }
        if let Some(m) = self.mutators {
            config.mutators = m;
        }
        if let Some(b) = self.backend {
            for model in config.model_configs_mut() {
                model.backend = b;
            }
        }
        if let Some(listen) = &self.listen {
            config.http.listen = listen.clone();
        }
        config.validate("the command line")?;
        Ok((config, origin))
    }

    /// Where the generation count comes from, for a message.
    fn generations_source(&self) -> String {
        match (&self.generations, &self.config) {
            (Some(_), _) => "--generations".to_owned(),
            (None, Some(path)) => format!("`generations` in {}", path.display()),
            (None, None) => "the run's config".to_owned(),
        }
    }
}

/// `pareidolia resume`.
pub fn resume(args: ResumeArgs) -> Result<()> {
    let asked = GoOn {
        config: args.config,
        seed: None,
        generations: args.generations,
        mutators: None,
        backend: args.backend,
        listen: args.serve.listen,
        stop: args.stop,
    };
    let allow = AllowedChanges {
        model: args.allow_model_change,
        plugins: args.allow_plugin_change,
    };
    let cluster = cluster_options(&args.serve.cluster)?;
    resume_run(args.run_dir, asked, allow, args.serve.keep_serving, cluster)
}

/// The cluster flags, checked before anything is set up: `None` without --cluster-listen.
fn cluster_options(args: &ClusterArgs) -> Result<Option<ClusterOptions>> {
    let cookie = args
        .cookie_file
        .as_deref()
        .map(cluster::read_cookie)
        .transpose()?;
    let Some(listen) = &args.cluster_listen else {
        if args.cookie_file.is_some() || args.wait_workers > 0 {
            bail!(
                "--cookie-file and --wait-workers need --cluster-listen ADDR (where worker nodes connect)"
            );
        }
        return Ok(None);
    };
    Ok(Some(ClusterOptions::new(
        listen,
        cookie,
        args.wait_workers,
    )?))
}

/// Continues the run in `run_dir` from its newest valid checkpoint: checks that the
/// checkpoint is this folder's run, applies what `asked` may change and refuses the rest
/// (`pareidolia_core::resume`), then serves.
fn resume_run(
    run_dir: std::path::PathBuf,
    asked: GoOn,
    allow: AllowedChanges,
    keep_serving: bool,
    cluster: Option<ClusterOptions>,
) -> Result<()> {
    let store = CheckpointStore::new(&run_dir, 1);
    if let Some(pid) = RunLock::held_by_other(&run_dir) {
        return Err(service::ServiceError::Locked { run_dir, pid }.into());
    }
    // Before the lock, which would leave a lock file in a folder that is not a run.
    store.check_any()?;
    let lock = RunLock::acquire(&run_dir)?;
    let (checkpoint, path, skipped) = store.load_newest()?;
    for (bad, why) in &skipped {
        tracing::warn!(checkpoint = %bad.display(), reason = %why, "skipping a damaged checkpoint");
    }
    let folder_id = resume::read_run_id(&run_dir);
    let folder_config = RunConfig::from_file(&run_dir.join("config.toml")).ok();
    resume::check_belongs(
        &path,
        checkpoint.meta.identity.run_id.as_deref(),
        &checkpoint.meta.config,
        &run_dir,
        folder_id.as_deref(),
        folder_config.as_ref(),
    )?;
    tracing::info!(checkpoint = %path.display(), generation = checkpoint.meta.generation, "resuming");
    let run_config = checkpoint.config();
    let (new, origin) = asked.config(&run_config)?;
    let (mut config, applied) = resume::continue_with(&run_config, &new, &origin)?;
    resume::check_generations(
        checkpoint.meta.generation,
        config.generations,
        &asked.generations_source(),
    )?;
    // The folder's config.toml changes only once the resumed run has started (`on_started`):
    // a resume that cannot start (a backend this machine lacks) leaves it as it was.
    let new_config = if applied.is_empty() {
        None
    } else {
        tracing::info!(changes = %applied.join("; "), from = %origin, "the resumed run goes on with these changes");
        Some(crate::run::toml_of(&config)?)
    };
    // A run from before run ids gets one now; its later checkpoints carry it.
    let run_id = match (checkpoint.meta.identity.run_id.clone(), folder_id) {
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => resume::new_run_id(),
    };
    if resume::read_run_id(&run_dir).as_deref() != Some(run_id.as_str()) {
        resume::write_run_id(&run_dir, &run_id)
            .with_context(|| format!("cannot write {}", run_dir.join(RUN_ID_FILE).display()))?;
    }
    asked
        .stop
        .apply(&mut config.stop)
        .map_err(anyhow::Error::msg)?;
    config.validate("the command line")?;
    let start = Start::Resume {
        checkpoint: Box::new(checkpoint),
        config,
        allow,
    };
    let config_file = run_dir.join("config.toml");
    let options = ServeOptions {
        run_dir,
        lock,
        keep_serving,
        run_id,
        cluster,
        on_started: new_config.map(|text| -> service::OnStarted {
            Box::new(move || std::fs::write(&config_file, text))
        }),
    };
    service::serve(start, options)?;
    Ok(())
}
