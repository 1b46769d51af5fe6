//! The gradient-ascent search (`[search] kind = "gradient-ascent"`) through the binary, on the
//! shipped LeNet: it fools every digit, fills the run folder as evolution does, resumes
//! exactly after a stop (by step count or SIGTERM), and refuses configs it cannot run.

use std::path::Path;
use std::time::Duration;

use crate::util::*;

fn mnist_config(dir: &Path, edit: impl FnOnce(&mut toml::Table)) -> std::path::PathBuf {
    let mut table = read_toml(&root().join("configs/ascent/mnist-unregularised.toml"));
    edit(&mut table);
    let path = dir.join("ascent.toml");
    write_toml(&path, &table);
    path
}

/// A run's result without what varies from run to run (timings).
fn ascent_result(run: &Path) -> (serde_json::Value, Vec<(String, Vec<u8>)>) {
    let (mut summary, pngs) = run_result(run);
    summary["ascent"]
        .as_object_mut()
        .unwrap()
        .remove("images_steps_per_s");
    (summary, pngs)
}

/// Issue 13, items 3 and 4: the unregularised recipe drives every digit's probability past
/// 99.99% on LeNet, and the run folder says so per class: the first step reaching each
/// threshold (in order), the confidence of the real-valued image and of its 8-bit PNG (scored
/// by tract and the fitness plugin, as an evolved image is), one history line per step.
#[test]
fn gradient_ascent_fools_lenet_on_every_digit() {
    let dir = temp_dir("ascent-mnist");
    let cfg = mnist_config(&dir, |_| {});
    let out = dir.join("run");
    let stdout = success(
        Pareidolia::run()
            .config(&cfg)
            .generations(300)
            .out(&out)
            .quiet()
            .output(),
    );
    assert!(stdout.contains("300 generations"), "{stdout}");
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["generations"], 300);
    assert_eq!(summary["evaluations"], 3000);
    let ascent = &summary["ascent"];
    assert_eq!(ascent["steps"], 300);
    assert_eq!(ascent["recipe"]["decay"], 0.0);
    assert_eq!(ascent["recipe"]["early_prog"], 0.02);
    assert!(ascent["images_steps_per_s"].as_f64().unwrap() > 0.0);
    // `auto` with ONNX Runtime installed (as the tests require) and no CUDA: the gradient
    // graph on ONNX Runtime's CPU provider.
    let backend = ascent["gradient_backend"].as_str().unwrap();
    assert!(backend.starts_with("ort-cpu on cpu"), "{backend}");
    let classes = ascent["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 10);
    for (digit, c) in classes.iter().enumerate() {
        assert_eq!(c["class"], digit);
        let confidence = c["confidence"].as_f64().unwrap();
        assert!(confidence >= 0.9999, "digit {digit}: {c}");
        let steps: Vec<u64> = ["0.5", "0.99", "0.999", "0.9999"]
            .iter()
            .map(|k| c["first_step_reaching"][k].as_u64().unwrap())
            .collect();
        assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{c}");
        assert!(steps[3] <= c["best_step"].as_u64().unwrap(), "{c}");
        // The PNG is the image rounded down to bytes: close, and scored independently.
        let png = c["png_confidence"].as_f64().unwrap();
        assert!(png > 0.99, "digit {digit}: {c}");
        // The summary's per-class champion is the same image.
        let class = &summary["classes"][digit];
        assert!((class["confidence"].as_f64().unwrap() - confidence).abs() < 1e-6);
    }
    // The gallery's PNGs, classified by the CLI (tract), are the digits they fool.
    let pngs: Vec<_> = (0..10)
        .map(|d| {
            out.join(
                summary["classes"][d]["image"]
                    .as_str()
                    .expect("every digit has an image"),
            )
        })
        .collect();
    for (digit, (top, p, _)) in classify(&pngs, "builtin:lenet-mnist")
        .into_iter()
        .enumerate()
    {
        assert_eq!(top, digit);
        let png = classes[digit]["png_confidence"].as_f64().unwrap();
        assert!(
            (p - png).abs() < 1e-5,
            "digit {digit}: classify {p} vs summary {png}"
        );
    }
    // One history line per step after the header; the median only rises.
    let history = read_text(&out.join("history.csv"));
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 301, "{history}");
    assert!(lines[1].starts_with("1,10,"), "{}", lines[1]);
    assert!(lines[300].starts_with("300,3000,"), "{}", lines[300]);
    let medians: Vec<f64> = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect();
    assert!(medians.windows(2).all(|w| w[0] <= w[1]), "{medians:?}");
}

