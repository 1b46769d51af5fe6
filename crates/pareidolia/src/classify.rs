//! `pareidolia classify`: what a model says about image files on disk, so a user (and the
//! tests) can check a gallery from the PNG files themselves, not from in-memory numbers; and,
//! with `--data`, how accurate a model is on labelled images (top-1 and top-5), the first
//! check of a new model's manifest (a wrong normalisation still "classifies", only badly).
//!
//! Without `--model`, images that all lie in one run folder's `gallery/` are scored with that
//! run's first model (and its view), since a run's champions mean nothing to another model;
//! anything else is scored with `builtin:lenet-mnist`. Either way the model used is printed
//! on stderr. Every model goes through [`pareidolia_eval::check_output`] once prepared.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pareidolia_core::RunConfig;
use pareidolia_core::image_io::read_png;
use pareidolia_eval::{
    Model, ModelRef, OutputKind, PreparedModel, View, ViewSpec, backend_for, check_output,
    prepare_viewed,
};
use pareidolia_grad::read_held_out;
use pareidolia_plugin::softmax;

use crate::cli::ClassifyArgs;

/// The model a `classify` scores with, and why that one.
struct Chosen {
    model: Model,
    origin: String,
    view: View,
}

/// The run folder whose `gallery/` holds every image, if there is one.
fn run_folder_of(images: &[PathBuf]) -> Option<PathBuf> {
    let mut run = None;
    for path in images {
        let gallery = std::path::absolute(path).ok()?.parent()?.to_path_buf();
        if gallery.file_name()? != "gallery" {
            return None;
        }
        let dir = gallery.parent()?.to_path_buf();
        if !dir.join("config.toml").is_file() {
            return None;
        }
        match &run {
            None => run = Some(dir),
            Some(r) if *r != dir => return None,
            Some(_) => {}
        }
    }
    run
}

fn choose_model(args: &ClassifyArgs) -> Result<Chosen> {
    let here = Path::new(".");
    if let Some(name) = &args.model {
        let model = Model::load(&ModelRef::parse(name, here))?;
        return Ok(Chosen {
            model,
            origin: name.clone(),
            view: args.view.unwrap_or_default(),
        });
    }
    if let Some(run) = run_folder_of(&args.images) {
        let config = RunConfig::from_file(&run.join("config.toml")).with_context(|| {
            format!(
                "the images are in the gallery of run folder {}, whose config.toml names the model to score them with",
                run.display()
            )
        })?;
        if let Some(m) = config.primary_model() {
            let model_ref = ModelRef::parse(&m.manifest, &config.base_dir);
            let model = Model::load(&model_ref).with_context(|| {
                format!(
                    "cannot load {model_ref}, the model of run folder {}; name one with --model",
                    run.display()
                )
            })?;
            eprintln!(
                "scoring with {model_ref} (model `{}`), the model of run folder {}; --model chooses another",
                model.name(),
                run.display()
            );
            return Ok(Chosen {
                model,
                origin: model_ref.to_string(),
                view: args.view.unwrap_or(m.view),
            });
        }
    }
    let origin = "builtin:lenet-mnist";
    eprintln!(
        "scoring with {origin} (no --model given, and the images are not in one run folder's gallery)"
    );
    Ok(Chosen {
        model: Model::load(&ModelRef::parse(origin, here))?,
        origin: origin.into(),
        view: args.view.unwrap_or_default(),
    })
}

/// The model prepared behind `view`, its output checked.
fn prepare(
    args: &ClassifyArgs,
    chosen: &Chosen,
    view: ViewSpec,
    check_batch: usize,
) -> Result<Box<dyn PreparedModel>> {
    let mut prepared = prepare_viewed(backend_for(args.backend).as_ref(), &chosen.model, view)
        .with_context(|| format!("cannot prepare model {}", chosen.origin))?;
    check_output(
        &chosen.model,
        view,
        prepared.as_mut(),
        check_batch,
        &chosen.origin,
    )?;
    Ok(prepared)
}

