//! NodeKeeper: the one owner of the daemon's [`NodeTable`]. The node server's session
//! callbacks tell it who connected and who left, the registrar asks it to take a node into
//! the run, to record a heartbeat and who holds an evaluator slot, the HTTP handlers ask it
//! for the rows of `/status` and the metrics ([`ClusterView`]), and every
//! [`HEARTBEAT_EVERY`] it closes the sessions of nodes silent for [`NODE_TIMEOUT`]. A node
//! that leaves the run with work in flight has the archive re-issue that work.
//!
//! It is local: its messages carry session references and reply ports, so it is in no
//! process group and no worker node can reach it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::cluster::table::{
    HEARTBEAT_EVERY, NODE_TIMEOUT, NodeCounters, NodeLeft, NodeStatus, NodeTable,
};
use crate::map_elites::messages::{ArchiveMsg, NodeRole, NodeWork, ReissueCause, names};
use crate::run::ledger::unix_now;

/// How long an ask of the keeper may take before the asker goes on without an answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// The actor.
#[derive(Debug, Default)]
pub struct NodeKeeper;

/// What the keeper is told and asked.
pub enum KeeperMsg {
    /// A node's session authenticated.
    Opened {
        /// Its node name.
        name: String,
        /// Its address.
        address: String,
        /// Its ractor node id.
        node_id: u64,
        /// Its session, to close if it falls silent.
        session: ActorRef<ractor_cluster::NodeSessionMessage>,
    },
    /// A node's session closed.
    Closed {
        /// Its node name.
        name: String,
        /// Why.
        why: String,
    },
    /// Take a node into the run in `role`; the answer is its evaluator slot (`Some(None)`
    /// for a role without one), or `None` when its session is gone.
    Join {
        /// Its node name.
        name: String,
        /// Its role.
        role: NodeRole,
        /// The answer.
        reply: RpcReplyPort<Option<Option<u32>>>,
    },
    /// A heartbeat; the answer says whether the node is in the run.
    Heard {
        /// Its node name.
        name: String,
        /// What it reports.
        work: NodeWork,
        /// The answer.
        reply: RpcReplyPort<bool>,
    },
    /// Results of evaluator `slot` arrived, `children` scored; the answer says whether a
    /// node in the run holds that slot (else they are dropped).
    Results {
        /// The evaluator slot.
        slot: u32,
        /// Children scored.
        children: u64,
        /// The answer.
        reply: RpcReplyPort<bool>,
    },
    /// The rows of every node that joined the run.
    Statuses(RpcReplyPort<Vec<NodeStatus>>),
    /// Close the sessions of silent nodes.
    CheckSilence,
}

impl ractor::Message for KeeperMsg {}

/// Its state (and start-up arguments).
pub struct KeeperState {
    /// The run's id (prefix of its actors' names and groups).
    pub run: String,
    /// The first evaluator index a worker gets (after the local evaluators).
    pub first_slot: u32,
    /// The table.
    pub table: NodeTable,
}

impl KeeperState {
    /// The evaluator index of `name`: the one it had, else the lowest free one (no connected
    /// node holds it and no actor of a departed node is still in its group).
    fn slot(&self, name: &str) -> u32 {
        self.table.slot_for(name, self.first_slot, |s| {
            ractor::pg::get_members(&names::evaluator(&self.run, s as usize)).is_empty()
        })
    }
}

impl Actor for NodeKeeper {
    type Msg = KeeperMsg;
    type State = KeeperState;
    type Arguments = KeeperState;

    async fn pre_start(
        &self,
        myself: ActorRef<KeeperMsg>,
        args: KeeperState,
    ) -> Result<KeeperState, ActorProcessingErr> {
        myself.send_interval(HEARTBEAT_EVERY, || KeeperMsg::CheckSilence);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<KeeperMsg>,
        msg: KeeperMsg,
        state: &mut KeeperState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            KeeperMsg::Opened {
                name,
                address,
                node_id,
                session,
            } => state.table.opened(&name, &address, node_id, Some(session)),
            KeeperMsg::Closed { name, why } => {
                if let Some(left) = state.table.closed(&name, &why) {
                    reissue_after(state.run.clone(), name, left);
                }
            }
            KeeperMsg::Join { name, role, reply } => {
                let slot = role.evaluates().then(|| state.slot(&name));
                let joined = state.table.joined(&name, role, slot, unix_now());
                let _ = reply.send(joined.then_some(slot));
            }
            KeeperMsg::Heard { name, work, reply } => {
                let _ = reply.send(state.table.heard(&name, work));
            }
            KeeperMsg::Results {
                slot,
                children,
                reply,
            } => {
                let _ = reply.send(state.table.results_from(slot, children).is_some());
            }
            KeeperMsg::Statuses(reply) => {
                let _ = reply.send(state.table.statuses());
            }
            KeeperMsg::CheckSilence => {
                for (name, session) in state.table.silent(NODE_TIMEOUT) {
                    tracing::warn!(
                        node = %name,
                        "worker node silent for {} s: closing its session; its work is re-issued",
                        NODE_TIMEOUT.as_secs()
                    );
                    session.stop(Some("silent".into()));
                }
            }
        }
        Ok(())
    }
}

/// Asks the keeper; `None` when it is gone or does not answer in time.
pub async fn ask<T: Send + 'static>(
    keeper: &ActorRef<KeeperMsg>,
    msg: impl FnOnce(RpcReplyPort<T>) -> KeeperMsg,
) -> Option<T> {
    match keeper.call(msg, Some(ASK_TIMEOUT)).await {
        Ok(ractor::rpc::CallResult::Success(answer)) => Some(answer),
        _ => None,
    }
}

/// What the HTTP handlers see of the cluster: the keeper, to ask for the node rows, and the
/// refusal counts.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// The table's owner.
    pub keeper: ActorRef<KeeperMsg>,
    /// The counts.
    pub counters: Arc<NodeCounters>,
}

impl ClusterView {
    /// Every node that joined the run (none if the keeper does not answer).
    pub async fn nodes(&self) -> Vec<NodeStatus> {
        ask(&self.keeper, KeeperMsg::Statuses)
            .await
            .unwrap_or_default()
    }
}

/// After node `left` is gone from the run's process groups (ractor_cluster removes a closed
/// session's remote actors shortly after the event), asks the archive to re-issue its work
/// over the evaluators and mutators that remain.
fn reissue_after(run: String, name: String, left: NodeLeft) {
    let Some(role) = left.role else { return };
    tokio::spawn(async move {
        let groups = [names::evaluator_group(&run), names::mutator_group(&run)];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && groups.iter().any(|g| {
                ractor::pg::get_members(g)
                    .iter()
                    .any(|m| !m.get_id().is_local() && m.get_id().node() == left.node_id)
            })
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match ractor::registry::where_is(names::archive(&run)) {
            Some(cell) => {
                tracing::warn!(node = %name, %role, "worker node left the run; its work in flight is re-issued to the others");
                let archive: ActorRef<ArchiveMsg> = cell.into();
                let _ = archive.cast(ArchiveMsg::Reissue(ReissueCause::NodeLost));
            }
            None => tracing::debug!(node = %name, "worker node left after the run"),
        }
    });
}