/// Issue 13, item 3: a gradient-ascent run stopped by its step count, or by SIGTERM, and
/// resumed ends exactly where an uninterrupted run ends: images, records and history.
#[test]
fn a_stopped_gradient_ascent_resumes_exactly() {
    let dir = temp_dir("ascent-resume");
    // Two digits, regularised, so decay and blur state cross the checkpoint too.
    let edit = |t: &mut toml::Table| {
        t.set("search.preset", "released")
            .add("search.blur_radius", 0.5)
            .add("search.blur_every", int(3))
            .add("archive.classes", toml::Value::Array(vec![int(3), int(8)]));
        t.add("checkpoint.every_generations", int(5))
            .set("generations", int(400))
            .add("http.listen", "127.0.0.1:0");
    };
    let cfg = mnist_config(&dir, edit);
    let whole = dir.join("whole");
    success(Pareidolia::run().config(&cfg).out(&whole).quiet().output());
    let split = dir.join("split");
    success(
        Pareidolia::run()
            .config(&cfg)
            .generations(111)
            .out(&split)
            .quiet()
            .output(),
    );
    let (status, log) = Pareidolia::resume(&split)
        .generations(400)
        .start(&dir.join("split.log"))
        .wait(Duration::from_secs(120));
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("resuming"), "{log}");
    assert_eq!(ascent_result(&whole), ascent_result(&split));
    assert_eq!(history_without_time(&whole), history_without_time(&split));
    // Issue 30 item 18: resumed with no step left, the summary keeps the run's rate (from
    // the checkpoint's stage times) instead of null.
    let (status, log) = Pareidolia::resume(&split)
        .generations(400)
        .start(&dir.join("split-again.log"))
        .wait(Duration::from_secs(120));
    assert!(status.success(), "{status}\n{log}");
    let rate = json(&split.join("summary.json"))["ascent"]["images_steps_per_s"].as_f64();
    assert!(rate.is_some_and(|r| r > 0.0), "{rate:?}\n{log}");

    // SIGTERM while the daemon runs: it stops at a step boundary with a checkpoint, exit 0.
    let term = dir.join("term");
    let mut d = Pareidolia::daemon()
        .config(&cfg)
        .out(&term)
        .start(&dir.join("term.log"));
    d.wait_for("checkpoint written", Duration::from_secs(60));
    d.signal("TERM");
    let (status, log) = d.wait(Duration::from_secs(60));
    assert!(status.success(), "SIGTERM must exit 0: {status}\n{log}");
    let stopped = json(&term.join("summary.json"))["generations"]
        .as_u64()
        .unwrap();
    assert!((5..400).contains(&stopped), "{stopped}\n{log}");
    let (status, log) = Pareidolia::resume(&term)
        .start(&dir.join("term2.log"))
        .wait(Duration::from_secs(120));
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(ascent_result(&whole).1, ascent_result(&term).1);
    assert_eq!(
        ascent_result(&whole).0["ascent"],
        ascent_result(&term).0["ascent"]
    );
    assert_eq!(history_without_time(&whole), history_without_time(&term));
}

