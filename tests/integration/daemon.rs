//! The long-running daemon: exact resume, SIGTERM, SIGKILL at random moments, the lock, the
//! HTTP endpoints, and bad run folders and checkpoints.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pareidolia_core::checkpoint::CheckpointStore;

use crate::daemon_process::*;
use crate::util::*;

fn sha256_prefix(bytes: &[u8]) -> [u8; 4] {
    let hex = pareidolia_eval::sha256_hex(bytes);
    let b = |i: usize| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    [b(0), b(1), b(2), b(3)]
}

/// The `generation=N` field of a log line.
fn logged_generation(line: &str) -> Option<u64> {
    let rest = line.split("generation=").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Runs a daemon (or resume) command line to its end; it must succeed. Returns its log.
fn run_to_end(command: &Pareidolia, log: &Path) -> String {
    let (status, log) = command.start(log).wait(Duration::from_secs(120));
    assert!(status.success(), "{status}:\n{log}");
    log
}

/// Runs the daemon config `cfg` of `generations` three ways: whole; stopped by
/// `--generations split_at` and resumed to the end (`at_split` looks at its folder in
/// between); and stopped by SIGTERM after its first checkpoint (with `workers` inference
/// workers, if given) and resumed. Both resumed runs must end with exactly the whole run's
/// summary, gallery and history. Returns the whole run's folder.
fn assert_resumes_exactly(
    dir: &Path,
    cfg: &Path,
    generations: u64,
    split_at: u64,
    workers: Option<u32>,
    at_split: impl FnOnce(&Path),
) -> PathBuf {
    let whole = dir.join("whole");
    run_to_end(
        &Pareidolia::daemon().config(cfg).out(&whole),
        &dir.join("whole.log"),
    );

    // Stopped by its generation count, resumed with a larger one.
    let split = dir.join("split");
    run_to_end(
        &Pareidolia::daemon()
            .config(cfg)
            .generations(split_at)
            .out(&split),
        &dir.join("split1.log"),
    );
    at_split(&split);
    let log = run_to_end(
        &Pareidolia::resume(&split).generations(generations),
        &dir.join("split2.log"),
    );
    assert!(log.contains("resuming"), "{log}");
    assert_eq!(run_result(&whole), run_result(&split));
    assert_eq!(history_without_time(&whole), history_without_time(&split));

    // Stopped by SIGTERM mid-run, resumed.
    let term = dir.join("term");
    let mut daemon = Pareidolia::daemon().config(cfg).out(&term);
    if let Some(n) = workers {
        daemon = daemon.workers(n);
    }
    let mut d = daemon.start(&dir.join("term1.log"));
    d.wait_for("checkpoint written", Duration::from_secs(30));
    d.signal("TERM");
    let (status, log) = d.wait(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM must exit 0: {status}\n{log}");
    let summary = json(&term.join("summary.json"));
    let stopped_at = summary["generations"].as_u64().unwrap();
    assert!(stopped_at < generations, "stopped early: {stopped_at}");
    run_to_end(&Pareidolia::resume(&term), &dir.join("term2.log"));
    assert_eq!(run_result(&whole), run_result(&term));
    assert_eq!(history_without_time(&whole), history_without_time(&term));
    whole
}

/// Issue 4, item 3: stopped (by SIGTERM at a random moment, or by reaching an earlier
/// generation count) and resumed, a run reaches exactly the archive of an uninterrupted run.
#[test]
fn a_stopped_and_resumed_run_equals_an_uninterrupted_one() {
    let dir = temp_dir("exact-resume");
    let cfg = daemon_config(&dir, 60, 10);
    let whole = assert_resumes_exactly(&dir, &cfg, 60, 25, None, |_| {});
    assert_eq!(
        history_without_time(&whole).len(),
        1 + 61,
        "a header and generations 0..=60"
    );
}

/// With a lag the checkpoint of generation g holds generations g + 1 to g + 1 + lag, whose
/// parents were drawn from older archives; a run stopped by its generation count or by
/// SIGTERM (here with 2 workers) and resumed still reaches exactly the archive of an
/// uninterrupted run.
#[test]
fn a_lagged_run_resumes_exactly() {
    let dir = temp_dir("exact-resume-lag");
    let cfg = config_edit(&dir, |t| {
        t.set("generations", 60)
            .set("mutators", 1)
            .add("lag", 1)
            .add("checkpoint.every_generations", 5)
            .add("checkpoint.every_seconds", 0)
            .add("checkpoint.keep", 3)
            .add("http.listen", "127.0.0.1:0");
    });
    assert_resumes_exactly(&dir, &cfg, 60, 20, Some(2), |split| {
        let (c, _, _) = CheckpointStore::new(split, 3).load_newest().unwrap();
        assert_eq!(c.meta.generation, 20);
        assert_eq!(
            c.planned.iter().map(|p| p.generation).collect::<Vec<_>>(),
            [21, 22],
            "planned past the end, so that a longer run goes on as one"
        );
    });
}

/// Issue 4, item 5: SIGTERM and SIGINT drain the batches in flight, write a final checkpoint
/// of the generation they stop at, and exit 0 quickly.
#[test]
fn sigterm_and_sigint_drain_checkpoint_and_exit_zero() {
    for signal in ["TERM", "INT"] {
        let dir = temp_dir(&format!("sig{signal}"));
        let cfg = daemon_config(&dir, 100_000, 1000);
        let out = dir.join("run");
        let mut d = Pareidolia::daemon()
            .config(&cfg)
            .out(&out)
            .start(&dir.join("log"));
        let url = d.wait_ready(Duration::from_secs(20));
        // The signal is meant for a run under way (the test used to sleep 300 ms for one): a
        // generation of children scored beyond the initial population, the next one's batches
        // in flight.
        let at_generation_1 = |_: &mut Daemon| match served_generation(&url) {
            Some(g) if g >= 1 => Ok(()),
            g => Err(format!("/status: generation {g:?}")),
        };
        let every = Duration::from_millis(20);
        d.poll(
            "at generation 1",
            Duration::from_secs(30),
            every,
            at_generation_1,
        );
        let sent = Instant::now();
        d.signal(signal);
        let (status, log) = d.wait(Duration::from_secs(30));
        let took = sent.elapsed();
        assert!(status.success(), "SIG{signal}: {status}\n{log}");
        assert!(took < Duration::from_secs(10), "SIG{signal} took {took:?}");
        assert!(log.contains("stop requested"), "{log}");
        let (c, _, _) = CheckpointStore::new(&out, 3).load_newest().unwrap();
        let summary = json(&out.join("summary.json"));
        assert_eq!(
            c.meta.generation,
            summary["generations"].as_u64().unwrap(),
            "final checkpoint is the generation stopped at"
        );
        assert!(
            c.meta.generation > 0 && c.meta.generation % 1000 != 0,
            "a final checkpoint beyond the periodic ones"
        );
    }
}

/// Issue 4, item 4: SIGKILL at random moments, many of them inside checkpoint writes (slowed
/// down by the writer's fault-injection hook to 60 ms, most of each generation's time, so a
/// kill lands inside a write more often than not). Every resume starts from the newest valid
/// checkpoint, never a partial one, loses at most one checkpoint interval, and the run still
/// ends with exactly the archive of an uninterrupted run.
#[test]
fn sigkill_at_random_moments_never_loses_more_than_one_interval() {
    let dir = temp_dir("sigkill");
    let generations = 120;
    let cfg = daemon_config(&dir, generations, 1);
    let whole = dir.join("whole");
    run_to_end(
        &Pareidolia::daemon().config(&cfg).out(&whole),
        &dir.join("whole.log"),
    );

    let run = dir.join("run");
    let store = CheckpointStore::new(&run, 3);
    // A deterministic spread of kill delays (no RNG needed in the test itself).
    let mut delay_ms = 97u64;
    let (mut kills, mut during_writes, mut early_kills) = (0, 0, 0);
    // What a service manager runs on every (re)start: resume if there is a checkpoint.
    let command = Pareidolia::daemon()
        .config(&cfg)
        .out(&run)
        .resume_if_checkpointed();
    let mut expected_resume: Option<u64> = None;
    while kills < 20 {
        let log_path = dir.join(format!("kill{kills}.log"));
        // Every third kill of a resume lands early in it, inside the history's trim (slowed
        // down to 300 ms by its fault-injection hook), which used to truncate history.csv in
        // place and leave it cut short.
        let early = expected_resume.is_some() && kills % 3 == 2;
        let mut d = command
            .clone()
            .env("PAREIDOLIA_FAULT_CHECKPOINT", "slow:60")
            .env(
                "PAREIDOLIA_FAULT_HISTORY",
                if early { "slow:300" } else { "slow:0" },
            )
            .start(&log_path);
        let log = d.wait_for("experiment set up", Duration::from_secs(30));
        let resumed = log.lines().find(|l| l.contains("resuming"));
        match expected_resume {
            // From the newest valid checkpoint at the time of the kill.
            Some(g) => assert_eq!(
                resumed.and_then(logged_generation),
                Some(g),
                "expected to resume at {g}:\n{log}"
            ),
            None => assert!(resumed.is_none(), "nothing to resume from yet:\n{log}"),
        }
        if early {
            let trimming = |_: &mut Daemon| {
                let names = std::fs::read_dir(&run).unwrap().flatten();
                match names
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .any(|n| n.starts_with(".history.csv.tmp-"))
                {
                    true => Ok(()),
                    false => Err("no temporary history file".to_owned()),
                }
            };
            let every = Duration::from_millis(5);
            d.poll(
                "inside the history trim",
                Duration::from_secs(30),
                every,
                trimming,
            );
            d.signal("KILL");
            d.wait(Duration::from_secs(10));
            kills += 1;
            early_kills += 1;
            assert_history_covers(&run, expected_resume.unwrap(), kills);
            continue;
        }
        // The kill is meant to land at a chosen moment of the running evolution (its
        // generations and their checkpoint writes), not in the set-up: wait until the daemon
        // serves a scored generation (at once when resumed, after the initial population
        // otherwise), or has already finished, then wait the chosen delay. This sleep is the
        // point of the test, not a stand-in for a condition.
        let readyz = format!("{}/readyz", d.url());
        let every = Duration::from_millis(10);
        d.poll("ready or finished", Duration::from_secs(30), every, |d| {
            if d.child.try_wait().unwrap().is_some() {
                return Ok(()); // finished: the check below ends the loop
            }
            match get(&readyz) {
                (200, _) => Ok(()),
                (code, body) => Err(format!("/readyz: {code} {body}")),
            }
        });
        delay_ms = (delay_ms * 7919 + 13) % 450 + 50;
        std::thread::sleep(Duration::from_millis(delay_ms));
        if d.child.try_wait().unwrap().is_some() {
            break; // finished before this kill
        }
        d.signal("KILL");
        let (_, log) = d.wait(Duration::from_secs(10));
        kills += 1;
        // (The folder appears with the first checkpoint write; a very early kill precedes it.)
        let partial = std::fs::read_dir(store.dir())
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            })
            .unwrap_or(false);
        during_writes += partial as u32;
        let last_logged = log
            .lines()
            .filter(|l| l.contains("checkpoint written"))
            .filter_map(logged_generation)
            .max();
        expected_resume = store.load_newest().ok().map(|(c, _, _)| c.meta.generation);
        if let Some(g) = expected_resume {
            assert_history_covers(&run, g, kills);
        }
        if let Some(g) = last_logged {
            // Never behind what was reported written; at most the one write whose log line
            // the kill beat.
            let newest = expected_resume.expect("a checkpoint was reported written");
            assert!(
                newest >= g && newest <= g + 1,
                "newest valid {newest}, last logged {g}"
            );
        }
    }
    eprintln!(
        "{kills} kills, {during_writes} inside a checkpoint write, {early_kills} inside a history trim"
    );
    assert!(
        early_kills >= 4,
        "only {early_kills} kills inside a history trim"
    );
    assert!(
        kills >= 15,
        "the run finished too early to be killed often: {kills}"
    );
    assert!(
        during_writes >= 3,
        "only {during_writes} of {kills} kills landed inside a checkpoint write"
    );
    run_to_end(&command, &dir.join("final.log"));
    assert_eq!(
        run_result(&whole),
        run_result(&run),
        "killed {kills} times, {during_writes} inside writes"
    );
    assert_eq!(
        history_without_time(&whole),
        history_without_time(&run),
        "killed {kills} times"
    );
}

