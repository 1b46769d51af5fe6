//! Runs with several models (issue 12): every model scores every child, the run folder,
//! checkpoints and `/status` list them all, a two-model run resumes exactly, and model lists
//! that cannot work are refused before anything runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pareidolia_core::checkpoint::CheckpointStore;

use crate::util::*;

/// Adds a second model to a config (the first is the default's embedded
/// `builtin:lenet-mnist`) as a `[[models]]` table with `manifest` and `backend`.
fn second_model(t: &mut toml::Table, manifest: &Path, backend: &str) {
    let mut model = toml::Table::new();
    model.insert("manifest".into(), path_value(manifest));
    model.insert("backend".into(), backend.into());
    t.insert(
        "models".into(),
        toml::Value::Array(vec![toml::Value::Table(model)]),
    );
}

fn lenet_manifest() -> PathBuf {
    root().join("models/lenet-mnist/manifest.toml")
}

/// A daemon config of `generations` with a checkpoint every 5 and two networks: the shipped
/// LeNet and the one trained from another initialisation.
fn two_model_config(dir: &Path, generations: u64) -> PathBuf {
    let cfg = daemon_config(dir, generations, 5);
    let mut t = read_toml(&cfg);
    let seed2 = root().join("models/lenet-mnist-seed2/manifest.toml");
    second_model(&mut t, &seed2, "tract");
    write_toml(&cfg, &t);
    cfg
}

fn run_to_end(command: &Pareidolia, log: &Path) {
    let (status, log) = command.start(log).wait(Duration::from_secs(120));
    assert!(status.success(), "{status}:\n{log}");
}

