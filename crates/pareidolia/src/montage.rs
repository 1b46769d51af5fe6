//! `pareidolia montage RUN_DIR --out FILE`: a captioned grid of chosen champions, read from a
//! run folder's `summary.json` and gallery PNGs (nothing is re-rendered or re-scored), for
//! reports and READMEs.

use anyhow::{Context, Result, bail};
use pareidolia_core::gallery::{GalleryEntry, montage as grid};
use pareidolia_core::image_io::{read_png, write_png};
use pareidolia_core::summary::RunSummary;

use crate::cli::MontageArgs;

/// Runs the command.
pub fn montage(args: MontageArgs) -> Result<()> {
    let path = args.run_dir.join("summary.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}; is {} a finished or exported run folder?",
            path.display(),
            args.run_dir.display()
        )
    })?;
    let summary: RunSummary = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a run summary", path.display()))?;
    let filled: Vec<_> = summary
        .classes
        .iter()
        .filter(|c| c.confidence.is_some() && c.image.is_some())
        .collect();
    let chosen: Vec<_> = if args.classes.is_empty() {
        let mut best = filled.clone();
        let score = |c: &&pareidolia_core::summary::ClassSummary| c.confidence.unwrap_or_default();
        best.sort_by(|a, b| score(b).total_cmp(&score(a)).then(a.class.cmp(&b.class)));
        best.into_iter().take(args.top).collect()
    } else {
        let mut chosen = Vec::new();
        for &class in &args.classes {
            match filled.iter().find(|c| c.class == class) {
                Some(c) => chosen.push(*c),
                None => bail!(
                    "class {class} has no champion in {} (the run has classes 0..{})",
                    path.display(),
                    summary.classes.len().saturating_sub(1)
                ),
            }
        }
        chosen
    };
    if chosen.is_empty() {
        bail!("{} lists no champion to show", path.display());
    }
    let mut entries = Vec::with_capacity(chosen.len());
    for c in chosen {
        let file = args.run_dir.join(c.image.as_deref().unwrap_or_default());
        entries.push(GalleryEntry {
            class: c.class,
            label: c.label.clone(),
            confidence: c.confidence.unwrap_or_default(),
            fitness: None,
            generation: c.generation.unwrap_or_default(),
            image: read_png(&file)?,
        });
    }
    write_png(&args.out, &grid(&entries))?;
    println!(
        "{} champions from {} -> {}",
        entries.len(),
        args.run_dir.display(),
        args.out.display()
    );
    Ok(())
}
