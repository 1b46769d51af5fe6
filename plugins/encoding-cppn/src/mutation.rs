//! Random genomes and the mutation operators of the released feed-forward genome
//! (`gen_dnn_ff.hpp`, `DnnFF::random` and `DnnFF::mutate`).
//!
//! A child is mutated once, in this order: every edge's gene, every node's activation, then
//! at most one each of add connection, delete connection, add node and delete node, each
//! after its own coin flip. The coin flips are drawn whether or not the operator can apply
//! (no edge to delete, no hidden node), as in the released code, so the random stream of the
//! later operators does not depend on the genome's shape.
//!
//! Uniform choices of nodes are made over ids in increasing order and of edges over the edge
//! list; the released code draws from `std::set`s of vertex pointers, whose order we cannot
//! reproduce and which only matters for reproducing its exact random stream.

use pareidolia_plugin::prelude::*;

use crate::activation::Activation;
use crate::genome::{Edge, Genome, INPUTS, NodeKind};
use crate::params::CppnParams;

/// The initial network: inputs fully connected to the outputs, no hidden node, random genes
/// and activations (`init = ff`).
pub fn random_genome(outputs: usize, set: &[Activation], rng: &mut Rng) -> Genome {
    let activations = (0..INPUTS + outputs).map(|_| pick(set, rng)).collect();
    let mut edges = Vec::with_capacity(INPUTS * outputs);
    for from in 0..INPUTS {
        for out in 0..outputs {
            edges.push(Edge {
                from: from as u32,
                to: (INPUTS + out) as u32,
                gene: rng.random::<f32>(),
            });
        }
    }
    Genome::from_parts_unchecked(outputs, activations, edges)
}

/// Mutates a child with the rates of `params`.
pub fn mutate(genome: &mut Genome, params: &CppnParams, set: &[Activation], rng: &mut Rng) {
    mutate_weights(genome, params.weight_mutation_rate, params.eta_m, rng);
    mutate_activations(genome, params.activation_mutation_rate, set, rng);
    if rng.random::<f64>() < params.add_connection_rate {
        add_connection(genome, rng);
    }
    if rng.random::<f64>() < params.delete_connection_rate {
        delete_connection(genome, rng);
    }
    if rng.random::<f64>() < params.add_node_rate {
        add_node(genome, set, rng);
    }
    if rng.random::<f64>() < params.delete_node_rate {
        delete_node(genome, rng);
    }
}

fn pick(set: &[Activation], rng: &mut Rng) -> Activation {
    set[rng.random_range(0..set.len())]
}

/// Deb's polynomial mutation as sferes2 codes it, without bound-distance scaling:
/// `g += delta`, clamped to [0, 1].
fn polynomial(gene: f32, eta: f64, rng: &mut Rng) -> f32 {
    let exponent = 1.0 / (eta + 1.0);
    let r: f64 = rng.random();
    let delta = if r < 0.5 {
        (2.0 * r).powf(exponent) - 1.0
    } else {
        1.0 - (2.0 * (1.0 - r)).powf(exponent)
    };
    (f64::from(gene) + delta).clamp(0.0, 1.0) as f32
}

/// Each edge's gene gets polynomial mutation with probability `rate`.
pub fn mutate_weights(genome: &mut Genome, rate: f64, eta: f64, rng: &mut Rng) {
    for e in genome.edges_mut() {
        if rng.random::<f64>() < rate {
            e.gene = polynomial(e.gene, eta, rng);
        }
    }
}

/// Each node, inputs and outputs included, re-draws its activation with probability `rate`
/// (the draw may return the same function). An input's activation is never applied, but the
/// released code re-draws it too and it is kept in the genome.
pub fn mutate_activations(genome: &mut Genome, rate: f64, set: &[Activation], rng: &mut Rng) {
    for a in genome.activations_mut() {
        if rng.random::<f64>() < rate {
            *a = pick(set, rng);
        }
    }
}

