//! The shipped LeNets and the larger EfficientNet-Lite models on tract against ONNX Runtime's
//! reference outputs, and the built-in model against the shipped file. (Lite0's photographs are
//! checked through `pareidolia classify` in `imagenet.rs`.)

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

/// EfficientNet-Lite1 (240x240) on tract gives, for each of the five photographs of
/// models/efficientnet-lite1/samples, the top-1 class and probability that ONNX Runtime gave
/// when the samples were made (check_photos.py lite1), within 1e-4.
#[test]
fn tract_matches_onnx_runtime_on_the_efficientnet_lite1_photographs() {
    tract_matches_onnx_runtime_on_the_photographs_of("models/efficientnet-lite1", 240);
}

/// The same for EfficientNet-Lite2 (260x260).
#[test]
fn tract_matches_onnx_runtime_on_the_efficientnet_lite2_photographs() {
    tract_matches_onnx_runtime_on_the_photographs_of("models/efficientnet-lite2", 260);
}

/// One batch of the samples in `folder/samples/expected.json` (PNG crops of the model's input
/// size, with ONNX Runtime's top-1 index and probability) through tract.
fn tract_matches_onnx_runtime_on_the_photographs_of(folder: &str, size: u32) {
    let dir = root().join(folder);
    let model = Model::load(&ModelRef::Path(dir.join("manifest.toml"))).unwrap();
    assert_eq!(model.labels.len(), 1000);
    let expected = json(&dir.join("samples/expected.json"));
    let samples = expected.as_array().unwrap();
    assert_eq!(samples.len(), 5);
    let mut pixels = Vec::new();
    for s in samples {
        let img = read_png(&dir.join("samples").join(s["file"].as_str().unwrap())).unwrap();
        assert_eq!((img.width, img.height, img.channels), (size, size, 3));
        pixels.extend(img.pixels);
    }
    let mut prepared = TractBackend.prepare(&model).unwrap();
    let logits = prepared.infer(&pixels, samples.len()).unwrap();
    for (s, row) in samples.iter().zip(logits.chunks_exact(1000)) {
        let mut p = vec![0.0; 1000];
        softmax(row, &mut p);
        let top = (0..1000).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!(top as u64, s["top1"].as_u64().unwrap(), "{s}");
        assert_eq!(model.labels[top], s["label"].as_str().unwrap(), "{s}");
        let want = s["probability"].as_f64().unwrap();
        assert!(
            (p[top] as f64 - want).abs() < 1e-4,
            "{s}: tract says {}",
            p[top]
        );
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
