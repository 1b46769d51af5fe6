//! The batch queue a process's inference threads share: each evaluator hands its batches to
//! one queue, and whichever inference thread is free takes the oldest, so a thread slowed
//! down (by breeding on its core, by the host) no longer holds back the end of every
//! generation while the others wait at the barrier. Each thread keeps its own prepared
//! models; only the batches move. A batch's images, and so its scores, do not depend on the
//! thread that runs it: every evaluator of a process runs the same models on the same
//! backend with the same settings.
//!
//! Plain code (a mutex and a condition variable), unit-tested without actors or threads of
//! the run.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// A queue of jobs served by any number of consumers, each of which can be retired.
pub struct SharedQueue<J> {
    inner: Arc<Inner<J>>,
}

impl<J> Clone for SharedQueue<J> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<J> Default for SharedQueue<J> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                jobs: Mutex::new(VecDeque::new()),
                ready: Condvar::new(),
            }),
        }
    }
}

impl<J> std::fmt::Debug for SharedQueue<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedQueue")
            .field("queued", &self.len())
            .finish()
    }
}

struct Inner<J> {
    jobs: Mutex<VecDeque<J>>,
    ready: Condvar,
}

impl<J> Inner<J> {
    /// The queue, also after a thread panicked while holding the lock (no user code runs
    /// under it, so the queue itself is always whole).
    fn lock(&self) -> MutexGuard<'_, VecDeque<J>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<J> SharedQueue<J> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a job for the first free consumer.
    pub fn push(&self, job: J) {
        self.inner.lock().push_back(job);
        self.inner.ready.notify_one();
    }

    /// Jobs queued and not yet taken.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// Whether no job waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A new consumer (for a thread to serve the queue with) and the handle that retires it.
    pub fn consumer(&self) -> (Consumer<J>, Retire<J>) {
        let open = Arc::new(AtomicBool::new(true));
        (
            Consumer {
                queue: self.clone(),
                open: open.clone(),
            },
            Retire {
                queue: self.clone(),
                open,
            },
        )
    }
}

/// One thread's end of the queue.
pub struct Consumer<J> {
    queue: SharedQueue<J>,
    open: Arc<AtomicBool>,
}

impl<J> Consumer<J> {
    /// The oldest queued job, waiting for one while this consumer is not retired; `None`
    /// once it is retired and the queue is empty (a retired consumer still helps drain the
    /// jobs already queued, so none is left behind by a thread that stops).
    pub fn next(&self) -> Option<J> {
        let inner = &self.queue.inner;
        let mut jobs = inner.lock();
        loop {
            if let Some(job) = jobs.pop_front() {
                return Some(job);
            }
            if !self.open.load(Ordering::Acquire) {
                return None;
            }
            jobs = inner.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Retires its consumer when dropped: the consumer's [`Consumer::next`] returns `None`
/// as soon as the queue is empty.
pub struct Retire<J> {
    queue: SharedQueue<J>,
    open: Arc<AtomicBool>,
}

impl<J> Drop for Retire<J> {
    fn drop(&mut self) {
        self.open.store(false, Ordering::Release);
        // Under the lock, so that a consumer between its checks and its wait cannot miss it.
        let _jobs = self.queue.inner.lock();
        self.queue.inner.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_free_consumer_takes_every_job_while_another_is_busy() {
        let queue = SharedQueue::new();
        let (busy, _retire_busy) = queue.consumer();
        let (free, retire_free) = queue.consumer();
        let (release, hold) = mpsc::channel::<()>();
        let (done, results) = mpsc::channel();
        let busy_done = done.clone();
        let busy = std::thread::spawn(move || {
            let job: u32 = busy.next().expect("a job");
            busy_done.send(("busy", job)).unwrap();
            hold.recv().unwrap(); // stuck on its first job until released
        });
        queue.push(0);
        // The busy consumer has the first job before any other is queued.
        assert_eq!(results.recv().unwrap(), ("busy", 0));
        let free = std::thread::spawn(move || {
            while let Some(job) = free.next() {
                done.send(("free", job)).unwrap();
            }
        });
        for job in 1..=5 {
            queue.push(job);
        }
        let taken: Vec<_> = (1..=5).map(|_| results.recv().unwrap()).collect();
        assert_eq!(taken, (1..=5).map(|j| ("free", j)).collect::<Vec<_>>());
        drop(retire_free);
        free.join().unwrap();
        release.send(()).unwrap();
        busy.join().unwrap();
        assert!(queue.is_empty());
    }

    #[test]
    fn a_retired_consumer_drains_what_is_queued_then_stops() {
        let queue = SharedQueue::new();
        let (consumer, retire) = queue.consumer();
        for job in 0..3 {
            queue.push(job);
        }
        drop(retire);
        let mut seen = Vec::new();
        while let Some(job) = consumer.next() {
            seen.push(job);
        }
        assert_eq!(seen, [0, 1, 2]);
        assert!(consumer.next().is_none());
    }

    #[test]
    fn retiring_wakes_a_waiting_consumer() {
        let queue: SharedQueue<u32> = SharedQueue::new();
        let (consumer, retire) = queue.consumer();
        let (tx, rx) = mpsc::channel();
        let t = std::thread::spawn(move || tx.send(consumer.next()).unwrap());
        // It waits: nothing queued, not retired.
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        drop(retire);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), None);
        t.join().unwrap();
    }
}
