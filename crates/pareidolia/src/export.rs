//! `pareidolia export RUN_DIR --out DIR`: the gallery, montage, HTML index and summary of a
//! run's newest checkpoint, re-rendered with the run's own encoding, also while its daemon
//! keeps running (checkpoints are immutable once written). Both commands load the run's
//! model and plugins without preparing the model: nothing here infers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pareidolia_core::checkpoint::{Checkpoint, CheckpointStore};
use pareidolia_core::{RunConfig, RunIdentity, resume};
use pareidolia_daemon::run::folder;
use pareidolia_daemon::{RunOutcome, Setup};

use crate::cli::{ExportArgs, ExportGenomeArgs};

/// A run as its newest valid checkpoint records it, with its model and plugins loaded (not
/// prepared) and its identity (what a format-1 checkpoint did not record filled in from the
/// model loaded now, if it is the same file).
pub(crate) struct StoredRun {
    pub checkpoint: Checkpoint,
    pub path: PathBuf,
    pub setup: Setup,
    pub identity: RunIdentity,
}

/// Opens a run folder's newest valid checkpoint (warning about damaged newer ones) and
/// loads what it names: as the run's own config names it, or, with `config` (`--config`),
/// as that file names it, after checking that it is the same run (what `resume --config`
/// checks: a run folder moved to another checkout, whose relative model paths no longer
/// resolve from where the run was started).
pub(crate) fn open_run(run_dir: &Path, config: Option<&Path>) -> Result<StoredRun> {
    let (checkpoint, path, skipped) = CheckpointStore::new(run_dir, 1).load_newest()?;
    for (bad, why) in &skipped {
        tracing::warn!(checkpoint = %bad.display(), reason = %why, "skipping a damaged checkpoint");
    }
    let run_config = checkpoint.config();
    let setup = match config {
        Some(file) => {
            let new = RunConfig::from_file(file)?;
            let (config, _) =
                resume::continue_with(&run_config, &new, &file.display().to_string())
                    .with_context(|| {
                        format!(
                            "--config {} is not the config of the run in {}",
                            file.display(),
                            run_dir.display()
                        )
                    })?;
            Setup::load(config).with_context(|| {
                format!(
                    "cannot load the run's model and plugins as {} names them",
                    file.display()
                )
            })?
        }
        None => Setup::load(run_config).with_context(|| {
            format!(
                "cannot load the run's model and plugins (its config names them relative to {}); if the run folder was moved from where it ran, give the run's config at its new place with --config FILE (e.g. the configs/ file it was started with)",
                checkpoint.config().base_dir.display()
            )
        })?,
    };
    let mut identity = checkpoint.meta.identity.clone();
    identity.fill_unrecorded(&setup.identity());
    Ok(StoredRun {
        checkpoint,
        path,
        setup,
        identity,
    })
}

/// Runs the command.
pub fn export(args: ExportArgs) -> Result<()> {
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!(
            "{} already holds files; choose an empty or new folder for the export",
            args.out.display()
        );
    }
    let StoredRun {
        checkpoint,
        path,
        setup,
        identity,
    } = open_run(&args.run_dir, args.config.as_deref())?;
    let outcome = RunOutcome::from_checkpoint(&checkpoint, path.clone());
    let summary = folder::write(
        &args.out,
        &setup.encoding,
        &identity,
        checkpoint.meta.config.seed,
        &outcome,
    )?;
    println!(
        "exported generation {} ({} classes, median {:.4}%) from {} to {}",
        summary.generations,
        summary.classes.len(),
        summary.stats.median * 100.0,
        path.display(),
        args.out.display()
    );
    Ok(())
}

/// Runs `export-genome`.
pub fn export_genome(args: ExportGenomeArgs) -> Result<()> {
    let (checkpoint, path, _) = CheckpointStore::new(&args.run_dir, 1).load_newest()?;
    let classes = checkpoint.cells.len();
    let Some(cell) = checkpoint.cells.get(args.class) else {
        bail!(
            "class {} does not exist: the run's model has classes 0..{}",
            args.class,
            classes.saturating_sub(1)
        );
    };
    let Some(champion) = cell else {
        bail!(
            "class {} has no champion yet in {}",
            args.class,
            path.display()
        )
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let stem = args.out.join(format!("genome-{:03}", args.class));
    let write = |ext: &str, bytes: &[u8]| -> Result<std::path::PathBuf> {
        let p = stem.with_extension(ext);
        std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
        Ok(p)
    };
    // The raw bytes first: they are what the checkpoint holds, whether or not the encoding
    // installed now can decode them.
    let bin = write("bin", &champion.genome)?;
    let raw_only = |why: String| {
        anyhow::anyhow!(
            "wrote the raw genome of class {} ({} bytes) to {}, but {why}",
            args.class,
            champion.genome.len(),
            bin.display()
        )
    };
    let setup = Setup::load(checkpoint.config())
        .map_err(|e| raw_only(format!("cannot load the run's model and plugins: {e:#}")))?;
    let description = setup.encoding.describe(&champion.genome).map_err(|e| {
        raw_only(format!(
            "encoding `{}` cannot decode it: {e}",
            setup.encoding.name()
        ))
    })?;
    let json: serde_json::Value = serde_json::from_str(&description).map_err(|e| {
        raw_only(format!(
            "encoding `{}` described it with invalid JSON: {e}",
            setup.encoding.name()
        ))
    })?;
    let mut written = vec![
        bin.clone(),
        write("json", serde_json::to_string_pretty(&json)?.as_bytes())?,
    ];
    if let Some(dot) = json.get("dot").and_then(|d| d.as_str()) {
        written.push(write("dot", dot.as_bytes())?);
    }
    println!(
        "class {} ({}), score {:.6}, generation {}: {}",
        args.class,
        setup.model().model.label(args.class),
        champion.score(args.class),
        champion.generation,
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
