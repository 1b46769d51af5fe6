//! `pareidolia train` and `pareidolia retrain` through the binary: training lowers the loss
//! and writes an ONNX file that tract and ONNX Runtime run alike; the same seed gives the same
//! bytes; a small two-iteration retrain runs end to end, stops cleanly on SIGTERM and
//! continues; bad data and a model that cannot be widened are refused with clear errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pareidolia_eval::{Model, ModelRef};
use pareidolia_grad::TrainingData;

use crate::util::*;

fn mnist() -> PathBuf {
    root().join("data/mnist-5k")
}

fn training(dir: &Path) -> serde_json::Value {
    json(&dir.join("training.json"))
}

fn load(dir: &Path) -> Model {
    Model::load(&ModelRef::Path(dir.join("manifest.toml"))).unwrap()
}

#[test]
fn training_lowers_the_loss_and_the_onnx_it_writes_runs_alike_in_tract_and_onnx_runtime() {
    let dir = temp_dir("train-short");
    let out = dir.join("lenet-short");
    let stdout = success(
        Pareidolia::with_args(["train", "--quiet", "--train-iterations", "300"])
            .arg("--train-data")
            .arg(mnist())
            .arg("--out")
            .arg(&out)
            .output(),
    );
    assert!(stdout.contains("held-out accuracy"), "{stdout}");
    let t = training(&out);
    let curve = t["report"]["loss_curve"].as_array().unwrap();
    assert_eq!(curve.len(), 3, "{curve:?}");
    let first = curve[0][1].as_f64().unwrap();
    let last = curve[2][1].as_f64().unwrap();
    // Cross-entropy of 10 uniform classes is ln 10 = 2.30; the first block's mean is already
    // below it, the last is far below.
    assert!(first < 2.4 && last < 0.6 * first, "loss {first} -> {last}");
    let acc = t["held_out_accuracy"].as_f64().unwrap();
    assert!(acc > 0.8, "held-out accuracy after 300 iterations: {acc}");
    assert_eq!(t["held_out_count"], 1000);
    assert_eq!(t["report"]["iterations"], 300);

    // The written model: loads (sha256 pinned in its manifest), ten classes, and tract and
    // ONNX Runtime agree on real digits and on noise.
    let model = load(&out);
    assert_eq!(model.classes(), 10);
    assert_eq!(model.sha256, t["sha256"].as_str().unwrap());
    let data = TrainingData::open(&mnist()).unwrap();
    let held = data.held_out.unwrap();
    let mut images: Vec<u8> = held.pixels()[..40 * held.image_len()].to_vec();
    images.extend((0..4 * 784).map(|i| ((i * 7919) % 256) as u8));
    let worst = crate::backends::compare(&model, &images);
    assert!(worst < 1e-4, "{worst}");
    // Not the shipped weights: training from scratch wrote new ones.
    let shipped = Model::load(&ModelRef::Builtin("lenet-mnist".into())).unwrap();
    assert_ne!(model.sha256, shipped.sha256);
}

#[test]
fn the_same_seed_trains_the_same_bytes_and_another_seed_other_ones() {
    let dir = temp_dir("train-seeds");
    let train = |name: &str, seed: &str| {
        let out = dir.join(name);
        success(
            Pareidolia::with_args(["train", "--quiet", "--train-iterations", "20"])
                .args(["--train-threads", "2", "--train-seed", seed])
                .arg("--train-data")
                .arg(mnist())
                .arg("--out")
                .arg(&out)
                .output(),
        );
        std::fs::read(out.join("model.onnx")).unwrap()
    };
    let a = train("a", "5");
    let b = train("b", "5");
    let c = train("c", "6");
    assert!(
        a == b,
        "two trainings with seed 5 wrote different ONNX files"
    );
    assert!(a != c, "seeds 5 and 6 wrote the same ONNX file");
    // A folder that exists is never overwritten.
    clean_failure(
        Pareidolia::with_args(["train", "--quiet", "--train-iterations", "1"])
            .arg("--train-data")
            .arg(mnist())
            .arg("--out")
            .arg(dir.join("a"))
            .output(),
        &["exists already"],
    );
}

