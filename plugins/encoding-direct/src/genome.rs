//! The direct genome and its versioned byte format.
//!
//! Format 1: one byte `1`, a little-endian `u32` gene count, then that many little-endian
//! `f32` genes in [0, 1]. Checkpoints keep these bytes for weeks, so a new format gets a new
//! version byte and `decode` keeps reading the old ones.

use pareidolia_plugin::PluginError;

/// The current byte-format version.
pub const FORMAT_VERSION: u8 = 1;

/// One gene per pixel channel, each in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Genome {
    genes: Vec<f32>,
}

impl Genome {
    /// Wraps genes (callers keep them in [0, 1]).
    pub fn new(genes: Vec<f32>) -> Self {
        Self { genes }
    }

    /// The genes.
    pub fn genes(&self) -> &[f32] {
        &self.genes
    }

    /// The genes, for mutation.
    pub fn genes_mut(&mut self) -> &mut [f32] {
        &mut self.genes
    }

    /// Writes format [`FORMAT_VERSION`].
    pub fn encode(&self) -> Vec<u8> {
        // Written into a buffer of its final size: the copy loop then runs without a capacity
        // test per gene (a genome is encoded after every mutation and crossover).
        let mut out = vec![0u8; 5 + 4 * self.genes.len()];
        out[0] = FORMAT_VERSION;
        out[1..5].copy_from_slice(&(self.genes.len() as u32).to_le_bytes());
        for (dst, g) in out[5..].chunks_exact_mut(4).zip(&self.genes) {
            dst.copy_from_slice(&g.to_le_bytes());
        }
        out
    }

    /// Reads any known format version.
    pub fn decode(bytes: &[u8]) -> Result<Self, PluginError> {
        let (&version, rest) = bytes
            .split_first()
            .ok_or_else(|| PluginError::new("direct genome is empty"))?;
        if version != FORMAT_VERSION {
            return Err(PluginError::new(format!(
                "direct genome has format version {version}; this plugin reads version {FORMAT_VERSION}"
            )));
        }
        if rest.len() < 4 {
            return Err(PluginError::new(
                "direct genome is truncated (no gene count)",
            ));
        }
        let count = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let body = &rest[4..];
        if body.len() != count * 4 {
            return Err(PluginError::new(format!(
                "direct genome says {count} genes but holds {} bytes of genes",
                body.len()
            )));
        }
        let genes: Vec<f32> = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // One pass without an early exit (it vectorises); the offending gene is looked up
        // only when there is one.
        let inside = genes
            .iter()
            .fold(true, |ok, &g| ok & (0.0..=1.0).contains(&g));
        if !inside && let Some(bad) = genes.iter().find(|g| !(0.0..=1.0).contains(*g)) {
            return Err(PluginError::new(format!(
                "direct genome holds gene {bad}, outside [0, 1]"
            )));
        }
        Ok(Self { genes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_one_is_a_version_byte_a_count_and_little_endian_genes() {
        let g = Genome::new(vec![0.0, 0.25, 1.0]);
        let mut want = vec![1u8, 3, 0, 0, 0];
        for v in [0.0f32, 0.25, 1.0] {
            want.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(g.encode(), want);
        assert_eq!(Genome::decode(&want).unwrap(), g);
        assert_eq!(Genome::new(Vec::new()).encode(), vec![1u8, 0, 0, 0, 0]);
    }

    #[test]
    fn a_gene_outside_the_unit_interval_is_named() {
        for bad in [1.5f32, -0.25, f32::NAN] {
            let mut bytes = Genome::new(vec![0.5, 0.5, 0.5, 0.5]).encode();
            bytes[5 + 8..5 + 12].copy_from_slice(&bad.to_le_bytes());
            let e = Genome::decode(&bytes).unwrap_err();
            assert!(e.message().contains(&format!("gene {bad}")), "{e}");
        }
        let short = &Genome::new(vec![0.5; 3]).encode()[..12];
        assert!(
            Genome::decode(short)
                .unwrap_err()
                .message()
                .contains("3 genes")
        );
    }
}