/// Issue 13, item 5, and what the search needs from a config: each refused before anything
/// runs, with the key and what to do.
#[test]
fn gradient_ascent_configs_it_cannot_run_are_refused_clearly() {
    let dir = temp_dir("ascent-bad");
    type Edit = Box<dyn Fn(&mut toml::Table)>;
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "class out of range",
            Box::new(|t| {
                t.add("archive.classes", toml::Value::Array(vec![int(3), int(10)]));
            }),
            vec!["archive.classes", "10"],
        ),
        (
            "class twice",
            Box::new(|t| {
                t.add("archive.classes", toml::Value::Array(vec![int(3), int(3)]));
            }),
            vec!["archive.classes", "twice"],
        ),
        (
            "blur without a period",
            Box::new(|t| {
                t.add("search.blur_radius", 1.0);
            }),
            vec!["search.blur_every", "at least 1"],
        ),
        (
            "ascent keys on map-elites",
            Box::new(|t| {
                t.set("search.kind", "map-elites");
            }),
            vec!["`search`", "gradient-ascent"],
        ),
        (
            "an encoding that does not store pixels",
            Box::new(|t| {
                t.set("encoding.plugin", "cppn");
                t.take("encoding.params");
            }),
            vec!["genome_from_pixels", "color_space = \"rgb\""],
        ),
        (
            "unknown preset",
            Box::new(|t| {
                t.set("search.preset", "seed-1");
            }),
            vec!["search.preset", "released, unregularised"],
        ),
    ];
    for (what, edit, needles) in cases {
        let cfg = mnist_config(&dir, |t| edit(t));
        let out = dir.join(what.replace(' ', "-"));
        let output = Pareidolia::run()
            .config(&cfg)
            .generations(2)
            .out(&out)
            .output();
        clean_failure(output, &needles);
    }
}

/// Issue 15 item 4 for the second search: `--until` ends a gradient-ascent run at the first
/// step where the condition holds, recorded in `summary.json`.
#[test]
fn until_ends_gradient_ascent_once_every_digit_is_fooled() {
    let dir = temp_dir("ascent-until");
    let cfg = mnist_config(&dir, |_| {});
    let out = dir.join("run");
    success(
        Pareidolia::run()
            .config(&cfg)
            .args(["--until", "min>=0.9999"])
            .out(&out)
            .quiet()
            .output(),
    );
    let summary = json(&out.join("summary.json"));
    let last = summary["ascent"]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["first_step_reaching"]["0.9999"].as_u64().unwrap())
        .max()
        .unwrap();
    // Step `last` (from 0) is the last digit's first image at 99.99%: the run ends after it.
    let reached = &summary["stop"]["reached"];
    assert_eq!(reached["condition"], "min>=0.9999", "{summary}");
    assert_eq!(reached["generation"].as_u64(), Some(last + 1), "{summary}");
    assert_eq!(summary["generations"].as_u64(), Some(last + 1));
    assert!(last + 1 < 500, "{last}");
    assert!(summary["stats"]["min"].as_f64().unwrap() >= 0.9999);
}

/// Issue 25: gradient ascent runs against the trained modern MNIST models (a ResNet with
/// BatchNormalization, a ViT with attention, LayerNorm and GELU), a short budget each: every
/// digit's confidence rises, and the run records the model it ran on.
#[test]
fn gradient_ascent_runs_on_the_trained_resnet_and_vit() {
    for name in ["mnist-resnet-bn", "mnist-vit"] {
        let dir = temp_dir(&format!("ascent-{name}"));
        let manifest = root().join("models").join(name).join("manifest.toml");
        let cfg = mnist_config(&dir, |t| {
            t.set("model.manifest", manifest.to_str().unwrap());
        });
        let out = dir.join("run");
        let stdout = success(
            Pareidolia::run()
                .config(&cfg)
                .generations(40)
                .out(&out)
                .quiet()
                .output(),
        );
        assert!(stdout.contains("40 generations"), "{name}: {stdout}");
        let summary = json(&out.join("summary.json"));
        assert_eq!(summary["ascent"]["steps"], 40, "{name}");
        let history = read_text(&out.join("history.csv"));
        let lines: Vec<&str> = history.lines().collect();
        assert_eq!(lines.len(), 41, "{name}: {history}");
        let median = |l: &str| -> f64 { l.split(',').nth(3).unwrap().parse().unwrap() };
        let (first, last) = (median(lines[1]), median(lines[40]));
        eprintln!("{name}: median confidence {first} after step 1, {last} after step 40");
        assert!(last > first && last > 0.5, "{name}: {first} -> {last}");
        let classes = summary["ascent"]["classes"].as_array().unwrap();
        assert_eq!(classes.len(), 10, "{name}");
        let text = serde_json::to_string(&summary).unwrap();
        assert!(text.contains(name), "{name} not named in {text}");
    }
}
