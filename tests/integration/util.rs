//! Shared test helpers: where the built artifacts are, fresh temporary folders, running the
//! binary and reading what it wrote.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `target/<profile>`, where the binary and the plugin libraries are.
pub fn artifacts() -> PathBuf {
    // This test binary is target/<profile>/deps/integration-<hash>.
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// The built `pareidolia` binary.
pub fn binary() -> PathBuf {
    let bin = artifacts().join("pareidolia");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --release --workspace` before the tests",
        bin.display()
    );
    bin
}

/// A built plugin or fixture library, by crate name.
pub fn library(crate_name: &str) -> PathBuf {
    let file = format!("lib{}.so", crate_name.replace('-', "_"));
    let path = artifacts().join(&file);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --release --workspace` before the tests",
        path.display()
    );
    path
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty folder for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = artifacts()
        .join("test-tmp")
        .join(format!("{name}-{}-{n}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary with arguments.
pub fn pareidolia(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("binary runs")
}

/// Text of a process's stdout and stderr.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts success and returns stdout.
pub fn success(output: Output) -> String {
    let (out, err) = text(&output);
    assert!(
        output.status.success(),
        "pareidolia failed ({}):\n--- stdout\n{out}\n--- stderr\n{err}",
        output.status
    );
    out
}

/// Asserts a clean failure: non-zero exit, no panic, and stderr mentioning every `needle`.
pub fn clean_failure(output: Output, needles: &[&str]) -> String {
    let (out, err) = text(&output);
    assert!(
        !output.status.success(),
        "expected failure, got success:\n{out}\n{err}"
    );
    assert_ne!(
        output.status.code(),
        Some(101),
        "exit code 101 is a panic:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "panicked instead of a clean error:\n{err}"
    );
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    err
}

/// A config file in `dir`, from the default experiment with `edit` applied to its text.
pub fn config_with(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(root().join("configs/mnist-direct.toml")).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

/// Reads a JSON file.
pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The top-1 class and its probability, per image, as `classify --json` reports them.
pub fn classify(images: &[PathBuf], model: &str) -> Vec<(usize, f64, Vec<f64>)> {
    let mut args: Vec<String> = vec![
        "classify".into(),
        "--json".into(),
        "--model".into(),
        model.into(),
    ];
    args.extend(images.iter().map(|p| p.display().to_string()));
    let out = success(Command::new(binary()).args(&args).output().unwrap());
    out.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let top = &v["top"][0];
            let probs = v["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_f64().unwrap())
                .collect();
            (
                top["class"].as_u64().unwrap() as usize,
                top["probability"].as_f64().unwrap(),
                probs,
            )
        })
        .collect()
}

/// `summary.json` without timings, plus the gallery's PNG bytes.
pub fn run_result(run: &Path) -> (serde_json::Value, Vec<(String, Vec<u8>)>) {
    let mut v = json(&run.join("summary.json"));
    for key in ["wall_time_s", "evaluations_per_s", "stage_times"] {
        v.as_object_mut().unwrap().remove(key);
    }
    let mut pngs: Vec<_> = std::fs::read_dir(run.join("gallery"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    pngs.sort();
    (v, pngs)
}

/// `pareidolia run` of one generation with a config, into `out`.
pub fn run_one_generation(config: &Path, out: &Path) -> Output {
    pareidolia(&[
        "run",
        "--quiet",
        "--generations",
        "1",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}
