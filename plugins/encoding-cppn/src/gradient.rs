//! The optional operations of plugin ABI 1.1 for the CPPN: the pull-back of a pixel gradient
//! to the genome (the vector-Jacobian product of `render`) and a step in the genome's
//! parameter space. The topology and the activations are fixed; the parameters are the edge
//! genes.
//!
//! **Parameters.** θ is the list of edge genes g in [0, 1], in edge-list order (so its length
//! is the genome's edge count); the weight of an edge is 20g - 10. The activation functions
//! (sine, bipolar sigmoid, gaussian, linear) have no parameters of their own and nodes have
//! no biases (the bias input's edges are ordinary edges), so there is nothing else to move.
//! `apply_step` adds the step to the genes and clamps each to [0, 1].
//!
//! **What is differentiated.** `render` writes the byte `trunc(255 |v|)` for an output value
//! v (gray, or each of R, G, B with `color_space = "rgb"`). The pull-back is that of the
//! real-valued image `255 |v|`, before truncation to bytes, evaluated exactly as the released
//! code evaluates the network (`depth` synchronous steps from all-zero states, see
//! `reference`), which is also what the fast renderer computes; so the orphan case of `plan`
//! is handled by construction. It runs in `f64` with the standard library's `sin` and `exp`,
//! where the renderer uses its own `f32` kernels: the values agree to about 1e-6 of a pixel
//! value unit, far below the byte truncation. `hsv` and `hls-opencv` convert 8-bit values
//! (with rounding and hue sectors), which this module does not differentiate: those colour
//! spaces answer "not supported".
//!
//! **Where it is not differentiable.** |v| at v = 0: the pull-back uses derivative 0 there
//! (the subgradient whose step leaves a black pixel as it is). The linear activation
//! clamp(p, -3, 3) / 3: derivative 1/3 for |p| < 3 and 0 for |p| >= 3, so at the kink
//! itself it takes the saturated side. Everything else (sine, sigmoid, gaussian, the weighted
//! sums) is smooth. The truncation to bytes makes the true render piecewise constant; the
//! pull-back ignores it, as every gradient method on 8-bit images does.
//!
//! **Cost.** Per pixel, `depth` steps forward and back over the planned edges: a few times a
//! render, without the renderer's per-column and per-row sharing. Pure: the same genome and
//! gradient give the same bits.

use pareidolia_plugin::color::ColorSpace;
use pareidolia_plugin::{Canvas, PluginError};

use crate::activation::Activation;
use crate::genome::{Genome, INPUTS};
use crate::inputs;
use crate::params::Coordinates;

/// Derivative of the weight with respect to its gene: w = 20g - 10.
const WEIGHT_PER_GENE: f64 = 20.0;

/// Fails with an "unsupported" error unless the pixel is a function of the outputs this
/// module differentiates (gray, or RGB read as it is).
pub fn check_colour(
    channels: u32,
    color_space: ColorSpace,
    operation: &str,
) -> Result<(), PluginError> {
    if channels == 1 || color_space == ColorSpace::Rgb {
        return Ok(());
    }
    let name = match color_space {
        ColorSpace::Hsv => "hsv",
        ColorSpace::HlsOpencv => "hls-opencv",
        ColorSpace::Rgb => "rgb",
    };
    Err(PluginError::unsupported(format!(
        "the CPPN encoding offers `{operation}` on gray canvases and with color_space = \"rgb\" only: \
         `{name}` converts 8-bit values, which it does not differentiate"
    )))
}

/// The activation and its derivative, in `f64`. At the linear activation's kinks (|p| = 3)
/// the derivative is that of the saturated side, 0.
fn activate(a: Activation, p: f64) -> (f64, f64) {
    match a {
        Activation::Sine => (p.sin(), p.cos()),
        Activation::Sigmoid => {
            let s = 2.0 / (1.0 + (-p).exp()) - 1.0;
            (s, 0.5 * (1.0 - s * s))
        }
        Activation::Gaussian => {
            let g = (-p * p).exp();
            (g, -2.0 * p * g)
        }
        Activation::Linear => {
            let slope = if p.abs() < 3.0 { 1.0 / 3.0 } else { 0.0 };
            (p.clamp(-3.0, 3.0) / 3.0, slope)
        }
    }
}

