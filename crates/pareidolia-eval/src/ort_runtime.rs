//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! `ort` is built with `load-dynamic`: nothing is linked or downloaded at build time, and the
//! library is opened on first use. We look, in order, at the configured path (a backend option),
//! `ORT_DYLIB_PATH`, the `onnxruntime/capi/` folder of an installed Python `onnxruntime` or
//! `onnxruntime-gpu` package, and finally the system loader's search path. A path may name the
//! library file or a folder holding `libonnxruntime.so*`. A configured path that holds nothing
//! is an error (a library the user names is never replaced by another); any other source that holds nothing is noted
//! and skipped; the first library found is loaded, and if it fails to load (too old, not a
//! library) that is the error: we do not silently try another one.
//!
//! Limits, both from ONNX Runtime and `ort`: one library and one environment per process. The
//! first successful load wins; a later request naming another library gets the loaded one and a
//! warning. Failed loads are not remembered, so a corrected path can be tried again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
use ort::logging::LogLevel;

use crate::EvalError;

/// The loaded library and the process's ONNX Runtime environment.
pub(crate) struct Runtime {
    /// Sessions are created in it.
    pub env: Environment,
    /// The library file that was loaded.
    pub library: PathBuf,
    /// Where it was found (`ORT_DYLIB_PATH`, `the Python package onnxruntime`, ...).
    pub source: String,
    /// ONNX Runtime's version string.
    pub version: String,
}

impl Runtime {
    /// `ONNX Runtime 1.24.4 (/path/libonnxruntime.so.1.24.4, from ORT_DYLIB_PATH)`, for logs
    /// and errors.
    pub fn describe(&self) -> String {
        format!(
            "ONNX Runtime {} ({}, from {})",
            self.version,
            self.library.display(),
            self.source
        )
    }
}

static RUNTIME: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

/// The process's ONNX Runtime, loading it on first call. `configured` is the backend's
/// configured library path, searched first.
pub(crate) fn runtime(configured: Option<&Path>) -> Result<Arc<Runtime>, EvalError> {
    // A poisoned lock only means another thread panicked while loading; the Option is still
    // either empty or a fully built runtime.
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = slot.as_ref() {
        if let Some(wanted) = configured.and_then(library_at)
            && !same_file(&wanted, &rt.library)
        {
            tracing::warn!(
                wanted = %wanted.display(),
                loaded = %rt.library.display(),
                "ONNX Runtime is already loaded in this process; using the loaded library"
            );
        }
        return Ok(rt.clone());
    }
    let rt = Arc::new(load(configured)?);
    tracing::info!(library = %rt.library.display(), source = %rt.source, version = %rt.version, "loaded ONNX Runtime");
    *slot = Some(rt.clone());
    Ok(rt)
}

/// The first explicit source that holds a library, as (where it was found, the file); `looked`
/// gets a line per place searched in vain. Python is only run when the sources before it
/// hold nothing.
fn find(configured: Option<&Path>, looked: &mut Vec<String>) -> Option<(String, PathBuf)> {
    let check = |looked: &mut Vec<String>, what: &str, path: &Path| match library_at(path) {
        Some(found) => Some((what.to_owned(), found)),
        None => {
            looked.push(format!(
                "{what} {} (no libonnxruntime.so* there)",
                path.display()
            ));
            None
        }
    };
    match configured {
        Some(p) => {
            if let Some(found) = check(looked, "the configured library path", p) {
                return Some(found);
            }
        }
        None => looked.push("the configured library path (none configured)".into()),
    }
    match std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        Some(v) => {
            if let Some(found) = check(looked, "ORT_DYLIB_PATH", Path::new(&v)) {
                return Some(found);
            }
        }
        None => looked.push("ORT_DYLIB_PATH (not set)".into()),
    }
    match python_capi_dirs() {
        Ok(dirs) if dirs.is_empty() => {
            looked.push("the Python package onnxruntime (python3 finds no such package)".into())
        }
        Ok(dirs) => {
            for dir in dirs {
                if let Some(found) = check(looked, "the Python package onnxruntime", &dir) {
                    return Some(found);
                }
            }
        }
        Err(why) => looked.push(format!("the Python package onnxruntime ({why})")),
    }
    None
}

