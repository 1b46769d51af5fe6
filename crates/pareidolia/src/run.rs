//! `pareidolia run`: config and overrides, setup, the run with a progress bar, the run folder.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use std::io::Write as _;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use pareidolia_core::RunConfig;
use pareidolia_daemon::run::folder;
use pareidolia_daemon::{Experiment, Progress, RunOptions};

use crate::cli::{ExperimentArgs, RunArgs};

/// The config with overrides applied, and a name for the run folder.
pub fn resolve_config(args: &ExperimentArgs) -> Result<(RunConfig, String)> {
    let (mut config, name) = match &args.config {
        Some(path) => {
            let name = path
                .file_stem()
                .map_or("run".into(), |s| s.to_string_lossy().into_owned());
            (RunConfig::from_file(path)?, name)
        }
        None => (RunConfig::builtin_default(), "mnist-direct".to_owned()),
    };
    if let Some(manifest) = &args.model {
        // Relative to the folder the command runs in, as every other path on the command line.
        let here = std::env::current_dir().context("cannot read the current folder")?;
        let path = if manifest.starts_with("builtin:") {
            manifest.clone()
        } else {
            here.join(manifest).display().to_string()
        };
        match &mut config.model {
            Some(m) => m.manifest = path,
            None if config.models.is_empty() => {
                let mut m = RunConfig::builtin_default()
                    .model
                    .expect("the default experiment has a [model]");
                m.manifest = path;
                config.model = Some(m);
            }
            None => config.models[0].manifest = path,
        }
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(g) = args.generations {
        config.generations = g;
    }
    if let Some(m) = args.mutators {
        config.mutators = m;
    }
    if let Some(w) = args.workers {
        config.workers = w;
    }
    if let Some(l) = args.lag {
        config.lag = l;
    }
    if let Some(b) = args.backend {
        for model in config.model_configs_mut() {
            model.backend = b;
        }
    }
    args.stop
        .apply(&mut config.stop)
        .map_err(anyhow::Error::msg)?;
    config.validate("the command line")?;
    Ok((config, name))
}

/// Removes what a failed start left in `out`: the folder itself where this command created it
/// (with `created`), else only `config.toml`.
fn undo_out_dir(out: &Path, created: bool) {
    if created {
        std::fs::remove_dir_all(out).ok();
    } else {
        std::fs::remove_file(out.join("config.toml")).ok();
    }
}

/// Whether `out` holds a checkpoint a resume could continue from.
fn has_checkpoint(out: &Path) -> bool {
    std::fs::read_dir(out.join("checkpoints")).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("ckpt-")))
    })
}