/// Issue 30 item 14: a gradient-ascent daemon killed at random moments (many inside
/// checkpoint writes, slowed to 60 ms) keeps `history.csv` whole: every checkpoint's step has
/// its line (the ledger writes a step's line before its checkpoint, as evolution does), and
/// the run resumed after every kill ends with exactly the images and history of an
/// uninterrupted one.
#[test]
fn a_gradient_ascent_killed_at_random_moments_keeps_its_history_whole() {
    let dir = temp_dir("sigkill-ascent");
    let mut table = read_toml(&root().join("configs/ascent/mnist-unregularised.toml"));
    table
        .set("generations", 150)
        .add("checkpoint.every_generations", 1)
        .add("checkpoint.every_seconds", 0)
        .add("checkpoint.keep", 3)
        .add("http.listen", "127.0.0.1:0");
    let cfg = dir.join("ascent.toml");
    write_toml(&cfg, &table);
    let whole = dir.join("whole");
    run_to_end(
        &Pareidolia::daemon().config(&cfg).out(&whole),
        &dir.join("whole.log"),
    );
    let run = dir.join("run");
    let store = CheckpointStore::new(&run, 3);
    let command = Pareidolia::daemon()
        .config(&cfg)
        .out(&run)
        .resume_if_checkpointed();
    let mut delay_ms = 131u64;
    let (mut kills, mut checked) = (0, 0);
    while kills < 12 {
        let mut d = command
            .clone()
            .env("PAREIDOLIA_FAULT_CHECKPOINT", "slow:60")
            .start(&dir.join(format!("kill{kills}.log")));
        d.wait_for("experiment set up", Duration::from_secs(30));
        // The moment of the kill is the point of the test: a spread of delays into the steps.
        delay_ms = (delay_ms * 7919 + 13) % 600 + 100;
        std::thread::sleep(Duration::from_millis(delay_ms));
        if d.child.try_wait().unwrap().is_some() {
            break; // finished before this kill
        }
        d.signal("KILL");
        d.wait(Duration::from_secs(10));
        kills += 1;
        if let Ok((c, _, _)) = store.load_newest() {
            assert_history_covers_from(&run, 1, c.meta.generation, kills);
            checked += 1;
        }
    }
    assert!(
        checked >= 8,
        "only {checked} of {kills} kills left a checkpoint to check"
    );
    run_to_end(&command, &dir.join("final.log"));
    let (mut a, pngs_a) = run_result(&whole);
    let (mut b, pngs_b) = run_result(&run);
    for s in [&mut a, &mut b] {
        s["ascent"]
            .as_object_mut()
            .unwrap()
            .remove("images_steps_per_s");
    }
    assert_eq!(a, b, "killed {kills} times");
    assert_eq!(pngs_a, pngs_b, "killed {kills} times");
    assert_eq!(
        history_without_time(&whole),
        history_without_time(&run),
        "killed {kills} times"
    );
}

