//! The inference backends against each other and through the real binary: tract and ONNX
//! Runtime on the CPU agree on the shipped LeNet and on the AlexNet-size model, at batch 1
//! and in a batch; `cuda` fails clearly where CUDA cannot run; `auto` falls back and says so.
//!
//! ONNX Runtime is found the way the backend finds it (`ORT_DYLIB_PATH`, else the Python
//! `onnxruntime` package); `.ci/run` installs the package. The CUDA tests also pass on a
//! machine where CUDA works: there they check that the GPU was really used.

use std::process::Output;

use pareidolia_core::image_io::read_png;
use pareidolia_eval::{
    Backend, Model, ModelRef, OrtBackend, OrtOptions, OutputKind, PreparedModel, TractBackend,
};
use pareidolia_plugin::softmax;

use crate::util::*;

/// Probabilities may differ by this much between the backends (float summation order).
pub(crate) const TOLERANCE: f32 = 1e-4;

fn load(dir: &str) -> Model {
    Model::load(&ModelRef::Path(root().join(dir).join("manifest.toml"))).unwrap()
}

/// `n` images of pseudo-random bytes (xorshift, fixed seed), concatenated.
pub(crate) fn random_images(model: &Model, n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..n * model.image_len())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

/// Smooth colour gradients and stripes, unlike noise: the kind of image evolution produces.
pub(crate) fn pattern_images(model: &Model, n: usize) -> Vec<u8> {
    let i = &model.manifest.input;
    let (w, h, c) = (i.width as usize, i.height as usize, i.channels as usize);
    let mut out = Vec::with_capacity(n * model.image_len());
    for k in 0..n {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let t = (x * (k + 1) + y * (ch + 2) * (k % 3 + 1)) as f32 / (w as f32 / 6.0);
                    out.push((127.5 + 127.0 * (t + k as f32).sin()) as u8);
                }
            }
        }
    }
    out
}

/// Probabilities per image, whatever the model outputs.
pub(crate) fn probabilities(model: &Model, raw: &[f32]) -> Vec<Vec<f32>> {
    raw.chunks_exact(model.classes())
        .map(|row| {
            let mut p = row.to_vec();
            if model.manifest.output == OutputKind::Logits {
                softmax(row, &mut p);
            }
            p
        })
        .collect()
}

