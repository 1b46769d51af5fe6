//! The protocol: every message between the run's actors, their payloads and the names the
//! actors find each other by. Nothing else in the crate defines a message, so an actor module
//! imports this one and never another actor's.
//!
//! Messages are plain data (genomes as bytes, images as bytes, scores as vectors), never
//! references, closures or handles. Those that may cross a process boundary once mutators
//! and evaluators run on other machines — [`MutatorMsg`], [`EvaluatorMsg`], [`ArchiveMsg`] —
//! derive serde's `Serialize` and `Deserialize`, which is what `ractor_cluster` needs with
//! ractor's `blanket_serde` feature (every serde type is then a `BytesConvertable` cast
//! payload); this crate builds ractor with its `cluster` and `blanket_serde` features, so a
//! message type that could not be sent to another node does not compile. Genomes are
//! `Arc<[u8]>` only to share bytes without copies inside one process; they serialise as
//! byte strings. [`MetricsMsg`] is local (it carries the champion snapshot by `Arc`).

use std::sync::Arc;

use pareidolia_core::RunIdentity;
use pareidolia_core::summary::StageTimes;
use serde::{Deserialize, Serialize};

pub use crate::run::outcome::LossKind;
use crate::run::outcome::Progress;

/// Why a child in an evaluator's results was refused (it never reaches the archive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejection {
    /// Not a child the archive handed out: a generation not started yet, or an index beyond
    /// the generation's size.
    Unrequested,
    /// A child of this generation that no route sent to the evaluator that returned it.
    Misrouted,
    /// Its fields disagree: the id's generation is not the child's, the score count is not
    /// the classes', or a score is not finite.
    Malformed,
}

impl Rejection {
    /// Every cause, in metric order.
    pub const ALL: [Rejection; 3] = [
        Rejection::Unrequested,
        Rejection::Misrouted,
        Rejection::Malformed,
    ];

    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Unrequested => "unrequested",
            Rejection::Misrouted => "misrouted",
            Rejection::Malformed => "malformed",
        }
    }
}

/// Opaque genome bytes of the encoding plugin.
pub type Genome = Arc<[u8]>;

/// Serde for byte payloads: as one byte string (`serialize_bytes`), not as a sequence of
/// numbers, so that a genome or an image crosses the network as its bytes plus a length.
pub mod bytes {
    use std::sync::Arc;

    use serde::{Deserialize as _, Deserializer, Serializer};

    /// Writes the bytes as one byte string.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    /// Reads a genome (`Arc<[u8]>`).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<[u8]>, D::Error> {
        Ok(serde_bytes::ByteBuf::deserialize(deserializer)?
            .into_vec()
            .into())
    }

    /// The same for plain vectors (`#[serde(with = "bytes::vec")]`).
    pub mod vec {
        use serde::{Deserialize as _, Deserializer, Serializer};

        /// Writes the bytes as one byte string.
        pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(bytes)
        }

        /// Reads a `Vec<u8>`.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Vec<u8>, D::Error> {
            Ok(serde_bytes::ByteBuf::deserialize(deserializer)?.into_vec())
        }
    }
}

/// A child's id: generation in the high 32 bits, index within the generation in the low.
pub fn child_id(generation: u64, index: u32) -> u64 {
    generation << 32 | index as u64
}

/// The index within its generation of a child (the low 32 bits of its id).
pub fn child_index(id: u64) -> u32 {
    (id & 0xFFFF_FFFF) as u32
}

/// Work for a mutator: make one or two children.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreedJob {
    /// The generation the children belong to (0 = initial population).
    pub generation: u64,
    /// Children this generation has in all (evaluators flush when all are in).
    pub generation_size: u32,
    /// Index of the first child; the job makes `first_index..first_index + children`.
    pub first_index: u32,
    /// 1 or 2.
    pub children: u32,
    /// How to make them.
    pub recipe: Recipe,
    /// Seed of the crossover (breeding only).
    pub crossover_seed: u64,
    /// Seed per child (random genome or mutation).
    pub child_seeds: Vec<u64>,
    /// Per child, the class its gradient steps push toward (`[search.gradient]`), or `None`;
    /// empty when no child of the job is steered.
    #[serde(default)]
    pub steer: Vec<Option<u32>>,
}

