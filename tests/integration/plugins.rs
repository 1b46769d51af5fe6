//! The plugin loader and the real plugins through the C ABI: descriptors, the direct encoding
//! and the confidence fitness at work, kind and ABI checks, `plugins list` and `plugins check`.

use pareidolia_core::plugin_host::{PluginKind, PluginLibrary};
use pareidolia_core::{EncodingPlugin, FitnessPlugin, PluginError};
use pareidolia_plugin::abi::CanvasSpec;

use crate::util::*;

const MNIST: CanvasSpec = CanvasSpec {
    width: 28,
    height: 28,
    channels: 1,
};

#[test]
fn the_real_plugins_describe_themselves() {
    let direct = PluginLibrary::open(&library("pareidolia-encoding-direct")).unwrap();
    let info = direct.info();
    assert_eq!(
        (info.name.as_str(), info.kind, info.abi.as_str()),
        ("direct", PluginKind::Encoding, "1.1")
    );
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    let confidence = PluginLibrary::open(&library("pareidolia-fitness-confidence")).unwrap();
    assert_eq!(confidence.info().kind, PluginKind::Fitness);
}

#[test]
fn the_direct_encoding_works_through_the_c_abi() {
    let lib = PluginLibrary::open(&library("pareidolia-encoding-direct")).unwrap();
    let enc = EncodingPlugin::create(lib, "{}", MNIST).unwrap();
    let a = enc.random(1).unwrap();
    assert_eq!(a, enc.random(1).unwrap(), "seeded");
    assert_ne!(a, enc.random(2).unwrap());
    let child = enc.mutate(&a, 0, 3).unwrap();
    assert_ne!(a, child);
    let (c1, c2) = enc.crossover(&a, &child, 4).unwrap();
    assert_eq!(
        (c1.as_slice(), c2.as_slice()),
        (a.as_slice(), child.as_slice()),
        "crossover is off by default"
    );
    let mut pixels = vec![0u8; 784];
    enc.render(&child, &mut pixels).unwrap();
    let mean = pixels.iter().map(|&p| p as f64).sum::<f64>() / 784.0;
    assert!(
        (100.0..155.0).contains(&mean),
        "uniform noise has mean ~127, got {mean}"
    );
    assert!(enc.describe(&child).unwrap().contains("\"genes\":784"));
    // Errors from the plugin come back as values, with the plugin's message.
    let err = enc.render(&child, &mut [0u8; 10]).unwrap_err();
    assert!(err.message.contains("needs 784") && !err.panicked, "{err}");
    let err = enc.mutate(b"garbage", 0, 1).unwrap_err();
    assert!(err.message.contains("format version"), "{err}");
}

#[test]
fn the_confidence_fitness_softmaxes_logits_through_the_c_abi() {
    let lib = PluginLibrary::open(&library("pareidolia-fitness-confidence")).unwrap();
    let fit = FitnessPlugin::create(lib, "{}", 2, &[true]).unwrap();
    let scores = fit.score(&[0.0, 0.0, 10.0, 0.0], 2).unwrap();
    assert_eq!(scores[0], 0.5);
    assert!((scores[2] - 0.9999546).abs() < 1e-6);
    assert!(fit.score(&[f32::NAN, 0.0], 1).is_err());
}

#[test]
fn the_loader_checks_kind_and_abi() {
    let lib = PluginLibrary::open(&library("pareidolia-fitness-confidence")).unwrap();
    let err = EncodingPlugin::create(lib, "{}", MNIST).unwrap_err();
    assert!(matches!(err, PluginError::WrongKind { .. }), "{err}");
    let err = PluginLibrary::open(&library("pareidolia-fixture-old-abi")).unwrap_err();
    match err {
        PluginError::AbiMismatch {
            plugin_major: 0,
            plugin_minor: 9,
            host_major: 1,
            ..
        } => {}
        other => panic!("{other}"),
    }
}

#[test]
fn plugins_list_shows_what_is_installed_and_refuses_old_abis() {
    // Issue 18, item 13: the broken test fixtures are left out unless asked for.
    let plain = success(pareidolia(&["plugins", "list"]));
    assert!(
        plain.contains("direct") && !plain.contains("fixture"),
        "fixtures are not listed by default:\n{plain}"
    );
    let out = success(pareidolia(&["plugins", "list", "--all"]));
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{out}"))
            .to_owned()
    };
    assert!(
        line("direct").starts_with("encoding") && line("direct").contains(" 1.1 "),
        "{out}"
    );
    assert!(line("confidence").starts_with("fitness"), "{out}");
    let old = out
        .lines()
        .find(|l| l.contains("old_abi"))
        .expect("the old-ABI fixture is shown");
    assert!(
        old.starts_with("refused") && old.contains("ABI 0.9"),
        "{old}"
    );
    assert!(
        !out.contains("no_descriptor"),
        "libraries that are not plugins are not listed:\n{out}"
    );
}

