//! The shipped config files: each parses, the documented example names every key, and the
//! default experiment's file is the built-in default.

use pareidolia_core::RunConfig;

use crate::util::*;

/// Every shipped config parses, and the documented example sets every key there is.
#[test]
fn shipped_configs_parse() {
    for entry in std::fs::read_dir(root().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            RunConfig::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let example = std::fs::read_to_string(root().join("configs/example.toml")).unwrap();
    let keys = [
        "seed",
        "generations",
        "offspring_per_generation",
        "initial_population",
        "batch_size",
        "mutators",
        "workers",
        "plugin_dirs",
        "manifest",
        "backend",
        "plugin",
        "params",
        "every_generations",
        "every_seconds",
        "keep",
        "listen",
        "classes",
        "until",
        "max_seconds",
        "max_memory",
        // [search.gradient], documented commented out (the example runs the paper's loop).
        "share",
        "steps",
        "target",
        "objective",
        "early_prog",
        "late_prog_mult",
    ];
    for key in keys {
        assert!(
            example.contains(&format!("{key} =")) || example.contains(&format!(".{key}]")),
            "example.toml does not document `{key}`"
        );
    }
    assert_eq!(
        RunConfig::from_file(&root().join("configs/mnist-direct.toml"))
            .unwrap()
            .encoding,
        RunConfig::builtin_default().encoding
    );
}

/// The retraining experiment's configs are the MNIST experiments (direct: the built-in
/// default; CPPN: configs/mnist-cppn.toml), on `auto` as they are.
#[test]
fn the_retrain_configs_are_the_mnist_experiments_on_auto() {
    for (file, base) in [
        ("mnist-direct.toml", RunConfig::builtin_default()),
        (
            "mnist-cppn.toml",
            RunConfig::from_file(&root().join("configs/mnist-cppn.toml")).unwrap(),
        ),
    ] {
        let path = root().join("configs/retrain").join(file);
        let mut retrain = RunConfig::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            retrain.primary_model().map(|m| m.backend),
            Some(pareidolia_core::BackendChoice::Auto),
            "{file}"
        );
        retrain.base_dir = base.base_dir.clone();
        assert_eq!(
            toml::to_string(&retrain).unwrap(),
            toml::to_string(&base).unwrap(),
            "{file}"
        );
    }
}
