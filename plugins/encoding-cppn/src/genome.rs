//! The CPPN genome: nodes with activations and weighted edges, and the graph queries the
//! mutation operators and evaluators need (ancestors, topological order, depth).
//!
//! Node ids are dense and their ranges fixed: 0..4 are the inputs x, y, d and bias, the next
//! 1 or 3 are the outputs, everything after is hidden. Deleting a hidden node renumbers the
//! later ones, so ids stay dense and the byte format needs no id table. Edge order matters:
//! a node sums its in-edges in edge-list order, and both evaluators follow that order so
//! their `f32` sums are bit-identical. Parallel edges are allowed, as in the released code.
//!
//! Every `Genome` is valid (checked by [`Genome::from_parts`] and kept by the operators):
//! edges reference existing nodes, never enter an input, never leave an output, and form no
//! cycle; genes lie in [0, 1].

use pareidolia_plugin::PluginError;

use crate::activation::Activation;

/// Number of input nodes: x, y, d, bias.
pub const INPUTS: usize = 4;
/// Labels of the input nodes, in id order.
pub const INPUT_LABELS: [&str; INPUTS] = ["x", "y", "d", "bias"];

/// What a node is, by its id range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// x, y, d or bias: outputs the raw input, never applies its activation.
    Input,
    /// Created by splitting an edge.
    Hidden,
    /// Gives one channel of the pixel.
    Output,
}

impl NodeKind {
    /// Lower-case name, as `describe()` writes it.
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Input => "input",
            NodeKind::Hidden => "hidden",
            NodeKind::Output => "output",
        }
    }
}

/// A connection carrying one weight gene.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edge {
    /// Source node id.
    pub from: u32,
    /// Target node id.
    pub to: u32,
    /// The gene g in [0, 1]; the weight is 20g - 10.
    pub gene: f32,
}

impl Edge {
    /// The weight, w = 20g - 10 in [-10, 10] (`Params::parameters` min/max of the released
    /// code). Both evaluators call this, so they multiply by the same `f32`.
    #[inline]
    pub fn weight(&self) -> f32 {
        20.0 * self.gene - 10.0
    }

    /// The gene that gives `weight` (up to `f32` rounding), for hand-built networks.
    pub fn gene_for_weight(weight: f32) -> f32 {
        (weight + 10.0) / 20.0
    }
}

/// A CPPN: activations per node (by id) and edges.
#[derive(Debug, Clone, PartialEq)]
pub struct Genome {
    outputs: usize,
    activations: Vec<Activation>,
    edges: Vec<Edge>,
}

impl Genome {
    /// Builds and validates a genome. `activations` holds one entry per node: the 4 inputs,
    /// then the `outputs` (1 or 3) outputs, then the hidden nodes.
    pub fn from_parts(
        outputs: usize,
        activations: Vec<Activation>,
        edges: Vec<Edge>,
    ) -> Result<Self, PluginError> {
        if !matches!(outputs, 1 | 3) {
            return Err(PluginError::new(format!(
                "CPPN genome has {outputs} outputs; it must have 1 (gray) or 3 (colour)"
            )));
        }
        if activations.len() < INPUTS + outputs {
            return Err(PluginError::new(format!(
                "CPPN genome has {} nodes, fewer than its {} inputs and outputs",
                activations.len(),
                INPUTS + outputs
            )));
        }
        let genome = Self {
            outputs,
            activations,
            edges,
        };
        genome.check_edges()?;
        Ok(genome)
    }

    /// Unchecked construction for the operators, which keep the invariants themselves.
    pub(crate) fn from_parts_unchecked(
        outputs: usize,
        activations: Vec<Activation>,
        edges: Vec<Edge>,
    ) -> Self {
        Self {
            outputs,
            activations,
            edges,
        }
    }

