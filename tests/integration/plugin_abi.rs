//! Plugin ABI 1.1's optional encoding operations through the real loader and the built
//! cdylibs: the direct encoding's genome from pixels and its pull-back, the CPPN's pull-back
//! against finite differences of its rendered bytes, and a plugin built against the frozen ABI
//! 1.0 SDK (tests/fixtures/pareidolia-plugin-abi-1.0), which loads, runs and is refused the
//! new operations with a message naming it and what it lacks.

use pareidolia_core::plugin_host::{OptionalOperation, PluginLibrary};
use pareidolia_core::{EncodingPlugin, OptionalCallError};
use pareidolia_plugin::abi::CanvasSpec;

use crate::template::build_outside;
use crate::util::*;

fn encoding(
    crate_name: &str,
    params: &str,
    width: u32,
    height: u32,
    channels: u32,
) -> EncodingPlugin {
    let lib = PluginLibrary::open(&library(crate_name)).unwrap();
    let canvas = CanvasSpec {
        width,
        height,
        channels,
    };
    EncodingPlugin::create(lib, params, canvas).unwrap()
}

fn render(enc: &EncodingPlugin, genome: &[u8]) -> Vec<u8> {
    let mut pixels = vec![0u8; enc.image_len()];
    enc.render(genome, &mut pixels).unwrap();
    pixels
}

#[test]
fn the_direct_genome_from_pixels_renders_back_to_the_same_pixels() {
    let gray = encoding("pareidolia-encoding-direct", "{}", 16, 16, 1);
    assert_eq!(gray.library().info().abi, "1.1");
    for op in OptionalOperation::ALL {
        assert!(gray.offers(op), "{op}");
        gray.check_offers(op).unwrap();
    }
    // Every byte value.
    let pixels: Vec<f32> = (0..256).map(|p| p as f32).collect();
    let genome = gray.genome_from_pixels(&pixels).unwrap();
    let back = render(&gray, &genome);
    assert!(back.iter().enumerate().all(|(i, &p)| usize::from(p) == i));
    // The genome is the direct encoding's own format: mutate and describe read it.
    assert!(gray.describe(&genome).unwrap().contains("\"genes\":256"));
    gray.mutate(&genome, 0, 1).unwrap();
    // RGB as it is.
    let rgb = encoding(
        "pareidolia-encoding-direct",
        r#"{"color_space": "rgb"}"#,
        8,
        8,
        3,
    );
    let pixels: Vec<f32> = (0..192).map(|i| ((i * 37) % 256) as f32).collect();
    let back = render(&rgb, &rgb.genome_from_pixels(&pixels).unwrap());
    assert_eq!(
        back.iter().map(|&b| f32::from(b)).collect::<Vec<_>>(),
        pixels
    );
    // Wrong lengths and non-finite values are refused, not guessed.
    let e = gray.genome_from_pixels(&[0.0; 10]).unwrap_err();
    assert!(
        matches!(e, OptionalCallError::Failed(_)) && e.to_string().contains("needs 256"),
        "{e}"
    );
    let e = gray.genome_from_pixels(&[f32::NAN; 256]).unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
    // A colour space whose genes are not pixels: the plugin answers "not offered", and says why.
    let hsv = encoding("pareidolia-encoding-direct", "{}", 4, 4, 3);
    assert!(
        hsv.offers(OptionalOperation::GenomeFromPixels),
        "the entry exists"
    );
    let e = hsv.genome_from_pixels(&[0.0; 48]).unwrap_err();
    assert!(e.is_not_offered(), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("encoding plugin `direct`")
            && text.contains("genome_from_pixels")
            && text.contains("rgb"),
        "{text}"
    );
    assert!(
        hsv.check_offers(OptionalOperation::Pullback)
            .unwrap_err()
            .is_not_offered()
    );
}

#[test]
fn the_direct_pullback_and_step_move_the_rendered_pixels() {
    let enc = encoding("pareidolia-encoding-direct", "{}", 4, 4, 1);
    let pixels: Vec<f32> = (0..16).map(|i| (i * 16) as f32).collect();
    let genome = enc.genome_from_pixels(&pixels).unwrap();
    let gradient: Vec<f32> = (0..16)
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let pulled = enc.pullback(&genome, &gradient).unwrap();
    assert_eq!(
        pulled,
        gradient.iter().map(|g| g * 255.0).collect::<Vec<_>>()
    );
    // A step of 8/255 per unit of gene along the sign of the pull-back: each pixel moves 8
    // levels the way its gradient points, and clamps at 0 and 255.
    let step: Vec<f32> = pulled.iter().map(|p| p.signum() * 8.0 / 255.0).collect();
    let moved = render(&enc, &enc.apply_step(&genome, &step).unwrap());
    for (i, (&m, &p)) in moved.iter().zip(&pixels).enumerate() {
        let expected = (p + 8.0 * gradient[i]).clamp(0.0, 255.0);
        assert!(
            (f32::from(m) - expected).abs() <= 1.0,
            "pixel {i}: {m} vs {expected}"
        );
    }
    assert_eq!((moved[0], moved[15]), (8, 232));
    let e = enc.apply_step(&genome, &[0.0; 3]).unwrap_err();
    assert!(
        !e.is_not_offered() && e.to_string().contains("3 values"),
        "{e}"
    );
}

