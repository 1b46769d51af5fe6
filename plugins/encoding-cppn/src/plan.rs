//! What a render computes: the planned nodes, the shape of each node's values, and whether
//! feed-forward order gives the released code's result.
//!
//! **Which nodes.** Only nodes with a path to an output can change the image; the others are
//! left out. The planned nodes are listed in topological order, each with its in-edges in
//! edge-list order (the order both evaluators sum in).
//!
//! **Shapes.** x depends only on the column, y only on the row, bias on nothing, d on both.
//! A node's values vary along the union of what its sources vary along, so a node fed only
//! by x (or by nodes fed only by x) is one value per column, W values instead of W x H; the
//! same for rows, and a node fed by bias alone is a single constant. CPPNs have many such
//! nodes (every split of an edge leaving x, y or bias makes one), and computing them once per
//! column, row or image gives each pixel exactly the value it would get on its own: the
//! same operations on the same operands. Outputs are always planned per pixel, which keeps
//! pixel writing simple and costs at most 3 nodes.
//!
//! **Feed-forward or synchronous.** The released code runs `depth` synchronous steps from
//! all-zero states (`depth` = longest input-to-output path + 1). Topological order gives the
//! same values whenever every output has settled by then. An input is available from the
//! first step, so a node k edges below the inputs settles by step k, and every input path to
//! an output is at most `depth - 1` edges: fine. But a hidden node left without in-edges by
//! deletions (an *orphan*) outputs activation(0) only from step 1 on, so a node k edges below
//! it settles at step k + 1. When some output lies more than `depth - 1` edges below an
//! orphan, the released code reads that output before the orphan's value has arrived, and
//! the plan asks for [`Mode::Synchronous`] stepping instead.

use std::ops::Range;

use crate::activation::Activation;
use crate::genome::{Genome, INPUTS, NodeKind};

/// Along which axes a node's values vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One value for the whole image.
    Constant,
    /// One value per column.
    Columns,
    /// One value per row.
    Rows,
    /// One value per pixel.
    Pixels,
}

impl Shape {
    /// The shape of a node fed by nodes of shapes `self` and `other`.
    fn join(self, other: Shape) -> Shape {
        match (self, other) {
            (a, b) if a == b => a,
            (Shape::Constant, s) | (s, Shape::Constant) => s,
            _ => Shape::Pixels,
        }
    }

    /// The shape of input `i` (x, y, d, bias).
    pub fn of_input(i: usize) -> Shape {
        [Shape::Columns, Shape::Rows, Shape::Pixels, Shape::Constant][i]
    }
}

/// What an in-edge reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Input `i` (0 x, 1 y, 2 d, 3 bias).
    Input(usize),
    /// The planned node at this index of [`Plan::nodes`].
    Node(usize),
}

/// One planned node.
#[derive(Debug, Clone)]
pub struct PlannedNode {
    /// Its activation.
    pub activation: Activation,
    /// Along which axes its values vary (outputs are always [`Shape::Pixels`]).
    pub shape: Shape,
    /// Its in-edges, as a range of [`Plan::edges`].
    pub edges: Range<usize>,
}

/// How a render evaluates the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each planned node once, in topological order.
    FeedForward,
    /// `steps` synchronous steps, because an orphan's transient reaches an output.
    Synchronous {
        /// The genome's depth.
        steps: usize,
    },
}

/// The nodes a render computes and how.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Nodes with a path to an output, in topological order.
    pub nodes: Vec<PlannedNode>,
    /// In-edges of all planned nodes: source and weight.
    pub edges: Vec<(Source, f32)>,
    /// The index in `nodes` of each output channel.
    pub outputs: Vec<usize>,
    /// Feed-forward or synchronous.
    pub mode: Mode,
}

