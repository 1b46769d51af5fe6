use crate::util::*;

/// Issue 2's acceptance run: the built-in default (the paper's budget: 200 generations of
/// 200 children) reaches median >= 99.99% and minimum >= 99% over the 10 digits, and the PNG
/// files it wrote re-classify from disk to their class with the same confidence.
#[test]
fn default_run_fools_lenet_and_the_pngs_agree() {
    let dir = temp_dir("default-run");
    let out_dir = dir.join("run");
    let stdout = success(pareidolia(&[
        "run",
        "--quiet",
        "--out",
        out_dir.to_str().unwrap(),
    ]));
    assert!(stdout.contains("run folder:"), "{stdout}");

    let summary = json(&out_dir.join("summary.json"));
    assert_eq!(summary["generations"], 200);
    assert_eq!(summary["evaluations"], 200 * 200 + 200);
    assert_eq!(summary["encoding"]["name"], "direct");
    assert_eq!(summary["fitness"]["name"], "confidence");
    assert_eq!(summary["model"], "lenet-mnist");
    assert_eq!(summary["model_sha256"].as_str().unwrap().len(), 64);
    let median = summary["stats"]["median"].as_f64().unwrap();
    let min = summary["stats"]["min"].as_f64().unwrap();
    assert!(median >= 0.9999, "median champion confidence {median}");
    assert!(min >= 0.99, "minimum champion confidence {min}");

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
