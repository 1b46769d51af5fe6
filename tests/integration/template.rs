//! The plugin template, used the way its README says: copied, renamed, built on its own, then
//! checked and used in a run by name.

use std::process::Command;

use crate::util::*;

/// Copies a folder tree.
pub(crate) fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Builds a template plugin as a user outside this repository would: the SDK (`sdk`, a folder
/// with `Cargo.toml` and `src/`) copied to `outside/pareidolia-plugin`, the template
/// (`plugins/TEMPLATE`) to `outside/CRATE` with its package renamed and its SDK path pointed at
/// the copy, `edits` applied to its `src/lib.rs`, the workspace's lock file beside it; built
/// offline into a target folder kept between test runs (`test-tmp/TARGET`). Returns the
/// library.
pub(crate) fn build_outside(
    outside: &std::path::Path,
    sdk: &std::path::Path,
    template: &str,
    crate_name: &str,
    edits: &[(&str, &str)],
    target: &str,
) -> std::path::PathBuf {
    let sdk_copy = outside.join("pareidolia-plugin");
    copy_dir(&sdk.join("src"), &sdk_copy.join("src"));
    std::fs::copy(sdk.join("Cargo.toml"), sdk_copy.join("Cargo.toml")).unwrap();
    let crate_dir = outside.join(crate_name);
    copy_dir(&root().join("plugins").join(template), &crate_dir);
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    let package = format!("name = \"pareidolia-{}\"", template_package(template));
    assert!(manifest.contains(&package), "{template}: no {package}");
    let manifest = manifest
        .replace(&package, &format!("name = \"{crate_name}\""))
        .replace(
            "path = \"../../crates/pareidolia-plugin\"",
            "path = \"../pareidolia-plugin\"",
        );
    assert!(manifest.contains("path = \"../pareidolia-plugin\""));
    std::fs::write(crate_dir.join("Cargo.toml"), manifest).unwrap();
    let mut lib = std::fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap();
    for (from, to) in edits {
        assert!(lib.contains(from), "{template}: no {from} in src/lib.rs");
        lib = lib.replace(from, to);
    }
    std::fs::write(crate_dir.join("src/lib.rs"), lib).unwrap();
    std::fs::copy(root().join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let target = artifacts().join("test-tmp").join(target);
    let output = Command::new(env!("CARGO"))
        .args(["build", "--release", "--offline", "--quiet"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{template} does not build outside the repository against {}:\n{}",
        sdk.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    target
        .join("release")
        .join(format!("lib{}.so", crate_name.replace('-', "_")))
}

/// `template-encoding` is the package `pareidolia-encoding-template`, and so on.
fn template_package(template: &str) -> String {
    let kind = template.trim_start_matches("template-");
    format!("{kind}-template")
}

#[test]
fn the_template_copied_renamed_and_built_is_a_working_plugin() {
    let dir = temp_dir("template");
    let crate_dir = dir.join("my-encoding");
    copy_dir(&root().join("plugins/template-encoding"), &crate_dir);
    let sdk = root().join("crates/pareidolia-plugin");
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml"))
        .unwrap()
        .replace("name = \"pareidolia-encoding-template\"", "name = \"my-encoding\"")
        .replace("path = \"../../crates/pareidolia-plugin\"", &format!("path = {:?}", sdk.display().to_string()))
        // The copy lives inside this repository's folder tree: make it its own workspace.
        + "\n[workspace]\n";
    std::fs::write(crate_dir.join("Cargo.toml"), manifest).unwrap();
    let lib = std::fs::read_to_string(crate_dir.join("src/lib.rs"))
        .unwrap()
        .replace("name = \"stripes\"", "name = \"my-stripes\"");
    std::fs::write(crate_dir.join("src/lib.rs"), lib).unwrap();
    // A target folder kept between test runs, so only the first build is slow; a fresh
    // lock file resolved from the crates the workspace build already fetched.
    let target = artifacts().join("test-tmp").join("template-target");
    let lockfile = root().join("Cargo.lock");
    std::fs::copy(&lockfile, crate_dir.join("Cargo.lock")).unwrap();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--offline", "--quiet"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(status.success(), "the copied template does not build");
    let built = target.join("release/libmy_encoding.so");
    assert!(built.is_file());

    // Built against today's SDK (ABI 1.1) without the optional operations: the entries
    // exist, and the plugin answers that it does not implement them.
    let lib = pareidolia_core::plugin_host::PluginLibrary::open(&built).unwrap();
    assert_eq!(lib.info().abi, "1.1");
    let canvas = pareidolia_plugin::abi::CanvasSpec {
        width: 28,
        height: 28,
        channels: 1,
    };
    let enc = pareidolia_core::EncodingPlugin::create(lib, "{}", canvas).unwrap();
    for op in pareidolia_core::OptionalOperation::ALL {
        assert!(enc.offers(op), "{op}");
        let e = enc.check_offers(op).unwrap_err();
        let text = e.to_string();
        assert!(
            e.is_not_offered()
                && text.contains("encoding plugin `my-stripes`")
                && text.contains("does not implement `Encoding::"),
            "{text}"
        );
    }
    drop(enc);

    let check = success(pareidolia(&[
        "plugins",
        "check",
        built.to_str().unwrap(),
        "--canvas",
        "28x28x1",
    ]));
    assert!(
        check.contains("encoding plugin `my-stripes`") && check.contains("plugin works"),
        "{check}"
    );

    // Used by name from a plugin folder, in a short run.
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(&built, plugins.join("libpareidolia_encoding_my_stripes.so")).unwrap();
    // `plugins` is relative: to the config's folder, `dir`.
    let config = config_edit(&dir, |t| {
        t.take("encoding.params");
        t.set("generations", 3)
            .set("encoding.plugin", "my-stripes")
            .add("plugin_dirs", vec!["plugins"]);
    });
    let out = dir.join("run");
    success(Pareidolia::run().quiet().config(&config).out(&out).output());
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["encoding"]["name"], "my-stripes");
    assert_eq!(summary["evaluations"], 800);
}

/// Issue 30, items 7 and 11: the fitness template and the SDK, both copied outside the
/// repository (so no workspace above them lends versions or lints), build against each other
/// by path; the built fitness passes `plugins check` and scores a short run by name.
#[test]
fn the_fitness_template_and_the_sdk_copied_outside_the_repository_build_and_run() {
    let outside = std::env::temp_dir().join(format!("pareidolia-outside-{}", std::process::id()));
    if outside.exists() {
        std::fs::remove_dir_all(&outside).unwrap();
    }
    let built = build_outside(
        &outside,
        &root().join("crates/pareidolia-plugin"),
        "template-fitness",
        "my-fitness",
        &[("name = \"tempered\"", "name = \"my-tempered\"")],
        "fitness-template-target",
    );
    let check = success(pareidolia(&[
        "plugins",
        "check",
        built.to_str().unwrap(),
        "--params",
        r#"{"temperature": 2.0}"#,
    ]));
    assert!(
        check.contains("fitness plugin `my-tempered`") && check.contains("plugin works"),
        "{check}"
    );
    let dir = temp_dir("fitness-template");
    let config = config_edit(&dir, |t| {
        t.set("generations", 2)
            .set("fitness.plugin", built.to_str().unwrap())
            .add("fitness.params.temperature", 2.0);
    });
    let out = dir.join("run");
    success(Pareidolia::run().quiet().config(&config).out(&out).output());
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["fitness"]["name"], "my-tempered");
    std::fs::remove_dir_all(&outside).ok();
}