impl BreedJob {
    /// The ids of the children this job makes.
    pub fn child_ids(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.children).map(|k| child_id(self.generation, self.first_index + k))
    }
}

/// How a job makes its children.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Recipe {
    /// Random genomes (initial population).
    Random,
    /// Crossover of two parents, then mutation of each child.
    Breed {
        /// First parent.
        #[serde(with = "bytes")]
        a: Genome,
        /// Second parent.
        #[serde(with = "bytes")]
        b: Genome,
    },
}

/// A rendered child on its way to evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offspring {
    /// Child id.
    pub id: u64,
    /// Its generation.
    pub generation: u64,
    /// Children in its generation.
    pub generation_size: u32,
    /// Genome bytes.
    #[serde(with = "bytes")]
    pub genome: Genome,
    /// The rendered image at the canvas size.
    #[serde(with = "bytes::vec")]
    pub pixels: Vec<u8>,
    /// Seconds the mutator spent making this child (its share of the job).
    pub breed_s: f64,
    /// The class the evaluator steps this child toward before scoring it, if any.
    #[serde(default)]
    pub steer: Option<u32>,
}

/// A child that will never be scored, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LostChild {
    /// Child id.
    pub id: u64,
    /// Its generation.
    pub generation: u64,
    /// Children in its generation.
    pub generation_size: u32,
    /// Where it was lost.
    pub stage: LossKind,
    /// The error.
    pub reason: String,
}

/// A child with its per-class scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredChild {
    /// Child id.
    pub id: u64,
    /// Its generation.
    pub generation: u64,
    /// Genome bytes.
    #[serde(with = "bytes")]
    pub genome: Genome,
    /// One score per class.
    pub scores: Vec<f32>,
    /// The models' (mean) probability of every class.
    #[serde(default)]
    pub probabilities: Vec<f32>,
}

/// Timings of one inference batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchTimings {
    /// Images in the batch.
    pub size: usize,
    /// Seconds in the backends (preprocessing included), all models.
    pub inference_s: f64,
    /// Seconds per model, in the run's model order.
    pub model_inference_s: Vec<f64>,
    /// Seconds in the fitness plugin.
    pub fitness_s: f64,
    /// Per child: seconds its mutator spent making it.
    pub breed_s: Vec<f64>,
    /// Per child: seconds from arriving at the evaluator to its batch's inference start.
    pub queue_wait_s: Vec<f64>,
    /// Rendered children waiting for their batches when this one was submitted.
    pub batch_filling: usize,
    /// Batches queued or running on the backend, this one included.
    pub inference_batches: usize,
}

/// What an evaluator sends back for one batch (or a few losses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The evaluator index that scored them (the archive accepts a child only from an
    /// evaluator its generation's route sent it to).
    pub from: u32,
    /// Scored children.
    pub scored: Vec<ScoredChild>,
    /// Children that will never be scored.
    pub lost: Vec<LostChild>,
    /// Time the work took, per stage.
    pub times: StageTimes,
}

/// Why the archive sends the work in flight out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReissueCause {
    /// A local mutator or evaluator was restarted by the supervisor.
    ActorRestart,
    /// A worker node's connection closed (or it fell silent) with work in flight.
    NodeLost,
}

impl ReissueCause {
    /// Every cause, in metric order.
    pub const ALL: [ReissueCause; 2] = [ReissueCause::ActorRestart, ReissueCause::NodeLost];

    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReissueCause::ActorRestart => "actor_restart",
            ReissueCause::NodeLost => "node_lost",
        }
    }
}

/// Messages the archive handles. Local only: no other node reaches the archive; worker
/// nodes' results come through the daemon's registrar ([`RegistrarMsg::Results`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ArchiveMsg {
    /// Begin (or continue with) the next generation.
    Next,
    /// Scores and losses from an evaluator.
    Results(Results),
    /// Re-issue every child still outstanding (a restarted actor, a lost node).
    Reissue(ReissueCause),
    /// Finish the generation in flight, write a final checkpoint and end the run.
    Shutdown,
}

impl ractor::Message for ArchiveMsg {}