/// Adds an edge from a random non-output node to a random node that is neither an input,
/// the source, nor one of its ancestors, with a random gene. That keeps the network acyclic;
/// an output is never an ancestor, so there is always a target. Parallel edges are allowed.
pub fn add_connection(genome: &mut Genome, rng: &mut Rng) {
    let sources: Vec<usize> = (0..genome.node_count())
        .filter(|&v| genome.kind(v) != NodeKind::Output)
        .collect();
    let source = sources[rng.random_range(0..sources.len())];
    let ancestors = genome.ancestors(source);
    let targets: Vec<usize> = (INPUTS..genome.node_count())
        .filter(|&v| !ancestors[v])
        .collect();
    let target = targets[rng.random_range(0..targets.len())];
    let gene = rng.random::<f32>();
    genome.edges_mut().push(Edge {
        from: source as u32,
        to: target as u32,
        gene,
    });
}

/// Removes one random edge, if there is one.
pub fn delete_connection(genome: &mut Genome, rng: &mut Rng) {
    let n = genome.edges().len();
    if n > 0 {
        // `remove`, not `swap_remove`: the other edges keep their summation order.
        genome.edges_mut().remove(rng.random_range(0..n));
    }
}

/// Splits a random edge u -> v: removes it and adds a node n with a random activation and
/// the edges u -> n and n -> v, both carrying the original gene (the released code's
/// `_add_neuron_on_conn`, not NEAT's 1 and w).
pub fn add_node(genome: &mut Genome, set: &[Activation], rng: &mut Rng) {
    let n = genome.edges().len();
    if n == 0 {
        return;
    }
    let old = genome.edges_mut().remove(rng.random_range(0..n));
    let node = genome.node_count() as u32;
    let activation = pick(set, rng);
    genome.activations_mut().push(activation);
    genome.edges_mut().extend([
        Edge {
            from: old.from,
            to: node,
            gene: old.gene,
        },
        Edge {
            from: node,
            to: old.to,
            gene: old.gene,
        },
    ]);
}

