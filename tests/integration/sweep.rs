//! scripts/sweep.sh (issue 17) on a tiny budget, 2 seeds x 5 generations: its table has the
//! documented columns, and every value in it is what the runs' own summary.json and
//! history.csv say. No figure is hard-coded: the runs decide the values, the test checks that
//! the table reports them faithfully.

use std::path::Path;
use std::process::Command;

use crate::util::*;

/// Reads a CSV file with a header into rows of (column, value) maps. The sweep's files hold
/// numbers and labels only, no quoted commas.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let head = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (head, rows)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-30)
}

#[test]
fn sweep_table_matches_the_runs_summaries() {
    let out = temp_dir("sweep");
    let config = root().join("configs/mnist-direct.toml");
    let output = Command::new("bash")
        .arg(root().join("scripts/sweep.sh"))
        .args([config.to_str().unwrap(), "1-2", "5", out.to_str().unwrap()])
        .env("PAREIDOLIA", binary())
        .env("MILESTONES", "3 5 50")
        .env("NICE", "0")
        .env_remove("RUST_LOG")
        .output()
        .expect("bash runs");
    let markdown = success(output);

    let (head, rows) = read_csv(&out.join("table.csv"));
    let columns = [
        "seed",
        "at_3",
        "median_3",
        "min_3",
        "at_5",
        "median_5",
        "min_5",
        "at_50",
        "median_50",
        "min_50",
        "all_at",
        "final_at",
        "median",
        "min",
        "min_class",
    ];
    assert_eq!(head, columns);
    assert_eq!(
        rows.len(),
        2 + 3,
        "two seeds, then median, min and max rows"
    );
    let col = |name: &str| head.iter().position(|h| h == name).unwrap();
    let num = |row: &[String], name: &str| -> f64 {
        row[col(name)]
            .parse()
            .unwrap_or_else(|e| panic!("{name} = {:?}: {e}", row[col(name)]))
    };

    let mut per_seed: Vec<Vec<(String, f64)>> = Vec::new();
    for (row, seed) in rows.iter().zip([1u64, 2]) {
        assert_eq!(row[col("seed")], seed.to_string());
        let run = out.join(format!("seed-{seed}"));
        let summary = json(&run.join("summary.json"));
        assert_eq!(summary["seed"].as_u64(), Some(seed));
        assert_eq!(summary["generations"].as_u64(), Some(5));
        let cells = summary["stats"]["cells"].as_u64().unwrap() as usize;
        let classes = summary["classes"].as_array().unwrap();
        let conf: Vec<f64> = classes
            .iter()
            .map(|c| c["confidence"].as_f64().unwrap())
            .collect();
        assert_eq!(
            conf.len(),
            cells,
            "every class has a champion after 5 generations"
        );
        let threshold = summary["stats"]["thresholds"][3].as_f64().unwrap();
        assert!(close(threshold, 0.9999), "{threshold}");
        let reached = conf.iter().filter(|&&c| c >= threshold).count();

        // Final columns against summary.json.
        assert_eq!(num(row, "final_at") as usize, reached);
        assert_eq!(
            num(row, "final_at") as u64,
            summary["stats"]["at_least"][3].as_u64().unwrap()
        );
        assert!(close(num(row, "median"), median(conf.clone())));
        assert!(close(
            num(row, "min"),
            summary["stats"]["min"].as_f64().unwrap()
        ));
        let worst = classes
            .iter()
            .min_by(|a, b| {
                a["confidence"]
                    .as_f64()
                    .unwrap()
                    .total_cmp(&b["confidence"].as_f64().unwrap())
            })
            .unwrap();
        assert_eq!(row[col("min_class")], worst["label"].as_str().unwrap());

        // Milestone columns against history.csv; the last generation is summary.json's too.
        let (h_head, history) = read_csv(&run.join("history.csv"));
        let h = |g: usize, name: &str| -> f64 {
            let i = h_head.iter().position(|x| x == name).unwrap();
            history[g][i].parse().unwrap()
        };
        assert_eq!(history.len(), 6, "generation 0 (initial population) to 5");
        assert_eq!(num(row, "at_3"), h(3, "at_least_0.9999"));
        assert!(close(num(row, "median_3"), h(3, "median")));
        assert!(close(num(row, "min_3"), h(3, "min")));
        assert_eq!(num(row, "at_5") as usize, reached);
        assert!(close(num(row, "median_5"), h(5, "median")));
        assert!(close(num(row, "min_5"), num(row, "min")));
        assert!(close(
            num(row, "median_5"),
            summary["stats"]["median"].as_f64().unwrap()
        ));
        // Beyond the budget: empty.
        assert_eq!(row[col("at_50")], "");
        assert_eq!(row[col("median_50")], "");
        assert_eq!(row[col("min_50")], "");
        // First generation with every class at the threshold, empty when none.
        let first = (0..history.len()).find(|&g| h(g, "at_least_0.9999") as usize >= cells);
        match first {
            Some(g) => assert_eq!(num(row, "all_at") as usize, g),
            None => assert_eq!(row[col("all_at")], ""),
        }
        per_seed.push(
            [
                "at_3", "median_3", "min_3", "at_5", "median_5", "min_5", "final_at", "median",
                "min",
            ]
            .iter()
            .map(|k| (k.to_string(), num(row, k)))
            .collect(),
        );
    }

    // Aggregate rows: median, min and max over the seeds.
    for (row, name) in rows[2..].iter().zip(["median", "min", "max"]) {
        assert_eq!(row[col("seed")], name);
        for (i, (key, _)) in per_seed[0].iter().enumerate() {
            let values: Vec<f64> = per_seed.iter().map(|s| s[i].1).collect();
            let want = match name {
                "median" => median(values),
                "min" => values.iter().copied().fold(f64::INFINITY, f64::min),
                _ => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            };
            assert!(close(num(row, key), want), "{name} {key}");
        }
    }

    // The markdown (printed and written) has a header, one line per seed and two aggregates.
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert_eq!(md, markdown);
    let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(table.len(), 2 + 2 + 2, "{md}");
    assert!(table[0].contains("all >= 99.99% at gen"), "{md}");
    assert!(table[4].starts_with("| **median** |"), "{md}");
    assert!(table[5].starts_with("| **range** |"), "{md}");
}
