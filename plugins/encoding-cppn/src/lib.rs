//! The paper's CPPN (indirect) encoding (Nguyen et al. 2015; PAPER.md section 3), as the
//! released code (sferes2 `nn2` with `gen_dnn_ff.hpp`) implements it.
//!
//! A genome is a feed-forward network. Its four inputs are a pixel's x, y, its distance d from
//! the canvas centre and a bias of 1; its outputs (1 for gray, 3 for colour) give the pixel.
//! Each hidden and output node sums its weighted in-edges (no bias of its own) and applies
//! one of sine, bipolar sigmoid, gaussian and linear; weights are 20g - 10 for a gene g in
//! [0, 1]. The first networks connect inputs straight to outputs; mutation changes weights
//! (polynomial, eta 15) and activations and adds and removes edges and nodes. There is no
//! crossover (the trait's default copies the parents), as in the released code.
//!
//! Parameters (`[encoding.params]`), defaults from the released code and PAPER.md section 9:
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `coordinates` | `"pixel"` | x, y as raw column/row index; `"unit"`: x/(W-1), y/(H-1) |
//! | `color_space` | `"hsv"` | how 3 outputs are read: `hsv` (paper text), `hls-opencv` (released code), `rgb` |
//! | `activations` | all four | the set nodes draw from: `sine`, `sigmoid`, `gaussian`, `linear` |
//! | `weight_mutation_rate` | 0.1 | per-edge probability of polynomial mutation |
//! | `eta_m` | 15 | polynomial mutation's distribution index |
//! | `activation_mutation_rate` | 0.1 | per-node probability of re-drawing the activation |
//! | `add_connection_rate` | 0.5 | per-child probability of adding an edge |
//! | `delete_connection_rate` | 0.3 | per-child probability of deleting an edge |
//! | `add_node_rate` | 0.5 | per-child probability of splitting an edge with a node |
//! | `delete_node_rate` | 0.2 | per-child probability of deleting a hidden node |
//!
//! An output value v becomes the byte |trunc(v * 255)|; colour bytes go through the SDK's
//! `ColorSpace::to_rgb`.
//!
//! Evaluation semantics are the released code's: all node states start at 0 and the network
//! runs `depth` synchronous steps, `depth` being the longest input-to-output path plus one
//! ([`evaluate_reference`] does exactly that for one pixel). The renderer instead evaluates
//! node by node in topological order over whole arrays of pixels (or of columns, rows or a
//! single value, for nodes that depend on x alone, y alone or neither), which gives the same
//! result whenever every output has settled within `depth` steps. That fails in one case: a
//! hidden node whose in-edges were all deleted outputs activation(0) from the first step on,
//! and if some output lies more than `depth - 1` edges below it, the released code reads
//! that output before the orphan's value has arrived. The renderer detects this and then
//! runs the exact synchronous steps over whole tiles; see `plan` for the argument. Both paths
//! use the same `f32` operations in the same order, so they give identical bytes.
//!
//! Plugin ABI 1.1: `pullback` and `apply_step` on gray canvases and with `color_space =
//! "rgb"`, for the edge genes with the topology fixed (see `gradient` for the parameter
//! vector, what is differentiated and the non-differentiable points); `genome_from_pixels`
//! is not offered (a CPPN cannot hold an arbitrary image).
//!
//! Modules: `params` (configuration), `activation` (the functions and their vectorisable
//! kernels), `genome` (the network and its graph queries), `mutation` (random genomes and
//! the six operators), `format` (the versioned bytes), `inputs` (x, y, d, bias per pixel),
//! `reference` (the literal evaluator), `plan` (what a render computes, and whether
//! feed-forward order is exact), `render` (the fast evaluator), `colour` (a memo in front
//! of the SDK's colour conversion), `describe` (JSON and DOT), `gradient` (the pull-back and
//! the parameter step).
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod activation;
mod colour;
mod describe;
mod format;
mod genome;
mod gradient;
mod inputs;
mod mutation;
mod params;
mod plan;
mod reference;
mod render;

use pareidolia_plugin::prelude::*;

pub use activation::Activation;
pub use format::FORMAT_VERSION;
pub use genome::{Edge, Genome, INPUTS, NodeKind};
pub use params::{Coordinates, CppnParams};
pub use reference::evaluate_reference;

/// The CPPN encoding for one canvas.
#[derive(Debug)]
pub struct Cppn {
    params: CppnParams,
    activations: Vec<Activation>,
    canvas: Canvas,
    planes: inputs::Planes,
}

impl Cppn {
    /// The activation set new and re-drawn nodes pick from.
    pub fn activation_set(&self) -> &[Activation] {
        &self.activations
    }

