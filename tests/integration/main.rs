//! End-to-end tests: the real `pareidolia` binary, the real plugins loaded from their built
//! cdylibs, the real ONNX models. They expect `cargo build --release --workspace` to have run
//! (README's test command does that first).

mod util;

/// The gradient-ascent search through the binary.
mod ascent;
/// `pareidolia audit` on LeNet: report in Chromium, audit.json against the run folders,
/// resumed equals uninterrupted, bad input refused first.
mod audit;
/// tract and ONNX Runtime agree; `cuda` and `auto` through the binary.
mod backends;
/// Bad configs, models and plugins: clear message, non-zero exit, no panic.
mod bad_input;
/// Plugins that panic, stall or return garbage at run time.
mod bad_plugins;
/// `[archive] classes`: cells for some of a model's classes, the fitness seeing them all.
mod cells;
/// Worker nodes over ractor_cluster: remote evaluators, bad joins.
mod cluster;
/// The shipped config files.
mod configs;
/// The long-running daemon.
mod daemon;
/// A daemon child process for tests.
mod daemon_process;
/// Same seed, same results; mutator count does not change them.
mod determinism;
/// scripts/device-check.sh without a GPU: arguments, the cuda refusal, a CPU pass.
mod device_check;
/// The ensemble and margin fitness plugins through the real loader.
mod fitness;
/// The live gallery page in headless Chromium.
mod gallery;
/// The backward pass as an ONNX graph on ONNX Runtime, against the reference evaluator.
mod gradient_graph;
/// Gradient-informed MAP-Elites (`[search.gradient]`): counted, exact, ahead, refusals.
mod gradient_operator;
/// The differentiable evaluator against tract and finite differences on the shipped models.
mod gradients;
/// The HTTP server's guards on real sockets: Host check, header-read timeout, connection limit.
mod http_limits;
/// The ImageNet configs on CPU, and the shipped ImageNet model on photographs.
mod imagenet;
/// The default experiment fools LeNet, checked from the PNG files on disk.
mod mnist_default;
/// tract against ONNX Runtime's reference outputs for the shipped model.
mod model_reference;
/// Runs with several models: listed everywhere, resumed exactly, mismatches refused.
mod models;
/// monitoring/: promtool on the config and alert rules, the Grafana dashboard, and both
/// against a live daemon scraped by a real Prometheus.
mod monitoring;
/// Issue 30: a researcher's own model: output check in every command, `classify --data`,
/// `run --model`, a failed start leaving nothing.
mod own_model;
/// Plugin ABI 1.1's optional encoding operations; a plugin of the ABI 1.0 SDK, refused them.
mod plugin_abi;
/// The plugin loader and the real plugins through the C ABI.
mod plugins;
/// What a resume may change and what it refuses; checkpoints of another run.
mod resume_policy;
/// `pareidolia train` and `pareidolia retrain`: training, the retraining experiment.
mod retrain;
/// Stop conditions: `--until`, `--max-seconds`, `[stop]`.
mod stop;
/// Actor failures mid-run.
mod supervision;
/// scripts/sweep.sh on 2 seeds x 5 generations, checked against the runs' summary.json.
mod sweep;
/// The plugin template, copied and built the way a user would.
mod template;
/// The ONNX model zoo's AlexNet manifest (models/bvlcalexnet), on a stand-in with the zoo file's
/// interface and a batch fixed at 1.
mod zoo_alexnet;
