//! Acknowledgements: byte ranges of a file that are done -> the end of the longest done prefix.
//!
//! Sinks may finish batches out of order (several requests in flight, retries), so the ranges of
//! one file generation arrive in any order. [`AckRanges`] keeps the ones that arrived early and
//! advances the prefix only when the gap before them closes: a position never passes a byte that
//! is not acknowledged (docs/ARCHITECTURE.md, the invariants).

use std::collections::BTreeMap;
use std::sync::Arc;

/// A runtime handle for one followed file *generation*: a file opened by the tailer, or the same
/// file again after it was truncated. Acks name it rather than a path, because paths are reused
/// by rotation and a truncated file restarts its offsets at 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey(pub u64);

/// What a sink hands back when it is done with a batch: the bytes `[start, end)` of `file` are
/// acknowledged (delivered, or deliberately dead-lettered or dropped and counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckToken {
    pub file: FileKey,
    pub start: u64,
    pub end: u64,
}

/// Where a sink hands a batch's [`AckToken`] once it is done with it. The positions table
/// (`tail::positions`) is the implementation the agent wires in; sinks know only this.
pub trait Acknowledge: Send + Sync {
    fn ack(&self, token: AckToken);

    /// Acknowledges several ranges (of different files) at once: no one sees some of them
    /// acknowledged and not the others.
    fn ack_all(&self, tokens: &[AckToken]) {
        for &token in tokens {
            self.ack(token);
        }
    }
}

/// The handle sinks keep to acknowledge through.
pub type Acks = Arc<dyn Acknowledge>;

/// The acknowledged prefix of one file generation and the ranges acknowledged beyond it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckRanges {
    /// Every byte below this offset is acknowledged.
    acked: u64,
    /// Ranges acknowledged past a gap: start -> end. Bounded by the number of batches in flight,
    /// which the memory budget bounds.
    early: BTreeMap<u64, u64>,
}

impl AckRanges {
    /// Nothing acknowledged yet; the prefix starts at `start` (where reading started).
    pub fn new(start: u64) -> Self {
        AckRanges {
            acked: start,
            early: BTreeMap::new(),
        }
    }

    /// Records `[start, end)` as acknowledged. Returns whether the prefix moved.
    pub fn ack(&mut self, start: u64, end: u64) -> bool {
        if end <= self.acked || start >= end {
            return false;
        }
        if start > self.acked {
            let slot = self.early.entry(start).or_insert(end);
            *slot = (*slot).max(end);
            return false;
        }
        self.acked = end;
        // Swallow the early ranges the new prefix now reaches.
        while let Some((&s, &e)) = self.early.first_key_value() {
            if s > self.acked {
                break;
            }
            self.early.pop_first();
            self.acked = self.acked.max(e);
        }
        true
    }

    /// The end of the acknowledged prefix.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Whether ranges past a gap are still waiting for the gap to close.
    pub fn has_gaps(&self) -> bool {
        !self.early.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_and_out_of_order() {
        let mut r = AckRanges::new(10);
        assert!(!r.ack(20, 30), "a gap must hold the prefix");
        assert_eq!(r.acked(), 10);
        assert!(!r.ack(40, 50));
        assert!(r.ack(10, 20));
        assert_eq!(r.acked(), 30, "closing the gap swallows the early range");
        assert!(r.has_gaps());
        assert!(r.ack(30, 40));
        assert_eq!(r.acked(), 50);
        assert!(!r.has_gaps());
        assert!(!r.ack(0, 50), "old ranges change nothing");
        assert!(!r.ack(60, 60), "empty ranges change nothing");
    }

    proptest! {
        /// Adjacent ranges acknowledged in any order end at the last range's end, and the prefix
        /// never passes a range that has not been acknowledged.
        #[test]
        fn any_order_reaches_the_end(lens in prop::collection::vec(1u64..100, 1..40), seed in any::<u64>()) {
            let mut ranges = Vec::new();
            let mut at = 5;
            for len in lens { ranges.push((at, at + len)); at += len; }
            let mut order: Vec<usize> = (0..ranges.len()).collect();
            let mut s = seed;
            for i in (1..order.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut r = AckRanges::new(5);
            let mut done = vec![false; ranges.len()];
            for &i in &order {
                r.ack(ranges[i].0, ranges[i].1);
                done[i] = true;
                let first_missing = done.iter().position(|d| !d);
                let expect = first_missing.map_or(at, |m| ranges[m].0);
                prop_assert_eq!(r.acked(), expect);
            }
        }
    }
}
