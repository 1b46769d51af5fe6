//! Worker nodes over `ractor_cluster`, ractor's own distribution layer: the daemon listens
//! for nodes ([`DaemonNode`]), a `pareidolia worker` process joins it ([`run_worker`]) and
//! runs an evaluator of the run, fed exactly like a local one.
//!
//! The wire is ractor_cluster's (authenticated sessions with a shared cookie, process groups
//! kept in step across nodes, remote actor references); this module adds no protocol of its
//! own, only two small actors that talk over it with plain serde messages
//! ([`RegistrarMsg`], [`WorkerMsg`] in [`crate::map_elites::messages`]):
//!
//! 1. the worker connects and authenticates (a wrong cookie, or a port that is not a
//!    cluster node, ends it here with a clear error); the daemon's port is [`gate`]'s, which
//!    bounds the connections, closes those that do not authenticate in time and hands the
//!    rest to a node server on loopback;
//! 2. it asks the daemon's registrar (process group [`names::REGISTRAR_GROUP`]) for the run:
//!    the daemon's version is checked, and the answer is the run's resolved config and
//!    identity;
//! 3. it loads that config's models and plugins (or its own `--config`, for other paths),
//!    and sends what it loaded; the registrar compares it with the run's identity (names,
//!    versions, model sha256) and refuses a mismatch, logging it on both sides;
//! 4. taken in, it starts an evaluator as evaluator `slot` (after the daemon's local ones)
//!    and joins that evaluator's process group. From the next generation on, the archive's
//!    [`EvaluatorRoute`](crate::map_elites::messages::EvaluatorRoute) spreads batches over it too: a batch
//!    is formed by child index and scored whole by one evaluator, so the archive does not
//!    depend on which evaluator, local or remote, scored it.
//!
//! 5. a mutator role joins the run's mutator group: the archive's jobs go round-robin over
//!    every mutator, local and remote, a batch's jobs per message;
//! 6. a joined worker sends a heartbeat every [`HEARTBEAT_EVERY`] with what it did; the
//!    daemon answers it, shows the nodes in `/status` and the metrics, and closes the
//!    session of a node silent for [`NODE_TIMEOUT`]. When a node's session closes (it was
//!    killed, its machine or the network went away, or it fell silent), the archive
//!    re-issues the work in flight over the evaluators and mutators that remain, the same
//!    accounting as a restarted local actor; a node that joins again is used again. A
//!    worker leaves when the daemon closes the connection, or when the daemon has not
//!    answered for `--daemon-timeout`.
//!
//! What a worker can do to the run: results reach the archive only through the registrar,
//! which takes them only from the evaluator slot of a node in the run, and the archive
//! takes a child only if its generation routed it to that evaluator, with one finite score
//! per class ([`Generation::accept_from`](crate::map_elites::generation::Generation::accept_from)); the
//! archive itself is in no process group, so no node can send it anything else (a
//! shutdown, a re-issue). A node holding the cookie is trusted to compute honestly: an
//! evaluator could report false scores for the batches routed to it, a mutator could make
//! any genome; as with any distributed evolution, give the cookie only to your machines.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pareidolia_core::config::RunConfig;
use pareidolia_core::summary::PluginSummary;
use pareidolia_core::{BackendChoice, IdentityDifference, RunIdentity};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use tokio::sync::mpsc;

use self::gate::{HANDSHAKE_DEADLINE, LOG_EVERY, OpenConnections, Throttle};
use self::keeper::{KeeperMsg, KeeperState, NodeKeeper};
use self::table::{NodeCounters, NodeTable};
use crate::experiment::Experiment;
use crate::map_elites::evaluator_actor::{BatchQueue, EvaluatorActor, EvaluatorArgs, ResultSink};
use crate::map_elites::messages::{
    ArchiveMsg, EvaluatorMsg, NodeRole, RegistrarMsg, Results, WorkTally, WorkerMsg,
    daemon_registrar, names,
};
use crate::map_elites::mutator_actor::{MutatorActor, MutatorState};
use crate::map_elites::steer::Steering;
use crate::run::setup::{ModelSetup, Setup, SetupError};
use crate::service::signals::shutdown_signal;

pub mod gate;
pub mod keeper;
pub mod table;

pub use keeper::ClusterView;
pub use table::{HEARTBEAT_EVERY, NODE_TIMEOUT, NodeStatus};

/// The cookie of a cluster on loopback started without `--cookie-file`: every process of
/// this machine may join such a cluster, nothing beyond it can reach it.
pub const LOOPBACK_COOKIE: &str = "pareidolia-loopback";

