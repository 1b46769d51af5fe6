//! `pareidolia audit` (issue 27) on the shipped LeNet with the shipped digits as `--data`:
//! end to end on a small budget, the report in headless Chromium, `audit.json` against the
//! run folders it came from, a SIGTERM mid-part and a rerun equal to an uninterrupted audit,
//! and each bad input refused before anything runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pareidolia_core::image_io::read_png;

use crate::gallery::chromium;
use crate::util::*;

fn lenet() -> String {
    root()
        .join("models/lenet-mnist/manifest.toml")
        .display()
        .to_string()
}

fn digits() -> String {
    root().join("data/mnist-5k").display().to_string()
}

/// The audit command on LeNet with the digits, one seed.
fn audit(out: &Path, budget: &str) -> Pareidolia {
    Pareidolia::with_args([
        "audit",
        "--model",
        &lenet(),
        "--data",
        &digits(),
        "--budget",
        budget,
        "--seeds",
        "1",
        "--quiet",
        "--out",
    ])
    .arg(out)
}

/// `audit.json` without what may differ between two sessions of one audit: times and the
/// command lines (they name the folder).
fn without_times(dir: &Path) -> serde_json::Value {
    let mut v = json(&dir.join("audit.json"));
    let o = v.as_object_mut().unwrap();
    o.remove("created_unix_s");
    o.remove("commands");
    for p in o["parts"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("wall_time_s");
    }
    v
}