pub(crate) fn argmax(p: &[f32]) -> usize {
    (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap()
}

/// Both backends agree within [`TOLERANCE`] and on the top class. The top class may only
/// differ when the reference's two best classes are closer than the tolerance allows telling
/// apart; that is reported, and it must stay the exception.
fn assert_agree(model: &Model, what: &str, reference: &[f32], other: &[f32]) -> f32 {
    let (a, b) = (probabilities(model, reference), probabilities(model, other));
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f32;
    for (i, (pa, pb)) in a.iter().zip(&b).enumerate() {
        assert!(
            pa.iter().chain(pb).all(|v| v.is_finite()),
            "{what} image {i}: non-finite output"
        );
        for (c, (x, y)) in pa.iter().zip(pb).enumerate() {
            let d = (x - y).abs();
            worst = worst.max(d);
            assert!(
                d < TOLERANCE,
                "{what} image {i} class {c}: tract {x} vs ort-cpu {y}"
            );
        }
        let (ta, tb) = (argmax(pa), argmax(pb));
        if ta != tb {
            let mut sorted = pa.clone();
            sorted.sort_by(|x, y| y.total_cmp(x));
            assert!(
                sorted[0] - sorted[1] < 2.0 * TOLERANCE,
                "{what} image {i}: top class {ta} on tract, {tb} on ort-cpu"
            );
            eprintln!("{what} image {i}: near tie between classes {ta} and {tb}");
        }
    }
    worst
}

pub(crate) fn ort_cpu(model: &Model) -> Box<dyn PreparedModel> {
    OrtBackend::cpu(OrtOptions::default())
        .prepare(model)
        .unwrap_or_else(|e| panic!("ONNX Runtime on the CPU: {e}"))
}

/// Runs `images` on both backends as one batch and one image at a time; returns the largest
/// probability difference seen.
pub(crate) fn compare(model: &Model, images: &[u8]) -> f32 {
    let n = images.len() / model.image_len();
    let mut tract = TractBackend.prepare(model).unwrap();
    let mut ort = ort_cpu(model);
    assert_eq!((ort.backend(), ort.device().as_str()), ("ort-cpu", "cpu"));
    let name = model.name();
    let batch_t = tract.infer(images, n).unwrap();
    let batch_o = ort.infer(images, n).unwrap();
    let mut worst = assert_agree(model, &format!("{name} batch {n}"), &batch_t, &batch_o);
    for (i, image) in images.chunks_exact(model.image_len()).enumerate() {
        let one_t = tract.infer(image, 1).unwrap();
        let one_o = ort.infer(image, 1).unwrap();
        let what = format!("{name} batch 1, image {i}");
        worst = worst.max(assert_agree(model, &what, &one_t, &one_o));
        // The same image gives the same answer alone and in a batch, on each backend.
        let row = i * model.classes()..(i + 1) * model.classes();
        worst = worst.max(assert_agree(model, &what, &batch_o[row], &one_o));
    }
    eprintln!("{name}: largest probability difference {worst:e} over {n} images");
    worst
}

#[test]
fn ort_cpu_matches_tract_on_lenet() {
    let model = load("models/lenet-mnist");
    let samples = root().join("models/lenet-mnist/samples");
    let mut pngs: Vec<_> = std::fs::read_dir(&samples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pngs.sort();
    assert_eq!(pngs.len(), 10);
    let mut images = Vec::new();
    for png in &pngs {
        images.extend(read_png(png).unwrap().to_channels(1).pixels);
    }
    images.extend(random_images(&model, 6, 7));
    images.extend(pattern_images(&model, 4));
    compare(&model, &images);
}

#[test]
fn ort_cpu_matches_tract_on_alexnet_light() {
    let model = load("models/alexnet-light");
    assert_eq!(model.classes(), 1000);
    let mut images = random_images(&model, 2, 11);
    images.extend(pattern_images(&model, 3));
    compare(&model, &images);
    // Random weights, but not a degenerate classifier: the outputs are spread out (no
    // one-hot softmax) and not every image gets the same class.
    let raw = TractBackend
        .prepare(&model)
        .unwrap()
        .infer(&images, 5)
        .unwrap();
    let probs = probabilities(&model, &raw);
    for p in &probs {
        let top = p[argmax(p)];
        assert!((0.002..0.99).contains(&top), "top probability {top}");
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-3);
    }
    let classes: std::collections::BTreeSet<usize> = probs.iter().map(|p| argmax(p)).collect();
    assert!(classes.len() > 1, "every image got class {classes:?}");
}

#[test]
fn alexnet_light_is_the_graph_make_py_describes() {
    let model = load("models/alexnet-light");
    let i = &model.manifest.input;
    assert_eq!((i.channels, i.height, i.width), (3, 227, 227));
    assert_eq!(model.manifest.output, OutputKind::Probabilities);
    assert_eq!(model.label(999), "class_999");
    // Small enough to commit although AlexNet has 61 million parameters (make.py explains).
    assert!(model.onnx.len() < 2_000_000, "{} bytes", model.onnx.len());
}

/// `pareidolia -v bench` of LeNet on `backend`, briefly, with `env` set (`Some`) or removed
/// (`None`).
fn bench(backend: &str, env: &[(&str, Option<&str>)]) -> Output {
    let command = Pareidolia::with_args(["-v", "bench", "--batch", "2", "--seconds", "0.05"])
        .args(["--backend", backend]);
    env.iter()
        .fold(command, |command, &(key, value)| match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        })
        .output()
}

/// `bench --workers 2`: two copies of the model side by side, their sum and each one's share.
#[test]
fn bench_runs_workers_side_by_side() {
    let out = success(pareidolia(&[
        "bench",
        "--batch",
        "2,3",
        "--seconds",
        "0.05",
        "--workers",
        "2",
    ]));
    assert!(out.contains("on tract (cpu, 2 workers):"), "{out}");
    assert_eq!(out.matches("per worker)").count(), 2, "{out}");
    clean_failure(
        pareidolia(&["bench", "--workers", "0"]),
        &["--workers must be from 1 to 256"],
    );
}

