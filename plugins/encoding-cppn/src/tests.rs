//! Tests through the `Encoding` trait: the fast renderer against the reference evaluator on
//! hand-built networks with known bytes and on many random ones, determinism, and the
//! checks at the plugin's edges (parameters, canvases, bytes).

use super::*;
use crate::activation::Activation::*;
use crate::plan::{Mode, Plan};
use pareidolia_plugin::color::ColorSpace;

fn cppn(json: &str, width: u32, height: u32, channels: u32) -> Cppn {
    Cppn::new(
        Params::new(json),
        Canvas {
            width,
            height,
            channels,
        },
    )
    .unwrap()
}

fn edge(from: u32, to: u32, weight: f32) -> Edge {
    let e = Edge {
        from,
        to,
        gene: Edge::gene_for_weight(weight),
    };
    // Hand-built networks use weights whose gene is a dyadic fraction, exact in f32.
    assert_eq!(e.weight(), weight, "pick an exactly representable weight");
    e
}

/// Fast and reference renders, asserted equal.
fn render_both(c: &Cppn, g: &Genome) -> Vec<u8> {
    let mut fast = vec![0u8; c.canvas.len()];
    let mut slow = vec![0u8; c.canvas.len()];
    c.render(g, &mut fast).unwrap();
    c.render_reference(g, &mut slow).unwrap();
    assert_eq!(
        fast, slow,
        "fast render differs from the reference for {g:?}"
    );
    fast
}

/// Plain feed-forward evaluation of one pixel, to show where it differs from the released
/// code's synchronous steps.
fn feed_forward(g: &Genome, inputs: [f32; 4]) -> Vec<f32> {
    let mut value = vec![0.0f32; g.node_count()];
    for v in g.topological_order().unwrap() {
        if v < INPUTS {
            value[v] = inputs[v];
            continue;
        }
        let mut sum = 0.0f32;
        for e in g.edges().iter().filter(|e| e.to as usize == v) {
            sum += e.weight() * value[e.from as usize];
        }
        value[v] = g.activations()[v].apply(sum);
    }
    (0..g.outputs()).map(|c| value[g.output_id(c)]).collect()
}

