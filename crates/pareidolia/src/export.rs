//! `pareidolia export RUN_DIR --out DIR`: the gallery, montage, HTML index and summary of a
//! run's newest checkpoint, re-rendered with the run's own encoding, also while its daemon
//! keeps running (checkpoints are immutable once written).

use anyhow::{Context, Result, bail};
use pareidolia_core::checkpoint::CheckpointStore;
use pareidolia_daemon::{Experiment, RunOutcome, run_folder};

use crate::cli::ExportArgs;

/// Runs the command.
pub fn export(args: ExportArgs) -> Result<()> {
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!(
            "{} already holds files; choose an empty or new folder for the export",
            args.out.display()
        );
    }
    let (checkpoint, path, skipped) = CheckpointStore::new(&args.run_dir, 1).load_newest()?;
    for (bad, why) in &skipped {
        tracing::warn!(checkpoint = %bad.display(), reason = %why, "skipping a damaged checkpoint");
    }
    let mut config = checkpoint.meta.config.clone();
    config.base_dir = checkpoint.meta.base_dir.clone();
    let experiment =
        Experiment::setup(config).context("cannot load the run's model and plugins")?;
    let outcome = RunOutcome::from_checkpoint(&checkpoint, path.clone());
    let summary = run_folder::write(&args.out, &experiment, &outcome)?;
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
