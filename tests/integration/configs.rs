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
