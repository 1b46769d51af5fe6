//! `describe()`: a genome as JSON for people and tools, with a Graphviz DOT drawing.
//!
//! The JSON has `encoding`, `format_version`, `nodes` (id, kind, label, activation),
//! `edges` (from, to, weight), `depth` and `dot`. Inputs are labelled x, y, d and bias;
//! outputs by the channel they give (`gray`, or the colour space's letters: h s v, h l s,
//! r g b); hidden nodes by their id. An input's activation is listed because the genome
//! carries (and mutates) it, though it is never applied.

use std::fmt::Write as _;

use pareidolia_plugin::color::ColorSpace;
use serde_json::json;

use crate::format::FORMAT_VERSION;
use crate::genome::{Genome, INPUT_LABELS, NodeKind};

/// The label of node `id`.
fn label(genome: &Genome, color_space: ColorSpace, id: usize) -> String {
    match genome.kind(id) {
        NodeKind::Input => INPUT_LABELS[id].to_owned(),
        NodeKind::Output if genome.outputs() == 1 => "gray".to_owned(),
        NodeKind::Output => {
            let letters = match color_space {
                ColorSpace::Hsv => ["h", "s", "v"],
                ColorSpace::HlsOpencv => ["h", "l", "s"],
                ColorSpace::Rgb => ["r", "g", "b"],
            };
            letters[id - genome.output_id(0)].to_owned()
        }
        NodeKind::Hidden => id.to_string(),
    }
}

/// The genome as a DOT digraph: inputs as boxes in one rank, outputs as double circles in
/// another, edges labelled with their weight to two decimals.
pub fn dot(genome: &Genome, color_space: ColorSpace) -> String {
    let mut out = String::from("digraph cppn {\n  rankdir=BT;\n");
    for id in 0..genome.node_count() {
        let name = label(genome, color_space, id);
        let activation = genome.activations()[id];
        // `writeln!` into a String cannot fail.
        let _ = match genome.kind(id) {
            NodeKind::Input => writeln!(out, "  n{id} [label=\"{name}\" shape=box];"),
            NodeKind::Output => writeln!(
                out,
                "  n{id} [label=\"{name}\\n{activation}\" shape=doublecircle];"
            ),
            NodeKind::Hidden => writeln!(out, "  n{id} [label=\"{name}\\n{activation}\"];"),
        };
    }
    let ids = |kind| {
        (0..genome.node_count())
            .filter(|&v| genome.kind(v) == kind)
            .map(|v| format!("n{v};"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(out, "  {{ rank=min; {} }}", ids(NodeKind::Input));
    let _ = writeln!(out, "  {{ rank=max; {} }}", ids(NodeKind::Output));
    for e in genome.edges() {
        let _ = writeln!(
            out,
            "  n{} -> n{} [label=\"{:.2}\"];",
            e.from,
            e.to,
            e.weight()
        );
    }
    out.push_str("}\n");
    out
}

/// The JSON description.
pub fn describe(genome: &Genome, color_space: ColorSpace) -> String {
    let nodes: Vec<_> = (0..genome.node_count())
        .map(|id| {
            json!({
                "id": id,
                "kind": genome.kind(id).name(),
                "label": label(genome, color_space, id),
                "activation": genome.activations()[id].name(),
            })
        })
        .collect();
    let edges: Vec<_> = genome
        .edges()
        .iter()
        .map(|e| json!({"from": e.from, "to": e.to, "weight": e.weight()}))
        .collect();
    json!({
        "encoding": "cppn",
        "format_version": FORMAT_VERSION,
        "nodes": nodes,
        "edges": edges,
        "depth": genome.depth(),
        "dot": dot(genome, color_space),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation::*;
    use crate::genome::Edge;

    fn sample() -> Genome {
        Genome::from_parts(
            3,
            vec![Sine, Sine, Sine, Sine, Linear, Gaussian, Sigmoid, Sine],
            vec![
                Edge {
                    from: 0,
                    to: 7,
                    gene: 0.75,
                },
                Edge {
                    from: 7,
                    to: 5,
                    gene: 0.25,
                },
                Edge {
                    from: 3,
                    to: 4,
                    gene: 0.5,
                },
            ],
        )
        .unwrap()
    }

    #[test]
    fn json_lists_nodes_edges_and_depth() {
        let v: serde_json::Value =
            serde_json::from_str(&describe(&sample(), ColorSpace::Hsv)).unwrap();
        assert_eq!(v["format_version"], 1);
        assert_eq!(v["depth"], 3);
        assert_eq!(v["nodes"].as_array().unwrap().len(), 8);
        assert_eq!(
            v["nodes"][0],
            json!({"id": 0, "kind": "input", "label": "x", "activation": "sine"})
        );
        assert_eq!(v["nodes"][5]["kind"], "output");
        assert_eq!(v["nodes"][5]["label"], "s");
        assert_eq!(v["nodes"][5]["activation"], "gaussian");
        assert_eq!(v["nodes"][7]["kind"], "hidden");
        assert_eq!(v["edges"][0], json!({"from": 0, "to": 7, "weight": 5.0}));
        assert_eq!(v["edges"][1]["weight"], -5.0);
    }

    #[test]
    fn dot_labels_inputs_and_weights() {
        let d = dot(&sample(), ColorSpace::HlsOpencv);
        assert!(d.starts_with("digraph cppn {"), "{d}");
        for want in [
            "n0 [label=\"x\" shape=box];",
            "n1 [label=\"y\" shape=box];",
            "n2 [label=\"d\" shape=box];",
            "n3 [label=\"bias\" shape=box];",
            "n5 [label=\"l\\ngaussian\" shape=doublecircle];",
            "n7 [label=\"7\\nsine\"];",
            "n0 -> n7 [label=\"5.00\"];",
            "n7 -> n5 [label=\"-5.00\"];",
            "n3 -> n4 [label=\"0.00\"];",
        ] {
            assert!(d.contains(want), "missing {want} in\n{d}");
        }
        assert!(d.trim_end().ends_with('}'));
        let gray = Genome::from_parts(1, vec![Sine; 5], vec![]).unwrap();
        assert!(dot(&gray, ColorSpace::Hsv).contains("n4 [label=\"gray\\nsine\""));
    }
}