#[test]
fn one_linear_edge_from_x_gives_known_bytes() {
    // x -> out with weight 0.3125, linear: byte = trunc(|clamp(0.3125 x, -3, 3) / 3| * 255).
    let c = cppn("{}", 12, 1, 1);
    let g = Genome::from_parts(1, vec![Linear; 5], vec![edge(0, 4, 0.3125)]).unwrap();
    assert_eq!(Plan::new(&g).mode, Mode::FeedForward);
    assert_eq!(
        render_both(&c, &g),
        [0, 26, 53, 79, 106, 132, 159, 185, 212, 239, 255, 255]
    );
    // Negative weights give the same bytes: the released code takes |int(v * 255)|.
    let neg = Genome::from_parts(1, vec![Linear; 5], vec![edge(0, 4, -0.3125)]).unwrap();
    assert_eq!(render_both(&c, &neg), render_both(&c, &g));
    // Unit coordinates on a 9-wide canvas: x = k/8, byte = trunc(255 * min(5k/8, 3) / 3).
    let c = cppn(r#"{"coordinates": "unit"}"#, 9, 2, 1);
    let g = Genome::from_parts(1, vec![Linear; 5], vec![edge(0, 4, 5.0)]).unwrap();
    let row = [0, 53, 106, 159, 212, 255, 255, 255, 255];
    assert_eq!(render_both(&c, &g), [row, row].concat());
    // The issue's example, weight 0.3: its gene is not exact in f32, so check the columns
    // whose exact byte, trunc(25.5 x), is half a level from a boundary, and the clamp.
    let c = cppn("{}", 16, 1, 1);
    let g = Genome::from_parts(
        1,
        vec![Linear; 5],
        vec![Edge {
            from: 0,
            to: 4,
            gene: Edge::gene_for_weight(0.3),
        }],
    )
    .unwrap();
    let bytes = render_both(&c, &g);
    let odd: Vec<u8> = [1, 3, 5, 7, 9].iter().map(|&x| bytes[x]).collect();
    assert_eq!(odd, [25, 76, 127, 178, 229]);
    assert!(bytes[11..].iter().all(|&b| b == 255), "{bytes:?}");
}

#[test]
fn outputs_without_in_edges_are_constant() {
    let c = cppn("{}", 4, 4, 3);
    // Gaussian(0) = 1, sine(0) = 0, linear(0) = 0; read as RGB.
    let c_rgb = cppn(r#"{"color_space": "rgb"}"#, 4, 4, 3);
    let g = Genome::from_parts(
        3,
        vec![Sine, Sine, Sine, Sine, Gaussian, Sine, Linear],
        vec![],
    )
    .unwrap();
    assert_eq!(render_both(&c_rgb, &g), [255, 0, 0].repeat(16));
    // The same bytes read as HSV: hue 255, saturation 0, value 0 is black.
    assert_eq!(render_both(&c, &g), [0, 0, 0].repeat(16));
}

#[test]
fn a_long_orphan_chain_falls_back_to_synchronous_steps() {
    // h (gaussian, no in-edges) -> a -> b -> out, and x -> out (weight 0.625); depth 2. The
    // chain needs 4 steps to reach the output, so the released code never sees it:
    // out = linear(0.625 x), byte = trunc(255 * min(0.625 x, 3) / 3).
    let g = Genome::from_parts(
        1,
        vec![
            Linear, Linear, Linear, Linear, Linear, Gaussian, Linear, Linear,
        ],
        vec![
            edge(5, 6, 2.5),
            edge(6, 7, 2.5),
            edge(7, 4, 2.5),
            edge(0, 4, 0.625),
        ],
    )
    .unwrap();
    assert_eq!(Plan::new(&g).mode, Mode::Synchronous { steps: 2 });
    let c = cppn("{}", 8, 1, 1);
    assert_eq!(render_both(&c, &g), [0, 53, 106, 159, 212, 255, 255, 255]);
    // Feed-forward evaluation would have added the chain's value.
    let ff = feed_forward(&g, [0.0, 0.0, 0.0, 1.0])[0];
    assert!(render::output_byte(ff) > 100, "{ff}");
}

#[test]
fn a_short_orphan_path_stays_feed_forward() {
    // h (gaussian, no in-edges) -> out, and x -> k -> out: depth 3, and the orphan's path
    // of 1 edge arrives by step 2, so topological order gives the synchronous result.
    let g = Genome::from_parts(
        1,
        vec![Linear, Linear, Linear, Linear, Linear, Gaussian, Linear],
        vec![edge(5, 4, 1.25), edge(0, 6, 2.5), edge(6, 4, 0.625)],
    )
    .unwrap();
    assert_eq!(Plan::new(&g).mode, Mode::FeedForward);
    let c = cppn("{}", 16, 2, 1);
    let bytes = render_both(&c, &g);
    // At x = 0: out = linear(1.25 * 1 + 0) = 1.25 / 3.
    assert_eq!(bytes[0], (1.25f32 / 3.0 * 255.0) as u8);
    assert_eq!(
        feed_forward(&g, [0.0, 0.0, 0.0, 1.0]),
        evaluate_reference(&g, [0.0, 0.0, 0.0, 1.0])
    );
}

#[test]
fn nodes_that_reach_no_output_are_skipped() {
    // x -> h (dead end) and x -> out.
    let g = Genome::from_parts(1, vec![Sine; 6], vec![edge(0, 5, 2.5), edge(0, 4, 0.625)]).unwrap();
    assert_eq!(Plan::new(&g).nodes.len(), 1);
    render_both(&cppn("{}", 8, 8, 1), &g);
}

/// Renders random genomes after `steps` mutations, fast against reference; returns how many
/// took the synchronous path and how many of those differ from plain feed-forward.
fn compare_random(
    json: &str,
    channels: u32,
    seeds: std::ops::Range<u64>,
    steps: usize,
) -> (usize, usize) {
    let c = cppn(json, 16, 16, channels);
    let (mut synchronous, mut differs) = (0, 0);
    for seed in seeds {
        let mut rng = Rng::seed_from_u64(seed);
        let mut g = c.random(&mut rng);
        for _ in 0..steps {
            c.mutate(&mut g, Mutation { generation: 0 }, &mut rng);
        }
        render_both(&c, &g);
        if let Mode::Synchronous { steps } = Plan::new(&g).mode {
            assert_eq!(steps, g.depth());
            synchronous += 1;
            let inputs = inputs::pixel_inputs(c.canvas, c.params.coordinates, 3, 5);
            differs += usize::from(feed_forward(&g, inputs) != evaluate_reference(&g, inputs));
        }
    }
    (synchronous, differs)
}

#[test]
fn random_networks_render_like_the_reference() {
    let (sync_gray, _) = compare_random("{}", 1, 0..300, 30);
    let (sync_colour, _) = compare_random("{}", 3, 1000..1200, 30);
    compare_random(r#"{"color_space": "hls-opencv"}"#, 3, 2000..2050, 30);
    compare_random(
        r#"{"color_space": "rgb", "coordinates": "unit"}"#,
        3,
        3000..3050,
        30,
    );
    // Deletions leave orphans; make many to exercise the synchronous path hard.
    let heavy =
        r#"{"delete_connection_rate": 0.9, "add_node_rate": 0.9, "delete_node_rate": 0.05}"#;
    let (sync_heavy, differs) = compare_random(heavy, 1, 4000..4300, 30);
    assert!(sync_heavy >= 20, "only {sync_heavy} synchronous renders");
    assert!(differs > 0, "the fallback never mattered");
    eprintln!(
        "synchronous fallback: {sync_gray}/300 gray, {sync_colour}/200 colour, \
         {sync_heavy}/300 deletion-heavy ({differs} differing from feed-forward)"
    );
}

#[test]
fn tiles_join_seamlessly() {
    // 40 x 41: tiles of 25 whole rows, the last one partial. 1100 x 3: rows wider than a
    // tile, split into a full and a partial segment. Both in gray and colour.
    for (width, height) in [(40, 41), (1100, 3)] {
        for channels in [1, 3] {
            let c = cppn(r#"{"coordinates": "unit"}"#, width, height, channels);
            for seed in 0..12 {
                let mut rng = Rng::seed_from_u64(seed);
                let mut g = c.random(&mut rng);
                for _ in 0..20 {
                    c.mutate(&mut g, Mutation { generation: 0 }, &mut rng);
                }
                render_both(&c, &g);
            }
        }
    }
}

#[test]
fn renders_are_deterministic_across_calls_and_threads() {
    let c = cppn("{}", 32, 32, 3);
    let mut rng = Rng::seed_from_u64(42);
    let genomes: Vec<Genome> = (0..8)
        .map(|i| {
            let mut g = c.random(&mut rng);
            for _ in 0..10 * i {
                c.mutate(&mut g, Mutation { generation: 0 }, &mut rng);
            }
            g
        })
        .collect();
    let draw = |g: &Genome| {
        let mut px = vec![0u8; c.canvas.len()];
        c.render(g, &mut px).unwrap();
        px
    };
    let first: Vec<Vec<u8>> = genomes.iter().map(draw).collect();
    // Again in reverse order (the scratch pool now holds the largest plan's buffers).
    for (g, want) in genomes.iter().zip(&first).rev() {
        assert_eq!(&draw(g), want);
    }
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for (g, want) in genomes.iter().zip(&first) {
                    assert_eq!(&draw(g), want);
                }
            });
        }
    });
    // Random genomes and mutations are reproducible from the seed.
    let again = {
        let mut rng = Rng::seed_from_u64(42);
        let mut g = c.random(&mut rng);
        c.mutate(&mut g, Mutation { generation: 0 }, &mut rng);
        g
    };
    let mut rng = Rng::seed_from_u64(42);
    let mut g = c.random(&mut rng);
    c.mutate(&mut g, Mutation { generation: 0 }, &mut rng);
    assert_eq!(g, again);
}

