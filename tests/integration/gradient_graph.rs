//! The backward pass written as an ONNX graph and run on ONNX Runtime (`OrtGradient`, issue
//! 25 item 3) against the reference evaluator (`CpuModel<f64>`), on every shipped
//! architecture: the same probabilities (within 1e-4), objective values, and pixel gradients
//! (relative L2 error per image at most 1e-3, or three times the f32 evaluator's own error
//! where single precision alone loses more: the light zoo's 50-layer ResNet with random
//! weights), for every objective, through the views and the manifest's normalisation; inputs
//! with ties broken (a little noise), as the evaluator's own finite-difference tests have
//! them.

use pareidolia_eval::{EvalError, Model, OrtBackend, OrtOptions, View, ViewSpec};
use pareidolia_grad::grad::{
    CpuModel, DifferentiableModel, GradientBackend, GraphModel, Objective, OrtGradient,
};

use crate::backends::pattern_images;
use crate::gradients::{load, noise, noisy_digit};

fn ort_cpu() -> OrtBackend {
    OrtBackend::cpu(OrtOptions {
        intra_threads: 2,
        ..OrtOptions::default()
    })
}

/// Compares the graph on ONNX Runtime with the reference evaluator on `pixels` (canvases of
/// `view`), one target per canvas, for each objective.
fn check(
    model: &Model,
    view: ViewSpec,
    pixels: &[f64],
    targets: &[usize],
    objectives: &[Objective],
) {
    let name = model.name();
    let reference = CpuModel::<f64>::new(model, view).unwrap();
    let single = CpuModel::<f32>::new(model, view).unwrap();
    let mut graph = GraphModel::new(model, view, ort_cpu()).unwrap();
    let as_f32: Vec<f32> = pixels.iter().map(|&v| v as f32).collect();
    let probs = graph.probabilities(&as_f32, targets.len()).unwrap();
    for objective in objectives.iter().copied() {
        let want = reference.evaluate(pixels, targets, objective).unwrap();
        let got = graph.gradient(&as_f32, targets, objective).unwrap();
        let ours = single.evaluate(&as_f32, targets, objective).unwrap();
        for (a, b) in want.probabilities.iter().zip(&got.probabilities) {
            assert!(
                (a - b).abs() < 1e-4,
                "{name} {objective}: probability {a} vs {b}"
            );
        }
        for (a, b) in want.probabilities.iter().zip(&probs) {
            assert!(
                (a - b).abs() < 1e-4,
                "{name}: forward graph probability {a} vs {b}"
            );
        }
        for (a, b) in want.objective.iter().zip(&got.objective) {
            let tol = 1e-4 * a.abs().max(1.0);
            assert!(
                (a - b).abs() < tol,
                "{name} {objective}: objective {a} vs {b}"
            );
        }
        let n = want.pixels.len() / targets.len();
        let relative = |w: &[f64], g: &[f32]| {
            let norm = w.iter().map(|v| v * v).sum::<f64>().sqrt();
            let err = w
                .iter()
                .zip(g)
                .map(|(a, &b)| (a - f64::from(b)).powi(2))
                .sum::<f64>()
                .sqrt();
            (norm, err / norm.max(1e-300))
        };
        for (i, w) in want.pixels.chunks_exact(n).enumerate() {
            let (norm, rel) = relative(w, &got.pixels[i * n..(i + 1) * n]);
            let (_, f32_rel) = relative(w, &ours.pixels[i * n..(i + 1) * n]);
            eprintln!(
                "{name} {objective} image {i}: |g| {norm:.3e}, relative error {rel:.1e} (f32 evaluator {f32_rel:.1e})"
            );
            assert!(
                norm > 0.0,
                "{name} {objective} image {i}: zero reference gradient"
            );
            assert!(
                rel <= 1e-3f64.max(3.0 * f32_rel),
                "{name} {objective} image {i}: relative error {rel:e} (|g| {norm:e}; the f32 evaluator's {f32_rel:e})"
            );
        }
    }
}

/// Pattern images with a little noise (ties broken), as pixel values.
fn patterns(model: &Model, n: usize) -> Vec<f64> {
    let images = pattern_images(model, n);
    images
        .iter()
        .zip(noise(3, images.len()))
        .map(|(&b, e)| f64::from(b) + 0.25 * e)
        .collect()
}