/// After a kill: `history.csv` is a header and one whole line per generation from 0, up to
/// at least `generation` (the newest valid checkpoint's, whose line precedes it).
fn assert_history_covers(run: &Path, generation: u64, kills: u32) {
    assert_history_covers_from(run, 0, generation, kills);
}

/// As [`assert_history_covers`], for a history whose first line is of generation `first`
/// (gradient ascent's first line is its first step, 1).
fn assert_history_covers_from(run: &Path, first: u64, generation: u64, kills: u32) {
    let text = read_text(&run.join("history.csv"));
    let mut lines = text.lines();
    assert!(
        lines.next().is_some_and(|h| h.starts_with("generation,")),
        "after kill {kills}: no header:\n{text}"
    );
    let generations: Vec<u64> = lines
        .filter_map(|l| l.split(',').next()?.parse().ok())
        .collect();
    let contiguous = generations
        .iter()
        .enumerate()
        .all(|(i, g)| *g == first + i as u64);
    assert!(
        contiguous && first + generations.len() as u64 > generation,
        "after kill {kills}: history.csv has generations {:?}..{:?} ({} lines), the checkpoint is of generation {generation}",
        generations.first(),
        generations.last(),
        generations.len()
    );
}

#[test]
fn a_second_daemon_on_the_same_folder_is_refused() {
    let dir = temp_dir("lock");
    let cfg = daemon_config(&dir, 100_000, 1000);
    let out = dir.join("run");
    let daemon = Pareidolia::daemon().config(&cfg).out(&out);
    let mut first = daemon.start(&dir.join("a.log"));
    first.wait_for("experiment set up", Duration::from_secs(20));
    let second = daemon.output();
    clean_failure(
        second,
        &[
            "is in use by another pareidolia process",
            &first.child.id().to_string(),
        ],
    );
    let resume = Pareidolia::resume(&out).output();
    clean_failure(resume, &["is in use by another pareidolia process"]);
    // `status` works beside the running daemon and says so.
    first.wait_for("checkpoint written", Duration::from_secs(30));
    let status = success(pareidolia(&["status", out.to_str().unwrap()]));
    assert!(status.contains("daemon running"), "{status}");
    first.signal("TERM");
    assert!(first.wait(Duration::from_secs(30)).0.success());
}

