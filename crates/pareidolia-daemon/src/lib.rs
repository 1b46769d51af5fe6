//! Everything that runs a search, and the daemon around it. The crate is in rooms by role;
//! a room's folder says what it is for and what it may use. From the bottom up:
//!
//! - [`run`]: what every search shares — setup (config → models, backends, plugins), what a
//!   run reports, `history.csv`, the run folder a finished run leaves;
//! - [`map_elites`]: the MAP-Elites search as actors (protocol, generation bookkeeping, batch
//!   former, archive, mutators, evaluators, supervisor);
//! - [`ascent`]: the gradient-ascent search, a loop on one blocking thread;
//! - [`metrics`]: the run's Prometheus registry and the actor that feeds it;
//! - [`experiment`]: a run of either search, until its last generation, a stop request or an
//!   error;
//! - [`cluster`]: worker nodes over `ractor_cluster` (the daemon's registrar, `pareidolia
//!   worker`);
//! - [`service`]: the daemon as a service (lock, identity check, HTTP endpoints, signals,
//!   drain).
//!
//! Each room uses only rooms listed before it, with two exceptions not yet removed (issue 26
//! item 4): [`metrics`] and [`service::http`] read the node status types of [`cluster`], and
//! [`cluster`] waits on [`service::shutdown_signal`]; inside [`map_elites`], `messages`
//! re-exports `generation::Rejection` while `generation` uses `messages`.
//!
//! The paper's experiments built on the searches (transfer, retraining) are in the
//! `pareidolia-experiments` crate.
#![deny(missing_docs)]

pub mod ascent;
pub mod cluster;
pub mod experiment;
pub mod map_elites;
pub mod metrics;
pub mod run;
pub mod service;

pub use experiment::{Experiment, RunOptions};
pub use run::outcome::{Progress, RunError, RunOutcome};
pub use run::setup::{ModelSetup, Setup, SetupError};
pub use run::stop::StopHandle;