#[test]
fn a_two_model_run_lists_both_and_resumes_exactly() {
    let dir = temp_dir("two-models");
    let cfg = two_model_config(&dir, 10);
    let whole = dir.join("whole");
    run_to_end(
        &Pareidolia::daemon().config(&cfg).out(&whole),
        &dir.join("whole.log"),
    );
    let summary = json(&whole.join("summary.json"));
    let models = summary["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "{summary}");
    for (m, name) in models.iter().zip(["lenet-mnist", "lenet-mnist-seed2"]) {
        assert_eq!(m["name"], name);
        assert_eq!(m["backend"], "tract");
        assert_eq!(m["classes"], 10);
    }
    assert_eq!(summary["evaluations"], 200 * 11);
    let (c, _, _) = CheckpointStore::new(&whole, 3).load_newest().unwrap();
    assert_eq!(c.meta.identity.models.len(), 2);
    assert_eq!(c.meta.config.models.len(), 1);

    // Stopped at generation 5 and resumed: the same archive as the uninterrupted run.
    let split = dir.join("split");
    run_to_end(
        &Pareidolia::daemon().config(&cfg).generations(5).out(&split),
        &dir.join("split1.log"),
    );
    run_to_end(
        &Pareidolia::resume(&split).generations(10),
        &dir.join("split2.log"),
    );
    assert_eq!(run_result(&whole), run_result(&split));
}

/// Two models that are the same network score a child exactly as one does: the confidence
/// plugin averages their probabilities, so the archive equals a one-model run's.
#[test]
fn the_same_network_twice_scores_as_once() {
    let dir = temp_dir("same-twice");
    for sub in ["one", "two"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let one = default_config(&dir.join("one"));
    let two = config_edit(&dir.join("two"), |t| {
        second_model(t, &lenet_manifest(), "tract");
    });
    let (a, b) = (dir.join("a"), dir.join("b"));
    success(run_one_generation(&one, &a));
    success(run_one_generation(&two, &b));
    let (mut sa, pa) = run_result(&a);
    let (mut sb, pb) = run_result(&b);
    for s in [&mut sa, &mut sb] {
        s.as_object_mut().unwrap().remove("models");
    }
    assert_eq!(sa, sb);
    assert_eq!(pa, pb);
}

#[test]
fn models_that_disagree_on_classes_or_canvas_are_refused() {
    let dir = temp_dir("model-mismatch");
    for sub in ["classes", "canvas", "twice", "none"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    // LeNet's digits against EfficientNet's ImageNet classes.
    let imagenet = root().join("models/efficientnet-lite0/manifest.toml");
    let cfg = config_edit(&dir.join("classes"), |t| {
        second_model(t, &imagenet, "tract");
    });
    clean_failure(
        run_one_generation(&cfg, &dir.join("a")),
        &[
            "must have the same classes",
            "the labels of builtin:lenet-mnist",
            "efficientnet-lite0/labels.txt",
            "class 0: `0` against `tench`",
        ],
    );
    // The same classes on another canvas: the encoding renders one image for both.
    let cfg = config_edit(&dir.join("canvas"), |t| {
        second_model(t, &lenet_manifest(), "tract");
        let models = t.get_mut("models").unwrap().as_array_mut().unwrap();
        models[0]
            .as_table_mut()
            .unwrap()
            .insert("canvas".into(), toml::Value::Array(vec![int(32), int(32)]));
    });
    clean_failure(
        run_one_generation(&cfg, &dir.join("b")),
        &[
            "share one canvas",
            "`model` is shown 28x28x1",
            "`models[0]` 32x32x1",
        ],
    );
    // The same model twice, and no model at all.
    let cfg = config_edit(&dir.join("twice"), |t| {
        let mut model = toml::Table::new();
        model.insert("manifest".into(), "builtin:lenet-mnist".into());
        t.insert(
            "models".into(),
            toml::Value::Array(vec![toml::Value::Table(model)]),
        );
    });
    clean_failure(
        run_one_generation(&cfg, &dir.join("c")),
        &["`models[0].manifest` names `builtin:lenet-mnist`, which model names already"],
    );
    let cfg = config_edit(&dir.join("none"), |t| {
        t.take("model");
        t.insert("models".into(), toml::Value::Array(Vec::new()));
    });
    clean_failure(
        run_one_generation(&cfg, &dir.join("d")),
        &["`model` is missing", "[[models]]"],
    );
}

/// Issue 12, item 6: `transfer` scores a run's champions on other models; its numbers equal
/// what `classify` says of the gallery's PNG files, and it refuses what it cannot score.
#[test]
fn transfer_scores_the_champions_on_other_models() {
    let dir = temp_dir("transfer");
    let run = dir.join("run");
    success(Pareidolia::run().quiet().generations(5).out(&run).output());
    let out = dir.join("t");
    let stdout = success(
        Pareidolia::with_args(["transfer"])
            .arg(&run)
            .args(["--model", "builtin:lenet-mnist", "--model"])
            .arg(lenet_manifest())
            .arg("--out")
            .arg(&out)
            .output(),
    );
    assert!(stdout.contains("| lenet-mnist (source) | 10 |"), "{stdout}");
    assert!(stdout.contains("| lenet-mnist#2 | 10 |"), "{stdout}");
    let csv = read_text(&out.join("transfer.csv"));
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "class,label,source,lenet-mnist,lenet-mnist top class,lenet-mnist top label,\
         lenet-mnist#2,lenet-mnist#2 top class,lenet-mnist#2 top label"
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 10);
    // The gallery's PNGs, classified from disk, in class order.
    let mut pngs: Vec<PathBuf> = std::fs::read_dir(run.join("gallery"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().as_bytes()[0].is_ascii_digit())
        })
        .collect();
    pngs.sort();
    let classified = classify(&pngs, "builtin:lenet-mnist");
    for (class, (row, (top, _, probs))) in rows.iter().zip(&classified).enumerate() {
        let value = |i: usize| row[i].parse::<f64>().unwrap();
        assert_eq!(row[0], class.to_string());
        for target in [3, 6] {
            assert!(
                (value(target) - probs[class]).abs() < 1e-5,
                "{row:?} vs {probs:?}"
            );
            assert_eq!(row[target + 1], top.to_string(), "{row:?}");
        }
        assert!((value(2) - probs[class]).abs() < 1e-5, "source {row:?}");
    }
    let heat = pareidolia_core::image_io::read_png(&out.join("transfer.png")).unwrap();
    // A 16-pixel header, ten rows of 24, the colour scale (32).
    assert_eq!(heat.height, 16 + 10 * 24 + 32);
    assert!(read_text(&out.join("transfer.md")).contains("generation 5"));
    // `--view`: the run's own model under the ten-crop view (on a 28x28 canvas: the image and
    // its mirror, five times each) scores what `classify --view ten-crop` says of the PNGs,
    // and not what the centre view says.
    let ten = dir.join("ten-crop");
    let stdout = success(
        Pareidolia::with_args(["transfer"])
            .arg(&run)
            .args([
                "--model",
                "builtin:lenet-mnist",
                "--view",
                "ten-crop",
                "--out",
            ])
            .arg(&ten)
            .output(),
    );
    assert!(
        stdout.contains("| lenet-mnist (ten-crop) | 10 |"),
        "{stdout}"
    );
    let csv = read_text(&ten.join("transfer.csv"));
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .take(4)
                .skip(2)
                .map(|v| v.parse().unwrap())
                .collect()
        })
        .collect();
    let mirrored = classify_with(&pngs, "builtin:lenet-mnist", &["--view", "ten-crop"]);
    let mut differ = 0;
    for (class, (row, (_, _, probs))) in rows.iter().zip(&mirrored).enumerate() {
        let (source, ten_crop) = (row[0], row[1]);
        assert!(
            (ten_crop - probs[class]).abs() < 1e-5,
            "class {class}: {row:?} vs {probs:?}"
        );
        if (ten_crop - source).abs() > 1e-3 {
            differ += 1;
        }
    }
    assert!(differ > 0, "the ten-crop view changed no score: {rows:?}");
    // Refused: a run folder without checkpoints, a target with other classes.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    clean_failure(
        Pareidolia::with_args(["transfer"])
            .arg(&empty)
            .args(["--model", "builtin:lenet-mnist"])
            .output(),
        &["is not a pareidolia run folder"],
    );
    clean_failure(
        Pareidolia::with_args(["transfer"])
            .arg(&run)
            .arg("--model")
            .arg(root().join("models/efficientnet-lite0/manifest.toml"))
            .output(),
        &[
            "cannot load the target models",
            "has other classes than the run",
            "`0` against `tench`",
            "--class-map FILE",
            "--ignore-labels",
        ],
    );
    transfer_to_another_label_space(&dir, &run);
}

