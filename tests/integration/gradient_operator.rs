//! Gradient-informed MAP-Elites (`[search.gradient]`, issue 28) through the binary on the
//! shipped LeNet: steered children take gradient steps before they are scored, the run counts
//! the steps and their cost apart from evaluations, stays the same with any number of workers,
//! resumes exactly, gets further than the paper's loop for the same generations, and refuses
//! what it cannot run.

use std::path::{Path, PathBuf};

use crate::util::*;

/// The default experiment (tract) with the gradient operator, `edit` applied after.
fn steered_config(dir: &Path, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
    config_edit(dir, |t| {
        t.add("search.gradient.share", 0.5);
        t.add("search.gradient.steps", 1);
        edit(t);
    })
}

/// The columns of `history.csv` as (header, rows).
fn history(run: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = read_text(&run.join("history.csv"));
    let mut lines = text.lines();
    let header = lines
        .next()
        .expect("a header")
        .split(',')
        .map(str::to_owned)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    (header, rows)
}

fn column(header: &[String], rows: &[Vec<String>], name: &str) -> Vec<f64> {
    let i = header
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    rows.iter().map(|r| r[i].parse().unwrap()).collect()
}

/// Issue 28, items 1 and 4: a share of the children take a gradient step; history.csv and the
/// summary count the steps and the forward-pass equivalents apart from the evaluations; and
/// for the same generations the archive is further along than the paper's loop.
#[test]
fn steered_children_push_lenet_further_and_their_cost_is_counted() {
    let dir = temp_dir("steer-counted");
    let generations = 30;
    let plain_cfg = default_config(&subdir(&dir, "plain-cfg"));
    let steered_cfg = steered_config(&subdir(&dir, "steered-cfg"), |_| {});
    let plain = dir.join("plain");
    let steered = dir.join("steered");
    for (cfg, out) in [(&plain_cfg, &plain), (&steered_cfg, &steered)] {
        success(
            Pareidolia::run()
                .config(cfg)
                .generations(generations)
                .out(out)
                .quiet()
                .output(),
        );
    }
    let (plain_header, plain_rows) = history(&plain);
    assert!(
        !plain_header.iter().any(|c| c == "gradient_steps"),
        "the paper's loop writes the history it always wrote: {plain_header:?}"
    );
    let (header, rows) = history(&steered);
    assert_eq!(rows.len(), generations as usize + 1);
    let evaluations = column(&header, &rows, "evaluations");
    let steps = column(&header, &rows, "gradient_steps");
    let cost = column(&header, &rows, "forward_equivalents");
    assert_eq!(steps[0], 0.0, "the initial population is not steered");
    for g in 1..rows.len() {
        assert_eq!(cost[g], evaluations[g] + 3.0 * steps[g], "generation {g}");
        // About half of each generation's 200 children take their one step.
        let these = steps[g] - steps[g - 1];
        assert!(
            (60.0..=140.0).contains(&these),
            "generation {g}: {these} steps"
        );
    }
    let summary = json(&steered.join("summary.json"));
    assert_eq!(
        summary["stage_times"]["gradient_steps"].as_f64(),
        steps.last().copied()
    );
    assert!(summary["stage_times"]["gradient_s"].as_f64().unwrap() > 0.0);
    assert!(
        json(&plain.join("summary.json"))["stage_times"]
            .get("gradient_steps")
            .is_none()
    );
    // Same generations: the steered archive is ahead on every statistic the history keeps.
    for stat in ["median", "min", "mean"] {
        let a = *column(&plain_header, &plain_rows, stat).last().unwrap();
        let b = *column(&header, &rows, stat).last().unwrap();
        assert!(b > a, "{stat}: steered {b} <= plain {a}");
    }
}

/// Issue 28, item 1: deterministic for a seed with any number of workers, and a run stopped
/// part-way resumes to the uninterrupted run's history, summary and gallery.
#[test]
fn a_steered_run_is_the_same_with_any_workers_and_resumes_exactly() {
    let dir = temp_dir("steer-exact");
    let cfg = steered_config(&dir, |t| {
        t.set("search.gradient.share", 0.3);
        t.set("search.gradient.steps", 2);
        t.add("search.gradient.target", "uniform");
    });
    let run = |name: &str, workers: u32, generations: u64| {
        let out = dir.join(name);
        success(
            Pareidolia::run()
                .config(&cfg)
                .generations(generations)
                .workers(workers)
                .mutators(2)
                .out(&out)
                .quiet()
                .output(),
        );
        out
    };
    let one = run("one", 1, 12);
    let two = run("two", 2, 12);
    assert_eq!(run_result(&one), run_result(&two));
    assert_eq!(history_without_time(&one), history_without_time(&two));
    let part = run("part", 2, 5);
    // `resume` serves HTTP; any free port, not the default one (another daemon may hold it).
    success(
        Pareidolia::resume(&part)
            .generations(12)
            .listen("127.0.0.1:0")
            .output(),
    );
    assert_eq!(run_result(&part), run_result(&one));
    assert_eq!(history_without_time(&part), history_without_time(&one));
}

/// What the operator cannot run is refused before the run starts, with the key and a way out.
#[test]
fn the_gradient_operator_refuses_what_it_cannot_run() {
    let dir = temp_dir("steer-refused");
    type Edit = Box<dyn FnOnce(&mut toml::Table)>;
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "share",
            Box::new(|t: &mut toml::Table| {
                t.set("search.gradient.share", 1.5);
            }),
            vec!["search.gradient.share", "must be in (0, 1]"],
        ),
        (
            "steps",
            Box::new(|t: &mut toml::Table| {
                t.set("search.gradient.steps", 0);
            }),
            vec!["search.gradient.steps", "1 to 100"],
        ),
        (
            "target",
            Box::new(|t: &mut toml::Table| {
                t.add("search.gradient.target", "sideways");
            }),
            vec!["sideways", "parent", "uniform"],
        ),
        (
            "ascent",
            Box::new(|t: &mut toml::Table| {
                t.add("search.kind", "gradient-ascent");
            }),
            vec!["[search.gradient]", "gradient ascent", "map-elites"],
        ),
        (
            "models",
            Box::new(|t: &mut toml::Table| {
                let model = t.take("model");
                let mut other = model.clone();
                other.as_table_mut().unwrap().insert(
                    "manifest".into(),
                    root()
                        .join("models/mnist-resnet-bn/manifest.toml")
                        .to_string_lossy()
                        .into_owned()
                        .into(),
                );
                t.add("models", toml::Value::Array(vec![model, other]));
                t.set("fitness.plugin", "ensemble");
            }),
            vec!["search.gradient", "one [model]"],
        ),
    ];
    for (name, edit, needles) in cases {
        let sub = subdir(&dir, name);
        let cfg = steered_config(&sub, edit);
        let out = sub.join("run");
        clean_failure(Pareidolia::run().config(&cfg).out(&out).output(), &needles);
        assert!(
            !out.exists(),
            "{name}: a refused start leaves no run folder"
        );
    }
}
