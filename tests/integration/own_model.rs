//! Issue 30: a researcher's own model, first use. The manifest is checked once per command
//! (a logits model declared as probabilities is refused by every command), a model is measured
//! on labelled data before it is used (`classify --data`), a run's gallery is scored with that
//! run's model, `run --model` and a config of only `[model]` run the default experiment on it,
//! a failed start leaves nothing behind, and `train` finds its data from any folder.

use std::path::{Path, PathBuf};

use pareidolia_core::image_io::{Image, write_png};

use crate::util::*;

/// A copy of the shipped LeNet in `dir/model`, its manifest edited; returns the manifest.
fn lenet_copy(dir: &Path, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
    let src = root().join("models/lenet-mnist");
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["labels.txt", "lenet-mnist.onnx"] {
        std::fs::copy(src.join(f), m.join(f)).unwrap();
    }
    let mut manifest = read_toml(&src.join("manifest.toml"));
    edit(&mut manifest);
    write_toml(&m.join("manifest.toml"), &manifest);
    m.join("manifest.toml")
}

fn mnist() -> PathBuf {
    root().join("data/mnist-5k")
}

/// `top-1 X% (a/n)` of `classify --data`'s text: (a, n).
fn top1(stdout: &str) -> (usize, usize) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("top-1 "))
        .unwrap_or_else(|| panic!("no top-1 line:\n{stdout}"));
    let inside = &line[line.find('(').unwrap() + 1..line.find(')').unwrap()];
    let (a, n) = inside.split_once('/').unwrap();
    (a.parse().unwrap(), n.parse().unwrap())
}

/// Items 3 and 13: `classify`, `bench`, `train`, `transfer` and `run` apply one output check
/// when they load a model: the shipped LeNet (logits) declared `output = "probabilities"`
/// printed "0 1125.66%" in `classify` and a median of 1001.67% in `transfer`.
#[test]
fn every_command_refuses_a_logits_model_declared_as_probabilities() {
    let dir = temp_dir("own-model-output");
    let manifest = lenet_copy(&dir, |m| {
        m.set("output", "probabilities");
    });
    let needles = [
        "says `output = \"probabilities\"`",
        "which are not probabilities",
        "set `output = \"logits\"`",
    ];
    let run = dir.join("run");
    success(Pareidolia::run().quiet().generations(1).out(&run).output());
    let png = std::fs::read_dir(run.join("gallery"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "png"))
        .unwrap();
    let m = manifest.to_str().unwrap();
    let commands: Vec<(&str, Pareidolia)> = vec![
        (
            "classify",
            Pareidolia::with_args(["classify", "--model", m]).arg(&png),
        ),
        (
            "classify --data",
            Pareidolia::with_args(["classify", "--model", m, "--data"]).arg(mnist()),
        ),
        (
            "bench",
            Pareidolia::with_args(["bench", "--model", m, "--seconds", "0.1"]),
        ),
        (
            "train",
            Pareidolia::with_args(["train", "--quiet", "--train-iterations", "1", "--model", m])
                .arg("--train-data")
                .arg(mnist())
                .arg("--out")
                .arg(dir.join("trained")),
        ),
        (
            "transfer",
            Pareidolia::with_args(["transfer"])
                .arg(&run)
                .args(["--model", m, "--out"])
                .arg(dir.join("transfer")),
        ),
        (
            "run",
            Pareidolia::run()
                .quiet()
                .generations(1)
                .args(["--model", m])
                .out(&dir.join("run2")),
        ),
    ];
    for (name, command) in commands {
        let err = clean_failure(command.output(), &needles);
        assert!(err.contains(m), "{name}: {err}");
    }
    assert!(!dir.join("trained").exists() && !dir.join("run2").exists());
}

