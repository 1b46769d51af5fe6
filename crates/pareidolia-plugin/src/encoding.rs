//! The safe trait an encoding plugin implements: how genomes are made, varied and drawn.

use crate::{Params, PluginError, Rng};

/// The canvas an encoding renders to (see [`crate::abi::CanvasSpec`] for the pixel layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canvas {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1 (gray) or 3 (RGB, interleaved).
    pub channels: u32,
}

impl Canvas {
    /// Number of bytes of a rendered image.
    pub fn len(&self) -> usize {
        self.width as usize * self.height as usize * self.channels as usize
    }

    /// Whether the canvas has no pixels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Context of one mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mutation {
    /// The generation the child is made for (drives mutation-rate schedules).
    pub generation: u64,
}

/// An image encoding. One instance serves a whole run and is called from several threads at
/// once, hence `Sync`; keep per-call scratch space on the stack or in a thread-local.
///
/// Genomes travel through the host as opaque bytes: [`Encoding::encode`] and
/// [`Encoding::decode`] define that format, and checkpoints keep it for weeks, so version it
/// (for example a leading format byte) and keep decoding old versions.
pub trait Encoding: Send + Sync + Sized + 'static {
    /// The decoded genome.
    type Genome: Clone;

    /// Builds the encoding from its parameters for one canvas; rejects bad values.
    fn new(params: Params<'_>, canvas: Canvas) -> Result<Self, PluginError>;

    /// A random genome of the initial population.
    fn random(&self, rng: &mut Rng) -> Self::Genome;

    /// Mutates a child in place.
    fn mutate(&self, genome: &mut Self::Genome, mutation: Mutation, rng: &mut Rng);

    /// Two children of two parents, before mutation. Encodings without crossover keep this
    /// default, which returns copies.
    fn crossover(
        &self,
        a: &Self::Genome,
        b: &Self::Genome,
        rng: &mut Rng,
    ) -> (Self::Genome, Self::Genome) {
        let _ = rng;
        (a.clone(), b.clone())
    }

    /// Draws the genome into `pixels` (exactly `canvas.len()` bytes, see [`Canvas`]).
    fn render(&self, genome: &Self::Genome, pixels: &mut [u8]) -> Result<(), PluginError>;

    /// Serializes a genome.
    fn encode(&self, genome: &Self::Genome) -> Vec<u8>;

    /// Deserializes a genome written by `encode` (of this or an older plugin version).
    fn decode(&self, bytes: &[u8]) -> Result<Self::Genome, PluginError>;

    /// A JSON description of a genome for people and tools (export, inspection).
    fn describe(&self, genome: &Self::Genome) -> String {
        let _ = genome;
        "{}".to_owned()
    }
}
