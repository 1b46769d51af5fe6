//! The model manifest parser, `Manifest::parse` (TOML text, and the `.npy` mean image it may
//! name, to a checked manifest), and the preprocessor the host builds from its input spec.
//!
//! Input: the manifest text, optionally followed by a zero byte and the bytes of a mean image,
//! which the harness writes to `m.npy` beside the manifest (in a private temporary folder)
//! before parsing, so `[input.mean_image] file = "m.npy"` reads them.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pareidolia_eval::{Manifest, Preprocessor};

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d =
            std::env::temp_dir().join(format!("pareidolia-fuzz-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a temporary folder");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let (text, npy) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let npy_path = dir().join("m.npy");
    match npy {
        Some(bytes) if text.contains("mean_image") => {
            std::fs::write(&npy_path, bytes).expect("writes the mean image")
        }
        _ => {
            let _ = std::fs::remove_file(&npy_path);
        }
    }
    let Ok(manifest) = Manifest::parse(text, &dir().join("manifest.toml")) else {
        return;
    };
    let _ = toml::to_string(&manifest);
    let pre = Preprocessor::new(&manifest.input);
    let n = pre.image_len();
    if n <= 1 << 16 {
        let images: Vec<u8> = (0..2 * n).map(|i| (i * 37) as u8).collect();
        pre.check_batch("fuzz", &images, 2)
            .expect("two images of the right size");
        let mut out = vec![0.0f32; images.len()];
        pre.fill(&images, &mut out);
    }
});