/// The shipped ResNet's BatchNormalizations through `train`: with batch statistics (the
/// default, PyTorch's `train()`) the running statistics written back move and the scales and
/// biases are trained; `--batch-norm frozen` writes the running statistics back unchanged.
/// Either way the fine-tuned model keeps its held-out accuracy.
#[test]
fn batch_norm_trains_with_batch_statistics_or_frozen_running_statistics() {
    use pareidolia_grad::grad::Network;
    let dir = temp_dir("train-batchnorm");
    let resnet = root().join("models/mnist-resnet-bn/manifest.toml");
    let shipped = Network::<f32>::load(&load(resnet.parent().unwrap())).unwrap();
    let param = |net: &Network<f32>, name: &str| -> Vec<f32> {
        net.parameters()
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} is not a parameter"))
            .values
            .clone()
    };
    let train = |mode: &str| {
        let out = dir.join(mode);
        let stdout = success(
            Pareidolia::with_args(["train", "--quiet", "--keep-weights"])
                .args(["--train-iterations", "20", "--train-batch", "32"])
                // Caffe's 0.01 with momentum 0.9 diverges on this AdamW-trained ResNet once
                // its statistics are frozen (NaN at iteration 16): fine-tune gently.
                .args(["--train-lr", "0.002"])
                .args(["--batch-norm", mode])
                .arg("--model")
                .arg(&resnet)
                .arg("--train-data")
                .arg(mnist())
                .arg("--out")
                .arg(&out)
                .output(),
        );
        assert!(stdout.contains("held-out accuracy"), "{stdout}");
        let t = training(&out);
        assert_eq!(t["recipe"]["batch_norm"], mode);
        assert_eq!(t["recipe"]["base_lr"], 0.002);
        let acc = t["held_out_accuracy"].as_f64().unwrap();
        assert!(acc > 0.95, "{mode}: held-out accuracy {acc}");
        let provenance = std::fs::read_to_string(out.join("manifest.toml")).unwrap();
        assert!(provenance.contains("BatchNormalization"), "{provenance}");
        Network::<f32>::load(&load(&out)).unwrap()
    };
    for (mode, moved) in [("train", true), ("frozen", false)] {
        let net = train(mode);
        assert_eq!(net.running_statistics().len(), 30);
        for (a, b) in net
            .running_statistics()
            .iter()
            .zip(shipped.running_statistics())
        {
            assert_eq!(a.name, b.name);
            assert_eq!(
                a.values != b.values,
                moved,
                "{mode}: running statistic {}",
                a.name
            );
        }
        for name in ["stem.1.weight", "layers.0.bn1.bias", "head.weight"] {
            assert_ne!(
                param(&net, name),
                param(&shipped, name),
                "{mode}: {name} not trained"
            );
        }
    }
}

#[test]
fn lenet_trains_on_fashion_mnist_from_debian_with_its_own_labels() {
    // Debian's dataset-fashion-mnist (.ci/run installs it): 60,000 training and 10,000
    // held-out images of ten kinds of clothing, in MNIST's format.
    let fashion = Path::new("/usr/share/datasets/fashion-mnist");
    let dir = temp_dir("train-fashion");
    let names =
        "T-shirt/top\nTrouser\nPullover\nDress\nCoat\nSandal\nShirt\nSneaker\nBag\nAnkle boot\n";
    std::fs::write(dir.join("labels.txt"), names).unwrap();
    let out = dir.join("lenet-fashion");
    success(
        Pareidolia::with_args(["train", "--quiet", "--train-iterations", "150"])
            .arg("--train-data")
            .arg(fashion)
            .arg("--labels")
            .arg(dir.join("labels.txt"))
            .arg("--out")
            .arg(&out)
            .output(),
    );
    let t = training(&out);
    assert_eq!(t["images"], 60000);
    assert_eq!(t["held_out_count"], 10000);
    // Chance is 10%; LeNet passes 60% within a few hundred iterations.
    let acc = t["held_out_accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.6,
        "Fashion-MNIST held-out accuracy after 150 iterations: {acc}"
    );
    let model = load(&out);
    assert_eq!(model.labels[9], "Ankle boot");
    // A labels file of another length than the model's outputs is refused.
    std::fs::write(dir.join("nine.txt"), "a\nb\nc\nd\ne\nf\ng\nh\ni\n").unwrap();
    clean_failure(
        Pareidolia::with_args(["train", "--quiet", "--train-iterations", "1"])
            .arg("--train-data")
            .arg(fashion)
            .arg("--labels")
            .arg(dir.join("nine.txt"))
            .arg("--out")
            .arg(dir.join("nine"))
            .output(),
        &["nine.txt", "9 labels", "10 outputs"],
    );
}

fn rows(csv: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), header.len(), "{l}");
            header
                .iter()
                .zip(f)
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn num(row: &std::collections::HashMap<String, String>, key: &str) -> f64 {
    row[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key} = {:?}", row[key]))
}