/// Probabilities of every image, `classes` per image.
fn probabilities(
    prepared: &mut dyn PreparedModel,
    output: OutputKind,
    pixels: &[u8],
    image_len: usize,
    batch: usize,
) -> Result<Vec<f32>> {
    let mut outputs = Vec::with_capacity(pixels.len() / image_len.max(1));
    for chunk in pixels.chunks(batch.max(1) * image_len) {
        let row = prepared
            .infer(chunk, chunk.len() / image_len)
            .context("inference failed")?;
        outputs.extend(row);
    }
    if output == OutputKind::Logits {
        let classes = prepared.classes();
        for row in outputs.chunks_mut(classes.max(1)) {
            let logits = row.to_vec();
            softmax(&logits, row);
        }
    }
    Ok(outputs)
}

/// Runs the command.
pub fn classify(args: ClassifyArgs) -> Result<()> {
    let chosen = choose_model(&args)?;
    if let Some(data) = &args.data {
        return accuracy(&args, &chosen, data);
    }
    let model = &chosen.model;
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
        view: chosen.view,
        width,
        height,
    };
    let batch = args.batch.max(1);
    let mut prepared = prepare(&args, &chosen, view, batch.min(args.images.len()))
        .with_context(|| format!("cannot classify {}", args.images[0].display()))?;
    let image_len = view.canvas_len(model);
    let probs_all = probabilities(
        prepared.as_mut(),
        view.output(model),
        &pixels,
        image_len,
        batch,
    )?;
    let classes = model.classes();
    let mut out = std::io::stdout().lock();
    for (path, probs) in args.images.iter().zip(probs_all.chunks_exact(classes)) {
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

fn accuracy(args: &ClassifyArgs, chosen: &Chosen, dir: &Path) -> Result<()> {
    let model = &chosen.model;
    let set = read_held_out(dir, model).map_err(anyhow::Error::msg)?;
    let view = ViewSpec::identity(model);
    let view = ViewSpec {
        view: chosen.view,
        ..view
    };
    let batch = args.batch.max(1);
    let mut prepared = prepare(args, chosen, view, batch.min(set.labels.len()))?;
    let image_len = view.canvas_len(model);
    let probs = probabilities(
        prepared.as_mut(),
        view.output(model),
        &set.pixels,
        image_len,
        batch,
    )?;
    let classes = model.classes();
    let k = 5.min(classes);
    let (mut top1, mut top5) = (0usize, 0usize);
    let mut per_class = vec![(0usize, 0usize); classes];
    for (p, &label) in probs.chunks_exact(classes).zip(&set.labels) {
        // The rank of the true class: how many classes score strictly higher.
        let rank = p.iter().filter(|&&v| v > p[label]).count();
        top1 += usize::from(rank == 0);
        top5 += usize::from(rank < k);
        per_class[label].0 += usize::from(rank == 0);
        per_class[label].1 += 1;
    }
    let n = set.labels.len();
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    let mut out = std::io::stdout().lock();
    if args.json {
        let classes_json: Vec<_> = per_class
            .iter()
            .enumerate()
            .filter(|(_, (_, total))| *total > 0)
            .map(|(c, (right, total))| {
                serde_json::json!({"class": c, "label": model.label(c), "images": total, "top1": *right as f64 / *total as f64})
            })
            .collect();
        let line = serde_json::json!({
            "model": chosen.origin, "data": set.what, "images": n,
            "top1": top1 as f64 / n as f64, "top5": top5 as f64 / n as f64, "top5_k": k,
            "classes": classes_json,
        });
        writeln!(out, "{line}")?;
        return Ok(());
    }
    writeln!(
        out,
        "model {} ({}) on {}:",
        model.name(),
        chosen.origin,
        set.what
    )?;
    writeln!(
        out,
        "top-1 {:.2}% ({top1}/{n}), top-{k} {:.2}% ({top5}/{n})",
        pct(top1, n),
        pct(top5, n)
    )?;
    for (c, (right, total)) in per_class.iter().enumerate() {
        if *total > 0 {
            writeln!(
                out,
                "  {c:>4} {:<24} top-1 {:>6.2}% ({right}/{total})",
                model.label(c),
                pct(*right, *total)
            )?;
        }
    }
    Ok(())
}
