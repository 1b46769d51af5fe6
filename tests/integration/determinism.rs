//! Same seed, same results: README's reproducibility claim, exactly. Two runs of the built-in
//! default with one seed on one backend (tract, or ONNX Runtime on the CPU with its default
//! single intra-op thread) on one machine reach the same summary and the same image bytes,
//! with any number of mutators and of inference workers, and with the workers breeding
//! their own batches (no mutators); another seed does not. (Across
//! backends, and on CUDA, nothing is claimed: see README, "Reproducibility".)

use std::path::{Path, PathBuf};

use crate::util::*;

/// 15 generations of the built-in default on `backend` into `dir/name`.
fn run(dir: &Path, name: &str, backend: &str, seed: u64, mutators: u32, workers: u32) -> PathBuf {
    run_lagged(dir, name, backend, seed, mutators, workers, 0)
}

/// [`run`] with `--lag`.
fn run_lagged(
    dir: &Path,
    name: &str,
    backend: &str,
    seed: u64,
    mutators: u32,
    workers: u32,
    lag: u32,
) -> PathBuf {
    let out = dir.join(name);
    let output = Pareidolia::run()
        .quiet()
        .verbose()
        .generations(15)
        .seed(seed)
        .mutators(mutators)
        .workers(workers)
        .backend(backend)
        .args(["--lag", &lag.to_string()])
        .out(&out)
        .output();
    let (_, err) = text(&output);
    success(output);
    // The split is what was asked for, and the log says so.
    let split = format!("workers={workers} mutators={mutators}");
    assert!(err.contains(&split), "{split} not in the log:\n{err}");
    let summary = json(&out.join("summary.json"));
    assert_eq!(
        summary["backend"].as_str().map(|b| b.starts_with(backend)),
        Some(true),
        "{summary}"
    );
    out
}

/// What a run reproduces: summary, gallery files, history lines.
type RunResult = (serde_json::Value, Vec<(String, Vec<u8>)>, Vec<String>);

/// `summary.json` (times aside), the gallery's bytes, and `history.csv` without its clock
/// column: everything README says is reproduced.
fn result(run: &Path) -> RunResult {
    let (summary, pngs) = run_result(run);
    let history = read_text(&run.join("history.csv"));
    let mut lines = history.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let clock = header
        .iter()
        .position(|c| *c == "elapsed_s")
        .expect("elapsed_s");
    let scores = lines
        .map(|l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            cells.remove(clock);
            cells.join(",")
        })
        .collect();
    (summary, pngs, scores)
}

/// 1 mutator and 1 worker, again, then several of each, then another seed.
fn same_seed_same_archive(backend: &str) {
    let dir = temp_dir(&format!("determinism-{backend}"));
    let a = run(&dir, "a", backend, 7, 1, 1);
    let b = run(&dir, "b", backend, 7, 1, 1);
    assert_eq!(result(&a), result(&b));
    // Every random decision is keyed by (seed, generation, child) and every batch holds the
    // same children whichever worker runs it, so more mutators and workers finish work in
    // another order but reach the same archive.
    let c = run(&dir, "c", backend, 7, 3, 3);
    assert_eq!(result(&a), result(&c));
    let d = run(&dir, "d", backend, 7, 1, 4);
    assert_eq!(result(&a), result(&d));
    // Without mutators each worker's inference thread breeds the batches it scores, from
    // the same jobs: the same children, the same archive.
    let f = run(&dir, "f", backend, 7, 0, 1);
    assert_eq!(result(&a), result(&f));
    let g = run(&dir, "g", backend, 7, 0, 3);
    assert_eq!(result(&a), result(&g));
    // And the seed matters.
    let e = run(&dir, "e", backend, 8, 1, 2);
    assert_ne!(run_result(&a).0["classes"], run_result(&e).0["classes"]);
}

#[test]
fn same_seed_gives_identical_summary_and_images_on_tract() {
    same_seed_same_archive("tract");
}

#[test]
fn same_seed_gives_identical_summary_and_images_on_ort_cpu() {
    same_seed_same_archive("ort-cpu");
}

/// With an odd batch size a breeding job's two children can fall in two batches, so the
/// workers do not breed their own batches (each of the two would breed the job): mutators
/// do, by default too, and the run is the same whoever breeds and however many workers score.
#[test]
fn an_odd_batch_size_is_bred_by_mutators_and_keeps_the_run() {
    let dir = temp_dir("determinism-odd-batch");
    let config = config_edit(&dir, |t| {
        t.set("batch_size", 5);
    });
    let run = |name: &str, mutators: u32, workers: u32| {
        let out = dir.join(name);
        let output = Pareidolia::run()
            .quiet()
            .verbose()
            .config(&config)
            .generations(10)
            .seed(7)
            .mutators(mutators)
            .workers(workers)
            .out(&out)
            .output();
        let (_, log) = text(&output);
        success(output);
        (out, log)
    };
    let (one, _) = run("one", 1, 1);
    let (auto, log) = run("auto", 0, 3);
    assert!(
        log.contains("breeding=\"on the mutators\"") && !log.contains("mutators=0"),
        "{log}"
    );
    assert_eq!(result(&one), result(&auto));
}

/// With a lag several generations are out at once and their batches finish in any order
/// across workers; the run is still the same on any number of workers and mutators (the
/// archive each generation breeds from is fixed by the lag, not by timing), and it is
/// another run than the paper's synchronous one.
#[test]
fn a_lagged_run_is_the_same_on_any_number_of_workers() {
    let dir = temp_dir("determinism-lag");
    let a = run_lagged(&dir, "a", "tract", 7, 1, 1, 1);
    let b = run_lagged(&dir, "b", "tract", 7, 3, 2, 1);
    assert_eq!(result(&a), result(&b));
    let c = run_lagged(&dir, "c", "tract", 7, 2, 4, 1);
    assert_eq!(result(&a), result(&c));
    let bred_by_workers = run_lagged(&dir, "workers", "tract", 7, 0, 2, 1);
    assert_eq!(result(&a), result(&bred_by_workers));
    let sync = run(&dir, "sync", "tract", 7, 1, 1);
    assert_ne!(result(&a).2, result(&sync).2, "lag 1 is another run");
    let lag2 = run_lagged(&dir, "lag2", "tract", 7, 1, 3, 2);
    assert_ne!(result(&a).2, result(&lag2).2, "lag 2 is another run");
    let lag2_alone = run_lagged(&dir, "lag2-alone", "tract", 7, 1, 1, 2);
    assert_eq!(result(&lag2), result(&lag2_alone));
    assert_eq!(json(&lag2.join("summary.json"))["generations"], 15);
    // The run folder's config records the lag (a resume goes on with it).
    assert!(read_text(&a.join("config.toml")).contains("lag = 1"));
    assert!(!read_text(&sync.join("config.toml")).contains("lag"));
}