#[test]
fn cuda_fails_clearly_where_cuda_cannot_run() {
    let output = bench("cuda", &[]);
    if output.status.success() {
        // A machine where CUDA works: then it must really be on the GPU.
        let out = success(output);
        assert!(out.contains("on cuda (cuda:0)"), "{out}");
        return;
    }
    let err = clean_failure(
        output,
        &["the `cuda` backend cannot run model lenet-mnist", "Tried:"],
    );
    assert!(
        err.contains("CUDA execution provider") || err.contains("ONNX Runtime library"),
        "{err}"
    );
    assert!(err.contains("Choose `auto`"), "{err}");
}

#[test]
fn cuda_in_a_run_config_fails_clearly_where_cuda_cannot_run() {
    let dir = temp_dir("cuda-config");
    let config = config_edit(&dir, |t| {
        assert_eq!(t["model"]["backend"].as_str(), Some("tract"));
        t.set("model.backend", "cuda");
    });
    let out = dir.join("out");
    let output = run_one_generation(&config, &out);
    if output.status.success() {
        let summary = json(&out.join("summary.json"));
        assert_eq!(summary["backend"], "cuda (cuda:0)", "{summary}");
        return;
    }
    clean_failure(
        output,
        &["the `cuda` backend cannot run model lenet-mnist", "Tried:"],
    );
}

#[test]
fn auto_falls_back_and_logs_why() {
    let output = bench("auto", &[]);
    let (_, err) = text(&output);
    let out = success(output);
    if err.contains("chose cuda") {
        assert!(out.contains("(cuda:0)"), "{out}");
        return;
    }
    assert!(err.contains("backend auto: cuda refused"), "{err}");
    assert!(err.contains("chose ort-cpu on cpu"), "{err}");
    assert!(out.contains("on auto (cpu)"), "{out}");
}

#[test]
fn ort_is_found_through_the_python_package_without_ort_dylib_path() {
    let output = bench("ort-cpu", &[("ORT_DYLIB_PATH", None)]);
    let (_, err) = text(&output);
    let out = success(output);
    assert!(out.contains("on ort-cpu (cpu)"), "{out}");
    assert!(err.contains("the Python package onnxruntime"), "{err}");
}

#[test]
fn missing_ort_is_reported_with_where_we_looked_and_auto_uses_tract() {
    // No python3 on PATH, no ORT_DYLIB_PATH, no library path: nothing to find.
    let empty = temp_dir("no-python");
    let env = [
        ("ORT_DYLIB_PATH", None),
        ("LD_LIBRARY_PATH", None),
        ("PATH", Some(empty.to_str().unwrap())),
    ];
    let output = bench("ort-cpu", &env);
    if output.status.success() {
        eprintln!("skipped: this machine has ONNX Runtime on the system library path");
        return;
    }
    clean_failure(
        output,
        &[
            "the ONNX Runtime library (libonnxruntime.so*) was not found",
            "ORT_DYLIB_PATH (not set)",
            "the Python package onnxruntime (cannot run python3",
            "the system library search path",
            "pip install onnxruntime==1.24.4",
        ],
    );
    let output = bench("auto", &env);
    let (_, err) = text(&output);
    let out = success(output);
    assert!(err.contains("ort-cpu refused"), "{err}");
    assert!(err.contains("chose tract on cpu"), "{err}");
    assert!(out.contains("on auto (cpu)"), "{out}");
}

#[test]
fn ort_dylib_path_wins_and_a_bad_library_is_an_error() {
    let dir = temp_dir("bad-ort");
    let fake = dir.join("libonnxruntime.so");
    std::fs::write(&fake, b"not a library").unwrap();
    let output = bench(
        "ort-cpu",
        &[("ORT_DYLIB_PATH", Some(dir.to_str().unwrap()))],
    );
    clean_failure(
        output,
        &[
            "cannot use the ONNX Runtime library",
            fake.to_str().unwrap(),
        ],
    );
}