/// The arguments of a small retrain: 20 fooling images (2 runs of 10 generations) per
/// iteration, 200 SGD iterations per model.
fn small_retrain(out: &Path) -> Pareidolia {
    Pareidolia::with_args(["retrain", "--iterations", "2", "--images", "20"])
        .args([
            "--generations",
            "10",
            "--train-iterations",
            "200",
            "--train-threads",
            "2",
        ])
        .arg("--train-data")
        .arg(mnist())
        .arg("--out")
        .arg(out)
}

#[test]
fn a_two_iteration_retrain_stops_on_sigterm_continues_and_fills_its_table() {
    let dir = temp_dir("retrain-small");
    let out = dir.join("retrain");
    // Stopped on SIGTERM once iteration 0 is done (while model 1 trains or evolves).
    let first = small_retrain(&out).start(&dir.join("first.log"));
    let done0 = out.join("iteration-00/result.json");
    poll(
        "iteration 0 done",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || {
            if done0.is_file() {
                Ok(())
            } else {
                Err(read_text(&dir.join("first.log")))
            }
        },
    );
    first.signal("TERM");
    let (status, log) = first.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("stopped during iteration"), "{log}");
    assert!(out.join("iteration-00/result.json").is_file(), "{log}");
    assert!(!out.join("iteration-02/result.json").exists(), "{log}");

    // The same command continues and finishes; the table has one row per iteration.
    let stdout = success(small_retrain(&out).arg("--quiet").output());
    assert!(stdout.contains("done:"), "{stdout}");
    let csv = read_text(&out.join("retrain.csv"));
    let header = "iteration,model,classes,train_real,train_fooling,train_iterations,train_s,train_loss,held_out_accuracy,earlier_fooling,earlier_fooling_recognised,runs,images,median_confidence,min_confidence,share_at_least_0.9999,runs_all_fooled,median_generations_all_fooled,evolve_s";
    assert_eq!(csv.lines().next(), Some(header));
    let r = rows(&csv);
    assert_eq!(r.len(), 3, "{csv}");
    for (i, row) in r.iter().enumerate() {
        assert_eq!(num(row, "iteration"), i as f64);
        assert_eq!(num(row, "runs"), 2.0);
        assert_eq!(
            num(row, "images"),
            20.0,
            "every cell of both runs has a champion"
        );
        let (med, min) = (num(row, "median_confidence"), num(row, "min_confidence"));
        assert!(
            (0.0..=1.0).contains(&min) && min <= med && med <= 1.0,
            "{row:?}"
        );
        let acc = num(row, "held_out_accuracy");
        assert!((0.5..=1.0).contains(&acc), "{row:?}");
    }
    // Iteration 0 is the shipped model, measured as its manifest says (97.8%).
    assert_eq!(r[0]["model"], "lenet-mnist");
    assert_eq!(num(&r[0], "classes"), 10.0);
    assert_eq!(num(&r[0], "held_out_accuracy"), 0.978);
    assert_eq!(r[0]["train_real"], "");
    assert_eq!(r[0]["earlier_fooling_recognised"], "");
    // Then 11 classes, trained on 4,000 digits plus the fooling images so far.
    for (i, row) in r.iter().enumerate().skip(1) {
        assert_eq!(row["model"], format!("lenet-mnist-retrain-{i}"));
        assert_eq!(num(row, "classes"), 11.0);
        assert_eq!(num(row, "train_real"), 4000.0);
        assert_eq!(num(row, "train_fooling"), 20.0 * i as f64);
        assert_eq!(num(row, "earlier_fooling"), 20.0 * i as f64);
        assert_eq!(num(row, "train_iterations"), 200.0);
        let seen = num(row, "earlier_fooling_recognised");
        assert!((0.0..=1.0).contains(&seen), "{row:?}");
        let model = load(&out.join(format!("iteration-{i:02}/model")));
        assert_eq!(model.labels.last().map(String::as_str), Some("fooling"));
        // The runs' cells are the ten digits; the fitness saw all eleven outputs.
        let s = json(&out.join(format!("iteration-{i:02}/runs/seed-1/summary.json")));
        assert_eq!(s["classes"].as_array().unwrap().len(), 10);
        assert_eq!(s["skipped_classes"], serde_json::json!([10]));
    }
    // scripts/retrain_table.py (standard library only) makes its tables from the folder.
    let table = std::process::Command::new("python3")
        .arg(root().join("scripts/retrain_table.py"))
        .arg(&out)
        .output()
        .unwrap();
    let table = success(table);
    assert!(
        table.contains("| 2 | lenet-mnist-retrain-2 | 4000 + 40 |"),
        "{table}"
    );
    assert_eq!(
        table.lines().filter(|l| l.starts_with("| 1 |")).count(),
        2,
        "{table}"
    );
    // A third run of the command has nothing left to do and changes nothing.
    let again = success(small_retrain(&out).arg("--quiet").output());
    assert!(again.contains("done:"), "{again}");
    assert_eq!(read_text(&out.join("retrain.csv")), csv);
    // Another plan in the same folder is refused, naming what differs.
    clean_failure(
        Pareidolia::with_args(["retrain", "--images", "30"])
            .arg("--train-data")
            .arg(mnist())
            .arg("--out")
            .arg(&out)
            .output(),
        &["images_per_iteration", "another plan"],
    );
}

