//! Pareidolia's domain: run configuration, seeded RNG streams, the MAP-Elites archive, images
//! and the gallery, run summaries, and the host side of the plugin boundary (loading and
//! checking cdylib plugins, calling them safely).
//!
//! Nothing here knows about actors, inference backends or the command line: `pareidolia-eval`
//! runs models, `pareidolia-daemon` wires everything into actors, and the `pareidolia`
//! binary parses arguments.
#![deny(missing_docs)]

pub mod archive;
pub mod ascent;
pub mod checkpoint;
pub mod choices;
pub mod config;
pub mod faults;
pub mod gallery;
pub mod identity;
pub mod image_io;
pub mod parallel;
pub mod plugin_host;
pub mod resume;
pub mod seeds;
pub mod stop;
pub mod summary;

pub use archive::{Archive, ArchiveStats, CellsError, Champion, Evaluated};
pub use choices::{
    AscentPreset, AscentStart, BackendChoice, Choice, ConvSearch, Objective, OutputKind,
    SearchKind, SteerTarget, UnknownChoice, View,
};
pub use config::{
    ArchiveConfig, CheckpointConfig, ConfigError, GradientOperator, HttpConfig, PluginConfig,
    RunConfig,
};
pub use identity::{
    AllowedChanges, IdentityDifference, IdentityMismatch, ModelIdentity, RunIdentity,
};
pub use plugin_host::{
    EncodingPlugin, FitnessPlugin, OptionalCallError, OptionalOperation, PluginCallError,
    PluginError, PluginInfo, PluginKind,
};
pub use stop::{StopCondition, StopConfig, StopReached, StopStatus};