/// How long a worker waits for the cluster handshake (TCP connect, authentication, the
/// first exchange of process groups).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a worker waits for the daemon's registrar to answer.
pub const REGISTRAR_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a cluster node could not start, join or go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The address is not `HOST:PORT`.
    #[error("{flag} {address}: {why}")]
    Address {
        /// The flag it came from.
        flag: &'static str,
        /// The address as given.
        address: String,
        /// What is wrong.
        why: String,
    },
    /// A non-loopback listen without a cookie.
    #[error(
        "refusing to listen for worker nodes on {address} without a cookie: anyone who reaches it could join the run; pass --cookie-file FILE (a secret, the same file on every worker), or listen on loopback (127.0.0.1:PORT)"
    )]
    NoCookie {
        /// The address.
        address: String,
    },
    /// The cookie file cannot be read.
    #[error("cannot read the cookie file {path}: {cause}")]
    CookieFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The cookie file is empty.
    #[error(
        "the cookie file {path} is empty; write a secret into it, e.g. `head -c 32 /dev/urandom | base64 > {path}`"
    )]
    EmptyCookie {
        /// The file.
        path: PathBuf,
    },
    /// The listen address cannot be bound.
    #[error(
        "cannot listen for worker nodes on {address}: {cause}; choose another address with --cluster-listen"
    )]
    Listen {
        /// The address.
        address: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The node or one of its actors did not start.
    #[error("cannot start the cluster node: {0}")]
    Node(String),
    /// The TCP connection failed.
    #[error(
        "cannot connect to {address}: {cause}; is a pareidolia daemon running there with --cluster-listen {address}?"
    )]
    Connect {
        /// The address.
        address: String,
        /// The I/O error.
        cause: String,
    },
    /// The daemon's node refused this node's cookie.
    #[error(
        "{address} refused this worker's cookie ({cookie}): give the worker the daemon's --cookie-file"
    )]
    Cookie {
        /// The address.
        address: String,
        /// Where the worker's cookie came from.
        cookie: String,
    },
    /// The port closed the connection before a cluster peer had named itself.
    #[error(
        "{address} closed the connection during the cluster handshake: it is not a pareidolia daemon's cluster port (the daemon's --cluster-listen address, not its HTTP port)"
    )]
    NotANode {
        /// The address.
        address: String,
    },
    /// No handshake in time.
    #[error(
        "{address} did not complete the cluster handshake within {} s: is it a pareidolia daemon's cluster port (its --cluster-listen address, not its HTTP port)?",
        HANDSHAKE_TIMEOUT.as_secs()
    )]
    HandshakeTimeout {
        /// The address.
        address: String,
    },
    /// A cluster node without a run.
    #[error(
        "{address} is a cluster node, but no pareidolia run answered there within {} s; is its run over?",
        REGISTRAR_TIMEOUT.as_secs()
    )]
    NoRun {
        /// The address.
        address: String,
    },
    /// The daemon refused this worker.
    #[error("the daemon at {address} refused this worker: {reason}")]
    Refused {
        /// The address.
        address: String,
        /// Its reason.
        reason: String,
    },
    /// The daemon's config does not parse here.
    #[error("the run's config, as the daemon sent it, does not load here: {0}")]
    Config(String),
    /// The run's models or plugins do not load here.
    #[error("this worker cannot load the run's models and plugins")]
    Setup(#[from] SetupError),
    /// The connection to the daemon closed before the worker was taken in.
    #[error("the daemon at {address} closed the connection before taking this worker in")]
    Lost {
        /// The address.
        address: String,
    },
    /// The daemon stopped answering heartbeats.
    #[error(
        "no answer from the daemon at {address} for {seconds} s (its machine or the network is gone, or it is stopped); left the run"
    )]
    Silent {
        /// The address.
        address: String,
        /// The timeout.
        seconds: u64,
    },
    /// The async runtime failed.
    #[error("cannot start tokio: {0}")]
    Runtime(std::io::Error),
}

/// Reads a cookie file: its text without surrounding whitespace, which must not be empty.
pub fn read_cookie(path: &Path) -> Result<String, ClusterError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ClusterError::CookieFile {
        path: path.to_owned(),
        cause,
    })?;
    let cookie = text.trim();
    if cookie.is_empty() {
        return Err(ClusterError::EmptyCookie {
            path: path.to_owned(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "the cookie file is readable by other users; `chmod 600` it");
        }
    }
    Ok(cookie.to_owned())
}

/// Resolves `HOST:PORT` to one socket address.
fn resolve(flag: &'static str, address: &str) -> Result<SocketAddr, ClusterError> {
    let bad = |why: String| ClusterError::Address {
        flag,
        address: address.to_owned(),
        why,
    };
    let mut addrs = address
        .to_socket_addrs()
        .map_err(|e| bad(format!("{e}; give HOST:PORT, e.g. 127.0.0.1:7947")))?;
    addrs
        .next()
        .ok_or_else(|| bad("the name resolves to no address".into()))
}

/// How the daemon listens for worker nodes (`daemon --cluster-listen`, `--cookie-file`).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The address to listen on (`HOST:PORT`; port 0 = any free port).
    pub listen: SocketAddr,
    /// The shared secret; `None` on loopback only ([`LOOPBACK_COOKIE`]).
    pub cookie: Option<String>,
    /// Worker evaluators to wait for before the first generation.
    pub wait_workers: u32,
}

impl ClusterOptions {
    /// Checks the address and the cookie: a non-loopback address needs a cookie.
    pub fn new(
        listen: &str,
        cookie: Option<String>,
        wait_workers: u32,
    ) -> Result<Self, ClusterError> {
        let addr = resolve("--cluster-listen", listen)?;
        if cookie.is_none() && !addr.ip().is_loopback() {
            return Err(ClusterError::NoCookie {
                address: listen.to_owned(),
            });
        }
        Ok(Self {
            listen: addr,
            cookie,
            wait_workers,
        })
    }
}

