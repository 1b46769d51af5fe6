//! Stop conditions (issue 15, item 4): `--until` and `[stop] until` end a run, a daemon or a
//! resume at the first generation whose archive meets them, `--max-seconds` is a wall-clock
//! budget, `summary.json` and the checkpoint record what ended the run and when, and bad
//! conditions are refused with the grammar.

use std::path::Path;
use std::time::Duration;

use pareidolia_core::checkpoint::CheckpointStore;

use crate::util::*;

/// `history.csv` as rows of named fields.
fn history_rows(run: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = read_text(&run.join("history.csv"));
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(str::to_owned))
                .collect()
        })
        .collect()
}

fn field(row: &std::collections::HashMap<String, String>, name: &str) -> f64 {
    row[name].parse().unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The run ends after the first generation at which one of the conditions holds, not a
/// generation later, and says which one and when.
#[test]
fn until_ends_a_run_at_the_first_generation_that_meets_it() {
    let dir = temp_dir("stop-until");
    let out = dir.join("run");
    let stdout = success(
        Pareidolia::run()
            .quiet()
            .generations(100_000)
            .mutators(1)
            .out(&out)
            .args(["--until", "min>=0.9999", "--until", "classes>=0.9:50%"])
            .output(),
    );
    let summary = json(&out.join("summary.json"));
    let stop = &summary["stop"];
    assert_eq!(
        stop["until"],
        serde_json::json!(["min>=0.9999", "classes>=0.9:50%"])
    );
    assert!(stop["max_seconds"].is_null(), "{stop}");
    let reached = &stop["reached"];
    assert_eq!(reached["condition"], "classes>=0.9:50%", "{stop}");
    let g = reached["generation"].as_u64().unwrap();
    assert_eq!(summary["generations"].as_u64(), Some(g));
    assert!(g > 0 && g < 100_000, "{g}");
    assert!(reached["elapsed_s"].as_f64().unwrap() > 0.0);
    assert!(
        stdout.contains(&format!(
            "stopped after generation {g}: classes>=0.9:50% reached"
        )),
        "{stdout}"
    );
    // history.csv: 5 of the 10 classes at 90% or more at generation g, fewer one before.
    let rows = history_rows(&out);
    assert_eq!(rows.len() as u64, g + 1, "generations 0..=g");
    assert!(field(&rows[g as usize], "at_least_0.9") >= 5.0);
    assert!(field(&rows[g as usize - 1], "at_least_0.9") < 5.0);
    assert!(field(&rows[g as usize], "min") < 0.9999);
    // The summary's classes agree.
    let at_90 = summary["classes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["confidence"].as_f64().unwrap_or(0.0) >= 0.9f32 as f64)
        .count();
    assert!(at_90 >= 5, "{at_90}");
}

/// `--max-seconds` ends the run at the first generation boundary past the budget.
#[test]
fn max_seconds_is_a_wall_clock_budget() {
    let dir = temp_dir("stop-seconds");
    let out = dir.join("run");
    success(
        Pareidolia::run()
            .quiet()
            .generations(10_000_000)
            .mutators(1)
            .out(&out)
            .args(["--max-seconds", "1.5"])
            .output(),
    );
    let summary = json(&out.join("summary.json"));
    let reached = &summary["stop"]["reached"];
    assert_eq!(reached["condition"], "max_seconds=1.5", "{summary}");
    assert_eq!(summary["stop"]["max_seconds"], 1.5);
    assert!(reached["elapsed_s"].as_f64().unwrap() >= 1.5, "{reached}");
    assert!(summary["wall_time_s"].as_f64().unwrap() >= 1.5);
    let g = summary["generations"].as_u64().unwrap();
    assert_eq!(reached["generation"].as_u64(), Some(g));
    assert!(g < 10_000_000);
    assert_eq!(history_rows(&out).len() as u64, g + 1);
}

/// A daemon ends by itself when a condition from its config holds, exits 0 and records it in
/// its final checkpoint; resuming with the condition still in force runs nothing and keeps
/// when it was reached; `--until none` lifts it and the run goes on.
#[test]
fn a_daemon_stops_at_its_condition_and_a_resume_honours_or_lifts_it() {
    let dir = temp_dir("stop-daemon");
    let cfg = config_edit(&dir, |t| {
        t.set("generations", int(100_000))
            .set("mutators", 1)
            .add("checkpoint.every_generations", int(10))
            .add("checkpoint.every_seconds", 0)
            .add("http.listen", "127.0.0.1:0")
            .add("stop.until", toml::Value::Array(vec!["median>=0.9".into()]));
    });
    let out = dir.join("run");
    let wait = Duration::from_secs(120);
    let (status, log) = Pareidolia::daemon()
        .config(&cfg)
        .out(&out)
        .start(&dir.join("1.log"))
        .wait(wait);
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("stop condition reached"), "{log}");
    let summary = json(&out.join("summary.json"));
    let reached = summary["stop"]["reached"].clone();
    assert_eq!(reached["condition"], "median>=0.9", "{summary}");
    let g = reached["generation"].as_u64().unwrap();
    assert_eq!(summary["generations"].as_u64(), Some(g));
    let rows = history_rows(&out);
    assert!(field(&rows[g as usize], "median") >= 0.9f32 as f64);
    assert!(field(&rows[g as usize - 1], "median") < 0.9f32 as f64);
    let (checkpoint, _, _) = CheckpointStore::new(&out, 3).load_newest().unwrap();
    assert_eq!(checkpoint.meta.generation, g);
    let recorded = checkpoint.meta.stop_reached.clone().expect("recorded");
    assert_eq!(
        (recorded.condition.as_str(), recorded.generation),
        ("median>=0.9", g)
    );

    let status = success(pareidolia(&["status", out.to_str().unwrap()]));
    assert!(
        status.contains(&format!(
            "stopped after generation {g}: median>=0.9 reached"
        )),
        "{status}"
    );

    // Resumed as it is: nothing to run, and the record keeps its generation and time.
    let (status, log) = Pareidolia::resume(&out)
        .start(&dir.join("2.log"))
        .wait(wait);
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("meets a stop condition already"), "{log}");
    let again = json(&out.join("summary.json"));
    assert_eq!(again["generations"].as_u64(), Some(g));
    assert_eq!(again["stop"]["reached"], reached);
    assert_eq!(history_rows(&out).len() as u64, g + 1);

    // Lifted: the run goes on to its generation count, and no condition is reported.
    let (status, log) = Pareidolia::resume(&out)
        .generations(g + 3)
        .args(["--until", "none"])
        .start(&dir.join("3.log"))
        .wait(wait);
    assert!(status.success(), "{status}\n{log}");
    let lifted = json(&out.join("summary.json"));
    assert_eq!(lifted["generations"].as_u64(), Some(g + 3));
    assert!(lifted.get("stop").is_none(), "{lifted}");
    assert_eq!(history_rows(&out).len() as u64, g + 4);
}

