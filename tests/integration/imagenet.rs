//! The ImageNet configs on a CPU, a few generations each (the CI smoke test of issue 6): the
//! champions' median confidence rises, and every PNG the run writes re-classifies from disk
//! to its cell's score. The shipped EfficientNet-Lite0 agrees with ONNX Runtime's numbers on
//! real photographs.

use std::path::{Path, PathBuf};

use crate::util::*;

const MODEL: &str = "models/efficientnet-lite0/manifest.toml";

/// `pareidolia run` of a shipped config for `generations`; returns the summary.
fn run(config: &str, generations: u64, out: &Path) -> serde_json::Value {
    success(
        Pareidolia::run()
            .quiet()
            .config(&root().join(config))
            .generations(generations)
            .out(out)
            .output(),
    );
    json(&out.join("summary.json"))
}

/// Classifies every gallery image of a run from disk, with the backend the run used, and
/// compares each class's probability with the score its cell holds.
fn reclassify_gallery(run: &Path, summary: &serde_json::Value) {
    let classes = summary["classes"].as_array().unwrap();
    let images: Vec<PathBuf> = classes
        .iter()
        .map(|c| run.join(c["image"].as_str().unwrap()))
        .collect();
    assert_eq!(images.len(), 1000);
    let backend = summary["backend"].as_str().unwrap();
    let backend = backend.split_whitespace().next().unwrap();
    let out = success(
        Pareidolia::with_args(["classify", "--json", "--model"])
            .arg(root().join(MODEL))
            .args(["--backend", backend, "--batch", "50"])
            .args(&images)
            .output(),
    );
    let mut worst = 0f64;
    for (class, line) in out.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let on_disk = v["probabilities"][class].as_f64().unwrap();
        let in_cell = classes[class]["confidence"].as_f64().unwrap();
        worst = worst.max((on_disk - in_cell).abs());
        assert!(
            (on_disk - in_cell).abs() < 1e-3,
            "class {class}: the PNG scores {on_disk}, its cell {in_cell}"
        );
    }
    eprintln!("largest difference between a PNG and its cell: {worst:.2e}");
}

fn median(summary: &serde_json::Value) -> f64 {
    summary["stats"]["median"].as_f64().unwrap()
}

/// A few generations of a shipped ImageNet config: the median rises above the initial
/// population's (same seed, so the same initial population), every gallery PNG is a 256x256
/// canvas that re-classifies to its cell's score.
fn smoke(config: &str, generations: u64, evaluations: u64) {
    let dir = temp_dir("imagenet-smoke");
    let start = run(config, 0, &dir.join("initial"));
    let after = run(config, generations, &dir.join("run"));
    assert_eq!(after["evaluations"], evaluations);
    assert!(
        median(&after) > median(&start),
        "median did not rise: {} -> {}",
        median(&start),
        median(&after)
    );
    reclassify_gallery(&dir.join("run"), &after);
    let png = pareidolia_core::image_io::read_png(
        &dir.join("run")
            .join(after["classes"][0]["image"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!((png.width, png.height, png.channels), (256, 256, 3));
}

#[test]
fn imagenet_cppn_smoke_run_rises_and_its_pngs_reclassify() {
    // 400 random networks, then 2 generations of 400 children.
    smoke("configs/imagenet-cppn.toml", 2, 1200);
}

#[test]
fn imagenet_direct_smoke_run_rises_and_its_pngs_reclassify() {
    // 200 random genomes, then 2 generations of 200 children.
    smoke("configs/imagenet-direct.toml", 2, 600);
}

/// The converted model on the photographs of models/efficientnet-lite0/samples: tract gives
/// the top-1 class and probability that ONNX Runtime gave when the samples were made
/// (check_photos.py).
#[test]
fn efficientnet_lite0_classifies_photographs_as_onnx_runtime_did() {
    let samples = root().join("models/efficientnet-lite0/samples");
    let expected = json(&samples.join("expected.json"));
    let expected = expected.as_array().unwrap();
    let images: Vec<PathBuf> = expected
        .iter()
        .map(|e| samples.join(e["file"].as_str().unwrap()))
        .collect();
    let got = classify(&images, root().join(MODEL).to_str().unwrap());
    for (e, (class, p, _)) in expected.iter().zip(&got) {
        assert_eq!(*class as u64, e["top1"].as_u64().unwrap(), "{e}");
        let want = e["probability"].as_f64().unwrap();
        assert!((p - want).abs() < 1e-4, "{e}: tract says {p}");
    }
}
