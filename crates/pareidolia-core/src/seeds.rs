//! Seeded random streams. One run seed fans out into independent streams through a hash
//! (SplitMix64 finalisers), so every random decision is a pure function of the run seed and
//! where it happens (stream, generation, index): results do not depend on how many mutators
//! run or in which order their work finishes.

use rand::SeedableRng;

/// The host's RNG (parent selection); serializable, so checkpoints can store its state.
pub type HostRng = rand_pcg::Pcg64Mcg;

/// Streams of derived seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// Random genomes of the initial population.
    Initial = 1,
    /// Crossover of a pair of parents.
    Crossover = 2,
    /// Mutation of a child.
    Mutation = 3,
    /// Parent selection in the archive.
    Selection = 4,
    /// The start of a gradient-ascent image (index: the class).
    AscentStart = 5,
    /// A trained model's initial weights.
    TrainInit = 6,
    /// The order a training run reads its data in.
    TrainOrder = 7,
    /// Whether a child takes gradient steps, and toward which class (gradient-informed
    /// MAP-Elites; index: the child).
    Steer = 8,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed for one random decision.
pub fn derive(run_seed: u64, stream: Stream, generation: u64, index: u64) -> u64 {
    mix(mix(mix(mix(run_seed) ^ stream as u64) ^ generation) ^ index)
}

/// The archive's parent-selection RNG for a run.
pub fn selection_rng(run_seed: u64) -> HostRng {
    HostRng::seed_from_u64(derive(run_seed, Stream::Selection, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_by_every_coordinate() {
        let base = derive(1, Stream::Mutation, 5, 7);
        assert_eq!(base, derive(1, Stream::Mutation, 5, 7));
        for other in [
            derive(2, Stream::Mutation, 5, 7),
            derive(1, Stream::Crossover, 5, 7),
            derive(1, Stream::Mutation, 6, 7),
            derive(1, Stream::Mutation, 5, 8),
        ] {
            assert_ne!(base, other);
        }
    }
}
