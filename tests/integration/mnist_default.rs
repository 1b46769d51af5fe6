//! The default experiment and the CPPN one on the paper's budget fool LeNet, checked from the
//! PNG files they wrote; a champion's genome exported for inspection.

use std::path::Path;

use crate::util::*;

/// Issue 2's acceptance run: the built-in default (the paper's budget: 200 generations of
/// 200 children) reaches median >= 99.99% and minimum >= 99% over the 10 digits, and the PNG
/// files it wrote re-classify from disk to their class with the same confidence.
#[test]
fn default_run_fools_lenet_and_the_pngs_agree() {
    fools_lenet(None, "direct", 0.99);
}

/// Issue 3's: the CPPN encoding on the same budget (`configs/mnist-cppn.toml`) reaches median
/// >= 99.99% too (the paper reports 99.99% for both encodings), checked from the PNG files.
#[test]
fn cppn_run_fools_lenet_and_the_pngs_agree() {
    let config = root().join("configs/mnist-cppn.toml");
    fools_lenet(Some(&config), "cppn", 0.99);
}

fn fools_lenet(config: Option<&Path>, encoding: &str, min_required: f64) {
    let dir = temp_dir(&format!("{encoding}-run"));
    let out_dir = dir.join("run");
    let mut command = Pareidolia::run().quiet().out(&out_dir);
    if let Some(c) = config {
        command = command.config(c);
    }
    let stdout = success(command.output());
    assert!(stdout.contains("run folder:"), "{stdout}");

    let summary = json(&out_dir.join("summary.json"));
    assert_eq!(summary["generations"], 200);
    assert_eq!(summary["evaluations"], 200 * 200 + 200);
    assert_eq!(summary["encoding"]["name"], encoding);
    assert_eq!(summary["fitness"]["name"], "confidence");
    assert_eq!(summary["model"], "lenet-mnist");
    assert_eq!(summary["model_sha256"].as_str().unwrap().len(), 64);
    let median = summary["stats"]["median"].as_f64().unwrap();
    let min = summary["stats"]["min"].as_f64().unwrap();
    assert!(median >= 0.9999, "median champion confidence {median}");
    assert!(min >= min_required, "minimum champion confidence {min}");

    let classes = summary["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 10);
    let images: Vec<_> = classes
        .iter()
        .map(|c| out_dir.join(c["image"].as_str().unwrap()))
        .collect();
    for (class, path) in images.iter().enumerate() {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&format!("{class:03}_{class}_")), "{name}");
    }
    assert!(out_dir.join("gallery/montage.png").is_file());
    assert!(out_dir.join("gallery/index.html").is_file());
    assert!(out_dir.join("config.toml").is_file());

    for (class, (top, p, _)) in classify(&images, "builtin:lenet-mnist")
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            top,
            class,
            "{} is classified as {top}",
            images[class].display()
        );
        assert!(
            p >= 0.99,
            "{} re-classifies at {p}",
            images[class].display()
        );
        let in_memory = classes[class]["confidence"].as_f64().unwrap();
        assert!(
            (p - in_memory).abs() < 1e-5,
            "class {class}: file {p} vs scored {in_memory}"
        );
    }
}

/// A champion's genome exported for inspection: raw bytes, the encoding's JSON description,
/// and for the CPPN a Graphviz DOT of the network.
#[test]
fn export_genome_writes_json_and_dot() {
    let dir = temp_dir("export-genome");
    let out = dir.join("run");
    let config = root().join("configs/mnist-cppn.toml");
    success(
        Pareidolia::run()
            .quiet()
            .generations(3)
            .config(&config)
            .out(&out)
            .output(),
    );
    let export = dir.join("genomes");
    let text = success(pareidolia(&[
        "export-genome",
        out.to_str().unwrap(),
        "--class",
        "7",
        "--out",
        export.to_str().unwrap(),
    ]));
    assert!(text.contains("class 7"), "{text}");
    let described = json(&export.join("genome-007.json"));
    assert!(
        described["nodes"].as_array().is_some_and(|n| n.len() >= 5),
        "{described}"
    );
    let dot = std::fs::read_to_string(export.join("genome-007.dot")).unwrap();
    assert!(dot.starts_with("digraph") && dot.contains("->"), "{dot}");
    assert!(
        std::fs::metadata(export.join("genome-007.bin"))
            .unwrap()
            .len()
            > 0
    );
    clean_failure(
        pareidolia(&["export-genome", out.to_str().unwrap(), "--class", "10"]),
        &["class 10 does not exist"],
    );
}
