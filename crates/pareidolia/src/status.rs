//! `pareidolia status RUN_DIR|URL`: where a run stands, from a running daemon's `/status` or
//! from the newest checkpoint in a run folder (which works whether or not a daemon runs).

use std::io::Write as _;

use anyhow::{Context, Result};
use pareidolia_core::checkpoint::CheckpointStore;
use pareidolia_daemon::RunOutcome;
use pareidolia_daemon::service::RunLock;

use crate::cli::StatusArgs;

/// Runs the command.
pub fn status(args: StatusArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if args.target.starts_with("http://") || args.target.starts_with("https://") {
        let url = format!("{}/status", args.target.trim_end_matches('/'));
        let body: serde_json::Value = ureq::get(&url)
            .call()
            .with_context(|| format!("cannot reach {url}; is the daemon running there?"))?
            .body_mut()
            .read_json()
            .with_context(|| format!("{url} did not answer with JSON"))?;
        if args.json {
            writeln!(out, "{body}")?;
        } else {
            writeln!(
                out,
                "{}: generation {}/{}, {} evaluations ({:.0}/s), median {:.4}%, min {:.4}%, last checkpoint at generation {}",
                body["run_dir"].as_str().unwrap_or("?"),
                body["generation"],
                body["generations"],
                body["evaluations"],
                body["evaluations_per_s"].as_f64().unwrap_or(0.0),
                body["median_confidence"].as_f64().unwrap_or(0.0) * 100.0,
                body["min_confidence"].as_f64().unwrap_or(0.0) * 100.0,
                body["last_checkpoint_generation"],
            )?;
            let reached = &body["stop"]["reached"];
            if reached.is_object() {
                writeln!(
                    out,
                    "stopped after generation {}: {} reached after {:.1} s",
                    reached["generation"],
                    reached["condition"].as_str().unwrap_or("?"),
                    reached["elapsed_s"].as_f64().unwrap_or(0.0)
                )?;
            }
        }
        return Ok(());
    }
    let run_dir = std::path::PathBuf::from(&args.target);
    let store = CheckpointStore::new(&run_dir, 1);
    let (checkpoint, path, skipped) = store.load_newest()?;
    let outcome = RunOutcome::from_checkpoint(&checkpoint, path.clone());
    let p = &outcome.progress;
    let daemon = RunLock::held_by_other(&run_dir);
    if args.json {
        let v = serde_json::json!({
            "run_dir": run_dir,
            "checkpoint": path,
            "damaged_checkpoints_skipped": skipped.len(),
            "daemon_pid": daemon,
            "progress": p,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "{}: generation {}/{}, {} evaluations, median {:.4}%, min {:.4}% ({}; checkpoint {})",
            run_dir.display(),
            p.generation,
            p.generations,
            p.evaluations,
            p.stats.median * 100.0,
            p.stats.min * 100.0,
            match &daemon {
                Some(pid) => format!("daemon running, pid {pid}"),
                None => "no daemon running".to_owned(),
            },
            path.display()
        )?;
        if let Some(r) = p.stop.as_ref().and_then(|s| s.reached.as_ref()) {
            writeln!(
                out,
                "stopped after generation {}: {} reached after {:.1} s",
                r.generation, r.condition, r.elapsed_s
            )?;
        }
    }
    Ok(())
}
