//! How many items a request may carry so that it is answered quickly: with a slow cluster, a
//! request of `batch.max_bytes` takes seconds, and every record in it, a quiet container's new
//! line too, waits for all of it (docs/ARCHITECTURE.md, fair reading and delivery).
//!
//! The driver learns how long the cluster takes per item from the requests it answers (an
//! exponentially weighted mean of seconds per item, the request's fixed cost included) and closes
//! requests at the number of items that take [`TARGET`]: a fast cluster is never limited by it
//! (its cap is far above `batch.max_events` and `batch.max_bytes`), a slow one gets smaller
//! requests that come back sooner, with as many items per second as before (the cluster's pace
//! is the limit either way).

use std::time::Duration;

use crate::telemetry::{self, metrics};

/// How long a request should take to be answered.
pub const TARGET: Duration = Duration::from_millis(250);
/// Requests are never capped below this many items: a request's fixed cost is paid per request.
pub const MIN_ITEMS: usize = 200;
/// Items per request until the first answer tells how fast the cluster is: a slow cluster's
/// first requests are short too, a fast one's cap grows to `batch.max_events` at its first
/// answer.
pub const FIRST_ITEMS: usize = 1_000;
/// Weight of the newest answer in the mean.
const WEIGHT: f64 = 0.25;

/// The learned cap on items per request.
#[derive(Debug)]
pub struct ItemCap {
    /// `batch.max_events`: the cap never grows past it.
    max: usize,
    cap: usize,
    /// Seconds per item, averaged over answered requests; `None` before the first.
    per_item: Option<f64>,
}

impl ItemCap {
    pub fn new(max: usize) -> ItemCap {
        let max = max.max(1);
        let cap = FIRST_ITEMS.min(max);
        telemetry::set_gauge(&metrics().es_max_request_items, cap as u64);
        ItemCap {
            max,
            cap,
            per_item: None,
        }
    }

    /// The number of items at which a request is closed now.
    pub fn get(&self) -> usize {
        self.cap
    }

    /// A request of `items` items was answered after `took`.
    pub fn answered(&mut self, items: usize, took: Duration) {
        if items == 0 {
            return;
        }
        let sample = took.as_secs_f64() / items as f64;
        let mean = match self.per_item {
            Some(mean) => mean + WEIGHT * (sample - mean),
            None => sample,
        };
        self.per_item = Some(mean);
        let fits = if mean > 0.0 {
            (TARGET.as_secs_f64() / mean).min(self.max as f64) as usize
        } else {
            self.max
        };
        let cap = fits.clamp(MIN_ITEMS.min(self.max), self.max);
        if cap != self.cap {
            self.cap = cap;
            telemetry::set_gauge(&metrics().es_max_request_items, cap as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_cluster_is_not_capped() {
        let mut cap = ItemCap::new(10_000);
        assert_eq!(cap.get(), FIRST_ITEMS, "until the first answer");
        cap.answered(FIRST_ITEMS, Duration::from_millis(5));
        assert_eq!(cap.get(), 10_000, "the first answer shows a fast cluster");
        for _ in 0..20 {
            // 5,000 items in 20 ms.
            cap.answered(5_000, Duration::from_millis(20));
        }
        assert_eq!(cap.get(), 10_000);
    }

    #[test]
    fn a_slow_cluster_gets_requests_answered_within_the_target_and_recovers() {
        let mut cap = ItemCap::new(100_000);
        // 200 µs per item: a request of 25,000 items takes 5 s.
        let per_item = Duration::from_micros(200);
        let mut items = 25_000;
        for _ in 0..20 {
            cap.answered(items, per_item * items as u32);
            items = cap.get();
        }
        let took = per_item * cap.get() as u32;
        assert!(
            took <= TARGET + Duration::from_millis(10),
            "{took:?} at {}",
            cap.get()
        );
        assert!(took >= TARGET / 2, "no smaller than needed: {took:?}");
        // The cluster is fast again: the cap grows back.
        for _ in 0..40 {
            let items = cap.get();
            cap.answered(items, Duration::from_micros(2) * items as u32);
        }
        assert_eq!(cap.get(), 100_000);
    }

    #[test]
    fn never_below_the_minimum() {
        let mut cap = ItemCap::new(10_000);
        cap.answered(1_000, Duration::from_secs(30));
        assert_eq!(cap.get(), MIN_ITEMS);
        let mut small = ItemCap::new(50);
        small.answered(50, Duration::from_secs(30));
        assert_eq!(
            small.get(),
            50,
            "batch.max_events below the minimum stays the cap"
        );
    }
}
