//! `pareidolia bench`: raw inference throughput of a model on a backend, the ceiling that an
//! experiment's end-to-end evaluations/s are compared against in BENCHMARKS.md. With
//! `--workers N`, N copies of the model run side by side, each on its own thread, as a run's
//! N evaluators do: their summed images/s is the all-cores ceiling.

use std::io::Write as _;
use std::sync::Barrier;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pareidolia_eval::{Model, ModelRef, PreparedModel, ViewSpec, backend_for, check_output};

use crate::cli::BenchArgs;

/// Runs `prepared` on `pixels` until `seconds` have passed (after one warm-up batch and
/// `start`, which every worker passes together); returns the images done and the seconds.
fn measure(
    prepared: &mut dyn PreparedModel,
    pixels: &[u8],
    batch: usize,
    seconds: f64,
    start: &Barrier,
) -> Result<(usize, f64)> {
    let warm = prepared
        .infer(pixels, batch)
        .context("warm-up batch failed");
    // Every worker reaches the barrier, whatever its warm-up did, so none waits forever.
    start.wait();
    warm?;
    let (began, mut images) = (Instant::now(), 0usize);
    while began.elapsed().as_secs_f64() < seconds {
        prepared.infer(pixels, batch)?;
        images += batch;
    }
    Ok((images, began.elapsed().as_secs_f64()))
}

/// Runs the command.
pub fn bench(args: BenchArgs) -> Result<()> {
    if args.batch.contains(&0) || args.seconds.is_nan() || args.seconds <= 0.0 {
        bail!("--batch sizes and --seconds must be positive");
    }
    if !(1..=256).contains(&args.workers) {
        bail!("--workers must be from 1 to 256");
    }
    let model = Model::load(&ModelRef::parse(&args.model, std::path::Path::new(".")))?;
    let backend = args.backend;
    let mut prepared = (0..args.workers)
        .map(|_| backend_for(backend).prepare(&model))
        .collect::<Result<Vec<_>, _>>()?;
    check_output(
        &model,
        ViewSpec::identity(&model),
        prepared[0].as_mut(),
        args.batch[0],
        &args.model,
    )?;
    let mut out = std::io::stdout().lock();
    let workers = match args.workers {
        1 => String::new(),
        n => format!(", {n} workers"),
    };
    writeln!(
        out,
        "model {} on {} ({}{workers}):",
        model.name(),
        backend,
        prepared[0].device()
    )?;
    // Deterministic pseudo-random pixels: the content does not change the work done.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for &batch in &args.batch {
        let pixels: Vec<u8> = (0..batch * model.image_len())
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let start = Barrier::new(prepared.len());
        let results: Vec<Result<(usize, f64)>> = std::thread::scope(|s| {
            let running: Vec<_> = prepared
                .iter_mut()
                .map(|p| s.spawn(|| measure(p.as_mut(), &pixels, batch, args.seconds, &start)))
                .collect();
            running
                .into_iter()
                .map(|r| {
                    r.join()
                        .unwrap_or_else(|_| bail!("a bench worker panicked"))
                })
                .collect()
        });
        let (mut images, mut s) = (0usize, 0f64);
        for r in results {
            let (i, t) = r?;
            images += i;
            s = s.max(t);
        }
        let per_worker = match args.workers {
            1 => String::new(),
            n => format!(", {:.0} per worker", images as f64 / s / n as f64),
        };
        writeln!(
            out,
            "  batch {batch:>4}: {:>9.0} images/s ({:.3} ms per batch{per_worker})",
            images as f64 / s,
            1e3 * s * batch as f64 * args.workers as f64 / images as f64
        )?;
    }
    Ok(())
}