    fn check_edges(&self) -> Result<(), PluginError> {
        let n = self.node_count();
        for (i, e) in self.edges.iter().enumerate() {
            let (from, to) = (e.from as usize, e.to as usize);
            if from >= n || to >= n {
                return Err(PluginError::new(format!(
                    "CPPN genome edge {i} ({from} -> {to}) references a node beyond the {n} it has"
                )));
            }
            if self.kind(to) == NodeKind::Input {
                return Err(PluginError::new(format!(
                    "CPPN genome edge {i} ({from} -> {to}) enters input node {to}"
                )));
            }
            if self.kind(from) == NodeKind::Output {
                return Err(PluginError::new(format!(
                    "CPPN genome edge {i} ({from} -> {to}) leaves output node {from}"
                )));
            }
            if !(e.gene.is_finite() && (0.0..=1.0).contains(&e.gene)) {
                return Err(PluginError::new(format!(
                    "CPPN genome edge {i} has weight gene {}, outside [0, 1]",
                    e.gene
                )));
            }
        }
        if self.topological_order().is_none() {
            return Err(PluginError::new(
                "CPPN genome has a cycle; CPPNs are feed-forward",
            ));
        }
        Ok(())
    }

    /// Number of outputs (1 or 3).
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Number of nodes, inputs and outputs included.
    pub fn node_count(&self) -> usize {
        self.activations.len()
    }

    /// Number of hidden nodes.
    pub fn hidden_count(&self) -> usize {
        self.node_count() - INPUTS - self.outputs
    }

    /// The id of output `channel`.
    pub fn output_id(&self, channel: usize) -> usize {
        INPUTS + channel
    }

    /// What node `id` is.
    pub fn kind(&self, id: usize) -> NodeKind {
        if id < INPUTS {
            NodeKind::Input
        } else if id < INPUTS + self.outputs {
            NodeKind::Output
        } else {
            NodeKind::Hidden
        }
    }

    /// Activations by node id.
    pub fn activations(&self) -> &[Activation] {
        &self.activations
    }

