//! Everything that runs a search, and the daemon around it. The crate is in rooms by role;
//! a room's folder says what it is for and what it may use. From the bottom up:
//!
//! - [`run`]: what every search shares — setup (config → models, backends, plugins), what a
//!   run reports, the run ledger (counters, checkpoint cadence, stop conditions, progress)
//!   with `history.csv`, the stop handle, the run folder a finished run leaves;
//! - [`map_elites`]: the MAP-Elites search as actors (protocol, generation bookkeeping, batch
//!   former, archive, mutators, evaluators, supervisor);
//! - [`ascent`]: the gradient-ascent search, a loop on one blocking thread;
//! - [`metrics`]: the run's Prometheus registry and the actor that feeds it;
//! - [`experiment`]: a run of either search, until its last generation, a stop request or an
//!   error;
//! - [`cluster`]: worker nodes over `ractor_cluster` (the node table and its one owner, the
//!   daemon's registrar, `pareidolia worker`);
//! - [`service`]: the daemon as a service (lock, identity check, HTTP endpoints, signals,
//!   drain).
//!
//! Each room uses only rooms listed before it, with two leaves that later rooms' neighbours
//! share: [`metrics`] and [`service::http`] read the node rows of [`cluster::table`] (plain
//! data that uses only [`map_elites::messages`]), and [`cluster`] waits on
//! [`service::signals`] (which uses nothing of this crate). No module of the crate uses one
//! that uses it back.
//!
//! The paper's experiments built on the searches (transfer, retraining, audit) are in the
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