/// An IDX folder: `images` of `side x side` bytes and their labels.
fn idx_folder(dir: &Path, side: u32, labels: &[u8]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let n = labels.len() as u32;
    let mut images = vec![0, 0, 8, 3];
    for d in [n, side, side] {
        images.extend(d.to_be_bytes());
    }
    images.extend((0..n * side * side).map(|i| (i % 251) as u8));
    std::fs::write(dir.join("train-images-idx3-ubyte"), images).unwrap();
    let mut l = vec![0, 0, 8, 1];
    l.extend(n.to_be_bytes());
    l.extend(labels);
    std::fs::write(dir.join("train-labels-idx1-ubyte"), l).unwrap();
    dir.to_owned()
}

fn train_on(data: &Path, out: &Path) -> std::process::Output {
    Pareidolia::with_args(["train", "--quiet", "--train-iterations", "2"])
        .arg("--train-data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .output()
}

#[test]
fn bad_training_data_is_refused_with_what_where_and_what_to_do() {
    let dir = temp_dir("train-bad-data");
    let every: Vec<u8> = (0..20).map(|i| i % 10).collect();
    // Images of another size than the model's input.
    let small = idx_folder(&dir.join("small"), 8, &every);
    clean_failure(
        train_on(&small, &dir.join("m1")),
        &["train-images-idx3-ubyte", "8", "28"],
    );
    // A label beyond the model's classes.
    let mut bad = every.clone();
    bad[3] = 12;
    let beyond = idx_folder(&dir.join("beyond"), 28, &bad);
    clean_failure(train_on(&beyond, &dir.join("m2")), &["12"]);
    // A class without a single example.
    let no_three: Vec<u8> = every.iter().map(|&l| if l == 3 { 4 } else { l }).collect();
    let empty = idx_folder(&dir.join("empty"), 28, &no_three);
    clean_failure(train_on(&empty, &dir.join("m3")), &["3"]);
    // No data at all.
    clean_failure(
        train_on(&dir.join("nowhere"), &dir.join("m4")),
        &["nowhere"],
    );
    for m in ["m1", "m2", "m3", "m4"] {
        assert!(!dir.join(m).exists(), "{m} was written");
    }
}

#[test]
fn a_retrain_needs_a_last_layer_it_can_widen_and_a_held_out_set() {
    let dir = temp_dir("retrain-bad");
    // AlexNet-light's classifier weights are computed in the graph, not initializers.
    let cfg = config_edit(&dir, |t| {
        t.set(
            "model.manifest",
            path_value(&root().join("models/alexnet-light/manifest.toml")),
        );
    });
    let err = clean_failure(
        Pareidolia::with_args(["retrain", "--iterations", "1"])
            .arg("--config")
            .arg(&cfg)
            .arg("--train-data")
            .arg(mnist())
            .arg("--out")
            .arg(dir.join("alexnet"))
            .output(),
        &["widen"],
    );
    assert!(err.contains("alexnet"), "{err}");
    // Training data without a t10k pair.
    let every: Vec<u8> = (0..20).map(|i| i % 10).collect();
    let no_held_out = idx_folder(&dir.join("train-only"), 28, &every);
    clean_failure(
        Pareidolia::with_args(["retrain", "--iterations", "1"])
            .arg("--train-data")
            .arg(&no_held_out)
            .arg("--out")
            .arg(dir.join("no-held-out"))
            .output(),
        &["held-out", "t10k"],
    );
    // A folder that is not a retrain's.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    clean_failure(
        Pareidolia::with_args(["retrain", "--iterations", "1"])
            .arg("--train-data")
            .arg(mnist())
            .arg("--out")
            .arg(&other)
            .output(),
        &["not a retrain folder"],
    );
    assert_eq!(read_text(&other.join("notes.txt")), "mine");
}

