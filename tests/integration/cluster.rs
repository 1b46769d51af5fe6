//! Worker nodes over ractor_cluster (issue 16), as several processes on loopback: a daemon
//! with `--cluster-listen`, `pareidolia worker` processes joining it. A run with a remote
//! evaluator ends with the archive of a local run; a worker with the wrong cookie, aimed at
//! a port that is no cluster node, or with another model or plugin is refused with a clear
//! error and a non-zero exit, and the daemon logs and goes on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::daemon_process::{Daemon, get, get_json, served_generation};
use crate::util::prometheus::{
    CLUSTER_METRICS, dashboard, dashboard_exprs, is_exported, metric_names, metric_types,
    monitoring,
};
use crate::util::*;

/// The run both sides make: the default experiment, short, on tract, one local mutator and
/// one local inference worker.
fn experiment(command: Pareidolia, config: &Path, out: &Path) -> Pareidolia {
    experiment_of(command, config, out, 8)
}

/// [`experiment`] with `generations`.
fn experiment_of(command: Pareidolia, config: &Path, out: &Path, generations: u64) -> Pareidolia {
    experiment_bred_by(command, config, out, generations, 1)
}

/// [`experiment_of`] with `mutators` (0: the inference worker breeds its own batches).
fn experiment_bred_by(
    command: Pareidolia,
    config: &Path,
    out: &Path,
    generations: u64,
    mutators: u32,
) -> Pareidolia {
    command
        .config(config)
        .out(out)
        .generations(generations)
        .seed(7)
        .mutators(mutators)
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

/// Waits until the daemon at `url` has completed generation `n`.
fn wait_generation(daemon: &mut Daemon, url: &str, n: u64) {
    daemon.poll(
        &format!("generation {n}"),
        Duration::from_secs(120),
        Duration::from_millis(20),
        |_| match served_generation(url) {
            Some(g) if g >= n => Ok(()),
            other => Err(format!("at {other:?}")),
        },
    );
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

/// `pareidolia worker` joining the daemon at `address` with the cookie in `secret`, in
/// `role` (with `--backend tract` where it evaluates), logging to `log`.
fn start_worker(address: &str, secret: &Path, role: &str, log: &Path) -> Daemon {
    let mut command = worker(address).arg("--cookie-file").arg(secret);
    command = command.args(["--role", role]);
    if role != "mutator" {
        command = command.args(["--backend", "tract"]);
    }
    command.start(log)
}

/// The remote run ended where the local one did: the same champions and evaluations, the
/// same gallery bytes and the same history.
fn assert_same_run(local: &Path, remote: &Path) {
    let (a, b) = (run_result(local), run_result(remote));
    assert_eq!(a.0["classes"], b.0["classes"]);
    assert_eq!(a.0["evaluations"], b.0["evaluations"]);
    assert_eq!(a.1, b.1, "the galleries differ");
    assert_eq!(history_without_time(local), history_without_time(remote));
}

/// A count a worker logs when it leaves (`worker done jobs=.. bred=.. batches=.. scored=..`).
fn worker_count(log: &str, key: &str) -> u64 {
    log.lines()
        .find(|l| l.contains("worker done"))
        .and_then(|l| l.split(&format!("{key}=")).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {key} count:\n{log}"))
}

/// The archive does not depend on where work was done: a fixed-seed run whose daemon shares
/// its batches with a remote evaluator and its breeding with a remote mutator ends with the
/// same champions, gallery bytes and history as a local run.
#[test]
fn remote_workers_leave_the_archive_of_a_local_run() {
    let dir = temp_dir("cluster-same");
    let config = daemon_config(&dir, 8, 4);
    let local = dir.join("local");
    success(experiment(Pareidolia::run().quiet(), &config, &local).output());

    let remote = dir.join("remote");
    let secret = cookie(&dir, "cookie", "a shared secret");
    let mut daemon = experiment(Pareidolia::daemon(), &config, &remote)
        .args(["--cluster-listen", "127.0.0.1:0", "--wait-workers", "2"])
        .arg("--cookie-file")
        .arg(&secret)
        .start(&dir.join("daemon.log"));
    let address = cluster_address(&mut daemon);
    let evaluator = start_worker(&address, &secret, "evaluator", &dir.join("evaluator.log"));
    let mutator = start_worker(&address, &secret, "mutator", &dir.join("mutator.log"));
    let (status, log) = daemon.wait(Duration::from_secs(300));
    assert!(status.success(), "daemon failed ({status}):\n{log}");
    assert_eq!(
        log.matches("worker node joined the run").count(),
        2,
        "{log}"
    );
    assert!(log.contains("worker nodes are in; the run starts"), "{log}");
    // The workers leave on their own once the daemon's connection closes.
    let (status, evaluator_log) = evaluator.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "evaluator failed ({status}):\n{evaluator_log}"
    );
    assert!(
        evaluator_log.contains("joined the run as evaluator 1")
            && evaluator_log.contains("the daemon closed the connection"),
        "{evaluator_log}"
    );
    // Each did its share: the route sends every other batch to evaluator 1, and the jobs go
    // round-robin over the two mutators a batch at a time.
    let scored = worker_count(&evaluator_log, "scored");
    assert!(
        scored >= 400,
        "the evaluator scored {scored}:\n{evaluator_log}"
    );
    let (status, mutator_log) = mutator.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "mutator failed ({status}):\n{mutator_log}"
    );
    assert!(
        mutator_log.contains("joined the run as a mutator"),
        "{mutator_log}"
    );
    let bred = worker_count(&mutator_log, "bred");
    assert!(bred >= 400, "the mutator bred {bred}:\n{mutator_log}");
    assert_eq!(worker_count(&mutator_log, "scored"), 0);
    assert_same_run(&local, &remote);
}

/// A daemon whose evaluators breed their own batches (no mutators, CPU) sends a remote
/// evaluator the breeding jobs of the batches it scores, over the wire; that worker breeds
/// what it scores, and the archive is still the one a local run bred by a mutator reaches.
#[test]
fn a_remote_evaluator_breeds_its_batches_when_the_daemon_has_no_mutators() {
    let dir = temp_dir("cluster-evaluators-breed");
    let config = daemon_config(&dir, 8, 4);
    let local = dir.join("local");
    success(experiment(Pareidolia::run().quiet(), &config, &local).output());

    let remote = dir.join("remote");
    let secret = cookie(&dir, "cookie", "a shared secret");
    let mut daemon = experiment_bred_by(Pareidolia::daemon(), &config, &remote, 8, 0)
        .args(["--cluster-listen", "127.0.0.1:0", "--wait-workers", "1"])
        .arg("--cookie-file")
        .arg(&secret)
        .start(&dir.join("daemon.log"));
    let address = cluster_address(&mut daemon);
    let evaluator = start_worker(&address, &secret, "evaluator", &dir.join("evaluator.log"));
    let (status, log) = daemon.wait(Duration::from_secs(300));
    assert!(status.success(), "daemon failed ({status}):\n{log}");
    assert!(
        log.contains("mutators=0") && log.contains("breeding=\"on the inference workers\""),
        "{log}"
    );
    let (status, evaluator_log) = evaluator.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "evaluator failed ({status}):\n{evaluator_log}"
    );
    // Every other batch is routed to evaluator 1, which bred each child it scored.
    let (bred, scored) = (
        worker_count(&evaluator_log, "bred"),
        worker_count(&evaluator_log, "scored"),
    );
    assert!(
        scored >= 400,
        "the evaluator scored {scored}:\n{evaluator_log}"
    );
    assert_eq!(bred, scored, "{evaluator_log}");
    assert_same_run(&local, &remote);
}