/// One pixel's synchronous evaluation, kept for the backward pass.
struct Tape {
    depth: usize,
    nodes: usize,
    /// Per node, the indices of its in-edges in edge-list order.
    incoming: Vec<Vec<usize>>,
    weights: Vec<f64>,
    /// `states[t * nodes + v]`: node v's output after step t (t = 0 is the initial state).
    states: Vec<f64>,
    /// `slopes[(t - 1) * nodes + v]`: the activation's derivative at step t's sum.
    slopes: Vec<f64>,
    /// Adjoints of the current and previous step's states.
    adjoint: Vec<f64>,
    previous: Vec<f64>,
}

impl Tape {
    fn new(genome: &Genome) -> Self {
        let nodes = genome.node_count();
        let depth = genome.depth();
        let mut incoming = vec![Vec::new(); nodes];
        for (i, e) in genome.edges().iter().enumerate() {
            incoming[e.to as usize].push(i);
        }
        Self {
            depth,
            nodes,
            incoming,
            // 20g - 10 in f64: the renderer rounds it to f32 (within 1e-6), which would put
            // steps of that size on the finite differences of a gene.
            weights: genome
                .edges()
                .iter()
                .map(|e| WEIGHT_PER_GENE * f64::from(e.gene) - 10.0)
                .collect(),
            states: vec![0.0; (depth + 1) * nodes],
            slopes: vec![0.0; depth * nodes],
            adjoint: vec![0.0; nodes],
            previous: vec![0.0; nodes],
        }
    }

    /// Runs the released code's `depth` synchronous steps for one pixel.
    fn forward(&mut self, genome: &Genome, inputs: [f32; INPUTS]) {
        let n = self.nodes;
        self.states[..n].fill(0.0);
        for t in 1..=self.depth {
            let (done, rest) = self.states.split_at_mut(t * n);
            let before = &mut done[(t - 1) * n..];
            // Inputs are set before every step.
            for (s, &x) in before.iter_mut().zip(&inputs) {
                *s = f64::from(x);
            }
            let now = &mut rest[..n];
            for (s, &x) in now.iter_mut().zip(&inputs) {
                *s = f64::from(x);
            }
            let slopes = &mut self.slopes[(t - 1) * n..t * n];
            for (v, (value, slope)) in now.iter_mut().zip(slopes).enumerate().skip(INPUTS) {
                let sum: f64 = self.incoming[v]
                    .iter()
                    .map(|&i| self.weights[i] * before[genome.edges()[i].from as usize])
                    .sum();
                (*value, *slope) = activate(genome.activations()[v], sum);
            }
        }
    }

    /// Output `channel`'s value after the last step.
    fn output(&self, genome: &Genome, channel: usize) -> f64 {
        self.states[self.depth * self.nodes + genome.output_id(channel)]
    }

    /// Adds this pixel's dL/dweight to `weights`, given dL/d(output value) per channel.
    fn backward(&mut self, genome: &Genome, outputs: &[f64], weights: &mut [f64]) {
        let n = self.nodes;
        self.adjoint.fill(0.0);
        for (c, &a) in outputs.iter().enumerate() {
            self.adjoint[genome.output_id(c)] += a;
        }
        for t in (1..=self.depth).rev() {
            self.previous.fill(0.0);
            let before = &self.states[(t - 1) * n..t * n];
            for v in INPUTS..n {
                let a = self.adjoint[v];
                if a == 0.0 {
                    continue;
                }
                let d_sum = a * self.slopes[(t - 1) * n + v];
                if d_sum == 0.0 {
                    continue;
                }
                for &i in &self.incoming[v] {
                    let from = genome.edges()[i].from as usize;
                    weights[i] += d_sum * before[from];
                    self.previous[from] += d_sum * self.weights[i];
                }
            }
            std::mem::swap(&mut self.adjoint, &mut self.previous);
        }
    }
}

/// The real-valued image `render` truncates, `255 |v|` per output value, in render layout
/// (gray or RGB as it is; the caller has checked the colour space and the outputs).
pub fn relaxed_image(genome: &Genome, canvas: Canvas, coordinates: Coordinates) -> Vec<f64> {
    let mut tape = Tape::new(genome);
    let mut image = Vec::with_capacity(canvas.len());
    for row in 0..canvas.height {
        for col in 0..canvas.width {
            tape.forward(genome, inputs::pixel_inputs(canvas, coordinates, col, row));
            image.extend((0..genome.outputs()).map(|c| 255.0 * tape.output(genome, c).abs()));
        }
    }
    image
}

