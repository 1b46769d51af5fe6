//! What a resumed run may change and what it may not (issue 18, item 3).
//!
//! A run continues from its checkpoint with the checkpoint's config unless the user gives a
//! new one (`daemon --config NEW --resume`, the systemd unit's command line, or
//! `resume --config NEW`). Then what only says how long or where the run goes on is taken
//! from the new config — `generations`, `mutators`, `plugin_dirs`, every model's `backend`,
//! `onnxruntime` and `cuda` settings, `[checkpoint]` and `[http]` — and what makes the run
//! the run it is must be the same: `seed`, `offspring_per_generation`, `initial_population`,
//! `batch_size` (0 keeps the run's), `lag`, the models (their manifests, views and canvases), the
//! encoding and the fitness (plugin and params). A difference there is refused with every
//! differing key named, never silently ignored. A manifest or plugin path is compared where it
//! points, except that one relative path written alike in both configs is the same file when
//! the config's folder moved (a run folder carried to another checkout or machine with its
//! config): the model's sha256 and the plugins' versions are checked apart.
//!
//! Every checkpoint of a daemon run carries the run's id ([`new_run_id`], also in the run
//! folder's [`RUN_ID_FILE`]), so a checkpoint of another run dropped into the folder is
//! refused rather than continued into a `history.csv` that then mixes two runs.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use crate::config::{ModelConfig, PluginConfig, RunConfig};

/// The run folder's file holding its run id (one line).
pub const RUN_ID_FILE: &str = "run-id";

/// A fresh run id: 32 hex digits from the OS-seeded hasher keys of std, the time and the
/// process id; unique in practice, not a secret.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let half = |salt: u64| {
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_u128(now);
        h.write_u32(std::process::id());
        h.write_u64(salt);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

/// The run id recorded in a run folder, if any (an older run folder has none).
pub fn read_run_id(run_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(run_dir.join(RUN_ID_FILE)).ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// Writes the run folder's run id (temporary file, fsync, rename).
pub fn write_run_id(run_dir: &Path, id: &str) -> std::io::Result<()> {
    let path = run_dir.join(RUN_ID_FILE);
    let tmp = run_dir.join(format!(".{RUN_ID_FILE}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// Why a resume cannot go on as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeRefused {
    /// The new config changes what a run cannot change.
    #[error(
        "{origin} differs from the run in what a resumed run cannot change: {}; a resumed run may change only \
         generations, mutators, plugin_dirs, the models' backend, onnxruntime and cuda settings, [checkpoint] and \
         [http]. Use the run's own config (resume without --config), or start a new run in another folder",
        differences.join("; ")
    )]
    Fixed {
        /// The new config (its file, or `the command line`).
        origin: String,
        /// `key: <run's> in the run, <new> in the config`, one per differing key.
        differences: Vec<String>,
    },
    /// The run is past the generation count asked for.
    #[error(
        "the run is at generation {current} already, and {asked_in} asks for {asked} generations in all; a run \
         cannot go back: give at least {current} (that many just serves the finished run)"
    )]
    Behind {
        /// The checkpoint's generation.
        current: u64,
        /// The generation count asked for.
        asked: u64,
        /// Where it was asked (`--generations`, `generations in x.toml`).
        asked_in: String,
    },
    /// The checkpoint belongs to another run than the folder.
    #[error(
        "checkpoint {checkpoint} belongs to run {found}, but {run_dir} is run {expected} ({why}); it was copied \
         from another run folder: move it out, or resume the run it belongs to in its own folder"
    )]
    Foreign {
        /// The checkpoint file.
        checkpoint: PathBuf,
        /// Its run id (or what it records instead, for an older checkpoint).
        found: String,
        /// The folder.
        run_dir: PathBuf,
        /// The folder's run id (or what its config records).
        expected: String,
        /// Where the folder's id comes from.
        why: String,
    },
}

/// A plugin as a config names it, for comparing two configs with different folders: a path
/// resolved against its config's folder, a name as it is.
fn plugin_value(p: &PluginConfig, base: &Path) -> String {
    if p.plugin.contains('/') || p.plugin.ends_with(std::env::consts::DLL_SUFFIX) {
        base.join(&p.plugin).display().to_string()
    } else {
        p.plugin.clone()
    }
}

/// A model manifest as a config names it: `builtin:NAME`, or the path resolved against the
/// config's folder.
fn manifest_value(m: &ModelConfig, base: &Path) -> String {
    if m.manifest.starts_with("builtin:") {
        m.manifest.clone()
    } else {
        base.join(&m.manifest).display().to_string()
    }
}

