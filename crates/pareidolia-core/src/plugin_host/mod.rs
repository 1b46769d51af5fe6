//! The host side of the plugin boundary: finding plugin libraries, loading them with
//! libloading, checking their descriptor (magic, ABI version, kind, table size) before any
//! plugin code runs, and safe wrappers that call their function tables. Plugins of ABI 1.0
//! and 1.1 both load: the optional encoding operations of 1.1 are called only where the
//! plugin's table has them, and refused otherwise with an [`OptionalCallError`].
//!
//! All `unsafe` of the host lives in this module. Every call goes through a host-owned
//! [`sink::VecSink`], so plugins never hand the host memory to free, and every status code
//! becomes a [`PluginCallError`] naming the plugin and the operation.

mod encoding;
mod fitness;
mod loader;
mod sink;

pub use encoding::{EncodingPlugin, OptionalCallError, OptionalOperation};
pub use fitness::FitnessPlugin;
pub use loader::{
    PluginInfo, PluginKind, PluginLibrary, find_plugin, library_file_name, search_path,
    shared_libraries_in,
};

use std::path::PathBuf;

/// A plugin could not be loaded or set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// No library for this plugin in any searched folder.
    #[error(
        "no {kind} plugin `{name}`: looked for {file}, and for a plugin library exporting that name, in {searched}. Build the workspace \
         (`cargo build --release`), add a folder to `plugin_dirs` or PAREIDOLIA_PLUGIN_PATH, or give a path to the library"
    )]
    NotFound {
        /// encoding or fitness.
        kind: PluginKind,
        /// The requested name.
        name: String,
        /// The file name looked for.
        file: String,
        /// The folders searched, joined for display.
        searched: String,
    },
    /// The path does not exist.
    #[error("plugin library {0} does not exist")]
    Missing(PathBuf),
    /// dlopen failed: not a shared library, wrong architecture, missing dependency.
    #[error("cannot load plugin library {path}: {cause}")]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// The loader's error with its cause.
        cause: String,
    },
    /// The descriptor symbol is missing.
    #[error("{path} is not a Pareidolia plugin: it does not export `{symbol}` ({cause})")]
    MissingSymbol {
        /// The file.
        path: PathBuf,
        /// The symbol looked for.
        symbol: &'static str,
        /// The loader's error.
        cause: String,
    },
    /// The descriptor does not start with the magic value.
    #[error(
        "{path} exports `{symbol}` but its descriptor has the wrong magic number: not a Pareidolia plugin, or a corrupted build"
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The symbol.
        symbol: &'static str,
    },
    /// Built against an incompatible ABI.
    #[error(
        "plugin {path} was built against plugin ABI {plugin_major}.{plugin_minor}, this host speaks \
         ABI {host_major}.{host_minor}: rebuild the plugin against pareidolia-plugin {host_major}.x"
    )]
    AbiMismatch {
        /// The file.
        path: PathBuf,
        /// Plugin's major.
        plugin_major: u32,
        /// Plugin's minor.
        plugin_minor: u32,
        /// Host's major.
        host_major: u32,
        /// Host's minor.
        host_minor: u32,
    },
    /// An encoding where a fitness was wanted, or the reverse.
    #[error("plugin `{name}` ({path}) is a{} {found} plugin, but the config uses it as the {expected}", if matches!(found, PluginKind::Encoding) { "n" } else { "" })]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// The plugin's name.
        name: String,
        /// What the config wanted.
        expected: PluginKind,
        /// What the plugin is.
        found: PluginKind,
    },
    /// The descriptor is malformed (unknown kind, table too small, bad strings).
    #[error("plugin {path} has an invalid descriptor: {message}")]
    BadDescriptor {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The plugin refused its parameters or canvas.
    #[error("plugin `{name}` refused its setup: {message}")]
    Create {
        /// The plugin's name.
        name: String,
        /// The plugin's message.
        message: String,
    },
}

/// A call into a plugin failed (error or caught panic). The run goes on without that child.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("plugin `{plugin}` {operation} {}: {message}", if *.panicked { "panicked" } else { "failed" })]
pub struct PluginCallError {
    /// The plugin's name.
    pub plugin: String,
    /// The operation (random, mutate, crossover, render, score...).
    pub operation: String,
    /// Whether it was a panic.
    pub panicked: bool,
    /// The plugin's message.
    pub message: String,
}