/// Which evaluator scores which child: batch `k` of generation `g` (children
/// `k * batch_size ..`) goes to evaluator `(g + k) % evaluators`. The archive decides it and
/// sends it with every job; the mutators deliver by it. Because a batch is formed by index
/// and always goes to one evaluator whole, every batch holds the same children whatever the
/// number of evaluators, and a run's numbers do not depend on it. Within one process the
/// evaluators' inference threads then share the work: the batch goes to its evaluator's
/// queue, which all of them serve ([`BatchQueue`](crate::map_elites::evaluator_actor::BatchQueue)),
/// so the route says which evaluator accounts for a batch, not which thread runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluatorRoute {
    /// Images per inference batch (at least 1).
    pub batch_size: u32,
    /// Evaluators of the run (at least 1), indexed `0..evaluators`.
    pub evaluators: u32,
}

impl EvaluatorRoute {
    /// The evaluator (index) that batches and scores child `id`.
    pub fn evaluator_of(&self, id: u64) -> usize {
        let batch = u64::from(child_index(id) / self.batch_size.max(1));
        ((id >> 32).wrapping_add(batch) % u64::from(self.evaluators.max(1))) as usize
    }
}

/// Messages a mutator handles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MutatorMsg {
    /// Make the jobs' children, in order, and send them to the evaluators the route names:
    /// one message per evaluator and batch, once this message's children of that batch are
    /// made (the archive sends the jobs of one batch together).
    Breed(Vec<BreedJob>, EvaluatorRoute),
}

/// Messages an evaluator handles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EvaluatorMsg {
    /// Children from a mutator (rendered, or lost on the way).
    Children(Vec<Result<Offspring, LostChild>>),
    /// Linger timer; runs the partial batches if nothing arrived since it was set.
    Linger(u64),
    /// One batch's breeding jobs, to breed, render and score on the inference thread: how a
    /// run without mutators breeds (`mutators = 0` on CPU).
    Breed(BreedBatch),
}

/// A batch to breed and score: the children with indices `first..end` of the jobs'
/// generation, and every job that makes one of them (a job whose other child belongs to the
/// next or previous batch is bred here too, and that child left to its own batch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreedBatch {
    /// The jobs, in child order.
    pub jobs: Vec<BreedJob>,
    /// The batch's first child index.
    pub first: u32,
    /// One past its last.
    pub end: u32,
}

impl BreedBatch {
    /// Whether child `id` is in this batch.
    pub fn holds(&self, id: u64) -> bool {
        (self.first..self.end).contains(&child_index(id))
    }

    /// The batch's children, `(id, generation, generation size)`, in id order.
    pub fn members(&self) -> Vec<(u64, u64, u32)> {
        self.jobs
            .iter()
            .flat_map(|j| {
                j.child_ids()
                    .map(move |id| (id, j.generation, j.generation_size))
            })
            .filter(|&(id, _, _)| self.holds(id))
            .collect()
    }
}

/// What a worker node offers the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Scores batches (an evaluator of the run's evaluator group).
    Evaluator,
    /// Breeds and renders children (a mutator of the run's mutator group).
    Mutator,
    /// Both: a mutator and an evaluator.
    Both,
}

impl NodeRole {
    /// It runs an evaluator.
    pub fn evaluates(self) -> bool {
        matches!(self, NodeRole::Evaluator | NodeRole::Both)
    }

    /// It runs a mutator.
    pub fn mutates(self) -> bool {
        matches!(self, NodeRole::Mutator | NodeRole::Both)
    }

    /// Its name in flags, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Evaluator => "evaluator",
            NodeRole::Mutator => "mutator",
            NodeRole::Both => "both",
        }
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a worker node has done since it joined (sent with every heartbeat).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeWork {
    /// Breed jobs its mutator finished.
    pub jobs: u64,
    /// Children its mutator made (rendered or lost).
    pub bred: u64,
    /// Batches its evaluator ran.
    pub batches: u64,
    /// Children its evaluator scored.
    pub scored: u64,
}

/// A worker node's running counts of its work, shared by its mutator and evaluator (local
/// only: its heartbeat sends a [`NodeWork`] snapshot).
#[derive(Debug, Default)]
pub struct WorkTally {
    /// Breed jobs finished.
    pub jobs: std::sync::atomic::AtomicU64,
    /// Children made.
    pub bred: std::sync::atomic::AtomicU64,
    /// Batches run.
    pub batches: std::sync::atomic::AtomicU64,
    /// Children scored.
    pub scored: std::sync::atomic::AtomicU64,
}

