//! Issue 18, items 3 and 8: what a resume may change, what it refuses, checkpoints that
//! belong to another run and checkpoints that are inconsistent.

use std::path::Path;
use std::time::Duration;

use pareidolia_core::checkpoint::{CheckpointStore, encode, index_champions};

use crate::util::*;

/// Runs a command line to its end; it must succeed. Returns its log.
fn run_to_end(command: &Pareidolia, log: &Path) -> String {
    let (status, log) = command.start(log).wait(Duration::from_secs(120));
    assert!(status.success(), "{status}:\n{log}");
    log
}

/// A daemon config in its own folder `dir/name/config.toml`.
fn config_in(dir: &Path, name: &str, edit: impl FnOnce(&mut toml::Table)) -> std::path::PathBuf {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    config_edit(&sub, |t| {
        t.set("generations", 6)
            .set("mutators", 1)
            .add("checkpoint.every_generations", 3)
            .add("checkpoint.every_seconds", 0)
            .add("checkpoint.keep", 5)
            .add("http.listen", "127.0.0.1:0");
        edit(t);
    })
}

/// `daemon --config NEW --resume` (the systemd unit's command line) used to ignore NEW
/// entirely: here the generation count, the checkpoint interval and the backend it changes
/// take effect, a changed seed or encoding is refused by key, and `resume --generations`
/// below the run's generation is an error instead of a silent exit 0.
#[test]
fn a_resume_applies_what_may_change_and_refuses_the_rest() {
    let dir = temp_dir("resume-policy");
    let first = config_in(&dir, "first", |_| {});
    let out = dir.join("run");
    run_to_end(
        &Pareidolia::daemon().config(&first).out(&out),
        &dir.join("a.log"),
    );
    let store = CheckpointStore::new(&out, 5);
    let (c, _, _) = store.load_newest().unwrap();
    assert_eq!(c.meta.generation, 6);
    let run_id = c
        .meta
        .identity
        .run_id
        .clone()
        .expect("a daemon run has a run id");
    assert_eq!(read_text(&out.join("run-id")).trim(), run_id);

    // What may change: generations, the checkpoint policy, the backend.
    let longer = config_in(&dir, "longer", |t| {
        t.set("generations", 10)
            .set("checkpoint.every_generations", 2)
            .set("model.backend", "ort-cpu");
    });
    let log = run_to_end(
        &Pareidolia::daemon()
            .config(&longer)
            .out(&out)
            .resume_if_checkpointed(),
        &dir.join("b.log"),
    );
    assert!(
        log.contains("generations 6 -> 10") && log.contains("model.backend tract -> ort-cpu"),
        "{log}"
    );
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["generations"], 10);
    assert!(
        summary["backend"].as_str().unwrap().starts_with("ort"),
        "{summary}"
    );
    let names: Vec<String> = store
        .list()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for g in [8, 10] {
        let name = format!("ckpt-{g:012}.pdck");
        assert!(names.contains(&name), "every 2 generations now: {names:?}");
    }
    let (c, _, _) = store.load_newest().unwrap();
    assert_eq!(c.meta.identity.run_id.as_deref(), Some(run_id.as_str()));
    assert_eq!(c.meta.config.generations, 10);

    // What may not change: the seed, the encoding.
    let reseeded = config_in(&dir, "reseeded", |t| {
        t.set("generations", 12)
            .set("seed", 2)
            .set("encoding.params.mutation_rate", 0.5);
    });
    clean_failure(
        Pareidolia::daemon()
            .config(&reseeded)
            .out(&out)
            .resume_if_checkpointed()
            .output(),
        &[
            "`seed` is 1 in the run, 2 in the config",
            "`encoding.params`",
            "a resumed run may change only",
        ],
    );
    clean_failure(
        Pareidolia::daemon()
            .out(&out)
            .resume_if_checkpointed()
            .seed(3)
            .output(),
        &["`seed` is 1 in the run, 3 in the config"],
    );
    // A run cannot go back.
    clean_failure(
        Pareidolia::resume(&out).generations(4).output(),
        &["at generation 10 already", "--generations asks for 4"],
    );
    let (c, _, _) = store.load_newest().unwrap();
    assert_eq!(c.meta.generation, 10, "the refused resumes changed nothing");
}

