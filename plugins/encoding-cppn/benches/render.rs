//! Render time of a CPPN with 20 hidden nodes at the two canvases of the paper: 28x28 gray
//! (MNIST) and 256x256 colour (ImageNet). Target: 256x256 colour under 2 ms on one core.
//!
//! The network is built deterministically: a random genome, then mutations with add-node
//! certain and no deletions until it has 20 hidden nodes (about 20 mutations, half of them
//! also adding a connection). Without deletions there are no orphan nodes, so this measures
//! the feed-forward path, the one nearly every render takes. Colour conversion goes through a
//! per-thread memo, so the bench also renders a busy image and a stream of different
//! children, where fewer colours are already known.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pareidolia_encoding_cppn::{Cppn, Genome};
use pareidolia_plugin::prelude::*;

const HIDDEN: usize = 20;

fn setup(width: u32, height: u32, channels: u32, seed: u64) -> (Cppn, Genome) {
    let params =
        r#"{"add_node_rate": 1.0, "delete_node_rate": 0.0, "delete_connection_rate": 0.0}"#;
    let cppn = Cppn::new(
        Params::new(params),
        Canvas {
            width,
            height,
            channels,
        },
    )
    .expect("valid parameters");
    let mut rng = Rng::seed_from_u64(seed);
    let mut genome = cppn.random(&mut rng);
    while genome.hidden_count() < HIDDEN {
        cppn.mutate(&mut genome, Mutation { generation: 0 }, &mut rng);
    }
    eprintln!(
        "{width}x{height}x{channels}, seed {seed}: {} hidden nodes, {} edges, depth {}",
        genome.hidden_count(),
        genome.edges().len(),
        genome.depth()
    );
    (cppn, genome)
}

fn render(c: &mut Criterion) {
    // Seed 2015 draws a smooth colour image (a few hundred colours); seed 3 a busy one (about
    // 24,000), where converting colours costs most.
    for (name, width, height, channels, seed) in [
        ("render 28x28 gray, 20 hidden", 28, 28, 1, 2015),
        ("render 256x256 colour, 20 hidden", 256, 256, 3, 2015),
        (
            "render 256x256 colour, 20 hidden, busy image",
            256,
            256,
            3,
            3,
        ),
    ] {
        let (cppn, genome) = setup(width, height, channels, seed);
        let mut pixels = vec![0u8; (width * height * channels) as usize];
        c.bench_function(name, |b| {
            b.iter(|| {
                cppn.render(black_box(&genome), &mut pixels)
                    .expect("sizes match");
                black_box(&pixels);
            })
        });
    }
}

/// Rendering the same genome again finds every colour memoised; in a run each render is a
/// new child. This renders 64 children of the busy image's network (default mutation rates)
/// in turn.
fn render_children(c: &mut Criterion) {
    let canvas = Canvas {
        width: 256,
        height: 256,
        channels: 3,
    };
    let (cppn, parent) = setup(256, 256, 3, 3);
    let mutator = Cppn::new(Params::new("{}"), canvas).expect("defaults are valid");
    let mut rng = Rng::seed_from_u64(64);
    let children: Vec<Genome> = (0..64)
        .map(|_| {
            let mut child = parent.clone();
            mutator.mutate(&mut child, Mutation { generation: 0 }, &mut rng);
            child
        })
        .collect();
    let mut pixels = vec![0u8; canvas.len()];
    let mut turn = children.iter().cycle();
    c.bench_function("render 256x256 colour, 64 children in turn", |b| {
        b.iter(|| {
            let child = turn.next().expect("cycle never ends");
            cppn.render(black_box(child), &mut pixels)
                .expect("sizes match");
            black_box(&pixels);
        })
    });
}

criterion_group!(benches, render, render_children);
criterion_main!(benches);
