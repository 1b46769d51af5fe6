//! `monitoring/`: the Prometheus config, the alert rules and their unit tests (promtool), the
//! Grafana dashboard and its provisioning (static checks), and all of them against a live
//! daemon scraped by a real Prometheus: every dashboard query and every alert expression must
//! select series, every rule must evaluate cleanly and the daemon's target must be up.
//!
//! promtool and prometheus come from Debian's `prometheus` package (`.ci/run` installs it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon_process::*;
use crate::util::*;

/// The monitoring folder.
fn monitoring() -> PathBuf {
    root().join("monitoring")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A tool of Debian's `prometheus` package: /usr/bin first, then PATH. Missing is a failure,
/// never a skip.
fn prometheus_tool(name: &str) -> PathBuf {
    let usr_bin = Path::new("/usr/bin").join(name);
    if usr_bin.is_file() {
        return usr_bin;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} is missing: the monitoring tests need Debian's `prometheus` package \
                 (`apt-get install prometheus`, which `.ci/run` does when it is missing)"
            )
        })
}

// ---------------------------------------------------------------------------------------------
// The dashboard, the provisioning files and the alert rules as text.

fn dashboard() -> Value {
    let path = monitoring().join("grafana/dashboards/pareidolia.json");
    serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, including those nested in (collapsed) rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The PromQL of every dashboard target, as written (with `$__rate_interval`).
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    panels(dashboard)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The value of the first `key: value` line of a YAML file (provisioning files are flat
/// enough for this; the workspace has no YAML parser).
fn yaml_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim_start().trim_start_matches("- ");
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        Some(value.trim().trim_matches('"').trim_matches('\'').to_owned())
    })
}

fn provisioned_datasource_uid() -> String {
    let path = monitoring().join("grafana/provisioning/datasources/prometheus.yml");
    yaml_value(&read(&path), "uid").unwrap_or_else(|| panic!("no uid in {}", path.display()))
}

/// The names of the alerts in alerts.yml.
fn alert_names() -> BTreeSet<String> {
    read(&monitoring().join("alerts.yml"))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

/// Tokens that name a metric: `pareidolia_*` and `process_*` identifiers.
fn metric_names(text: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(is_ident) {
        let token_len = rest[i..]
            .find(|c: char| !is_ident(c))
            .unwrap_or(rest.len() - i);
        let token = &rest[i..i + token_len];
        if token.starts_with("pareidolia_") || token.starts_with("process_") {
            names.insert(token.to_owned());
        }
        rest = &rest[i + token_len..];
    }
    names
}

// ---------------------------------------------------------------------------------------------
// PromQL helpers.

/// Rewrites every comparison outside `{}`, `[]` and quotes into its `bool` form
/// (`a > b` -> `a > bool b`), so that the expression returns its series whether or not the
/// comparison holds.
fn with_bool(expr: &str) -> String {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::new();
    let (mut braces, mut brackets, mut quote) = (0usize, 0usize, None::<char>);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' && i + 1 < chars.len() {
                out.push(chars[i + 1]);
                i += 1;
            } else if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '[' => brackets += 1,
            ']' => brackets = brackets.saturating_sub(1),
            _ => {}
        }
        let next = chars.get(i + 1).copied();
        let op_len = if braces > 0 || brackets > 0 {
            0
        } else {
            match (c, next) {
                ('=', Some('=')) | ('!', Some('=')) | ('>', Some('=')) | ('<', Some('=')) => 2,
                ('>', _) | ('<', _) => 1,
                _ => 0,
            }
        };
        if op_len == 0 {
            out.push(c);
            i += 1;
            continue;
        }
        out.extend(&chars[i..i + op_len]);
        i += op_len;
        let after: String = chars[i..].iter().collect();
        let already = after
            .trim_start()
            .strip_prefix("bool")
            .is_some_and(|r| !r.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'));
        if !already {
            out.push_str(" bool");
            if !after.starts_with(char::is_whitespace) {
                out.push(' ');
            }
        }
    }
    out
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET a URL whose body is JSON.
fn get_json(url: &str) -> (u16, Value) {
    let (code, body) = get(url);
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (code, value)
}

// ---------------------------------------------------------------------------------------------
// The daemon's /metrics.

/// A daemon config: the default experiment with `generations`, one mutator, a checkpoint every
/// 10 generations and HTTP on a free port.
fn daemon_config(dir: &Path, generations: u64) -> PathBuf {
    config_with(dir, |t| {
        format!(
            "{}\n[checkpoint]\nevery_generations = 10\nevery_seconds = 0\nkeep = 3\n\n[http]\nlisten = \"127.0.0.1:0\"\n",
            t.replace("generations = 200", &format!("generations = {generations}"))
                .replace("mutators = 0", "mutators = 1")
        )
    })
}

