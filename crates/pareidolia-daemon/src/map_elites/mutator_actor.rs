//! MutatorActor: turns [`BreedJob`]s into rendered children with the encoding plugin, on
//! tokio's blocking pool, and casts them to the evaluators the [`EvaluatorRoute`] names: the
//! archive sends a batch's jobs in one message, and the mutator sends that batch's children
//! on in one message per evaluator (one, or two where a job straddles a batch boundary), so
//! a mutator on another node costs two messages per batch, not one per child. A plugin error
//! or panic costs that child only; it travels on as a [`LostChild`] so the generation's
//! accounting stays exact.

use std::sync::Arc;

use pareidolia_core::EncodingPlugin;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::map_elites::messages::{
    BreedJob, EvaluatorMsg, EvaluatorRoute, LossKind, LostChild, MutatorMsg, Offspring, Recipe,
    RegistrarMsg, WorkTally, names,
};

/// The actor (stateless behaviour; state in [`MutatorState`]).
#[derive(Debug, Default)]
pub struct MutatorActor;

/// Start-up arguments and state.
#[derive(Debug, Clone)]
pub struct MutatorState {
    /// The run's id: evaluator `i` is registered as `names::evaluator(run, i)`.
    pub run: String,
    /// The encoding plugin instance (thread-safe by the SDK's contract).
    pub encoding: Arc<EncodingPlugin>,
    /// Counts of jobs and children (a worker node's heartbeat reports them).
    pub tally: Option<Arc<WorkTally>>,
    /// On a worker node: children for an evaluator this node cannot reach (on another worker
    /// node) go to the daemon's registrar, which forwards them.
    pub relay: bool,
}

/// Splits a job's children by the evaluator that scores them (a job's one or two children
/// can straddle a batch boundary), in evaluator order.
pub fn route(
    children: Vec<Result<Offspring, LostChild>>,
    route: &EvaluatorRoute,
) -> Vec<(usize, Vec<Result<Offspring, LostChild>>)> {
    let mut out: Vec<(usize, Vec<Result<Offspring, LostChild>>)> = Vec::new();
    for child in children {
        let id = match &child {
            Ok(o) => o.id,
            Err(l) => l.id,
        };
        let to = route.evaluator_of(id);
        match out.iter_mut().find(|(e, _)| *e == to) {
            Some((_, these)) => these.push(child),
            None => out.push((to, vec![child])),
        }
    }
    out.sort_by_key(|(e, _)| *e);
    out
}

/// Makes the children of one job: plain code, testable without actors.
pub fn breed(encoding: &EncodingPlugin, job: &BreedJob) -> Vec<Result<Offspring, LostChild>> {
    let start = std::time::Instant::now();
    let ids = job.child_ids();
    let lost = |id: u64, (kind, reason): (LossKind, String)| LostChild {
        id,
        generation: job.generation,
        generation_size: job.generation_size,
        stage: kind,
        reason,
    };
    let failed = |kind: LossKind| {
        move |e: pareidolia_core::plugin_host::PluginCallError| (kind, e.to_string())
    };
    let genomes: Vec<Result<Vec<u8>, (LossKind, String)>> = match &job.recipe {
        Recipe::Random => job
            .child_seeds
            .iter()
            .map(|&s| encoding.random(s).map_err(failed(LossKind::Random)))
            .collect(),
        Recipe::Breed { a, b } => match encoding.crossover(a, b, job.crossover_seed) {
            Ok((ca, cb)) => [ca, cb]
                .into_iter()
                .zip(&job.child_seeds)
                .map(|(child, &seed)| {
                    encoding
                        .mutate(&child, job.generation, seed)
                        .map_err(failed(LossKind::Mutate))
                })
                .collect(),
            Err(e) => job
                .child_seeds
                .iter()
                .map(|_| Err((LossKind::Crossover, e.to_string())))
                .collect(),
        },
    };
    let mut children: Vec<Result<Offspring, LostChild>> = ids
        .zip(genomes)
        .enumerate()
        .map(|(k, (id, genome))| {
            let genome = genome.map_err(|e| lost(id, e))?;
            let mut pixels = vec![0u8; encoding.image_len()];
            encoding
                .render(&genome, &mut pixels)
                .map_err(|e| lost(id, failed(LossKind::Render)(e)))?;
            Ok(Offspring {
                id,
                generation: job.generation,
                generation_size: job.generation_size,
                genome: genome.into(),
                pixels,
                breed_s: 0.0,
                steer: job.steer.get(k).copied().flatten(),
            })
        })
        .collect();
    let share = start.elapsed().as_secs_f64() / children.len().max(1) as f64;
    for child in children.iter_mut().flatten() {
        child.breed_s = share;
    }
    children
}

