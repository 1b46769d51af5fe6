//! The paper's experiments, built on the searches of `pareidolia-daemon` and used by the
//! command line (`pareidolia transfer`, `train`, `retrain`, `audit`); nothing here is part of the
//! daemon.
//!
//! - [`transfer`]: a run's champions scored by other models (the paper's transfer test);
//!   uses the daemon's `run::setup` only, and [`class_map`] for targets of another label
//!   space;
//! - [`retrain`]: training a model folder, and the paper's retraining experiment, which
//!   drives a MAP-Elites run ([`pareidolia_daemon::Experiment`]) per seed and iteration;
//! - [`audit`]: `pareidolia audit`, the paper's battery against one model (MAP-Elites direct
//!   and CPPN, gradient ascent) as resumable run folders, measured and reported (HTML, JSON,
//!   a fooling set); uses [`transfer`]'s resampling only.
//!
//! `transfer` and `retrain` do not use each other.
#![deny(missing_docs)]

pub mod audit;
pub mod class_map;
pub mod retrain;
pub mod transfer;