#[test]
fn http_endpoints_answer() {
    let dir = temp_dir("http");
    let cfg = daemon_config(&dir, 100_000, 1000);
    let out = dir.join("run");
    let mut d = Pareidolia::daemon()
        .config(&cfg)
        .out(&out)
        .start(&dir.join("log"));
    let url = d.url();
    assert_eq!(get(&format!("{url}/livez")).0, 200);
    d.wait_ready(Duration::from_secs(20));
    let (code, body) = get(&format!("{url}/status"));
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(status["evaluations"].as_u64().unwrap() > 0);
    assert!(status["evaluations_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(status["classes"].as_array().unwrap().len(), 10);
    assert!(status["classes"][3]["confidence"].as_f64().unwrap() > 0.0);
    assert_eq!(status["backend"], "tract");
    let (code, metrics) = get(&format!("{url}/metrics"));
    assert_eq!(code, 200);
    for name in [
        "pareidolia_evaluations_total",
        "pareidolia_champion_confidence_median",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let text = success(pareidolia(&["status", &url]));
    assert!(text.contains("evaluations"), "{text}");
    // Export while the daemon runs.
    d.wait_for("checkpoint written", Duration::from_secs(30));
    let export = dir.join("export");
    success(pareidolia(&[
        "export",
        out.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]));
    assert!(export.join("gallery/montage.png").is_file() && export.join("summary.json").is_file());
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).0.success());
}

/// A tmpfs mounted for one test, unmounted when dropped (also when the test fails).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, options: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs", at.to_str().unwrap()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs needs root (CI runs as root)");
        Mount(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The disk fills up during a checkpoint write (a 96 KiB tmpfs: room for the config and one
/// checkpoint, not two): the write fails with ENOSPC, the previous checkpoint survives intact,
/// the daemon keeps running and stops cleanly, and the run resumes from the survivor.
#[test]
fn a_full_disk_during_a_checkpoint_keeps_the_previous_one() {
    let dir = temp_dir("enospc");
    let mnt = dir.join("small");
    let _mount = Mount::tmpfs(&mnt, "size=96k");
    let cfg = daemon_config(&dir, 100_000, 5);
    let out = mnt.join("run");
    let mut d = Pareidolia::daemon()
        .config(&cfg)
        .out(&out)
        .start(&dir.join("log"));
    let log = d.wait_for("checkpoint failed", Duration::from_secs(30));
    assert!(log.contains("No space left on device"), "{log}");
    let (c, path, skipped) = CheckpointStore::new(&out, 3).load_newest().unwrap();
    assert!(
        skipped.is_empty(),
        "no partial checkpoint is left to skip: {skipped:?}"
    );
    d.signal("TERM");
    let (status, log) = d.wait(Duration::from_secs(30));
    assert!(log.contains("checkpoint failed"));
    let (again, again_path, _) = CheckpointStore::new(&out, 3).load_newest().unwrap();
    // Whatever the full disk refused at the end (the final checkpoint, the gallery: issue 30
    // item 18), the error says which generation a resume continues from.
    if !status.success() {
        let newest = format!(
            "the newest checkpoint is of generation {}, where a resume continues",
            again.meta.generation
        );
        assert!(log.contains(&newest), "{log}");
    }
    assert_eq!(
        (again.meta.generation, again_path),
        (c.meta.generation, path),
        "the survivor is still the newest valid"
    );
}

#[test]
fn a_run_folder_that_is_not_writable_is_refused() {
    let dir = temp_dir("readonly");
    let mnt = dir.join("ro");
    let _mount = Mount::tmpfs(&mnt, "ro,size=64k");
    let cfg = daemon_config(&dir, 10, 5);
    let out = mnt.join("run");
    clean_failure(
        Pareidolia::daemon().config(&cfg).out(&out).output(),
        &["cannot create run folder", "Read-only file system"],
    );
    clean_failure(
        Pareidolia::run().config(&cfg).out(&out).output(),
        &["Read-only file system"],
    );
}

#[test]
fn damaged_and_newer_checkpoints() {
    let dir = temp_dir("damaged");
    let cfg = daemon_config(&dir, 30, 10);
    let out = dir.join("run");
    run_to_end(
        &Pareidolia::daemon().config(&cfg).out(&out),
        &dir.join("a.log"),
    );
    let store = CheckpointStore::new(&out, 3);
    let files = store.list();
    assert_eq!(files.len(), 3, "{files:?}");
    // Truncate the newest: resume warns and continues from the one before.
    let bytes = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &bytes[..bytes.len() / 2]).unwrap();
    let log = run_to_end(
        &Pareidolia::resume(&out).generations(35),
        &dir.join("b.log"),
    );
    assert!(
        log.contains("skipping a damaged checkpoint") && log.contains("checksum mismatch"),
        "{log}"
    );
    assert!(
        log.contains("generation=20"),
        "resumed from the previous checkpoint:\n{log}"
    );
    // A flipped byte in the (new) newest: same.
    let newest = store.list()[0].clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&newest, &bytes).unwrap();
    let log = run_to_end(
        &Pareidolia::resume(&out).generations(36),
        &dir.join("c.log"),
    );
    assert!(log.contains("skipping a damaged checkpoint"), "{log}");
    // A checkpoint from a newer pareidolia is refused, not skipped.
    let newest = store.list()[0].clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    // A genuine newer file has a valid header check over magic and version.
    let check = sha256_prefix(&bytes[..12]);
    bytes[12..16].copy_from_slice(&check);
    std::fs::write(&newest, &bytes).unwrap();
    let supported = format!(
        "reads up to version {}",
        pareidolia_core::checkpoint::FORMAT_VERSION
    );
    clean_failure(
        Pareidolia::resume(&out).output(),
        &["format version 99", &supported],
    );
    // An existing run is not restarted by accident.
    clean_failure(
        Pareidolia::daemon().config(&cfg).out(&out).output(),
        &["already holds checkpoints", "pareidolia resume"],
    );
    // No checkpoints at all.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    clean_failure(
        Pareidolia::resume(&empty).output(),
        &[
            "is not a pareidolia run folder",
            "neither checkpoints/ nor config.toml",
        ],
    );
}