#[test]
fn plugins_check_exercises_a_plugin_and_reports_failures() {
    let direct = library("pareidolia-encoding-direct");
    let out = success(pareidolia(&[
        "plugins",
        "check",
        direct.to_str().unwrap(),
        "--canvas",
        "16x16x3",
    ]));
    for step in [
        "create",
        "random",
        "crossover",
        "mutate",
        "render",
        "deserialise",
        "plugin works",
    ] {
        assert!(out.contains(step), "{step} missing:\n{out}");
    }
    let fit = library("pareidolia-fitness-confidence");
    assert!(
        success(pareidolia(&["plugins", "check", fit.to_str().unwrap()])).contains("plugin works")
    );
    let bad = library("pareidolia-fixture-misbehaving");
    let output = pareidolia(&[
        "plugins",
        "check",
        bad.to_str().unwrap(),
        "--params",
        r#"{"panic_in_mutate_every":1}"#,
    ]);
    assert!(!output.status.success());
    let (out, err) = text(&output);
    assert!(
        out.contains("FAIL  mutate") && err.contains("deliberate panic"),
        "{out}\n{err}"
    );
    let nan = library("pareidolia-fixture-nan-fitness");
    let output = pareidolia(&[
        "plugins",
        "check",
        nan.to_str().unwrap(),
        "--params",
        r#"{"nan_every":2}"#,
    ]);
    clean_failure(output, &["non-finite"]);
    clean_failure(
        pareidolia(&[
            "plugins",
            "check",
            direct.to_str().unwrap(),
            "--params",
            r#"{"eta_m":-1}"#,
        ]),
        &["eta_m"],
    );
    clean_failure(
        pareidolia(&["plugins", "check", "/nonexistent/libx.so"]),
        &["does not exist"],
    );
}