impl WorkTally {
    /// The counts now.
    pub fn snapshot(&self) -> NodeWork {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        NodeWork {
            jobs: get(&self.jobs),
            bred: get(&self.bred),
            batches: get(&self.batches),
            scored: get(&self.scored),
        }
    }
}

/// Messages the daemon's registrar handles: a worker node joining the run and its
/// heartbeats (see [`crate::cluster`]). It is found through the process group
/// [`names::REGISTRAR_GROUP`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RegistrarMsg {
    /// A worker asks for the run's config; the answer goes to the process group
    /// [`names::worker(node)`](names::worker). Sent again until answered (the group's
    /// membership may reach the daemon after the message).
    Hello {
        /// The worker's node name (unique per worker process).
        node: String,
        /// Pareidolia's version on the worker.
        version: String,
    },
    /// The worker loaded the run's models and plugins: this is what it loaded, please take
    /// it into the run.
    Join {
        /// The worker's node name.
        node: String,
        /// What the worker offers.
        role: NodeRole,
        /// The identity of what it loaded (models with their sha256, plugins, labels).
        identity: RunIdentity,
    },
    /// A remote evaluator's results: the one message worker nodes send towards the archive.
    /// The registrar takes them only from an evaluator slot it gave a node that is still in
    /// the run, counts them for that node, and forwards them; the archive then checks each
    /// child against what its generation routed to that evaluator.
    Results(Results),
    /// Children a worker's mutator made for an evaluator it cannot reach: worker nodes
    /// connect to the daemon only (a star), so children for another worker's evaluator go
    /// through the daemon, which forwards them.
    Relay {
        /// The evaluator index the route names.
        to: u32,
        /// The children, as a mutator sends them.
        children: Vec<Result<Offspring, LostChild>>,
    },
    /// A joined worker is alive, and what it has done; answered with [`WorkerMsg::Ack`].
    Heartbeat {
        /// The worker's node name.
        node: String,
        /// Its totals since it joined.
        work: NodeWork,
    },
}

/// Messages a worker node's own actor handles: the registrar's answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkerMsg {
    /// The run to load.
    Run {
        /// The run's actor-name prefix.
        run: String,
        /// The daemon's resolved config, as TOML.
        config: String,
        /// The folder its relative paths are relative to, on the daemon's machine.
        base_dir: String,
        /// The run's identity (what the worker must load to take part).
        identity: Box<RunIdentity>,
    },
    /// Taken into the run; an evaluator as evaluator `slot`.
    Welcome {
        /// The evaluator index the archive's route sends batches to (evaluator roles).
        slot: Option<u32>,
    },
    /// Not taken, and why (logged on the daemon too).
    Refused {
        /// What differs and what to do.
        reason: String,
    },
    /// A heartbeat arrived (the daemon is alive and still counts this worker in).
    Ack,
}

/// Observations the metrics actor handles (local only).
#[derive(Debug, Clone)]
pub enum MetricsMsg {
    /// The archive's progress after a generation (or a checkpoint).
    Progress(Box<Progress>),
    /// One inference batch.
    Batch(BatchTimings),
    /// Seconds the archive spent inserting a generation.
    ArchiveInsert(f64),
    /// Children lost, by stage (counted once, after duplicates from re-issues are gone).
    Lost(Vec<LossKind>),
    /// Children the archive handed out and has not got back.
    AwaitingResults(usize),
    /// Children in evaluators' results that the archive refused, by cause.
    Rejected(Vec<Rejection>),
    /// The archive re-issued the work in flight.
    Reissued(ReissueCause),
}

// Local-only: with ractor's `cluster` feature, a message that never crosses a node says so.
impl ractor::Message for MetricsMsg {}

/// Casts an observation to the metrics actor named `metrics_actor`, if one runs. A metrics
/// actor that is gone costs observations, never the run.
pub fn observe(metrics_actor: &str, msg: MetricsMsg) {
    if let Some(cell) = ractor::registry::where_is(metrics_actor) {
        let actor: ractor::ActorRef<MetricsMsg> = cell.into();
        let _ = actor.cast(msg);
    }
}

/// The actor registered as `name` in this process, else the first member of the process group
/// `name` (an actor of that name on another node), else `None`.
pub fn find(name: &str) -> Option<ractor::ActorCell> {
    ractor::registry::where_is(name).or_else(|| {
        let mut members = ractor::pg::get_members(&name.to_owned());
        members.sort_by_key(|m| (!m.get_id().is_local(), m.get_id()));
        members.into_iter().next()
    })
}