#[test]
fn resume_refuses_a_changed_model_unless_told() {
    let dir = temp_dir("changed-model");
    let cfg = daemon_config(&dir, 10, 5);
    let out = dir.join("run");
    run_to_end(
        &Pareidolia::daemon().config(&cfg).out(&out),
        &dir.join("a.log"),
    );
    // Point the run's config at a copy of the model whose manifest has another sha256: the
    // simplest stand-in for "the model file was replaced" is editing the checkpoint's record.
    let store = CheckpointStore::new(&out, 3);
    let newest = store.list()[0].clone();
    let (mut c, _, _) = store.load_newest().unwrap();
    c.meta.identity.models[0].sha256 = "f".repeat(64);
    let (_, _, distinct) = pareidolia_core::checkpoint::index_champions(&c.cells);
    std::fs::write(
        &newest,
        pareidolia_core::checkpoint::encode(&c.meta, &distinct),
    )
    .unwrap();
    clean_failure(
        Pareidolia::resume(&out).generations(12).output(),
        &["model file changed", "--allow-model-change"],
    );
    run_to_end(
        &Pareidolia::resume(&out)
            .generations(12)
            .allow_model_change(),
        &dir.join("b.log"),
    );
}

/// A resumed daemon serves the checkpoint's archive from the start (it used to show an empty
/// one until its first new generation was in): here, a finished run resumed only to serve it.
#[test]
fn a_resumed_run_serves_its_checkpoint_at_once() {
    let dir = temp_dir("resume-serves");
    let cfg = daemon_config(&dir, 5, 5);
    let out = dir.join("run");
    run_to_end(
        &Pareidolia::daemon().config(&cfg).out(&out),
        &dir.join("first.log"),
    );
    let (d, url) = Daemon::serving_after_run(
        Pareidolia::resume(&out),
        &dir.join("serve.log"),
        Duration::from_secs(60),
    );
    let (code, body) = get(&format!("{url}/status"));
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["generation"], 5);
    assert_eq!(status["evaluations"], 200 + 5 * 200);
    let summary = json(&out.join("summary.json"));
    let f32_of = |v: &serde_json::Value| v.as_f64().unwrap() as f32;
    assert_eq!(
        f32_of(&status["median_confidence"]),
        f32_of(&summary["stats"]["median"])
    );
    let (_, metrics) = get(&format!("{url}/metrics"));
    assert!(metrics.contains("pareidolia_generation 5\n"), "{metrics}");
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).0.success());
}

