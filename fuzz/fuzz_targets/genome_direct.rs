//! The direct encoding's genome decoder as the host reaches it through the plugin (the
//! `Encoding` trait the cdylib exports): bytes from a checkpoint or `export-genome` in, a
//! genome or a clear error out; what decodes renders (or says it fits another canvas),
//! describes itself as JSON, encodes back to the same bytes, and stays decodable after a
//! mutation and a crossover, since checkpoints keep the children's bytes.
//!
//! Input: three header bytes pick the canvas and colour space (`pareidolia_fuzz::setup`),
//! the rest is the genome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pareidolia_encoding_direct::Direct;
use pareidolia_plugin::{Encoding, Mutation, Params, Rng};
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let Some((setup, bytes)) = pareidolia_fuzz::setup(data) else {
        return;
    };
    let params = format!(
        r#"{{"color_space":"{}","crossover_rate":0.5}}"#,
        setup.color
    );
    let canvas = setup.canvas;
    let enc = Direct::new(Params::new(&params), canvas).expect("valid parameters");
    let Ok(mut genome) = enc.decode(bytes) else {
        return;
    };
    assert_eq!(enc.encode(&genome), bytes, "decode then encode is lossless");
    let _: serde_json::Value =
        serde_json::from_str(&enc.describe(&genome)).expect("describe gives JSON");
    let mut pixels = vec![0u8; canvas.len()];
    let fits = enc.render(&genome, &mut pixels).is_ok();
    assert_eq!(fits, genome.genes().len() == canvas.len());
    let mut rng = Rng::seed_from_u64(bytes.len() as u64);
    enc.mutate(
        &mut genome,
        Mutation {
            generation: u64::from(data[0]) * 997,
        },
        &mut rng,
    );
    let (a, b) = enc.crossover(&genome, &genome, &mut rng);
    for g in [&genome, &a, &b] {
        let again = enc.decode(&enc.encode(g)).expect("a varied genome decodes");
        assert_eq!(enc.render(&again, &mut pixels).is_ok(), fits);
    }
});