    fn check_outputs(&self, genome: &Genome) -> Result<(), PluginError> {
        if genome.outputs() != self.canvas.channels as usize {
            return Err(PluginError::new(format!(
                "CPPN genome has {} outputs, the canvas has {} channels: it was made for another canvas",
                genome.outputs(),
                self.canvas.channels
            )));
        }
        Ok(())
    }

    /// The real-valued image `render` truncates to bytes (`255 |v|` per output value), whose
    /// vector-Jacobian product [`Encoding::pullback`] computes; gray canvases and
    /// `color_space = "rgb"` only.
    pub fn relaxed_image(&self, genome: &Genome) -> Result<Vec<f64>, PluginError> {
        gradient::check_colour(
            self.canvas.channels,
            self.params.color_space,
            "relaxed_image",
        )?;
        self.check_outputs(genome)?;
        Ok(gradient::relaxed_image(
            genome,
            self.canvas,
            self.params.coordinates,
        ))
    }

    /// Renders with [`evaluate_reference`], pixel by pixel: the yardstick for
    /// [`Encoding::render`], far slower.
    pub fn render_reference(&self, genome: &Genome, pixels: &mut [u8]) -> Result<(), PluginError> {
        self.check_outputs(genome)?;
        self.check_len(pixels)?;
        let channels = genome.outputs();
        let mut chunks = pixels.chunks_exact_mut(channels);
        for row in 0..self.canvas.height {
            for col in 0..self.canvas.width {
                let inputs = inputs::pixel_inputs(self.canvas, self.params.coordinates, col, row);
                let out = evaluate_reference(genome, inputs);
                let values = std::array::from_fn(|c| out[c.min(channels - 1)]);
                let px = chunks.next().expect("the length was checked");
                render::write_pixel(values, channels, self.params.color_space, px);
            }
        }
        Ok(())
    }

    fn check_len(&self, pixels: &[u8]) -> Result<(), PluginError> {
        if pixels.len() != self.canvas.len() {
            return Err(PluginError::new(format!(
                "pixel buffer holds {} bytes, the {}x{}x{} canvas needs {}",
                pixels.len(),
                self.canvas.width,
                self.canvas.height,
                self.canvas.channels,
                self.canvas.len()
            )));
        }
        Ok(())
    }
}

impl Encoding for Cppn {
    type Genome = Genome;

    fn new(params: Params<'_>, canvas: Canvas) -> Result<Self, PluginError> {
        let params: CppnParams = params.parse()?;
        let activations = params.validate()?;
        if !matches!(canvas.channels, 1 | 3) || canvas.is_empty() {
            return Err(PluginError::new(format!(
                "the CPPN encoding draws 1 or 3 channels on a non-empty canvas, got {}x{}x{}",
                canvas.width, canvas.height, canvas.channels
            )));
        }
        let planes = inputs::Planes::new(canvas, params.coordinates);
        Ok(Self {
            params,
            activations,
            canvas,
            planes,
        })
    }

    fn random(&self, rng: &mut Rng) -> Genome {
        mutation::random_genome(self.canvas.channels as usize, &self.activations, rng)
    }

    fn mutate(&self, genome: &mut Genome, _mutation: Mutation, rng: &mut Rng) {
        mutation::mutate(genome, &self.params, &self.activations, rng);
    }

    fn render(&self, genome: &Genome, pixels: &mut [u8]) -> Result<(), PluginError> {
        self.check_outputs(genome)?;
        self.check_len(pixels)?;
        render::render(genome, &self.planes, self.params.color_space, pixels);
        Ok(())
    }

    fn encode(&self, genome: &Genome) -> Vec<u8> {
        format::encode(genome)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Genome, PluginError> {
        let genome = format::decode(bytes)?;
        self.check_outputs(&genome)?;
        Ok(genome)
    }

    fn describe(&self, genome: &Genome) -> String {
        describe::describe(genome, self.params.color_space)
    }

    fn pullback(&self, genome: &Genome, pixel_gradient: &[f32]) -> Result<Vec<f32>, PluginError> {
        gradient::check_colour(self.canvas.channels, self.params.color_space, "pullback")?;
        self.check_outputs(genome)?;
        if pixel_gradient.len() != self.canvas.len() {
            return Err(PluginError::new(format!(
                "the pixel gradient has {} values, the canvas {}",
                pixel_gradient.len(),
                self.canvas.len()
            )));
        }
        Ok(gradient::pullback(
            genome,
            self.canvas,
            self.params.coordinates,
            pixel_gradient,
        ))
    }

    fn apply_step(&self, genome: &Genome, step: &[f32]) -> Result<Genome, PluginError> {
        gradient::check_colour(self.canvas.channels, self.params.color_space, "apply_step")?;
        self.check_outputs(genome)?;
        gradient::apply_step(genome, step)
    }
}

export_encoding!(Cppn, name = "cppn", version = env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests;
