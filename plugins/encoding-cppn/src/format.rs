//! The versioned byte format of CPPN genomes.
//!
//! Format 1, all integers little-endian:
//!
//! | bytes | content |
//! |---|---|
//! | 1 | format version, `1` |
//! | 1 | output count, 1 or 3 |
//! | 4 | hidden node count `h` (`u32`) |
//! | 4 | edge count `e` (`u32`) |
//! | 4 + outputs + h | one activation code per node, by id (0 sine, 1 sigmoid, 2 gaussian, 3 linear) |
//! | 12 e | per edge: source id `u32`, target id `u32`, weight gene `f32` in [0, 1] |
//!
//! Node ids are implicit (dense, see `genome`), so a network of n nodes and e edges takes
//! 10 + n + 12e bytes. Checkpoints keep these bytes for weeks: a new layout gets a new version
//! byte and `decode` keeps reading the old ones. Decoding checks the length against the
//! counts before allocating, then everything `Genome::from_parts` checks, so garbage gives
//! an error naming what is wrong and never a panic or a huge allocation.

use pareidolia_plugin::PluginError;

use crate::activation::Activation;
use crate::genome::{Edge, Genome, INPUTS};

/// The current byte-format version.
pub const FORMAT_VERSION: u8 = 1;

const HEADER: usize = 10;
const EDGE_BYTES: usize = 12;

/// Writes format [`FORMAT_VERSION`].
pub fn encode(genome: &Genome) -> Vec<u8> {
    let edges = genome.edges();
    let mut out = Vec::with_capacity(HEADER + genome.node_count() + EDGE_BYTES * edges.len());
    out.push(FORMAT_VERSION);
    out.push(genome.outputs() as u8);
    out.extend_from_slice(&(genome.hidden_count() as u32).to_le_bytes());
    out.extend_from_slice(&(edges.len() as u32).to_le_bytes());
    out.extend(genome.activations().iter().map(|a| a.code()));
    for e in edges {
        out.extend_from_slice(&e.from.to_le_bytes());
        out.extend_from_slice(&e.to.to_le_bytes());
        out.extend_from_slice(&e.gene.to_le_bytes());
    }
    out
}

