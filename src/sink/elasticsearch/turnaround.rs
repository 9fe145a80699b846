//! How many items a request may carry so that it is answered quickly: with a slow cluster, a
//! request of `batch.max_bytes` takes seconds, and every record in it, a quiet container's new
//! line too, waits for all of it (docs/ARCHITECTURE.md, fair reading and delivery).
//!
//! The driver learns how long the cluster takes from the requests it answers, as a fixed cost per
//! request plus a cost per item (a least-squares line through the last [`SAMPLES`] answers), and
//! closes requests at the number of items whose cost fits in [`TARGET`] after the fixed cost (or,
//! when the fixed cost alone passes the target, at as many items as cost that much again): a fast
//! cluster is never limited by it (its cap is far above `batch.max_events` and `batch.max_bytes`),
//! a cluster slow per item gets smaller requests that come back sooner, with as many items per
//! second as before (the cluster's pace is the limit either way), and a cluster slow per request
//! (a long round trip, a proxy that holds every answer) keeps large requests, since smaller ones
//! would only carry fewer items per round trip.
//!
//! A line needs requests of different sizes. While the answers are all of one size, a request
//! answered within the target raises the cap as if it had no fixed cost, and a slower one halves
//! it: the next answers then tell the two costs apart.

use std::collections::VecDeque;
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
/// Answers the line is drawn through.
pub const SAMPLES: usize = 16;
/// Sizes must differ by this factor for a line to be drawn.
const SPREAD: f64 = 1.5;

/// The learned cap on items per request.
#[derive(Debug)]
pub struct ItemCap {
    /// `batch.max_events`: the cap never grows past it.
    max: usize,
    cap: usize,
    /// The last answers: (items, seconds).
    samples: VecDeque<(f64, f64)>,
}

impl ItemCap {
    pub fn new(max: usize) -> ItemCap {
        let max = max.max(1);
        let cap = FIRST_ITEMS.min(max);
        telemetry::set_gauge(&metrics().es_max_request_items, cap as u64);
        ItemCap {
            max,
            cap,
            samples: VecDeque::with_capacity(SAMPLES),
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
        let (n, t) = (items as f64, took.as_secs_f64());
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((n, t));
        let target = TARGET.as_secs_f64();
        let floor = MIN_ITEMS.min(self.max);
        let cap = match self.line() {
            // Slow per request, not per item: nothing to gain from smaller requests.
            Some((_, per_item)) if per_item <= f64::EPSILON => self.max,
            Some((fixed, per_item)) => {
                let room = if fixed < target / 2.0 {
                    target - fixed
                } else {
                    fixed
                };
                (room / per_item).min(self.max as f64) as usize
            }
            None if t <= target => {
                // As if the request had no fixed cost: a lower bound of what fits.
                let fits = (target / (t / n).max(f64::MIN_POSITIVE)).min(self.max as f64);
                self.cap.max(fits as usize)
            }
            None => items / 2,
        }
        .clamp(floor, self.max);
        if cap != self.cap {
            self.cap = cap;
            telemetry::set_gauge(&metrics().es_max_request_items, cap as u64);
        }
    }

    /// The fixed cost and the cost per item (seconds), when the answers' sizes differ enough.
    fn line(&self) -> Option<(f64, f64)> {
        let (lo, hi) = self
            .samples
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &(n, _)| {
                (lo.min(n), hi.max(n))
            });
        if hi < lo * SPREAD {
            return None;
        }
        let k = self.samples.len() as f64;
        let (sn, st) = self
            .samples
            .iter()
            .fold((0.0, 0.0), |(a, b), &(n, t)| (a + n, b + t));
        let (mn, mt) = (sn / k, st / k);
        let (cov, var) = self.samples.iter().fold((0.0, 0.0), |(c, v), &(n, t)| {
            (c + (n - mn) * (t - mt), v + (n - mn) * (n - mn))
        });
        let per_item = (cov / var).max(0.0);
        let fixed = (mt - per_item * mn).max(0.0);
        Some((fixed, per_item))
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
        // 30 ms per item: 8 items would fit in the target.
        let mut cap = ItemCap::new(10_000);
        for _ in 0..20 {
            let items = cap.get();
            cap.answered(items, Duration::from_millis(30) * items as u32);
        }
        assert_eq!(cap.get(), MIN_ITEMS);
        let mut small = ItemCap::new(50);
        for _ in 0..20 {
            small.answered(50, Duration::from_millis(30) * 50);
        }
        assert_eq!(
            small.get(),
            50,
            "batch.max_events below the minimum stays the cap"
        );
    }

    #[test]
    fn a_cluster_slow_per_request_not_per_item_keeps_large_requests() {
        // Every answer takes one second, whatever its size (a long round trip, a proxy that
        // holds answers): smaller requests would carry fewer items per second.
        let mut cap = ItemCap::new(10_000);
        for _ in 0..40 {
            let items = cap.get();
            cap.answered(items, Duration::from_secs(1));
        }
        assert_eq!(cap.get(), 10_000);
    }

    #[test]
    fn a_fixed_cost_and_a_cost_per_item_are_told_apart() {
        // 50 ms per request plus 100 µs per item: 2,000 items fit in 250 ms.
        let mut cap = ItemCap::new(100_000);
        for _ in 0..40 {
            let items = cap.get();
            let took = Duration::from_millis(50) + Duration::from_micros(100) * items as u32;
            cap.answered(items, took);
        }
        let got = cap.get();
        assert!((1_800..=2_200).contains(&got), "{got}");
    }
}
