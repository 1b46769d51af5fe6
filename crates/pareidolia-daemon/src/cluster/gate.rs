//! The daemon's cluster port (`--cluster-listen`): connections are accepted here and handed
//! to the node server, which itself listens on loopback only. ractor_cluster's own listener
//! has no connection limit, no deadline for the handshake and logs every failed `accept`, so
//! a thousand idle clients would hold every file descriptor (no checkpoint could be written)
//! and fill the log. Here:
//!
//! - at most [`MAX_CONNECTIONS`] connections are open at once (a cluster has a handful of
//!   workers); one more is closed at once;
//! - a connection that has not authenticated within [`HANDSHAKE_DEADLINE`] is closed (by the
//!   daemon's session events, which see the authentication);
//! - a failed `accept` (out of file descriptors, say) waits before the next try, and refusals
//!   and failures are logged at most once per [`LOG_EVERY`] with the count left unlogged.
//!
//! With the HTTP server's own bound (`http.max_connections`, as many waiting), the daemon's
//! sockets stay far below the usual limit of 1,024 open files, so a checkpoint write always
//! finds a file descriptor.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ractor::ActorRef;
use ractor_cluster::{NetworkStream, NodeServerMessage};

/// Cluster connections open at once, authenticated or not.
pub const MAX_CONNECTIONS: usize = 256;

/// How long a connection may take to authenticate before it is closed.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// Refusals and failed accepts are logged at most once per this period.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// A log line at most once per period, with how many were held back since the last one.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    next: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            next: None,
            held: 0,
        }
    }

    /// Calls `log` with the count held back before this event if a line is due now, else
    /// holds this event back. Returns whether it logged.
    pub fn event(&mut self, now: Instant, log: impl FnOnce(u64)) -> bool {
        if self.next.is_some_and(|next| now < next) {
            self.held += 1;
            return false;
        }
        log(self.held);
        self.held = 0;
        self.next = Some(now + self.every);
        true
    }
}

/// Connections handed to the node server and not yet closed (the daemon's session events
/// count them down).
#[derive(Debug, Default)]
pub struct OpenConnections(AtomicUsize);

impl OpenConnections {
    /// Takes a place if one is free.
    pub fn try_open(&self) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CONNECTIONS).then_some(n + 1)
            })
            .is_ok()
    }

    /// Frees a place.
    pub fn closed(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Places taken.
    pub fn open(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Accepts on `listener` and hands each connection to `server` while it has a place, until
/// the node server stops.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: ActorRef<NodeServerMessage>,
    open: Arc<OpenConnections>,
) {
    let mut failed = Throttle::new(LOG_EVERY);
    let mut refused = Throttle::new(LOG_EVERY);
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                failed.event(Instant::now(), |held| {
                    tracing::warn!(error = %e, held_back = held, "cannot accept a cluster connection (out of file descriptors?); trying again in 100 ms");
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !open.try_open() {
            drop(stream);
            refused.event(Instant::now(), |held| {
                tracing::warn!(%peer, held_back = held, "refused a cluster connection: {MAX_CONNECTIONS} are open (one that does not authenticate is closed after {} s)", HANDSHAKE_DEADLINE.as_secs());
            });
            continue;
        }
        let _ = stream.set_nodelay(true);
        let Ok(local_addr) = stream.local_addr() else {
            open.closed();
            continue;
        };
        let handed = server.cast(NodeServerMessage::ConnectionOpened {
            stream: Box::new(NetworkStream::Raw {
                peer_addr: peer,
                local_addr,
                stream,
            }),
            is_server: true,
        });
        if handed.is_err() {
            break; // the node server stopped: so does the port
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_logs_once_per_period_with_the_count_held_back() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        let mut lines = Vec::new();
        for ms in [0u64, 1, 2, 9_999, 10_000, 10_001, 25_000] {
            t.event(start + Duration::from_millis(ms), |held| {
                lines.push((ms, held))
            });
        }
        assert_eq!(lines, [(0, 0), (10_000, 3), (25_000, 1)]);
    }

    #[test]
    fn places_are_bounded_and_freed() {
        let open = OpenConnections::default();
        for _ in 0..MAX_CONNECTIONS {
            assert!(open.try_open());
        }
        assert!(!open.try_open());
        open.closed();
        assert_eq!(open.open(), MAX_CONNECTIONS - 1);
        assert!(open.try_open());
        let none = OpenConnections::default();
        none.closed();
        assert_eq!(none.open(), 0, "never below zero");
    }
}