#[test]
fn genomes_round_trip_through_the_encoding() {
    let c = cppn("{}", 8, 8, 3);
    let mut rng = Rng::seed_from_u64(1);
    for _ in 0..100 {
        let mut g = c.random(&mut rng);
        for _ in 0..rng.random_range(0..60) {
            c.mutate(&mut g, Mutation { generation: 0 }, &mut rng);
        }
        let back = c.decode(&c.encode(&g)).unwrap();
        assert_eq!(back, g);
        assert_eq!(
            back.edges()
                .iter()
                .map(|e| e.gene.to_bits())
                .collect::<Vec<_>>(),
            g.edges()
                .iter()
                .map(|e| e.gene.to_bits())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn genomes_for_another_canvas_are_refused() {
    let colour = cppn("{}", 8, 8, 3);
    let gray = cppn("{}", 8, 8, 1);
    let g = gray.random(&mut Rng::seed_from_u64(2));
    let e = colour.decode(&gray.encode(&g)).unwrap_err();
    assert!(e.message().contains("1 outputs"), "{e}");
    let mut px = vec![0u8; 8 * 8 * 3];
    assert!(colour.render(&g, &mut px).is_err());
    let mut short = vec![0u8; 63];
    let e = gray.render(&g, &mut short).unwrap_err();
    assert!(e.message().contains("64"), "{e}");
}

#[test]
fn bad_canvases_and_parameters_are_refused() {
    let new = |json: &str, w, h, ch| {
        Cppn::new(
            Params::new(json),
            Canvas {
                width: w,
                height: h,
                channels: ch,
            },
        )
        .map(|_| ())
        .unwrap_err()
        .message()
        .to_owned()
    };
    assert!(new("{}", 8, 8, 2).contains("1 or 3 channels"));
    assert!(new("{}", 0, 8, 1).contains("non-empty"));
    assert!(new(r#"{"add_node_rate": 3}"#, 8, 8, 1).contains("add_node_rate"));
    assert!(new(r#"{"activations": []}"#, 8, 8, 1).contains("activations"));
}

#[test]
fn the_activation_set_limits_new_and_redrawn_nodes() {
    let c = cppn(
        r#"{"activations": ["gaussian"], "activation_mutation_rate": 1}"#,
        4,
        4,
        3,
    );
    assert_eq!(c.activation_set(), [Gaussian]);
    let mut rng = Rng::seed_from_u64(3);
    let mut g = c.random(&mut rng);
    for _ in 0..20 {
        c.mutate(&mut g, Mutation { generation: 0 }, &mut rng);
    }
    assert!(g.activations().iter().all(|&a| a == Gaussian));
}

#[test]
fn describe_is_json_with_a_dot_drawing() {
    let c = cppn(r#"{"color_space": "rgb"}"#, 8, 8, 3);
    let mut rng = Rng::seed_from_u64(4);
    let mut g = c.random(&mut rng);
    for _ in 0..10 {
        c.mutate(&mut g, Mutation { generation: 0 }, &mut rng);
    }
    let v: serde_json::Value = serde_json::from_str(&c.describe(&g)).unwrap();
    assert_eq!(v["encoding"], "cppn");
    assert_eq!(v["format_version"], FORMAT_VERSION);
    assert_eq!(v["nodes"].as_array().unwrap().len(), g.node_count());
    assert_eq!(v["edges"].as_array().unwrap().len(), g.edges().len());
    assert_eq!(v["depth"], g.depth());
    let dot = v["dot"].as_str().unwrap();
    assert!(
        dot.contains("label=\"bias\"") && dot.contains("label=\"r\\n"),
        "{dot}"
    );
    assert_eq!(ColorSpace::Rgb, c.params.color_space);
}
