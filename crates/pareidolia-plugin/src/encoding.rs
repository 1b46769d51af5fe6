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

    /// (ABI 1.1, optional) The genome whose render is `pixels`: `canvas.len()` real values in
    /// canvas units (`0.0..=255.0`, the layout of [`Encoding::render`]; the SDK checks the
    /// length and that every value is finite). Encodings that can hold any image (the direct
    /// one) offer it, so the host never writes their genome format. Keep the default
    /// ("not supported") otherwise. Must be a pure function of `pixels` and the parameters.
    fn genome_from_pixels(&self, pixels: &[f32]) -> Result<Self::Genome, PluginError> {
        let _ = pixels;
        Err(PluginError::unsupported(
            "this encoding does not implement `Encoding::genome_from_pixels`",
        ))
    }

    /// (ABI 1.1, optional) The pull-back of a pixel gradient to the genome: the
    /// vector-Jacobian product of [`Encoding::render`] at `genome`. `pixel_gradient` holds
    /// dL/dpixel for each of the canvas's `canvas.len()` values (render layout, per canvas
    /// unit: pixel values run 0 to 255; the SDK checks the length and finiteness); the result
    /// is dL/dθ, one value per parameter of the genome's parameter vector θ, the vector
    /// [`Encoding::apply_step`] moves, in the same order and units. Its length may depend on
    /// the genome (a CPPN's edge count). Rendering quantises to bytes, so this is the product
    /// for the encoding's real-valued image before quantisation; document what it gives at
    /// the points where that image is not differentiable. Must be a pure function of its
    /// inputs. Keep the default ("not supported") if the encoding is not differentiable.
    fn pullback(
        &self,
        genome: &Self::Genome,
        pixel_gradient: &[f32],
    ) -> Result<Vec<f32>, PluginError> {
        let _ = (genome, pixel_gradient);
        Err(PluginError::unsupported(
            "this encoding does not implement `Encoding::pullback`",
        ))
    }

    /// (ABI 1.1, optional) The genome with parameters θ + `step`, `step` being as long as
    /// [`Encoding::pullback`]'s result for this genome (an error otherwise), the values kept
    /// in the encoding's ranges (clamped, say); topology and everything that is not in θ stay.
    /// Offered together with `pullback`. Must be a pure function of its inputs.
    fn apply_step(&self, genome: &Self::Genome, step: &[f32]) -> Result<Self::Genome, PluginError> {
        let _ = (genome, step);
        Err(PluginError::unsupported(
            "this encoding does not implement `Encoding::apply_step`",
        ))
    }
}
