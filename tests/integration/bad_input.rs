//! Bad configs, models and plugins given to the binary: each is refused with a clear message
//! naming what is wrong, a non-zero exit and no panic.

use std::path::{Path, PathBuf};

use crate::util::*;

/// A model folder in `dir` made from the shipped LeNet (with `onnx` as its model file if
/// given, and the manifest's `sha256` of the file written), with `edit` applied to its
/// manifest.
fn model_dir(dir: &Path, onnx: Option<&[u8]>, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
    let src = root().join("models/lenet-mnist");
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(src.join("labels.txt"), m.join("labels.txt")).unwrap();
    let bytes = match onnx {
        Some(b) => b.to_vec(),
        None => std::fs::read(src.join("lenet-mnist.onnx")).unwrap(),
    };
    std::fs::write(m.join("lenet-mnist.onnx"), &bytes).unwrap();
    let mut manifest = read_toml(&src.join("manifest.toml"));
    manifest.set("sha256", pareidolia_eval::sha256_hex(&bytes));
    edit(&mut manifest);
    write_toml(&m.join("manifest.toml"), &manifest);
    m.join("manifest.toml")
}

/// The default experiment on the model of `manifest`.
fn use_model(dir: &Path, manifest: &Path) -> PathBuf {
    config_edit(dir, |t| {
        t.set("model.manifest", path_value(manifest));
    })
}

/// The default experiment with its encoding plugin named `plugin` (a name or a library path).
fn use_encoding(dir: &Path, plugin: &Path) -> PathBuf {
    config_edit(dir, |t| {
        t.set("encoding.plugin", path_value(plugin));
    })
}

#[test]
fn unknown_config_key_is_named() {
    let dir = temp_dir("bad-key");
    // As text: the key goes in where a user would misspell it, among the top-level keys.
    let config = config_text(&dir, |t| {
        t.replacen("seed = 1\n", "seed = 1\nmutation_strenght = 3\n", 1)
    });
    clean_failure(
        run_one_generation(&config, &dir.join("out")),
        &["invalid config", "mutation_strenght", "config.toml"],
    );
}

#[test]
fn a_lag_out_of_range_or_on_gradient_ascent_is_refused() {
    let dir = temp_dir("bad-lag");
    clean_failure(
        Pareidolia::run()
            .quiet()
            .generations(1)
            .args(["--lag", "9"])
            .out(&dir.join("a"))
            .output(),
        &["the command line", "`lag`", "must be from 0", "to 4"],
    );
    // The same key on gradient ascent, which has no generations to overlap.
    clean_failure(
        Pareidolia::run()
            .quiet()
            .generations(1)
            .config(&root().join("configs/ascent/mnist.toml"))
            .args(["--lag", "2"])
            .out(&dir.join("b"))
            .output(),
        &["`lag`", "applies to MAP-Elites only"],
    );
}

#[test]
fn missing_config_file_is_reported() {
    let dir = temp_dir("no-config");
    clean_failure(
        run_one_generation(&dir.join("nope.toml"), &dir.join("out")),
        &["cannot read config", "nope.toml"],
    );
}

#[test]
fn missing_model_file_is_reported_with_its_path() {
    let dir = temp_dir("no-model");
    let config = use_model(&dir, &dir.join("missing/manifest.toml"));
    clean_failure(
        run_one_generation(&config, &dir.join("out")),
        &["cannot read model manifest", "missing/manifest.toml"],
    );
}

#[test]
fn a_file_that_is_not_onnx_is_refused() {
    let dir = temp_dir("not-onnx");
    let manifest = model_dir(&dir, Some(b"this is not a protobuf"), |_| {});
    let config = use_model(&dir, &manifest);
    clean_failure(
        run_one_generation(&config, &dir.join("out")),
        &["is not a usable ONNX model", "lenet-mnist.onnx"],
    );
}

#[test]
fn a_changed_model_file_fails_its_checksum() {
    let dir = temp_dir("checksum");
    let manifest = model_dir(&dir, None, |m| {
        m.set("sha256", "0".repeat(64));
    });
    let config = use_model(&dir, &manifest);
    clean_failure(
        run_one_generation(&config, &dir.join("out")),
        &["sha256", "its manifest expects 0000"],
    );
}

#[test]
fn a_model_whose_input_does_not_match_its_manifest_is_refused() {
    let dir = temp_dir("shape");
    let manifest = model_dir(&dir, None, |m| {
        m.set("input.height", 32).set("input.width", 32);
    });
    let config = use_model(&dir, &manifest);
    clean_failure(
        run_one_generation(&config, &dir.join("out")),
        &["lenet-mnist", "input shape", "32"],
    );
}

#[test]
fn a_missing_plugin_names_where_it_looked() {
    let dir = temp_dir("no-plugin");
    let config = config_edit(&dir, |t| {
        t.set("encoding.plugin", "nonexistent");
    });
    clean_failure(
        run_one_generation(&config, &dir.join("out")),
        &[
            "no encoding plugin `nonexistent`",
            "libpareidolia_encoding_nonexistent.so",
            "PAREIDOLIA_PLUGIN_PATH",
        ],
    );
}

