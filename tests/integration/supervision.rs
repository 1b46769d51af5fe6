//! Actor failures in the middle of a run: restarts, re-issued work, no child silently lost,
//! and a clear stop when failures repeat.

use std::time::Duration;

use pareidolia_core::RunConfig;
use pareidolia_daemon::{Experiment, Progress, RunError};
use tokio::sync::watch;

fn experiment(generations: u64, mutators: u32, workers: u32) -> Experiment {
    let mut config = RunConfig::builtin_default();
    config.generations = generations;
    config.mutators = mutators;
    config.workers = workers;
    Experiment::setup(config).unwrap()
}

/// Kills the named actor of a run each time progress reaches one of `at` generations.
async fn kill_at(mut rx: watch::Receiver<Progress>, actor: String, at: Vec<u64>) -> usize {
    let mut kills = 0;
    for g in at {
        while rx.borrow().generation < g {
            if rx.changed().await.is_err() {
                return kills;
            }
        }
        // The actor may be mid-restart: poll with a deadline rather than sleeping blindly.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(cell) = ractor::registry::where_is(actor.clone()) {
                cell.kill();
                kills += 1;
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{actor} never came back"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    kills
}

async fn run_with_kills(
    generations: u64,
    actor_suffix: &str,
    at: Vec<u64>,
) -> (Result<Progress, RunError>, usize) {
    run_split_with_kills(generations, (2, 2), actor_suffix, at).await
}

/// [`run_with_kills`] with `(mutators, workers)`.
async fn run_split_with_kills(
    generations: u64,
    (mutators, workers): (u32, u32),
    actor_suffix: &str,
    at: Vec<u64>,
) -> (Result<Progress, RunError>, usize) {
    let mut exp = experiment(generations, mutators, workers);
    let actor = format!("{}.{actor_suffix}", exp.run_id);
    let (tx, rx) = watch::channel(Progress::default());
    let killer = tokio::spawn(kill_at(rx, actor, at));
    let outcome = exp.run(tx).await.map(|o| o.progress);
    (outcome, killer.await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_mutator_is_restarted_and_its_work_reissued() {
    let (outcome, kills) = run_with_kills(12, "mutator.0", vec![2, 5, 8]).await;
    let p = outcome.unwrap();
    assert_eq!(kills, 3);
    assert_eq!(p.generation, 12);
    assert_eq!(
        p.evaluations,
        200 * 12 + 200,
        "every child was scored despite the kills"
    );
    assert_eq!(p.lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_evaluator_is_restarted_and_its_batches_reissued() {
    // Evaluator 1 of 2: the other goes on with its batches meanwhile.
    let (outcome, kills) = run_with_kills(10, "evaluator.1", vec![3, 6]).await;
    assert_eq!(kills, 2);
    // The re-issued batches are the same batches, scored the same way.
    assert_whole_and_calm(outcome.unwrap()).await;
}

/// A 10-generation run that had kills: every child scored, none lost, and the archive the
/// one an undisturbed run with one mutator and one worker reaches.
async fn assert_whole_and_calm(p: Progress) {
    assert_eq!(p.evaluations, 200 * 10 + 200);
    assert_eq!(p.lost, 0);
    let (tx, _rx) = watch::channel(Progress::default());
    let calm = experiment(10, 1, 1).run(tx).await.unwrap().progress;
    assert_eq!(p.stats, calm.stats);
    assert_eq!(p.champions, calm.champions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_evaluator_that_breeds_its_batches_is_restarted_and_its_jobs_reissued() {
    // No mutators: each evaluator's inference thread breeds the batches it scores, so a
    // killed evaluator takes breeding jobs with it, not rendered children.
    let (outcome, kills) = run_split_with_kills(10, (0, 2), "evaluator.0", vec![2, 5]).await;
    assert_eq!(kills, 2);
    assert_whole_and_calm(outcome.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_stop_the_run_with_a_clear_error() {
    // More kills within the restart window than the supervisor tolerates.
    let at: Vec<u64> = (1..=8).collect();
    let (outcome, _) = run_with_kills(200, "mutator.1", at).await;
    match outcome {
        Err(RunError::TooManyFailures {
            actor, restarts, ..
        }) => {
            assert_eq!(actor, "mutator 1");
            assert!(restarts > pareidolia_daemon::map_elites::supervisor::MAX_RESTARTS);
        }
        other => panic!("expected TooManyFailures, got {other:?}"),
    }
}