/// A checkpoint of another run (another seed) copied into a run folder used to be adopted
/// without a word, its history then mixing two runs. It is refused by its run id; a
/// checkpoint from before run ids (as 0.1's, or a format-2 file without one) still resumes,
/// and the run gets an id from then on.
#[test]
fn a_checkpoint_of_another_run_is_refused() {
    let dir = temp_dir("foreign-checkpoint");
    let cfg = config_in(&dir, "cfg", |_| {});
    let (ours, theirs) = (dir.join("ours"), dir.join("theirs"));
    run_to_end(
        &Pareidolia::daemon().config(&cfg).out(&ours),
        &dir.join("ours.log"),
    );
    run_to_end(
        &Pareidolia::daemon()
            .config(&cfg)
            .seed(2)
            .generations(9)
            .out(&theirs),
        &dir.join("theirs.log"),
    );
    let stray = ours.join("checkpoints/ckpt-000000000009.pdck");
    std::fs::copy(theirs.join("checkpoints/ckpt-000000000009.pdck"), &stray).unwrap();
    let err = clean_failure(
        Pareidolia::resume(&ours).generations(12).output(),
        &[
            "ckpt-000000000009.pdck belongs to run",
            "copied from another run folder",
        ],
    );
    assert!(
        err.contains(&read_text(&ours.join("run-id")).trim().to_owned()),
        "{err}"
    );
    std::fs::remove_file(&stray).unwrap();

    // Without run ids (the checkpoint rewritten without one, the folder's file gone), the
    // folder's config.toml still tells the other seed apart...
    let store = CheckpointStore::new(&ours, 5);
    let strip = |from: &Path, to: &Path| {
        let (mut c, _, _) = CheckpointStore::new(from, 5).load_newest().unwrap();
        c.meta.identity.run_id = None;
        let (_, _, distinct) = index_champions(&c.cells);
        std::fs::write(to, encode(&c.meta, &distinct)).unwrap();
    };
    std::fs::remove_file(ours.join("run-id")).unwrap();
    strip(&theirs, &stray);
    clean_failure(
        Pareidolia::resume(&ours).generations(12).output(),
        &[
            "seed 2, encoding `direct` (a checkpoint without a run id)",
            "config.toml says so",
        ],
    );
    std::fs::remove_file(&stray).unwrap();
    // ... and its own checkpoint without a run id resumes, and gets one.
    let newest = store.list()[0].clone();
    strip(&ours, &newest);
    run_to_end(
        &Pareidolia::resume(&ours).generations(8),
        &dir.join("resume.log"),
    );
    let (c, _, _) = store.load_newest().unwrap();
    assert_eq!(c.meta.generation, 8);
    let id = c.meta.identity.run_id.expect("the run got an id");
    assert_eq!(read_text(&ours.join("run-id")).trim(), id);
}