/// Reads a CPPN genome's edge genes from its description (weight = 20 gene - 10).
fn cppn_genes(enc: &EncodingPlugin, genome: &[u8]) -> Vec<f64> {
    let v: serde_json::Value = serde_json::from_str(&enc.describe(genome).unwrap()).unwrap();
    v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["weight"].as_f64().unwrap() + 10.0) / 20.0)
        .collect()
}

/// The pull-back through the loaded CPPN plugin against differences of the bytes it renders,
/// for L = the sum of all pixel values of a 128x128 image, along the gradient and along single
/// genes (the 3 largest components). The bytes truncate the image the pull-back
/// differentiates, and CPPN images repeat values (whole rows, columns or the image alike), so
/// truncation errors do not average out over pixels; they do over a sweep: L is rendered at
/// 33 steps t * s, t from -1 to 1, s sized so the pull-back predicts a change of 4 levels per
/// pixel at t = 1, and the least-squares slope of L(t) is compared with the prediction. A
/// truncated line fitted over 8 levels is off by at most about 1/64 in slope; curvature over
/// a symmetric sweep adds less. The test allows 5%.
#[test]
fn the_cppn_pullback_matches_finite_differences_of_its_rendered_bytes() {
    let enc = encoding(
        "pareidolia-encoding-cppn",
        r#"{"coordinates": "unit"}"#,
        128,
        128,
        1,
    );
    assert!(enc.offers(OptionalOperation::Pullback));
    assert!(
        enc.genome_from_pixels(&vec![0.0; enc.image_len()])
            .unwrap_err()
            .is_not_offered(),
        "a CPPN cannot hold any image"
    );
    let loss = |genome: &[u8]| {
        render(&enc, genome)
            .iter()
            .map(|&b| f64::from(b))
            .sum::<f64>()
    };
    let ones = vec![1.0f32; enc.image_len()];
    let pixels = enc.image_len() as f64;
    let target = 4.0 * pixels;
    let sweep: Vec<f64> = (0..=32).map(|i| f64::from(i) / 16.0 - 1.0).collect();
    let (mut worst, mut checks) = (0.0f64, 0);
    for seed in [3u64, 11, 29, 41, 57, 73] {
        let mut genome = enc.random(seed).unwrap();
        for i in 0..6 {
            genome = enc.mutate(&genome, 0, seed * 100 + i).unwrap();
        }
        let grad = enc.pullback(&genome, &ones).unwrap();
        let genes = cppn_genes(&enc, &genome);
        assert_eq!(grad.len(), genes.len(), "one value per edge gene");
        let norm2: f64 = grad.iter().map(|g| f64::from(*g).powi(2)).sum();
        if norm2 == 0.0 {
            // Nothing reaches the output with a non-zero slope (a saturated linear output,
            // say): no direction to check; the count below makes sure enough seeds have one.
            continue;
        }
        let mut directions: Vec<Vec<f64>> = vec![
            grad.iter()
                .map(|&g| target * f64::from(g) / norm2)
                .collect(),
        ];
        let mut order: Vec<usize> = (0..grad.len()).collect();
        order.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
        for &k in order.iter().take(3) {
            let mut d = vec![0.0; grad.len()];
            d[k] = target / f64::from(grad[k]);
            directions.push(d);
        }
        for step in directions {
            // Keep to steps that stay inside [0, 1] both ways (apply_step would clamp).
            if genes
                .iter()
                .zip(&step)
                .any(|(g, s)| g - s.abs() < 0.0 || g + s.abs() > 1.0)
            {
                continue;
            }
            let levels: Vec<f64> = sweep
                .iter()
                .map(|t| {
                    let scaled: Vec<f32> = step.iter().map(|s| (s * t) as f32).collect();
                    loss(&enc.apply_step(&genome, &scaled).unwrap())
                })
                .collect();
            let mean = levels.iter().sum::<f64>() / levels.len() as f64;
            let slope = sweep
                .iter()
                .zip(&levels)
                .map(|(t, l)| t * (l - mean))
                .sum::<f64>()
                / sweep.iter().map(|t| t * t).sum::<f64>();
            let predicted: f64 = grad
                .iter()
                .zip(&step)
                .map(|(&g, &s)| f64::from(g) * f64::from(s as f32))
                .sum();
            let error = (slope - predicted).abs() / predicted.abs();
            assert!(
                error < 0.05,
                "seed {seed}: slope of the rendered sum {slope}, pull-back predicts {predicted}"
            );
            worst = worst.max(error);
            checks += 1;
        }
    }
    assert!(
        checks >= 8,
        "only {checks} steps stayed inside the gene range"
    );
    eprintln!(
        "CPPN pull-back through the C ABI: {checks} sweeps of rendered bytes, worst relative error of the slope {worst:.2e}"
    );
}