/// Removes a random hidden node and its edges, if there is a hidden node; later ids shift
/// down by one.
pub fn delete_node(genome: &mut Genome, rng: &mut Rng) {
    let hidden = genome.hidden_count();
    if hidden == 0 {
        return;
    }
    let first = INPUTS + genome.outputs();
    let victim = (first + rng.random_range(0..hidden)) as u32;
    genome.activations_mut().remove(victim as usize);
    let edges = genome.edges_mut();
    edges.retain(|e| e.from != victim && e.to != victim);
    for e in edges.iter_mut() {
        e.from -= u32::from(e.from > victim);
        e.to -= u32::from(e.to > victim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format;

    const ALL: &[Activation] = &Activation::ALL;

    fn only(rate_name: &str, rate: f64) -> CppnParams {
        let mut p = CppnParams {
            weight_mutation_rate: 0.0,
            activation_mutation_rate: 0.0,
            add_connection_rate: 0.0,
            delete_connection_rate: 0.0,
            add_node_rate: 0.0,
            delete_node_rate: 0.0,
            ..CppnParams::default()
        };
        match rate_name {
            "weight" => p.weight_mutation_rate = rate,
            "activation" => p.activation_mutation_rate = rate,
            "add_connection" => p.add_connection_rate = rate,
            "delete_connection" => p.delete_connection_rate = rate,
            "add_node" => p.add_node_rate = rate,
            "delete_node" => p.delete_node_rate = rate,
            _ => unreachable!(),
        }
        p
    }

    /// A genome with some hidden structure, from `seed`.
    fn grown(outputs: usize, seed: u64, steps: usize) -> Genome {
        let mut rng = Rng::seed_from_u64(seed);
        let mut g = random_genome(outputs, ALL, &mut rng);
        for _ in 0..steps {
            mutate(&mut g, &CppnParams::default(), ALL, &mut rng);
        }
        g
    }

    fn revalidate(g: &Genome) {
        format::decode(&format::encode(g)).expect("operators keep genomes valid");
    }

    #[test]
    fn random_genomes_are_fully_connected_with_no_hidden_nodes() {
        let mut rng = Rng::seed_from_u64(3);
        for outputs in [1, 3] {
            let g = random_genome(outputs, ALL, &mut rng);
            assert_eq!(g.hidden_count(), 0);
            assert_eq!(g.edges().len(), 4 * outputs);
            for from in 0..4 {
                for out in 0..outputs {
                    assert!(
                        g.edges()
                            .iter()
                            .any(|e| e.from == from && e.to == (4 + out) as u32)
                    );
                }
            }
            assert!(g.edges().iter().all(|e| (0.0..1.0).contains(&e.gene)));
            revalidate(&g);
        }
        let linear = random_genome(3, &[Activation::Linear], &mut rng);
        assert!(
            linear
                .activations()
                .iter()
                .all(|&a| a == Activation::Linear)
        );
        // Activations are drawn uniformly from the set.
        let mut counts = [0usize; 4];
        for _ in 0..2000 {
            for a in random_genome(3, ALL, &mut rng).activations() {
                counts[a.code() as usize] += 1;
            }
        }
        assert!(
            counts.iter().all(|&c| (3200..3800).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn weight_mutation_touches_about_rate_of_the_edges() {
        let mut rng = Rng::seed_from_u64(5);
        let (mut changed, mut total, mut step) = (0usize, 0usize, 0.0f64);
        for seed in 0..400 {
            let parent = grown(3, seed, 10);
            let mut child = parent.clone();
            mutate(&mut child, &only("weight", 0.1), ALL, &mut rng);
            assert_eq!(child.edges().len(), parent.edges().len());
            for (a, b) in parent.edges().iter().zip(child.edges()) {
                total += 1;
                if a.gene != b.gene {
                    changed += 1;
                    step += f64::from((a.gene - b.gene).abs());
                }
                assert!((0.0..=1.0).contains(&b.gene));
            }
        }
        let fraction = changed as f64 / total as f64;
        assert!((0.085..0.115).contains(&fraction), "{fraction}");
        // Clamping at the bounds shrinks some steps below the unclamped mean 1/17.
        let mean = step / changed as f64;
        assert!((0.045..0.062).contains(&mean), "mean step {mean}");
    }

    #[test]
    fn activation_mutation_redraws_about_rate_of_the_nodes() {
        let mut rng = Rng::seed_from_u64(6);
        let (mut changed, mut total) = (0usize, 0usize);
        for seed in 0..500 {
            let parent = grown(3, seed, 10);
            let mut child = parent.clone();
            mutate(&mut child, &only("activation", 0.1), ALL, &mut rng);
            for (a, b) in parent.activations().iter().zip(child.activations()) {
                total += 1;
                changed += usize::from(a != b);
            }
        }
        // A redraw keeps the same function a quarter of the time: 0.1 * 3/4.
        let fraction = changed as f64 / total as f64;
        assert!((0.065..0.085).contains(&fraction), "{fraction}");
    }

    /// How often, over many children, the operator selected by `name` fired.
    fn firing_rate(name: &str, rate: f64, fired: impl Fn(&Genome, &Genome) -> bool) -> f64 {
        let mut rng = Rng::seed_from_u64(7);
        let n = 2000;
        let hits = (0..n)
            .filter(|&seed| {
                let parent = grown(1, seed, 8);
                // Delete-node needs a hidden node to act on.
                let parent = if parent.hidden_count() == 0 {
                    let mut p = parent;
                    add_node(&mut p, ALL, &mut rng);
                    p
                } else {
                    parent
                };
                let mut child = parent.clone();
                mutate(&mut child, &only(name, rate), ALL, &mut rng);
                revalidate(&child);
                fired(&parent, &child)
            })
            .count();
        hits as f64 / n as f64
    }

    #[test]
    fn structural_operators_fire_at_their_rates() {
        let edges = |g: &Genome| g.edges().len() as isize;
        let nodes = |g: &Genome| g.node_count() as isize;
        let r = firing_rate("add_connection", 0.5, |p, c| edges(c) == edges(p) + 1);
        assert!((0.46..0.54).contains(&r), "add connection {r}");
        let r = firing_rate("delete_connection", 0.3, |p, c| edges(c) == edges(p) - 1);
        assert!((0.26..0.34).contains(&r), "delete connection {r}");
        let r = firing_rate("add_node", 0.5, |p, c| nodes(c) == nodes(p) + 1);
        assert!((0.46..0.54).contains(&r), "add node {r}");
        let r = firing_rate("delete_node", 0.2, |p, c| nodes(c) == nodes(p) - 1);
        assert!((0.17..0.23).contains(&r), "delete node {r}");
        let r = firing_rate("add_node", 0.0, |p, c| p != c);
        assert_eq!(r, 0.0);
    }

    #[test]
    fn add_connection_never_makes_a_cycle_or_enters_an_input() {
        let mut rng = Rng::seed_from_u64(8);
        for seed in 0..200 {
            let mut g = grown(3, seed, 5);
            for _ in 0..20 {
                add_connection(&mut g, &mut rng);
                let e = *g.edges().last().unwrap();
                assert_ne!(g.kind(e.to as usize), NodeKind::Input);
                assert_ne!(g.kind(e.from as usize), NodeKind::Output);
                assert_ne!(e.from, e.to);
                assert!(g.topological_order().is_some(), "cycle in {g:?}");
            }
            revalidate(&g);
        }
    }

    #[test]
    fn add_connection_reaches_every_legal_target() {
        // x -> h -> out: from h the legal targets are out only; from x, h and out.
        let mut rng = Rng::seed_from_u64(9);
        let base = Genome::from_parts(
            1,
            vec![Activation::Linear; 6],
            vec![
                Edge {
                    from: 0,
                    to: 5,
                    gene: 0.5,
                },
                Edge {
                    from: 5,
                    to: 4,
                    gene: 0.5,
                },
            ],
        )
        .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let mut g = base.clone();
            add_connection(&mut g, &mut rng);
            let e = g.edges()[2];
            seen.insert((e.from, e.to));
        }
        let want: std::collections::BTreeSet<(u32, u32)> = [0, 1, 2, 3]
            .into_iter()
            .flat_map(|s| [(s, 4), (s, 5)])
            .chain([(5, 4)])
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn add_node_keeps_the_gene_on_both_halves() {
        let mut rng = Rng::seed_from_u64(10);
        let parent = Genome::from_parts(
            1,
            vec![Activation::Sine; 5],
            vec![Edge {
                from: 2,
                to: 4,
                gene: 0.8125,
            }],
        )
        .unwrap();
        let mut child = parent.clone();
        add_node(&mut child, ALL, &mut rng);
        assert_eq!(child.hidden_count(), 1);
        assert_eq!(
            child.edges(),
            &[
                Edge {
                    from: 2,
                    to: 5,
                    gene: 0.8125
                },
                Edge {
                    from: 5,
                    to: 4,
                    gene: 0.8125
                }
            ]
        );
        // With no edge there is nothing to split.
        let mut bare = Genome::from_parts(1, vec![Activation::Sine; 5], vec![]).unwrap();
        add_node(&mut bare, ALL, &mut rng);
        assert_eq!(bare.node_count(), 5);
    }

    #[test]
    fn delete_node_removes_its_edges_and_renumbers() {
        let mut rng = Rng::seed_from_u64(11);
        for seed in 0..200 {
            let mut g = grown(3, seed, 30);
            while g.hidden_count() < 2 {
                add_node(&mut g, ALL, &mut rng);
            }
            let before = g.clone();
            delete_node(&mut g, &mut rng);
            assert_eq!(g.node_count(), before.node_count() - 1);
            // Exactly one hidden id vanished: find it from the activations and edges.
            let victim = (7..before.node_count())
                .find(|&v| {
                    let kept = before
                        .edges()
                        .iter()
                        .filter(|e| e.from as usize != v && e.to as usize != v)
                        .map(|e| {
                            let shift = |x: u32| x - u32::from(x as usize > v);
                            (shift(e.from), shift(e.to), e.gene.to_bits())
                        });
                    kept.eq(g.edges().iter().map(|e| (e.from, e.to, e.gene.to_bits())))
                        && before.activations()[..v]
                            .iter()
                            .chain(&before.activations()[v + 1..])
                            .eq(g.activations())
                })
                .expect("the child is the parent minus one hidden node");
            let touching = before
                .edges()
                .iter()
                .filter(|e| e.from as usize == victim || e.to as usize == victim)
                .count();
            assert_eq!(g.edges().len(), before.edges().len() - touching);
            revalidate(&g);
        }
        let mut no_hidden = random_genome(1, ALL, &mut rng);
        let copy = no_hidden.clone();
        delete_node(&mut no_hidden, &mut rng);
        assert_eq!(no_hidden, copy);
    }

    #[test]
    fn long_random_walks_stay_valid() {
        for seed in 0..50 {
            let g = grown(3, seed, 200);
            revalidate(&g);
        }
    }
}
