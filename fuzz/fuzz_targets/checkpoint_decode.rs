//! The checkpoint decoder, as `resume`, `export` and `status` use it: bytes of a checkpoint
//! file in, a `Checkpoint` or a `CheckpointError` out, and on success everything the host then
//! does with it (archive statistics, parent selection, a child competing, the identity's
//! look-ups, writing it again) without a panic.
//!
//! The file ends in a sha256 of everything before it, so random bytes almost never get past
//! the checksum. The first input byte therefore picks a mode:
//! - bit 0 set: the rest is the whole file, decoded as it is (header and checksum checks);
//! - bit 0 clear: the rest is the body after the 16-byte header, and the harness writes the
//!   header (format version 1 if bit 1 is set, else 2) and the checksum around it, so the
//!   fuzzer explores the metadata JSON, the blob table and the cross-references.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pareidolia_core::Evaluated;
use pareidolia_core::checkpoint::{self, Checkpoint, FORMAT_VERSION, MAGIC};
use sha2::{Digest, Sha256};

fn framed(version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 48);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    let check = Sha256::digest(&out);
    out.extend_from_slice(&check[..4]);
    out.extend_from_slice(body);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

fn rewrite(c: &Checkpoint) -> Vec<u8> {
    Checkpoint::capture(
        &c.archive(),
        c.counters(),
        &c.meta.rng,
        &c.config(),
        &c.meta.identity,
        c.meta.stop_reached.as_ref(),
        &c.planned,
        c.meta.created_unix_s,
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 {
        rest.to_vec()
    } else {
        framed(if mode & 2 == 2 { 1 } else { FORMAT_VERSION }, rest)
    };
    let path = Path::new("fuzz/ckpt-000000000001.pdck");
    let Ok(c) = checkpoint::decode(&bytes, path) else {
        return;
    };

    // What resume does with it.
    let mut archive = c.archive();
    let _ = archive.stats();
    let mut rng = c.meta.rng.clone();
    let _ = archive.pick_parent(&mut rng).map(|p| p.genome.len());
    let classes = archive.len();
    archive.insert(Evaluated {
        id: u64::MAX,
        generation: c.meta.generation.saturating_add(1),
        genome: vec![1, 2, 3],
        scores: (0..classes)
            .map(|i| i as f32 / (classes as f32 + 1.0))
            .collect(),
    });
    let _ = archive.stats();
    let _ = c.counters();
    let config = c.config();
    let _ = (
        config.plugin_dirs(),
        config.initial_population(),
        config.model_keys(),
    );
    let identity = &c.meta.identity;
    let _ = identity.primary().backend_text();
    for class in 0..identity.classes().min(4096) {
        let _ = identity.label(class);
    }
    identity
        .check_resume(identity, Default::default())
        .expect("a run continues itself");

    // What the next checkpoint of the resumed run does: written again, it reads back, and
    // writing that again gives the same bytes.
    let again = rewrite(&c);
    let back = checkpoint::decode(&again, path)
        .expect("a checkpoint written from a decoded one reads back");
    assert_eq!(rewrite(&back), again, "re-encoding is stable");
});