/// Issue 30, item 5: a target with other labels (the second LeNet, its digits spelt out) is
/// scored through `--ignore-labels` (class k as class k: the same numbers as with its own
/// labels) or a class map (mapped classes only; several target classes summed); without
/// either it is refused, saying what to give.
fn transfer_to_another_label_space(dir: &Path, run: &Path) {
    let seed2 = root().join("models/lenet-mnist-seed2");
    let words = dir.join("words");
    std::fs::create_dir_all(&words).unwrap();
    let names = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    std::fs::write(words.join("labels.txt"), names.join("\n") + "\n").unwrap();
    let mut manifest = read_toml(&seed2.join("manifest.toml"));
    let onnx = manifest["onnx"].as_str().unwrap().to_owned();
    manifest.insert("onnx".into(), path_value(&seed2.join(onnx)));
    manifest.insert("labels".into(), "labels.txt".into());
    write_toml(&words.join("manifest.toml"), &manifest);
    let transfer = |out: &str, extra: &[&str]| {
        Pareidolia::with_args(["transfer"])
            .arg(run)
            .arg("--model")
            .arg(words.join("manifest.toml"))
            .args(extra)
            .arg("--out")
            .arg(dir.join(out))
            .output()
    };
    clean_failure(
        transfer("refused", &[]),
        &[
            "has other classes than the run",
            "`0` against `zero`",
            "--class-map",
        ],
    );
    let rows = |out: &str| -> Vec<Vec<String>> {
        read_text(&dir.join(out).join("transfer.csv"))
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect()
    };
    success(transfer("by-index", &["--ignore-labels"]));
    let by_index = rows("by-index");
    success(
        Pareidolia::with_args(["transfer"])
            .arg(run)
            .arg("--model")
            .arg(seed2.join("manifest.toml"))
            .arg("--out")
            .arg(dir.join("own-labels"))
            .output(),
    );
    let own = rows("own-labels");
    for (a, b) in by_index.iter().zip(&own) {
        assert_eq!(a[..5], b[..5], "the same scores and top class");
        assert_eq!(
            a[5],
            names[a[4].parse::<usize>().unwrap()],
            "named in its own labels"
        );
    }
    // The 7 is the seven; the 1 is the one or the seven (summed); nothing else is scored.
    let map = dir.join("map.csv");
    std::fs::write(&map, "# run,target\n7,seven\n1,one\n1\t7\n").unwrap();
    let stdout = success(transfer("mapped", &["--class-map", map.to_str().unwrap()]));
    assert!(
        stdout.contains("classes matched class map") && stdout.contains("2 of 10 classes"),
        "{stdout}"
    );
    let mapped = rows("mapped");
    for (class, row) in mapped.iter().enumerate() {
        match class {
            7 => assert_eq!(row[3], own[7][3]),
            1 => {
                let (sum, one) = (
                    row[3].parse::<f64>().unwrap(),
                    own[1][3].parse::<f64>().unwrap(),
                );
                assert!(
                    sum >= one && sum <= 1.0,
                    "p(one) + p(seven) = {sum}, p(one) = {one}"
                );
            }
            _ => assert_eq!(row[3], "", "class {class} is not mapped: {row:?}"),
        }
    }
    // Bad maps and flags.
    std::fs::write(&map, "7,seven\n3,drei\n").unwrap();
    clean_failure(
        transfer("bad", &["--class-map", map.to_str().unwrap()]),
        &[
            "map.csv, line 2",
            "`drei` is neither a label of the target model",
        ],
    );
    clean_failure(
        transfer(
            "both",
            &["--class-map", map.to_str().unwrap(), "--ignore-labels"],
        ),
        &["cannot be used with"],
    );
    clean_failure(
        Pareidolia::with_args(["transfer"])
            .arg(run)
            .arg("--model")
            .arg(root().join("models/efficientnet-lite0/manifest.toml"))
            .arg("--ignore-labels")
            .output(),
        &[
            "--ignore-labels scores class k as class k",
            "1000 classes and the run 10",
        ],
    );
}

