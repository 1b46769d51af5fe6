//! The shipped LeNets on tract against ONNX Runtime's reference outputs, and the built-in model
//! against the shipped file.

use pareidolia_core::image_io::read_png;
use pareidolia_eval::{Backend, Model, ModelRef, TractBackend};
use pareidolia_plugin::softmax;

use crate::util::*;

/// The shipped LeNet on tract reproduces ONNX Runtime's probabilities (recorded by the
/// training script from the same PNG files) within 1e-4, with the same top class.
#[test]
fn tract_matches_onnx_runtime_on_the_lenet_samples() {
    tract_matches_onnx_runtime_on_the_samples_of("models/lenet-mnist");
}

/// The same for the second initialisation (`train.py --seed 2`), the transfer experiment's
/// other LeNet.
#[test]
fn tract_matches_onnx_runtime_on_the_lenet_seed2_samples() {
    tract_matches_onnx_runtime_on_the_samples_of("models/lenet-mnist-seed2");
}

/// The same for the LeNet trained on another split (`train.py --split-seed 3`).
#[test]
fn tract_matches_onnx_runtime_on_the_lenet_split3_samples() {
    tract_matches_onnx_runtime_on_the_samples_of("models/lenet-mnist-split3");
}

fn tract_matches_onnx_runtime_on_the_samples_of(folder: &str) {
    let dir = root().join(folder);
    let model = Model::load(&ModelRef::Path(dir.join("manifest.toml"))).unwrap();
    let expected = json(&dir.join("samples/expected.json"));
    let samples = expected.as_array().unwrap();
    assert_eq!(samples.len(), 10);
    let mut pixels = Vec::new();
    for s in samples {
        pixels.extend(
            read_png(&dir.join("samples").join(s["file"].as_str().unwrap()))
                .unwrap()
                .pixels,
        );
    }
    let mut prepared = TractBackend.prepare(&model).unwrap();
    let logits = prepared.infer(&pixels, samples.len()).unwrap();
    for (s, row) in samples.iter().zip(logits.chunks_exact(10)) {
        let mut p = vec![0.0; 10];
        softmax(row, &mut p);
        let want: Vec<f64> = s["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for c in 0..10 {
            assert!(
                (p[c] as f64 - want[c]).abs() < 1e-4,
                "{}: class {c}: {} vs {}",
                s["file"],
                p[c],
                want[c]
            );
        }
        let top = (0..10).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!(top as u64, s["label"].as_u64().unwrap(), "{}", s["file"]);
    }
    // Another batch size gives the same numbers up to float rounding (tract's kernels are
    // chosen per shape, which is why the evaluator forms batches by child index).
    let single = prepared.infer(&pixels[..784], 1).unwrap();
    for (a, b) in single.iter().zip(&logits[..10]) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn the_builtin_model_is_the_shipped_file() {
    let builtin = Model::load(&ModelRef::Builtin("lenet-mnist".into())).unwrap();
    let on_disk = Model::load(&ModelRef::Path(
        root().join("models/lenet-mnist/manifest.toml"),
    ))
    .unwrap();
    assert_eq!(builtin.sha256, on_disk.sha256);
    assert_eq!(
        builtin.labels,
        (0..10).map(|d| d.to_string()).collect::<Vec<_>>()
    );
}