fn load(configured: Option<&Path>) -> Result<Runtime, EvalError> {
    // A library the user names is that library: if it is not there, that is the error, not
    // a reason to load another one found elsewhere.
    if let Some(p) = configured
        && library_at(p).is_none()
    {
        return Err(EvalError::OrtLibrary {
            path: p.to_owned(),
            message:
                "no libonnxruntime.so* there (the configured `onnxruntime.library`); fix the path \
                      or remove the key to search ORT_DYLIB_PATH and the Python onnxruntime package"
                    .into(),
        });
    }
    let mut looked = Vec::new();
    let (source, path) = match find(configured, &mut looked) {
        Some(found) => found,
        None => {
            // Last resort: the system loader's own search (LD_LIBRARY_PATH, ld.so.cache).
            let name = format!(
                "{}onnxruntime{}",
                std::env::consts::DLL_PREFIX,
                std::env::consts::DLL_SUFFIX
            );
            match ort::init_from(&name) {
                Ok(builder) => {
                    return finish(builder, PathBuf::from(name), "the system library path");
                }
                Err(ort::LoadDynamicError::Dlopen { .. }) => {
                    looked.push(format!(
                        "the system library search path for {name} (not found)"
                    ));
                    return Err(EvalError::OrtNotFound {
                        looked: looked.join("; "),
                    });
                }
                Err(e) => {
                    return Err(EvalError::OrtLibrary {
                        path: name.into(),
                        message: e.to_string(),
                    });
                }
            }
        }
    };
    let builder = ort::init_from(&path).map_err(|e| EvalError::OrtLibrary {
        path: path.clone(),
        message: e.to_string(),
    })?;
    finish(builder, path, &source)
}

fn finish(
    builder: ort::environment::EnvironmentBuilder,
    library: PathBuf,
    source: &str,
) -> Result<Runtime, EvalError> {
    let failed = |e: ort::Error| EvalError::OrtLibrary {
        path: library.clone(),
        message: e.to_string(),
    };
    let env = builder
        .with_name("pareidolia")
        .with_telemetry(false)
        .with_logger(Arc::new(forward_log))
        .build()
        .map_err(failed)?;
    // The custom logger starts at "verbose"; only warnings and errors are worth formatting.
    env.set_log_level(LogLevel::Warning);
    Ok(Runtime {
        env,
        version: ort_version(&library),
        library,
        source: source.to_owned(),
    })
}

/// ONNX Runtime's own log lines, forwarded to `tracing` under the `onnxruntime` target. Its
/// errors come back to us as `Err` values too and are reported there with context, so they
/// are logged one level lower here.
fn forward_log(level: LogLevel, category: &str, _id: &str, location: &str, message: &str) {
    match level {
        LogLevel::Fatal | LogLevel::Error => {
            tracing::info!(target: "onnxruntime", category, location, "{message}")
        }
        LogLevel::Warning => {
            tracing::debug!(target: "onnxruntime", category, location, "{message}")
        }
        LogLevel::Info | LogLevel::Verbose => {
            tracing::trace!(target: "onnxruntime", category, location, "{message}")
        }
    }
}

