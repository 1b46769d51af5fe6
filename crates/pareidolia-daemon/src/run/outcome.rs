//! What a run reports: its [`Progress`] after every generation, its [`RunOutcome`] at the
//! end, the [`RunError`] that stopped it, and the [`LossKind`] of every child it lost (part
//! of the protocol too: `messages` re-exports it for `LostChild`). Plain data shared by the
//! actors, the HTTP service and the command line; nothing here runs anything, and nothing
//! here depends on another module of this crate.

use std::path::PathBuf;
use std::sync::Arc;

use pareidolia_core::StopStatus;
use pareidolia_core::checkpoint::Checkpoint;
use pareidolia_core::summary::{AscentSummary, StageTimes};
use pareidolia_core::{ArchiveStats, Champion};
use serde::{Deserialize, Serialize};

/// Why a child was lost. Encoding-plugin and fitness-plugin kinds count as plugin errors in
/// the metrics; the others only as lost offspring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// The encoding plugin's `random` failed.
    Random,
    /// Its `crossover` failed.
    Crossover,
    /// Its `mutate` failed.
    Mutate,
    /// Its `render` failed.
    Render,
    /// The fitness plugin's `score` failed (the whole batch).
    Score,
    /// The fitness plugin returned a non-finite score.
    NonFiniteScore,
    /// The backend failed (the whole batch).
    Inference,
    /// An actor died with the child in flight and re-issues ran out.
    Actor,
}

impl LossKind {
    /// Every kind.
    pub const ALL: [LossKind; 8] = [
        LossKind::Random,
        LossKind::Crossover,
        LossKind::Mutate,
        LossKind::Render,
        LossKind::Score,
        LossKind::NonFiniteScore,
        LossKind::Inference,
        LossKind::Actor,
    ];

    /// The name logs and the metrics' `kind` label use.
    pub fn as_str(self) -> &'static str {
        match self {
            LossKind::Random => "random",
            LossKind::Crossover => "crossover",
            LossKind::Mutate => "mutate",
            LossKind::Render => "render",
            LossKind::Score => "score",
            LossKind::NonFiniteScore => "non_finite_score",
            LossKind::Inference => "inference",
            LossKind::Actor => "actor",
        }
    }

    /// Lost in the encoding plugin.
    pub fn is_encoding(self) -> bool {
        matches!(
            self,
            LossKind::Random | LossKind::Crossover | LossKind::Mutate | LossKind::Render
        )
    }

    /// Lost in the fitness plugin.
    pub fn is_fitness(self) -> bool {
        matches!(self, LossKind::Score | LossKind::NonFiniteScore)
    }
}

impl std::fmt::Display for LossKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The run stopped with an error.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RunError {
    /// Not one child of a generation could be scored: the plugin or backend is broken.
    #[error(
        "no child of generation {generation} could be evaluated; the first was lost in {}: {reason}",
        stage.map_or("-", LossKind::as_str)
    )]
    GenerationLost {
        /// The generation.
        generation: u64,
        /// Where the first child was lost.
        stage: Option<LossKind>,
        /// Why.
        reason: String,
    },
    /// An actor failed in a way that cannot be repaired by a restart.
    #[error("the {actor} actor failed: {reason}")]
    ActorFailed {
        /// Which actor.
        actor: String,
        /// Why.
        reason: String,
    },
    /// Restarts kept failing.
    #[error(
        "{restarts} actor restarts within {window_s} s (last: {actor} {last}); stopping instead of spinning"
    )]
    TooManyFailures {
        /// Restarts counted.
        restarts: usize,
        /// The window.
        window_s: u64,
        /// The last actor to fail.
        actor: String,
        /// Its failure.
        last: String,
    },
    /// The actor system could not start.
    #[error("could not start the actors: {0}")]
    Spawn(String),
    /// Gradient ascent could not take a step.
    #[error("gradient ascent failed at step {step}: {reason}")]
    Ascent {
        /// The step.
        step: u64,
        /// Why.
        reason: String,
    },
}

/// Where a run stands after a generation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Last completed generation (0 = initial population).
    pub generation: u64,
    /// Generations planned.
    pub generations: u64,
    /// Children scored.
    pub evaluations: u64,
    /// Children lost.
    pub lost: u64,
    /// Champion replacements.
    pub replacements: u64,
    /// Archive statistics (of the fitness).
    pub stats: ArchiveStats,
    /// The same statistics of the champions' probabilities, where they differ from the
    /// fitness's (a fitness other than `confidence`); `None` where they are the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence_stats: Option<ArchiveStats>,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Time per stage.
    pub times: StageTimes,
    /// Generation of the newest checkpoint written (or resumed from).
    pub last_checkpoint_generation: Option<u64>,
    /// When it was written (Unix seconds).
    pub last_checkpoint_unix_s: Option<f64>,
    /// Checkpoint writes that failed.
    pub checkpoint_failures: u64,
    /// The run's stop conditions and the one reached, if any; absent without conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopStatus>,
    /// Per class: the champion (genome and scores shared, not copied).
    #[serde(skip)]
    pub champions: Arc<Vec<Option<Champion>>>,
}

impl Progress {
    /// Per class: the champion's confidence (its score in that class), if the cell is filled.
    pub fn confidences(&self) -> impl Iterator<Item = Option<f32>> + '_ {
        self.champions
            .iter()
            .enumerate()
            .map(|(class, c)| c.as_ref().map(|c| c.score(class)))
    }
}

/// What a finished run leaves: the archive's cells and the final progress.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// One entry per class.
    pub cells: Vec<Option<Champion>>,
    /// Counters and statistics at the end.
    pub progress: Progress,
    /// Stopped by a shutdown request before its last generation (a stop condition that ended
    /// it is no interruption: the run is done).
    pub interrupted: bool,
    /// The last checkpoint written, if checkpointing.
    pub checkpoint: Option<PathBuf>,
    /// A gradient-ascent run's recipe and per-class records.
    pub ascent: Option<AscentSummary>,
}

/// The archive's probability statistics where they differ from its fitness statistics
/// `stats` (`archive.stats()`, computed once by the caller).
pub fn confidence_stats(
    archive: &pareidolia_core::Archive,
    stats: &ArchiveStats,
) -> Option<ArchiveStats> {
    let confidence = archive.confidence_stats();
    (confidence != *stats).then_some(confidence)
}

impl RunOutcome {
    /// The outcome a checkpoint records (for exports of a run that may still be going).
    pub fn from_checkpoint(c: &Checkpoint, path: PathBuf) -> Self {
        let m = &c.meta;
        let archive = c.archive();
        let stats = archive.stats();
        RunOutcome {
            progress: Progress {
                generation: m.generation,
                generations: m.config.generations,
                evaluations: m.evaluations,
                lost: m.lost,
                replacements: m.replacements,
                confidence_stats: confidence_stats(&archive, &stats),
                stats,
                elapsed_s: m.elapsed_s,
                times: m.stage_times,
                last_checkpoint_generation: Some(m.generation),
                last_checkpoint_unix_s: Some(m.created_unix_s),
                checkpoint_failures: 0,
                stop: m.config.stop.status(m.stop_reached.clone()),
                champions: Arc::new(c.cells.clone()),
            },
            interrupted: m.generation < m.config.generations && m.stop_reached.is_none(),
            checkpoint: Some(path),
            cells: c.cells.clone(),
            ascent: c.ascent.as_ref().map(|a| {
                let recipe = m.config.search.recipe(m.config.generations);
                AscentSummary::new(&recipe, a.step, &a.tracks, 0, None, &[])
            }),
        }
    }
}
