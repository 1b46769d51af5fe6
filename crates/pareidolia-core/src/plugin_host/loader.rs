//! Finding and opening plugin libraries, and checking their descriptors.

use std::ffi::c_void;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pareidolia_plugin::abi::{
    ABI_MAJOR, ABI_MINOR, DESCRIPTOR_SYMBOL, ENCODING_VTABLE_SIZE_1_0, FitnessVTable,
    KIND_ENCODING, KIND_FITNESS, MAGIC, PluginDescriptor, StrRef,
};
use serde::{Deserialize, Serialize};

use super::PluginError;

/// What a plugin does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Genomes to images.
    Encoding,
    /// Model outputs to per-class scores.
    Fitness,
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Encoding => "encoding",
            PluginKind::Fitness => "fitness",
        })
    }
}

/// What a plugin's descriptor says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its kind.
    pub kind: PluginKind,
    /// ABI it was built against, `major.minor`.
    pub abi: String,
    /// The library file.
    pub path: PathBuf,
}

/// An opened, checked plugin library. The library stays loaded as long as this lives; every
/// instance made from it holds an `Arc` of it.
pub struct PluginLibrary {
    descriptor: *const PluginDescriptor,
    info: PluginInfo,
    /// The descriptor's `vtable_size`, checked to cover at least the ABI 1.0 table.
    vtable_size: usize,
    // Dropped last: the descriptor and tables point into it.
    _library: libloading::Library,
}

impl fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("info", &self.info)
            .finish()
    }
}