#[test]
fn a_plugin_of_the_wrong_kind_is_refused() {
    let dir = temp_dir("wrong-kind");
    let fitness = library("pareidolia-fitness-confidence");
    let config = use_encoding(&dir, &fitness);
    clean_failure(
        run_one_generation(&config, &dir.join("out")),
        &["`confidence`", "is a fitness plugin", "as the encoding"],
    );
}

#[test]
fn a_plugin_built_against_another_abi_is_refused_naming_both_versions() {
    let dir = temp_dir("old-abi");
    let old = library("pareidolia-fixture-old-abi");
    let config = use_encoding(&dir, &old);
    clean_failure(
        run_one_generation(&config, &dir.join("out")),
        &["plugin ABI 0.9", "this host speaks ABI 1.1", "rebuild"],
    );
}

#[test]
fn a_library_without_the_descriptor_is_not_a_plugin() {
    let dir = temp_dir("no-descriptor");
    let lib = library("pareidolia-fixture-no-descriptor");
    let config = use_encoding(&dir, &lib);
    clean_failure(
        run_one_generation(&config, &dir.join("out")),
        &["is not a Pareidolia plugin", "pareidolia_plugin_descriptor"],
    );
}

#[test]
fn a_file_that_is_not_a_shared_library_is_refused_with_the_loader_cause() {
    let dir = temp_dir("not-a-library");
    let fake = dir.join("libfake.so");
    std::fs::write(&fake, "plain text").unwrap();
    let config = use_encoding(&dir, &fake);
    // dlopen's own reason (e.g. "invalid ELF header" or "file too short") is passed on.
    let err = clean_failure(
        run_one_generation(&config, &dir.join("out")),
        &["cannot load plugin library", "libfake.so"],
    );
    assert!(err.contains("ELF") || err.contains("too short"), "{err}");
}

#[test]
fn invalid_plugin_parameters_are_refused_by_the_plugin() {
    let dir = temp_dir("bad-params");
    let config = config_edit(&dir, |t| {
        t.set("encoding.params.mutation_rate", 5.0);
    });
    clean_failure(
        run_one_generation(&config, &dir.join("out")),
        &[
            "plugin `direct` refused its setup",
            "mutation_rate",
            "[0, 1]",
        ],
    );
}

#[test]
fn a_non_empty_run_folder_is_not_overwritten() {
    let dir = temp_dir("busy-out");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("summary.json"), "{}").unwrap();
    let config = default_config(&dir);
    clean_failure(run_one_generation(&config, &out), &["already holds files"]);
    assert_eq!(
        std::fs::read_to_string(out.join("summary.json")).unwrap(),
        "{}"
    );
}

#[test]
fn classify_refuses_images_of_the_wrong_size() {
    let dir = temp_dir("classify-size");
    let img = pareidolia_core::image_io::Image {
        width: 10,
        height: 10,
        channels: 1,
        pixels: vec![0; 100],
    };
    let path = dir.join("small.png");
    pareidolia_core::image_io::write_png(&path, &img).unwrap();
    clean_failure(
        pareidolia(&["classify", path.to_str().unwrap()]),
        &["small.png", "10x10 images are smaller than the 28x28 input"],
    );
    std::fs::write(dir.join("text.png"), "hello").unwrap();
    clean_failure(
        pareidolia(&["classify", dir.join("text.png").to_str().unwrap()]),
        &["is not a readable PNG"],
    );
}

#[test]
fn montage_picks_the_best_champions_and_refuses_what_is_not_there() {
    let dir = temp_dir("montage");
    let cfg = default_config(&dir);
    let run = dir.join("run");
    success(run_one_generation(&cfg, &run));
    let out = dir.join("top3.png");
    success(pareidolia(&[
        "montage",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--top",
        "3",
    ]));
    let grid = pareidolia_core::image_io::read_png(&out).unwrap();
    // Three 28x28 digits scaled x4 into 112-pixel tiles, with 6-pixel padding around them.
    assert_eq!(grid.width, 3 * (112 + 6) + 6);
    clean_failure(
        pareidolia(&[
            "montage",
            run.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--classes",
            "3,10",
        ]),
        &["class 10 has no champion", "classes 0..9"],
    );
    clean_failure(
        pareidolia(&[
            "montage",
            dir.join("nowhere").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]),
        &[
            "cannot read",
            "summary.json",
            "finished or exported run folder",
        ],
    );
}

