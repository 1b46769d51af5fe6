//! The run folder a finished run leaves: `gallery/` (one PNG per class champion, a labelled
//! montage, an HTML index), `summary.json` and the resolved `config.toml`.

use std::path::{Path, PathBuf};

use pareidolia_core::gallery::{self, GalleryEntry};
use pareidolia_core::image_io::Image;
use pareidolia_core::summary::{ClassSummary, RunSummary};
use pareidolia_core::{Champion, EncodingPlugin, RunIdentity, parallel};

use crate::run::outcome::RunOutcome;

/// Writing the run folder failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunFolderError {
    /// A file could not be written.
    #[error(
        "cannot write {path}: {message}; check that the folder is writable and the disk has space"
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A champion could not be rendered again.
    #[error("cannot render the champion of class {class}: {message}")]
    Render {
        /// The class.
        class: usize,
        /// The plugin's error.
        message: String,
    },
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> RunFolderError {
    RunFolderError::Write {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Renders the champions with the run's encoding and writes the run folder; returns the
/// summary it wrote. `identity` says which models, backends and plugins made the run (for
/// an export, the one its checkpoint records).
pub fn write(
    dir: &Path,
    encoding: &EncodingPlugin,
    identity: &RunIdentity,
    seed: u64,
    outcome: &RunOutcome,
) -> Result<RunSummary, RunFolderError> {
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    let started = std::time::Instant::now();
    let canvas = encoding.canvas();
    let filled: Vec<(usize, &Champion)> = outcome
        .cells
        .iter()
        .enumerate()
        .filter_map(|(class, cell)| Some((class, cell.as_ref()?)))
        .collect();
    // Rendered on every core: an encoding instance takes calls from several threads at once
    // (docs/plugins.md, "Threads and randomness"), as the mutators make them.
    let entries = parallel::map(&filled, parallel::threads(), |&(class, champion)| {
        let mut pixels = vec![0u8; encoding.image_len()];
        encoding
            .render(&champion.genome, &mut pixels)
            .map_err(|e| RunFolderError::Render {
                class,
                message: e.to_string(),
            })?;
        Ok(GalleryEntry {
            class,
            label: identity.label(class),
            confidence: champion.confidence(class),
            fitness: champion
                .probability(class)
                .is_some_and(|p| p != champion.score(class))
                .then(|| champion.score(class)),
            generation: champion.generation,
            image: Image {
                width: canvas.width,
                height: canvas.height,
                channels: canvas.channels,
                pixels,
            },
        })
    })
    .into_iter()
    .collect::<Result<Vec<_>, RunFolderError>>()?;
    let gallery_dir = dir.join("gallery");
    // The gallery is derived output: a resumed run replaces the earlier session's.
    if gallery_dir.exists() {
        std::fs::remove_dir_all(&gallery_dir).map_err(|e| write_err(&gallery_dir, e))?;
    }
    gallery::write_gallery(&gallery_dir, &entries).map_err(|e| write_err(&gallery_dir, e))?;
    tracing::info!(
        champions = entries.len(),
        seconds = started.elapsed().as_secs_f64(),
        dir = %gallery_dir.display(),
        "gallery written"
    );
    let p = &outcome.progress;
    let classes = (0..outcome.cells.len())
        .filter(|&class| identity.is_cell(class))
        .map(|class| {
            let entry = entries.iter().find(|e| e.class == class);
            ClassSummary {
                class,
                label: identity.label(class),
                confidence: entry.map(|e| e.confidence),
                fitness: outcome.cells[class].as_ref().map(|c| c.score(class)),
                generation: entry.map(|e| e.generation),
                image: entry.map(|e| format!("gallery/{}", gallery::file_name(e))),
            }
        })
        .collect();
    let model = identity.primary();
    let summary = RunSummary {
        pareidolia_version: env!("CARGO_PKG_VERSION").to_owned(),
        seed,
        generations: p.generation,
        evaluations: p.evaluations,
        lost: p.lost,
        replacements: p.replacements,
        wall_time_s: p.elapsed_s,
        evaluations_per_s: p.evaluations as f64 / p.elapsed_s.max(1e-9),
        model: model.name.clone(),
        model_sha256: model.sha256.clone(),
        backend: model.backend_text(),
        backend_selection: model.backend_selection.clone(),
        encoding: identity.encoding.clone(),
        fitness: identity.fitness.clone(),
        models: identity.models.clone(),
        stats: p.stats.clone(),
        confidence_stats: p.confidence_stats.clone(),
        stage_times: p.times,
        stop: p.stop.clone(),
        classes,
        ascent: outcome.ascent.clone(),
        skipped_classes: identity.skipped_classes(),
    };
    let summary_path = dir.join("summary.json");
    let json = serde_json::to_string_pretty(&summary).map_err(|e| write_err(&summary_path, e))?;
    std::fs::write(&summary_path, json + "\n").map_err(|e| write_err(&summary_path, e))?;
    Ok(summary)
}
