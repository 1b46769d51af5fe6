//! One stop handle for every search: whoever may end a run early (the service on SIGTERM,
//! `retrain` on a signal, a test) holds a clone of the run's [`StopHandle`] and calls
//! [`StopHandle::request`]; the search ends at its next generation (or step) boundary with a
//! final checkpoint. The MAP-Elites run forwards the request to its archive actor as
//! `ArchiveMsg::Shutdown`; the gradient-ascent loop checks it before every step. No registry:
//! a handle is passed in, never looked up by run id.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// A request to end a run at its next boundary; clones share it.
#[derive(Debug, Clone, Default)]
pub struct StopHandle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requested: AtomicBool,
    notify: Notify,
}

impl StopHandle {
    /// A handle no one has used yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to end; later calls do nothing more.
    pub fn request(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether an end was asked for.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Returns once an end is asked for (at once if it was already).
    pub async fn requested(&self) {
        loop {
            // Registered before the check, so a request between the two is not missed.
            let notified = self.inner.notify.notified();
            if self.is_requested() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_reaches_every_clone_and_wakes_a_waiter() {
        let stop = StopHandle::new();
        let clone = stop.clone();
        assert!(!clone.is_requested());
        let waiter = tokio::spawn(async move { clone.requested().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        stop.request();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .unwrap();
        assert!(stop.is_requested());
        // Asked before anyone waits: the wait returns at once.
        stop.requested().await;
    }
}
