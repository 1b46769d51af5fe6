//! `pareidolia audit`: the flags into a [`Request`], one progress bar over every part,
//! SIGTERM/SIGINT to a stop flag; the work is in `pareidolia_experiments::audit`.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use pareidolia_daemon::service;
use pareidolia_experiments::audit::{Audit, Budget, Event, Finish, Reference, Request, plan};

use crate::cli::AuditArgs;

/// A flag that SIGTERM or SIGINT sets, watched by a thread of its own.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal watcher")?;
    std::thread::spawn(move || {
        runtime.block_on(service::shutdown_signal());
        flag.store(true, Ordering::SeqCst);
        eprintln!(
            "stop requested: the part in flight checkpoints at its next generation; run the same command again to continue"
        );
    });
    Ok(stop)
}

/// The shipped models of the checkout this binary was built from, else an installed copy.
fn shipped_models() -> Option<std::path::PathBuf> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let installed = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("../share/pareidolia/models")));
    std::iter::once(built)
        .chain(installed)
        .find(|d| d.is_dir())
        .map(|d| std::fs::canonicalize(&d).unwrap_or(d))
}

/// Runs the command.
pub fn audit(args: AuditArgs) -> Result<()> {
    let budget = match &args.budget {
        Some(text) => Some(Budget {
            seconds: plan::parse_budget(text).map_err(|e| anyhow::anyhow!("--budget: {e}"))?,
            text: text.clone(),
        }),
        None => None,
    };
    let references = args
        .references
        .iter()
        .map(|r| {
            r.parse::<Reference>()
                .map_err(|e| anyhow::anyhow!("--reference: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let request = Request {
        model: args.model.clone(),
        data: args.data.clone(),
        budget,
        classes: args.classes.clone(),
        seeds: args.seeds,
        references,
        shipped_models: shipped_models(),
        out: args.out.clone(),
        command: std::env::args().collect(),
        base_dir: std::env::current_dir().context("cannot read the current folder")?,
    };
    let stop = stop_flag()?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(1)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    // Start of each part on the bar (generations + 1 each).
    let mut offsets: Vec<u64> = Vec::new();
    let mut count = 0usize;
    let mut events = |e: Event<'_>| match e {
        Event::Calibrating(m) => bar.set_message(format!("measuring the cost of {}", m.title())),
        Event::Planned { parts, resumed } => {
            offsets = parts
                .iter()
                .scan(0u64, |acc, p| {
                    let start = *acc;
                    *acc += p.generations + 1;
                    Some(start)
                })
                .collect();
            count = parts.len();
            let total: u64 = parts.iter().map(|p| p.generations + 1).sum();
            bar.set_length(total.max(1));
            bar.set_message(if resumed {
                "continuing the audit".to_owned()
            } else {
                format!("{} parts planned", parts.len())
            });
        }
        Event::Progress {
            index,
            part,
            progress,
        } => {
            bar.set_position(offsets.get(index).copied().unwrap_or(0) + progress.generation + 1);
            bar.set_message(format!(
                "part {}/{count} {}  gen {}/{}  median {:.4}%",
                index + 1,
                part.name(),
                progress.generation,
                part.generations,
                progress.stats.median * 100.0
            ));
        }
        Event::PartDone { index, part, .. } => {
            bar.set_position(offsets.get(index).copied().unwrap_or(0) + part.generations + 1);
        }
        Event::Measuring => bar.set_message("measuring and writing the report"),
        _ => {}
    };
    let audit = Audit::prepare(request, &mut events)?;
    let finish = audit.run(&mut events, stop)?;
    bar.finish_and_clear();
    let mut stdout = std::io::stdout().lock();
    match finish {
        Finish::Stopped { part } => {
            writeln!(
                stdout,
                "audit stopped during part {part}; run the same command to continue it"
            )?;
        }
        Finish::Done(report) => {
            writeln!(stdout, "{}", report.verdict)?;
            for k in audit.skipped() {
                writeln!(stdout, "not run: {}: {}", k.method.title(), k.reason)?;
            }
            writeln!(
                stdout,
                "written: {}, {}, {} ({} images)",
                args.out.join("report.html").display(),
                args.out.join("audit.json").display(),
                args.out.join("fooling-set").display(),
                report.fooling_set.len()
            )?;
        }
    }
    Ok(())
}
