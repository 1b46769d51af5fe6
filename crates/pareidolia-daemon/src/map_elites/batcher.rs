//! Batch forming by child index, as plain data. Batch `k` of a generation holds children
//! `k * batch_size ..` and is ready once every one of them has arrived or was lost on the
//! way; its children come out in id order. Backends' floating-point results can depend on
//! the batch an image is in, so this keeps a run's numbers independent of how many mutators
//! there are and which finished first. The evaluator actor owns one [`Batcher`] and forwards
//! arriving children to it; a linger timer there calls [`Batcher::flush`] when a child never
//! arrives (its mutator died and the archive re-issues it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use pareidolia_core::config::MAX_LAG;

use crate::map_elites::messages::{LostChild, Offspring, child_index};

/// A batch ready for inference: children in id order, each with its arrival time.
#[derive(Debug, Default)]
pub struct Batch {
    /// The rendered children (empty when every child of the batch was lost).
    pub children: Vec<Offspring>,
    /// When each arrived, for the queue-wait metric.
    pub arrived: Vec<Instant>,
}

/// A batch being filled.
#[derive(Debug, Default)]
struct Filling {
    children: Vec<(Offspring, Instant)>,
    /// Children arrived or lost.
    accounted: usize,
}

/// Forms batches by child index.
#[derive(Debug)]
pub struct Batcher {
    batch_size: u32,
    /// Batches being filled, by (generation, batch index).
    filling: BTreeMap<(u64, u32), Filling>,
    /// Losses not yet reported to the archive.
    lost: Vec<LostChild>,
    /// Ids seen per generation (the newest and the [`MAX_LAG`] + 1 before it: the most a
    /// run has in flight), to drop duplicates.
    seen: BTreeMap<u64, BTreeSet<u64>>,
}

