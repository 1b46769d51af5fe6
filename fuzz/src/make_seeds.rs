//! Writes the seed corpus under `fuzz/seeds/<target>/` from the repository's own files (the
//! format-1 checkpoint fixture, configs/, models/) and from genomes the encodings make.
//! `make_seeds_cppn` writes the CPPN genomes (the two plugin crates cannot link into one
//! binary: each exports the plugin descriptor symbol). See README.md for how to run them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pareidolia_core::checkpoint::{self, Checkpoint};
use pareidolia_core::{Archive, Champion};
use pareidolia_encoding_direct::Direct;
use pareidolia_fuzz::header;
use pareidolia_plugin::{Encoding, Params, Rng};
use rand::SeedableRng;

pub fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("seeds").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

fn checkpoints() {
    let v1 = std::fs::read("../tests/fixtures/checkpoint-v1/ckpt-000000000003.pdck").unwrap();
    let body = |b: &[u8]| b[16..b.len() - 32].to_vec();
    let c = checkpoint::decode(&v1, Path::new("v1")).unwrap();
    write("checkpoint_decode", "v1-file", &[&[1u8][..], &v1].concat());
    write(
        "checkpoint_decode",
        "v1-body",
        &[&[2u8][..], &body(&v1)].concat(),
    );
    let capture = |c: &Checkpoint, archive: &Archive| {
        Checkpoint::capture(
            archive,
            c.counters(),
            &c.meta.rng,
            &c.config(),
            &c.meta.identity,
            c.meta.stop_reached.as_ref(),
            &c.planned,
            c.meta.created_unix_s,
        )
    };
    // The same checkpoint in format 2, with small genomes (the decoder does not read them),
    // so that most seeds are a few kilobytes.
    let small: Vec<_> = c
        .cells
        .iter()
        .map(|cell| {
            cell.as_ref().map(|ch| Champion {
                genome: Arc::from(&ch.genome[..5]),
                ..ch.clone()
            })
        })
        .collect();
    let v2 = capture(&c, &Archive::restore(small.clone(), 7));
    write("checkpoint_decode", "v2-file", &[&[1u8][..], &v2].concat());
    write(
        "checkpoint_decode",
        "v2-body",
        &[&[0u8][..], &body(&v2)].concat(),
    );
    // Some cells empty, two sharing a champion.
    let mut sparse = small;
    sparse[3] = None;
    sparse[5] = sparse[4].clone();
    let v2 = capture(&c, &Archive::restore(sparse.clone(), 7));
    write(
        "checkpoint_decode",
        "v2-sparse-body",
        &[&[0u8][..], &body(&v2)].concat(),
    );
    // A generation planned ahead (every run plans the next one before its checkpoint), its
    // parents champions (recorded as references), a replaced one (its own blob) or none.
    let archive = Archive::restore(sparse, 7);
    let champions: Vec<Arc<[u8]>> = archive
        .cells()
        .iter()
        .flatten()
        .map(|c| c.genome.clone())
        .collect();
    let stale: Arc<[u8]> = Arc::from(&[7u8; 16][..]);
    let size = c.meta.config.offspring_per_generation;
    let planned = checkpoint::PlannedGeneration {
        generation: c.meta.generation + 1,
        size,
        parents: (0..size.div_ceil(2) as usize)
            .map(|k| match k % 3 {
                0 => Some((champions[k % champions.len()].clone(), stale.clone())),
                1 => Some((champions[0].clone(), champions[1].clone())),
                _ => None,
            })
            .collect(),
    };
    let v2 = Checkpoint::capture(
        &archive,
        c.counters(),
        &c.meta.rng,
        &c.config(),
        &c.meta.identity,
        None,
        &[planned],
        c.meta.created_unix_s,
    );
    write(
        "checkpoint_decode",
        "v2-planned-body",
        &[&[0u8][..], &body(&v2)].concat(),
    );
}

fn configs() {
    let mut files = Vec::new();
    toml_files(Path::new("../configs"), &mut files);
    for f in files {
        let name = f
            .strip_prefix("../configs")
            .unwrap()
            .to_string_lossy()
            .replace('/', "-");
        write("config_parse", &name, &std::fs::read(&f).unwrap());
    }
}

fn npy(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn manifests() {
    for e in std::fs::read_dir("../models").unwrap().flatten() {
        let m = e.path().join("manifest.toml");
        if m.is_file() {
            let name = e.file_name().to_string_lossy().into_owned();
            write("manifest_parse", &name, &std::fs::read(&m).unwrap());
        }
    }
    let text = r#"name = "tiny"
onnx = "tiny.onnx"
labels = "labels.txt"
output = "probabilities"

[input]
name = "input"
layout = "NHWC"
channels = 3
height = 2
width = 3
color = "bgr"
range = [-1.0, 1.0]
mean = [0.5, 0.25, 0.125]
std = [0.5]
mean_image = { file = "m.npy", scale = 0.5 }
"#;
    let values: Vec<f32> = (0..18).map(|i| i as f32 / 18.0).collect();
    let with = |shape: &[usize], text: &str| [text.as_bytes(), &[0], &npy(shape, &values)].concat();
    write("manifest_parse", "mean-image-chw", &with(&[3, 2, 3], text));
    let gray = text
        .replace("channels = 3", "channels = 1")
        .replace("\"bgr\"", "\"gray\"")
        .replace("[0.5, 0.25, 0.125]", "[0.5]");
    write("manifest_parse", "mean-image-hw", &with(&[2, 3], &gray));
}

fn genomes() {
    for (i, canvas) in pareidolia_fuzz::seed_canvases().into_iter().enumerate() {
        let (width, height, channels) = (canvas.width, canvas.height, canvas.channels);
        let head = header(canvas, (i % 3) as u8, i % 2 == 1);
        let mut rng = Rng::seed_from_u64(i as u64);
        let direct = Direct::new(Params::new("{}"), canvas).unwrap();
        let g = direct.random(&mut rng);
        write(
            "genome_direct",
            &format!("{width}x{height}x{channels}"),
            &[&head[..], &direct.encode(&g)].concat(),
        );
    }
}

fn main() {
    checkpoints();
    configs();
    manifests();
    genomes();
}
