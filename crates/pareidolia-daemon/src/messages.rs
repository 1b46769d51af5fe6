//! The messages between actors: plain, serialisable data, never references or handles, so
//! that any of them can cross a process boundary later. Genomes are `Arc<[u8]>` only to
//! share bytes without copies inside one process; they serialise as byte strings.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Opaque genome bytes of the encoding plugin.
pub type Genome = Arc<[u8]>;

/// A child's id: generation in the high 32 bits, index within the generation in the low.
pub fn child_id(generation: u64, index: u32) -> u64 {
    generation << 32 | index as u64
}

/// Work for a mutator: make one or two children.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BreedJob {
    /// The generation the children belong to (0 = initial population).
    pub generation: u64,
    /// Children this generation has in all (evaluators flush when all are in).
    pub generation_size: u32,
    /// Index of the first child; the job makes `first_index..first_index + children`.
    pub first_index: u32,
    /// 1 or 2.
    pub children: u32,
    /// How to make them.
    pub recipe: Recipe,
    /// Seed of the crossover (breeding only).
    pub crossover_seed: u64,
    /// Seed per child (random genome or mutation).
    pub child_seeds: Vec<u64>,
}

/// How a job makes its children.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Recipe {
    /// Random genomes (initial population).
    Random,
    /// Crossover of two parents, then mutation of each child.
    Breed {
        /// First parent.
        a: Genome,
        /// Second parent.
        b: Genome,
    },
}

/// A rendered child on its way to evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offspring {
    /// Child id.
    pub id: u64,
    /// Its generation.
    pub generation: u64,
    /// Children in its generation.
    pub generation_size: u32,
    /// Genome bytes.
    pub genome: Genome,
    /// The rendered image at the model's input size.
    pub pixels: Vec<u8>,
    /// Seconds the mutator spent making this child (its share of the job).
    pub breed_s: f64,
}

/// A child that will never be scored, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LostChild {
    /// Child id.
    pub id: u64,
    /// Its generation.
    pub generation: u64,
    /// Children in its generation.
    pub generation_size: u32,
    /// Where it was lost: a [`LossKind`](crate::metrics::LossKind) name (`mutate`, `render`,
    /// `inference`, ...).
    pub stage: String,
    /// The error.
    pub reason: String,
}

/// A child with its per-class scores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoredChild {
    /// Child id.
    pub id: u64,
    /// Its generation.
    pub generation: u64,
    /// Genome bytes.
    pub genome: Genome,
    /// One score per class.
    pub scores: Vec<f32>,
}