/// The files under `dir` with their bytes, relative paths sorted.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn an_audit_of_lenet_reports_in_chromium_and_resumes_exactly() {
    let dir = temp_dir("audit");
    let out = dir.join("audit");
    let stdout = success(audit(&out, "12s").output());
    assert!(
        stdout.contains("lenet-mnist (sha256 6c4458e8e4ea"),
        "{stdout}"
    );
    assert!(stdout.contains("report.html"), "{stdout}");

    // audit.json against the run folders it came from.
    let a = json(&out.join("audit.json"));
    assert_eq!(
        a["model"]["sha256"].as_str(),
        Some("6c4458e8e4ea1d79edf9e016f98320123c2332e732f9918840f837293fcfad13")
    );
    assert!(a["tool"].as_str().unwrap().starts_with("pareidolia "));
    assert!(a["commands"][0].as_str().unwrap().contains("audit"));
    assert_eq!(
        a["verdict"].as_str().unwrap(),
        stdout.lines().next().unwrap()
    );
    let parts = a["parts"].as_array().unwrap();
    let names: Vec<String> = parts
        .iter()
        .map(|p| {
            format!(
                "{}-seed{}",
                p["part"]["method"].as_str().unwrap(),
                p["part"]["seed"]
            )
        })
        .collect();
    assert_eq!(names, ["direct-seed1", "cppn-seed1", "ascent-seed1"]);
    for (p, name) in parts.iter().zip(&names) {
        let run = out.join(p["dir"].as_str().unwrap());
        assert_eq!(run, out.join("parts").join(name));
        let summary = json(&run.join("summary.json"));
        assert_eq!(p["generations"], summary["generations"], "{name}");
        assert_eq!(p["generations"], p["part"]["generations"], "{name}");
        assert_eq!(p["evaluations"], summary["evaluations"], "{name}");
        let cost = if name.starts_with("ascent") { 3 } else { 1 };
        assert_eq!(
            p["forward_equivalents"].as_u64().unwrap(),
            cost * summary["evaluations"].as_u64().unwrap(),
            "{name}: a gradient step is three forward passes"
        );
        let classes = p["classes"].as_array().unwrap();
        assert_eq!(classes.len(), 10);
        for (c, s) in classes.iter().zip(summary["classes"].as_array().unwrap()) {
            assert_eq!(c["class"], s["class"]);
            let (x, y) = (c["confidence"].as_f64(), s["confidence"].as_f64());
            assert!((x.unwrap() - y.unwrap()).abs() < 1e-6, "{name}: {c} vs {s}");
            assert_eq!(
                c["image"].as_str().unwrap(),
                format!("parts/{name}/{}", s["image"].as_str().unwrap())
            );
        }
        // "Every class at 50%" is the first history line with 10 classes at 50%.
        let history = read_text(&run.join("history.csv"));
        let first_all = history.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[8] == "10").then(|| f[1].parse::<u64>().unwrap() * cost)
        });
        assert_eq!(p["reach"][0]["all"].as_u64(), first_all, "{name}");
        // Gradient ascent's per-class first reach is its summary's first step, in
        // forward-pass equivalents of the run (10 images a step, 3 passes each).
        if cost == 3 {
            for (c, s) in classes
                .iter()
                .zip(summary["ascent"]["classes"].as_array().unwrap())
            {
                let step = s["first_step_reaching"]["0.5"].as_u64();
                assert_eq!(c["first_reach"][0].as_u64(), step.map(|s| s * 30), "{c}");
            }
        }
    }
    let methods = a["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 3);
    assert!(a["skipped"].as_array().unwrap().is_empty());
    // The OOD section on the 1,000 held-out digits: LeNet's known accuracy; three detectors
    // on a logits model, each with 95% of the real digits at or above its threshold.
    let ood = &a["ood"];
    assert_eq!(ood["images"], 1000);
    assert!(
        (ood["accuracy"].as_f64().unwrap() - 0.978).abs() < 1e-9,
        "{ood}"
    );
    for d in ood["detectors"].as_array().unwrap() {
        assert_eq!(d["available"], true, "{d}");
        let tpr = d["tpr"].as_f64().unwrap();
        assert!((0.95..0.96).contains(&tpr), "{d}");
        let passed = d["fooling_passed"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&passed), "{d}");
    }
    // Transfer to the shipped models with LeNet's labels.
    let targets: Vec<&str> = a["transfer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["model"].as_str().unwrap())
        .collect();
    for shipped in ["lenet-mnist-seed2", "mnist-resnet-bn", "mnist-vit"] {
        assert!(targets.contains(&shipped), "{targets:?}");
    }
    assert!(!targets.contains(&"lenet-mnist"), "{targets:?}");

    // The fooling set: an ImageFolder layout and an index whose confidences are what
    // `classify` says of the files.
    let index = read_text(&out.join("fooling-set/index.csv"));
    let rows: Vec<Vec<&str>> = index
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 30, "{index}");
    assert_eq!(a["fooling_set"].as_array().unwrap().len(), 30);
    let sample: Vec<&Vec<&str>> = rows.iter().step_by(7).collect();
    let images: Vec<PathBuf> = sample.iter().map(|r| out.join(r[0])).collect();
    for (r, image) in sample.iter().zip(&images) {
        assert!(image.is_file(), "{}", image.display());
        assert_eq!(
            image.parent().unwrap().file_name().unwrap().to_str(),
            Some(r[1]),
            "one folder per target class"
        );
    }
    let scored = classify(&images, &lenet());
    for (r, (_, _, probs)) in sample.iter().zip(&scored) {
        let class: usize = r[1].parse().unwrap();
        let confidence: f64 = r[3].parse().unwrap();
        assert!(
            (probs[class] - confidence).abs() < 1e-6,
            "{r:?}: {}",
            probs[class]
        );
    }

    // The report in headless Chromium: the verdict first, the tables, three montages.
    let report = format!("file://{}", out.join("report.html").display());
    let dom = chromium(&dir, &["--dump-dom", &report]);
    let verdict = dom.find("id=\"verdict\"").expect("a verdict");
    for table in [
        "id=\"methods\"",
        "id=\"parts\"",
        "id=\"classes\"",
        "id=\"ood\"",
        "id=\"transfer\"",
    ] {
        let at = dom.find(table).unwrap_or_else(|| panic!("no {table}"));
        assert!(at > verdict, "the verdict opens the report");
    }
    assert_eq!(dom.matches("data:image/png;base64,").count(), 3);
    assert_eq!(dom.matches("<svg").count(), 3);
    assert!(dom.contains("max-softmax") && dom.contains("energy"));
    let shots = artifacts().join("test-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("audit-report.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &dir,
        &[
            "--window-size=1280,3000",
            &format!("--screenshot={}", shot.display()),
            &report,
        ],
    );
    let image = read_png(&shot).unwrap();
    assert_eq!((image.width, image.height), (1280, 3000));
    let distinct: std::collections::BTreeSet<u8> = image.pixels.iter().copied().collect();
    assert!(distinct.len() > 50, "the screenshot looks blank");
    // The verdict box (its amber background, #fff4d6) is near the top of the page.
    let amber = |y: u32| {
        (0..image.width).any(|x| {
            let i = ((y * image.width + x) * image.channels) as usize;
            image.channels >= 3 && image.pixels[i..i + 3] == [0xff, 0xf4, 0xd6]
        })
    };
    assert!((60..300).any(amber), "no verdict box near the top");

    // The same plan again, stopped by SIGTERM while a part is under way (it has a checkpoint
    // but no summary yet), then the same command: the same audit, times aside.
    let resumed = dir.join("resumed");
    std::fs::create_dir_all(&resumed).unwrap();
    std::fs::copy(out.join("audit-plan.json"), resumed.join("audit-plan.json")).unwrap();
    let child = audit(&resumed, "12s").start(&dir.join("resumed.log"));
    let interrupted = poll(
        "a part with a checkpoint and no summary",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || {
            for (name, p) in names.iter().zip(parts) {
                let run = resumed.join("parts").join(name);
                // Early in the part, so that the stop lands before its end.
                let lines = std::fs::read_to_string(run.join("history.csv"))
                    .map_or(0, |t| t.lines().count() as u64);
                let early = lines < p["generations"].as_u64().unwrap() / 2;
                let checkpointed = std::fs::read_dir(run.join("checkpoints")).is_ok_and(|mut d| {
                    d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("ckpt-")))
                });
                if early && checkpointed && !run.join("summary.json").exists() {
                    return Ok(name.clone());
                }
            }
            Err("none yet".into())
        },
    );
    child.signal("TERM");
    let (status, log) = child.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("run the same command"), "{log}");
    assert!(
        !resumed.join("audit.json").exists(),
        "stopped before its end:\n{log}"
    );
    assert!(
        !resumed
            .join("parts")
            .join(&interrupted)
            .join("summary.json")
            .exists(),
        "{interrupted} was cut short"
    );
    success(audit(&resumed, "12s").output());
    assert_eq!(without_times(&resumed), without_times(&out));
    assert_eq!(
        files(&resumed.join("fooling-set")),
        files(&out.join("fooling-set"))
    );
    for name in &names {
        let (a, b) = (
            out.join("parts").join(name),
            resumed.join("parts").join(name),
        );
        assert_eq!(history_without_time(&a), history_without_time(&b), "{name}");
        let (mut sa, ga) = run_result(&a);
        let (mut sb, gb) = run_result(&b);
        for s in [&mut sa, &mut sb] {
            // A rate (a time) in a gradient-ascent summary.
            if let Some(ascent) = s.get_mut("ascent").and_then(|v| v.as_object_mut()) {
                ascent.remove("images_steps_per_s");
            }
        }
        assert!(sa == sb, "{name}: summaries differ:\n{sa}\n{sb}");
        assert!(ga == gb, "{name}: gallery PNGs differ");
    }
    // A different request in the same folder is refused, naming the flag.
    clean_failure(
        Pareidolia::with_args([
            "audit",
            "--model",
            &lenet(),
            "--budget",
            "12s",
            "--seeds",
            "2",
            "--quiet",
            "--out",
        ])
        .arg(&out)
        .output(),
        &["another audit", "--seeds"],
    );
}