/// Issue 12: two networks of the same architecture, trained from different initialisations,
/// scored together by the `ensemble` fitness with `reduce = "min"`: every champion's score is
/// the smaller of the two networks' probabilities of its class, as `classify` reads them
/// from the gallery's PNG files.
#[test]
fn ensemble_min_scores_the_smaller_of_two_networks() {
    let dir = temp_dir("ensemble-min");
    let seed2 = root().join("models/lenet-mnist-seed2/manifest.toml");
    let cfg = config_edit(&dir, |t| {
        second_model(t, &seed2, "tract");
        t.set("fitness.plugin", "ensemble")
            .add("fitness.params.reduce", "min");
    });
    let run = dir.join("run");
    success(
        Pareidolia::run()
            .quiet()
            .generations(3)
            .config(&cfg)
            .out(&run)
            .output(),
    );
    let summary = json(&run.join("summary.json"));
    assert_eq!(summary["fitness"]["name"], "ensemble");
    let names: Vec<&str> = summary["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lenet-mnist", "lenet-mnist-seed2"]);
    let classes = summary["classes"].as_array().unwrap();
    let pngs: Vec<PathBuf> = classes
        .iter()
        .map(|c| run.join(c["image"].as_str().unwrap()))
        .collect();
    let a = classify(&pngs, "builtin:lenet-mnist");
    let b = classify(&pngs, seed2.to_str().unwrap());
    for (class, c) in classes.iter().enumerate() {
        // The fitness is the smaller probability; the confidence the summary reports is the
        // two models' mean probability.
        let score = c["fitness"].as_f64().unwrap();
        let confidence = c["confidence"].as_f64().unwrap();
        let (pa, pb) = (a[class].2[class], b[class].2[class]);
        assert!(
            (score - pa.min(pb)).abs() < 1e-5,
            "class {class}: score {score}, lenet-mnist {pa}, seed2 {pb}"
        );
        assert!(
            (confidence - (pa + pb) / 2.0).abs() < 1e-5,
            "class {class}: confidence {confidence}, lenet-mnist {pa}, seed2 {pb}"
        );
    }
}

/// `scripts/transfer.sh` on one seed and one generation: a table row for every encoding,
/// source and scoring model, with the seed counted.
#[test]
fn the_transfer_script_writes_its_table() {
    let dir = temp_dir("transfer-script");
    let out = dir.join("t");
    let status = std::process::Command::new(root().join("scripts/transfer.sh"))
        .args(["1", "1"])
        .arg(&out)
        .env("PAREIDOLIA", binary())
        .env("NICE", "0")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&status);
    assert!(status.status.success(), "{stdout}\n{stderr}");
    let table = read_text(&out.join("table.md"));
    let rows: Vec<&str> = table.lines().skip(2).collect();
    // direct and cppn; A and B scored by itself and 2 others, the ensemble by itself and 3.
    assert_eq!(rows.len(), 2 * (3 + 3 + 4), "{table}");
    for (encoding, source, scorer) in [
        ("direct", "A", "lenet-mnist-seed2"),
        ("cppn", "B", "lenet-mnist"),
        ("direct", "ensemble", "lenet-mnist-split3"),
        ("cppn", "ensemble", "itself"),
    ] {
        let prefix = format!("| {encoding} | {source} | {scorer} | 1 | ");
        assert!(
            rows.iter().any(|r| r.starts_with(&prefix)),
            "no row {prefix}:\n{table}"
        );
    }
}
