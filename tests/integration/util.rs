//! Shared test helpers: where the built artifacts are, fresh temporary folders, the
//! `pareidolia` command line ([`Pareidolia`]), configs edited as TOML tables ([`config_edit`],
//! [`TomlEdit`]), bounded polling ([`poll`]), and reading what a run wrote.

pub mod prometheus;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::daemon_process::Daemon;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `target/<profile>`, where the binary and the plugin libraries are.
pub fn artifacts() -> PathBuf {
    // This test binary is target/<profile>/deps/integration-<hash>.
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// The built `pareidolia` binary.
pub fn binary() -> PathBuf {
    let bin = artifacts().join("pareidolia");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --release --workspace` before the tests",
        bin.display()
    );
    bin
}

/// A built plugin or fixture library, by crate name.
pub fn library(crate_name: &str) -> PathBuf {
    let file = format!("lib{}.so", crate_name.replace('-', "_"));
    let path = artifacts().join(&file);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --release --workspace` before the tests",
        path.display()
    );
    path
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty folder for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = artifacts()
        .join("test-tmp")
        .join(format!("{name}-{}-{n}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The folder `parent/name`, created (with `parent`) if missing.
pub fn subdir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

// ---------------------------------------------------------------------------------------------
// The command line.

/// A `pareidolia` command line, built flag by flag, e.g.
/// `Pareidolia::run().config(&cfg).out(&out).generations(1).quiet().output()`. The flags are
/// those of `crates/pareidolia/src/cli.rs`; [`Pareidolia::arg`] adds anything else. Every
/// command runs with `RUST_LOG` unset, so that logs are at the level the tests expect.
#[derive(Clone, Debug)]
pub struct Pareidolia {
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
}

impl Pareidolia {
    /// Any command line, for the subcommands without a constructor of their own
    /// (`["plugins", "list"]`).
    pub fn with_args<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Pareidolia {
        Pareidolia {
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            env: Vec::new(),
        }
    }

    /// `pareidolia run`.
    pub fn run() -> Pareidolia {
        Pareidolia::with_args(["run"])
    }

    /// `pareidolia daemon`.
    pub fn daemon() -> Pareidolia {
        Pareidolia::with_args(["daemon"])
    }

    /// `pareidolia resume RUN_DIR`.
    pub fn resume(run_dir: &Path) -> Pareidolia {
        Pareidolia::with_args([OsStr::new("resume"), run_dir.as_os_str()])
    }

    /// Adds one argument as it is.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Pareidolia {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments as they are.
    pub fn args<S: AsRef<OsStr>>(self, args: impl IntoIterator<Item = S>) -> Pareidolia {
        args.into_iter().fold(self, Pareidolia::arg)
    }

    /// `--config FILE` (run, daemon).
    pub fn config(self, file: &Path) -> Pareidolia {
        self.arg("--config").arg(file)
    }

    /// `--out DIR` (run, daemon).
    pub fn out(self, dir: &Path) -> Pareidolia {
        self.arg("--out").arg(dir)
    }

    /// `--generations N` (run, daemon, resume).
    pub fn generations(self, n: u64) -> Pareidolia {
        self.arg("--generations").arg(n.to_string())
    }

    /// `--seed N` (run, daemon).
    pub fn seed(self, seed: u64) -> Pareidolia {
        self.arg("--seed").arg(seed.to_string())
    }

    /// `--mutators N` (run, daemon).
    pub fn mutators(self, n: u32) -> Pareidolia {
        self.arg("--mutators").arg(n.to_string())
    }

    /// `--workers N` (run, daemon): inference workers.
    pub fn workers(self, n: u32) -> Pareidolia {
        self.arg("--workers").arg(n.to_string())
    }

    /// `--backend NAME` (run, daemon).
    pub fn backend(self, backend: &str) -> Pareidolia {
        self.arg("--backend").arg(backend)
    }

    /// `--quiet`: no progress bar (run).
    pub fn quiet(self) -> Pareidolia {
        self.arg("--quiet")
    }

    /// `-v`: info-level logs.
    pub fn verbose(self) -> Pareidolia {
        self.arg("-v")
    }

    /// `--listen ADDR` (daemon, resume).
    #[allow(dead_code)] // A flag of the CLI that no test passes yet.
    pub fn listen(self, addr: &str) -> Pareidolia {
        self.arg("--listen").arg(addr)
    }

    /// `--keep-serving` after the run ends (daemon, resume).
    pub fn keep_serving(self) -> Pareidolia {
        self.arg("--keep-serving")
    }

    /// `--resume`: continue from the newest checkpoint if the run folder holds one (daemon).
    pub fn resume_if_checkpointed(self) -> Pareidolia {
        self.arg("--resume")
    }

    /// `--allow-model-change` (resume).
    pub fn allow_model_change(self) -> Pareidolia {
        self.arg("--allow-model-change")
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Pareidolia {
        self.env.push((key.into(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable for the command.
    pub fn env_remove(mut self, key: &str) -> Pareidolia {
        self.env.push((key.into(), None));
        self
    }

    /// The command, ready to run.
    pub fn command(&self) -> Command {
        let mut command = Command::new(binary());
        command.args(&self.args).env_remove("RUST_LOG");
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
    }

    /// Runs the command to its end.
    pub fn output(&self) -> Output {
        self.command().output().expect("binary runs")
    }

    /// Starts the command as a child process (a daemon) with its log in the file `log`.
    pub fn start(&self, log: &Path) -> Daemon {
        Daemon::spawn(self.command(), log)
    }
}

/// Runs the binary with arguments: shorthand for [`Pareidolia::with_args`] and `output`.
pub fn pareidolia(args: &[&str]) -> Output {
    Pareidolia::with_args(args).output()
}

/// `pareidolia run` of one generation with a config, into `out`.
pub fn run_one_generation(config: &Path, out: &Path) -> Output {
    Pareidolia::run()
        .quiet()
        .generations(1)
        .config(config)
        .out(out)
        .output()
}

/// Text of a process's stdout and stderr.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts success and returns stdout.
pub fn success(output: Output) -> String {
    let (out, err) = text(&output);
    assert!(
        output.status.success(),
        "pareidolia failed ({}):\n--- stdout\n{out}\n--- stderr\n{err}",
        output.status
    );
    out
}

/// Asserts a clean failure: non-zero exit, no panic, and stderr mentioning every `needle`.
pub fn clean_failure(output: Output, needles: &[&str]) -> String {
    let (out, err) = text(&output);
    assert!(
        !output.status.success(),
        "expected failure, got success:\n{out}\n{err}"
    );
    assert_ne!(
        output.status.code(),
        Some(101),
        "exit code 101 is a panic:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "panicked instead of a clean error:\n{err}"
    );
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    err
}

// ---------------------------------------------------------------------------------------------
// Configs and manifests, edited as TOML tables.

/// Reads and parses a TOML file.
pub fn read_toml(path: &Path) -> toml::Table {
    read_text(path)
        .parse()
        .unwrap_or_else(|e| panic!("{} is not TOML: {e}", path.display()))
}

/// Writes a table as a TOML file.
pub fn write_toml(path: &Path, table: &toml::Table) {
    std::fs::write(path, table.to_string()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The default experiment, `configs/mnist-direct.toml`.
fn default_experiment() -> PathBuf {
    root().join("configs/mnist-direct.toml")
}

/// A config file `dir/config.toml`: the default experiment, on tract, with `edit` applied to
/// its table (see [`TomlEdit`]). Relative paths in it are resolved against `dir`.
pub fn config_edit(dir: &Path, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
    let mut table = read_toml(&default_experiment());
    // The shipped default runs on `auto`; the tests built on it compare exact results and
    // name the backend they ran on, so they pin tract, the backend that is always there
    // (the tests of `auto` and of the shipped configs as they are set it back or read the
    // file itself).
    assert_eq!(table["model"]["backend"].as_str(), Some("auto"));
    table.set("model.backend", "tract");
    edit(&mut table);
    let path = dir.join("config.toml");
    write_toml(&path, &table);
    path
}

/// A config file `dir/config.toml`: the default experiment as it is.
pub fn default_config(dir: &Path) -> PathBuf {
    config_edit(dir, |_| {})
}

/// A config file `dir/config.toml` from the default experiment's text with `edit` applied, for
/// the bad configs a table cannot hold; panics if `edit` changed nothing.
pub fn config_text(dir: &Path, edit: impl FnOnce(&str) -> String) -> PathBuf {
    let text = read_text(&default_experiment());
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit did not change the config");
    let path = dir.join("config.toml");
    std::fs::write(&path, edited).unwrap();
    path
}

/// A config for short daemon runs: the default experiment with `generations`, one mutator, a
/// checkpoint every `every` generations (none by time, the newest 3 kept) and HTTP on a free
/// local port.
pub fn daemon_config(dir: &Path, generations: u64, every: u64) -> PathBuf {
    config_edit(dir, |t| {
        t.set("generations", int(generations))
            .set("mutators", 1)
            .add("checkpoint.every_generations", int(every))
            .add("checkpoint.every_seconds", 0)
            .add("checkpoint.keep", 3)
            .add("http.listen", "127.0.0.1:0");
    })
}

/// A count as a TOML integer.
pub fn int(n: u64) -> toml::Value {
    toml::Value::Integer(i64::try_from(n).expect("fits a TOML integer"))
}

/// A path as a TOML string.
pub fn path_value(path: &Path) -> toml::Value {
    path.to_str().expect("a UTF-8 path").into()
}

/// Edits of a TOML table by dotted path (`"model.backend"`) that fail loudly: a key to change
/// must be there with a value of the same type, a key to add must not be there yet.
pub trait TomlEdit {
    /// Replaces the value at `path`; panics if there is none or it has another type.
    fn set(&mut self, path: &str, value: impl Into<toml::Value>) -> &mut Self;
    /// Adds a value at `path`, creating the tables above it; panics if it is already set.
    fn add(&mut self, path: &str, value: impl Into<toml::Value>) -> &mut Self;
    /// Removes the value at `path` and returns it; panics if there is none.
    fn take(&mut self, path: &str) -> toml::Value;
}

/// The table holding the last key of `path`, and that key; `create` adds missing tables.
fn parent<'t, 'p>(
    table: &'t mut toml::Table,
    path: &'p str,
    create: bool,
) -> (&'t mut toml::Table, &'p str) {
    let (tables, key) = path.rsplit_once('.').unwrap_or(("", path));
    let mut current = table;
    let mut here = String::new();
    for name in tables.split('.').filter(|n| !n.is_empty()) {
        if !here.is_empty() {
            here.push('.');
        }
        here.push_str(name);
        if create && !current.contains_key(name) {
            current.insert(name.to_owned(), toml::Table::new().into());
        }
        current = match current.get_mut(name) {
            Some(toml::Value::Table(t)) => t,
            Some(other) => panic!("`{here}` is a {}, not a table", other.type_str()),
            None => panic!("there is no table `{here}` (for `{path}`)"),
        };
    }
    (current, key)
}

impl TomlEdit for toml::Table {
    fn set(&mut self, path: &str, value: impl Into<toml::Value>) -> &mut Self {
        let value = value.into();
        let (table, key) = parent(self, path, false);
        let old = table
            .get_mut(key)
            .unwrap_or_else(|| panic!("there is no `{path}` to set"));
        assert!(
            old.same_type(&value),
            "`{path}` is a {} ({old}), not a {} ({value})",
            old.type_str(),
            value.type_str()
        );
        *old = value;
        self
    }

    fn add(&mut self, path: &str, value: impl Into<toml::Value>) -> &mut Self {
        let (table, key) = parent(self, path, true);
        if let Some(old) = table.get(key) {
            panic!("`{path}` is already set (to {old}): set it instead");
        }
        table.insert(key.to_owned(), value.into());
        self
    }

    fn take(&mut self, path: &str) -> toml::Value {
        let (table, key) = parent(self, path, false);
        table
            .remove(key)
            .unwrap_or_else(|| panic!("there is no `{path}` to remove"))
    }
}

/// The edits fail loudly: a misspelt key, a wrong type or a key already there is a panic, not
/// a config that silently stays as it was.
#[test]
fn toml_edits_that_miss_panic() {
    let fails = |edit: fn(&mut toml::Table)| {
        let mut table = read_toml(&default_experiment());
        std::panic::catch_unwind(move || edit(&mut table)).is_err()
    };
    assert!(fails(|t| {
        t.set("generation", 5);
    }));
    assert!(fails(|t| {
        t.set("modle.backend", "cuda");
    }));
    assert!(fails(|t| {
        t.set("generations", "5");
    }));
    assert!(fails(|t| {
        t.add("seed", 2);
    }));
    assert!(fails(|t| {
        t.take("encoding.parameters");
    }));
    let mut table = read_toml(&default_experiment());
    table
        .set("model.backend", "cuda")
        .add("http.listen", "127.0.0.1:0");
    assert_eq!(table["model"]["backend"].as_str(), Some("cuda"));
    assert_eq!(table["http"]["listen"].as_str(), Some("127.0.0.1:0"));
}

// ---------------------------------------------------------------------------------------------
// Waiting for a condition.

/// Calls `check` every `every` until it returns `Ok`, and returns that (a bounded
/// `periodic_check`, as in ractor's tests). Once `timeout` has passed, panics naming `what`
/// never happened, with the last `Err`: what `check` saw instead.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        let seen = match check() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            start.elapsed() < timeout,
            "not {what} within {timeout:?}; last seen:\n{seen}"
        );
        std::thread::sleep(every);
    }
}

/// Reads a text file.
pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads a JSON file.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&read_text(path)).unwrap()
}

/// The top-1 class and its probability, per image, as `classify --json` reports them.
pub fn classify(images: &[PathBuf], model: &str) -> Vec<(usize, f64, Vec<f64>)> {
    classify_with(images, model, &[])
}

/// [`classify`] with more options (`--view ten-crop`, ...).
pub fn classify_with(
    images: &[PathBuf],
    model: &str,
    options: &[&str],
) -> Vec<(usize, f64, Vec<f64>)> {
    let out = success(
        Pareidolia::with_args(["classify", "--json", "--model", model])
            .args(options)
            .args(images)
            .output(),
    );
    out.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let top = &v["top"][0];
            let probs = v["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_f64().unwrap())
                .collect();
            (
                top["class"].as_u64().unwrap() as usize,
                top["probability"].as_f64().unwrap(),
                probs,
            )
        })
        .collect()
}

/// `summary.json` without timings, plus the gallery's PNG bytes.
pub fn run_result(run: &Path) -> (serde_json::Value, Vec<(String, Vec<u8>)>) {
    let mut v = json(&run.join("summary.json"));
    for key in ["wall_time_s", "evaluations_per_s", "stage_times"] {
        v.as_object_mut().unwrap().remove(key);
    }
    let mut pngs: Vec<_> = std::fs::read_dir(run.join("gallery"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    pngs.sort();
    (v, pngs)
}

/// A run's `history.csv` without its wall-clock column: one line per generation, which a
/// resumed run must write exactly as an uninterrupted one.
pub fn history_without_time(run: &Path) -> Vec<String> {
    read_text(&run.join("history.csv"))
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(',').collect();
            fields.remove(2);
            fields.join(",")
        })
        .collect()
}