impl Batcher {
    /// Batches of `batch_size` children (at least 1).
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size: batch_size.clamp(1, u32::MAX as usize) as u32,
            filling: BTreeMap::new(),
            lost: Vec::new(),
            seen: BTreeMap::new(),
        }
    }

    /// Accounts one child that arrived at `now`; returns the batch it completed, if any. A
    /// duplicate (re-issued work arriving twice) is dropped.
    pub fn account(&mut self, child: Result<Offspring, LostChild>, now: Instant) -> Option<Batch> {
        let (generation, size, id) = match &child {
            Ok(o) => (o.generation, o.generation_size, o.id),
            Err(l) => (l.generation, l.generation_size, l.id),
        };
        if !self.seen.entry(generation).or_default().insert(id) {
            return None;
        }
        // Older generations can no longer be in flight; forget them.
        self.seen
            .retain(|&g, _| g.saturating_add(1 + u64::from(MAX_LAG)) >= generation);
        let key = (generation, child_index(id) / self.batch_size);
        let expected = (size.saturating_sub(key.1 * self.batch_size)).min(self.batch_size);
        let filling = self.filling.entry(key).or_default();
        filling.accounted += 1;
        match child {
            Ok(o) => filling.children.push((o, now)),
            Err(l) => self.lost.push(l),
        }
        if filling.accounted < expected as usize {
            return None;
        }
        let done = self.filling.remove(&key).unwrap_or_default();
        Some(Self::sorted(done))
    }

    fn sorted(mut filling: Filling) -> Batch {
        filling.children.sort_by_key(|(c, _)| c.id);
        let (children, arrived) = filling.children.into_iter().unzip();
        Batch { children, arrived }
    }

    /// Every incomplete batch, for a linger timer that gave up waiting (children in id order
    /// within each, batches in (generation, index) order); empty ones are left out.
    pub fn flush(&mut self) -> Vec<Batch> {
        std::mem::take(&mut self.filling)
            .into_values()
            .filter(|f| !f.children.is_empty())
            .map(Self::sorted)
            .collect()
    }

    /// Losses accounted and not yet taken.
    pub fn take_lost(&mut self) -> Vec<LostChild> {
        std::mem::take(&mut self.lost)
    }

    /// Rendered children waiting for their batches.
    pub fn waiting(&self) -> usize {
        self.filling.values().map(|f| f.children.len()).sum()
    }

    /// Nothing is being filled and no loss is waiting to be reported.
    pub fn is_idle(&self) -> bool {
        self.filling.is_empty() && self.lost.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::map_elites::messages::{LossKind, child_id};

    fn child(generation: u64, index: u32, size: u32) -> Result<Offspring, LostChild> {
        Ok(Offspring {
            id: child_id(generation, index),
            generation,
            generation_size: size,
            genome: Arc::from(&[index as u8][..]),
            pixels: vec![index as u8],
            breed_s: 0.0,
            steer: None,
        })
    }

    fn lost(generation: u64, index: u32, size: u32) -> Result<Offspring, LostChild> {
        Err(LostChild {
            id: child_id(generation, index),
            generation,
            generation_size: size,
            stage: LossKind::Render,
            reason: "x".into(),
        })
    }

    fn indices(batch: &Batch) -> Vec<u32> {
        batch.children.iter().map(|c| child_index(c.id)).collect()
    }

    #[test]
    fn batches_form_by_index_whatever_the_arrival_order() {
        let now = Instant::now();
        let mut b = Batcher::new(3);
        // Generation of 7: batches {0,1,2}, {3,4,5}, {6}.
        assert!(b.account(child(1, 4, 7), now).is_none());
        assert!(b.account(child(1, 0, 7), now).is_none());
        assert!(b.account(child(1, 5, 7), now).is_none());
        assert_eq!(b.waiting(), 3);
        let last = b
            .account(child(1, 6, 7), now)
            .expect("a partial last batch");
        assert_eq!(indices(&last), [6]);
        assert!(b.account(child(1, 2, 7), now).is_none());
        let first = b.account(child(1, 1, 7), now).expect("batch 0");
        assert_eq!(indices(&first), [0, 1, 2]);
        assert_eq!(first.arrived.len(), 3);
        let middle = b.account(child(1, 3, 7), now).expect("batch 1");
        assert_eq!(indices(&middle), [3, 4, 5]);
        assert!(b.is_idle());
    }

    #[test]
    fn duplicates_are_dropped_and_losses_complete_a_batch() {
        let now = Instant::now();
        let mut b = Batcher::new(2);
        assert!(b.account(child(0, 0, 4), now).is_none());
        assert!(b.account(child(0, 0, 4), now).is_none(), "duplicate");
        assert!(
            b.account(lost(0, 0, 4), now).is_none(),
            "duplicate as a loss"
        );
        let batch = b.account(lost(0, 1, 4), now).expect("0 arrived, 1 lost");
        assert_eq!(indices(&batch), [0]);
        assert_eq!(b.take_lost().len(), 1);
        // A batch of losses only comes out empty, so its losses can be reported.
        assert!(b.account(lost(0, 3, 4), now).is_none());
        let empty = b.account(lost(0, 2, 4), now).expect("all lost");
        assert!(empty.children.is_empty());
        assert_eq!(b.take_lost().len(), 2);
        assert!(b.take_lost().is_empty());
    }

    #[test]
    fn flush_gives_up_on_missing_children_and_old_generations_are_forgotten() {
        let now = Instant::now();
        let mut b = Batcher::new(4);
        b.account(child(2, 5, 8), now);
        b.account(child(2, 1, 8), now);
        b.account(child(2, 0, 8), now);
        b.account(lost(2, 2, 8), now);
        let flushed = b.flush();
        assert_eq!(
            flushed.iter().map(indices).collect::<Vec<_>>(),
            [vec![0, 1], vec![5]]
        );
        assert_eq!(b.waiting(), 0);
        assert_eq!(b.take_lost().len(), 1);
        assert!(b.is_idle());
        // Generation 2's ids are kept while it may be in flight (a run with the largest lag
        // has generations 2 to 2 + MAX_LAG out) and forgotten after (a late duplicate would
        // be counted again, but its batch can no longer complete).
        let newest = 2 + u64::from(MAX_LAG) + 1;
        b.account(child(newest, 0, 8), now);
        assert!(b.seen.contains_key(&2));
        b.account(child(newest + 1, 0, 8), now);
        assert!(!b.seen.contains_key(&2));
        assert!(b.seen.contains_key(&(newest + 1)));
    }
}