#[test]
fn ort_cpu_rejects_a_manifest_that_does_not_fit_the_graph() {
    let dir = temp_dir("ort-shape");
    let src = root().join("models/lenet-mnist");
    let mut manifest = read_toml(&src.join("manifest.toml"));
    manifest
        .set("onnx", path_value(&src.join("lenet-mnist.onnx")))
        .set("labels", path_value(&src.join("labels.txt")))
        .set("input.height", 32);
    let path = dir.join("manifest.toml");
    write_toml(&path, &manifest);
    let model = Model::load(&ModelRef::Path(path.clone())).unwrap();
    let err = OrtBackend::cpu(OrtOptions::default())
        .prepare(&model)
        .err()
        .expect("a 32-pixel-high manifest must not fit a 28x28 graph")
        .to_string();
    assert!(err.contains("model lenet-mnist"), "{err}");
    assert!(
        err.contains("[-1, 1, 28, 28]") && err.contains("1x32x28"),
        "{err}"
    );
    // The same through the binary, as a user meets it.
    let model_arg = path.to_str().unwrap();
    let output = pareidolia(&[
        "bench",
        "--model",
        model_arg,
        "--batch",
        "1",
        "--seconds",
        "0.01",
        "--backend",
        "ort-cpu",
    ]);
    clean_failure(output, &["declares input", "fix `[input]` in the manifest"]);
}

/// `batch_size = 0` leaves the batch size to the backend: tract takes 20 for LeNet, ONNX
/// Runtime on the CPU 32, and the choice is logged.
#[test]
fn batch_size_zero_lets_the_backend_choose() {
    for (backend, chosen) in [("tract", 20), ("ort-cpu", 32)] {
        let dir = temp_dir("auto-batch");
        let config = config_edit(&dir, |t| {
            t.set("batch_size", 0).set("model.backend", backend);
        });
        let out = dir.join("out");
        let output = Pareidolia::run()
            .quiet()
            .verbose()
            .generations(2)
            .config(&config)
            .out(&out)
            .output();
        let (_, stderr) = text(&output);
        assert!(output.status.success(), "{stderr}");
        assert!(
            stderr.contains("batch size chosen by the backend")
                && stderr.contains(&format!("batch_size={chosen}")),
            "{backend}: {stderr}"
        );
        assert_eq!(json(&out.join("summary.json"))["evaluations"], 600);
    }
}

/// `auto` reports why it chose its backend in `summary.json` (and `/status`): here, without a
/// GPU, that it refused CUDA and why; a named backend reports no selection.
#[test]
fn auto_reports_its_choice_and_the_refusals_in_the_summary() {
    let dir = temp_dir("auto-summary");
    let config = config_edit(&dir, |t| {
        t.set("model.backend", "auto");
    });
    success(run_one_generation(&config, &dir.join("auto")));
    let summary = json(&dir.join("auto/summary.json"));
    let selection = summary["backend_selection"].as_str().unwrap();
    if summary["backend"].as_str().unwrap().starts_with("cuda") {
        assert!(
            selection.contains("auto chose cuda on cuda:0, the first it tried"),
            "{selection}"
        );
    } else {
        assert!(
            selection.starts_with("auto chose ort-cpu on cpu after refusing cuda ("),
            "{selection}"
        );
        assert!(
            selection.contains("CUDA"),
            "the reason is given: {selection}"
        );
    }
    // The built-in default (no --config) is on auto: it records the choice the same way.
    let builtin = dir.join("builtin");
    success(
        Pareidolia::run()
            .quiet()
            .generations(1)
            .out(&builtin)
            .output(),
    );
    let summary = json(&builtin.join("summary.json"));
    assert_eq!(summary["models"][0]["requested_backend"], "auto");
    assert!(
        summary["backend_selection"]
            .as_str()
            .is_some_and(|s| s.starts_with("auto chose ")),
        "{summary}"
    );
    let named = default_config(&dir);
    success(run_one_generation(&named, &dir.join("named")));
    assert!(
        json(&dir.join("named/summary.json"))
            .get("backend_selection")
            .is_none()
    );
}