/// Reads any known format version.
pub fn decode(bytes: &[u8]) -> Result<Genome, PluginError> {
    let (&version, _) = bytes
        .split_first()
        .ok_or_else(|| PluginError::new("CPPN genome is empty"))?;
    if version != FORMAT_VERSION {
        return Err(PluginError::new(format!(
            "CPPN genome has format version {version}; this plugin reads version {FORMAT_VERSION}"
        )));
    }
    if bytes.len() < HEADER {
        return Err(PluginError::new(format!(
            "CPPN genome is truncated: {} bytes, the header alone takes {HEADER}",
            bytes.len()
        )));
    }
    let outputs = usize::from(bytes[1]);
    if !matches!(outputs, 1 | 3) {
        return Err(PluginError::new(format!(
            "CPPN genome has {outputs} outputs; it must have 1 (gray) or 3 (colour)"
        )));
    }
    let hidden = u32_at(bytes, 2) as u64;
    let edge_count = u32_at(bytes, 6) as u64;
    // u64 arithmetic: two u32 counts cannot overflow it, and the check comes before any
    // allocation sized by them.
    let nodes = INPUTS as u64 + outputs as u64 + hidden;
    let expected = HEADER as u64 + nodes + EDGE_BYTES as u64 * edge_count;
    if bytes.len() as u64 != expected {
        return Err(PluginError::new(format!(
            "CPPN genome holds {} bytes, but its {nodes} nodes and {edge_count} edges take {expected}",
            bytes.len()
        )));
    }
    let nodes = nodes as usize;
    let activations = bytes[HEADER..HEADER + nodes]
        .iter()
        .enumerate()
        .map(|(id, &code)| {
            Activation::from_code(code).ok_or_else(|| {
                PluginError::new(format!(
                    "CPPN genome node {id} has unknown activation code {code}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let edges = bytes[HEADER + nodes..]
        .chunks_exact(EDGE_BYTES)
        .map(|c| Edge {
            from: u32_at(c, 0),
            to: u32_at(c, 4),
            gene: f32::from_bits(u32_at(c, 8)),
        })
        .collect();
    Genome::from_parts(outputs, activations, edges)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use Activation::*;

    fn sample() -> Genome {
        Genome::from_parts(
            3,
            vec![
                Sine, Sigmoid, Gaussian, Linear, Sine, Sigmoid, Gaussian, Linear,
            ],
            vec![
                Edge {
                    from: 0,
                    to: 7,
                    gene: 0.25,
                },
                Edge {
                    from: 7,
                    to: 5,
                    gene: 1.0,
                },
                Edge {
                    from: 3,
                    to: 4,
                    gene: 0.0,
                },
                Edge {
                    from: 3,
                    to: 4,
                    gene: 0.75,
                },
            ],
        )
        .unwrap()
    }

    fn edge_offset(i: usize) -> usize {
        HEADER + 8 + EDGE_BYTES * i
    }

    #[test]
    fn round_trips_and_has_the_documented_layout() {
        let g = sample();
        let bytes = encode(&g);
        assert_eq!(bytes.len(), 10 + 8 + 12 * 4);
        assert_eq!(&bytes[..10], &[1, 3, 1, 0, 0, 0, 4, 0, 0, 0]);
        assert_eq!(&bytes[10..18], &[0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(decode(&bytes).unwrap(), g);
    }

    fn corrupt(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut bytes = encode(&sample());
        f(&mut bytes);
        decode(&bytes).unwrap_err().message().to_owned()
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let set_u32 = |b: &mut Vec<u8>, at: usize, v: u32| {
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        let cases: Vec<(String, &str)> = vec![
            (decode(&[]).unwrap_err().message().to_owned(), "empty"),
            (corrupt(|b| b[0] = 2), "format version 2"),
            (corrupt(|b| b.truncate(5)), "truncated"),
            (corrupt(|b| b[1] = 2), "2 outputs"),
            (corrupt(|b| b.truncate(b.len() - 1)), "take"),
            (corrupt(|b| b.push(0)), "take"),
            (corrupt(|b| set_u32(b, 2, u32::MAX)), "take"),
            (corrupt(|b| set_u32(b, 6, u32::MAX)), "take"),
            (corrupt(|b| b[12] = 9), "activation code 9"),
            (corrupt(|b| set_u32(b, edge_offset(0), 8)), "beyond"),
            (
                corrupt(|b| set_u32(b, edge_offset(0) + 4, 2)),
                "enters input",
            ),
            (corrupt(|b| set_u32(b, edge_offset(1) + 4, 7)), "cycle"),
            (corrupt(|b| set_u32(b, edge_offset(2), 5)), "leaves output"),
            (
                corrupt(|b| set_u32(b, edge_offset(3) + 8, 1.5f32.to_bits())),
                "outside [0, 1]",
            ),
            (
                corrupt(|b| set_u32(b, edge_offset(3) + 8, f32::NAN.to_bits())),
                "outside [0, 1]",
            ),
        ];
        for (message, want) in cases {
            assert!(message.contains(want), "wanted {want:?} in {message:?}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // A cheap xorshift: this test must not depend on the SDK's RNG stream.
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let valid = encode(&sample());
        for _ in 0..20_000 {
            let mut bytes = valid.clone();
            // Flip a few bytes of a valid genome, or cut it, or start from noise.
            match next() % 3 {
                0 => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() % bytes.len() as u64) as usize;
                        bytes[i] = next() as u8;
                    }
                }
                1 => bytes.truncate((next() % bytes.len() as u64) as usize),
                _ => {
                    bytes = (0..next() % 64).map(|_| next() as u8).collect();
                    if !bytes.is_empty() {
                        bytes[0] = 1;
                    }
                }
            }
            if let Ok(g) = decode(&bytes) {
                assert_eq!(encode(&g), bytes);
            }
        }
    }
}