/// The library's version string (`1.24.4`), from `OrtGetApiBase()->GetVersionString()`;
/// `ort` checks it while loading but does not expose it.
fn ort_version(library: &Path) -> String {
    // SAFETY: `library` was just loaded by `ort::init_from`, so opening it again only takes
    // another reference to the same, already initialised, ONNX Runtime library. Its
    // initialisers have run and are not re-run.
    let lib = match unsafe { libloading::Library::new(library) } {
        Ok(lib) => lib,
        Err(_) => return "(unknown version)".into(),
    };
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release (C API).
    let Ok(get_base) = (unsafe { lib.get::<GetApiBase>(b"OrtGetApiBase") }) else {
        return "(unknown version)".into();
    };
    // SAFETY: `OrtGetApiBase` takes no arguments and returns a pointer to a static struct;
    // `GetVersionString` returns a static NUL-terminated string. Both outlive `lib`, since
    // `ort` keeps the library loaded for the life of the process.
    unsafe {
        let base = get_base();
        if base.is_null() {
            return "(unknown version)".into();
        }
        let version = ((*base).GetVersionString)();
        if version.is_null() {
            return "(unknown version)".into();
        }
        std::ffi::CStr::from_ptr(version)
            .to_string_lossy()
            .into_owned()
    }
}

/// The library a configured path points at: the file itself, or the best
/// `libonnxruntime.so*` inside a folder.
fn library_at(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_owned());
    }
    let base = format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == base || n.starts_with(&format!("{base}.")))
                && p.is_file()
        })
        .collect();
    // Prefer the unversioned name (a packager's symlink), then the longest, most specific
    // versioned one (`.so.1.24.4` over `.so.1`).
    candidates.sort_by_key(|p| {
        let name = p.file_name().map(|n| n.len()).unwrap_or(0);
        let unversioned = p.file_name().and_then(|n| n.to_str()) == Some(base.as_str());
        (!unversioned, std::cmp::Reverse(name))
    });
    candidates.into_iter().next()
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `onnxruntime/capi/` folders that Python would import from: the one `find_spec` names
/// first, then one under each `sys.path` entry (deduplicated). `find_spec` locates the package
/// without importing it, so a broken or slow import does not matter here.
fn python_capi_dirs() -> Result<Vec<PathBuf>, String> {
    const SCRIPT: &str = "import importlib.util, os, sys\n\
        s = importlib.util.find_spec('onnxruntime')\n\
        print(os.path.dirname(s.origin) if s is not None and s.origin else '')\n\
        for p in sys.path:\n    print(os.path.join(p, 'onnxruntime') if p else '')\n";
    let mut errors = Vec::new();
    for python in ["python3", "python"] {
        let output = match Command::new(python).args(["-c", SCRIPT]).output() {
            Ok(o) => o,
            Err(e) => {
                errors.push(format!("cannot run {python}: {e}"));
                continue;
            }
        };
        if !output.status.success() {
            errors.push(format!(
                "{python} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
            continue;
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut lines = stdout.lines().map(str::trim);
        // The package find_spec names is listed even when its capi/ folder is missing (that
        // is worth saying); other sys.path entries only when they hold the package.
        let mut dirs: Vec<PathBuf> = lines
            .next()
            .filter(|l| !l.is_empty())
            .map(|l| Path::new(l).join("capi"))
            .into_iter()
            .collect();
        for line in lines.filter(|l| !l.is_empty()) {
            let dir = Path::new(line).join("capi");
            if dir.is_dir() && !dirs.iter().any(|d| same_file(d, &dir)) {
                dirs.push(dir);
            }
        }
        return Ok(dirs);
    }
    Err(errors.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_yields_the_library_not_its_providers() {
        let dir = std::env::temp_dir().join(format!("pareidolia-ort-lib-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "libonnxruntime_providers_shared.so",
            "libonnxruntime.so.1.24.4",
            "onnxruntime_validation.py",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        assert_eq!(library_at(&dir), Some(dir.join("libonnxruntime.so.1.24.4")));
        std::fs::write(dir.join("libonnxruntime.so"), b"").unwrap();
        assert_eq!(library_at(&dir), Some(dir.join("libonnxruntime.so")));
        assert_eq!(
            library_at(&dir.join("libonnxruntime.so.1.24.4")),
            Some(dir.join("libonnxruntime.so.1.24.4"))
        );
        assert_eq!(library_at(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
