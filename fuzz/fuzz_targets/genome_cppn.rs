//! The CPPN encoding's genome decoder as the host reaches it through the plugin (the
//! `Encoding` trait the cdylib exports): bytes from a checkpoint or `export-genome` in, a
//! network or a clear error out; what decodes renders, and the fast renderer draws exactly
//! what the literal (released-code) evaluator draws; it describes itself as JSON, encodes back
//! to the same bytes, and stays decodable and renderable after mutations.
//!
//! Input: three header bytes pick the canvas, colour space and coordinates
//! (`pareidolia_fuzz::setup`), the rest is the genome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pareidolia_encoding_cppn::Cppn;
use pareidolia_plugin::{Encoding, Mutation, Params, Rng};
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let Some((setup, bytes)) = pareidolia_fuzz::setup(data) else {
        return;
    };
    let params = format!(
        r#"{{"color_space":"{}","coordinates":"{}"}}"#,
        setup.color, setup.coordinates
    );
    let canvas = setup.canvas;
    let enc = Cppn::new(Params::new(&params), canvas).expect("valid parameters");
    let Ok(mut genome) = enc.decode(bytes) else {
        return;
    };
    assert_eq!(enc.encode(&genome), bytes, "decode then encode is lossless");
    let _: serde_json::Value =
        serde_json::from_str(&enc.describe(&genome)).expect("describe gives JSON");
    let mut pixels = vec![0u8; canvas.len()];
    let mut reference = vec![0u8; canvas.len()];
    let mut rng = Rng::seed_from_u64(bytes.len() as u64);
    for step in 0..3 {
        enc.render(&genome, &mut pixels)
            .expect("a decoded genome renders");
        // The literal evaluator costs pixels x depth x edges; keep it to small networks.
        if genome.node_count() * genome.edges().len() <= 1 << 14 {
            enc.render_reference(&genome, &mut reference)
                .expect("renders");
            assert_eq!(
                pixels, reference,
                "fast and literal renderers agree (step {step})"
            );
        }
        enc.mutate(&mut genome, Mutation { generation: step }, &mut rng);
        genome = enc
            .decode(&enc.encode(&genome))
            .expect("a mutated genome decodes");
    }
});