/// Issue 11, item 3: a checkpoint written in format 1 (by Pareidolia 0.1.0 before the run
/// identity, `tests/fixtures/checkpoint-v1`: the default MNIST run, seed 1, generation 3)
/// resumes under this build to exactly the archive of an uninterrupted run, and its next
/// checkpoint is written in the current format with the run's identity.
#[test]
fn a_format_1_checkpoint_resumes_exactly() {
    let dir = temp_dir("v1-resume");
    let whole = dir.join("whole");
    // The fixture's config names tract (the default then); the built-in default is on auto.
    success(
        Pareidolia::run()
            .quiet()
            .seed(1)
            .generations(5)
            .backend("tract")
            .out(&whole)
            .output(),
    );
    let resumed = dir.join("resumed");
    std::fs::create_dir_all(resumed.join("checkpoints")).unwrap();
    std::fs::copy(
        root().join("tests/fixtures/checkpoint-v1/ckpt-000000000003.pdck"),
        resumed.join("checkpoints/ckpt-000000000003.pdck"),
    )
    .unwrap();
    let log = run_to_end(
        &Pareidolia::resume(&resumed)
            .generations(5)
            .listen("127.0.0.1:0"),
        &dir.join("resume.log"),
    );
    assert!(log.contains("resuming"), "{log}");
    assert_eq!(run_result(&whole), run_result(&resumed));
    let (c, path, _) = CheckpointStore::new(&resumed, 3).load_newest().unwrap();
    assert!(
        path.ends_with("ckpt-000000000005.pdck"),
        "{}",
        path.display()
    );
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        pareidolia_core::checkpoint::FORMAT_VERSION
    );
    let model = &c.meta.identity.models[0];
    assert_eq!(
        (model.backend.as_deref(), model.device.as_deref()),
        (Some("tract"), Some("cpu"))
    );
    assert_eq!(c.meta.identity.labels.len(), 10);
}

/// Issue 18, item 4: a stray damaged checkpoint with a higher number (`ckpt-999999999999`)
/// used to keep one of the `keep` slots, so with `keep = 1` every new checkpoint was deleted
/// right after it was written and the next resume found none. Rotation counts only valid
/// checkpoints and moves the damaged file aside for inspection.
#[test]
fn a_stray_damaged_checkpoint_takes_no_keep_slot() {
    let dir = temp_dir("stray-checkpoint");
    let cfg = config_edit(&dir, |t| {
        t.set("generations", 10)
            .set("mutators", 1)
            .add("checkpoint.every_generations", 5)
            .add("checkpoint.every_seconds", 0)
            .add("checkpoint.keep", 1)
            .add("http.listen", "127.0.0.1:0");
    });
    let out = dir.join("run");
    run_to_end(
        &Pareidolia::daemon().config(&cfg).out(&out),
        &dir.join("a.log"),
    );
    let store = CheckpointStore::new(&out, 1);
    let stray = store.dir().join("ckpt-999999999999.pdck");
    std::fs::write(&stray, b"PAREIDCK stray").unwrap();
    let log = run_to_end(
        &Pareidolia::resume(&out).generations(20),
        &dir.join("b.log"),
    );
    assert!(log.contains("skipping a damaged checkpoint"), "{log}");
    assert!(log.contains("moved aside for inspection"), "{log}");
    let (c, path, skipped) = store.load_newest().unwrap();
    assert_eq!(
        c.meta.generation, 20,
        "the final checkpoint survived rotation"
    );
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(store.list(), vec![path]);
    assert_eq!(
        std::fs::read(store.dir().join("damaged/ckpt-999999999999.pdck")).unwrap(),
        b"PAREIDCK stray"
    );
}

/// Issue 30, item 17: a *valid* older checkpoint copied to a higher name is not what a resume
/// continues: the newest is chosen by the generation inside, the copy is skipped with the
/// reason and moved aside by the next rotation.
#[test]
fn a_renamed_copy_of_an_old_checkpoint_is_not_resumed() {
    let dir = temp_dir("renamed-checkpoint");
    let cfg = config_edit(&dir, |t| {
        t.set("generations", 10)
            .set("mutators", 1)
            .add("checkpoint.every_generations", 5)
            .add("checkpoint.every_seconds", 0)
            .add("checkpoint.keep", 2)
            .add("http.listen", "127.0.0.1:0");
    });
    let out = dir.join("run");
    run_to_end(
        &Pareidolia::daemon().config(&cfg).out(&out),
        &dir.join("a.log"),
    );
    let store = CheckpointStore::new(&out, 2);
    let five = store.dir().join("ckpt-000000000005.pdck");
    let copy = store.dir().join("ckpt-999999999999.pdck");
    std::fs::copy(&five, &copy).unwrap();
    let log = run_to_end(
        &Pareidolia::resume(&out).generations(15),
        &dir.join("b.log"),
    );
    assert!(
        log.contains("generation=10")
            && log.contains("holds generation 5 but is named ckpt-999999999999.pdck"),
        "{log}"
    );
    let (c, _, skipped) = store.load_newest().unwrap();
    assert_eq!(c.meta.generation, 15);
    assert!(skipped.is_empty(), "{skipped:?}");
    assert!(store.dir().join("damaged/ckpt-999999999999.pdck").is_file());
    // History continues from generation 10: no row is repeated.
    let history = std::fs::read_to_string(out.join("history.csv")).unwrap();
    let gens: Vec<&str> = history
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(gens.len(), 16, "{history}");
}

