//! The run ledger: what a search keeps about its run besides its own state — the counters
//! (last completed generation, evaluations, losses, evolution time, stage times), the newest
//! checkpoint and when a write was last tried, the stop condition reached, `history.csv` and
//! the [`Progress`] published after every generation. The MAP-Elites archive actor and the
//! gradient-ascent loop both keep their run in one [`Ledger`] (a gradient-ascent step counts
//! as a generation), so checkpoint cadence, stop conditions, history and progress behave the
//! same in both by construction. Plain data: no actors, no threads, unit-tested here.
//!
//! A search drives it in this order after each generation: [`Ledger::record`] what the
//! generation added, [`Ledger::check_stop`] against the archive as it now is, publish
//! [`Ledger::progress`] and [`Ledger::append_history`], then write a checkpoint if
//! [`Ledger::checkpoint_due`] (telling the ledger with [`Ledger::record_checkpoint`]). At the
//! end: [`Ledger::flush_history`], a final checkpoint if [`Ledger::final_checkpoint_due`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use pareidolia_core::checkpoint::{Checkpoint, RunCounters};
use pareidolia_core::config::CheckpointConfig;
use pareidolia_core::summary::StageTimes;
use pareidolia_core::{Archive, StopConfig, StopReached};

use crate::run::history::History;
use crate::run::outcome::Progress;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// When checkpoints are due (config `[checkpoint]`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cadence {
    /// Every this many generations (0 = never by count).
    pub every_generations: u64,
    /// Every this many seconds since the last write was tried (0 = never by time).
    pub every_seconds: f64,
}

impl Cadence {
    /// The config's cadence.
    pub fn of(c: &CheckpointConfig) -> Self {
        Self {
            every_generations: c.every_generations,
            every_seconds: c.every_seconds,
        }
    }
}

/// The newest checkpoint written (or resumed from), and the writes that failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastCheckpoint {
    /// Its generation.
    pub generation: Option<u64>,
    /// Its file (`None` when resumed from and not written since).
    pub path: Option<PathBuf>,
    /// When it was written (Unix seconds).
    pub unix_s: Option<f64>,
    /// Writes that failed.
    pub failures: u64,
}

/// A run's bookkeeping, shared by every search.
pub struct Ledger {
    /// The last generation (or step) of the run.
    generations: u64,
    stop: StopConfig,
    /// `None`: the run writes no checkpoints.
    cadence: Option<Cadence>,
    /// The last generation whose results are all in.
    completed: Option<u64>,
    evaluations: u64,
    lost: u64,
    times: StageTimes,
    /// Evolution seconds of earlier sessions (resume).
    elapsed_before: f64,
    started: Instant,
    last: LastCheckpoint,
    /// When a checkpoint write was last tried (or the session started).
    last_tried: Instant,
    stop_reached: Option<StopReached>,
    history: Option<History>,
}

impl Ledger {
    /// A fresh run of `generations` generations after the first, with these stop conditions,
    /// writing checkpoints at `cadence` (`None`: none).
    pub fn new(generations: u64, stop: StopConfig, cadence: Option<Cadence>) -> Self {
        Self {
            generations,
            stop,
            cadence,
            completed: None,
            evaluations: 0,
            lost: 0,
            times: StageTimes::default(),
            elapsed_before: 0.0,
            started: Instant::now(),
            last: LastCheckpoint::default(),
            last_tried: Instant::now(),
            stop_reached: None,
            history: None,
        }
    }

    /// Continues from a checkpoint: its counters, and it as the newest checkpoint. Then
    /// checks the stop conditions against `archive` (the checkpoint's): a condition that
    /// holds already ends the run before a new generation, and where the checkpoint recorded
    /// the same condition its record (when it was first reached) is kept.
    pub fn resume(&mut self, checkpoint: &Checkpoint, archive: &Archive) {
        let c = checkpoint.counters();
        self.completed = Some(c.generation);
        self.evaluations = c.evaluations;
        self.lost = c.lost;
        self.elapsed_before = c.elapsed_s;
        self.times = c.stage_times;
        self.last.generation = Some(c.generation);
        self.last.unix_s = Some(checkpoint.meta.created_unix_s);
        self.check_stop(archive);
        if let (Some(now), Some(then)) = (&self.stop_reached, &checkpoint.meta.stop_reached)
            && now.condition == then.condition
        {
            self.stop_reached = Some(then.clone());
        }
        if let Some(r) = &self.stop_reached {
            tracing::warn!(
                condition = %r.condition,
                generation = r.generation,
                "the resumed run meets a stop condition already; nothing to run (give a stricter --until, --until none, or a larger --max-seconds)"
            );
        }
    }

