//! The released code's evaluation of one pixel, written literally (`nn.hpp` `_init`,
//! `_step`): the yardstick the fast renderer is tested against, too slow for real use.
//!
//! All node states start at 0. Then `depth` synchronous steps: inputs are set to the
//! pixel's values, every other node computes the weighted sum of its predecessors' outputs
//! *from the previous step* (in edge-list order, 0 with no in-edges) and applies its
//! activation, and all nodes commit together. The outputs are read after the last step.

use crate::genome::{Genome, INPUTS};

/// The output values (one per output node) of `genome` for one pixel's `inputs`
/// ([x, y, d, bias]).
pub fn evaluate_reference(genome: &Genome, inputs: [f32; INPUTS]) -> Vec<f32> {
    let n = genome.node_count();
    let mut current = vec![0.0f32; n];
    let mut next = vec![0.0f32; n];
    for _ in 0..genome.depth() {
        // Inputs are "fixed" nodes: their output is set before every step.
        current[..INPUTS].copy_from_slice(&inputs);
        next[..INPUTS].copy_from_slice(&inputs);
        for (node, slot) in next.iter_mut().enumerate().skip(INPUTS) {
            let mut sum = 0.0f32;
            for e in genome.edges().iter().filter(|e| e.to as usize == node) {
                sum += e.weight() * current[e.from as usize];
            }
            *slot = genome.activations()[node].apply(sum);
        }
        std::mem::swap(&mut current, &mut next);
    }
    (0..genome.outputs())
        .map(|c| current[genome.output_id(c)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation::*;
    use crate::genome::Edge;

    fn edge(from: u32, to: u32, weight: f32) -> Edge {
        Edge {
            from,
            to,
            gene: Edge::gene_for_weight(weight),
        }
    }

    #[test]
    fn a_single_linear_edge_scales_the_input() {
        // x -> out, weight 0.3125 (exact in f32), linear: clamp(0.3125 x, -3, 3) / 3.
        let g = Genome::from_parts(1, vec![Linear; 5], vec![edge(0, 4, 0.3125)]).unwrap();
        assert_eq!(g.depth(), 2);
        let out = evaluate_reference(&g, [6.0, 0.0, 0.0, 1.0])[0];
        assert_eq!(out, 0.625);
        assert_eq!(evaluate_reference(&g, [20.0, 0.0, 0.0, 1.0])[0], 1.0);
    }

    #[test]
    fn steps_stop_at_depth_so_a_long_orphan_chain_arrives_too_late() {
        // h (gaussian, no in-edges) -> a -> b -> out, and x -> out; depth 2.
        // Step 1: h = gaussian(0) = 1, a = b = 0. Step 2: a = linear(w), b = linear(0) = 0,
        // out = linear(0.625 x + 0). The chain's value never reaches the output. (Weights
        // whose gene (w + 10) / 20 is a dyadic fraction are exact in f32.)
        let g = Genome::from_parts(
            1,
            vec![
                Linear, Linear, Linear, Linear, Linear, Gaussian, Linear, Linear,
            ],
            vec![
                edge(5, 6, 2.5),
                edge(6, 7, 2.5),
                edge(7, 4, 2.5),
                edge(0, 4, 0.625),
            ],
        )
        .unwrap();
        assert_eq!(g.depth(), 2);
        assert_eq!(evaluate_reference(&g, [3.0, 0.0, 0.0, 1.0]), [0.625]);
    }
}
