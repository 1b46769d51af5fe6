//! `models/bvlcalexnet/manifest.toml`, the manifest of the ONNX model zoo's `bvlcalexnet-12.onnx`
//! (the paper's network; a 233 MB file that is not committed), checked on the stand-in
//! `models/bvlcalexnet/test/standin.onnx`: the zoo file's interface (input `data_0`
//! `[1, 3, 224, 224]` with the batch fixed at 1, a flatten fixed at `[1, 9216]`, 1000
//! probabilities) with seeded random weights (`models/bvlcalexnet/test/make_standin.py`).
//!
//! Each test copies the committed manifest and labels into a fresh folder beside the stand-in,
//! named `bvlcalexnet-12.onnx`, and changes nothing but the manifest's `sha256`: the input name,
//! size, colour order, mean and output kind under test are the committed ones.

use std::path::{Path, PathBuf};

use pareidolia_core::image_io::{Image, read_png, write_png};
use pareidolia_eval::{
    Backend, ColorOrder, Layout, Model, ModelRef, OrtBackend, OrtOptions, OutputKind, View,
    ViewSpec, prepare_viewed, sha256_hex,
};

use crate::backends::{TOLERANCE, argmax, compare, pattern_images, random_images};
use crate::util::*;

/// sha256 of `models/bvlcalexnet/test/standin.onnx`, as `make_standin.py` prints it.
const STANDIN_SHA256: &str = "9058d4d1fe024eff7ce0486b5f4fbf522765aad46256b0036f46a5e9abdf5c1e";
/// sha256 of the zoo's `bvlcalexnet-12.onnx` (its git-LFS object id).
const ZOO_SHA256: &str = "6b0da9510f27f234ee96a85dc3809dd210150fdefad87f6850f9788513216945";

fn committed() -> PathBuf {
    root().join("models/bvlcalexnet")
}

/// The committed manifest's text with its `sha256` line replaced by `sha256`.
fn manifest_with_sha256(sha256: &str) -> String {
    let text = std::fs::read_to_string(committed().join("manifest.toml")).unwrap();
    let old = format!("sha256 = \"{ZOO_SHA256}\"");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("sha256 = ")).count(),
        1
    );
    assert!(
        text.contains(&old),
        "the manifest must name the zoo file's sha256"
    );
    text.replacen(&old, &format!("sha256 = \"{sha256}\""), 1)
}

/// A folder holding the committed manifest (with the stand-in's sha256), the labels and the
/// stand-in as `bvlcalexnet-12.onnx`; returns the manifest's path.
fn standin(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    let onnx = std::fs::read(committed().join("test/standin.onnx")).unwrap();
    assert_eq!(
        sha256_hex(&onnx),
        STANDIN_SHA256,
        "standin.onnx changed: rerun make_standin.py and update STANDIN_SHA256"
    );
    std::fs::write(dir.join("bvlcalexnet-12.onnx"), onnx).unwrap();
    std::fs::copy(committed().join("labels.txt"), dir.join("labels.txt")).unwrap();
    let manifest = dir.join("manifest.toml");
    std::fs::write(&manifest, manifest_with_sha256(STANDIN_SHA256)).unwrap();
    manifest
}

fn ort_cpu() -> OrtBackend {
    OrtBackend::cpu(OrtOptions::default())
}

/// A `size` x `size` RGB PNG of pseudo-random bytes in `dir`; returns its path and pixels.
fn random_png(dir: &Path, size: u32, seed: u64) -> (PathBuf, Vec<u8>) {
    let mut state = seed | 1;
    let pixels: Vec<u8> = (0..size * size * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect();
    let image = Image {
        width: size,
        height: size,
        channels: 3,
        pixels,
    };
    let path = dir.join(format!("random-{size}-{seed}.png"));
    write_png(&path, &image).unwrap();
    // What the binary will read.
    let pixels = read_png(&path).unwrap().pixels;
    assert_eq!(pixels, image.pixels);
    (path, pixels)
}

/// `classify --json` through the binary: the probabilities per image.
fn classify_json(manifest: &Path, view: &str, images: &[&Path]) -> Vec<Vec<f32>> {
    let out = success(
        Pareidolia::with_args(["classify", "--json", "--view", view, "--model"])
            .arg(manifest)
            .args(images)
            .output(),
    );
    let rows: Vec<Vec<f32>> = out
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let probs: Vec<f32> = v["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(
                v["top"][0]["class"].as_u64().unwrap() as usize,
                argmax(&probs)
            );
            probs
        })
        .collect();
    assert_eq!(rows.len(), images.len(), "{out}");
    rows
}