/// Issue 18, item 8: a checkpoint that passes its checksum but whose scores do not fit its
/// classes used to panic the resume (`archive.rs` index out of bounds). It is skipped with a
/// warning saying what is inconsistent, the resume continues from the checkpoint before it,
/// and `status` and `export` read the folder without panicking.
#[test]
fn an_inconsistent_checkpoint_is_skipped_not_a_panic() {
    let dir = temp_dir("inconsistent-checkpoint");
    let cfg = config_in(&dir, "cfg", |_| {});
    let out = dir.join("run");
    run_to_end(
        &Pareidolia::daemon().config(&cfg).out(&out),
        &dir.join("a.log"),
    );
    let store = CheckpointStore::new(&out, 5);
    let newest = store.list()[0].clone();
    let (mut c, _, _) = store.load_newest().unwrap();
    assert_eq!(c.meta.generation, 6);
    // One champion loses its last score; its checksum is computed afresh.
    let class = c.cells.iter().position(Option::is_some).unwrap();
    let mut champion = c.cells[class].clone().unwrap();
    champion.scores = champion.scores[..champion.scores.len() - 1].into();
    for cell in c.cells.iter_mut().flatten() {
        if cell.id == champion.id {
            *cell = champion.clone();
        }
    }
    let (_, _, distinct) = index_champions(&c.cells);
    std::fs::write(&newest, encode(&c.meta, &distinct)).unwrap();
    let status = Pareidolia::with_args([std::ffi::OsStr::new("status"), out.as_os_str()]).output();
    let shown = success(status);
    assert!(shown.contains("generation 3/6"), "{shown}");
    let log = run_to_end(&Pareidolia::resume(&out).generations(6), &dir.join("b.log"));
    assert!(
        log.contains("skipping a damaged checkpoint")
            && log.contains("has 9 scores for 10 classes"),
        "{log}"
    );
    let (c, _, _) = store.load_newest().unwrap();
    assert_eq!(c.meta.generation, 6, "redone from generation 3");
}

/// Issue 18, item 14: a resume with `--allow-plugin-change` whose plugin could not decode the
/// archive's genomes logged a "child lost" per child and failed generations later. Every
/// champion is decoded before anything runs and the resume fails once, naming the plugins,
/// how many champions do not decode and the first one; `export-genome` still writes the raw
/// bytes of a champion the encoding cannot decode.
#[test]
fn champions_the_encoding_cannot_decode_fail_the_resume_once() {
    let dir = temp_dir("undecodable");
    let cfg = config_in(&dir, "cfg", |_| {});
    let out = dir.join("run");
    run_to_end(
        &Pareidolia::daemon().config(&cfg).out(&out),
        &dir.join("a.log"),
    );
    // The run "was made" with another version of the encoding, and one champion's genome is
    // one the installed plugin cannot decode (a direct genome is one byte per pixel).
    let store = CheckpointStore::new(&out, 5);
    let newest = store.list()[0].clone();
    let (mut c, _, _) = store.load_newest().unwrap();
    c.meta.identity.encoding.version = "0.0.1".into();
    let class = c.cells.iter().position(Option::is_some).unwrap();
    let bad_id = c.cells[class].as_ref().unwrap().id;
    for cell in c.cells.iter_mut().flatten() {
        if cell.id == bad_id {
            cell.genome = std::sync::Arc::from(&[1u8, 2, 3][..]);
        }
    }
    let (_, _, distinct) = index_champions(&c.cells);
    std::fs::write(&newest, encode(&c.meta, &distinct)).unwrap();
    let before = read_text(&out.join("history.csv"));
    clean_failure(
        Pareidolia::resume(&out).generations(8).output(),
        &["--allow-plugin-change"],
    );
    let err = clean_failure(
        Pareidolia::resume(&out)
            .generations(8)
            .arg("--allow-plugin-change")
            .output(),
        &[
            "cannot decode 1 of the",
            "which the run made with `direct 0.0.1`",
            &format!("first: class {class}"),
            "nothing was run",
        ],
    );
    assert!(!err.contains("child lost"), "{err}");
    assert_eq!(read_text(&out.join("history.csv")), before);
    assert_eq!(store.load_newest().unwrap().0.meta.generation, 6);

    let genomes = dir.join("genomes");
    clean_failure(
        Pareidolia::with_args(["export-genome".as_ref(), out.as_os_str()])
            .args(["--class", &class.to_string(), "--out"])
            .arg(&genomes)
            .output(),
        &["wrote the raw genome", "cannot decode it"],
    );
    let bin = genomes.join(format!("genome-{class:03}.bin"));
    assert_eq!(std::fs::read(&bin).unwrap(), [1, 2, 3]);
}