/// Whether two configs name a file by the same relative path, written alike: the run folder
/// and its config moved together (another checkout, another machine), so the path points to
/// the same place in the tree. The model's sha256 and the plugins' versions are checked
/// apart ([`crate::identity`]), so a different file there is still refused.
fn moved_alike(was: &str, now: &str) -> bool {
    was == now && !was.starts_with("builtin:") && Path::new(was).is_relative()
}

/// The config a resumed run goes on with, given the run's (the checkpoint's) and a new one;
/// also returns what changes, in words, for the log. Refuses every difference in what a run
/// cannot change, naming each key. `origin` names the new config in the message.
pub fn continue_with(
    run: &RunConfig,
    new: &RunConfig,
    origin: &str,
) -> Result<(RunConfig, Vec<String>), ResumeRefused> {
    let mut fixed = Vec::new();
    let mut differ = |key: &str, was: String, now: String| {
        if was != now {
            fixed.push(format!("`{key}` is {was} in the run, {now} in the config"));
        }
    };
    differ("seed", run.seed.to_string(), new.seed.to_string());
    differ(
        "offspring_per_generation",
        run.offspring_per_generation.to_string(),
        new.offspring_per_generation.to_string(),
    );
    differ(
        "initial_population",
        run.initial_population().to_string(),
        new.initial_population().to_string(),
    );
    differ("lag", run.lag.to_string(), new.lag.to_string());
    if new.batch_size != 0 {
        differ(
            "batch_size",
            run.batch_size.to_string(),
            new.batch_size.to_string(),
        );
    }
    for (key, was, now) in [
        ("encoding", &run.encoding, &new.encoding),
        ("fitness", &run.fitness, &new.fitness),
    ] {
        if !moved_alike(&was.plugin, &now.plugin) {
            differ(
                &format!("{key}.plugin"),
                format!("`{}`", plugin_value(was, &run.base_dir)),
                format!("`{}`", plugin_value(now, &new.base_dir)),
            );
        }
        differ(
            &format!("{key}.params"),
            format!("`{}`", was.params_json()),
            format!("`{}`", now.params_json()),
        );
    }
    let (was_models, now_models) = (run.model_keys(), new.model_keys());
    if was_models.len() != now_models.len() {
        differ(
            "models",
            format!("{} model(s)", was_models.len()),
            format!("{} model(s)", now_models.len()),
        );
    }
    for ((key, was), (_, now)) in was_models.iter().zip(&now_models) {
        if !moved_alike(&was.manifest, &now.manifest) {
            differ(
                &format!("{key}.manifest"),
                format!("`{}`", manifest_value(was, &run.base_dir)),
                format!("`{}`", manifest_value(now, &new.base_dir)),
            );
        }
        differ(
            &format!("{key}.view"),
            was.view.to_string(),
            now.view.to_string(),
        );
        differ(
            &format!("{key}.canvas"),
            format!("{:?}", was.canvas),
            format!("{:?}", now.canvas),
        );
    }
    differ(
        "search",
        format!(
            "`{}`",
            serde_json::to_string(&run.search).unwrap_or_default()
        ),
        format!(
            "`{}`",
            serde_json::to_string(&new.search).unwrap_or_default()
        ),
    );
    if !fixed.is_empty() {
        return Err(ResumeRefused::Fixed {
            origin: origin.to_owned(),
            differences: fixed,
        });
    }
    let mut applied = Vec::new();
    let mut note = |key: &str, was: String, now: String| {
        if was != now {
            applied.push(format!("{key} {was} -> {now}"));
        }
    };
    note(
        "generations",
        run.generations.to_string(),
        new.generations.to_string(),
    );
    note(
        "mutators",
        run.mutators.to_string(),
        new.mutators.to_string(),
    );
    note("workers", run.workers.to_string(), new.workers.to_string());
    if run.base_dir != new.base_dir {
        note(
            "relative paths",
            format!("from {}", run.base_dir.display()),
            format!("from {}", new.base_dir.display()),
        );
    }
    note(
        "plugin_dirs",
        format!("{:?}", run.plugin_dirs()),
        format!("{:?}", new.plugin_dirs()),
    );
    for ((key, was), (_, now)) in was_models.iter().zip(&now_models) {
        note(
            &format!("{key}.backend"),
            was.backend.to_string(),
            now.backend.to_string(),
        );
        if was.onnxruntime != now.onnxruntime {
            note(&format!("{key}.onnxruntime"), "".into(), "changed".into());
        }
        if was.cuda != now.cuda {
            note(&format!("{key}.cuda"), "".into(), "changed".into());
        }
    }
    if run.checkpoint != new.checkpoint {
        let c = |c: &crate::config::CheckpointConfig| {
            format!(
                "every {} generations / {} s, keep {}",
                c.every_generations, c.every_seconds, c.keep
            )
        };
        note("checkpoint", c(&run.checkpoint), c(&new.checkpoint));
    }
    note(
        "http.listen",
        run.http.listen.clone(),
        new.http.listen.clone(),
    );
    let mut config = new.clone();
    // The batches a run started with (`batch_size = 0` resolved at its start).
    config.batch_size = run.batch_size;
    Ok((config, applied))
}