/// Item 2: `classify --data` measures accuracy on an IDX set (its held-out pair) and on a
/// folder of PNG files per class, so a wrong normalisation shows before a run: the shipped
/// LeNet gets 97.80% of the 1,000 held-out digits right (its manifest's
/// `held_out_accuracy`), the same model with the pixel range reversed 6.60%.
#[test]
fn classify_data_measures_accuracy_on_idx_sets_and_png_class_folders() {
    let dir = temp_dir("own-model-accuracy");
    let out = success(
        Pareidolia::with_args(["classify", "--data"])
            .arg(mnist())
            .output(),
    );
    assert!(
        out.contains("t10k-images-idx3-ubyte.gz (1000 images)"),
        "{out}"
    );
    assert_eq!(top1(&out), (978, 1000), "{out}");
    assert!(out.contains("top-5 99.90% (999/1000)"), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("top-1 ")).count(), 11);
    let inverted = lenet_copy(&dir, |m| {
        m.set("input.range", vec![1.0, 0.0]);
    });
    let out = success(
        Pareidolia::with_args(["classify", "--data"])
            .arg(mnist())
            .arg("--model")
            .arg(&inverted)
            .output(),
    );
    assert_eq!(top1(&out), (66, 1000), "{out}");

    // The first 30 held-out digits as PNG files, in folders named by label ("0" ... "9"
    // are LeNet's labels and its indices); the JSON form gives the same count as the model
    // says of each file through `classify`.
    let set = pareidolia_grad::LabelledImages::read(
        &mnist().join("t10k-images-idx3-ubyte.gz"),
        &mnist().join("t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let pngs = dir.join("pngs");
    let mut files = Vec::new();
    for i in 0..30 {
        let class = dir_for(&pngs, set.labels()[i]);
        let file = class.join(format!("{i:03}.png"));
        let image = Image {
            width: 28,
            height: 28,
            channels: 1,
            pixels: set.image(i).to_vec(),
        };
        write_png(&file, &image).unwrap();
        files.push((file, set.labels()[i] as usize));
    }
    let out = success(
        Pareidolia::with_args(["classify", "--json", "--data"])
            .arg(&pngs)
            .output(),
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["images"], 30);
    let each = success(
        Pareidolia::with_args(["classify", "--top", "1", "--json"])
            .args(files.iter().map(|(f, _)| f))
            .output(),
    );
    let right = each
        .lines()
        .zip(&files)
        .filter(|(line, (_, label))| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["top"][0]["class"] == *label
        })
        .count();
    assert!(right >= 27, "{each}");
    assert_eq!(report["top1"].as_f64().unwrap(), right as f64 / 30.0);
    // A class folder that is neither an index nor a label is named.
    std::fs::create_dir_all(pngs.join("seven")).unwrap();
    clean_failure(
        Pareidolia::with_args(["classify", "--data"])
            .arg(&pngs)
            .output(),
        &["seven", "neither a class index below 10 nor a label"],
    );
}