/// dL/dgene for every edge, in edge-list order, given dL/dpixel for the relaxed image
/// (`gradient.len() == canvas.len()`, checked by the SDK).
pub fn pullback(
    genome: &Genome,
    canvas: Canvas,
    coordinates: Coordinates,
    gradient: &[f32],
) -> Vec<f32> {
    let channels = genome.outputs();
    let mut tape = Tape::new(genome);
    let mut weights = vec![0.0f64; genome.edges().len()];
    let mut outputs = vec![0.0f64; channels];
    let mut pixel = 0;
    for row in 0..canvas.height {
        for col in 0..canvas.width {
            let upstream = &gradient[pixel * channels..(pixel + 1) * channels];
            pixel += 1;
            if upstream.iter().all(|&g| g == 0.0) {
                continue;
            }
            tape.forward(genome, inputs::pixel_inputs(canvas, coordinates, col, row));
            for (c, out) in outputs.iter_mut().enumerate() {
                // d(255 |v|)/dv = 255 sign(v), with sign(0) = 0.
                let v = tape.output(genome, c);
                let sign = if v > 0.0 {
                    1.0
                } else if v < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                *out = f64::from(upstream[c]) * 255.0 * sign;
            }
            tape.backward(genome, &outputs, &mut weights);
        }
    }
    weights
        .iter()
        .map(|w| (w * WEIGHT_PER_GENE) as f32)
        .collect()
}

