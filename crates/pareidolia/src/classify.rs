//! `pareidolia classify`: what a model says about image files on disk, so a user (and the
//! tests) can check a gallery from the PNG files themselves, not from in-memory numbers.

use std::io::Write as _;

use anyhow::{Context, Result, bail};
use pareidolia_core::image_io::read_png;
use pareidolia_eval::{Model, ModelRef, OutputKind, ViewSpec, backend_for, prepare_viewed};
use pareidolia_plugin::softmax;

use crate::cli::ClassifyArgs;

/// Runs the command.
pub fn classify(args: ClassifyArgs) -> Result<()> {
    let model = Model::load(&ModelRef::parse(&args.model, std::path::Path::new(".")))?;
    let input = model.manifest.input.clone();
    let mut pixels = Vec::new();
    let mut canvas = None;
    for path in &args.images {
        let image = read_png(path)?.to_channels(input.channels);
        let size = (image.width, image.height);
        match canvas {
            None => canvas = Some(size),
            Some(first) if first != size => bail!(
                "{} is {}x{} pixels but {} is {}x{}; classify images of one size at a time",
                path.display(),
                size.0,
                size.1,
                args.images[0].display(),
                first.0,
                first.1
            ),
            Some(_) => {}
        }
        pixels.extend_from_slice(&image.pixels);
    }
    let (width, height) = canvas.unwrap_or((input.width, input.height));
    let view = ViewSpec {
        view: args.view,
        width,
        height,
    };
    let mut prepared = prepare_viewed(backend_for(args.backend).as_ref(), &model, view)
        .with_context(|| format!("cannot classify {}", args.images[0].display()))?;
    let image_len = view.canvas_len(&model);
    let mut outputs = Vec::with_capacity(args.images.len() * model.classes());
    for chunk in pixels.chunks(args.batch.max(1) * image_len) {
        outputs.extend(
            prepared
                .infer(chunk, chunk.len() / image_len)
                .context("inference failed")?,
        );
    }
    let classes = model.classes();
    let mut out = std::io::stdout().lock();
    for (path, row) in args.images.iter().zip(outputs.chunks_exact(classes)) {
        let mut probs = row.to_vec();
        if view.output(&model) == OutputKind::Logits {
            softmax(row, &mut probs);
        }
        let mut order: Vec<usize> = (0..classes).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        if args.json {
            let top: Vec<_> = order
                .iter()
                .take(args.top)
                .map(|&c| serde_json::json!({"class": c, "label": model.label(c), "probability": probs[c]}))
                .collect();
            let line = serde_json::json!({"image": path, "top": top, "probabilities": probs});
            writeln!(out, "{line}")?;
        } else {
            let top: Vec<String> = order
                .iter()
                .take(args.top)
                .map(|&c| format!("{} {:.4}%", model.label(c), probs[c] * 100.0))
                .collect();
            writeln!(out, "{}: {}", path.display(), top.join(", "))?;
        }
    }
    Ok(())
}