/// Within [`TOLERANCE`] everywhere and the same top class.
fn assert_close(what: &str, tract: &[f32], ort: &[f32]) {
    assert_eq!((tract.len(), ort.len()), (1000, 1000), "{what}");
    let worst = tract
        .iter()
        .zip(ort)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < TOLERANCE, "{what}: largest difference {worst}");
    assert_eq!(argmax(tract), argmax(ort), "{what}: top class");
    assert!((ort.iter().sum::<f32>() - 1.0).abs() < 1e-3, "{what}");
    eprintln!("{what}: largest probability difference {worst:e}");
}

#[test]
fn the_manifest_describes_the_zoo_file() {
    let model_text = std::fs::read_to_string(committed().join("manifest.toml")).unwrap();
    let manifest =
        pareidolia_eval::Manifest::parse(&model_text, &committed().join("manifest.toml")).unwrap();
    assert_eq!(manifest.onnx, Path::new("bvlcalexnet-12.onnx"));
    assert_eq!(manifest.sha256.as_deref(), Some(ZOO_SHA256));
    assert_eq!(manifest.output, OutputKind::Probabilities);
    let i = &manifest.input;
    assert_eq!(i.name, "data_0");
    assert_eq!(i.layout, Layout::Nchw);
    assert_eq!((i.channels, i.height, i.width), (3, 224, 224));
    assert_eq!(i.color, ColorOrder::Bgr);
    // Caffe's: raw 0..255 minus the ILSVRC mean in B, G, R order, no scaling.
    assert_eq!(i.range, [0.0, 255.0]);
    assert_eq!(i.mean, [104.0, 117.0, 123.0]);
    assert_eq!(i.std, [1.0]);
    let labels = std::fs::read_to_string(committed().join("labels.txt")).unwrap();
    let labels: Vec<&str> = labels.lines().collect();
    assert_eq!(labels.len(), 1000);
    assert_eq!((labels[0], labels[999]), ("tench", "toilet tissue"));
    // The 233 MB file is never committed.
    let ignored = std::fs::read_to_string(root().join(".gitignore")).unwrap();
    assert!(
        ignored
            .lines()
            .any(|l| l == "/models/bvlcalexnet/bvlcalexnet-12.onnx")
    );
}

#[test]
fn tract_and_ort_agree_on_the_standin_image_by_image() {
    let manifest = standin("zoo-alexnet-agree");
    let model = Model::load(&ModelRef::Path(manifest)).unwrap();
    assert_eq!((model.classes(), model.image_len()), (1000, 224 * 224 * 3));
    // Batches of 4 on a graph that only takes batches of 1: both backends run them image by
    // image, and agree with each other and with single-image calls.
    let mut images = random_images(&model, 2, 21);
    images.extend(pattern_images(&model, 2));
    compare(&model, &images);
}

