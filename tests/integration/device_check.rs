//! `scripts/device-check.sh` (issue 15, item 6) on a machine without a GPU: its argument
//! handling, the refusal when the `cuda` backend cannot run (both result files say why, exit
//! 3), and a whole pass on the CPU (`--backend ort-cpu --quick`) that fills both files.

use std::path::Path;
use std::process::{Command, Output};

use crate::util::*;

fn script(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(root().join("scripts/device-check.sh"))
        .args(["--binary", binary().to_str().unwrap()])
        .args(args)
        .current_dir(root())
        .env_remove("RUST_LOG")
        .output()
        .expect("bash runs")
}

fn exit_and_stderr(output: &Output) -> (Option<i32>, String) {
    (output.status.code(), text(output).1)
}

#[test]
fn device_check_arguments_are_checked_before_anything_runs() {
    let help = script(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let usage = text(&help).0;
    for flag in [
        "--out DIR",
        "--ort-env FILE",
        "--backend NAME",
        "--quick",
        "--tolerance",
    ] {
        assert!(usage.contains(flag), "{flag}:\n{usage}");
    }
    let dir = temp_dir("device-check-args");
    let out = dir.join("out");
    let o = out.to_str().unwrap();
    for (args, needle) in [
        (vec!["--frobnicate"], "unknown argument `--frobnicate`"),
        (vec!["--out"], "--out needs a value"),
        (
            vec!["--out", o, "--backend", "tract"],
            "--backend must be cuda or ort-cpu",
        ),
        (
            vec!["--out", o, "--tolerance", "small"],
            "--tolerance must be a number",
        ),
        (
            vec!["--out", o, "--imagenet-generations", "-3"],
            "must be a whole number, not `-3`",
        ),
        (
            vec!["--out", o, "--imagenet-generations", "many"],
            "must be a whole number",
        ),
        (
            vec!["--out", o, "--ort-env", "/nonexistent/env.sh"],
            "--ort-env /nonexistent/env.sh does not exist",
        ),
        (
            vec!["--out", o, "--python", "/nonexistent/python"],
            "no python at",
        ),
    ] {
        let (code, err) = exit_and_stderr(&script(&args));
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle) && err.contains("usage:"),
            "{args:?}: {err}"
        );
    }
    let (code, err) = exit_and_stderr(
        &Command::new("bash")
            .arg(root().join("scripts/device-check.sh"))
            .args(["--binary", "/nonexistent/pareidolia", "--out", o])
            .output()
            .unwrap(),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no pareidolia binary at /nonexistent/pareidolia"),
        "{err}"
    );
    assert!(!out.exists(), "bad arguments write nothing");
}

/// The CPU-only ONNX Runtime the tests use has no CUDA provider: the script stops after its
/// probe, and both files carry pareidolia's own refusal.
#[test]
fn device_check_without_cuda_refuses_and_says_why_in_both_files() {
    let dir = temp_dir("device-check-refused");
    let out = dir.join("out");
    let output = script(&["--out", out.to_str().unwrap()]);
    let (code, err) = exit_and_stderr(&output);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("refused"), "{err}");
    let result = json(&out.join("device-check.json"));
    assert_eq!(result["status"], "refused", "{result}");
    assert_eq!(result["backend"], "cuda");
    let refusal = result["refusal"].as_str().unwrap();
    assert!(
        refusal.contains("the `cuda` backend cannot run"),
        "{refusal}"
    );
    assert!(
        result.get("parity").is_none() && result.get("bench").is_none(),
        "{result}"
    );
    let md = read_text(&out.join("device-check.md"));
    assert!(
        md.contains("**Status: refused**") && md.contains(refusal),
        "{md}"
    );
}

/// The same steps on the CPU, ort-cpu against tract: parity on both models' samples, bench
/// rows, the MNIST run's summary, and both files agreeing.
#[test]
fn device_check_on_the_cpu_fills_both_files() {
    let dir = temp_dir("device-check-cpu");
    let out = dir.join("out");
    let output = script(&[
        "--out",
        out.to_str().unwrap(),
        "--backend",
        "ort-cpu",
        "--quick",
        "--skip-torch",
    ]);
    let (code, err) = exit_and_stderr(&output);
    assert_eq!(code, Some(0), "{err}");
    let r = json(&out.join("device-check.json"));
    assert_eq!(
        (r["status"].as_str(), r["reference"].as_str()),
        (Some("passed"), Some("tract")),
        "{r}"
    );
    let parity = r["parity"].as_array().unwrap();
    let models: Vec<&str> = parity
        .iter()
        .map(|p| p["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["efficientnet-lite0", "lenet-mnist"]);
    for p in parity {
        assert!(p["passed"].as_bool().unwrap(), "{p}");
        assert!(p["max_abs_diff"].as_f64().unwrap() <= 1e-3, "{p}");
        assert_eq!(p["same_argmax"], p["images"], "{p}");
    }
    assert_eq!(parity[1]["images"], 10);
    for model in ["lenet-mnist", "efficientnet-lite0"] {
        let rows = r["bench"][model].as_array().unwrap();
        let batches: Vec<u64> = rows.iter().map(|b| b["batch"].as_u64().unwrap()).collect();
        assert_eq!(batches, [1, 32], "{model}");
        assert!(
            rows.iter()
                .all(|b| b["images_per_s"].as_f64().unwrap() > 0.0)
        );
    }
    // Gradients: the ONNX graph on ONNX Runtime's CPU against the built-in evaluator, one
    // ascent step on LeNet, then 5 steps timed.
    let gradients = r["gradients"].as_array().unwrap();
    assert_eq!(gradients.len(), 1, "{r}");
    let g = &gradients[0];
    assert_eq!(
        (g["model"].as_str(), g["steps"].as_u64()),
        (Some("lenet"), Some(5))
    );
    assert!(g["passed"].as_bool().unwrap(), "{g}");
    assert!(g["max_abs_diff_step1"].as_f64().unwrap() <= 1e-3, "{g}");
    assert!(g["images_steps_per_s"].as_f64().unwrap() > 0.0, "{g}");
    let md = std::fs::read_to_string(out.join("device-check.md")).unwrap();
    assert!(md.contains("## Gradients"), "{md}");
    let mnist = &r["runs"]["mnist"];
    assert_eq!(
        (mnist["generations"].as_u64(), mnist["evaluations"].as_u64()),
        (Some(3), Some(800))
    );
    assert!(
        mnist["backend"].as_str().unwrap().contains("ort-cpu"),
        "{mnist}"
    );
    assert!(
        r["pytorch"]["skipped"].to_string().contains("--skip-torch"),
        "{r}"
    );
    let md = read_text(&out.join("device-check.md"));
    for needle in [
        "**Status: passed**",
        "| lenet-mnist | 10 |",
        "| efficientnet-lite0 | 5 |",
        "| mnist | 3 | 800 |",
        "skipped",
    ] {
        assert!(md.contains(needle), "{needle}:\n{md}");
    }
    assert!(Path::new(&out.join("work/mnist/summary.json")).exists());
}