/// Starts a node server on `addr` (port 0 resolved here first, so the address it logs is the
/// one it listens on) with `subscription` for its session events.
async fn start_node(
    addr: SocketAddr,
    cookie: String,
    name: String,
    subscription: Box<dyn NodeEventSubscription>,
) -> Result<(ActorRef<NodeServerMessage>, SocketAddr), ClusterError> {
    let listen_err = |cause| ClusterError::Listen {
        address: addr.to_string(),
        cause,
    };
    // ractor_cluster does not tell which port it was given for 0: take a free one first.
    let addr = std::net::TcpListener::bind(addr)
        .and_then(|l| l.local_addr())
        .map_err(listen_err)?;
    let server = NodeServer::new(
        addr.port(),
        cookie,
        name,
        addr.ip().to_string(),
        None,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(addr.ip());
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| ClusterError::Node(e.to_string()))?;
    server
        .cast(NodeServerMessage::SubscribeToEvents {
            id: "pareidolia".into(),
            subscription,
        })
        .map_err(|e| ClusterError::Node(e.to_string()))?;
    Ok((server, addr))
}

/// Starts the daemon's node: its cluster port on `addr` (port 0 resolved here) served by
/// [`gate::serve`], which hands each connection it admits to a node server listening on
/// loopback only.
async fn start_daemon_node(
    addr: SocketAddr,
    cookie: String,
    name: String,
    subscription: Box<dyn NodeEventSubscription>,
    open: Arc<OpenConnections>,
) -> Result<(ActorRef<NodeServerMessage>, SocketAddr), ClusterError> {
    let listen_err = |cause| ClusterError::Listen {
        address: addr.to_string(),
        cause,
    };
    let public = std::net::TcpListener::bind(addr).map_err(listen_err)?;
    let address = public.local_addr().map_err(listen_err)?;
    public.set_nonblocking(true).map_err(listen_err)?;
    let public = tokio::net::TcpListener::from_std(public).map_err(listen_err)?;
    let inner: SocketAddr = (std::net::Ipv4Addr::LOCALHOST, 0).into();
    let (server, _) = start_node(inner, cookie, name, subscription).await?;
    tokio::spawn(gate::serve(public, server.clone(), open));
    Ok((server, address))
}

// ---------------------------------------------------------------------------------------------
// The daemon's side.

/// Logs the daemon's node sessions, tells the node table's keeper of them and counts the
/// ones that never authenticated.
struct DaemonEvents {
    counters: Arc<NodeCounters>,
    keeper: ActorRef<KeeperMsg>,
    authenticated: Arc<Mutex<HashSet<u64>>>,
    /// The cluster port's places (freed when a session closes).
    open: Arc<OpenConnections>,
    /// Sessions closed before they authenticated are logged at most once per period.
    refusals: Mutex<Throttle>,
}

/// The peer's node name as the worker chose it (ractor_cluster appends `@HOST`).
fn peer_name(ses: &ractor_cluster::node::NodeServerSessionInformation) -> String {
    ses.peer_name.as_ref().map_or_else(
        || "(unnamed)".to_owned(),
        |n| {
            n.name
                .rsplit_once('@')
                .map_or(n.name.as_str(), |(name, _)| name)
                .to_owned()
        },
    )
}

impl NodeEventSubscription for DaemonEvents {
    fn node_session_opened(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        tracing::debug!(peer = %ses.peer_addr, "cluster connection opened");
        if !ses.is_server {
            return;
        }
        // A session that has not authenticated by the deadline is closed, so idle or stray
        // clients do not hold the port's places (or file descriptors) for good.
        let authenticated = self.authenticated.clone();
        tokio::spawn(async move {
            tokio::time::sleep(HANDSHAKE_DEADLINE).await;
            let done = authenticated
                .lock()
                .map(|set| set.contains(&ses.node_id))
                .unwrap_or(true);
            if !done {
                ses.actor.stop(Some(format!(
                    "no cluster handshake within {} s",
                    HANDSHAKE_DEADLINE.as_secs()
                )));
            }
        });
    }

    fn node_session_authenticated(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        if let Ok(mut set) = self.authenticated.lock() {
            set.insert(ses.node_id);
        }
        let _ = self.keeper.cast(KeeperMsg::Opened {
            name: peer_name(&ses),
            address: ses.peer_addr.clone(),
            node_id: ses.node_id,
            session: ses.actor.clone(),
        });
        tracing::info!(node = %peer_name(&ses), peer = %ses.peer_addr, "worker node connected");
    }

    fn node_session_disconnected(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        if ses.is_server {
            self.open.closed();
        }
        let was = self
            .authenticated
            .lock()
            .map(|mut set| set.remove(&ses.node_id))
            .unwrap_or(false);
        if was {
            let name = peer_name(&ses);
            tracing::info!(node = %name, peer = %ses.peer_addr, "worker node disconnected");
            let _ = self.keeper.cast(KeeperMsg::Closed {
                name,
                why: "disconnected".into(),
            });
        } else {
            self.counters
                .unauthenticated
                .fetch_add(1, Ordering::Relaxed);
            if let Ok(mut throttle) = self.refusals.lock() {
                throttle.event(Instant::now(), |held| {
                    tracing::warn!(
                        peer = %ses.peer_addr,
                        node = %peer_name(&ses),
                        held_back = held,
                        "refused a cluster connection: it did not authenticate (a wrong cookie, no handshake within {} s, or not a pareidolia worker)",
                        HANDSHAKE_DEADLINE.as_secs()
                    );
                });
            }
        }
    }
}