/// An uncompressed IDX pair in `dir`: `n` images of `side` x `side`, labels `labels`.
fn write_idx(dir: &Path, side: u32, labels: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let n = labels.len() as u32;
    let mut images = vec![0, 0, 8, 3];
    for d in [n, side, side] {
        images.extend(d.to_be_bytes());
    }
    images.extend((0..n * side * side).map(|i| (i % 251) as u8));
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), images).unwrap();
    let mut l = vec![0, 0, 8, 1];
    l.extend(n.to_be_bytes());
    l.extend(labels);
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), l).unwrap();
}

#[test]
fn bad_audit_input_is_refused_before_anything_runs() {
    let dir = temp_dir("audit-bad");
    let out = dir.join("out");
    let refused = |args: &[&str], needles: &[&str]| {
        let err = clean_failure(
            Pareidolia::with_args(["audit", "--model", &lenet(), "--quiet", "--out"])
                .arg(&out)
                .args(args)
                .output(),
            needles,
        );
        assert!(
            !out.exists(),
            "a refused audit left {}: {err}",
            out.display()
        );
        err
    };
    // Data with twelve classes against a ten-class model.
    let twelve = dir.join("twelve");
    write_idx(&twelve, 28, &[0, 3, 11, 5]);
    refused(
        &["--data", twelve.to_str().unwrap()],
        &["12 classes", "lenet-mnist has 10 labels", "--data"],
    );
    // Digits of another size.
    let big = dir.join("big");
    write_idx(&big, 32, &(0..10).collect::<Vec<u8>>());
    refused(
        &["--data", big.to_str().unwrap()],
        &["takes 28x28x1", "input size"],
    );
    // A reference with other labels and no class map.
    let other = dir.join("other-labels");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["lenet-mnist.onnx", "manifest.toml"] {
        std::fs::copy(root().join("models/lenet-mnist").join(f), other.join(f)).unwrap();
    }
    let words = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    std::fs::write(other.join("labels.txt"), words.join("\n") + "\n").unwrap();
    let reference = other.join("manifest.toml");
    refused(
        &["--reference", reference.to_str().unwrap()],
        &["other labels", "class map", "@MAP"],
    );
    // A class map that names a class the reference does not have.
    let map = dir.join("map.csv");
    std::fs::write(&map, "0,zero\n1,eleven\n").unwrap();
    refused(
        &[
            "--reference",
            &format!("{}@{}", reference.display(), map.display()),
        ],
        &[
            "map.csv, line 2",
            "`eleven` is neither a label of the target model",
        ],
    );
    // Classes out of range, and a budget too small for one generation of every part.
    refused(
        &["--classes", "3,10"],
        &["class 10 is out of range", "0 to 9"],
    );
    refused(&["--budget", "soon"], &["--budget", "not a duration"]);
    refused(
        &["--budget", "200ms", "--seeds", "1"],
        &["too small for one generation", "--budget"],
    );
    // The same reference with a class map (transfer's format): digits 0 and 1 map to their
    // words, 2 to both `two` and `seven` (their probabilities summed); the rest are not scored.
    std::fs::write(&map, "0,zero\n1,one\n# a comment\n2,two\n2,seven\n").unwrap();
    success(
        Pareidolia::with_args(["audit", "--model", &lenet(), "--quiet", "--out"])
            .arg(&out)
            .args([
                "--classes",
                "0,1,2,3",
                "--seeds",
                "1",
                "--budget",
                "4s",
                "--reference",
                &format!("{}@{}", reference.display(), map.display()),
            ])
            .output(),
    );
    let audit = json(&out.join("audit.json"));
    let mapped = audit["transfer"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["class_map"].as_str().is_some())
        .expect("the class-mapped reference is reported");
    for m in mapped["by_method"].as_array().unwrap() {
        // One champion per seed and method for classes 0, 1 and 2; class 3 is not mapped.
        assert_eq!(m["images"], 3, "{m}");
    }
}
