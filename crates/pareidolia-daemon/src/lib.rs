//! The actors that run an experiment, the service around them, and the run folder they
//! leave behind.
//!
//! ```text
//! ArchiveActor ──BreedJob──▶ MutatorActor ×N ──Offspring──▶ EvaluatorActor
//!      ▲                      (encoding plugin:               (backend batch inference,
//!      │                       crossover, mutate, render)      fitness plugin)
//!      └─────────────────────── Scored / Lost ◀────────────────────┘
//! ```
//!
//! Modules, from the bottom up (each uses only those above it):
//!
//! - [`outcome`]: what a run reports ([`Progress`], [`RunOutcome`], [`RunError`]);
//! - [`messages`]: the protocol — every actor message, its payloads, the actors' names;
//! - [`generation`] and [`batcher`]: the MAP-Elites generation bookkeeping and the batch
//!   former, plain and unit-tested; [`history`]: `history.csv`;
//! - [`setup`]: config → models, backends, plugins (any search, and read-only commands);
//! - [`metrics`], then the actors: [`metrics_actor`], [`mutator_actor`],
//!   [`evaluator_actor`], [`archive_actor`], and [`supervisor`] which spawns them;
//! - [`experiment`]: the MAP-Elites run (setup prepared, the actor tree);
//! - [`run_folder`], [`http`] and [`service`]: the gallery and summary, the HTTP endpoints,
//!   and the daemon as a service (lock, identity check, signals, drain);
//! - [`cluster`]: worker nodes over `ractor_cluster` (the daemon's registrar, `pareidolia worker`);
//! - [`transfer`]: a run's champions scored by other models (the paper's transfer test);
//! - [`retrain`]: training a model folder, and the paper's retraining experiment.
//!
//! [`Supervisor`](supervisor::Supervisor) spawns the three kinds linked to itself, restarts a
//! failed mutator or evaluator and asks the archive to re-issue the work that was in flight;
//! repeated failures stop the run with an error. Actors exchange plain data and find each
//! other by name and process group ([`messages::names`]), so a remote node can later be just
//! another mutator or evaluator. CPU-heavy work (plugin calls, inference) runs on tokio's
//! blocking pool or the evaluator's inference thread, never on the async executor.
#![deny(missing_docs)]

pub mod archive_actor;
pub mod ascent_run;
pub mod batcher;
pub mod cluster;
pub mod evaluator_actor;
pub mod experiment;
pub mod generation;
pub mod history;
pub mod http;
pub mod messages;
pub mod metrics;
pub mod metrics_actor;
pub mod mutator_actor;
pub mod outcome;
pub mod retrain;
pub mod run_folder;
pub mod service;
pub mod setup;
pub mod supervisor;
pub mod transfer;

pub use experiment::{Experiment, RunOptions, request_stop};
pub use outcome::{Progress, RunError, RunOutcome};
pub use setup::{ModelSetup, Setup, SetupError};