#[test]
fn lenet_graph_gradients_equal_the_evaluator_through_views_and_the_mean_image() {
    for manifest in ["manifest.toml", "manifest-mean.toml"] {
        let model = load("lenet-mnist", manifest);
        let mut pixels = noisy_digit("0_0.png", 28, 28, 0, 0);
        pixels.extend(noisy_digit("100_1.png", 28, 28, 0, 0));
        check(
            &model,
            ViewSpec::identity(&model),
            &pixels,
            &[0, 7],
            Objective::ALL,
        );
        for view in [View::Center, View::TenCrop] {
            let spec = ViewSpec {
                view,
                width: 33,
                height: 31,
            };
            let mut pixels = noisy_digit("200_2.png", 33, 31, 2, 1);
            pixels.extend(noisy_digit("0_0.png", 33, 31, 4, 2));
            let objectives: &[Objective] = if view == View::TenCrop {
                &[Objective::Probability, Objective::LogProbability]
            } else {
                Objective::ALL
            };
            check(&model, spec, &pixels, &[2, 5], objectives);
        }
    }
}

#[test]
fn efficientnet_lite0_and_alexnet_graph_gradients_equal_the_evaluator() {
    let model = load("efficientnet-lite0", "manifest.toml");
    check(
        &model,
        ViewSpec::identity(&model),
        &patterns(&model, 2),
        &[281, 7],
        Objective::ALL,
    );
    let model = load("alexnet-light", "manifest.toml");
    check(
        &model,
        ViewSpec::identity(&model),
        &patterns(&model, 1),
        &[3],
        &[Objective::LogProbability],
    );
}

#[test]
fn light_zoo_graph_gradients_equal_the_evaluator() {
    for (name, target) in [
        ("resnet50", 7),
        ("densenet121", 1),
        ("inception_v1", 2),
        ("inception_v2", 3),
        ("shufflenet", 4),
        ("squeezenet", 5),
        ("zfnet512", 6),
    ] {
        let model = load("light-zoo", &format!("{name}.toml"));
        check(
            &model,
            ViewSpec::identity(&model),
            &patterns(&model, 1),
            &[target],
            &[Objective::LogProbability],
        );
    }
}

#[test]
fn modern_zoo_and_trained_mnist_graph_gradients_equal_the_evaluator() {
    for (name, target) in [
        ("resnet_bn", 3),
        ("mobilenetv3_small", 5),
        ("convnext", 7),
        ("vit", 2),
    ] {
        let model = load("modern-zoo", &format!("{name}.toml"));
        check(
            &model,
            ViewSpec::identity(&model),
            &patterns(&model, 2),
            &[target, 0],
            Objective::ALL,
        );
    }
    for dir in ["mnist-resnet-bn", "mnist-vit"] {
        let model = load(dir, "manifest.toml");
        let mut pixels = noisy_digit("0_0.png", 28, 28, 0, 0);
        pixels.extend(noisy_digit("100_1.png", 28, 28, 0, 0));
        check(
            &model,
            ViewSpec::identity(&model),
            &pixels,
            &[0, 7],
            Objective::ALL,
        );
    }
}

#[test]
fn the_graph_route_refuses_what_the_evaluator_refuses_and_cuda_loudly() {
    // A ten-crop logit objective: refused before anything runs, as on the CPU evaluator.
    let model = load("lenet-mnist", "manifest.toml");
    let spec = ViewSpec {
        view: View::TenCrop,
        width: 32,
        height: 32,
    };
    let mut m = OrtGradient { backend: ort_cpu() }
        .prepare(&model, spec)
        .unwrap();
    let err = m
        .gradient(&vec![100.0; 32 * 32], &[1], Objective::Logit)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`logit` is not available"), "{err}");
    // A wrong number of targets: the evaluator's own check.
    let err = m
        .gradient(&vec![100.0; 32 * 32], &[1, 2], Objective::Probability)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 targets for 1 canvases"), "{err}");
    // CUDA on a machine without it (CI, this VM: the CPU-only wheel): the same loud refusal
    // as the evolution's backend, never a silent CPU run.
    let cuda = OrtGradient {
        backend: OrtBackend::cuda(0, OrtOptions::default()),
    };
    match cuda.prepare(&model, ViewSpec::identity(&model)) {
        Err(EvalError::CudaUnavailable { reason, .. }) => {
            assert!(!reason.is_empty());
        }
        Err(other) => panic!("expected CudaUnavailable, got {other}"),
        Ok(m) => assert_eq!(m.backend(), "cuda", "a prepared cuda model runs on CUDA"),
    }
}