    /// Keeps `history.csv` in `dir` from now on (trimmed to the generations done; with the
    /// gradient operator's columns where `gradient`). A folder where it cannot be written is
    /// logged, and the run goes on without it.
    pub fn open_history(&mut self, dir: &Path, gradient: bool) {
        match History::open(dir, self.completed, gradient) {
            Ok(h) => self.history = Some(h),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot write history.csv; running without it")
            }
        }
    }

    /// Records a completed generation: its number, the children it scored and lost, and
    /// the time its stages took.
    pub fn record(&mut self, generation: u64, evaluations: u64, lost: u64, times: StageTimes) {
        self.completed = Some(generation);
        self.evaluations += evaluations;
        self.lost += lost;
        self.times += times;
    }

    /// The last generation whose results are all in.
    pub fn completed(&self) -> Option<u64> {
        self.completed
    }

    /// The counters as a checkpoint stores them.
    pub fn counters(&self) -> RunCounters {
        RunCounters {
            generation: self.completed.unwrap_or(0),
            evaluations: self.evaluations,
            lost: self.lost,
            elapsed_s: self.elapsed_before + self.started.elapsed().as_secs_f64(),
            stage_times: self.times,
        }
    }

    /// Checks the stop conditions after the last completed generation, on `archive` as it
    /// is then; the first that holds ends the run (and stays recorded).
    pub fn check_stop(&mut self, archive: &Archive) {
        let Some(done) = self.completed else { return };
        if self.stop_reached.is_some() {
            return;
        }
        let elapsed = self.counters().elapsed_s;
        if let Some(reached) = self.stop.reached(archive, done, elapsed) {
            tracing::info!(
                condition = %reached.condition,
                generation = done,
                elapsed_s = elapsed,
                "stop condition reached: ending the run"
            );
            self.stop_reached = Some(reached);
        }
    }

    /// The stop condition that ended the run, once one held.
    pub fn stop_reached(&self) -> Option<&StopReached> {
        self.stop_reached.as_ref()
    }

    /// The last generation is in.
    pub fn run_over(&self) -> bool {
        self.completed.is_some_and(|c| c >= self.generations)
    }

    /// The run ends after this generation: its last one, or a stop condition held.
    pub fn ending(&self) -> bool {
        self.run_over() || self.stop_reached.is_some()
    }

    /// A checkpoint of the last completed generation is due by the cadence (and not written
    /// yet).
    pub fn checkpoint_due(&self) -> bool {
        let (Some(c), Some(done)) = (self.cadence, self.completed) else {
            return false;
        };
        if self.last.generation == Some(done) {
            return false;
        }
        (c.every_generations > 0 && done.is_multiple_of(c.every_generations))
            || (c.every_seconds > 0.0 && self.last_tried.elapsed().as_secs_f64() >= c.every_seconds)
    }

    /// The run writes checkpoints, a generation is done and its checkpoint is not written
    /// yet: what the end of a session (last generation, stop, stop request) writes.
    pub fn final_checkpoint_due(&self) -> bool {
        self.cadence.is_some()
            && self
                .completed
                .is_some_and(|done| self.last.generation != Some(done))
    }

    /// Records a try to write the checkpoint of `generation` (`bytes` long, `seconds` to
    /// write) and logs it; a failure is counted and keeps the previous checkpoint as the
    /// newest.
    pub fn record_checkpoint(
        &mut self,
        generation: u64,
        result: Result<PathBuf, String>,
        bytes: usize,
        seconds: f64,
    ) {
        self.last_tried = Instant::now();
        match result {
            Ok(path) => {
                tracing::info!(
                    generation,
                    path = %path.display(),
                    bytes,
                    seconds,
                    "checkpoint written"
                );
                self.last.generation = Some(generation);
                self.last.path = Some(path);
                self.last.unix_s = Some(unix_now());
            }
            Err(e) => {
                self.last.failures += 1;
                tracing::error!(generation, error = %e, "checkpoint failed; the previous checkpoint is kept");
            }
        }
    }

    /// The newest checkpoint.
    pub fn last_checkpoint(&self) -> &LastCheckpoint {
        &self.last
    }

    /// The run's progress with `archive` as it is now (its champions are shared, not copied).
    pub fn progress(&self, archive: &Archive) -> Progress {
        let c = self.counters();
        let stats = archive.stats();
        Progress {
            generation: c.generation,
            generations: self.generations,
            evaluations: c.evaluations,
            lost: c.lost,
            replacements: archive.replacements(),
            confidence_stats: crate::run::outcome::confidence_stats(archive, &stats),
            stats,
            elapsed_s: c.elapsed_s,
            times: c.stage_times,
            last_checkpoint_generation: self.last.generation,
            last_checkpoint_unix_s: self.last.unix_s,
            checkpoint_failures: self.last.failures,
            stop: self.stop.status(self.stop_reached.clone()),
            // Champions share their genome and scores by `Arc`: this copies pointers only.
            champions: Arc::new(archive.cells().to_vec()),
        }
    }

    /// Appends a generation's line to `history.csv`, if the run keeps one. A line that
    /// cannot be written is kept and written once it can; that is logged once per outage.
    pub fn append_history(&mut self, progress: &Progress) {
        let Some(history) = &mut self.history else {
            return;
        };
        let behind = history.pending();
        match history.append(progress) {
            Err(e) if behind == 0 => {
                tracing::warn!(path = %history.path().display(), error = %e, "cannot append to the history; its lines are kept and written once there is room")
            }
            Err(_) => {}
            Ok(()) if behind > 0 => {
                tracing::info!(path = %history.path().display(), lines = behind + 1, "history caught up")
            }
            Ok(()) => {}
        }
    }

    /// Writes the lines still pending at the end of a session (logged where it cannot).
    pub fn flush_history(&mut self) {
        if let Some(history) = &mut self.history
            && history.flush().is_err()
        {
            tracing::warn!(path = %history.path().display(), missing = history.pending(),
                "the history lacks the last generations: they could not be written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pareidolia_core::{Champion, Evaluated, StopCondition};

    fn archive(confidence: f32) -> Archive {
        let mut a = Archive::new(2);
        for class in 0..2 {
            let mut scores = vec![0.0; 2];
            scores[class] = confidence;
            a.insert(Evaluated {
                id: class as u64,
                generation: 0,
                genome: vec![class as u8].into(),
                scores,
                probabilities: Vec::new(),
            });
        }
        a
    }

    fn every(n: u64) -> Option<Cadence> {
        Some(Cadence {
            every_generations: n,
            every_seconds: 0.0,
        })
    }

    #[test]
    fn counters_add_up_over_generations() {
        let mut l = Ledger::new(5, StopConfig::default(), None);
        assert_eq!(l.completed(), None);
        let t = StageTimes {
            inference_s: 0.5,
            batches: 2,
            ..StageTimes::default()
        };
        l.record(0, 10, 1, t);
        l.record(1, 8, 0, t);
        let c = l.counters();
        assert_eq!((c.generation, c.evaluations, c.lost), (1, 18, 1));
        assert_eq!(c.stage_times.batches, 4);
        assert_eq!(c.stage_times.inference_s, 1.0);
        assert!(!l.run_over() && !l.ending());
        l.record(5, 0, 0, StageTimes::default());
        assert!(l.run_over() && l.ending());
    }

    #[test]
    fn checkpoints_are_due_by_count_once_per_generation() {
        let mut l = Ledger::new(10, StopConfig::default(), every(3));
        assert!(!l.checkpoint_due(), "nothing done yet");
        assert!(!l.final_checkpoint_due());
        let due: Vec<u64> = (0..=7)
            .filter(|&g| {
                l.record(g, 1, 0, StageTimes::default());
                l.checkpoint_due()
            })
            .collect();
        assert_eq!(due, [0, 3, 6]);
        l.record_checkpoint(7, Ok("c7".into()), 10, 0.0);
        assert!(!l.checkpoint_due() && !l.final_checkpoint_due());
        assert_eq!(l.last_checkpoint().generation, Some(7));
        assert_eq!(l.last_checkpoint().path.as_deref(), Some(Path::new("c7")));
        assert!(l.last_checkpoint().unix_s.is_some());
        // A failed write is counted and keeps the previous checkpoint.
        l.record(9, 1, 0, StageTimes::default());
        assert!(l.checkpoint_due() && l.final_checkpoint_due());
        l.record_checkpoint(9, Err("disk full".into()), 10, 0.0);
        assert_eq!(l.last_checkpoint().generation, Some(7));
        assert_eq!(l.last_checkpoint().failures, 1);
        assert!(l.final_checkpoint_due());
    }

    #[test]
    fn checkpoints_are_due_by_time_since_the_last_try() {
        let mut l = Ledger::new(
            10,
            StopConfig::default(),
            Some(Cadence {
                every_generations: 0,
                every_seconds: 1e-9,
            }),
        );
        l.record(1, 1, 0, StageTimes::default());
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(l.checkpoint_due());
        let mut never = Ledger::new(10, StopConfig::default(), every(0));
        never.record(1, 1, 0, StageTimes::default());
        assert!(!never.checkpoint_due(), "no cadence: only the final one");
        assert!(never.final_checkpoint_due());
        let mut none = Ledger::new(10, StopConfig::default(), None);
        none.record(1, 1, 0, StageTimes::default());
        assert!(!none.checkpoint_due() && !none.final_checkpoint_due());
    }

    #[test]
    fn the_first_stop_condition_reached_is_kept() {
        let stop = StopConfig {
            until: vec!["min>=0.5".parse::<StopCondition>().unwrap()],
            ..StopConfig::default()
        };
        let mut l = Ledger::new(100, stop, None);
        l.check_stop(&archive(0.9));
        assert!(l.stop_reached().is_none(), "nothing done yet");
        l.record(0, 2, 0, StageTimes::default());
        l.check_stop(&archive(0.4));
        assert!(l.stop_reached().is_none());
        l.record(1, 2, 0, StageTimes::default());
        l.check_stop(&archive(0.6));
        let first = l.stop_reached().cloned().unwrap();
        assert_eq!(first.generation, 1);
        l.record(2, 2, 0, StageTimes::default());
        l.check_stop(&archive(0.7));
        assert_eq!(l.stop_reached(), Some(&first));
        assert!(l.ending() && !l.run_over());
        let p = l.progress(&archive(0.7));
        assert_eq!(p.stop.unwrap().reached, Some(first));
    }

    #[test]
    fn progress_shows_the_counters_the_archive_and_the_newest_checkpoint() {
        let mut l = Ledger::new(4, StopConfig::default(), every(1));
        l.record(0, 2, 1, StageTimes::default());
        l.record_checkpoint(0, Ok("c0".into()), 1, 0.0);
        let a = archive(0.25);
        let p = l.progress(&a);
        assert_eq!(
            (p.generation, p.generations, p.evaluations, p.lost),
            (0, 4, 2, 1)
        );
        assert_eq!(p.last_checkpoint_generation, Some(0));
        assert_eq!(p.stats, a.stats());
        let champions: Vec<Option<Champion>> = a.cells().to_vec();
        assert_eq!(*p.champions, champions);
        assert!(p.stop.is_none());
    }

    #[test]
    fn the_history_gets_a_line_per_generation_and_resumes_where_the_checkpoint_is() {
        let dir = std::env::temp_dir().join(format!("pareidolia-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = archive(0.5);
        let mut l = Ledger::new(10, StopConfig::default(), None);
        l.open_history(&dir, false);
        for g in 0..4 {
            l.record(g, 2, 0, StageTimes::default());
            let p = l.progress(&a);
            l.append_history(&p);
        }
        l.flush_history();
        let lines = |dir: &Path| {
            std::fs::read_to_string(dir.join(crate::run::history::FILE_NAME))
                .unwrap()
                .lines()
                .skip(1)
                .map(|l| l.split(',').next().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(lines(&dir), ["0", "1", "2", "3"]);
        // Resumed at generation 1: the later lines go.
        let mut r = Ledger::new(10, StopConfig::default(), None);
        r.completed = Some(1);
        r.open_history(&dir, false);
        assert_eq!(lines(&dir), ["0", "1"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
