//! Render time of a CPPN with 20 hidden nodes at the two canvases of the paper: 28x28 gray
//! (MNIST) and 256x256 colour (ImageNet). Target: 256x256 colour under 2 ms on one core.
//!
//! The network is built deterministically: a random genome, then mutations with add-node
//! certain and no deletions until it has 20 hidden nodes (about 20 mutations, half of them
//! also adding a connection). Without deletions there are no orphan nodes, so this measures
//! the feed-forward path, the one nearly every render takes.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pareidolia_encoding_cppn::{Cppn, Genome};
use pareidolia_plugin::prelude::*;

const HIDDEN: usize = 20;

fn setup(width: u32, height: u32, channels: u32) -> (Cppn, Genome) {
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
    let mut rng = Rng::seed_from_u64(2015);
    let mut genome = cppn.random(&mut rng);
    while genome.hidden_count() < HIDDEN {
        cppn.mutate(&mut genome, Mutation { generation: 0 }, &mut rng);
    }
    eprintln!(
        "{width}x{height}x{channels}: {} hidden nodes, {} edges, depth {}",
        genome.hidden_count(),
        genome.edges().len(),
        genome.depth()
    );
    (cppn, genome)
}

fn render(c: &mut Criterion) {
    for (name, width, height, channels) in [
        ("render 28x28 gray, 20 hidden", 28, 28, 1),
        ("render 256x256 colour, 20 hidden", 256, 256, 3),
    ] {
        let (cppn, genome) = setup(width, height, channels);
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

criterion_group!(benches, render);
criterion_main!(benches);
