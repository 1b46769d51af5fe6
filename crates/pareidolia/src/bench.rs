//! `pareidolia bench`: raw inference throughput of a model on a backend, the ceiling that an
//! experiment's end-to-end evaluations/s are compared against in BENCHMARKS.md.

use std::io::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pareidolia_eval::{Model, ModelRef, backend_for};

use crate::cli::BenchArgs;

/// Runs the command.
pub fn bench(args: BenchArgs) -> Result<()> {
    if args.batch.contains(&0) || args.seconds.is_nan() || args.seconds <= 0.0 {
        bail!("--batch sizes and --seconds must be positive");
    }
    let model = Model::load(&ModelRef::parse(&args.model, std::path::Path::new(".")))?;
    let backend = args.backend;
    let mut prepared = backend_for(backend).prepare(&model)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "model {} on {} ({}):",
        model.name(),
        backend,
        prepared.device()
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
        prepared
            .infer(&pixels, batch)
            .context("warm-up batch failed")?;
        let (start, mut images) = (Instant::now(), 0usize);
        while start.elapsed().as_secs_f64() < args.seconds {
            prepared.infer(&pixels, batch)?;
            images += batch;
        }
        let s = start.elapsed().as_secs_f64();
        writeln!(
            out,
            "  batch {batch:>4}: {:>9.0} images/s ({:.3} ms per batch)",
            images as f64 / s,
            1e3 * s * batch as f64 / images as f64
        )?;
    }
    Ok(())
}
