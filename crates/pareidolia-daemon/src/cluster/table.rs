//! The daemon's table of worker nodes, as plain data: who connected, who joined the run in
//! which role and evaluator slot, when each was last heard from, what it did, and why it
//! left; and what the daemon counts about nodes it refused. No actor and no lock here: one
//! actor owns the table ([`crate::cluster::keeper`]); the HTTP handlers and the metrics see
//! [`NodeStatus`] rows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ractor::ActorRef;

use crate::map_elites::messages::{NodeRole, NodeWork};

/// What the daemon counts about worker nodes.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Connections closed before they authenticated (a wrong cookie, a stray client).
    pub unauthenticated: AtomicU64,
    /// Workers the registrar refused for their version.
    pub version: AtomicU64,
    /// Workers the registrar refused for what they loaded (models, plugins, labels).
    pub identity: AtomicU64,
    /// Results from an evaluator slot no joined node holds (dropped).
    pub results: AtomicU64,
    /// Workers taken into the run.
    pub joined: AtomicU64,
}

impl NodeCounters {
    /// The refusals by cause, for `pareidolia_cluster_refused_total`.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("unauthenticated", get(&self.unauthenticated)),
            ("version", get(&self.version)),
            ("identity", get(&self.identity)),
            ("results", get(&self.results)),
        ]
    }
}

/// A worker node as `/status` and the metrics show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeStatus {
    /// Its node name (`pareidolia-worker-PID-...`).
    pub name: String,
    /// What it does in the run (`evaluator`, `mutator`, `both`).
    pub role: NodeRole,
    /// Its address as the daemon sees it.
    pub address: String,
    /// Its evaluator index, for evaluator roles.
    pub slot: Option<u32>,
    /// Still connected and in the run.
    pub connected: bool,
    /// Seconds since it was last heard from (a heartbeat or results).
    pub silent_s: f64,
    /// What it reports having done.
    pub work: NodeWork,
    /// Children of its results the daemon forwarded to the archive.
    pub scored: u64,
    /// Unix time it joined.
    pub joined_unix_s: f64,
    /// Why it left, once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left: Option<String>,
}

/// One node the daemon has seen.
#[derive(Debug)]
struct NodeEntry {
    address: String,
    node_id: u64,
    session: Option<ActorRef<ractor_cluster::NodeSessionMessage>>,
    role: Option<NodeRole>,
    slot: Option<u32>,
    connected: bool,
    last_seen: Instant,
    work: NodeWork,
    scored: u64,
    joined_unix_s: f64,
    left: Option<String>,
}

/// The daemon's table of worker nodes: plain data, owned by one actor
/// ([`NodeKeeper`](crate::cluster::keeper::NodeKeeper)). A node is *in the run* from its
/// join until its session closes.
#[derive(Debug, Default)]
pub struct NodeTable {
    nodes: BTreeMap<String, NodeEntry>,
}

/// What a closed session leaves to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLeft {
    /// Its ractor node id (its actors' `ActorId::node()`).
    pub node_id: u64,
    /// Its role, if it had joined the run.
    pub role: Option<NodeRole>,
}

impl NodeTable {
    /// A session authenticated.
    pub fn opened(
        &mut self,
        name: &str,
        address: &str,
        node_id: u64,
        session: Option<ActorRef<ractor_cluster::NodeSessionMessage>>,
    ) {
        self.nodes.insert(
            name.to_owned(),
            NodeEntry {
                address: address.to_owned(),
                node_id,
                session,
                role: None,
                slot: None,
                connected: true,
                last_seen: Instant::now(),
                work: NodeWork::default(),
                scored: 0,
                joined_unix_s: 0.0,
                left: None,
            },
        );
    }

    /// A session closed (`why`); what the node was doing, if it was connected.
    pub fn closed(&mut self, name: &str, why: &str) -> Option<NodeLeft> {
        let node = self.nodes.get_mut(name).filter(|n| n.connected)?;
        node.connected = false;
        node.session = None;
        node.left = Some(why.to_owned());
        let left = NodeLeft {
            node_id: node.node_id,
            role: node.role,
        };
        // A node that never joined leaves no row.
        if node.role.is_none() {
            self.nodes.remove(name);
        }
        Some(left)
    }

    /// The node joined the run.
    pub fn joined(&mut self, name: &str, role: NodeRole, slot: Option<u32>, unix_s: f64) -> bool {
        let Some(node) = self.nodes.get_mut(name).filter(|n| n.connected) else {
            return false;
        };
        node.role = Some(role);
        node.slot = slot;
        node.joined_unix_s = unix_s;
        node.last_seen = Instant::now();
        true
    }

    /// A heartbeat; false for a node not in the run.
    pub fn heard(&mut self, name: &str, work: NodeWork) -> bool {
        match self
            .nodes
            .get_mut(name)
            .filter(|n| n.connected && n.role.is_some())
        {
            Some(node) => {
                node.work = work;
                node.last_seen = Instant::now();
                true
            }
            None => false,
        }
    }

    /// The node in the run that holds evaluator `slot`; counts `children` scored for it.
    pub fn results_from(&mut self, slot: u32, children: u64) -> Option<&str> {
        let (name, node) = self
            .nodes
            .iter_mut()
            .find(|(_, n)| n.connected && n.slot == Some(slot))?;
        node.scored += children;
        node.last_seen = Instant::now();
        Some(name.as_str())
    }

