//! Writes CPPN genome seeds under `fuzz/seeds/genome_cppn/` (see make_seeds.rs).

use std::path::Path;

use pareidolia_encoding_cppn::Cppn;
use pareidolia_fuzz::header;
use pareidolia_plugin::{Encoding, Mutation, Params, Rng};
use rand::SeedableRng;

fn main() {
    let dir = Path::new("seeds/genome_cppn");
    std::fs::create_dir_all(dir).unwrap();
    for (i, canvas) in pareidolia_fuzz::seed_canvases().into_iter().enumerate() {
        let (width, height, channels) = (canvas.width, canvas.height, canvas.channels);
        let head = header(canvas, (i % 3) as u8, i % 2 == 1);
        let mut rng = Rng::seed_from_u64(i as u64);
        let cppn = Cppn::new(Params::new("{}"), canvas).unwrap();
        let mut g = cppn.random(&mut rng);
        for generations in [0, 10, 40] {
            let from = if generations == 0 { 0 } else { generations / 4 };
            for generation in from..generations {
                cppn.mutate(&mut g, Mutation { generation }, &mut rng);
            }
            let bytes = [&head[..], &cppn.encode(&g)].concat();
            let name = format!("seed-{width}x{height}x{channels}-{generations}");
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
