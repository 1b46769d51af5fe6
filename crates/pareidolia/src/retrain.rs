//! `pareidolia train` and `pareidolia retrain`: arguments to a [`TrainJob`] or a retrain
//! [`Request`], a progress bar, SIGTERM/SIGINT to a stop handle; the work is in
//! `pareidolia_experiments::retrain`.

use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use pareidolia_core::RunConfig;
use pareidolia_daemon::StopHandle;
use pareidolia_daemon::service;
use pareidolia_eval::{Backend as _, Model, ModelRef};
use pareidolia_experiments::retrain::{
    self, CSV_FILE, Event, Finish, LabelledBytes, PLAN_FILE, Request, Retrain, TrainJob,
};
use pareidolia_grad::TrainingData;
use pareidolia_grad::train::{BatchNormMode, Init, SgdRecipe};

use crate::cli::{BatchNormArg, RecipeArgs, RetrainArgs, TrainArgs};

fn recipe_of(args: &RecipeArgs, init: Init) -> SgdRecipe {
    let caffe = SgdRecipe::caffe_lenet(args.seed.unwrap_or(1));
    SgdRecipe {
        iterations: args.iterations.unwrap_or(caffe.iterations),
        batch: args.batch.unwrap_or(caffe.batch),
        base_lr: args.lr.unwrap_or(caffe.base_lr),
        init,
        batch_norm: match args.batch_norm {
            Some(BatchNormArg::Frozen) => BatchNormMode::Frozen,
            Some(BatchNormArg::Train) | None => BatchNormMode::Train,
        },
        ..caffe
    }
}

fn threads_of(args: &RecipeArgs) -> usize {
    match args.threads {
        Some(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

fn recipe_given(args: &RecipeArgs) -> bool {
    args.iterations.is_some()
        || args.seed.is_some()
        || args.batch.is_some()
        || args.threads.is_some()
        || args.batch_norm.is_some()
        || args.lr.is_some()
}

fn bar(quiet: bool, len: u64, template: &str) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len)
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}

/// A stop handle that SIGTERM or SIGINT requests, watched by a thread of its own.
fn stop_flag() -> Result<StopHandle> {
    let stop = StopHandle::new();
    let flag = stop.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal watcher")?;
    std::thread::spawn(move || {
        runtime.block_on(service::shutdown_signal());
        flag.request();
        eprintln!(
            "stop requested: finishing the step in flight; run the same command again to continue"
        );
    });
    Ok(stop)
}

/// The MNIST digits LeNet was trained on, wherever the command runs from: the checkout this
/// binary was built from, else an installed copy beside the executable. (`data/mnist-5k`
/// relative to the working folder failed anywhere but the repository's root.)
pub(crate) fn default_train_data() -> Result<PathBuf> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-5k");
    let installed = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("../share/pareidolia/mnist-5k")));
    let tried: Vec<PathBuf> = std::iter::once(built).chain(installed).collect();
    if let Some(found) = tried
        .iter()
        .find(|d| d.join("train-labels-idx1-ubyte.gz").is_file())
    {
        return Ok(std::path::absolute(found).unwrap_or_else(|_| found.clone()));
    }
    bail!(
        "no --train-data given, and the default MNIST digits are not at {}; give --train-data DIR (a folder of IDX files)",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    )
}