/// The daemon's cluster node: the node server and the registrar.
pub struct DaemonNode {
    server: ActorRef<NodeServerMessage>,
    registrar: ActorRef<RegistrarMsg>,
    keeper: ActorRef<KeeperMsg>,
    /// Where it listens.
    pub address: SocketAddr,
    /// What it counted, and its nodes.
    pub view: ClusterView,
}

impl DaemonNode {
    /// Listens for worker nodes of `experiment`'s run; its first generation waits for
    /// `options.wait_workers` of them. Call it inside the tokio runtime, before the run starts.
    pub async fn start(
        options: &ClusterOptions,
        experiment: &mut Experiment,
    ) -> Result<Self, ClusterError> {
        let counters = Arc::new(NodeCounters::default());
        let keeper_state = KeeperState {
            run: experiment.run_id.clone(),
            first_slot: experiment.cores.workers as u32,
            table: NodeTable::default(),
        };
        let (keeper, _) = Actor::spawn(None, NodeKeeper, keeper_state)
            .await
            .map_err(|e| ClusterError::Node(e.to_string()))?;
        let open = Arc::new(OpenConnections::default());
        let events = DaemonEvents {
            counters: counters.clone(),
            keeper: keeper.clone(),
            authenticated: Arc::new(Mutex::new(HashSet::new())),
            open: open.clone(),
            refusals: Mutex::new(Throttle::new(LOG_EVERY)),
        };
        let cookie = options
            .cookie
            .clone()
            .unwrap_or_else(|| LOOPBACK_COOKIE.to_owned());
        let name = format!("pareidolia-daemon-{}", std::process::id());
        let (server, address) =
            start_daemon_node(options.listen, cookie, name, Box::new(events), open).await?;
        let config = experiment.config();
        let args = RegistrarState {
            run: experiment.run_id.clone(),
            config: toml::to_string(config)
                .map_err(|e| ClusterError::Node(format!("cannot serialise the config: {e}")))?,
            base_dir: config.base_dir.display().to_string(),
            identity: experiment.identity.clone(),
            keeper: keeper.clone(),
            counters: counters.clone(),
            warned: HashSet::new(),
        };
        let (registrar, _) = Actor::spawn(None, Registrar, args)
            .await
            .map_err(|e| ClusterError::Node(e.to_string()))?;
        ractor::pg::join(
            names::REGISTRAR_GROUP.to_owned(),
            vec![registrar.get_cell()],
        );
        experiment.wait_for_workers(options.wait_workers);
        tracing::info!(
            address = %address,
            cookie = if options.cookie.is_some() { "from --cookie-file" } else { "loopback default" },
            wait_workers = options.wait_workers,
            "listening for worker nodes: cluster://{address}"
        );
        Ok(Self {
            server,
            registrar,
            keeper: keeper.clone(),
            address,
            view: ClusterView { keeper, counters },
        })
    }

    /// Stops the registrar and the node server (the workers' sessions close).
    pub fn stop(self) {
        self.registrar.stop(Some("run over".into()));
        self.keeper.stop(Some("run over".into()));
        self.server.stop(Some("run over".into()));
    }
}

/// What differs between the run's identity and a worker's, in words, or `None` when the
/// worker loaded the same models (name, classes, output, sha256), plugins (name, version),
/// labels and cells. Backends may differ (a worker may run on its own GPU).
pub fn identity_difference(run: &RunIdentity, worker: &RunIdentity) -> Option<String> {
    use IdentityDifference as D;
    // Model by model, its file before its shape; then plugins, labels, cells.
    let rank = |d: &D| match *d {
        D::ModelCount => (0, 0),
        D::Sha256(i) | D::ModelName(i) => (1 + i, 0),
        D::Classes(i) | D::Output(i) => (1 + i, 1),
        D::Encoding => (usize::MAX, 0),
        D::Fitness => (usize::MAX, 1),
        D::Labels => (usize::MAX, 2),
        _ => (usize::MAX, 3),
    };
    let first = run.differences(worker).into_iter().min_by_key(rank)?;
    let plugin = |kind: &str, r: &PluginSummary, w: &PluginSummary| {
        format!(
            "{kind} plugin: the run uses {} {}, this worker loaded {} {}; install the run's plugin on the worker",
            r.name, r.version, w.name, w.version
        )
    };
    Some(match first {
        D::ModelCount => format!(
            "the run scores with {} model(s), this worker loaded {}",
            run.models.len(),
            worker.models.len()
        ),
        D::Sha256(i) | D::ModelName(i) => {
            let (r, w) = (&run.models[i], &worker.models[i]);
            format!(
                "model {i}: the run's is `{}` (sha256 {}), this worker loaded `{}` (sha256 {}); install the run's model file on the worker",
                r.name, r.sha256, w.name, w.sha256
            )
        }
        D::Classes(i) | D::Output(i) => {
            let (r, w) = (&run.models[i], &worker.models[i]);
            format!(
                "model {i} `{}`: {} classes ({:?}) in the run, {} ({:?}) on this worker; the model manifests differ",
                r.name, r.classes, r.output, w.classes, w.output
            )
        }
        D::Encoding => plugin("encoding", &run.encoding, &worker.encoding),
        D::Fitness => plugin("fitness", &run.fitness, &worker.fitness),
        D::Labels => "the class labels differ (the models' labels files)".into(),
        _ => "the archive's cells (archive.classes) differ".into(),
    })
}