/// Issue 18, item 15: a manifest without `sha256` loads; the log gives the file's sha256 to
/// pin, and the run records it.
#[test]
fn a_manifest_without_sha256_runs_and_says_what_to_pin() {
    let dir = temp_dir("no-sha256");
    let manifest = model_dir(&dir, None, |m| {
        m.take("sha256");
    });
    let config = use_model(&dir, &manifest);
    let out = Pareidolia::run()
        .quiet()
        .verbose()
        .generations(1)
        .config(&config)
        .out(&dir.join("out"))
        .output();
    let (_, stderr) = text(&out);
    let sha = pareidolia_eval::sha256_hex(
        &std::fs::read(root().join("models/lenet-mnist/lenet-mnist.onnx")).unwrap(),
    );
    success(out);
    assert!(
        stderr.contains("gives no sha256") && stderr.contains(&sha),
        "{stderr}"
    );
    let summary = json(&dir.join("out/summary.json"));
    assert_eq!(summary["model_sha256"], sha);
}

/// Issue 18, item 6: a logits model declared `output = "probabilities"` used to write
/// "confidences" of 15.39 and -4.86 into the summary and file names. Setup tries it on a few
/// images and refuses, naming the manifest and the key (a real softmax model, AlexNet-light,
/// passes the same check in the ImageNet tests).
#[test]
fn a_logits_model_declared_as_probabilities_is_refused() {
    let dir = temp_dir("not-probabilities");
    let manifest = model_dir(&dir, None, |m| {
        m.set("output", "probabilities");
    });
    let config = use_model(&dir, &manifest);
    let err = clean_failure(
        run_one_generation(&config, &dir.join("out")),
        &[
            "says `output = \"probabilities\"`",
            "which are not probabilities",
            "set `output = \"logits\"`",
        ],
    );
    assert!(err.contains(&manifest.display().to_string()), "{err}");
    assert!(!dir.join("out/gallery").exists());
}

/// Issue 18, item 6: tract ignored a wrong `[input] name` and ONNX Runtime only warned; both
/// refuse it, naming the graph's input.
#[test]
fn a_wrong_input_name_is_refused_by_every_backend() {
    let dir = temp_dir("input-name");
    let manifest = model_dir(&dir, None, |m| {
        m.set("input.name", "pixels");
    });
    for backend in ["tract", "ort-cpu"] {
        let sub = dir.join(backend);
        std::fs::create_dir_all(&sub).unwrap();
        let config = config_edit(&sub, |t| {
            t.set("model.manifest", path_value(&manifest))
                .set("model.backend", backend);
        });
        clean_failure(
            run_one_generation(&config, &sub.join("out")),
            &["no input named `pixels`", "\"input\"", "fix `input.name`"],
        );
    }
}

/// Issue 18, item 6: `[model.onnxruntime] library = "/nonexistent"` was silently replaced by
/// the Python package's library; a library the user names must be there.
#[test]
fn a_named_onnx_runtime_library_must_exist() {
    let dir = temp_dir("ort-library");
    let config = config_edit(&dir, |t| {
        t.set("model.backend", "ort-cpu").add(
            "model.onnxruntime.library",
            "/nonexistent/libonnxruntime.so",
        );
    });
    clean_failure(
        run_one_generation(&config, &dir.join("out")),
        &["`model.onnxruntime.library` names /nonexistent/libonnxruntime.so, which does not exist"],
    );
    // A folder that is there but holds no library is refused by the runtime loader too.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let sub = dir.join("b");
    std::fs::create_dir_all(&sub).unwrap();
    let config = config_edit(&sub, |t| {
        t.set("model.backend", "ort-cpu")
            .add("model.onnxruntime.library", path_value(&empty));
    });
    clean_failure(
        run_one_generation(&config, &sub.join("out")),
        &["no libonnxruntime.so* there", "onnxruntime.library"],
    );
}

/// Issue 18, item 7: `offspring_per_generation = 4000000000` aborted with "memory allocation
/// of 176000000000 bytes failed" (exit 134), and an 8192x8192 canvas with 200 children needs
/// about 13 GB. Setup estimates what a config needs and refuses one beyond the machine's
/// memory or `max_memory`, with the estimate in the message.
#[test]
fn a_config_that_cannot_fit_in_memory_is_refused_with_the_estimate() {
    let dir = temp_dir("memory");
    let huge = config_edit(&dir, |t| {
        t.set("offspring_per_generation", 4_000_000_000_i64);
    });
    clean_failure(
        run_one_generation(&huge, &dir.join("out")),
        &[
            "this config needs about",
            "4000000000 children",
            "more than this machine's memory",
        ],
    );
    let sub = dir.join("canvas");
    std::fs::create_dir_all(&sub).unwrap();
    let large = config_edit(&sub, |t| {
        t.add("max_memory", "8 GiB").add(
            "model.canvas",
            toml::Value::Array(vec![8192.into(), 8192.into()]),
        );
    });
    clean_failure(
        run_one_generation(&large, &sub.join("out")),
        &[
            "200 children of",
            "image 67108864 bytes",
            "more than max_memory = \"8 GiB\" (8.0 GiB)",
            "raise max_memory",
        ],
    );
    // The default canvas fits in the same limit.
    let fits = config_edit(&sub, |t| {
        t.add("max_memory", "8 GiB");
    });
    success(run_one_generation(&fits, &sub.join("out2")));
}
