//! Forward + backward time of the differentiable evaluator against forward-only tract and
//! ONNX Runtime (CPU), per image, at batch 1 and 32, on the same machine in one run.
//!
//! `cargo run --release -p pareidolia-grad --example gradient_bench [MANIFEST...]`
//! (default: LeNet, EfficientNet-Lite0 and the light zoo's ResNet-50, issue 25's three; ONNX
//! Runtime through `ORT_DYLIB_PATH`, skipped when it cannot load). Prints a Markdown table;
//! times are medians.

use std::path::PathBuf;
use std::time::Instant;

use pareidolia_eval::{Backend, Model, ModelRef, OrtBackend, OrtOptions, TractBackend, ViewSpec};
use pareidolia_grad::grad::{CpuGradient, GradientBackend, Objective};

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
    let mut manifests: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
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
    println!(
        "| model | batch | tract forward | ONNX Runtime forward | gradient forward + backward | gradient / ORT |"
    );
    println!("|---|---|---|---|---|---|");
    for path in manifests {
        let model = Model::load(&ModelRef::Path(path)).expect("model");
        let len = model.image_len();
        let big = len > 64 * 64 * 3;
        let mut tract = TractBackend.prepare(&model).expect("tract");
        let mut ort = match OrtBackend::cpu(OrtOptions::default()).prepare(&model) {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!("ONNX Runtime skipped: {e}");
                None
            }
        };
        let mut grad = CpuGradient::default()
            .prepare(&model, ViewSpec::identity(&model))
            .expect("gradient");
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
            let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3} ms"));
            println!(
                "| {} | {batch} | {:.3} ms | {} | {g:.3} ms | {} |",
                model.name(),
                t,
                fmt(o),
                o.map_or("-".into(), |o| format!("{:.1}x", g / o))
            );
        }
    }
}