    /// The evaluator slot of `name` if it has one, else the lowest slot from `first` that no
    /// connected node holds and `free` accepts.
    pub fn slot_for(&self, name: &str, first: u32, free: impl Fn(u32) -> bool) -> u32 {
        if let Some(slot) = self.nodes.get(name).and_then(|n| n.slot) {
            return slot;
        }
        (first..)
            .find(|s| {
                !self
                    .nodes
                    .values()
                    .any(|n| n.connected && n.slot == Some(*s))
                    && free(*s)
            })
            .expect("a free evaluator index")
    }

    /// Nodes in the run silent for longer than `timeout`: their sessions, to close.
    pub fn silent(
        &self,
        timeout: Duration,
    ) -> Vec<(String, ActorRef<ractor_cluster::NodeSessionMessage>)> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.connected && n.role.is_some() && n.last_seen.elapsed() > timeout)
            .filter_map(|(name, n)| Some((name.clone(), n.session.clone()?)))
            .collect()
    }

    /// Every node that joined the run, in name order.
    pub fn statuses(&self) -> Vec<NodeStatus> {
        self.nodes
            .iter()
            .filter_map(|(name, n)| {
                Some(NodeStatus {
                    name: name.clone(),
                    role: n.role?,
                    address: n.address.clone(),
                    slot: n.slot,
                    connected: n.connected,
                    silent_s: if n.connected {
                        n.last_seen.elapsed().as_secs_f64()
                    } else {
                        0.0
                    },
                    work: n.work,
                    scored: n.scored,
                    joined_unix_s: n.joined_unix_s,
                    left: n.left.clone(),
                })
            })
            .collect()
    }
}

/// How long a node in the run may be silent before the daemon closes its session and
/// re-issues its work (heartbeats come every [`HEARTBEAT_EVERY`]).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a worker reports (and the daemon checks for silent nodes).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    fn work(batches: u64) -> NodeWork {
        NodeWork {
            batches,
            ..NodeWork::default()
        }
    }

    #[test]
    fn a_node_is_in_the_run_from_its_join_until_its_session_closes() {
        let mut t = NodeTable::default();
        assert!(
            !t.joined("w1", NodeRole::Evaluator, Some(2), 5.0),
            "no session"
        );
        t.opened("w1", "10.0.0.1:1", 7, None);
        assert!(t.statuses().is_empty(), "connected, not joined: no row");
        assert!(!t.heard("w1", work(1)), "not in the run yet");
        assert!(t.joined("w1", NodeRole::Evaluator, Some(2), 5.0));
        assert!(t.heard("w1", work(3)));
        assert_eq!(t.results_from(2, 10), Some("w1"));
        assert_eq!(t.results_from(3, 10), None, "no node holds slot 3");
        let rows = t.statuses();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.name.as_str(), r.role, r.slot, r.connected, r.scored),
            ("w1", NodeRole::Evaluator, Some(2), true, 10)
        );
        assert_eq!(r.work, work(3));
        assert_eq!(r.joined_unix_s, 5.0);
        let left = t.closed("w1", "disconnected").unwrap();
        assert_eq!(
            left,
            NodeLeft {
                node_id: 7,
                role: Some(NodeRole::Evaluator)
            }
        );
        assert_eq!(t.closed("w1", "again"), None, "closed once");
        let r = &t.statuses()[0];
        assert!(!r.connected);
        assert_eq!(r.left.as_deref(), Some("disconnected"));
        assert_eq!(t.results_from(2, 1), None, "a closed node holds no slot");
    }

    #[test]
    fn a_node_that_never_joined_leaves_no_row() {
        let mut t = NodeTable::default();
        t.opened("stray", "10.0.0.9:1", 9, None);
        assert_eq!(
            t.closed("stray", "disconnected"),
            Some(NodeLeft {
                node_id: 9,
                role: None
            })
        );
        assert!(t.statuses().is_empty());
    }

    #[test]
    fn slots_are_kept_by_their_node_and_reused_once_free() {
        let mut t = NodeTable::default();
        for (name, id) in [("a", 1), ("b", 2)] {
            t.opened(name, "h:1", id, None);
        }
        let free = |_| true;
        assert_eq!(t.slot_for("a", 2, free), 2);
        t.joined("a", NodeRole::Evaluator, Some(2), 0.0);
        assert_eq!(t.slot_for("b", 2, free), 3);
        assert_eq!(t.slot_for("b", 2, |s| s != 3), 4, "3 still has an actor");
        t.joined("b", NodeRole::Both, Some(3), 0.0);
        assert_eq!(t.slot_for("a", 2, free), 2, "a node keeps its slot");
        t.closed("a", "disconnected");
        t.opened("c", "h:1", 3, None);
        assert_eq!(
            t.slot_for("c", 2, free),
            2,
            "a departed node's slot is free"
        );
    }

    #[test]
    fn only_nodes_in_the_run_can_be_silent() {
        let mut t = NodeTable::default();
        t.opened("joined", "h:1", 1, None);
        t.opened("waiting", "h:2", 2, None);
        t.joined("joined", NodeRole::Mutator, None, 0.0);
        // Without a session there is nothing to close.
        assert!(t.silent(Duration::ZERO).is_empty());
        assert!(t.silent(Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn refusals_are_counted_by_cause() {
        let c = NodeCounters::default();
        c.identity.fetch_add(2, Ordering::Relaxed);
        c.results.fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            c.refusals(),
            [
                ("unauthenticated", 0),
                ("version", 0),
                ("identity", 2),
                ("results", 1)
            ]
        );
    }
}