/// The evaluators a generation's batches can go to now: `0..n` for the longest run of
/// evaluator indices from 0 whose process groups have a member (local evaluators join theirs
/// when they start, a worker node's when the registrar has taken it in).
pub fn live_evaluators(run: &str) -> u32 {
    let mut n = 0;
    while !ractor::pg::get_members(&names::evaluator(run, n as usize)).is_empty() {
        n += 1;
    }
    n
}

/// On a worker node: the daemon's registrar (the member of [`names::REGISTRAR_GROUP`] on
/// another node), if the session has brought it here.
pub fn daemon_registrar() -> Option<ractor::ActorRef<RegistrarMsg>> {
    ractor::pg::get_members(&names::REGISTRAR_GROUP.to_owned())
        .into_iter()
        .find(|m| !m.get_id().is_local())
        .map(Into::into)
}

/// Worker nodes taking part in the run now: the distinct other nodes with a member in its
/// evaluator or mutator group.
pub fn remote_nodes(run: &str) -> u32 {
    let mut nodes = std::collections::BTreeSet::new();
    for group in [names::evaluator_group(run), names::mutator_group(run)] {
        for m in ractor::pg::get_members(&group) {
            if !m.get_id().is_local() {
                nodes.insert(m.get_id().node());
            }
        }
    }
    nodes.len() as u32
}

/// The names a run's actors register under and the process groups they join, all prefixed
/// by the run's id so that several runs can share one process (tests do).
///
/// Names in ractor's registry are seen in their own process only; process groups are kept in
/// step across every node of a cluster (`ractor_cluster`). So the actors that other nodes
/// must reach — the archive, each evaluator — also join a process group of the same name as
/// their registry name, and senders look there when the registry has nobody.
pub mod names {
    /// The process group of every daemon's registrar (not per run: a worker does not know the
    /// run's id before it has asked).
    pub const REGISTRAR_GROUP: &str = "pareidolia.registrar";
    /// The process group of a worker node's own actor, which the registrar answers.
    pub fn worker(node: &str) -> String {
        format!("pareidolia.worker.{node}")
    }
    /// The supervisor.
    pub fn supervisor(run: &str) -> String {
        format!("{run}.supervisor")
    }
    /// The archive owner (registered in its own process only: other nodes reach the
    /// registrar, [`REGISTRAR_GROUP`]).
    pub fn archive(run: &str) -> String {
        format!("{run}.archive")
    }
    /// Evaluator `index` (one inference worker, local or on a worker node): its registry
    /// name and its own process group, which has one member while it runs.
    pub fn evaluator(run: &str, index: usize) -> String {
        format!("{run}.evaluator.{index}")
    }
    /// The evaluators' process group.
    pub fn evaluator_group(run: &str) -> String {
        format!("{run}.evaluators")
    }
    /// Mutator `index`.
    pub fn mutator(run: &str, index: usize) -> String {
        format!("{run}.mutator.{index}")
    }
    /// The mutators' process group.
    pub fn mutator_group(run: &str) -> String {
        format!("{run}.mutators")
    }
    /// The metrics actor.
    pub fn metrics(run: &str) -> String {
        format!("{run}.metrics")
    }
}

#[cfg(test)]
mod tests {
    use ractor::Message;

    use super::*;

    /// What ractor_cluster would put on the wire and take off it at the other end.
    fn over_the_wire<M: Message + PartialEq + std::fmt::Debug + Clone>(msg: M) {
        assert!(M::serializable(), "{msg:?} cannot cross a node");
        let bytes = msg.clone().serialize().expect("serialises");
        assert_eq!(M::deserialize(bytes).expect("deserialises"), msg);
    }