/// The registrar: answers worker nodes, takes them into the run, keeps their heartbeats and
/// forwards remote evaluators' results to the archive.
struct Registrar;

/// Its state (and start-up arguments).
struct RegistrarState {
    run: String,
    config: String,
    base_dir: String,
    identity: RunIdentity,
    /// The node table's owner.
    keeper: ActorRef<KeeperMsg>,
    counters: Arc<NodeCounters>,
    /// Evaluator slots whose stray results were logged already (once each).
    warned: HashSet<u32>,
}

impl RegistrarState {
    fn reply(node: &str, msg: WorkerMsg) {
        let members = ractor::pg::get_members(&names::worker(node));
        match members.into_iter().next() {
            Some(cell) => {
                let worker: ActorRef<WorkerMsg> = cell.into();
                if worker.cast(msg).is_err() {
                    tracing::debug!(node, "worker gone before the answer");
                }
            }
            // Its process group has not reached this node yet: it asks again.
            None => tracing::debug!(node, "worker not seen yet; it will ask again"),
        }
    }

    fn refuse(&self, node: &str, counter: &AtomicU64, reason: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(node, %reason, "refused a worker node");
        Self::reply(node, WorkerMsg::Refused { reason });
    }

    /// Forwards results of evaluator `slot` to the archive if a node in the run holds that
    /// slot; else drops them, counted and logged once per slot.
    async fn forward(&mut self, results: Results) {
        let slot = results.from;
        let children = (results.scored.len() + results.lost.len()) as u64;
        let scored = results.scored.len() as u64;
        let held = keeper::ask(&self.keeper, |reply| KeeperMsg::Results {
            slot,
            children: scored,
            reply,
        })
        .await
        .unwrap_or(false);
        if !held {
            self.counters.results.fetch_add(1, Ordering::Relaxed);
            if self.warned.insert(slot) {
                tracing::warn!(
                    slot,
                    children,
                    "refused results from evaluator slot {slot}: no worker node in the run holds it"
                );
            }
            return;
        }
        match ractor::registry::where_is(names::archive(&self.run)) {
            Some(cell) => {
                let archive: ActorRef<ArchiveMsg> = cell.into();
                let _ = archive.cast(ArchiveMsg::Results(results));
            }
            None => tracing::debug!(slot, "no archive (the run is over); results dropped"),
        }
    }
}

impl Actor for Registrar {
    type Msg = RegistrarMsg;
    type State = RegistrarState;
    type Arguments = RegistrarState;

    async fn pre_start(
        &self,
        _myself: ActorRef<RegistrarMsg>,
        args: RegistrarState,
    ) -> Result<RegistrarState, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RegistrarMsg>,
        msg: RegistrarMsg,
        state: &mut RegistrarState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegistrarMsg::Hello { node, version } => {
                let ours = env!("CARGO_PKG_VERSION");
                if version != ours {
                    state.refuse(
                        &node,
                        &state.counters.version,
                        format!(
                            "the worker runs pareidolia {version}, the daemon {ours}; install the same version on both"
                        ),
                    );
                    return Ok(());
                }
                RegistrarState::reply(
                    &node,
                    WorkerMsg::Run {
                        run: state.run.clone(),
                        config: state.config.clone(),
                        base_dir: state.base_dir.clone(),
                        identity: Box::new(state.identity.clone()),
                    },
                );
            }
            RegistrarMsg::Join {
                node,
                role,
                identity,
            } => {
                if let Some(reason) = identity_difference(&state.identity, &identity) {
                    state.refuse(&node, &state.counters.identity, reason);
                    return Ok(());
                }
                let joined = keeper::ask(&state.keeper, |reply| KeeperMsg::Join {
                    name: node.clone(),
                    role,
                    reply,
                })
                .await
                .flatten();
                let Some(slot) = joined else {
                    tracing::debug!(node, "join from a node whose session is gone");
                    return Ok(());
                };
                state.counters.joined.fetch_add(1, Ordering::Relaxed);
                match slot {
                    Some(slot) => tracing::info!(node, %role, slot, "worker node joined the run"),
                    None => tracing::info!(node, %role, "worker node joined the run"),
                }
                RegistrarState::reply(&node, WorkerMsg::Welcome { slot });
            }
            RegistrarMsg::Results(results) => state.forward(results).await,
            RegistrarMsg::Relay { to, children } => {
                match crate::map_elites::messages::find(&names::evaluator(&state.run, to as usize))
                {
                    Some(cell) => {
                        let evaluator: ActorRef<EvaluatorMsg> = cell.into();
                        let _ = evaluator.cast(EvaluatorMsg::Children(children));
                    }
                    None => tracing::debug!(
                        to,
                        "relay to an evaluator that is gone; its children will be re-issued"
                    ),
                }
            }
            RegistrarMsg::Heartbeat { node, work } => {
                let heard = keeper::ask(&state.keeper, |reply| KeeperMsg::Heard {
                    name: node.clone(),
                    work,
                    reply,
                })
                .await
                .unwrap_or(false);
                if heard {
                    RegistrarState::reply(&node, WorkerMsg::Ack);
                } else {
                    tracing::debug!(node, "heartbeat from a node not in the run");
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The worker's side.

/// What `pareidolia worker` was asked.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The daemon's cluster address (`HOST:PORT`).
    pub join: String,
    /// The shared secret; `None` = [`LOOPBACK_COOKIE`].
    pub cookie: Option<String>,
    /// Where the cookie came from, for messages.
    pub cookie_origin: String,
    /// What this worker offers.
    pub role: NodeRole,
    /// The backend of every model here (overrides the run's).
    pub backend: Option<BackendChoice>,
    /// A config of this machine's own (its paths) instead of the daemon's.
    pub config: Option<RunConfig>,
    /// Leave the run when the daemon has not answered a heartbeat for this long.
    pub daemon_timeout: Duration,
}

/// How a worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEnd {
    /// The daemon closed the connection (its run is over, or it stopped).
    DaemonGone,
    /// SIGTERM or SIGINT.
    Signalled,
}

/// A session event the worker waits on.
#[derive(Debug)]
enum SessionEvent {
    Ready,
    Closed { named: bool, authenticated: bool },
}

struct WorkerEvents {
    events: mpsc::UnboundedSender<SessionEvent>,
    authenticated: Mutex<bool>,
}

impl NodeEventSubscription for WorkerEvents {
    fn node_session_opened(&self, _ses: ractor_cluster::node::NodeServerSessionInformation) {}