/// The names in a folder, sorted (folders with a trailing `/`), recursively.
fn tree(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            names.push(format!("{name}/"));
            names.extend(tree(&e.path()).into_iter().map(|n| format!("{name}/{n}")));
        } else {
            names.push(name);
        }
    }
    names.sort();
    names
}

/// Issue 18, item 1: `daemon --out DIR` into a folder of someone else's files used to delete
/// and overwrite them (gallery/notes.txt gone, history.csv, config.toml and summary.json
/// overwritten, exit 0). It refuses such a folder, with or without --resume, and touches
/// nothing in it; a run folder (one with checkpoints) is refused without --resume and named
/// as a run; an empty folder, and one a daemon left before its first checkpoint, start a
/// new run.
#[test]
fn a_daemon_refuses_a_folder_that_is_not_its_run() {
    let dir = temp_dir("foreign-out");
    let cfg = daemon_config(&dir, 5, 5);
    let out = dir.join("mine");
    std::fs::create_dir_all(out.join("gallery")).unwrap();
    let files = [
        ("gallery/notes.txt", "my notes"),
        ("history.csv", "my history"),
        ("config.toml", "# my config"),
        ("summary.json", "{}"),
    ];
    for (name, text) in files {
        std::fs::write(out.join(name), text).unwrap();
    }
    let before = tree(&out);
    for command in [
        Pareidolia::daemon().config(&cfg).out(&out),
        Pareidolia::daemon()
            .config(&cfg)
            .out(&out)
            .resume_if_checkpointed(),
    ] {
        clean_failure(
            command.output(),
            &[
                "already holds files that are not a pareidolia run",
                "gallery/",
                "summary.json",
                "choose another --out",
            ],
        );
        assert_eq!(tree(&out), before, "nothing added or removed");
        for (name, text) in files {
            assert_eq!(read_text(&out.join(name)), text, "{name}");
        }
    }

    // A new run, in a folder that is there and empty, under what a service manager runs.
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let service = Pareidolia::daemon()
        .config(&cfg)
        .out(&run)
        .resume_if_checkpointed();
    let log = run_to_end(&service, &dir.join("a.log"));
    assert!(!log.contains("resuming"), "{log}");
    // The same command on the run continues it; without --resume the run is refused as one.
    let log = run_to_end(&service.clone().generations(8), &dir.join("b.log"));
    assert!(log.contains("resuming"), "{log}");
    clean_failure(
        Pareidolia::daemon().config(&cfg).out(&run).output(),
        &[
            "is a pareidolia run",
            "holds checkpoints",
            "pareidolia resume",
        ],
    );

    // Killed inside its first checkpoint write (of generation 0, slowed down to 60 s): the
    // folder holds the lock, the config, the history and the temporary file of the write, and
    // the service manager's restart starts the run afresh.
    let early = dir.join("early");
    let mut d = Pareidolia::daemon()
        .config(&cfg)
        .out(&early)
        .env("PAREIDOLIA_FAULT_CHECKPOINT", "slow:60000")
        .start(&dir.join("c.log"));
    d.wait_ready(Duration::from_secs(30));
    let tmp = |_: &mut Daemon| match tree(&early.join("checkpoints")).as_slice() {
        [one] if one.starts_with(".ckpt-000000000000.pdck.tmp-") => Ok(()),
        other => Err(format!("checkpoints/: {other:?}")),
    };
    d.poll(
        "inside the first checkpoint write",
        Duration::from_secs(30),
        Duration::from_millis(10),
        tmp,
    );
    d.signal("KILL");
    d.wait(Duration::from_secs(10));
    let files = tree(&early);
    assert_eq!(files.len(), 6, "{files:?}");
    assert_eq!(
        [&files[0], &files[2], &files[3], &files[4], &files[5]],
        [
            "checkpoints/",
            "config.toml",
            "history.csv",
            "lock",
            "run-id"
        ]
    );
    let log = run_to_end(
        &Pareidolia::daemon()
            .config(&cfg)
            .out(&early)
            .resume_if_checkpointed(),
        &dir.join("d.log"),
    );
    assert!(
        log.contains("never reached its first checkpoint; starting it afresh"),
        "{log}"
    );
    assert_eq!(json(&early.join("summary.json"))["generations"], 5);
}

