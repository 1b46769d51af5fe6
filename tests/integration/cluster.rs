//! Worker nodes over ractor_cluster (issue 16), as several processes on loopback: a daemon
//! with `--cluster-listen`, `pareidolia worker` processes joining it. A run with a remote
//! evaluator ends with the archive of a local run; a worker with the wrong cookie, aimed at
//! a port that is no cluster node, or with another model or plugin is refused with a clear
//! error and a non-zero exit, and the daemon logs and goes on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::daemon_process::Daemon;
use crate::util::*;

/// The run both sides make: the default experiment, short, on tract, one local mutator and
/// one local inference worker.
fn experiment(command: Pareidolia, config: &Path, out: &Path) -> Pareidolia {
    command
        .config(config)
        .out(out)
        .generations(8)
        .seed(7)
        .mutators(1)
        .workers(1)
        .backend("tract")
}

/// The daemon's cluster address, once it has logged it.
fn cluster_address(daemon: &mut Daemon) -> String {
    let log = daemon.wait_for("cluster://", Duration::from_secs(60));
    let start = log.find("cluster://").unwrap() + "cluster://".len();
    log[start..]
        .split(|c: char| c.is_whitespace() || c == '"')
        .next()
        .unwrap()
        .to_owned()
}

/// A cookie file holding `secret`.
fn cookie(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// `pareidolia worker --join ADDR` with more arguments.
fn worker(address: &str) -> Pareidolia {
    Pareidolia::with_args(["worker", "--join", address])
}

/// The archive does not depend on whether a batch was scored here or on a worker node:
/// a fixed-seed run whose daemon shares its batches with one remote evaluator ends with the
/// same champions, gallery bytes and history as a local run.
#[test]
fn a_remote_evaluator_leaves_the_archive_of_a_local_run() {
    let dir = temp_dir("cluster-same");
    let config = daemon_config(&dir, 8, 4);
    let local = dir.join("local");
    success(experiment(Pareidolia::run().quiet(), &config, &local).output());

    let remote = dir.join("remote");
    let secret = cookie(&dir, "cookie", "a shared secret");
    let mut daemon = experiment(Pareidolia::daemon(), &config, &remote)
        .args(["--cluster-listen", "127.0.0.1:0", "--wait-workers", "1"])
        .arg("--cookie-file")
        .arg(&secret)
        .start(&dir.join("daemon.log"));
    let address = cluster_address(&mut daemon);
    let node = worker(&address)
        .arg("--cookie-file")
        .arg(&secret)
        .args(["--role", "evaluator", "--backend", "tract"])
        .start(&dir.join("worker.log"));
    let (status, log) = daemon.wait(Duration::from_secs(300));
    assert!(status.success(), "daemon failed ({status}):\n{log}");
    assert!(log.contains("worker node joined the run"), "{log}");
    assert!(log.contains("evaluators are in; the run starts"), "{log}");
    // The worker leaves on its own once the daemon's connection closes.
    let (status, worker_log) = node.wait(Duration::from_secs(60));
    assert!(status.success(), "worker failed ({status}):\n{worker_log}");
    assert!(
        worker_log.contains("joined the run as evaluator 1"),
        "{worker_log}"
    );
    assert!(
        worker_log.contains("the daemon closed the connection"),
        "{worker_log}"
    );
    // It scored its share: the route sends every other batch to evaluator 1.
    let scored = worker_log
        .lines()
        .find(|l| l.contains("evaluator stopped"))
        .and_then(|l| l.split("children=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no count of scored children:\n{worker_log}"));
    assert!(
        scored >= 200,
        "the worker scored {scored} children:\n{worker_log}"
    );

    let (a, b) = (run_result(&local), run_result(&remote));
    assert_eq!(a.0["classes"], b.0["classes"]);
    assert_eq!(a.0["evaluations"], b.0["evaluations"]);
    assert_eq!(a.1, b.1, "the galleries differ");
    assert_eq!(history_without_time(&local), history_without_time(&remote));
}

/// Bad joins, each refused with a clear error and a non-zero exit while the daemon waits
/// for a worker and logs them: the wrong cookie, no cookie, the daemon's HTTP port instead
/// of its cluster port, a port nobody listens on, another model, another fitness plugin.
/// The daemon then stops cleanly. And no cookie beyond loopback is refused before setup.
#[test]
fn bad_joins_are_refused_on_both_sides() {
    let dir = temp_dir("cluster-bad");
    let e = clean_failure(
        Pareidolia::daemon()
            .out(&dir.join("public"))
            .args(["--cluster-listen", "0.0.0.0:0"])
            .output(),
        &["without a cookie", "--cookie-file"],
    );
    assert!(!dir.join("public").exists(), "{e}");

    let config = daemon_config(&dir, 3, 1);
    let secret = cookie(&dir, "cookie", "the right one");
    let wrong = cookie(&dir, "wrong", "not it");
    let mut daemon = experiment(Pareidolia::daemon(), &config, &dir.join("run"))
        .args(["--cluster-listen", "127.0.0.1:0", "--wait-workers", "1"])
        .arg("--cookie-file")
        .arg(&secret)
        .start(&dir.join("daemon.log"));
    let address = cluster_address(&mut daemon);
    let http = daemon.url();

    clean_failure(
        worker(&address).arg("--cookie-file").arg(&wrong).output(),
        &["refused this worker's cookie", "wrong"],
    );
    daemon.wait_for("it did not authenticate", Duration::from_secs(10));
    clean_failure(
        worker(&address).output(),
        &["refused this worker's cookie", "no --cookie-file"],
    );

    let http_port = http.trim_start_matches("http://");
    clean_failure(
        worker(http_port).arg("--cookie-file").arg(&secret).output(),
        &["not a pareidolia daemon's cluster port"],
    );
    // A port that was free a moment ago, and nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    clean_failure(
        worker(&closed).arg("--cookie-file").arg(&secret).output(),
        &["cannot connect to", &closed, "--cluster-listen"],
    );

    let other_model = dir.join("other-model");
    std::fs::create_dir_all(&other_model).unwrap();
    let manifest = root().join("models/lenet-mnist-seed2/manifest.toml");
    let other = config_edit(&other_model, |t| {
        t.set("model.manifest", path_value(&manifest));
    });
    clean_failure(
        worker(&address)
            .arg("--cookie-file")
            .arg(&secret)
            .arg("--config")
            .arg(&other)
            .output(),
        &["the daemon at", "refused this worker", "sha256"],
    );
    daemon.wait_for("refused a worker node", Duration::from_secs(10));

    let other_fitness = dir.join("other-fitness");
    std::fs::create_dir_all(&other_fitness).unwrap();
    let other = config_edit(&other_fitness, |t| {
        t.set("fitness.plugin", "margin");
    });
    clean_failure(
        worker(&address)
            .arg("--cookie-file")
            .arg(&secret)
            .arg("--config")
            .arg(&other)
            .output(),
        &["refused this worker", "fitness plugin", "margin"],
    );

    // Nothing joined, so the run still waits; it stops cleanly on SIGTERM.
    assert!(!daemon.log().contains("worker node joined"));
    daemon.signal("TERM");
    let (status, log) = daemon.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{log}");
}
