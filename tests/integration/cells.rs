//! Cells that skip a class (`[archive] classes`): an 11-class LeNet (the shipped one widened
//! by an untrained "fooling" class, as the paper's retraining makes it) evolves only its 10
//! digits, while the fitness sees all 11 outputs; the summary, gallery, checkpoints and a
//! resumed run all keep to the 10 cells; bad lists are refused by key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pareidolia_core::checkpoint::CheckpointStore;
use pareidolia_core::image_io::read_png;
use pareidolia_eval::{Backend, Model, ModelRef, TractBackend};
use pareidolia_grad::OnnxGraph;

use crate::util::*;

/// Bias of the untrained "fooling" class: its logit for every image, high enough to take a
/// real share of the softmax, so a digit's confidence is visibly lower than among 10 classes.
const FOOLING_BIAS: f32 = 12.0;

/// `dir/lenet11/manifest.toml`: the shipped LeNet widened to 11 classes, class 10 "fooling".
fn lenet11(dir: &Path) -> PathBuf {
    let out = dir.join("lenet11");
    std::fs::create_dir_all(&out).unwrap();
    let mut g = OnnxGraph::read(&root().join("models/lenet-mnist/lenet-mnist.onnx")).unwrap();
    g.widen(&[0.0; 500], FOOLING_BIAS).unwrap();
    g.write(&out.join("lenet11.onnx")).unwrap();
    let labels: String = (0..10).map(|c| format!("{c}\n")).collect();
    std::fs::write(out.join("labels.txt"), labels + "fooling\n").unwrap();
    let mut m = read_toml(&root().join("models/lenet-mnist/manifest.toml"));
    m.set("name", "lenet11").set("onnx", "lenet11.onnx");
    m.take("sha256");
    write_toml(&out.join("manifest.toml"), &m);
    out.join("manifest.toml")
}

/// A daemon config on the 11-class LeNet with the digits as cells.
fn digits_only(dir: &Path, generations: u64) -> PathBuf {
    let manifest = lenet11(dir);
    let cfg = daemon_config(dir, generations, 2);
    let mut t = read_toml(&cfg);
    t.set("model.manifest", path_value(&manifest));
    t.add(
        "archive.classes",
        toml::Value::Array((0..10).map(int).collect()),
    );
    write_toml(&cfg, &t);
    cfg
}

fn run_to_end(command: &Pareidolia, log: &Path) {
    let (status, log) = command.start(log).wait(Duration::from_secs(120));
    assert!(status.success(), "{status}:\n{log}");
}

#[test]
fn an_eleven_class_lenet_evolves_ten_cells_against_all_eleven_outputs() {
    let dir = temp_dir("cells-eleven");
    let cfg = digits_only(&dir, 6);
    let whole = dir.join("whole");
    run_to_end(
        &Pareidolia::daemon().config(&cfg).out(&whole),
        &dir.join("whole.log"),
    );
    let summary = json(&whole.join("summary.json"));
    let classes = summary["classes"].as_array().unwrap();
    let listed: Vec<u64> = classes
        .iter()
        .map(|c| c["class"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, (0..10).collect::<Vec<_>>(), "{summary}");
    assert_eq!(summary["skipped_classes"], serde_json::json!([10]));
    assert_eq!(summary["stats"]["cells"], 10);
    assert_eq!(summary["models"][0]["classes"], 11);
    let gallery: Vec<String> = std::fs::read_dir(whole.join("gallery"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png") && n.as_bytes()[0].is_ascii_digit())
        .collect();
    assert_eq!(gallery.len(), 10, "{gallery:?}");
    assert!(
        !gallery.iter().any(|n| n.starts_with("010_")),
        "{gallery:?}"
    );

    // Each champion's confidence is its class's share of the 11-way softmax, fooling class
    // included, as the model gives it for the PNG on disk; among the 10 digits alone it would
    // be higher.
    let model = Model::load(&ModelRef::Path(dir.join("lenet11/manifest.toml"))).unwrap();
    let mut tract = TractBackend.prepare(&model).unwrap();
    for c in classes {
        let class = c["class"].as_u64().unwrap() as usize;
        let png = read_png(&whole.join(c["image"].as_str().unwrap())).unwrap();
        let logits = tract.infer(&png.pixels, 1).unwrap();
        assert_eq!(logits.len(), 11);
        let mut p = vec![0.0; 11];
        pareidolia_plugin::softmax(&logits, &mut p);
        let confidence = c["confidence"].as_f64().unwrap() as f32;
        // Relative: early champions of some digits have confidences near 1e-6.
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * b.abs() + 1e-12;
        let ten = p[class] / (1.0 - p[10]);
        assert!(
            close(confidence, p[class]) && !close(confidence, ten),
            "class {class}: summary {confidence}, 11-way softmax {}, 10-way {ten}",
            p[class]
        );
        assert!(p[10] > 1e-4, "the fooling class takes a share: {p:?}");
        eprintln!("class {class}: confidence {confidence}, fooling {}", p[10]);
    }

    // The checkpoint records the cells and keeps the fooling class empty.
    let (c, _, _) = CheckpointStore::new(&whole, 3).load_newest().unwrap();
    assert_eq!(c.meta.identity.cells, Some((0..10).collect()));
    assert_eq!(c.meta.config.archive.classes, Some((0..10).collect()));
    assert_eq!(c.cells.len(), 11);
    assert!(c.cells[10].is_none() && c.cells[..10].iter().all(Option::is_some));
    assert_eq!(c.archive().stats().cells, 10);
    // An export from the checkpoint writes the same cells.
    let export = dir.join("export");
    success(pareidolia(&[
        "export",
        whole.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]));
    let exported = json(&export.join("summary.json"));
    assert_eq!(exported["classes"], summary["classes"]);
    assert_eq!(exported["skipped_classes"], serde_json::json!([10]));
    assert_eq!(exported["stats"], summary["stats"]);

    // Stopped at generation 3 and resumed to 6: the same run as the uninterrupted one.
    let split = dir.join("split");
    run_to_end(
        &Pareidolia::daemon().config(&cfg).generations(3).out(&split),
        &dir.join("split1.log"),
    );
    run_to_end(
        &Pareidolia::resume(&split).generations(6),
        &dir.join("split2.log"),
    );
    assert_eq!(run_result(&whole), run_result(&split));
}

#[test]
fn bad_cell_lists_are_refused_by_key() {
    let dir = temp_dir("cells-bad");
    for (sub, list, needles) in [
        (
            "range",
            "[0, 10]",
            &[
                "config key `archive.classes` names class 10, but the model has 10 classes (0..=9)",
                "lenet-mnist",
            ][..],
        ),
        (
            "twice",
            "[1, 2, 1]",
            &["`archive.classes` names class 1 twice"][..],
        ),
        ("empty", "[]", &["`archive.classes` is empty"][..]),
    ] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let cfg = config_text(&d, |t| format!("{t}\n[archive]\nclasses = {list}\n"));
        clean_failure(run_one_generation(&cfg, &d.join("out")), needles);
    }
}