/// Sends children for evaluator `index` through the daemon's registrar.
fn relay(index: usize, children: Vec<Result<Offspring, LostChild>>) {
    let sent = crate::map_elites::messages::daemon_registrar().is_some_and(|registrar| {
        registrar
            .cast(RegistrarMsg::Relay {
                to: index as u32,
                children,
            })
            .is_ok()
    });
    if !sent {
        tracing::debug!(
            index,
            "no daemon to relay through; children will be re-issued"
        );
    }
}

impl Actor for MutatorActor {
    type Msg = MutatorMsg;
    type State = MutatorState;
    type Arguments = MutatorState;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: MutatorState,
    ) -> Result<MutatorState, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: MutatorMsg,
        state: &mut MutatorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MutatorMsg::Breed(jobs, to) => {
                let encoding = state.encoding.clone();
                let n_jobs = jobs.len() as u64;
                let children = tokio::task::spawn_blocking(move || {
                    jobs.iter()
                        .flat_map(|job| breed(&encoding, job))
                        .collect::<Vec<_>>()
                })
                .await?;
                if let Some(t) = &state.tally {
                    use std::sync::atomic::Ordering::Relaxed;
                    t.jobs.fetch_add(n_jobs, Relaxed);
                    t.bred.fetch_add(children.len() as u64, Relaxed);
                }
                for child in children.iter().filter_map(|c| c.as_ref().err()) {
                    tracing::warn!(child = child.id, generation = child.generation, reason = %child.reason, "child lost");
                }
                for (index, children) in route(children, &to) {
                    match crate::map_elites::messages::find(&names::evaluator(&state.run, index)) {
                        Some(cell) => {
                            let evaluator: ActorRef<EvaluatorMsg> = cell.into();
                            // A failed send means the evaluator is restarting; the supervisor
                            // has the archive re-issue every child not yet scored.
                            if evaluator.cast(EvaluatorMsg::Children(children)).is_err() {
                                tracing::debug!(
                                    index,
                                    "evaluator gone; children will be re-issued"
                                );
                            }
                        }
                        None if state.relay => relay(index, children),
                        None => tracing::debug!(
                            index,
                            "evaluator not registered; children will be re-issued"
                        ),
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map_elites::messages::child_id;

    #[test]
    fn a_job_straddling_a_batch_boundary_goes_to_two_evaluators() {
        let child = |i| {
            Ok(Offspring {
                id: child_id(0, i),
                generation: 0,
                generation_size: 10,
                genome: std::sync::Arc::from(&[0u8][..]),
                pixels: vec![0],
                breed_s: 0.0,
                steer: None,
            })
        };
        let lost = LostChild {
            id: child_id(0, 5),
            generation: 0,
            generation_size: 10,
            stage: LossKind::Render,
            reason: "x".into(),
        };
        let to = EvaluatorRoute {
            batch_size: 5,
            evaluators: 2,
        };
        let routed = route(vec![Err(lost), child(4)], &to);
        let ids: Vec<(usize, Vec<u64>)> = routed
            .into_iter()
            .map(|(e, c)| {
                let ids = c.iter().map(|c| c.as_ref().map_or_else(|l| l.id, |o| o.id));
                (e, ids.collect())
            })
            .collect();
        assert_eq!(ids, [(0, vec![child_id(0, 4)]), (1, vec![child_id(0, 5)])]);
    }
}