// SAFETY: the descriptor is immutable static data of the loaded library, which stays loaded
// while `self` lives; the library handle itself is thread-safe.
unsafe impl Send for PluginLibrary {}
// SAFETY: as above, nothing is mutated through `&self`.
unsafe impl Sync for PluginLibrary {}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// # Safety
/// `s` must point at `len` bytes that live as long as the library.
unsafe fn read_str(s: StrRef) -> Option<String> {
    if s.ptr.is_null() {
        return None;
    }
    // SAFETY: per the contract, a static string of the loaded library.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr, s.len) };
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

impl PluginLibrary {
    /// Opens a library and checks its descriptor; runs no plugin code but the descriptor
    /// function.
    pub fn open(path: &Path) -> Result<Arc<Self>, PluginError> {
        if !path.exists() {
            return Err(PluginError::Missing(path.to_owned()));
        }
        // SAFETY: loading a library runs its initialisers. Plugins are code the user chose to
        // run, like the binary itself; this is the one place the host accepts that.
        let library =
            unsafe { libloading::Library::new(path) }.map_err(|e| PluginError::NotALibrary {
                path: path.to_owned(),
                cause: error_chain(&e),
            })?;
        type DescriptorFn = extern "C" fn() -> *const PluginDescriptor;
        // SAFETY: the symbol, when present, is the SDK's descriptor function of this type.
        let get =
            unsafe { library.get::<DescriptorFn>(DESCRIPTOR_SYMBOL.as_bytes()) }.map_err(|e| {
                PluginError::MissingSymbol {
                    path: path.to_owned(),
                    symbol: DESCRIPTOR_SYMBOL,
                    cause: error_chain(&e),
                }
            })?;
        let descriptor = get();
        let bad = |message: &str| PluginError::BadDescriptor {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        if descriptor.is_null() {
            return Err(bad("the descriptor function returned null"));
        }
        // SAFETY: non-null pointer to static data; the magic and version fields come first in
        // every ABI version, so reading them is valid before we know the version.
        let (magic, major, minor) = unsafe {
            (
                std::ptr::read_unaligned(&raw const (*descriptor).magic),
                std::ptr::read_unaligned(&raw const (*descriptor).abi_major),
                std::ptr::read_unaligned(&raw const (*descriptor).abi_minor),
            )
        };
        if magic != MAGIC {
            return Err(PluginError::BadMagic {
                path: path.to_owned(),
                symbol: DESCRIPTOR_SYMBOL,
            });
        }
        if major != ABI_MAJOR || minor > ABI_MINOR {
            return Err(PluginError::AbiMismatch {
                path: path.to_owned(),
                plugin_major: major,
                plugin_minor: minor,
                host_major: ABI_MAJOR,
                host_minor: ABI_MINOR,
            });
        }
        // SAFETY: same major version, so the layout is this crate's `PluginDescriptor`.
        let d = unsafe { &*descriptor };
        // The ABI 1.0 table is the least a plugin of major 1 has; the optional ABI 1.1 encoding
        // operations beyond it are read only where `vtable_size` covers them.
        let (kind, needed) = match d.kind {
            KIND_ENCODING => (PluginKind::Encoding, ENCODING_VTABLE_SIZE_1_0),
            KIND_FITNESS => (PluginKind::Fitness, std::mem::size_of::<FitnessVTable>()),
            other => return Err(bad(&format!("unknown plugin kind {other}"))),
        };
        if d.vtable.is_null() || d.vtable_size < needed {
            return Err(bad(&format!(
                "function table is {} bytes, this host needs {needed}",
                d.vtable_size
            )));
        }
        // SAFETY: static strings of the library.
        let (name, version) = unsafe { (read_str(d.name), read_str(d.version)) };
        let name = name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("missing or non-UTF-8 name"))?;
        let version = version.ok_or_else(|| bad("missing or non-UTF-8 version"))?;
        let info = PluginInfo {
            name,
            version,
            kind,
            abi: format!("{major}.{minor}"),
            path: path.to_owned(),
        };
        Ok(Arc::new(Self {
            descriptor,
            info,
            vtable_size: d.vtable_size,
            _library: library,
        }))
    }

    /// What the descriptor says.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Fails unless the plugin is of `kind`.
    pub fn expect_kind(&self, kind: PluginKind) -> Result<(), PluginError> {
        if self.info.kind == kind {
            Ok(())
        } else {
            Err(PluginError::WrongKind {
                path: self.info.path.clone(),
                name: self.info.name.clone(),
                expected: kind,
                found: self.info.kind,
            })
        }
    }

    /// The descriptor's `vtable_size`: how much of the function table the plugin has (at
    /// least its kind's ABI 1.0 table).
    pub(super) fn vtable_size(&self) -> usize {
        self.vtable_size
    }

    /// The function table; its type follows from the checked kind.
    pub(super) fn vtable(&self) -> *const c_void {
        // SAFETY: checked non-null and large enough in `open`; static data of the library.
        unsafe { (*self.descriptor).vtable }
    }
}

/// The file name a plugin of this kind and name is built as (`libpareidolia_encoding_direct.so`
/// on Linux).
pub fn library_file_name(kind: PluginKind, name: &str) -> String {
    let stem = format!("pareidolia_{kind}_{}", name.replace('-', "_"));
    format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// The folders searched for plugins, in order: the config's `plugin_dirs`, then
/// `PAREIDOLIA_PLUGIN_PATH`, then the executable's folder and its `plugins/` subfolder.
pub fn search_path(config_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = config_dirs.to_vec();
    if let Some(var) = std::env::var_os("PAREIDOLIA_PLUGIN_PATH") {
        dirs.extend(std::env::split_paths(&var));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("plugins"));
        // Test binaries live in target/<profile>/deps; the plugins one level up.
        if exe_dir.ends_with("deps") {
            dirs.extend(exe_dir.parent().map(Path::to_path_buf));
        }
        dirs.push(exe_dir);
    }
    dirs
}

/// The shared libraries in `dir` (`lib*.so` on Linux), sorted: where a plugin of any file
/// name may be (`plugins list` and the lookup by exported name go through them).
pub fn shared_libraries_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        n.starts_with(std::env::consts::DLL_PREFIX)
                            && n.ends_with(std::env::consts::DLL_SUFFIX)
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Resolves a config's plugin value: a path (anything with a `/` or a library suffix, relative
/// to `base`) or a name looked up along `dirs`, first as a library file name
/// (`libpareidolia_<kind>_<name>.so`), then as the name a plugin library exports.
pub fn find_plugin(
    kind: PluginKind,
    value: &str,
    base: &Path,
    dirs: &[PathBuf],
) -> Result<PathBuf, PluginError> {
    if value.contains('/') || value.ends_with(std::env::consts::DLL_SUFFIX) {
        return Ok(base.join(value));
    }
    let file = library_file_name(kind, value);
    if let Some(found) = dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file()) {
        return Ok(found);
    }
    // The name a plugin exports (`export_encoding!(.., name = "stripes")`) need not be its
    // library's: look through the folders' plugin libraries for one of this kind that
    // exports the name, in search order.
    dirs.iter()
        .flat_map(|d| shared_libraries_in(d))
        .find(|path| {
            PluginLibrary::open(path)
                .is_ok_and(|lib| lib.info().kind == kind && lib.info().name == value)
        })
        .ok_or_else(|| PluginError::NotFound {
            kind,
            name: value.to_owned(),
            file: file.clone(),
            searched: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}
