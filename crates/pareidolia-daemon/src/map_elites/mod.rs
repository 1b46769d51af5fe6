//! The MAP-Elites search as actors (ractor on tokio):
//!
//! ```text
//! ArchiveActor ──BreedJob──▶ MutatorActor ×N ──Offspring──▶ EvaluatorActor ×W
//!      ▲  │                   (encoding plugin:               (backend batch inference,
//!      │  │                    crossover, mutate, render)      fitness plugin)
//!      │  └────────────── BreedJob (no mutators) ─────────────▶ (breeds on its inference thread)
//!      └─────────────────────── Scored / Lost ◀────────────────────┘
//! ```
//!
//! - [`messages`]: the protocol — every actor message (the cluster's and the metrics'
//!   observations included), its payloads, the actors' names;
//! - [`generation`] and [`batcher`]: a generation's bookkeeping and the batch former, plain
//!   data, unit-tested without actors; [`steer`]: the gradient operator of `[search.gradient]`
//!   (gradient steps on marked children before scoring), plain code run by the evaluators;
//!   [`shared_queue`]: the batch queue a process's inference threads share, so a batch runs
//!   on whichever is free first;
//! - the actors: [`archive_actor`] (the one owner of the archive), [`mutator_actor`],
//!   [`evaluator_actor`], and [`supervisor`], which spawns them linked to itself.
//!
//! [`Supervisor`](supervisor::Supervisor) restarts a failed mutator or evaluator and asks the
//! archive to re-issue the work that was in flight; repeated failures stop the run with an
//! error. Actors exchange plain data and find each other by name and process group
//! ([`messages::names`]), so a remote node is just another mutator or evaluator. CPU-heavy
//! work (plugin calls, inference) runs on tokio's blocking pool or the evaluator's inference
//! thread, never on the async executor. Modules here use [`crate::run`] and each other, nothing
//! else of this crate.

pub mod archive_actor;
pub mod batcher;
pub mod evaluator_actor;
pub mod generation;
pub mod messages;
pub mod mutator_actor;
pub mod shared_queue;
pub mod steer;
pub mod supervisor;