/// The genome with every edge gene moved by `step` and clamped to [0, 1].
pub fn apply_step(genome: &Genome, step: &[f32]) -> Result<Genome, PluginError> {
    if step.len() != genome.edges().len() {
        return Err(PluginError::new(format!(
            "the step has {} values, the CPPN genome {} edges (its parameters are the edge genes)",
            step.len(),
            genome.edges().len()
        )));
    }
    let mut moved = genome.clone();
    for (e, s) in moved.edges_mut().iter_mut().zip(step) {
        e.gene = (e.gene + s).clamp(0.0, 1.0);
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    //! The pull-back against central finite differences of the relaxed image, the relaxed
    //! image against the real renderer, and the step.

    use pareidolia_plugin::prelude::*;

    use super::*;
    use crate::Cppn;
    use crate::activation::Activation::*;
    use crate::genome::Edge;
    use crate::plan::{Mode, Plan};

    fn cppn(json: &str, width: u32, height: u32, channels: u32) -> Cppn {
        let canvas = Canvas {
            width,
            height,
            channels,
        };
        Cppn::new(Params::new(json), canvas).unwrap()
    }

    fn edge(from: u32, to: u32, weight: f32) -> Edge {
        Edge {
            from,
            to,
            gene: Edge::gene_for_weight(weight),
        }
    }

    /// A random genome after `steps` mutations (hidden nodes, deleted edges, orphans).
    fn grown(c: &Cppn, seed: u64, steps: usize) -> Genome {
        let mut rng = Rng::seed_from_u64(seed);
        let mut g = c.random(&mut rng);
        for _ in 0..steps {
            c.mutate(&mut g, Mutation { generation: 0 }, &mut rng);
        }
        g
    }

    /// Weights of a loss L = sum c_i p_i over the relaxed image, in [-1, 1].
    fn loss_weights(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect()
    }

    fn loss(c: &Cppn, g: &Genome, weights: &[f32]) -> f64 {
        let image = c.relaxed_image(g).unwrap();
        image
            .iter()
            .zip(weights)
            .map(|(p, &w)| p * f64::from(w))
            .sum()
    }

    /// Where every pixel stands against the points where the relaxed image is not
    /// differentiable: the sign of each output value (|v| at 0) and, for each linear node at
    /// each synchronous step, whether its sum is clamped (at ±3); and how close it comes to
    /// any of them. Written apart from `Tape` on purpose.
    fn kinks(c: &Cppn, g: &Genome) -> (Vec<i8>, f64) {
        let n = g.node_count();
        let (mut pattern, mut nearest) = (Vec::new(), f64::INFINITY);
        for row in 0..c.canvas.height {
            for col in 0..c.canvas.width {
                let x = inputs::pixel_inputs(c.canvas, c.params.coordinates, col, row);
                let mut state = vec![0.0f64; n];
                for _ in 0..g.depth() {
                    for (s, v) in state.iter_mut().zip(x) {
                        *s = f64::from(v);
                    }
                    let mut next = state.clone();
                    for (v, slot) in next.iter_mut().enumerate().skip(INPUTS) {
                        let sum: f64 = g
                            .edges()
                            .iter()
                            .filter(|e| e.to as usize == v)
                            .map(|e| (20.0 * f64::from(e.gene) - 10.0) * state[e.from as usize])
                            .sum();
                        if g.activations()[v] == Linear {
                            nearest = nearest.min((sum.abs() - 3.0).abs());
                            pattern.push(i8::from(sum.abs() >= 3.0));
                        }
                        *slot = activate(g.activations()[v], sum).0;
                    }
                    state = next;
                }
                for ch in 0..g.outputs() {
                    let v = state[g.output_id(ch)];
                    nearest = nearest.min(v.abs());
                    pattern.push(v.signum() as i8 * i8::from(v != 0.0));
                }
            }
        }
        (pattern, nearest)
    }

    fn kink_distance(c: &Cppn, g: &Genome) -> f64 {
        kinks(c, g).1
    }

    /// The largest error of the pull-back against central differences (step `h` on each
    /// gene), relative to max(|analytic|, 1e-3 of the largest component).
    /// Genes whose interval [g - h, g + h] crosses a kink (the kink pattern differs at its
    /// ends) are left out and counted in the second value.
    fn worst_relative_error(c: &Cppn, g: &Genome, seed: u64) -> (f64, usize) {
        let h = 1e-6f32;
        let mut crossing = 0;
        let weights = loss_weights(c.canvas.len(), seed);
        let analytic = c.pullback(g, &weights).unwrap();
        assert_eq!(analytic.len(), g.edges().len());
        let scale = analytic.iter().fold(0.0f32, |m, a| m.max(a.abs())) as f64;
        let mut worst = 0.0f64;
        for (k, &a) in analytic.iter().enumerate() {
            let at = |gene: f32| {
                let mut moved = g.clone();
                moved.edges_mut()[k].gene = gene;
                loss(c, &moved, &weights)
            };
            let gene = g.edges()[k].gene;
            // Genes at a bound: one-sided room is enough for a central difference of h.
            let centre = gene.clamp(h, 1.0 - h);
            let (up, down) = (centre + h, centre - h);
            let pattern = |gene: f32| {
                let mut moved = g.clone();
                moved.edges_mut()[k].gene = gene;
                kinks(c, &moved).0
            };
            if pattern(up) != pattern(down) {
                crossing += 1;
                continue;
            }
            let fd = (at(up) - at(down)) / f64::from(up - down);
            let a = if centre == gene {
                f64::from(a)
            } else {
                let mut moved = g.clone();
                moved.edges_mut()[k].gene = centre;
                f64::from(c.pullback(&moved, &weights).unwrap()[k])
            };
            worst = worst.max((fd - a).abs() / a.abs().max(1e-3 * scale).max(1e-9));
        }
        (worst, crossing)
    }

    #[test]
    fn the_relaxed_image_is_what_render_truncates() {
        let cases = [
            (r#"{}"#, 28, 28, 1),
            (r#"{"coordinates": "unit"}"#, 20, 16, 1),
            (r#"{"color_space": "rgb"}"#, 12, 12, 3),
            (r#"{"color_space": "rgb", "coordinates": "unit"}"#, 9, 13, 3),
        ];
        let mut synchronous = 0;
        for (json, w, h, ch) in cases {
            let c = cppn(json, w, h, ch);
            for seed in 0..12 {
                let g = grown(&c, seed, 40);
                synchronous += usize::from(matches!(Plan::new(&g).mode, Mode::Synchronous { .. }));
                let mut bytes = vec![0u8; c.canvas.len()];
                c.render(&g, &mut bytes).unwrap();
                let relaxed = c.relaxed_image(&g).unwrap();
                for (i, (&b, &r)) in bytes.iter().zip(&relaxed).enumerate() {
                    // f32 kernels against f64 libm: a byte may differ only where the exact
                    // value sits within 1e-3 of an integer.
                    let near_integer = (r - r.round()).abs() < 1e-3;
                    assert!(
                        f64::from(b) == r.trunc()
                            || near_integer && (f64::from(b) - r).abs() < 1.0 + 1e-3,
                        "{json} seed {seed} value {i}: byte {b}, relaxed {r}"
                    );
                }
            }
        }
        assert!(synchronous > 0, "no genome took the synchronous path");
    }

    #[test]
    fn the_pullback_matches_central_differences() {
        let cases = [
            (r#"{}"#, 28, 28, 1),
            (r#"{"coordinates": "unit"}"#, 16, 16, 1),
            (r#"{"color_space": "rgb"}"#, 10, 10, 3),
            (r#"{"color_space": "rgb", "coordinates": "unit"}"#, 12, 8, 3),
        ];
        let (mut checked, mut worst, mut genes, mut crossing) = (0, 0.0f64, 0, 0);
        for (json, w, h, ch) in cases {
            let c = cppn(json, w, h, ch);
            for seed in 0..6 {
                let g = grown(&c, 100 + seed, 25);
                // Test away from the points where the image is not differentiable: none at
                // the genome, and none crossed by a difference (those genes are left out).
                if kink_distance(&c, &g) == 0.0 {
                    continue;
                }
                let (e, crossed) = worst_relative_error(&c, &g, seed);
                assert!(e < 1e-4, "{json} seed {seed}: relative error {e}");
                worst = worst.max(e);
                checked += 1;
                genes += g.edges().len();
                crossing += crossed;
            }
        }
        assert!(checked >= 16, "only {checked} genomes away from kinks");
        assert!(
            crossing * 10 < genes,
            "{crossing} of {genes} genes cross a kink"
        );
        eprintln!(
            "CPPN pull-back vs central differences: {checked} genomes, {genes} genes \
             ({crossing} left out: their difference crosses a kink), worst relative error {worst:.2e}"
        );
    }

    #[test]
    fn the_pullback_follows_the_synchronous_steps() {
        // h (gaussian, no in-edges) -> a -> out and x -> out: depth 2, and the orphan's value
        // arrives at `a` only in step 2, too late for the output. The released code (and the
        // renderer) never see it, so its edges get no gradient; x -> out does.
        let g = Genome::from_parts(
            1,
            vec![Sine, Sine, Sine, Sine, Sine, Gaussian, Sine],
            vec![edge(5, 6, 2.5), edge(6, 4, 1.25), edge(0, 4, 0.3125)],
        )
        .unwrap();
        assert_eq!(Plan::new(&g).mode, Mode::Synchronous { steps: 2 });
        let c = cppn(r#"{"coordinates": "unit"}"#, 9, 3, 1);
        let pulled = c.pullback(&g, &[1.0; 27]).unwrap();
        assert_eq!(&pulled[..2], &[0.0, 0.0]);
        assert!(pulled[2] > 0.0, "{pulled:?}");
        assert!(kink_distance(&c, &g) == 0.0, "x = 0 gives a black column");
        // Away from the black column the differences agree.
        let mut weights = vec![1.0f32; 27];
        for row in 0..3 {
            weights[row * 9] = 0.0;
        }
        let analytic = c.pullback(&g, &weights).unwrap()[2];
        let at = |gene: f32| {
            let mut moved = g.clone();
            moved.edges_mut()[2].gene = gene;
            loss(&c, &moved, &weights)
        };
        let gene = g.edges()[2].gene;
        let fd = (at(gene + 1e-5) - at(gene - 1e-5)) / f64::from((gene + 1e-5) - (gene - 1e-5));
        assert!(
            (fd - f64::from(analytic)).abs() < 1e-4 * f64::from(analytic),
            "{fd} vs {analytic}"
        );
    }

    #[test]
    fn a_saturated_linear_node_passes_no_gradient() {
        // out = linear(2.5 x + 0.625 bias) on x = col / 10: the sum runs 0.625..3.125, and
        // only the last column (3.125) is clamped.
        let g = Genome::from_parts(1, vec![Linear; 5], vec![edge(0, 4, 2.5), edge(3, 4, 0.625)])
            .unwrap();
        let c = cppn(r#"{"coordinates": "unit"}"#, 11, 1, 1);
        let only = |col: usize| {
            let mut w = vec![0.0f32; 11];
            w[col] = 1.0;
            c.pullback(&g, &w).unwrap()
        };
        // d(255 |v|)/dgene = 255 * (1/3) * source * 20, v > 0 everywhere here.
        let x = 0.9f64;
        let expected = [255.0 / 3.0 * x * 20.0, 255.0 / 3.0 * 20.0];
        let got = only(9);
        assert!((f64::from(got[0]) - expected[0]).abs() < 1e-3, "{got:?}");
        assert!((f64::from(got[1]) - expected[1]).abs() < 1e-3, "{got:?}");
        assert_eq!(only(10), [0.0, 0.0], "clamped: no gradient");
    }

    #[test]
    fn a_step_along_the_pullback_raises_the_loss_at_first_order() {
        let c = cppn(r#"{"coordinates": "unit"}"#, 16, 16, 1);
        let weights = loss_weights(256, 7);
        let mut tested = 0;
        for seed in 0..20 {
            let g = grown(&c, seed, 10);
            let grad = c.pullback(&g, &weights).unwrap();
            let norm = grad
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt();
            if norm == 0.0 {
                // No edge reaches an output with a non-zero slope: nothing to climb.
                continue;
            }
            // A step of 1e-4 in gene space, both ways (central, so the second-order term
            // cancels); the prediction uses the genes as stored (f32) after the step.
            let eps = (1e-4 / norm) as f32;
            let up: Vec<f32> = grad.iter().map(|v| v * eps).collect();
            let down: Vec<f32> = up.iter().map(|v| -v).collect();
            let (g_up, g_down) = (
                c.apply_step(&g, &up).unwrap(),
                c.apply_step(&g, &down).unwrap(),
            );
            // Away from kinks and from the bounds the step would be clamped at.
            let pattern = kinks(&c, &g).0;
            if kinks(&c, &g_up).0 != pattern
                || kinks(&c, &g_down).0 != pattern
                || g.edges()
                    .iter()
                    .any(|e| e.gene < 1e-3 || e.gene > 1.0 - 1e-3)
            {
                continue;
            }
            assert_eq!(g_up.edges().len(), g.edges().len());
            assert_eq!(g_up.activations(), g.activations());
            let predicted: f64 = grad
                .iter()
                .zip(g_up.edges().iter().zip(g_down.edges()))
                .map(|(d, (u, w))| f64::from(*d) * f64::from(u.gene - w.gene) / 2.0)
                .sum();
            let rise = (loss(&c, &g_up, &weights) - loss(&c, &g_down, &weights)) / 2.0;
            assert!(
                predicted > 0.0,
                "seed {seed}: {grad:?} norm {norm} eps {eps}"
            );
            assert!(
                (rise - predicted).abs() < 1e-2 * predicted,
                "seed {seed}: rose {rise}, predicted {predicted}"
            );
            tested += 1;
        }
        assert!(tested >= 10, "{tested}");
    }

    #[test]
    fn steps_clamp_and_check_their_length() {
        let c = cppn("{}", 4, 4, 1);
        let g =
            Genome::from_parts(1, vec![Sine; 5], vec![edge(0, 4, 9.5), edge(3, 4, -9.5)]).unwrap();
        let moved = c.apply_step(&g, &[0.5, -0.5]).unwrap();
        let genes: Vec<f32> = moved.edges().iter().map(|e| e.gene).collect();
        assert_eq!(genes, [1.0, 0.0]);
        let e = c.apply_step(&g, &[0.1]).unwrap_err();
        assert!(
            e.message().contains("2 edges") && !e.is_unsupported(),
            "{e}"
        );
        assert!(c.pullback(&g, &[0.0; 3]).is_err());
    }

    #[test]
    fn other_colour_spaces_are_not_differentiated() {
        for space in ["hsv", "hls-opencv"] {
            let c = cppn(&format!(r#"{{"color_space": "{space}"}}"#), 4, 4, 3);
            let g = c.random(&mut Rng::seed_from_u64(1));
            let errors = [
                c.pullback(&g, &[0.0; 48]).map(drop).unwrap_err(),
                c.apply_step(&g, &[0.0; 12]).map(drop).unwrap_err(),
            ];
            for e in errors {
                assert!(e.is_unsupported() && e.message().contains(space), "{e}");
            }
        }
        let e = cppn("{}", 4, 4, 1)
            .genome_from_pixels(&[0.0; 16])
            .map(drop)
            .unwrap_err();
        assert!(e.is_unsupported(), "{e}");
    }
}
