//! `monitoring/`: the Prometheus config, the alert rules and their unit tests (promtool), the
//! Grafana dashboard and its provisioning (static checks), and all of them against a live
//! daemon scraped by a real Prometheus: every dashboard query and every alert expression must
//! select series, every rule must evaluate cleanly and the daemon's target must be up.
//!
//! promtool and prometheus come from Debian's `prometheus` package (`.ci/run` installs it);
//! the toolkit that drives them, and reads the monitoring files, is `util/prometheus.rs`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon_process::*;
use crate::util::prometheus::*;
use crate::util::*;

/// promtool accepts prometheus.yml (with the rule file it names) and alerts.yml, and the
/// alerts' unit tests (a firing and a quiet series per alert) pass.
#[test]
fn promtool_accepts_the_config_and_rules_and_the_rule_unit_tests_pass() {
    for args in [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = promtool(&args);
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "promtool {} failed ({}):\n{stdout}\n{stderr}",
            args.join(" "),
            out.status
        );
    }
    // Every alert of the brief is there (the unit tests cover each one).
    let names = alert_names();
    let tests = read_text(&monitoring().join("alerts.test.yml"));
    for alert in [
        "PareidoliaDown",
        "PareidoliaNoEvaluations",
        "PareidoliaCheckpointStale",
        "PareidoliaPluginErrors",
        "PareidoliaConvergenceStalled",
    ] {
        assert!(names.contains(alert), "alerts.yml lacks {alert}: {names:?}");
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "alerts.test.yml does not test {alert}"
        );
    }
}

/// The dashboard is Grafana JSON whose every panel and target queries the provisioned
/// datasource with a non-empty expression, rate windows are `$__rate_interval`, and the
/// provisioning files agree with it and with the README.
#[test]
fn the_dashboard_is_grafana_json_on_the_provisioned_datasource() {
    let dash = dashboard();
    let uid = provisioned_datasource_uid();
    assert_eq!(uid, "pareidolia-prometheus");
    assert_eq!(dash["uid"], "pareidolia");
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(
        dash["templating"]["list"]
            .as_array()
            .is_some_and(|l| l.is_empty()),
        "the dashboard has no template variables"
    );

    let all = panels(&dash);
    assert!(all.len() >= 10, "only {} panels", all.len());
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    for panel in &all {
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        assert!(!title.is_empty(), "panel without a title: {panel}");
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        let g = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        });
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {g}");
        for (other, [ox, oy, ow, oh]) in &boxes {
            let overlap = x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h;
            assert!(!overlap, "panels {title:?} and {other:?} overlap");
        }
        boxes.push((title.clone(), [x, y, w, h]));
        if panel["type"] == "row" {
            assert!(panel["targets"].as_array().is_none_or(|t| t.is_empty()));
            continue;
        }
        assert_eq!(panel["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(panel["datasource"]["uid"], uid.as_str(), "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{title}: a target without expr: {t}"
            );
            if !t["datasource"].is_null() {
                assert_eq!(t["datasource"]["uid"], uid.as_str(), "{title}: {t}");
            }
            assert!(
                refs.insert(t["refId"].to_string()),
                "{title}: duplicate refId"
            );
        }
    }

    // Rate windows are `$__rate_interval`; no other variables.
    for expr in dashboard_exprs(&dash) {
        let mut rest = expr.as_str();
        while let Some(i) = rest.find('[') {
            let close = rest[i..].find(']').expect("unclosed [") + i;
            assert_eq!(&rest[i..=close], "[$__rate_interval]", "in {expr}");
            rest = &rest[close + 1..];
        }
        for (i, _) in expr.match_indices('$') {
            assert!(
                expr[i..].starts_with("$__rate_interval"),
                "a template variable in {expr}"
            );
        }
    }

    // What the dashboard must show.
    let used = metric_names(&dashboard_exprs(&dash).join("\n"));
    for metric in [
        "pareidolia_champion_confidence",
        "pareidolia_champion_confidence_median",
        "pareidolia_champion_confidence_min",
        "pareidolia_classes_at_or_above_confidence",
        "pareidolia_evaluations_total",
        "pareidolia_gradient_steps_total",
        "pareidolia_forward_equivalents_total",
        "pareidolia_stage_duration_seconds_bucket",
        "pareidolia_batch_size_bucket",
        "pareidolia_queue_depth",
        "pareidolia_plugin_errors_total",
        "pareidolia_offspring_lost_total",
        "pareidolia_last_checkpoint_timestamp_seconds",
        "pareidolia_backend_info",
        "pareidolia_model_info",
        "pareidolia_plugin_info",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(
            used.contains(metric),
            "the dashboard does not show {metric}"
        );
    }
    let exprs = dashboard_exprs(&dash).join("\n");
    assert!(exprs.contains("rate(pareidolia_evaluations_total[$__rate_interval])"));
    assert!(exprs.contains("time() - pareidolia_last_checkpoint_timestamp_seconds"));
    assert!(exprs.contains("histogram_quantile(0.95, sum by (le, stage)"));

    // The provisioning files: the datasource's URL, the dashboard provider's folder, and the
    // README's copy steps that name it.
    let datasource =
        read_text(&monitoring().join("grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(
        yaml_value(&datasource, "type").as_deref(),
        Some("prometheus")
    );
    assert_eq!(
        yaml_value(&datasource, "url").as_deref(),
        Some("http://localhost:9090")
    );
    let provider = read_text(&monitoring().join("grafana/provisioning/dashboards/pareidolia.yml"));
    assert_eq!(yaml_value(&provider, "type").as_deref(), Some("file"));
    let folder = yaml_value(&provider, "path").expect("provider path");
    let readme = read_text(&monitoring().join("README.md"));
    assert!(
        readme.contains(&folder),
        "README does not say to copy the dashboard to {folder}"
    );
    for file in [
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/pareidolia.yml",
        "grafana/dashboards/pareidolia.json",
    ] {
        assert!(readme.contains(file), "README does not explain {file}");
    }
}