/// Issue 30 item 4: a fresh retrain that fails before its first generation (here, a fitness
/// plugin that refuses its parameters when the first run sets up) leaves no folder, so the
/// same command, fixed, simply runs; the error says so.
#[test]
fn a_retrain_that_fails_before_its_first_generation_leaves_nothing() {
    let dir = temp_dir("retrain-failed-start");
    let config = config_edit(&dir, |t| {
        t.set("fitness.plugin", "margin")
            .add("fitness.params.reduce", "max");
    });
    let out = dir.join("out");
    let retrain = |config: &Path| {
        Pareidolia::with_args(["retrain", "--quiet", "--images", "10"])
            .args(["--train-iterations", "2", "--config"])
            .arg(config)
            .arg("--out")
            .arg(&out)
            .output()
    };
    clean_failure(
        retrain(&config),
        &["before its first generation", "was removed", "`reduce`"],
    );
    assert!(!out.exists(), "the failed start left {}", out.display());
    // Fixed, the same command starts (and is stopped here by its own end: one iteration).
    let fixed = config_edit(&dir, |t| {
        t.set("fitness.plugin", "margin")
            .add("fitness.params.reduce", "min")
            .set("generations", 2);
    });
    success(retrain(&fixed));
    assert!(out.join("retrain.json").is_file());
}

/// Issue 25 item 4: `retrain`'s training step (the head widened by a class, then SGD) on every
/// architecture that ends in a Gemm or MatMul + Add: today's four (`models/modern-zoo`: a
/// ResNet with BatchNorm, MobileNetV3, ConvNeXt, a ViT) and the trained MNIST ResNet and ViT,
/// with batch statistics where there is BatchNorm. Each writes a model of 11 classes, the last
/// `fooling`, whose ONNX loads and runs in tract, with new weights and a finite loss.
#[test]
fn every_modern_architecture_is_widened_and_trained() {
    use pareidolia_experiments::retrain::{LabelledBytes, TrainJob, train_model};
    use pareidolia_grad::train::SgdRecipe;
    let dir = temp_dir("retrain-modern");
    for manifest in [
        "models/modern-zoo/resnet_bn.toml",
        "models/modern-zoo/mobilenetv3_small.toml",
        "models/modern-zoo/convnext.toml",
        "models/modern-zoo/vit.toml",
        "models/mnist-resnet-bn/manifest.toml",
        "models/mnist-vit/manifest.toml",
    ] {
        let base = Model::load(&ModelRef::Path(root().join(manifest))).unwrap();
        // Two images per class of the widened model (11 classes), seeded noise.
        let image_len = base.image_len();
        let labels: Vec<u32> = (0..22).map(|i| i % 11).collect();
        let pixels: Vec<u8> = (0..22 * image_len)
            .map(|i| ((i as u64 * 2_654_435_761) >> 13) as u8)
            .collect();
        let set = LabelledBytes {
            image_len,
            pixels,
            labels,
        };
        let recipe = SgdRecipe {
            iterations: 3,
            batch: 8,
            base_lr: 0.001,
            init: pareidolia_grad::train::Init::Keep,
            ..SgdRecipe::caffe_lenet(1)
        };
        let out = dir.join(base.name());
        let job = TrainJob {
            base: &base,
            widen: true,
            name: format!("{}-wide", base.name()),
            train: &set,
            held_out: None,
            recipe,
            threads: 2,
            data_provenance: "seeded noise".into(),
        };
        let record = train_model(&job, &out, &mut |_| std::ops::ControlFlow::Continue(()))
            .unwrap_or_else(|e| panic!("{manifest}: {e}"))
            .expect("not stopped");
        assert_eq!(record.classes, 11, "{manifest}");
        assert_eq!(record.report.iterations, 3, "{manifest}");
        assert!(
            record.report.loss_curve.iter().all(|(_, l)| l.is_finite()),
            "{manifest}: {:?}",
            record.report.loss_curve
        );
        let trained = load(&out);
        assert_eq!(trained.classes(), 11);
        assert_eq!(trained.labels.last().map(String::as_str), Some("fooling"));
        let mut tract = pareidolia_eval::Backend::prepare(&pareidolia_eval::TractBackend, &trained)
            .unwrap_or_else(|e| panic!("{manifest}: {e}"));
        let out = tract.infer(&set.pixels[..2 * image_len], 2).unwrap();
        assert_eq!(out.len(), 22, "{manifest}");
        assert!(out.iter().all(|v| v.is_finite()), "{manifest}");
        assert_ne!(
            trained.sha256, base.sha256,
            "{manifest}: nothing was trained"
        );
    }
}