fn dir_for(root: &Path, label: u8) -> PathBuf {
    let d = root.join(label.to_string());
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Item 3: a run's gallery is scored with that run's model unless `--model` says otherwise,
/// and stderr says which model was used (the built-in LeNet scored a Fashion run's gallery
/// without a word). The run's model here is LeNet with other labels, so the labels printed
/// show which model spoke.
#[test]
fn classify_scores_a_runs_gallery_with_the_runs_model() {
    let dir = temp_dir("own-model-gallery");
    let manifest = lenet_copy(&dir, |_| {});
    let names = "zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n";
    std::fs::write(dir.join("model/labels.txt"), names).unwrap();
    let run = dir.join("run");
    success(
        Pareidolia::run()
            .quiet()
            .generations(1)
            .arg("--model")
            .arg(&manifest)
            .out(&run)
            .output(),
    );
    let png = std::fs::read_dir(run.join("gallery"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "png"))
        .unwrap();
    let output = Pareidolia::with_args(["classify"]).arg(&png).output();
    let (_, err) = text(&output);
    let out = success(output);
    assert!(
        err.contains(&manifest.display().to_string()) && err.contains("the model of run folder"),
        "{err}"
    );
    // What follows the file name: "label probability%, ..." (the file name holds a label).
    let said = |out: &str| out.rsplit_once(": ").unwrap().1.to_owned();
    assert!(
        names
            .lines()
            .any(|n| said(&out).starts_with(&format!("{n} "))),
        "{out}"
    );
    let output = Pareidolia::with_args(["classify", "--model", "builtin:lenet-mnist"])
        .arg(&png)
        .output();
    let out = success(output);
    assert!(!names.lines().any(|n| said(&out).contains(n)), "{out}");
    // Outside a run folder the built-in model is used, and said.
    let loose = dir.join("loose.png");
    std::fs::copy(&png, &loose).unwrap();
    let output = Pareidolia::with_args(["classify"]).arg(&loose).output();
    let (_, err) = text(&output);
    success(output);
    assert!(err.contains("scoring with builtin:lenet-mnist"), "{err}");
}

/// Items 6 and 4: `run --model MANIFEST` and a config of only `[model]` run the default
/// experiment on that model (the latter failed with "missing field `encoding`"); a start
/// that fails leaves no `config.toml` behind to block the retry.
#[test]
fn run_model_and_a_model_only_config_run_the_default_experiment_and_a_failed_start_leaves_nothing()
{
    let dir = temp_dir("own-model-run");
    let manifest = lenet_copy(&dir, |_| {});
    let a = dir.join("a");
    success(
        Pareidolia::run()
            .quiet()
            .generations(2)
            .arg("--model")
            .arg(&manifest)
            .out(&a)
            .output(),
    );
    let config = dir.join("only-model.toml");
    std::fs::write(
        &config,
        format!("[model]\nmanifest = {:?}\n", manifest.display().to_string()),
    )
    .unwrap();
    let b = dir.join("b");
    success(
        Pareidolia::run()
            .quiet()
            .generations(2)
            .config(&config)
            .out(&b)
            .output(),
    );
    let (sa, sb) = (json(&a.join("summary.json")), json(&b.join("summary.json")));
    assert_eq!(sa["encoding"]["name"], "direct");
    assert_eq!(
        sa["classes"], sb["classes"],
        "the same experiment on the same model"
    );
    let resolved = read_text(&b.join("config.toml"));
    assert!(resolved.contains("[encoding.params]") && resolved.contains("plugin = \"confidence\""));

    // A failed start, twice: the second says what is wrong, not "already holds files".
    let bad = lenet_copy(&dir.join("bad"), |m| {
        m.set("output", "probabilities");
    });
    let c = dir.join("c");
    for _ in 0..2 {
        let err = clean_failure(
            Pareidolia::run()
                .quiet()
                .generations(1)
                .arg("--model")
                .arg(&bad)
                .out(&c)
                .output(),
            &["which are not probabilities"],
        );
        assert!(!err.contains("already holds files"), "{err}");
        assert!(!c.exists(), "a failed start left {}", c.display());
    }
    // An empty folder given by the user stays, empty.
    std::fs::create_dir_all(&c).unwrap();
    clean_failure(
        Pareidolia::run()
            .quiet()
            .arg("--model")
            .arg(&bad)
            .out(&c)
            .output(),
        &["which are not probabilities"],
    );
    assert_eq!(std::fs::read_dir(&c).unwrap().count(), 0);
}

/// Item 18: `train` without `--train-data` finds the digits from any working folder (its
/// default `data/mnist-5k` was relative to it).
#[test]
fn train_finds_its_default_data_from_any_folder() {
    let dir = temp_dir("own-model-train");
    let output = Pareidolia::with_args(["train", "--quiet", "--train-iterations", "1"])
        .args(["--out", "m"])
        .command()
        .current_dir(&dir)
        .output()
        .unwrap();
    let out = success(output);
    assert!(out.contains("held-out accuracy"), "{out}");
    assert!(dir.join("m/model.onnx").is_file());
}