/// Unknown or malformed conditions, impossible class counts and bad budgets: a clear error
/// that names the problem (and lists the grammar), a non-zero exit, no run.
#[test]
fn bad_stop_conditions_are_refused_with_the_grammar() {
    let dir = temp_dir("stop-bad");
    let grammar = ["min>=C", "median>=C", "classes>=C:N"];
    for (until, problem) in [
        ("mni>=0.9", "unknown statistic `mni`"),
        ("min=0.9", "there is no `>=`"),
        ("min>=1.2", "outside 0 to 1"),
        ("classes>=0.99", "needs a class count"),
    ] {
        let out = dir.join(until.replace(['>', '=', ':', '.'], "_"));
        let err = clean_failure(
            Pareidolia::run()
                .quiet()
                .out(&out)
                .args(["--until", until])
                .output(),
            &[&[problem][..], &grammar[..]].concat(),
        );
        assert!(err.contains(&format!("`{until}`")), "{err}");
        assert!(!out.exists(), "{until}: nothing is written");
    }
    clean_failure(
        Pareidolia::run()
            .quiet()
            .out(&dir.join("eleven"))
            .args(["--until", "classes>=0.9:11"])
            .output(),
        &["`classes>=0.9:11` asks for 11 classes", "has 10"],
    );
    clean_failure(
        Pareidolia::run()
            .quiet()
            .out(&dir.join("combined"))
            .args(["--until", "none", "--until", "min>=0.5"])
            .output(),
        &["--until none", "cannot be combined"],
    );
    clean_failure(
        Pareidolia::run()
            .quiet()
            .out(&dir.join("negative"))
            .arg("--max-seconds=-1")
            .output(),
        &["not a number of seconds >= 0"],
    );
    // In a config file: the file and the key are named.
    let sub = dir.join("config");
    std::fs::create_dir_all(&sub).unwrap();
    let cfg = config_edit(&sub, |t| {
        t.add("stop.until", toml::Value::Array(vec!["median>=2".into()]));
    });
    clean_failure(
        Pareidolia::run()
            .quiet()
            .config(&cfg)
            .out(&sub.join("run"))
            .output(),
        &[
            &cfg.display().to_string(),
            "`median>=2`",
            "outside 0 to 1",
            "min>=C",
        ],
    );
    let cfg = config_edit(&sub, |t| {
        t.add("stop.max_seconds", -3);
    });
    clean_failure(
        Pareidolia::run()
            .quiet()
            .config(&cfg)
            .out(&sub.join("run2"))
            .output(),
        &["`stop.max_seconds` must be a number of seconds >= 0"],
    );
}
