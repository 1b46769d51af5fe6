//! The Pareidolia plugin SDK: what a plugin author depends on, and nothing of the host.
//!
//! A plugin is a `cdylib` that implements one safe trait, [`Encoding`] (how a genome becomes
//! an image) or [`Fitness`] (how a classifier's outputs become one score per class), and calls
//! one export macro. The macro emits the single exported symbol, a [`abi::PluginDescriptor`],
//! whose function table wraps every trait method in a shim that catches panics and turns
//! errors into status codes; authors write no `unsafe` and no `extern "C"`.
//!
//! ```ignore
//! use pareidolia_plugin::prelude::*;
//!
//! struct Stripes;
//! impl Encoding for Stripes { /* ... */ }
//! export_encoding!(Stripes, name = "stripes", version = env!("CARGO_PKG_VERSION"));
//! ```
//!
//! The host side of the boundary (loading, checking descriptors) lives in `pareidolia-core`;
//! this crate only defines the contract and the plugin half of it.
#![deny(missing_docs)]

pub mod abi;
pub mod color;
mod encoding;
mod error;
mod fitness;
mod params;
#[doc(hidden)]
pub mod shim;

pub use encoding::{Canvas, Encoding, Mutation};
pub use error::PluginError;
pub use fitness::{Fitness, ModelOutputs, OutputKind, softmax};
pub use params::Params;

/// Re-exported so plugins use the same `rand` as the SDK.
pub use rand;

/// The random number generator handed to plugins: seeded by the host for every call, so
/// runs are reproducible and the host alone keeps RNG state across checkpoints.
pub type Rng = rand_pcg::Pcg64Mcg;

/// Everything a plugin author imports.
pub mod prelude {
    pub use crate::rand::{Rng as _, RngExt as _, SeedableRng as _};
    pub use crate::{
        Canvas, Encoding, Fitness, ModelOutputs, Mutation, OutputKind, Params, PluginError, Rng,
        export_encoding, export_fitness, softmax,
    };
}

/// Exports an [`Encoding`] implementation as this library's plugin.
///
/// `export_encoding!(MyEncoding, name = "my-encoding", version = env!("CARGO_PKG_VERSION"));`
#[macro_export]
macro_rules! export_encoding {
    ($ty:ty, name = $name:expr, version = $version:expr $(,)?) => {
        /// The plugin descriptor the Pareidolia host looks up.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn pareidolia_plugin_descriptor() -> *const $crate::abi::PluginDescriptor {
            static VTABLE: $crate::abi::EncodingVTable = $crate::shim::encoding_vtable::<$ty>();
            static DESCRIPTOR: $crate::abi::PluginDescriptor =
                $crate::abi::PluginDescriptor::encoding($name, $version, &VTABLE);
            &DESCRIPTOR
        }
    };
}

/// Exports a [`Fitness`] implementation as this library's plugin.
///
/// `export_fitness!(MyFitness, name = "my-fitness", version = env!("CARGO_PKG_VERSION"));`
#[macro_export]
macro_rules! export_fitness {
    ($ty:ty, name = $name:expr, version = $version:expr $(,)?) => {
        /// The plugin descriptor the Pareidolia host looks up.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn pareidolia_plugin_descriptor() -> *const $crate::abi::PluginDescriptor {
            static VTABLE: $crate::abi::FitnessVTable = $crate::shim::fitness_vtable::<$ty>();
            static DESCRIPTOR: $crate::abi::PluginDescriptor =
                $crate::abi::PluginDescriptor::fitness($name, $version, &VTABLE);
            &DESCRIPTOR
        }
    };
}