/// Issue 30, item 16: a resume that changes the config but cannot start (here `--backend
/// ort-cpu` with an ONNX Runtime library that does not load) leaves the folder's
/// `config.toml` as it was; the same resume where it can start writes the new one.
#[test]
fn a_resume_that_cannot_start_leaves_the_config_as_it_was() {
    let dir = temp_dir("resume-config-unchanged");
    let first = config_in(&dir, "first", |_| {});
    let out = dir.join("run");
    run_to_end(
        &Pareidolia::daemon().config(&first).out(&out),
        &dir.join("a.log"),
    );
    let before = std::fs::read(out.join("config.toml")).unwrap();
    let not_a_library = dir.join("libonnxruntime.so");
    std::fs::write(&not_a_library, b"not a library").unwrap();
    let failed = Pareidolia::resume(&out)
        .generations(9)
        .backend("ort-cpu")
        .env("ORT_DYLIB_PATH", &not_a_library)
        .output();
    let (_, err) = text(&failed);
    assert!(!failed.status.success(), "{err}");
    assert_eq!(
        std::fs::read(out.join("config.toml")).unwrap(),
        before,
        "the failed resume rewrote config.toml:\n{err}"
    );
    run_to_end(
        &Pareidolia::resume(&out).generations(9).backend("ort-cpu"),
        &dir.join("b.log"),
    );
    let after = read_text(&out.join("config.toml"));
    assert!(after.contains("backend = \"ort-cpu\""), "{after}");
    assert!(after.contains("generations = 9"), "{after}");
}

/// A run folder carried to another checkout with its config: the paths the run's own config
/// names (relative to where it ran) no longer resolve, so `export` and `transfer` say so and
/// how to go on; with `--config` (the run's config at its new place) they work, and a config
/// of another run is refused, naming what differs.
#[test]
fn export_and_transfer_of_a_moved_run_take_its_config_at_the_new_place() {
    let dir = temp_dir("moved-run");
    let checkout = |name: &str| {
        let tree = dir.join(name);
        crate::template::copy_dir(
            &root().join("models/lenet-mnist"),
            &tree.join("models/lenet-mnist"),
        );
        let config = config_in(&tree, "configs", |t| {
            t.set("generations", 2)
                .set("model.manifest", "../models/lenet-mnist/manifest.toml");
        });
        (tree, config)
    };
    let (first, _) = checkout("first");
    let config_first = first.join("configs/config.toml");
    let run = first.join("run");
    success(
        Pareidolia::run()
            .quiet()
            .config(&config_first)
            .out(&run)
            .output(),
    );
    // Carried to a second checkout; the first is gone.
    let (second, config_second) = checkout("second");
    let moved = second.join("run");
    std::fs::rename(&run, &moved).unwrap();
    std::fs::remove_dir_all(&first).unwrap();

    let export = |extra: &[&str], out: &str| {
        let out = dir.join(out);
        let mut args = vec![
            "export",
            moved.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        (pareidolia(&args), out)
    };
    let (refused, _) = export(&[], "export-refused");
    clean_failure(
        refused,
        &["cannot load the run's model", "moved", "--config FILE"],
    );
    let (ok, out) = export(&["--config", config_second.to_str().unwrap()], "export");
    success(ok);
    let exported = json(&out.join("summary.json"));
    assert_eq!(exported["generations"], 2);
    assert_eq!(
        exported["classes"],
        json(&moved.join("summary.json"))["classes"]
    );
    let transfer = dir.join("transfer");
    let stdout = success(pareidolia(&[
        "transfer",
        moved.to_str().unwrap(),
        "--config",
        config_second.to_str().unwrap(),
        "--model",
        "builtin:lenet-mnist",
        "--out",
        transfer.to_str().unwrap(),
    ]));
    assert!(stdout.contains("lenet-mnist"), "{stdout}");
    assert!(transfer.join("transfer.csv").is_file());
    // Another run's config (another seed) is refused, by key.
    let other = config_in(&second, "other", |t| {
        t.set("generations", 2)
            .set("seed", 7)
            .set("model.manifest", "../models/lenet-mnist/manifest.toml");
    });
    let (refused, _) = export(&["--config", other.to_str().unwrap()], "export-other");
    clean_failure(refused, &["is not the config of the run", "`seed`"]);
}