/// Issue 18, item 16: `resume` and `status` on a folder that is not a run said "the run never
/// reached its first checkpoint", and resume left a lock file there; a start that failed on a
/// busy port left config.toml and the lock behind.
#[test]
fn a_folder_that_is_not_a_run_is_named_so_and_a_failed_start_leaves_nothing() {
    let dir = temp_dir("not-a-run");
    let foreign = dir.join("photos");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("cat.png"), "meow").unwrap();
    let needles = [
        "is not a pareidolia run folder",
        "neither checkpoints/ nor config.toml",
    ];
    clean_failure(Pareidolia::resume(&foreign).output(), &needles);
    clean_failure(pareidolia(&["status", foreign.to_str().unwrap()]), &needles);
    assert_eq!(tree(&foreign), ["cat.png"], "no lock file left behind");
    clean_failure(
        Pareidolia::resume(&dir.join("nowhere")).output(),
        &["is not a pareidolia run folder", "there is no such folder"],
    );
    assert!(!dir.join("nowhere").exists());

    // A busy port: the start fails before the run begins and leaves the folders as they were.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let cfg = daemon_config(&dir, 5, 5);
    let fresh = dir.join("fresh");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for out in [&fresh, &empty] {
        clean_failure(
            Pareidolia::daemon()
                .config(&cfg)
                .out(out)
                .listen(&address)
                .output(),
            &["cannot listen on", &address, "--listen"],
        );
    }
    assert!(!fresh.exists(), "the folder it created is removed");
    assert!(tree(&empty).is_empty(), "{:?}", tree(&empty));
    // And the same command works once the port is free.
    drop(busy);
    run_to_end(
        &Pareidolia::daemon().config(&cfg).out(&fresh),
        &dir.join("fresh.log"),
    );
}

/// Issue 18, item 5: a run that ended with its final checkpoint unwritten (the disk full)
/// exited 0 with summary.json at a later generation than the newest checkpoint. It writes the
/// gallery and summary, then exits non-zero naming both generations; a resume continues from
/// the newest checkpoint.
#[test]
fn a_final_checkpoint_that_cannot_be_written_fails_the_exit() {
    let dir = temp_dir("final-checkpoint");
    let cfg = daemon_config(&dir, 12, 5);
    let out = dir.join("run");
    // Checkpoints 0, 5 and 10 are written; the final one, of generation 12, fails.
    let d = Pareidolia::daemon()
        .config(&cfg)
        .out(&out)
        .env("PAREIDOLIA_FAULT_CHECKPOINT", "fail-from:11")
        .start(&dir.join("a.log"));
    let (status, log) = d.wait(Duration::from_secs(120));
    assert!(!status.success(), "must fail: {status}\n{log}");
    assert_ne!(status.code(), Some(101), "a panic:\n{log}");
    for needle in [
        "checkpoint failed",
        "the final checkpoint, of generation 12, could not be written",
        "the newest checkpoint is of generation 10",
        "pareidolia resume",
    ] {
        assert!(log.contains(needle), "{needle:?} missing:\n{log}");
    }
    assert_eq!(json(&out.join("summary.json"))["generations"], 12);
    assert!(out.join("gallery/index.html").is_file());
    let store = CheckpointStore::new(&out, 3);
    assert_eq!(store.load_newest().unwrap().0.meta.generation, 10);
    // Space is back: the resume redoes generations 11 and 12 and ends cleanly.
    let log = run_to_end(&Pareidolia::resume(&out), &dir.join("b.log"));
    assert!(
        log.contains("resuming") && log.contains("generation=10"),
        "{log}"
    );
    assert_eq!(store.load_newest().unwrap().0.meta.generation, 12);
}

/// Issue 18, item 11: a run started with a relative `--config` whose paths are relative
/// (here the model's manifest) resumes from another working folder: the run folder records
/// the config's folder as an absolute path.
#[test]
fn a_run_from_a_relative_config_resumes_from_another_folder() {
    let dir = temp_dir("relative-config");
    let models = dir.join("models/lenet-mnist");
    std::fs::create_dir_all(&models).unwrap();
    for f in ["manifest.toml", "lenet-mnist.onnx", "labels.txt"] {
        std::fs::copy(root().join("models/lenet-mnist").join(f), models.join(f)).unwrap();
    }
    std::fs::create_dir_all(dir.join("cfg")).unwrap();
    let cfg = daemon_config(&dir.join("cfg"), 4, 2);
    let mut t = read_toml(&cfg);
    t.set("model.manifest", "../models/lenet-mnist/manifest.toml");
    write_toml(&cfg, &t);
    let started = Pareidolia::daemon()
        .arg("--config")
        .arg("cfg/config.toml")
        .arg("--out")
        .arg("run")
        .generations(2)
        .command()
        .current_dir(&dir)
        .output()
        .unwrap();
    success(started);
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let resumed = Pareidolia::resume(&dir.join("run"))
        .generations(4)
        .command()
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    success(resumed);
    assert_eq!(json(&dir.join("run/summary.json"))["generations"], 4);
    let config = read_text(&dir.join("run/config.toml"));
    assert!(
        config.contains(&format!("relative to {}", dir.join("cfg").display())),
        "{config}"
    );
}