/// Issue 30, item 10: `plugins check` runs a fitness on real model outputs (held-out digits and
/// synthetic images, one or several models), prints the score table, and fails a fitness
/// whose scores are non-finite, ignore the target class or depend on the rest of the batch.
#[test]
fn plugins_check_scores_a_fitness_on_real_model_outputs() {
    let check = |lib: &str, params: &str, extra: &[&str]| {
        let lib = library(lib);
        let mut args = vec![
            "plugins",
            "check",
            lib.to_str().unwrap(),
            "--params",
            params,
        ];
        args.extend_from_slice(extra);
        pareidolia(&args)
    };
    let out = success(check("pareidolia-fitness-confidence", "{}", &[]));
    for needle in [
        "scored 17 images by 1 model(s) (builtin:lenet-mnist [logits]), 10 classes",
        "held-out 7     7 99.97%",
        "best target = the models' top class on 17 of 17 images",
        "score alike",
        "finite, target-dependent, deterministic and independent of the batch",
        "plugin works",
    ] {
        assert!(out.contains(needle), "{needle}:\n{out}");
    }
    // The difference margin's worst target is the negative of the top class's probability.
    let out = success(check(
        "pareidolia-fitness-margin",
        r#"{"form":"difference"}"#,
        &[],
    ));
    assert!(out.contains("-0.999700 .. 0.999436"), "{out}");
    // Two models of one label space, the second from its manifest.
    let seed2 = root().join("models/lenet-mnist-seed2/manifest.toml");
    let out = success(check(
        "pareidolia-fitness-ensemble",
        r#"{"reduce":"min"}"#,
        &[
            "--model",
            "builtin:lenet-mnist",
            "--model",
            seed2.to_str().unwrap(),
        ],
    ));
    assert!(
        out.contains("by 2 model(s)") && out.contains("plugin works"),
        "{out}"
    );
    // Given images.
    let three = root().join("models/lenet-mnist/samples/300_3.png");
    let out = success(check(
        "pareidolia-fitness-confidence",
        "{}",
        &["--image", three.to_str().unwrap()],
    ));
    assert!(
        out.contains("scored 1 images") && out.contains(" 3 ("),
        "{out}"
    );
    // Faults, each named.
    clean_failure(
        check("pareidolia-fixture-nan-fitness", r#"{"nan_every":2}"#, &[]),
        &["non-finite", "image 1, class 0"],
    );
    clean_failure(
        check(
            "pareidolia-fixture-nan-fitness",
            r#"{"nan_every":1000,"flat":true}"#,
            &[],
        ),
        &["ignore the target"],
    );
    clean_failure(
        check(
            "pareidolia-fixture-nan-fitness",
            r#"{"nan_every":1000,"batch_mean":true}"#,
            &[],
        ),
        &["in a batch but", "alone"],
    );
    // Bad input: models of two label spaces, a missing model, an image of another size.
    let lite0 = root().join("models/efficientnet-lite0/manifest.toml");
    clean_failure(
        check(
            "pareidolia-fitness-confidence",
            "{}",
            &[
                "--model",
                "builtin:lenet-mnist",
                "--model",
                lite0.to_str().unwrap(),
            ],
        ),
        &["has 1000 classes", "one label space"],
    );
    clean_failure(
        check(
            "pareidolia-fitness-confidence",
            "{}",
            &["--model", "/nonexistent/manifest.toml"],
        ),
        &["cannot load model /nonexistent/manifest.toml"],
    );
    let png = root().join("docs/images/ascent-imagenet-regularised.png");
    clean_failure(
        check(
            "pareidolia-fitness-confidence",
            "{}",
            &["--image", png.to_str().unwrap()],
        ),
        &["pixels, but the first model takes 28x28"],
    );
}

/// Issue 18, item 10: a config may name a plugin by the name it exports (the template's
/// `stripes`, in `libpareidolia_encoding_template.so`), as the template's README says; a name
/// nothing exports is refused naming both ways it was looked for.
#[test]
fn a_plugin_is_found_by_the_name_it_exports() {
    let dir = temp_dir("export-name");
    let config = config_edit(&dir, |t| {
        t.set("encoding.plugin", "stripes");
        t.take("encoding.params");
    });
    success(run_one_generation(&config, &dir.join("out")));
    let summary = json(&dir.join("out/summary.json"));
    assert_eq!(summary["encoding"]["name"], "stripes");
    let config = config_edit(&dir, |t| {
        t.set("encoding.plugin", "nothing-exports-this");
    });
    clean_failure(
        run_one_generation(&config, &dir.join("out2")),
        &[
            "no encoding plugin `nothing-exports-this`",
            "libpareidolia_encoding_nothing_exports_this.so",
            "a plugin library exporting that name",
        ],
    );
}

/// Issue 18, item 12: `plugins check` ran one mutation, so a plugin that panics in 0.3% of
/// them passed and then lost children in a run, and a grey image drawn on an RGB canvas
/// passed silently. It now runs many seeded, bounded round trips (a second instance decodes
/// every genome and must draw the same image) and `--png DIR` writes what it draws.
#[test]
fn plugins_check_runs_many_round_trips_and_finds_rare_faults() {
    let dir = temp_dir("check-rounds");
    let direct = library("pareidolia-encoding-direct");
    let pngs = dir.join("pngs");
    let out = success(pareidolia(&[
        "plugins",
        "check",
        direct.to_str().unwrap(),
        "--canvas",
        "8x8x3",
        "--rounds",
        "300",
        "--seconds",
        "60",
        "--png",
        pngs.to_str().unwrap(),
    ]));
    assert!(
        out.contains("300 seeded rounds") && out.contains(": 0 failed"),
        "{out}"
    );
    let written: Vec<_> = std::fs::read_dir(&pngs).unwrap().flatten().collect();
    assert_eq!(written.len(), 32, "{out}");
    let image = pareidolia_core::image_io::read_png(&written[0].path()).unwrap();
    assert_eq!((image.width, image.height, image.channels), (8, 8, 3));

    let bad = library("pareidolia-fixture-misbehaving");
    // One mutation in 300 panics: the single mutation of the old check passed it.
    let output = pareidolia(&[
        "plugins",
        "check",
        bad.to_str().unwrap(),
        "--params",
        r#"{"panic_in_mutate_every":300}"#,
        "--rounds",
        "1000",
        "--seconds",
        "60",
    ]);
    let (out, _) = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(
        out.contains("1000 seeded rounds") && out.contains(": 3 failed"),
        "{out}"
    );
    assert!(
        out.contains("mutate: ") && out.contains("deliberate panic"),
        "{out}"
    );
    // A grey image on an RGB canvas.
    let output = pareidolia(&[
        "plugins",
        "check",
        bad.to_str().unwrap(),
        "--params",
        r#"{"one_channel":true}"#,
        "--canvas",
        "8x8x3",
    ]);
    let (out, _) = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(
        out.contains("render left 128 of the 192 bytes of a 8x8x3 image unwritten"),
        "{out}"
    );
}