    fn node_session_authenticated(&self, _ses: ractor_cluster::node::NodeServerSessionInformation) {
        if let Ok(mut a) = self.authenticated.lock() {
            *a = true;
        }
    }

    fn node_session_ready(&self, _ses: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.events.send(SessionEvent::Ready);
    }

    fn node_session_disconnected(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let authenticated = self.authenticated.lock().map(|a| *a).unwrap_or(false);
        let _ = self.events.send(SessionEvent::Closed {
            named: ses.peer_name.is_some(),
            authenticated,
        });
    }
}

/// The worker's own actor: hands the registrar's answers to [`run_worker`].
struct WorkerNode;

impl Actor for WorkerNode {
    type Msg = WorkerMsg;
    type State = mpsc::UnboundedSender<WorkerMsg>;
    type Arguments = mpsc::UnboundedSender<WorkerMsg>;

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        answers: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(answers)
    }

    async fn handle(
        &self,
        _myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        answers: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = answers.send(msg);
        Ok(())
    }
}

/// Runs a worker node until the daemon's connection closes or a signal: joins the daemon at
/// `options.join`, loads the run's models and plugins, and scores batches as one of the run's
/// evaluators. Blocking: it starts its own tokio runtime.
pub fn run_worker(options: WorkerOptions) -> Result<WorkerEnd, ClusterError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ClusterError::Runtime)?;
    runtime.block_on(worker(options))
}

async fn worker(options: WorkerOptions) -> Result<WorkerEnd, ClusterError> {
    let address = options.join.clone();
    let target = resolve("--join", &address)?;
    let node = format!(
        "pareidolia-worker-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let subscription = WorkerEvents {
        events: events_tx,
        authenticated: Mutex::new(false),
    };
    let cookie = options
        .cookie
        .clone()
        .unwrap_or_else(|| LOOPBACK_COOKIE.to_owned());
    // The worker's own node listens on loopback only; nobody needs to connect to it.
    let local: SocketAddr = (std::net::Ipv4Addr::LOCALHOST, 0).into();
    let (server, _) = start_node(local, cookie, node.clone(), Box::new(subscription)).await?;
    let result = async {
        handshake(&server, &options, target, &mut events).await?;
        tracing::info!(daemon = %address, node, "cluster session ready");
        let (answers_tx, mut answers) = mpsc::unbounded_channel();
        let (me, _) = Actor::spawn(None, WorkerNode, answers_tx)
            .await
            .map_err(|e| ClusterError::Node(e.to_string()))?;
        ractor::pg::join(names::worker(&node), vec![me.get_cell()]);
        let result = take_part(&options, &node, &mut events, &mut answers).await;
        me.stop(None);
        result
    }
    .await;
    server.stop(Some("worker done".into()));
    result
}

/// Connects to the daemon and waits until the session is ready, or says why not.
async fn handshake(
    server: &ActorRef<NodeServerMessage>,
    options: &WorkerOptions,
    target: SocketAddr,
    events: &mut mpsc::UnboundedReceiver<SessionEvent>,
) -> Result<(), ClusterError> {
    let address = options.join.clone();
    ractor_cluster::client_connect(server, target)
        .await
        .map_err(|e| ClusterError::Connect {
            address: address.clone(),
            cause: match e {
                ractor_cluster::ClientConnectErr::Socket(io) => io.to_string(),
                other => other.to_string(),
            },
        })?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, events.recv()).await {
        Ok(Some(SessionEvent::Ready)) => Ok(()),
        Ok(Some(SessionEvent::Closed {
            named: true,
            authenticated: false,
        })) => Err(ClusterError::Cookie {
            address,
            cookie: options.cookie_origin.clone(),
        }),
        Ok(Some(SessionEvent::Closed { .. })) | Ok(None) => Err(ClusterError::NotANode { address }),
        Err(_) => Err(ClusterError::HandshakeTimeout { address }),
    }
}

