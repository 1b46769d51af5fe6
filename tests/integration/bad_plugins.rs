//! Plugins that misbehave at run time: the run goes on, each bad child is dropped and
//! counted, nothing deadlocks (issue 3, item 6). Loading-time refusals are in `bad_input`.

use std::path::Path;

use crate::util::*;

/// A run of `generations` with the misbehaving encoding fixture, its parameters `encoding`
/// (TOML), and with `fitness` the NaN fitness fixture and its parameters; returns the summary
/// and the log.
fn run(
    dir: &Path,
    generations: u32,
    encoding: &str,
    fitness: Option<&str>,
) -> (serde_json::Value, String) {
    let params = |text: &str| -> toml::Table { text.parse().expect("parameters in TOML") };
    let config = config_edit(dir, |t| {
        t.set("generations", generations)
            .set(
                "encoding.plugin",
                path_value(&library("pareidolia-fixture-misbehaving")),
            )
            // The fixture takes its own parameters instead of the direct encoding's.
            .set("encoding.params", params(encoding));
        if let Some(f) = fitness {
            t.set(
                "fitness.plugin",
                path_value(&library("pareidolia-fixture-nan-fitness")),
            )
            .add("fitness.params", params(f));
        }
    });
    let out = dir.join("run");
    let output = Pareidolia::run().quiet().config(&config).out(&out).output();
    let (_, stderr) = text(&output);
    success(output);
    (json(&out.join("summary.json")), stderr)
}

#[test]
fn a_panicking_mutation_costs_that_child_only() {
    let dir = temp_dir("panic-mutate");
    let (s, log) = run(&dir, 5, "panic_in_mutate_every = 7", None);
    // 5 generations x 200 mutations; every 7th panics.
    assert_eq!(s["lost"], 1000 / 7);
    assert_eq!(s["evaluations"], 200 + 1000 - 1000 / 7);
    assert_eq!(s["generations"], 5);
    assert!(
        log.contains("plugin `misbehaving` mutate panicked") && log.contains("deliberate panic"),
        "{log}"
    );
}

#[test]
fn a_genome_that_does_not_render_is_rejected_and_counted() {
    let dir = temp_dir("garbage-genome");
    let (s, log) = run(&dir, 3, "garbage_genome_every = 5", None);
    assert_eq!(s["lost"], 600 / 5);
    assert_eq!(s["evaluations"], 200 + 600 - 600 / 5);
    assert!(
        log.contains("render failed") && log.contains("genome of 392 bytes for 784 pixels"),
        "{log}"
    );
}

#[test]
fn non_finite_scores_are_rejected_child_by_child() {
    let dir = temp_dir("nan-fitness");
    let (s, log) = run(&dir, 2, "", Some("nan_every = 4"));
    // Batches of 20: every 4th image of each batch scores NaN.
    assert_eq!(s["lost"], 600 / 4);
    assert_eq!(s["evaluations"], 600 - 600 / 4);
    assert!(log.contains("non-finite score"), "{log}");
    for c in s["classes"].as_array().unwrap() {
        assert!(c["confidence"].as_f64().unwrap().is_finite());
    }
}

#[test]
fn a_slow_plugin_slows_the_run_without_deadlock() {
    let dir = temp_dir("slow-plugin");
    // 200 mutations of 20 ms each on one or two mutators.
    let (s, _) = run(&dir, 1, "slow_ms = 20", None);
    assert_eq!(s["evaluations"], 400);
    assert_eq!(s["lost"], 0);
    assert!(
        s["stage_times"]["breed_s"].as_f64().unwrap() >= 200.0 * 0.02,
        "the plugin's time is accounted"
    );
}