/// The value of an unlabelled sample in Prometheus text format.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Metric families of a /metrics page by `# TYPE` line: name -> type.
fn metric_types(metrics: &str) -> BTreeMap<String, String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// Whether a name used in a query is exported: a family, or a histogram's or summary's
/// `_bucket`, `_sum` or `_count` series.
fn is_exported(name: &str, types: &BTreeMap<String, String>) -> bool {
    types.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .and_then(|family| types.get(family))
                .is_some_and(|t| t == "histogram" || t == "summary")
        })
}

/// Polls the daemon's /metrics until `done` holds; fails if the daemon exits first.
fn wait_for_metrics(
    d: &mut Daemon,
    url: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let (code, body) = get(&format!("{url}/metrics"));
        if code == 200 && done(&body) {
            return body;
        }
        if let Some(status) = d.child.try_wait().unwrap() {
            panic!("daemon exited ({status}) before {what}:\n{}", d.log());
        }
        assert!(
            start.elapsed() < timeout,
            "not {what} within {timeout:?}; last /metrics ({code}):\n{body}\n--- log\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------
// A Prometheus server for one test.

struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

/// A test that fails midway must not leave Prometheus running.
impl Drop for Prometheus {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Prometheus {
    /// Starts /usr/bin/prometheus on a free local port, scraping `target` (host:port) every
    /// second and evaluating monitoring/alerts.yml every second.
    fn start(dir: &Path, target: &str) -> Prometheus {
        let binary = Path::new("/usr/bin/prometheus");
        assert!(
            binary.is_file(),
            "/usr/bin/prometheus is missing: the monitoring tests need Debian's `prometheus` \
             package (`apt-get install prometheus`, which `.ci/run` does when it is missing)"
        );
        let rules = monitoring().join("alerts.yml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules:?}\n\
                 scrape_configs:\n  - job_name: pareidolia\n    static_configs:\n      - targets: [{target:?}]\n"
            ),
        )
        .unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let log = dir.join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        p.wait_until(Duration::from_secs(60), "ready", |p| {
            get(&format!("{}/-/ready", p.url)).0 == 200
        });
        p
    }

    fn log(&self) -> String {
        read(&self.log)
    }

    /// Polls `done` every 200 ms; fails if Prometheus exits or `timeout` passes.
    fn wait_until(&mut self, timeout: Duration, what: &str, done: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while !done(self) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "prometheus exited ({status}) before {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "prometheus: not {what} within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// An API call: `data` of a successful answer, or the whole answer as the error.
    fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let (code, v) = get_json(&format!("{}{path_and_query}", self.url));
        if code == 200 && v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("HTTP {code}: {v}"))
        }
    }

    /// An instant query at the current time: its `data.result`.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        let result = &data["result"];
        match data["resultType"].as_str() {
            // A scalar or string is one value `[time, "value"]`.
            Some("scalar") | Some("string") => Ok(vec![result.clone()]),
            _ => Ok(result.as_array().cloned().unwrap_or_default()),
        }
    }

    /// The alerting and recording rules Prometheus loaded.
    fn rules(&self) -> Vec<Value> {
        let data = self.api("/api/v1/rules").unwrap();
        data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// promtool accepts prometheus.yml (with the rule file it names) and alerts.yml, and the
/// alerts' unit tests (a firing and a quiet series per alert) pass.
#[test]
fn promtool_accepts_the_config_and_rules_and_the_rule_unit_tests_pass() {
    let promtool = prometheus_tool("promtool");
    for args in [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(monitoring())
            .output()
            .unwrap();
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
    let tests = read(&monitoring().join("alerts.test.yml"));
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
    let datasource = read(&monitoring().join("grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(
        yaml_value(&datasource, "type").as_deref(),
        Some("prometheus")
    );
    assert_eq!(
        yaml_value(&datasource, "url").as_deref(),
        Some("http://localhost:9090")
    );
    let provider = read(&monitoring().join("grafana/provisioning/dashboards/pareidolia.yml"));
    assert_eq!(yaml_value(&provider, "type").as_deref(), Some("file"));
    let folder = yaml_value(&provider, "path").expect("provider path");
    let readme = read(&monitoring().join("README.md"));
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
/// and the alert rules name (less `_bucket`, `_sum`, `_count`) is one it exports.
#[test]
fn the_dashboard_and_alerts_use_only_metrics_the_daemon_exports() {
    let dir = temp_dir("monitoring-names");
    let cfg = daemon_config(&dir, 100_000);
    let out = dir.join("run");
    let mut d = Daemon::start(
        &[
            "daemon",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &dir.join("log"),
        &[],
    );
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
    let mut lint = Command::new(prometheus_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
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
        ("alerts.yml", read(&monitoring().join("alerts.yml"))),
    ] {
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{source} names no metric");
        for name in names {
            if !is_exported(&name, &types) {
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
/// series.
#[test]
fn prometheus_evaluates_every_dashboard_query_and_alert_against_a_live_daemon() {
    let dir = temp_dir("monitoring-live");
    let cfg = daemon_config(&dir, 500);
    let out = dir.join("run");
    let mut d = Daemon::start(
        &[
            "daemon",
            "--keep-serving",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &dir.join("daemon.log"),
        &[],
    );
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