/// A worker killed with SIGKILL in the middle of a generation loses nothing: its batches and
/// jobs are re-issued to the daemon's own evaluator and mutator, every child is scored once,
/// and a worker that joins afterwards is used again. `/status` and the metrics show both
/// nodes and the re-issue.
#[test]
fn a_killed_worker_has_its_work_reissued_and_a_new_one_is_used() {
    let dir = temp_dir("cluster-loss");
    // Generations of 2,000 children: long enough (about half a second) to kill in one.
    let config = config_edit(&dir, |t| {
        t.set("generations", int(25))
            .set("offspring_per_generation", int(2000))
            .set("mutators", 1)
            .add("checkpoint.every_generations", int(5))
            .add("checkpoint.every_seconds", 0)
            .add("http.listen", "127.0.0.1:0");
    });
    let mut daemon = experiment_of(Pareidolia::daemon(), &config, &dir.join("run"), 25)
        .args(["--cluster-listen", "127.0.0.1:0", "--wait-workers", "1"])
        .start(&dir.join("daemon.log"));
    let address = cluster_address(&mut daemon);
    let url = daemon.url();
    let first = worker(&address)
        .args(["--role", "both", "--backend", "tract"])
        .start(&dir.join("first.log"));
    wait_generation(&mut daemon, &url, 2);
    first.signal("KILL");
    let _ = first.wait(Duration::from_secs(10));
    daemon.wait_for("worker node left the run", Duration::from_secs(30));
    let second = worker(&address)
        .args(["--role", "evaluator", "--backend", "tract"])
        .start(&dir.join("second.log"));
    let nodes = daemon.poll(
        "the second node joined",
        Duration::from_secs(60),
        Duration::from_millis(50),
        |_| {
            let (_, status) = get_json(&format!("{url}/status"));
            let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
            let live = nodes.iter().filter(|n| n["connected"] == true).count();
            if nodes.len() == 2 && live == 1 {
                Ok(nodes)
            } else {
                Err(format!("nodes: {nodes:?}"))
            }
        },
    );
    let gone = nodes.iter().find(|n| n["connected"] == false).unwrap();
    assert_eq!(gone["role"], "both");
    assert_eq!(gone["left"], "disconnected");
    assert!(gone["scored"].as_u64().unwrap() > 0, "{gone}");
    let live = nodes.iter().find(|n| n["connected"] == true).unwrap();
    assert_eq!(
        (live["role"].as_str(), live["slot"].as_u64()),
        (Some("evaluator"), Some(1))
    );
    let (_, metrics) = get(&format!("{url}/metrics"));
    assert!(
        metrics.contains("pareidolia_cluster_nodes{role=\"evaluator\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("pareidolia_node_up{"), "{metrics}");
    // The worker nodes' metrics, which monitoring.rs's daemon (alone) cannot show, are exported
    // now, and they are all the monitoring files name beyond a lone daemon's.
    let types = metric_types(&metrics);
    for name in CLUSTER_METRICS {
        assert!(
            types.contains_key(name),
            "{name} is not exported:\n{metrics}"
        );
    }
    let monitored = format!(
        "{}\n{}",
        dashboard_exprs(&dashboard()).join("\n"),
        read_text(&monitoring().join("alerts.yml"))
    );
    for name in metric_names(&monitored) {
        assert!(
            is_exported(&name, &types),
            "the monitoring files name {name}, not exported with a worker joined:\n{metrics}"
        );
    }

    let (status, log) = daemon.wait(Duration::from_secs(300));
    assert!(status.success(), "daemon failed ({status}):\n{log}");
    assert!(
        log.contains("re-issuing work in flight") && log.contains("node_lost"),
        "{log}"
    );
    // Nothing lost: every child of the 26 generations scored once.
    let summary = json(&dir.join("run/summary.json"));
    assert_eq!(summary["evaluations"], 26 * 2000, "{summary}");
    assert_eq!(summary["lost"], 0, "{summary}");
    let (status, second_log) = second.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{second_log}");
    assert!(worker_count(&second_log, "scored") > 0, "{second_log}");
}

/// The archive owner's loss: a worker whose daemon stops answering (SIGSTOP) leaves after
/// --daemon-timeout with a clear message and a non-zero exit status; one whose daemon is killed
/// leaves at once when the connection closes; the daemon's newest checkpoint is intact and
/// the run resumes from it.
#[test]
fn workers_leave_when_the_daemon_is_gone() {
    let dir = temp_dir("cluster-owner");
    let config = daemon_config(&dir, 100_000, 2);
    let run = dir.join("run");
    let mut daemon = experiment_of(Pareidolia::daemon(), &config, &run, 100_000)
        .args(["--cluster-listen", "127.0.0.1:0", "--wait-workers", "1"])
        .start(&dir.join("daemon.log"));
    let address = cluster_address(&mut daemon);
    let url = daemon.url();
    let quiet = worker(&address)
        .args([
            "--role",
            "evaluator",
            "--backend",
            "tract",
            "--daemon-timeout",
            "3",
        ])
        .start(&dir.join("quiet.log"));
    wait_generation(&mut daemon, &url, 4);
    daemon.signal("STOP");
    let started = std::time::Instant::now();
    let (status, log) = quiet.wait(Duration::from_secs(30));
    daemon.signal("CONT");
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("no answer from the daemon") && log.contains("for 3 s"),
        "{log}"
    );
    assert!(started.elapsed() >= Duration::from_secs(3), "{log}");

    let second = worker(&address)
        .args(["--role", "evaluator", "--backend", "tract"])
        .start(&dir.join("second.log"));
    daemon.wait_for("worker node left the run", Duration::from_secs(30));
    daemon.poll(
        "the second worker joined",
        Duration::from_secs(60),
        Duration::from_millis(20),
        |d| match d.log().matches("worker node joined the run").count() {
            2 => Ok(()),
            n => Err(format!("{n} joined")),
        },
    );
    daemon.signal("KILL");
    let _ = daemon.wait(Duration::from_secs(10));
    let (status, log) = second.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("the daemon closed the connection"), "{log}");
    // The newest checkpoint is whole: status reads it.
    let out = success(Pareidolia::with_args(["status"]).arg(&run).output());
    assert!(out.contains("generation"), "{out}");
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

/// A cluster node of the test's own that joins the daemon like a `pareidolia worker` (the
/// same cookie, the run's identity echoed back) and is taken in as an evaluator, then
/// answers every batch it is given with forged results only: scores of the wrong length,
/// children routed to the other evaluator, children of a generation not started, results
/// from a slot nobody holds. Then it leaves without scoring anything.
mod forger {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use pareidolia_daemon::map_elites::messages::{
        EvaluatorMsg, NodeRole, RegistrarMsg, Results, ScoredChild, WorkerMsg, child_id, names,
    };
    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use ractor_cluster::NodeServer;
    use tokio::sync::mpsc;

    struct Forward<M>(std::marker::PhantomData<fn() -> M>);

    impl<M: ractor::Message> Actor for Forward<M> {
        type Msg = M;
        type State = mpsc::UnboundedSender<M>;
        type Arguments = mpsc::UnboundedSender<M>;
        async fn pre_start(
            &self,
            _: ActorRef<M>,
            tx: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(tx)
        }
        async fn handle(
            &self,
            _: ActorRef<M>,
            msg: M,
            tx: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            let _ = tx.send(msg);
            Ok(())
        }
    }

    use pareidolia_daemon::map_elites::messages::daemon_registrar as registrar;

    async fn answer(rx: &mut mpsc::UnboundedReceiver<WorkerMsg>, msg: RegistrarMsg) -> WorkerMsg {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "no answer to {msg:?}");
            if let Some(r) = registrar() {
                let _ = r.cast(msg.clone());
            }
            if let Ok(Some(answer)) =
                tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
            {
                return answer;
            }
        }
    }

    /// Joins the daemon at `daemon`, forges results for the first `batches` batches it is
    /// given, and leaves. Returns how many forged results it sent.
    pub async fn forge(daemon: SocketAddr, batches: usize) -> usize {
        let node = format!("forger-{}", std::process::id());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = NodeServer::new(
            port,
            pareidolia_daemon::cluster::LOOPBACK_COOKIE.to_owned(),
            node.clone(),
            "127.0.0.1".into(),
            None,
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        );
        let (server, _) = Actor::spawn(None, server, ()).await.unwrap();
        ractor_cluster::client_connect(&server, daemon)
            .await
            .unwrap();
        let (tx, mut answers) = mpsc::unbounded_channel();
        let (me, _) = Actor::spawn(None, Forward::<WorkerMsg>(Default::default()), tx)
            .await
            .unwrap();
        ractor::pg::join(names::worker(&node), vec![me.get_cell()]);
        let hello = RegistrarMsg::Hello {
            node: node.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let WorkerMsg::Run { run, identity, .. } = answer(&mut answers, hello).await else {
            panic!("no run")
        };
        let join = RegistrarMsg::Join {
            node: node.clone(),
            role: NodeRole::Evaluator,
            identity: *identity,
        };
        let slot = loop {
            match answer(&mut answers, join.clone()).await {
                WorkerMsg::Welcome { slot } => break slot.unwrap(),
                WorkerMsg::Refused { reason } => panic!("refused: {reason}"),
                _ => {}
            }
        };
        let (tx, mut children) = mpsc::unbounded_channel();
        let (impostor, _) = Actor::spawn(None, Forward::<EvaluatorMsg>(Default::default()), tx)
            .await
            .unwrap();
        ractor::pg::join(
            names::evaluator(&run, slot as usize),
            vec![impostor.get_cell()],
        );
        ractor::pg::join(names::evaluator_group(&run), vec![impostor.get_cell()]);
        let mut sent = 0;
        let mut seen = 0;
        while seen < batches {
            let Ok(Some(EvaluatorMsg::Children(batch))) =
                tokio::time::timeout(Duration::from_secs(30), children.recv()).await
            else {
                continue;
            };
            seen += 1;
            let Some(Ok(child)) = batch.into_iter().next() else {
                continue;
            };
            let scored = |id: u64, generation: u64, scores: Vec<f32>| ScoredChild {
                id,
                generation,
                genome: child.genome.clone(),
                scores,
                probabilities: Vec::new(),
            };
            let g = child.generation;
            // The default experiment: batches of 20, two evaluators, so the child 20 further
            // on (or back) is in a batch routed to the other one.
            let other = if child.id & 0xFFFF_FFFF >= 20 {
                child.id - 20
            } else {
                child.id + 20
            };
            let forged = [
                (slot, scored(child.id, g, vec![1.0; 3])),
                (slot, scored(other, g, vec![0.1; 10])),
                (slot, scored(child_id(g + 1000, 0), g + 1000, vec![0.1; 10])),
                (slot + 5, scored(child.id, g, vec![0.1; 10])),
            ];
            for (from, child) in forged {
                let r = registrar().expect("the daemon's registrar");
                r.cast(RegistrarMsg::Results(Results {
                    from,
                    scored: vec![child],
                    lost: Vec::new(),
                    times: Default::default(),
                }))
                .unwrap();
                sent += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        impostor.stop(None);
        me.stop(None);
        server.stop(None);
        sent
    }
}

/// A worker that sends results for children it was never given, misrouted ones, malformed
/// ones, or from a slot it does not hold: each is refused, logged and counted, and nothing
/// of it reaches the archive: the run ends as a local run does.
#[test]
fn forged_results_are_refused_and_never_reach_the_archive() {
    let dir = temp_dir("cluster-forged");
    let config = daemon_config(&dir, 6, 3);
    let local = dir.join("local");
    success(experiment(Pareidolia::run().quiet(), &config, &local).output());
    let remote = dir.join("remote");
    let mut daemon = experiment(Pareidolia::daemon(), &config, &remote)
        .args(["--cluster-listen", "127.0.0.1:0", "--wait-workers", "1"])
        .keep_serving()
        .start(&dir.join("daemon.log"));
    let address: std::net::SocketAddr = cluster_address(&mut daemon).parse().unwrap();
    let url = daemon.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sent = runtime.block_on(forger::forge(address, 2));
    assert_eq!(sent, 8);
    let log = daemon.wait_for("still serving", Duration::from_secs(120));
    assert!(log.contains("refused results for children"), "{log}");
    assert!(log.contains("no worker node in the run holds it"), "{log}");
    assert!(log.contains("worker node left the run"), "{log}");
    let (_, metrics) = get(&format!("{url}/metrics"));
    let count = |series: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series}:\n{metrics}"))
    };
    for cause in ["malformed", "misrouted", "unrequested"] {
        let n = count(&format!(
            "pareidolia_results_rejected_total{{cause=\"{cause}\"}}"
        ));
        assert!(n >= 2.0, "{cause}: {n}\n{metrics}");
    }
    assert!(count("pareidolia_cluster_refused_total{cause=\"results\"}") >= 2.0);
    daemon.signal("TERM");
    let (status, log) = daemon.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{log}");
    let (a, b) = (run_result(&local), run_result(&remote));
    assert_eq!(a.0["classes"], b.0["classes"]);
    assert_eq!(a.0["evaluations"], b.0["evaluations"]);
    assert_eq!(a.1, b.1, "the galleries differ");
}

/// Opens `n` TCP connections to `address` from a child process (its own descriptors, so this
/// test process and the tests beside it keep theirs), holds them, and reports how many the
/// server closed within `seconds`: `opened N failed F` and `closed C` lines.
const FLOOD: &str = r#"
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n, seconds = int(sys.argv[2]), float(sys.argv[3])
socks, failed = [], 0
for _ in range(n):
    try:
        socks.append(socket.create_connection((host, int(port)), timeout=5))
    except OSError:
        failed += 1
print("opened", len(socks), "failed", failed, flush=True)
closed, deadline = set(), time.time() + seconds
while time.time() < deadline and len(closed) < len(socks):
    for i, s in enumerate(socks):
        if i in closed:
            continue
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed.add(i)
        except BlockingIOError:
            pass
        except OSError:
            closed.add(i)
    time.sleep(0.2)
print("closed", len(closed), flush=True)
"#;

/// Issue 30 item 12: 1,100 idle TCP connections to the cluster port of a daemon limited to
/// 1,024 open files (systemd's default). Connections beyond the port's 256 places are closed
/// at once and the rest once the handshake deadline (10 s) passes; meanwhile the run goes on
/// writing checkpoints and HTTP answers; the refusals take a few log lines, not millions.
#[test]
fn idle_connections_to_the_cluster_port_are_bounded_closed_and_logged_sparingly() {
    let dir = temp_dir("cluster-flood");
    let config = daemon_config(&dir, 100_000, 5);
    let inner = Pareidolia::daemon()
        .config(&config)
        .out(&dir.join("run"))
        .mutators(1)
        .workers(1)
        .backend("tract")
        .args(["--cluster-listen", "127.0.0.1:0"])
        .command();
    let mut limited = std::process::Command::new("sh");
    limited
        .arg("-c")
        .arg(r#"ulimit -n 1024 && exec "$0" "$@""#)
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_remove("RUST_LOG");
    let mut daemon = Daemon::spawn(limited, &dir.join("daemon.log"));
    let address = cluster_address(&mut daemon);
    let url = daemon.url();
    daemon.wait_for("checkpoint written", Duration::from_secs(60));
    let flood = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 4096; exec python3 -c "$0" "$@""#)
        .arg(FLOOD)
        .args([address.as_str(), "1100", "25"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While the connections are held: HTTP answers and checkpoints keep being written.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(get(&format!("{url}/livez")).0, 200);
    let written = |d: &Daemon| d.log().matches("checkpoint written").count();
    let before = written(&daemon);
    daemon.poll(
        "a checkpoint during the flood",
        Duration::from_secs(30),
        Duration::from_millis(100),
        |d| {
            if written(d) > before {
                Ok(())
            } else {
                Err("no new checkpoint".to_owned())
            }
        },
    );
    let report = flood.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&report.stdout).into_owned();
    let number = |key: &str| -> usize {
        report
            .split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {report:?}"))
    };
    assert!(number("opened") >= 1000, "{report}");
    assert_eq!(number("closed"), number("opened"), "{report}");
    assert_eq!(get(&format!("{url}/livez")).0, 200);
    let log = daemon.log();
    let refusals = log
        .lines()
        .filter(|l| l.contains("refused a cluster connection"))
        .count();
    assert!(
        (1..=12).contains(&refusals),
        "{refusals} refusal lines for 1,100 connections"
    );
    assert!(
        !log.contains("Too many open files"),
        "{}",
        log.lines()
            .filter(|l| l.contains("Too many open files"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
    daemon.signal("TERM");
    let (status, log) = daemon.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{log}");
}