impl Plan {
    /// Plans `genome`.
    pub fn new(genome: &Genome) -> Self {
        let n = genome.node_count();
        let mut in_edges: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, e) in genome.edges().iter().enumerate() {
            in_edges[e.to as usize].push(i);
        }
        let needed = reaching_outputs(genome, &in_edges);
        let order: Vec<usize> = genome
            .topological_order()
            .expect("a valid genome is acyclic")
            .into_iter()
            .filter(|&v| v >= INPUTS && needed[v])
            .collect();
        let mut index = vec![usize::MAX; n];
        for (k, &v) in order.iter().enumerate() {
            index[v] = k;
        }
        // Longest paths, in edges, from any input and from any orphan (None: not reached).
        let mut from_inputs: Vec<Option<usize>> =
            (0..n).map(|v| (v < INPUTS).then_some(0)).collect();
        let mut from_orphans: Vec<Option<usize>> = vec![None; n];
        let mut nodes: Vec<PlannedNode> = Vec::with_capacity(order.len());
        let mut edges = Vec::new();
        for &v in &order {
            let mut shape = Shape::Constant;
            let start = edges.len();
            if in_edges[v].is_empty() {
                from_orphans[v] = Some(0);
            }
            for &i in &in_edges[v] {
                let e = genome.edges()[i];
                let from = e.from as usize;
                let (source, source_shape) = if from < INPUTS {
                    (Source::Input(from), Shape::of_input(from))
                } else {
                    (Source::Node(index[from]), nodes[index[from]].shape)
                };
                shape = shape.join(source_shape);
                edges.push((source, e.weight()));
                from_inputs[v] = longer(from_inputs[v], from_inputs[from]);
                from_orphans[v] = longer(from_orphans[v], from_orphans[from]);
            }
            if genome.kind(v) == NodeKind::Output {
                shape = Shape::Pixels;
            }
            nodes.push(PlannedNode {
                activation: genome.activations()[v],
                shape,
                edges: start..edges.len(),
            });
        }
        let outputs: Vec<usize> = (0..genome.outputs()).map(|c| genome.output_id(c)).collect();
        let depth = outputs
            .iter()
            .filter_map(|&o| from_inputs[o])
            .max()
            .unwrap_or(0)
            + 1;
        debug_assert_eq!(depth, genome.depth());
        let late = outputs
            .iter()
            .any(|&o| from_orphans[o].is_some_and(|len| len > depth - 1));
        Self {
            nodes,
            edges,
            outputs: outputs.iter().map(|&o| index[o]).collect(),
            mode: if late {
                Mode::Synchronous { steps: depth }
            } else {
                Mode::FeedForward
            },
        }
    }
}

/// Marks the nodes with a path to an output (outputs included), walking in-edges back.
fn reaching_outputs(genome: &Genome, in_edges: &[Vec<usize>]) -> Vec<bool> {
    let mut needed = vec![false; genome.node_count()];
    let mut stack: Vec<usize> = (0..genome.outputs()).map(|c| genome.output_id(c)).collect();
    for &v in &stack {
        needed[v] = true;
    }
    while let Some(v) = stack.pop() {
        for &i in &in_edges[v] {
            let from = genome.edges()[i].from as usize;
            if !std::mem::replace(&mut needed[from], true) {
                stack.push(from);
            }
        }
    }
    needed
}

/// The longest path to a node so far, `current`, given one more in-edge from a node whose
/// longest path is `source` (`None`: not reached).
fn longer(current: Option<usize>, source: Option<usize>) -> Option<usize> {
    match (current, source) {
        (Some(c), Some(s)) => Some(c.max(s + 1)),
        (None, Some(s)) => Some(s + 1),
        (current, None) => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation::*;
    use crate::genome::Edge;

    fn edge(from: u32, to: u32) -> Edge {
        Edge {
            from,
            to,
            gene: 0.75,
        }
    }

    #[test]
    fn shapes_follow_the_inputs_a_node_depends_on() {
        // 5: x only; 6: y only; 7: bias only; 8: x and bias; 9: x and y; 10: d.
        let g = Genome::from_parts(
            1,
            vec![Sine; 11],
            vec![
                edge(0, 5),
                edge(1, 6),
                edge(3, 7),
                edge(5, 8),
                edge(7, 8),
                edge(8, 9),
                edge(6, 9),
                edge(2, 10),
                edge(9, 4),
                edge(10, 4),
            ],
        )
        .unwrap();
        let plan = Plan::new(&g);
        let shape_of = |id: usize| {
            let order = g.topological_order().unwrap();
            let k = order
                .iter()
                .filter(|&&v| v >= INPUTS)
                .position(|&v| v == id)
                .unwrap();
            plan.nodes[k].shape
        };
        assert_eq!(shape_of(5), Shape::Columns);
        assert_eq!(shape_of(6), Shape::Rows);
        assert_eq!(shape_of(7), Shape::Constant);
        assert_eq!(shape_of(8), Shape::Columns);
        assert_eq!(shape_of(9), Shape::Pixels);
        assert_eq!(shape_of(10), Shape::Pixels);
        // Outputs are per pixel even when fed by a constant.
        assert_eq!(plan.nodes[plan.outputs[0]].shape, Shape::Pixels);
        assert_eq!(plan.mode, Mode::FeedForward);
    }

    #[test]
    fn dead_ends_are_left_out_and_orphans_counted() {
        // 5 is a dead end fed by x; 6 is an orphan two edges above the output via 7.
        let g = Genome::from_parts(
            1,
            vec![Sine; 8],
            vec![edge(0, 5), edge(6, 7), edge(7, 4), edge(0, 4)],
        )
        .unwrap();
        let plan = Plan::new(&g);
        assert_eq!(plan.nodes.len(), 3);
        assert_eq!(plan.mode, Mode::Synchronous { steps: 2 });
        // With a longer input path the orphan's value arrives in time.
        let g = Genome::from_parts(
            1,
            vec![Sine; 9],
            vec![edge(6, 7), edge(7, 4), edge(0, 5), edge(5, 8), edge(8, 4)],
        )
        .unwrap();
        assert_eq!(Plan::new(&g).mode, Mode::FeedForward);
    }
}
