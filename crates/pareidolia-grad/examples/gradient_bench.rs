//! Forward + backward time of the gradient backends — the CPU evaluator (`cpu`) and the
//! backward pass as an ONNX graph on ONNX Runtime's CPU provider (`ort-cpu`) — against
//! forward-only tract and ONNX Runtime, per image, at batch 1 and 32, on the same machine in
//! one run, every backend on the same number of threads (tract: one, it has no intra-op
//! threads).
//!
//! `cargo run --release -p pareidolia-grad --example gradient_bench [--threads N] [MANIFEST...]`
//! (default: 2 threads; LeNet, EfficientNet-Lite0 and the light zoo's ResNet-50, issue 25's
//! three; ONNX Runtime through `ORT_DYLIB_PATH`, its columns `-` when it cannot load). Prints
//! a Markdown table; times are medians.

use std::path::PathBuf;
use std::time::Instant;

use pareidolia_eval::{Backend, Model, ModelRef, OrtBackend, OrtOptions, TractBackend, ViewSpec};
use pareidolia_grad::grad::{CpuGradient, GradientBackend, Objective, OrtGradient};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `f` over `reps` runs after one warm-up run.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut threads = 2;
    if let Some(i) = args.iter().position(|a| a == "--threads") {
        threads = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .expect("--threads N");
        args.drain(i..i + 2);
    }
    let mut manifests: Vec<PathBuf> = args.into_iter().map(PathBuf::from).collect();
    if manifests.is_empty() {
        manifests = [
            "models/lenet-mnist/manifest.toml",
            "models/efficientnet-lite0/manifest.toml",
            "models/light-zoo/resnet50.toml",
        ]
        .iter()
        .map(|m| root.join(m))
        .collect();
    }
    println!("Threads: {threads}.\n");
    println!(
        "| model | batch | tract forward | ONNX Runtime forward | cpu gradient | cpu / ORT forward | ort-cpu gradient | ort-cpu / ORT forward |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let options = OrtOptions {
        intra_threads: threads,
        ..OrtOptions::default()
    };
    for path in manifests {
        let model = Model::load(&ModelRef::Path(path)).expect("model");
        let len = model.image_len();
        let big = len > 64 * 64 * 3;
        let mut tract = TractBackend.prepare(&model).expect("tract");
        let mut ort = match OrtBackend::cpu(options.clone()).prepare(&model) {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!("ONNX Runtime skipped: {e}");
                None
            }
        };
        let mut grad = CpuGradient { threads }
            .prepare(&model, ViewSpec::identity(&model))
            .expect("gradient");
        if let Some(dir) = std::env::var_os("DUMP_GRAPH") {
            // The gradient graph itself, to profile or read (`DUMP_GRAPH=DIR`).
            let g = pareidolia_grad::grad::GraphModel::new(
                &model,
                ViewSpec::identity(&model),
                OrtBackend::cpu(options.clone()),
            )
            .expect("gradient graph");
            let path = PathBuf::from(dir).join(format!("{}-gradient.onnx", model.name()));
            std::fs::write(
                &path,
                g.gradient_onnx(Objective::Probability).expect("graph"),
            )
            .expect("write the graph");
            eprintln!("wrote {}", path.display());
        }
        let mut graph = ort.as_ref().map(|_| {
            OrtGradient {
                backend: OrtBackend::cpu(options.clone()),
            }
            .prepare(&model, ViewSpec::identity(&model))
            .expect("gradient graph")
        });
        for batch in [1usize, 32] {
            let reps = match (big, batch) {
                (false, 1) => 200,
                (false, _) => 30,
                (true, 1) => 10,
                (true, _) => 3,
            };
            let bytes: Vec<u8> = (0..batch * len).map(|i| (i * 7 % 251) as u8).collect();
            let pixels: Vec<f32> = bytes.iter().map(|&b| f32::from(b)).collect();
            let targets: Vec<usize> = (0..batch).map(|i| i % model.classes()).collect();
            let per = |s: f64| s / batch as f64 * 1e3;
            let t = per(time(reps, || {
                tract.infer(&bytes, batch).expect("tract");
            }));
            let o = ort.as_mut().map(|ort| {
                per(time(reps, || {
                    ort.infer(&bytes, batch).expect("ort");
                }))
            });
            let g = per(time(reps, || {
                grad.gradient(&pixels, &targets, Objective::Probability)
                    .expect("gradient");
            }));
            let og = graph.as_mut().map(|graph| {
                per(time(reps, || {
                    graph
                        .gradient(&pixels, &targets, Objective::Probability)
                        .expect("gradient graph");
                }))
            });
            let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3} ms"));
            let ratio = |a: Option<f64>| match (a, o) {
                (Some(a), Some(o)) => format!("{:.1}x", a / o),
                _ => "-".into(),
            };
            println!(
                "| {} | {batch} | {t:.3} ms | {} | {g:.3} ms | {} | {} | {} |",
                model.name(),
                fmt(o),
                ratio(Some(g)),
                fmt(og),
                ratio(og),
            );
        }
    }
}