/// How often a worker asks the registrar again while it has no answer.
const HELLO_EVERY: Duration = Duration::from_millis(300);

/// The first answer of the registrar on the daemon's node, asking again until one comes.
async fn ask(
    msg: RegistrarMsg,
    address: &str,
    events: &mut mpsc::UnboundedReceiver<SessionEvent>,
    answers: &mut mpsc::UnboundedReceiver<WorkerMsg>,
    repeat: bool,
    send: bool,
) -> Result<WorkerMsg, ClusterError> {
    let deadline = Instant::now() + REGISTRAR_TIMEOUT;
    let mut asked = !send;
    loop {
        if (repeat || !asked)
            && let Some(registrar) = daemon_registrar()
        {
            asked = registrar.cast(msg.clone()).is_ok();
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ClusterError::NoRun {
                address: address.to_owned(),
            });
        }
        let wait = HELLO_EVERY.min(deadline - now);
        tokio::select! {
            answer = answers.recv() => {
                if let Some(answer) = answer {
                    return Ok(answer);
                }
            }
            event = events.recv() => {
                if let Some(SessionEvent::Closed { .. }) | None = event {
                    return Err(ClusterError::Lost { address: address.to_owned() });
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Asks the registrar, loads the run, joins as an evaluator and serves until the end.
async fn take_part(
    options: &WorkerOptions,
    node: &str,
    events: &mut mpsc::UnboundedReceiver<SessionEvent>,
    answers: &mut mpsc::UnboundedReceiver<WorkerMsg>,
) -> Result<WorkerEnd, ClusterError> {
    let address = options.join.as_str();
    let refused = |reason| ClusterError::Refused {
        address: address.to_owned(),
        reason,
    };
    let hello = RegistrarMsg::Hello {
        node: node.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let (run, config, run_identity) = match ask(hello, address, events, answers, true, true).await?
    {
        WorkerMsg::Run {
            run,
            config,
            base_dir,
            identity,
        } => {
            let config = match &options.config {
                Some(own) => own.clone(),
                None => RunConfig::parse(&config, "the daemon's config", PathBuf::from(base_dir))
                    .map_err(|e| ClusterError::Config(e.to_string()))?,
            };
            (run, config, *identity)
        }
        WorkerMsg::Refused { reason } => return Err(refused(reason)),
        WorkerMsg::Welcome { .. } | WorkerMsg::Ack => {
            return Err(ClusterError::Node(
                "the registrar answered out of order".into(),
            ));
        }
    };
    let mut config = config;
    if let Some(backend) = options.backend {
        for model in config.model_configs_mut() {
            model.backend = backend;
        }
    }
    tracing::info!(
        run,
        models = run_identity.models.len(),
        "loading the run's models and plugins"
    );
    let (setup, prepared, steering) =
        tokio::task::spawn_blocking(move || -> Result<_, SetupError> {
            let setup = Setup::load(config)?;
            let prepared = ModelSetup::prepare_all(&setup.models)?;
            // A run with the gradient operator: this node's evaluator steps its children too.
            let steering = Steering::of(&setup)?;
            Ok((setup, prepared, steering))
        })
        .await
        .map_err(|e| ClusterError::Node(e.to_string()))??;
    let identity = setup.prepared_identity(&prepared);
    for id in &identity.models {
        tracing::info!(model = %id.name, sha256 = %id.sha256, runs_on = id.backend.as_deref().unwrap_or_default(), "model prepared");
    }
    if let Some(difference) = identity_difference(&run_identity, &identity) {
        // The daemon decides, and logs it too; its answer is the error.
        tracing::warn!(%difference, "this worker's models or plugins differ from the run's");
    }
    let join = RegistrarMsg::Join {
        node: node.to_owned(),
        role: options.role,
        identity,
    };
    let mut send = true;
    let slot = loop {
        match ask(join.clone(), address, events, answers, false, send).await? {
            WorkerMsg::Welcome { slot } => break slot,
            WorkerMsg::Refused { reason } => return Err(refused(reason)),
            // A late answer to a repeated hello.
            WorkerMsg::Run { .. } | WorkerMsg::Ack => send = false,
        }
    };
    let tally = Arc::new(WorkTally::default());
    let mut evaluator = None;
    if let Some(slot) = slot.filter(|_| options.role.evaluates()) {
        let args = EvaluatorArgs {
            run: run.clone(),
            index: slot as usize,
            models: setup.models.clone(),
            prepared: Some(prepared),
            fitness: setup.fitness.clone(),
            encoding: setup.encoding.clone(),
            batch_size: setup.config.batch_size.max(1) as usize,
            sink: ResultSink::Registrar,
            tally: Some(tally.clone()),
            steering,
            queue: BatchQueue::new(),
        };
        // Registered here under the evaluator's name, so this node's own mutator (role
        // `both`) finds it without a network hop.
        let (actor, handle) = Actor::spawn(
            Some(names::evaluator(&run, slot as usize)),
            EvaluatorActor,
            args,
        )
        .await
        .map_err(|e| ClusterError::Node(e.to_string()))?;
        ractor::pg::join(
            names::evaluator(&run, slot as usize),
            vec![actor.get_cell()],
        );
        ractor::pg::join(names::evaluator_group(&run), vec![actor.get_cell()]);
        tracing::info!(run, slot, daemon = %address, "joined the run as evaluator {slot}");
        evaluator = Some((actor, handle));
    }
    let mut mutator = None;
    if options.role.mutates() {
        let state = MutatorState {
            run: run.clone(),
            encoding: setup.encoding.clone(),
            tally: Some(tally.clone()),
            relay: true,
        };
        let (actor, handle) = Actor::spawn(None, MutatorActor, state)
            .await
            .map_err(|e| ClusterError::Node(e.to_string()))?;
        ractor::pg::join(names::mutator_group(&run), vec![actor.get_cell()]);
        tracing::info!(run, daemon = %address, "joined the run as a mutator");
        mutator = Some((actor, handle));
    }
    let end = serve(options, node, events, answers, &tally).await;
    let work = tally.snapshot();
    tracing::info!(
        jobs = work.jobs,
        bred = work.bred,
        batches = work.batches,
        scored = work.scored,
        "worker done"
    );
    for (actor, handle) in [
        evaluator.map(|(a, h)| (a.get_cell(), h)),
        mutator.map(|(a, h)| (a.get_cell(), h)),
    ]
    .into_iter()
    .flatten()
    {
        actor.stop(Some("worker leaving".into()));
        let _ = handle.await;
    }
    end
}

/// Sends heartbeats until the daemon's connection closes, the daemon stops answering for
/// `options.daemon_timeout`, or a signal.
async fn serve(
    options: &WorkerOptions,
    node: &str,
    events: &mut mpsc::UnboundedReceiver<SessionEvent>,
    answers: &mut mpsc::UnboundedReceiver<WorkerMsg>,
    tally: &WorkTally,
) -> Result<WorkerEnd, ClusterError> {
    let address = options.join.as_str();
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    let mut last_ack = Instant::now();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(SessionEvent::Closed { .. }) | None => {
                    tracing::info!(daemon = %address, "the daemon closed the connection (its run is over, or it stopped); exiting");
                    return Ok(WorkerEnd::DaemonGone);
                }
                Some(SessionEvent::Ready) => {}
            },
            answer = answers.recv() => match answer {
                Some(WorkerMsg::Ack) => last_ack = Instant::now(),
                Some(WorkerMsg::Refused { reason }) => {
                    return Err(ClusterError::Refused { address: address.to_owned(), reason });
                }
                Some(_) | None => {}
            },
            _ = tick.tick() => {
                if last_ack.elapsed() > options.daemon_timeout {
                    tracing::error!(
                        daemon = %address,
                        seconds = options.daemon_timeout.as_secs(),
                        "no answer from the daemon for {} s; leaving the run",
                        options.daemon_timeout.as_secs()
                    );
                    return Err(ClusterError::Silent {
                        address: address.to_owned(),
                        seconds: options.daemon_timeout.as_secs(),
                    });
                }
                if let Some(registrar) = daemon_registrar() {
                    let _ = registrar.cast(RegistrarMsg::Heartbeat {
                        node: node.to_owned(),
                        work: tally.snapshot(),
                    });
                }
            }
            _ = shutdown_signal() => {
                tracing::info!("stop requested; leaving the run");
                return Ok(WorkerEnd::Signalled);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> RunIdentity {
        let mut identity = RunIdentity::sample(&["0"; 10]);
        identity.models[0].requested_backend = BackendChoice::Tract;
        identity.run_id = Some("r".into());
        identity
    }

    #[test]
    fn a_worker_must_load_the_runs_models_and_plugins_on_any_backend() {
        let run = identity();
        let mut same = run.clone();
        same.models[0].backend = Some("ort".into());
        same.models[0].requested_backend = BackendChoice::Auto;
        same.run_id = None;
        assert_eq!(identity_difference(&run, &same), None);
        let mut model = run.clone();
        model.models[0].sha256 = "bb".into();
        let e = identity_difference(&run, &model).unwrap();
        assert!(e.contains("sha256 ab") && e.contains("sha256 bb"), "{e}");
        let mut plugin = run.clone();
        plugin.fitness.version = "0.2.0".into();
        let e = identity_difference(&run, &plugin).unwrap();
        assert_eq!(
            e,
            "fitness plugin: the run uses confidence 0.1.0, this worker loaded confidence 0.2.0; install the run's plugin on the worker"
        );
        let mut two = run.clone();
        two.models.push(two.models[0].clone());
        assert!(
            identity_difference(&run, &two)
                .unwrap()
                .contains("1 model(s)")
        );
    }

    #[test]
    fn a_public_address_needs_a_cookie() {
        assert!(ClusterOptions::new("127.0.0.1:0", None, 0).is_ok());
        let e = ClusterOptions::new("0.0.0.0:7947", None, 0).unwrap_err();
        assert!(e.to_string().contains("without a cookie"), "{e}");
        assert!(ClusterOptions::new("0.0.0.0:7947", Some("s".into()), 0).is_ok());
        let e = ClusterOptions::new("nonsense", None, 0).unwrap_err();
        assert!(e.to_string().contains("--cluster-listen nonsense"), "{e}");
    }
}