    /// The edges, in summation order.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    pub(crate) fn activations_mut(&mut self) -> &mut Vec<Activation> {
        &mut self.activations
    }

    pub(crate) fn edges_mut(&mut self) -> &mut Vec<Edge> {
        &mut self.edges
    }

    /// Node ids in an order where every edge goes forward (Kahn's algorithm, smallest ready
    /// id first so the order is deterministic); `None` if there is a cycle.
    pub fn topological_order(&self) -> Option<Vec<usize>> {
        let n = self.node_count();
        let mut indegree = vec![0usize; n];
        let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
        for e in &self.edges {
            indegree[e.to as usize] += 1;
            out[e.from as usize].push(e.to as usize);
        }
        let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
            .filter(|&v| indegree[v] == 0)
            .map(std::cmp::Reverse)
            .collect();
        let mut order = Vec::with_capacity(n);
        while let Some(std::cmp::Reverse(v)) = ready.pop() {
            order.push(v);
            for &w in &out[v] {
                indegree[w] -= 1;
                if indegree[w] == 0 {
                    ready.push(std::cmp::Reverse(w));
                }
            }
        }
        (order.len() == n).then_some(order)
    }

    /// `id` and every node with a path to it.
    pub fn ancestors(&self, id: usize) -> Vec<bool> {
        let mut seen = vec![false; self.node_count()];
        seen[id] = true;
        let mut stack = vec![id];
        while let Some(v) = stack.pop() {
            for e in self.edges.iter().filter(|e| e.to as usize == v) {
                if !std::mem::replace(&mut seen[e.from as usize], true) {
                    stack.push(e.from as usize);
                }
            }
        }
        seen
    }

    /// For every node, the length in edges of the longest path to it from any node in
    /// `sources` (0 for a source itself), or `None` if no source reaches it.
    pub fn longest_paths_from(&self, sources: impl Fn(usize) -> bool) -> Vec<Option<usize>> {
        let order = self.topological_order().expect("a valid genome is acyclic");
        let mut dist: Vec<Option<usize>> = (0..self.node_count())
            .map(|v| sources(v).then_some(0))
            .collect();
        let mut out: Vec<Vec<usize>> = vec![Vec::new(); self.node_count()];
        for e in &self.edges {
            out[e.from as usize].push(e.to as usize);
        }
        for v in order {
            if let Some(d) = dist[v] {
                for &w in &out[v] {
                    dist[w] = Some(dist[w].map_or(d + 1, |old| old.max(d + 1)));
                }
            }
        }
        dist
    }

    /// The number of synchronous steps the released code runs (`_compute_depth`): the
    /// longest input-to-output path in edges, plus one; 1 when no input reaches an output.
    pub fn depth(&self) -> usize {
        let dist = self.longest_paths_from(|v| v < INPUTS);
        (0..self.outputs)
            .filter_map(|c| dist[self.output_id(c)])
            .max()
            .unwrap_or(0)
            + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Activation::*;

    fn edge(from: u32, to: u32) -> Edge {
        Edge {
            from,
            to,
            gene: 0.5,
        }
    }

    #[test]
    fn weights_span_minus_ten_to_ten() {
        let w = |gene| {
            Edge {
                from: 0,
                to: 4,
                gene,
            }
            .weight()
        };
        assert_eq!((w(0.0), w(0.5), w(1.0)), (-10.0, 0.0, 10.0));
        assert_eq!(w(Edge::gene_for_weight(0.3125)), 0.3125);
    }

    #[test]
    fn from_parts_rejects_broken_graphs() {
        let acts = vec![Linear; 6];
        let cases = [
            (vec![edge(0, 9)], "beyond"),
            (vec![edge(4, 1)], "enters input"),
            (vec![edge(4, 5)], "leaves output"),
            (vec![edge(5, 5)], "cycle"),
            (vec![edge(0, 5), edge(5, 4)], ""),
        ];
        for (edges, what) in cases {
            let r = Genome::from_parts(1, acts.clone(), edges.clone());
            if what.is_empty() {
                assert!(r.is_ok(), "{edges:?}");
            } else {
                let e = r.unwrap_err();
                assert!(e.message().contains(what), "{edges:?}: {e}");
            }
        }
        let cyclic = vec![edge(5, 6), edge(6, 5), edge(6, 4)];
        assert!(
            Genome::from_parts(1, vec![Linear; 7], cyclic)
                .unwrap_err()
                .message()
                .contains("cycle")
        );
        let bad_gene = vec![Edge {
            from: 0,
            to: 4,
            gene: 1.5,
        }];
        assert!(Genome::from_parts(1, acts.clone(), bad_gene).is_err());
        assert!(Genome::from_parts(2, vec![Linear; 6], vec![]).is_err());
        assert!(Genome::from_parts(3, vec![Linear; 6], vec![]).is_err());
    }

    #[test]
    fn kinds_follow_id_ranges() {
        let g = Genome::from_parts(3, vec![Sine; 9], vec![]).unwrap();
        let kinds: Vec<_> = (0..9).map(|i| g.kind(i)).collect();
        use NodeKind::*;
        assert_eq!(
            kinds,
            [
                Input, Input, Input, Input, Output, Output, Output, Hidden, Hidden
            ]
        );
        assert_eq!(g.hidden_count(), 2);
    }

    #[test]
    fn depth_is_longest_input_to_output_path_plus_one() {
        // x -> h1 -> h2 -> out and bias -> out: longest path 3.
        let g = Genome::from_parts(
            1,
            vec![Linear; 7],
            vec![edge(0, 5), edge(5, 6), edge(6, 4), edge(3, 4)],
        )
        .unwrap();
        assert_eq!(g.depth(), 4);
        // A hidden chain not fed by any input does not count.
        let g = Genome::from_parts(1, vec![Linear; 7], vec![edge(5, 6), edge(6, 4), edge(0, 4)])
            .unwrap();
        assert_eq!(g.depth(), 2);
        // No input reaches the output.
        let g = Genome::from_parts(1, vec![Linear; 5], vec![]).unwrap();
        assert_eq!(g.depth(), 1);
    }

    #[test]
    fn ancestors_include_the_node_itself() {
        let g = Genome::from_parts(1, vec![Linear; 7], vec![edge(0, 5), edge(5, 6), edge(1, 4)])
            .unwrap();
        let a = g.ancestors(6);
        assert_eq!(a, [true, false, false, false, false, true, true]);
    }
}
