//! `pareidolia transfer RUN_DIR --model M ...`: the run's champions from its newest
//! checkpoint, scored by other models (`pareidolia_experiments::transfer`), written as
//! `transfer.csv`, `transfer.md` (also printed) and `transfer.png`.

use std::io::Write as _;

use anyhow::{Context, Result};
use pareidolia_core::image_io::write_png;
use pareidolia_experiments::class_map::LabelMatch;
use pareidolia_experiments::transfer::{self, TargetSpec};

use crate::cli::TransferArgs;
use crate::export::{StoredRun, open_run};

/// Runs the command.
pub fn transfer(args: TransferArgs) -> Result<()> {
    let StoredRun {
        checkpoint,
        path,
        setup,
        identity,
    } = open_run(&args.run_dir, args.config.as_deref())?;
    let specs: Vec<TargetSpec> = args
        .models
        .iter()
        .map(|m| TargetSpec {
            manifest: m.clone(),
            backend: args.backend,
            view: args.view,
            labels: match (&args.class_map, args.ignore_labels) {
                (Some(file), _) => LabelMatch::Map(file.clone()),
                (None, true) => LabelMatch::ByIndex,
                (None, false) => LabelMatch::Same,
            },
        })
        .collect();
    let targets = transfer::load_targets(&specs, setup.model(), std::path::Path::new("."))
        .context("cannot load the target models")?;
    let table = transfer::score(
        &checkpoint.cells,
        &setup.encoding,
        &identity,
        &targets,
        args.batch,
    )
    .context("cannot score the champions")?;
    let out = args.out.unwrap_or_else(|| args.run_dir.join("transfer"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let p = out.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))
    };
    let (width, height) = (setup.model().view.width, setup.model().view.height);
    let scaled: String = targets
        .iter()
        .map(|t| &t.setup)
        .filter(|t| (t.view.width, t.view.height) != (width, height))
        .map(|t| {
            format!(
                " {} sees them scaled up (bilinear) to {}x{}, its input being larger.",
                t.model.name(),
                t.view.width,
                t.view.height
            )
        })
        .collect();
    let markdown = format!(
        "{}\nFrom {} (generation {}); view `{}` at {width}x{height}.{scaled}\n",
        table.markdown(),
        path.display(),
        checkpoint.meta.generation,
        setup.model().view.view,
    );
    write("transfer.csv", table.csv().as_bytes())?;
    write("transfer.md", markdown.as_bytes())?;
    let png = out.join("transfer.png");
    write_png(&png, &table.heatmap()).with_context(|| format!("cannot write {}", png.display()))?;
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{markdown}")?;
    writeln!(
        stdout,
        "written: {}, transfer.md, transfer.png",
        out.join("transfer.csv").display()
    )?;
    Ok(())
}