/// Refuses a generation count below the run's generation (`source` says where it was given).
pub fn check_generations(current: u64, asked: u64, source: &str) -> Result<(), ResumeRefused> {
    if asked < current {
        return Err(ResumeRefused::Behind {
            current,
            asked,
            asked_in: source.to_owned(),
        });
    }
    Ok(())
}

/// Checks that a checkpoint belongs to the run folder it was found in: its run id must be the
/// folder's (`folder_id`, from [`RUN_ID_FILE`]). A checkpoint or folder from before run ids
/// is checked by what the folder's `config.toml` records (`folder_config`): the seed and the
/// encoding must be the checkpoint's.
pub fn check_belongs(
    checkpoint: &Path,
    checkpoint_id: Option<&str>,
    checkpoint_config: &RunConfig,
    run_dir: &Path,
    folder_id: Option<&str>,
    folder_config: Option<&RunConfig>,
) -> Result<(), ResumeRefused> {
    let foreign = |found: String, expected: String, why: &str| ResumeRefused::Foreign {
        checkpoint: checkpoint.to_owned(),
        found,
        run_dir: run_dir.to_owned(),
        expected,
        why: why.to_owned(),
    };
    if let (Some(found), Some(expected)) = (checkpoint_id, folder_id)
        && found != expected
    {
        return Err(foreign(
            found.to_owned(),
            expected.to_owned(),
            &format!("its {RUN_ID_FILE} file says so"),
        ));
    }
    // The folder's config.toml as well, even when the ids agree: a checkpoint edited to carry
    // the folder's id (or one of an older run without ids) must still be of this run's seed
    // and encoding, which a resume can never change.
    if let Some(folder) = folder_config {
        let what = |c: &RunConfig| format!("seed {}, encoding `{}`", c.seed, c.encoding.plugin);
        let (found, expected) = (what(checkpoint_config), what(folder));
        if found != expected || checkpoint_config.encoding.params != folder.encoding.params {
            let found = match checkpoint_id {
                Some(id) => format!("{found} (run id {id})"),
                None => format!("{found} (a checkpoint without a run id)"),
            };
            return Err(foreign(found, expected, "its config.toml says so"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackendChoice;

    fn config() -> RunConfig {
        RunConfig {
            base_dir: PathBuf::from("/runs/a"),
            ..RunConfig::builtin_default()
        }
    }

    #[test]
    fn what_may_change_is_applied_and_named() {
        let run = config();
        let mut new = config();
        new.base_dir = PathBuf::from("/etc/pareidolia");
        new.generations = run.generations + 100;
        new.mutators = 3;
        new.checkpoint.every_generations = 7;
        new.http.listen = "127.0.0.1:0".into();
        new.model.as_mut().unwrap().backend = BackendChoice::OrtCpu;
        new.batch_size = 0;
        let (go_on, applied) = continue_with(&run, &new, "new.toml").unwrap();
        assert_eq!(go_on.generations, run.generations + 100);
        assert_eq!(
            go_on.primary_model().unwrap().backend,
            BackendChoice::OrtCpu
        );
        assert_eq!(go_on.checkpoint.every_generations, 7);
        assert_eq!(go_on.http.listen, "127.0.0.1:0");
        assert_eq!(go_on.batch_size, run.batch_size, "batch 0 keeps the run's");
        let text = applied.join("; ");
        for needle in [
            "generations 200 -> 300",
            "mutators",
            "model.backend auto -> ort-cpu",
            "checkpoint every 50 generations",
            "http.listen 127.0.0.1:9464 -> 127.0.0.1:0",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        // The same config changes nothing.
        assert_eq!(
            continue_with(&run, &run, "x").unwrap().1,
            Vec::<String>::new()
        );
    }

    #[test]
    fn what_may_not_change_is_refused_key_by_key() {
        let run = config();
        let mut new = config();
        new.seed = 2;
        new.encoding.plugin = "cppn".into();
        new.model.as_mut().unwrap().manifest = "models/other/manifest.toml".into();
        new.batch_size = 7;
        new.lag = 1;
        let e = continue_with(&run, &new, "new.toml")
            .unwrap_err()
            .to_string();
        for needle in [
            "new.toml differs from the run",
            "`seed` is 1 in the run, 2 in the config",
            "`encoding.plugin` is `direct` in the run, `cppn` in the config",
            "`model.manifest` is `builtin:lenet-mnist` in the run, `/runs/a/models/other/manifest.toml`",
            "`batch_size` is 20 in the run, 7",
            "`lag` is 0 in the run, 1 in the config",
            "resume without --config",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        // A relative manifest is compared where it points, not as written.
        let mut run = config();
        run.model.as_mut().unwrap().manifest = "m/manifest.toml".into();
        let mut moved = run.clone();
        moved.base_dir = PathBuf::from("/runs");
        moved.model.as_mut().unwrap().manifest = "a/m/manifest.toml".into();
        assert!(continue_with(&run, &moved, "x").is_ok());
        // A run folder and its config moved together (a fresh checkout elsewhere): the same
        // relative path, written alike, from another folder is the same model and plugin.
        let mut run = config();
        run.model.as_mut().unwrap().manifest = "../models/m/manifest.toml".into();
        run.encoding.plugin = "../plugins/libenc.so".into();
        let mut checkout = run.clone();
        checkout.base_dir = PathBuf::from("/home/me/pareidolia/configs");
        let (_, applied) = continue_with(&run, &checkout, "x").unwrap();
        assert!(
            applied
                .join("; ")
                .contains("relative paths from /runs/a -> from /home/me/pareidolia/configs"),
            "{applied:?}"
        );
        // An absolute path, or a relative one written otherwise, is still compared where it
        // points.
        let mut elsewhere = checkout.clone();
        elsewhere.model.as_mut().unwrap().manifest = "../models/n/manifest.toml".into();
        let e = continue_with(&run, &elsewhere, "x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`model.manifest` is `/runs/a/../models/m/manifest.toml`"),
            "{e}"
        );
        let mut absolute = run.clone();
        absolute.model.as_mut().unwrap().manifest = "/models/m/manifest.toml".into();
        let mut absolute_moved = absolute.clone();
        absolute_moved.base_dir = PathBuf::from("/elsewhere");
        assert!(continue_with(&absolute, &absolute_moved, "x").is_ok());
        absolute_moved.model.as_mut().unwrap().manifest = "/other/manifest.toml".into();
        assert!(continue_with(&absolute, &absolute_moved, "x").is_err());
    }

    #[test]
    fn a_generation_count_below_the_run_is_refused() {
        assert!(check_generations(10, 10, "--generations").is_ok());
        let e = check_generations(10, 5, "--generations")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("generation 10 already, and --generations asks for 5"),
            "{e}"
        );
    }

    #[test]
    fn a_foreign_checkpoint_is_refused_by_id_or_by_config() {
        let c = config();
        let p = Path::new("ckpt");
        let dir = Path::new("/runs/a");
        assert!(check_belongs(p, Some("aa"), &c, dir, Some("aa"), Some(&c)).is_ok());
        let e = check_belongs(p, Some("bb"), &c, dir, Some("aa"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("belongs to run bb, but /runs/a is run aa"),
            "{e}"
        );
        // Older checkpoints: the folder's config.toml decides.
        assert!(check_belongs(p, None, &c, dir, Some("aa"), Some(&c)).is_ok());
        assert!(check_belongs(p, None, &c, dir, None, None).is_ok());
        let mut other = c.clone();
        other.seed = 9;
        let e = check_belongs(p, None, &other, dir, Some("aa"), Some(&c))
            .unwrap_err()
            .to_string();
        assert!(e.contains("seed 9, encoding `direct`"), "{e}");
        // The folder's id on a checkpoint of another seed (edited, or re-signed): config.toml
        // still decides.
        let e = check_belongs(p, Some("aa"), &other, dir, Some("aa"), Some(&c))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("seed 9, encoding `direct` (run id aa)")
                && e.contains("config.toml says so"),
            "{e}"
        );
        let mut cppn = c.clone();
        cppn.encoding.plugin = "cppn".into();
        assert!(check_belongs(p, Some("aa"), &cppn, dir, Some("aa"), Some(&c)).is_err());
    }

    #[test]
    fn run_ids_differ_and_round_trip_through_the_folder() {
        let (a, b) = (new_run_id(), new_run_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let dir = std::env::temp_dir().join(format!("pareidolia-runid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read_run_id(&dir), None);
        write_run_id(&dir, &a).unwrap();
        assert_eq!(read_run_id(&dir), Some(a));
        std::fs::remove_dir_all(&dir).ok();
    }
}
