//! How large a bulk request may be: `batch.max_bytes`, or less where a 413 taught that the path to
//! the cluster (Elasticsearch's `http.max_content_length`, or a proxy in front of it with a lower
//! body limit) takes less.
//!
//! Without this, a 413 splits the refused request in halves, and the next requests are built at
//! `batch.max_bytes` again, refused again and split again, for every request, forever. So the cap
//! is learned:
//!
//! - a 413 for a body of S bytes lowers the cap to S/2 (what its halves are), and remembers S as
//!   the smallest size refused;
//! - each accepted body of at least 3/4 of the cap (one the cap shaped) raises it by 1/16: it probes
//!   upward slowly, but stays 1/16 below the smallest size refused, so a limit once learned is not
//!   hit again and again;
//! - a refusal is forgotten [`FORGET_AFTER`] after the last 413: the cap may then probe back up to
//!   `batch.max_bytes`, so a limit that was raised is found again, at the cost of at most one
//!   refused request per period while it was not.
//!
//! Sizes are bytes before compression: what `http.max_content_length` measures, what the driver
//! controls, and in proportion to what a proxy measures on the wire.

use std::time::Duration;

use tokio::time::Instant;

use crate::telemetry::{self, metrics};

/// How long the smallest refused size bounds the probing.
pub const FORGET_AFTER: Duration = Duration::from_secs(10 * 60);

/// The cap on request bodies, learned from 413s.
#[derive(Debug)]
pub struct BodyCap {
    /// `batch.max_bytes`: the cap never grows past it.
    max: usize,
    /// Bodies are closed once they hold this many bytes.
    cap: usize,
    /// The smallest body refused with 413, and when the last 413 came.
    refused: Option<(usize, Instant)>,
}

/// What a 413 changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// The first 413 since the cap was last at `batch.max_bytes` or a refusal was forgotten.
    First { cap: usize },
    /// A further 413 lowered the cap again.
    Lower { cap: usize },
    /// The cap was already below this body (it was built before the cap came down).
    Nothing,
}

impl BodyCap {
    pub fn new(max: usize) -> BodyCap {
        let max = max.max(1);
        telemetry::set_gauge(&metrics().es_max_request_bytes, max as u64);
        BodyCap {
            max,
            cap: max,
            refused: None,
        }
    }

    /// The size at which a body is closed now.
    pub fn get(&self) -> usize {
        self.cap
    }

    /// A body of `bytes` was refused with 413 at `now`.
    pub fn refused(&mut self, bytes: usize, now: Instant) -> Learned {
        let first = self.refused.is_none();
        let smallest = self.refused.map_or(bytes, |(s, _)| s.min(bytes));
        self.refused = Some((smallest, now));
        let halves = (bytes / 2).max(1);
        if halves >= self.cap {
            return Learned::Nothing;
        }
        self.set(halves);
        if first {
            Learned::First { cap: self.cap }
        } else {
            Learned::Lower { cap: self.cap }
        }
    }

    /// A body of `bytes` was accepted at `now`. Returns whether the cap is at `batch.max_bytes`.
    pub fn accepted(&mut self, bytes: usize, now: Instant) -> bool {
        if self
            .refused
            .is_some_and(|(_, at)| now.duration_since(at) >= FORGET_AFTER)
        {
            self.refused = None;
        }
        if self.cap >= self.max {
            return true;
        }
        if bytes < self.cap - self.cap / 4 {
            return false;
        }
        let ceiling = self.refused.map_or(self.max, |(s, _)| s - s / 16);
        let grown = (self.cap + (self.cap / 16).max(1))
            .min(ceiling)
            .min(self.max);
        if grown > self.cap {
            self.set(grown);
        }
        self.cap >= self.max
    }

    fn set(&mut self, cap: usize) {
        self.cap = cap;
        telemetry::set_gauge(&metrics().es_max_request_bytes, cap as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    /// A path that refuses bodies above `limit`, and a sender that always has a full body.
    fn run(cap: &mut BodyCap, limit: usize, requests: usize, now: Instant) -> usize {
        let mut refusals = 0;
        for _ in 0..requests {
            let body = cap.get();
            if body > limit {
                refusals += 1;
                cap.refused(body, now);
            } else {
                cap.accepted(body, now);
            }
        }
        refusals
    }

    #[test]
    fn a_limit_is_learned_and_then_not_hit_again() {
        let t0 = Instant::now();
        let mut cap = BodyCap::new(5 * KIB * KIB);
        assert_eq!(cap.get(), 5 * KIB * KIB);
        assert_eq!(
            cap.refused(5 * KIB * KIB, t0),
            Learned::First {
                cap: 5 * KIB * KIB / 2
            }
        );
        // Bodies built before the cap came down are refused too, and change nothing.
        assert_eq!(cap.refused(5 * KIB * KIB, t0), Learned::Nothing);
        let limit = 900 * KIB;
        let refusals = run(&mut cap, limit, 1000, t0);
        assert!(refusals <= 4, "{refusals} refusals while learning");
        assert!(cap.get() <= limit && cap.get() > limit / 2, "{}", cap.get());
        // Once learned, a full day of full bodies is never refused while the limit holds.
        assert_eq!(
            run(&mut cap, limit, 10_000, t0 + Duration::from_secs(60)),
            0
        );
    }

    #[test]
    fn small_bodies_do_not_raise_the_cap() {
        let t0 = Instant::now();
        let mut cap = BodyCap::new(1024 * KIB);
        cap.refused(1024 * KIB, t0);
        let learned = cap.get();
        for _ in 0..100 {
            cap.accepted(10 * KIB, t0);
        }
        assert_eq!(cap.get(), learned);
    }

    #[test]
    fn a_raised_limit_is_found_again_after_the_refusal_is_forgotten() {
        let t0 = Instant::now();
        let mut cap = BodyCap::new(1024 * KIB);
        run(&mut cap, 300 * KIB, 200, t0);
        assert!(cap.get() <= 300 * KIB);
        // The proxy's limit goes away: within the period the cap stays below the refusal...
        run(&mut cap, usize::MAX, 200, t0 + FORGET_AFTER / 2);
        assert!(cap.get() < 600 * KIB, "{}", cap.get());
        // ...after it, the cap probes back up to batch.max_bytes.
        let later = t0 + FORGET_AFTER + Duration::from_secs(1);
        run(&mut cap, usize::MAX, 200, later);
        assert_eq!(cap.get(), 1024 * KIB);
        assert!(cap.accepted(cap.get(), later), "back at batch.max_bytes");
    }
}