/// A running daemon's /metrics passes `promtool check metrics`, and every metric the dashboard
/// and the alert rules name (less `_bucket`, `_sum`, `_count`) is one it exports; the worker
/// nodes' metrics ([`CLUSTER_METRICS`]) are checked with a worker joined, in `cluster.rs`.
#[test]
fn the_dashboard_and_alerts_use_only_metrics_the_daemon_exports() {
    let dir = temp_dir("monitoring-names");
    let cfg = daemon_config(&dir, 100_000, 10);
    let out = dir.join("run");
    let mut d = Pareidolia::daemon()
        .config(&cfg)
        .out(&out)
        .start(&dir.join("log"));
    let url = d.url();
    // A few generations, so that every stage has been timed and every batch counted.
    let metrics = wait_for_metrics(
        &mut d,
        &url,
        Duration::from_secs(60),
        "at generation 3",
        |m| sample(m, "pareidolia_generation").is_some_and(|g| g >= 3.0),
    );
    d.signal("TERM");
    let (status, log) = d.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{log}");

    // Issue 5, item 2: promtool's linter finds nothing wrong in what the daemon exports.
    let lint = promtool_with_stdin(&["check", "metrics"], &metrics);
    assert!(
        lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        lint.status,
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let types = metric_types(&metrics);
    let mut missing = Vec::new();
    for (source, text) in [
        ("dashboard", dashboard_exprs(&dashboard()).join("\n")),
        ("alerts.yml", read_text(&monitoring().join("alerts.yml"))),
    ] {
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{source} names no metric");
        for name in names {
            if !is_exported(&name, &types) && !CLUSTER_METRICS.contains(&name.as_str()) {
                missing.push(format!("{source}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not exported by the daemon:\n  {}\n--- /metrics\n{metrics}",
        missing.join("\n  ")
    );
}

/// A real Prometheus scrapes a daemon through a short run (kept serving after it ends) with
/// alerts.yml loaded: the target is up, every rule evaluates with health "ok", and every
/// dashboard query and every alert expression (comparisons rewritten with `bool`) returns
/// series, but those of worker nodes ([`CLUSTER_METRICS`]: this daemon has none), which
/// must run without an error.
#[test]
fn prometheus_evaluates_every_dashboard_query_and_alert_against_a_live_daemon() {
    let dir = temp_dir("monitoring-live");
    let cfg = daemon_config(&dir, 500, 10);
    let out = dir.join("run");
    let mut d = Pareidolia::daemon()
        .keep_serving()
        .config(&cfg)
        .out(&out)
        .start(&dir.join("daemon.log"));
    let url = d.url();
    let target = url.strip_prefix("http://").unwrap().trim_end_matches('/');
    let mut prometheus = Prometheus::start(&dir, target);

    // The run ends (the daemon keeps serving) ...
    let started = Instant::now();
    wait_for_metrics(
        &mut d,
        &url,
        Duration::from_secs(240),
        "finished its run",
        |m| {
            matches!(
                (sample(m, "pareidolia_generation"), sample(m, "pareidolia_generations_planned")),
                (Some(g), Some(p)) if g >= p
            )
        },
    );
    eprintln!("run finished after {:?}", started.elapsed());
    // ... and Prometheus holds at least 15 s of its samples, has the target up and every rule
    // evaluated.
    prometheus.wait_until(Duration::from_secs(60), "15 s of samples", |p| {
        p.query("count_over_time(pareidolia_generation[1m])")
            .ok()
            .and_then(|r| r.first().cloned())
            .and_then(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()))
            .is_some_and(|n| n >= 16.0)
    });
    prometheus.wait_until(Duration::from_secs(30), "every rule evaluated", |p| {
        let rules = p.rules();
        !rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown")
    });
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "--keep-serving: the daemon exited:\n{}",
        d.log()
    );

    let targets = prometheus.api("/api/v1/targets").unwrap();
    let ours: Vec<&Value> = targets["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["labels"]["job"] == "pareidolia")
        .collect();
    assert_eq!(ours.len(), 1, "targets: {targets}");
    assert_eq!(ours[0]["health"], "up", "target: {}", ours[0]);

    let mut failures = Vec::new();
    let rules = prometheus.rules();
    let loaded: BTreeSet<String> = rules
        .iter()
        .filter(|r| r["type"] == "alerting")
        .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(loaded, alert_names(), "the alerts Prometheus loaded");
    for rule in &rules {
        if rule["health"] != "ok" {
            failures.push(format!(
                "rule {}: health {} ({})",
                rule["name"], rule["health"], rule["lastError"]
            ));
        }
    }

    let mut queries: Vec<(String, String)> = dashboard_exprs(&dashboard())
        .into_iter()
        .map(|e| ("dashboard".to_owned(), e.replace("$__rate_interval", "15s")))
        .collect();
    for rule in &rules {
        let expr = rule["query"].as_str().expect("rule query");
        queries.push((format!("alert {}", rule["name"]), with_bool(expr)));
    }
    for (source, expr) in &queries {
        match prometheus.query(expr) {
            Ok(result) if !result.is_empty() => {}
            Ok(_) if names_cluster_metric(expr) => {}
            Ok(_) => failures.push(format!("{source}: no series from `{expr}`")),
            Err(e) => failures.push(format!("{source}: `{expr}` failed: {e}")),
        }
    }

    let final_metrics = get(&format!("{url}/metrics")).1;
    d.signal("TERM");
    let (status, log) = d.wait(Duration::from_secs(30));
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n  {}\n--- daemon /metrics at the end\n{final_metrics}",
        failures.len(),
        queries.len() + rules.len(),
        failures.join("\n  "),
    );
    assert!(status.success(), "SIGTERM must exit 0: {status}\n{log}");
    drop(prometheus);
}

/// The `bool` rewrite the live test relies on.
#[test]
fn monitoring_comparisons_are_rewritten_with_bool() {
    assert_eq!(with_bool("up{job=\"x\"} == 0"), "up{job=\"x\"} == bool 0");
    assert_eq!(
        with_bool("a < b and on(instance, job) increase(c[5m]) == 0"),
        "a < bool b and on(instance, job) increase(c[5m]) == bool 0"
    );
    assert_eq!(with_bool("a>=b"), "a>= bool b");
    assert_eq!(with_bool("a > bool b"), "a > bool b");
    assert_eq!(
        with_bool("x{a!=\"1\",b=~\"<>\"} != 1"),
        "x{a!=\"1\",b=~\"<>\"} != bool 1"
    );
    assert_eq!(
        with_bool("a / on() group_left() b > 0.01"),
        "a / on() group_left() b > bool 0.01"
    );
    assert_eq!(
        metric_names("rate(pareidolia_a_total[1m]) / process_b{x=\"pareidolia\"} + xprocess_c"),
        ["pareidolia_a_total", "process_b"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    assert_eq!(
        url_encode("a{b=\"c\"} [1m]+"),
        "a%7Bb%3D%22c%22%7D%20%5B1m%5D%2B"
    );
}