    #[test]
    fn the_messages_that_cross_nodes_survive_serialisation() {
        let genome: Genome = Arc::from(&[1u8, 2, 3][..]);
        over_the_wire(MutatorMsg::Breed(
            vec![BreedJob {
                generation: 4,
                generation_size: 200,
                first_index: 6,
                children: 2,
                recipe: Recipe::Breed {
                    a: genome.clone(),
                    b: Arc::from(&[9u8][..]),
                },
                crossover_seed: 7,
                child_seeds: vec![8, 9],
                steer: vec![Some(3), None],
            }],
            EvaluatorRoute {
                batch_size: 20,
                evaluators: 3,
            },
        ));
        over_the_wire(EvaluatorMsg::Children(vec![
            Ok(Offspring {
                id: child_id(4, 6),
                generation: 4,
                generation_size: 200,
                genome: genome.clone(),
                pixels: vec![0, 255, 7],
                breed_s: 1e-5,
                steer: Some(3),
            }),
            Err(LostChild {
                id: child_id(4, 7),
                generation: 4,
                generation_size: 200,
                stage: LossKind::Render,
                reason: "no".into(),
            }),
        ]));
        let pixels = Offspring {
            id: 0,
            generation: 0,
            generation_size: 1,
            genome: Arc::from(vec![7u8; 1000]),
            pixels: vec![255u8; 28 * 28],
            breed_s: 0.0,
            steer: None,
        };
        // Bytes travel as byte strings: a 784-pixel image and a 1000-byte genome take little
        // more than their 1784 bytes (a sequence of numbers would take up to twice that).
        let wire = EvaluatorMsg::Children(vec![Ok(pixels)])
            .serialize()
            .unwrap();
        let ractor::message::SerializedMessage::Cast { args, .. } = wire else {
            panic!("a cast")
        };
        assert!(args.len() < 1784 + 200, "{} bytes", args.len());
        over_the_wire(RegistrarMsg::Results(Results {
            from: 2,
            scored: vec![ScoredChild {
                id: 3,
                generation: 0,
                genome,
                scores: vec![0.25, f32::MIN_POSITIVE],
                probabilities: vec![0.5, 0.5],
            }],
            lost: Vec::new(),
            times: StageTimes {
                breed_s: 1.0,
                inference_s: 2.0,
                fitness_s: 3.0,
                batches: 4,
                gradient_steps: 5,
                gradient_s: 6.0,
            },
        }));
        over_the_wire(RegistrarMsg::Heartbeat {
            node: "w".into(),
            work: NodeWork {
                jobs: 1,
                bred: 2,
                batches: 3,
                scored: 4,
            },
        });
        over_the_wire(WorkerMsg::Welcome { slot: Some(2) });
        // The archive and the metrics actor are local only: no node can reach them.
        assert!(!MetricsMsg::serializable());
        assert!(!ArchiveMsg::serializable());
    }

    #[test]
    fn a_batch_goes_to_one_evaluator_and_batches_spread_over_all() {
        let route = EvaluatorRoute {
            batch_size: 20,
            evaluators: 3,
        };
        // Generation 5's batch 0 (children 0..20) goes to evaluator 5 % 3, whole.
        assert!((0..20).all(|i| route.evaluator_of(child_id(5, i)) == 2));
        assert_eq!(route.evaluator_of(child_id(5, 20)), 0);
        assert_eq!(route.evaluator_of(child_id(5, 40)), 1);
        assert_eq!(route.evaluator_of(child_id(6, 0)), 0);
        // Ten batches of a generation, three evaluators: 4, 3 and 3 batches each.
        let mut per = [0; 3];
        for k in 0..10 {
            per[route.evaluator_of(child_id(7, k * 20))] += 1;
        }
        assert_eq!(per, [3, 4, 3]);
        let one = EvaluatorRoute {
            batch_size: 20,
            evaluators: 1,
        };
        assert!((0..200).all(|i| one.evaluator_of(child_id(9, i)) == 0));
    }

    #[test]
    fn child_ids_split_into_generation_and_index() {
        let id = child_id(7, 199);
        assert_eq!((id >> 32, child_index(id)), (7, 199));
        let job = BreedJob {
            generation: 7,
            generation_size: 200,
            first_index: 198,
            children: 2,
            recipe: Recipe::Random,
            crossover_seed: 0,
            child_seeds: vec![1, 2],
            steer: Vec::new(),
        };
        assert_eq!(
            job.child_ids().collect::<Vec<_>>(),
            [child_id(7, 198), child_id(7, 199)]
        );
        assert_eq!(LossKind::NonFiniteScore.to_string(), "non_finite_score");
        assert_eq!(
            serde_json::to_string(&LossKind::NonFiniteScore).unwrap(),
            "\"non_finite_score\""
        );
    }
}