#[test]
fn classify_matches_onnx_runtime_centre_and_ten_crop() {
    let manifest = standin("zoo-alexnet-classify");
    let model = Model::load(&ModelRef::Path(manifest.clone())).unwrap();
    let dir = manifest.parent().unwrap();

    // Two 224x224 images, the model's own size: one `classify` call, a batch of 2.
    let (a, pa) = random_png(dir, 224, 5);
    let (b, pb) = random_png(dir, 224, 6);
    let tract = classify_json(&manifest, "center", &[&a, &b]);
    let mut ort = ort_cpu().prepare(&model).unwrap();
    let reference = ort.infer(&[pa, pb].concat(), 2).unwrap();
    for (k, (t, o)) in tract.iter().zip(reference.chunks_exact(1000)).enumerate() {
        assert_close(&format!("224x224 image {k}"), t, o);
    }
    assert_ne!(
        argmax(&tract[0]),
        argmax(&tract[1]),
        "random weights, but not one class for all"
    );

    // A 256x256 image seen as the paper's code saw it: the mean softmax of ten 224x224 crops.
    let (c, pc) = random_png(dir, 256, 7);
    let tract = classify_json(&manifest, "ten-crop", &[&c]);
    let spec = ViewSpec {
        view: View::TenCrop,
        width: 256,
        height: 256,
    };
    let reference = prepare_viewed(&ort_cpu(), &model, spec)
        .unwrap()
        .infer(&pc, 1)
        .unwrap();
    assert_close("256x256 image, ten-crop", &tract[0], &reference);
}

#[test]
fn a_run_and_a_bench_use_the_fixed_batch() {
    let manifest = standin("zoo-alexnet-run");
    let dir = manifest.parent().unwrap();
    let config = config_edit(dir, |t| {
        t.set("model.manifest", path_value(&manifest))
            .set("offspring_per_generation", 4)
            .set("batch_size", 4);
        assert!(
            t["offspring_per_generation"].as_integer() == Some(4)
                && t["batch_size"].as_integer() == Some(4)
        );
        assert!(
            t["encoding"]["plugin"].as_str() == Some("direct")
                && t["model"]["manifest"].as_str() == manifest.to_str()
        );
    });
    let out = dir.join("out");
    success(
        Pareidolia::run()
            .quiet()
            .generations(2)
            .config(&config)
            .out(&out)
            .output(),
    );
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["model"], "bvlcalexnet", "{summary}");
    assert_eq!(summary["model_sha256"], STANDIN_SHA256, "{summary}");
    assert_eq!(summary["generations"], 2, "{summary}");
    // 4 random genomes, then 4 children in each of 2 generations.
    assert_eq!(summary["evaluations"], 12, "{summary}");
    assert_eq!(summary["classes"].as_array().unwrap().len(), 1000);
    let champions = summary["classes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["confidence"].is_number())
        .count();
    assert!(champions >= 1, "{summary}");

    // ONNX Runtime through the binary: a batch of 3 on the fixed batch of 1, logged once.
    let output = pareidolia(&[
        "-v",
        "bench",
        "--model",
        manifest.to_str().unwrap(),
        "--backend",
        "ort-cpu",
        "--batch",
        "3",
        "--seconds",
        "0.05",
    ]);
    let (_, err) = text(&output);
    let out = success(output);
    assert!(out.contains("on ort-cpu (cpu)"), "{out}");
    assert_eq!(
        err.matches("fixes its batch dimension at 1: running batches one image at a time")
            .count(),
        1,
        "{err}"
    );
}

#[test]
fn the_committed_manifest_without_the_file_names_the_missing_file() {
    // The committed manifest and labels, without the ONNX file (copied, so that a user who has
    // downloaded the file into models/bvlcalexnet/ still runs this test).
    let dir = temp_dir("zoo-alexnet-missing");
    for file in ["manifest.toml", "labels.txt"] {
        std::fs::copy(committed().join(file), dir.join(file)).unwrap();
    }
    let manifest = dir.join("manifest.toml");
    let (png, _) = random_png(&dir, 224, 9);
    let missing = dir.join("bvlcalexnet-12.onnx");
    let err = clean_failure(
        pareidolia(&[
            "classify",
            "--model",
            manifest.to_str().unwrap(),
            png.to_str().unwrap(),
        ]),
        &["cannot read ONNX model", missing.to_str().unwrap()],
    );
    assert!(err.contains("No such file"), "{err}");
}
