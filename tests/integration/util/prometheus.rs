//! A Prometheus toolkit for the monitoring tests: a real Prometheus server scraping a daemon
//! (its config written for it, its HTTP API queried), promtool, PromQL and exposition-format
//! helpers, and readers of `monitoring/`'s dashboard, provisioning files and alert rules.
//!
//! promtool and prometheus come from Debian's `prometheus` package (`.ci/run` installs it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::daemon_process::*;
use crate::util::*;

/// The monitoring folder.
pub fn monitoring() -> PathBuf {
    root().join("monitoring")
}

/// A tool of Debian's `prometheus` package: /usr/bin first, then PATH. Missing is a failure,
/// never a skip.
pub fn prometheus_tool(name: &str) -> PathBuf {
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

/// Runs promtool with `args` in the monitoring folder (where prometheus.yml names its rules).
pub fn promtool(args: &[&str]) -> Output {
    Command::new(prometheus_tool("promtool"))
        .args(args)
        .current_dir(monitoring())
        .output()
        .unwrap()
}

/// Runs promtool with `args`, `input` on its stdin.
pub fn promtool_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(prometheus_tool("promtool"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The dashboard, the provisioning files and the alert rules as text.

/// `monitoring/grafana/dashboards/pareidolia.json`.
pub fn dashboard() -> Value {
    let path = monitoring().join("grafana/dashboards/pareidolia.json");
    serde_json::from_str(&read_text(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, including those nested in (collapsed) rows.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
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
pub fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    panels(dashboard)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The value of the first `key: value` line of a YAML file (provisioning files are flat
/// enough for this; the workspace has no YAML parser).
pub fn yaml_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim_start().trim_start_matches("- ");
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        Some(value.trim().trim_matches('"').trim_matches('\'').to_owned())
    })
}

/// The uid of the provisioned Prometheus datasource.
pub fn provisioned_datasource_uid() -> String {
    let path = monitoring().join("grafana/provisioning/datasources/prometheus.yml");
    yaml_value(&read_text(&path), "uid").unwrap_or_else(|| panic!("no uid in {}", path.display()))
}

/// The names of the alerts in alerts.yml.
pub fn alert_names() -> BTreeSet<String> {
    read_text(&monitoring().join("alerts.yml"))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

/// Families a daemon has only with `--cluster-listen` (`pareidolia_cluster_nodes`) or only
/// while worker nodes are in its run (the per-node series). The monitoring tests' daemon runs
/// alone, so for these it checks that queries run, not that they select series; `cluster.rs`
/// checks that a daemon with a worker joined exports them.
pub const CLUSTER_METRICS: [&str; 4] = [
    "pareidolia_cluster_nodes",
    "pareidolia_node_up",
    "pareidolia_node_silence_seconds",
    "pareidolia_node_work",
];

/// Whether `expr` names one of [`CLUSTER_METRICS`].
pub fn names_cluster_metric(expr: &str) -> bool {
    metric_names(expr)
        .iter()
        .any(|name| CLUSTER_METRICS.contains(&name.as_str()))
}

/// Tokens that name a metric: `pareidolia_*` and `process_*` identifiers.
pub fn metric_names(text: &str) -> BTreeSet<String> {
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
pub fn with_bool(expr: &str) -> String {
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

/// Percent-encodes everything but RFC 3986's unreserved characters (for a query string).
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The daemon's /metrics.

/// The value of an unlabelled sample in Prometheus text format.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Metric families of a /metrics page by `# TYPE` line: name -> type.
pub fn metric_types(metrics: &str) -> BTreeMap<String, String> {
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
pub fn is_exported(name: &str, types: &BTreeMap<String, String>) -> bool {
    types.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .and_then(|family| types.get(family))
                .is_some_and(|t| t == "histogram" || t == "summary")
        })
}

/// Polls the daemon's /metrics every 200 ms until `done` holds; returns the page. Fails, with
/// the last page and the log, if the daemon exits first or `timeout` passes.
pub fn wait_for_metrics(
    d: &mut Daemon,
    url: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let metrics = format!("{url}/metrics");
    d.poll(what, timeout, Duration::from_millis(200), |_| {
        match get(&metrics) {
            (200, body) if done(&body) => Ok(body),
            (code, body) => Err(format!("/metrics ({code}):\n{body}")),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// A Prometheus server for one test.

/// A Prometheus server for one test, stopped when dropped.
pub struct Prometheus {
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
    pub fn start(dir: &Path, target: &str) -> Prometheus {
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
        read_text(&self.log)
    }

    /// Polls `done` every 200 ms; fails if Prometheus exits or `timeout` passes.
    pub fn wait_until(&mut self, timeout: Duration, what: &str, done: impl Fn(&Self) -> bool) {
        let what = format!("prometheus {what}");
        poll(&what, timeout, Duration::from_millis(200), || {
            if done(self) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "prometheus exited ({status}) before {what}:\n{}",
                    self.log()
                );
            }
            Err(self.log())
        });
    }

    /// An API call: `data` of a successful answer, or the whole answer as the error.
    pub fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let (code, v) = get_json(&format!("{}{path_and_query}", self.url));
        if code == 200 && v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("HTTP {code}: {v}"))
        }
    }

    /// An instant query at the current time: its `data.result`.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        let result = &data["result"];
        match data["resultType"].as_str() {
            // A scalar or string is one value `[time, "value"]`.
            Some("scalar") | Some("string") => Ok(vec![result.clone()]),
            _ => Ok(result.as_array().cloned().unwrap_or_default()),
        }
    }

    /// The alerting and recording rules Prometheus loaded.
    pub fn rules(&self) -> Vec<Value> {
        let data = self.api("/api/v1/rules").unwrap();
        data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}