/// Issue 26 item 5 and issue 28 item 2: a plugin built against the ABI 1.0 SDK (the frozen
/// copy), the template unchanged, both copied outside the repository: it builds, loads as ABI
/// 1.0, passes `plugins check`, runs, and the new operations are refused by name.
#[test]
fn a_plugin_built_against_the_abi_1_0_sdk_loads_runs_and_is_refused_the_new_operations() {
    let outside = std::env::temp_dir().join(format!("pareidolia-abi10-{}", std::process::id()));
    if outside.exists() {
        std::fs::remove_dir_all(&outside).unwrap();
    }
    let built = build_outside(
        &outside,
        &root().join("tests/fixtures/pareidolia-plugin-abi-1.0"),
        "template-encoding",
        "old-stripes",
        &[],
        "abi10-template-target",
    );

    let lib = PluginLibrary::open(&built).unwrap();
    assert_eq!(
        (lib.info().name.as_str(), lib.info().abi.as_str()),
        ("stripes", "1.0")
    );
    let enc = EncodingPlugin::create(
        lib,
        "{}",
        CanvasSpec {
            width: 28,
            height: 28,
            channels: 1,
        },
    )
    .unwrap();
    let genome = enc.random(1).unwrap();
    let child = enc.mutate(&genome, 0, 2).unwrap();
    let image = render(&enc, &child);
    assert!(image.iter().any(|&p| p != image[0]), "stripes are not flat");
    for op in OptionalOperation::ALL {
        assert!(!enc.offers(op), "{op}");
        let e = enc.check_offers(op).unwrap_err();
        let text = e.to_string();
        assert!(
            e.is_not_offered()
                && text.contains("encoding plugin `stripes`")
                && text.contains("plugin ABI 1.0")
                && text.contains(&format!("`{}`", op.name())),
            "{text}"
        );
    }
    let e = enc.pullback(&genome, &[0.0; 784]).unwrap_err();
    assert!(
        e.is_not_offered()
            && e.to_string()
                .contains("rebuild it against pareidolia-plugin 0.2"),
        "{e}"
    );

    let check = success(pareidolia(&[
        "plugins",
        "check",
        built.to_str().unwrap(),
        "--canvas",
        "28x28x1",
    ]));
    assert!(check.contains("plugin works"), "{check}");
    let dir = temp_dir("abi10-template");
    let config = config_edit(&dir, |t| {
        t.take("encoding.params");
        t.set("generations", 2)
            .set("encoding.plugin", built.to_str().unwrap());
    });
    let out = dir.join("run");
    success(Pareidolia::run().quiet().config(&config).out(&out).output());
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["encoding"]["name"], "stripes");
    // Gradient ascent stores its images through `genome_from_pixels`: the old plugin is
    // refused before the run starts, by name, and the run folder stays empty.
    let mut ascent = read_toml(&root().join("configs/ascent/mnist-unregularised.toml"));
    ascent.set("encoding.plugin", built.to_str().unwrap());
    ascent.take("encoding.params");
    let ascent_config = dir.join("ascent.toml");
    write_toml(&ascent_config, &ascent);
    let refused = dir.join("ascent-run");
    clean_failure(
        Pareidolia::run()
            .config(&ascent_config)
            .generations(2)
            .out(&refused)
            .output(),
        &[
            "gradient ascent",
            "encoding plugin `stripes`",
            "plugin ABI 1.0",
            "`genome_from_pixels`",
            "plugin = \"direct\"",
        ],
    );
    assert!(!refused.join("config.toml").exists());
    // The gradient operator of MAP-Elites pulls gradients back through `pullback`: refused
    // the same way, and an evolution run of the old plugin without it still works (above).
    let steered_config = config_edit(&subdir(&dir, "steered-cfg"), |t| {
        t.take("encoding.params");
        t.set("generations", 2)
            .set("encoding.plugin", built.to_str().unwrap());
        t.add("search.gradient.share", 0.5);
    });
    let steered = dir.join("steered-run");
    clean_failure(
        Pareidolia::run()
            .config(&steered_config)
            .out(&steered)
            .output(),
        &[
            "[search.gradient]",
            "encoding plugin `stripes`",
            "plugin ABI 1.0",
            "`pullback`",
            "remove [search.gradient]",
        ],
    );
    assert!(!steered.exists());
    std::fs::remove_dir_all(&outside).ok();
}
