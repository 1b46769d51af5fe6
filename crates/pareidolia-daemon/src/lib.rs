//! The actors that run an experiment, and the run folder they leave behind.
//!
//! ```text
//! ArchiveActor ──BreedJob──▶ MutatorActor ×N ──Offspring──▶ EvaluatorActor
//!      ▲                      (encoding plugin:               (backend batch inference,
//!      │                       crossover, mutate, render)      fitness plugin)
//!      └─────────────────────── Scored / Lost ◀────────────────────┘
//! ```
//!
//! [`Supervisor`](supervisor::Supervisor) spawns the three kinds linked to itself, restarts a
//! failed mutator or evaluator and asks the archive to re-issue the work that was in flight;
//! repeated failures stop the run with an error. Actors exchange plain data (genomes as bytes,
//! images as bytes, scores as vectors) and find each other by name and process group, so a
//! remote node can later be just another mutator or evaluator. CPU-heavy work (plugin calls,
//! inference) runs on tokio's blocking pool, never on the async executor.
#![deny(missing_docs)]

pub mod archive_actor;
pub mod evaluator_actor;
pub mod experiment;
pub mod history;
pub mod http;
pub mod messages;
pub mod metrics;
pub mod metrics_actor;
pub mod mutator_actor;
pub mod run_folder;
pub mod supervisor;

pub use experiment::{
    Experiment, Progress, RunError, RunOptions, RunOutcome, SetupError, request_stop,
};