/// Makes `out` ready for a new run (absent, or an empty folder); returns whether this call
/// created it.
fn prepare_out_dir(out: &Path) -> Result<bool> {
    let created = !out.exists();
    if out.exists() {
        let mut entries = std::fs::read_dir(out)
            .with_context(|| format!("cannot read run folder {}", out.display()))?;
        if entries.next().is_some() {
            bail!(
                "run folder {} already holds files; choose another --out or remove it",
                out.display()
            );
        }
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create run folder {}", out.display()))?;
    let probe = out.join(".write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("run folder {} is not writable", out.display()))?;
    std::fs::remove_file(probe).ok();
    Ok(created)
}

fn message(p: &Progress) -> String {
    let rate = p.evaluations as f64 / p.elapsed_s.max(1e-9);
    // The champions' probabilities; the fitness beside them where it is another number.
    let shown = p.confidence_stats.as_ref().unwrap_or(&p.stats);
    let fitness = match &p.confidence_stats {
        Some(_) => format!("  fitness median {:.4}", p.stats.median),
        None => String::new(),
    };
    format!(
        "{:>7.0} evals/s  median {:.4}%  min {:.4}%{fitness}",
        rate,
        shown.median * 100.0,
        shown.min * 100.0
    )
}

/// Runs the command.
pub fn run(args: RunArgs) -> Result<()> {
    let (config, name) = resolve_config(&args.experiment)?;
    let out = args
        .experiment
        .out
        .clone()
        .unwrap_or_else(|| default_out(&name));
    let created = prepare_out_dir(&out)?;
    // config.toml goes in once setup has worked: a start that fails leaves the folder as it
    // was (removed, when this command made it), so the same command can be run again.
    let mut experiment = match Experiment::setup(config.clone()) {
        Ok(e) => e,
        Err(e) => {
            undo_out_dir(&out, created);
            return Err(anyhow::Error::new(e).context("cannot set up the experiment"));
        }
    };
    if let Err(e) = std::fs::write(out.join("config.toml"), toml_of(&config)?) {
        undo_out_dir(&out, created);
        return Err(anyhow::Error::new(e).context("cannot write config.toml to the run folder"));
    }
    let generations = experiment.config().generations;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(generations + 1)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] gen {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start tokio")?;
    let (tx, mut rx) = tokio::sync::watch::channel(Progress::default());
    let outcome = runtime.block_on(async {
        let watcher = {
            let bar = bar.clone();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let p = rx.borrow_and_update().clone();
                    bar.set_position(p.generation + 1);
                    bar.set_message(message(&p));
                }
            })
        };
        let options = RunOptions {
            run_dir: Some(out.clone()),
            resume: None,
            metrics: None,
            stop: Default::default(),
        };
        let outcome = experiment.run_with(tx, options).await;
        watcher.abort();
        outcome
    });
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            // Failed before its first checkpoint: nothing to resume, so nothing is kept.
            if !has_checkpoint(&out) {
                undo_out_dir(&out, created);
            }
            return Err(e.into());
        }
    };
    bar.finish();
    let summary = folder::write(
        &out,
        &experiment.setup.encoding,
        &experiment.identity,
        experiment.config().seed,
        &outcome,
    )?;
    let s = summary.confidence_stats.as_ref().unwrap_or(&summary.stats);
    let fitness = match &summary.confidence_stats {
        Some(_) => format!(
            " (the champions' probabilities; fitness `{}`: median {:.4}, min {:.4})",
            summary.fitness.name, summary.stats.median, summary.stats.min
        ),
        None => String::new(),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{} generations, {} evaluations in {:.1} s ({:.0}/s); median {:.4}%, min {:.4}%, {} of {} classes >= 99.99%{fitness}",
        summary.generations,
        summary.evaluations,
        summary.wall_time_s,
        summary.evaluations_per_s,
        s.median * 100.0,
        s.min * 100.0,
        s.at_least[3],
        s.cells
    )?;
    if let Some(r) = summary.stop.as_ref().and_then(|s| s.reached.as_ref()) {
        writeln!(
            stdout,
            "stopped after generation {}: {} reached after {:.1} s",
            r.generation, r.condition, r.elapsed_s
        )?;
    }
    if summary.lost > 0 {
        writeln!(
            stdout,
            "{} children lost to plugin or backend errors (see the log)",
            summary.lost
        )?;
    }
    let cores = &experiment.cores;
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let breeding = if cores.workers_breed {
        "each breeding its own batches".to_owned()
    } else {
        format!(
            "breeding by {} mutator{}",
            cores.mutators,
            plural(cores.mutators)
        )
    };
    writeln!(
        stdout,
        "inference on {} by {} worker{}, {breeding}",
        summary.backend,
        cores.workers,
        plural(cores.workers),
    )?;
    writeln!(stdout, "run folder: {}", out.display())?;
    Ok(())
}

/// `runs/<name>-<unix time>`.
pub fn default_out(name: &str) -> PathBuf {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from("runs").join(format!("{name}-{t}"))
}

/// The resolved config as TOML, with a comment naming its base folder.
pub fn toml_of(config: &RunConfig) -> Result<String> {
    Ok(format!(
        "# Resolved config of this run; relative paths are relative to {}\n{}",
        config.base_dir.display(),
        toml::to_string(config).context("cannot serialise the config")?
    ))
}