/// `pareidolia train`.
pub fn train(args: TrainArgs) -> Result<()> {
    pareidolia_grad::keep_freed_memory();
    let mut base = Model::load(&ModelRef::parse(&args.model, &std::env::current_dir()?))
        .with_context(|| format!("cannot load the model {}", args.model))?;
    if let Some(path) = &args.labels {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the labels file {}", path.display()))?;
        let labels: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if labels.len() != base.classes() {
            bail!(
                "{} holds {} labels, but model {} has {} outputs; give one label per output, in class order",
                path.display(),
                labels.len(),
                base.name(),
                base.classes()
            );
        }
        base.labels = labels;
    }
    {
        // The one output check every command applies (a probabilities manifest on a logits
        // model is refused here, not after an hour of training).
        let mut prepared = pareidolia_eval::TractBackend
            .prepare(&base)
            .with_context(|| format!("cannot prepare the model {}", args.model))?;
        pareidolia_eval::check_output(
            &base,
            pareidolia_eval::ViewSpec::identity(&base),
            prepared.as_mut(),
            1,
            &args.model,
        )?;
    }
    let train_data = match &args.train_data {
        Some(dir) => dir.clone(),
        None => default_train_data()?,
    };
    let data = TrainingData::open(&train_data)?;
    data.check_for(&base.manifest.input, &base.labels, base.name())?;
    let init = if args.keep_weights {
        Init::Keep
    } else {
        Init::Xavier
    };
    let recipe = recipe_of(&args.recipe, init);
    recipe.validate()?;
    let train = LabelledBytes::from_set(&data.train);
    let held_out = data.held_out.as_ref().map(LabelledBytes::from_set);
    let name = args.name.clone().unwrap_or_else(|| {
        args.out
            .file_name()
            .map_or("trained".into(), |n| n.to_string_lossy().into_owned())
    });
    let job = TrainJob {
        base: &base,
        widen: false,
        name,
        train: &train,
        held_out: held_out.as_ref(),
        recipe: recipe.clone(),
        threads: threads_of(&args.recipe),
        data_provenance: format!(
            "{} ({} training images{})",
            data.dir.display(),
            data.train.len(),
            data.held_out
                .as_ref()
                .map_or(String::new(), |h| format!(", {} held out", h.len()))
        ),
    };
    let stop = stop_flag()?;
    let progress = bar(
        args.quiet,
        recipe.iterations,
        "{elapsed_precise} [{bar:30}] iteration {pos}/{len} {msg}",
    );
    let record = retrain::train_model(&job, &args.out, &mut |p| {
        progress.set_position(p.iteration);
        progress.set_message(format!("loss {:.4}  lr {:.5}", p.loss, p.rate));
        if stop.is_requested() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    progress.finish_and_clear();
    let Some(record) = record else {
        bail!("training stopped before its last iteration; nothing was written");
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} iterations in {:.1} s ({:.0} images/s, {} threads); final loss {:.4}",
        record.report.iterations,
        record.report.seconds,
        record.report.images_per_s,
        record.report.threads,
        record.report.loss_curve.last().map_or(f64::NAN, |p| p.1)
    )?;
    if let Some(acc) = record.held_out_accuracy {
        writeln!(
            out,
            "held-out accuracy {:.2}% on {} images",
            acc * 100.0,
            record.held_out_count
        )?;
    }
    writeln!(out, "model folder: {}", args.out.display())?;
    Ok(())
}

/// `pareidolia retrain`.
pub fn retrain(args: RetrainArgs) -> Result<()> {
    pareidolia_grad::keep_freed_memory();
    let continuing = args.out.join(PLAN_FILE).exists();
    // A fresh retrain into a new folder that fails before any run has scored a generation
    // leaves nothing behind, so the same command can simply be run again.
    let created = !args.out.exists();
    let session = if continuing
        && args.config.is_none()
        && args.images.is_none()
        && args.train_data.is_none()
        && args.generations.is_none()
        && !recipe_given(&args.recipe)
    {
        Retrain::open(&args.out, args.iterations)?
    } else {
        let mut config = match &args.config {
            Some(path) => RunConfig::from_file(path)?,
            None => RunConfig::builtin_default(),
        };
        if let Some(g) = args.generations {
            config.generations = g;
        }
        config.validate("the command line")?;
        let request = Request {
            config,
            iterations: args.iterations.unwrap_or(1),
            images_per_iteration: args.images,
            train_data: match &args.train_data {
                Some(dir) => dir.clone(),
                None => default_train_data()?,
            },
            recipe: recipe_of(&args.recipe, Init::Xavier),
            // 0: every core, resolved once by the plan.
            threads: args.recipe.threads.unwrap_or(0),
        };
        Retrain::create(&args.out, request)?
    };
    let plan = session.plan().clone();
    let stop = stop_flag()?;
    let progress = bar(
        args.quiet,
        plan.runs_per_iteration as u64,
        "{elapsed_precise} {prefix} [{bar:30}] {pos}/{len} {msg}",
    );
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "retrain: {} iterations, {} fooling images ({} runs) each, {} SGD iterations per model; folder {}",
        plan.iterations,
        plan.images_per_iteration,
        plan.runs_per_iteration,
        plan.recipe.iterations,
        args.out.display()
    )?;
    let mut printed = Ok(());
    let finish = session.run(
        &mut |event| match event {
            Event::Training {
                iteration,
                progress: p,
            } => {
                progress.set_prefix(format!("iteration {iteration}: training"));
                progress.set_length(p.iterations);
                progress.set_position(p.iteration);
                progress.set_message(format!("loss {:.4}", p.loss));
            }
            Event::Measured {
                iteration,
                held_out_accuracy,
                recognised,
            } => {
                progress.set_prefix(format!("iteration {iteration}: evolving"));
                progress.set_length(plan.runs_per_iteration as u64);
                progress.set_position(0);
                progress.set_message(format!(
                    "held-out {:.2}%{}",
                    held_out_accuracy * 100.0,
                    recognised.map_or(String::new(), |r| format!(
                        ", {:.1}% of earlier fooling images recognised",
                        r * 100.0
                    ))
                ));
            }
            Event::Run {
                done, summary, ..
            } => {
                progress.set_position(done as u64);
                progress.set_message(format!(
                    "last run: median {:.4}%, {} of {} >= 99.99%",
                    summary.stats.median * 100.0,
                    summary.stats.at_least[3],
                    summary.stats.cells
                ));
            }
            Event::Iteration(r) => {
                let line = format!(
                    "iteration {}: {} ({} classes) held-out {:.2}%{}; {} fooling images, median {:.4}%, min {:.4}%, {:.1}% >= 99.99%",
                    r.iteration,
                    r.model,
                    r.classes,
                    r.held_out_accuracy * 100.0,
                    r.earlier_fooling_recognised.map_or(String::new(), |s| format!(
                        ", labels {:.1}% of {} earlier fooling images `fooling`",
                        s * 100.0,
                        r.earlier_fooling
                    )),
                    r.images,
                    r.median_confidence * 100.0,
                    r.min_confidence * 100.0,
                    r.share_at_least_9999 * 100.0
                );
                progress.suspend(|| {
                    if printed.is_ok() {
                        printed = writeln!(out, "{line}");
                    }
                });
            }
        },
        stop,
    );
    progress.finish_and_clear();
    let finish = match finish {
        Ok(finish) => finish,
        Err(e) if created && !continuing && !any_history(&args.out) => {
            let removed = std::fs::remove_dir_all(&args.out).is_ok();
            let e = anyhow::Error::from(e);
            return Err(if removed {
                e.context(format!(
                    "the retrain failed before its first generation; {} was removed, so fix the cause and run the same command again",
                    args.out.display()
                ))
            } else {
                e
            });
        }
        Err(e) => return Err(e.into()),
    };
    printed?;
    match finish {
        Finish::Done => writeln!(out, "done: {}", args.out.join(CSV_FILE).display())?,
        // A status, not a result: on stderr beside the log.
        Finish::Stopped { iteration } => eprintln!(
            "stopped during iteration {iteration}; `pareidolia retrain --out {}` continues it",
            args.out.display()
        ),
    }
    Ok(())
}

/// Whether any run under `dir` has scored a generation (a `history.csv` exists).
fn any_history(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            any_history(&path)
        } else {
            path.file_name().is_some_and(|n| n == "history.csv")
        }
    })
}
