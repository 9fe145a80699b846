//! Each agent's share of a full cluster: a rate of documents per second that every agent of a
//! fleet learns from the items its cluster refuses with 429, so that a fleet converges to what
//! the cluster can index instead of storming it with retries (README.md, protecting
//! Elasticsearch).
//!
//! A cluster whose write queues are full answers 429 item by item, inside a 200 answer. Halving
//! the requests at once ([`super::pace::Window`]) does not slow an agent whose requests are
//! answered in milliseconds: one request at a time still offers thousands of documents per
//! second. So the documents themselves are paced, by a rate that goes down on refusals and up
//! without them:
//!
//! - **Not limited** until the cluster refuses an item with 429: a cluster that keeps up never
//!   sees a limit.
//! - **The first refusal** halves what this agent sent over the last [`WINDOW`] (times
//!   [`BETA`]), as TCP halves its window: a cluster that was taking everything says little of
//!   how far it is overrun (its queues absorbed the start of it), and which agent's answer holds
//!   the refusals is luck, so every agent makes the same cut of what it sent.
//! - **Later refusals**, at most once per [`HOLD`] and only for requests sent after the last
//!   decrease (what it did shows only in those), take off the share of items refused since then
//!   (measured over [`HOLD`] at most before the first refusal), then [`BETA`] more, at most
//!   half: a fleet that sends a fifth more than the cluster takes sees a sixth of its items
//!   refused, and each agent cuts by as much. A cut after which the share refused did not move
//!   (within [`UNMOVED`]) is not repeated: those refusals do not depend on this agent's rate
//!   (one overloaded shard, or items refused whatever comes), and cutting again would only
//!   starve it.
//! - Only item-level 429s count: a whole request refused with 429 is the coordinating node's
//!   queue, which the window and the request's own backoff answer.
//! - **Growth**: while the rate holds bodies back, it grows by [`GROWTH`] a second just after a
//!   decrease, twice that after each [`DOUBLING`] without one, at most [`MAX_GROWTH`]: slow
//!   near the capacity just found, fast onto capacity that other agents freed. Past the rate it
//!   had before the last decrease it grows by at least half of [`MAX_GROWTH`]: the cluster takes
//!   more than when it refused, so other agents have left (a fleet's tail drains at the
//!   cluster's pace, not at the last agent's share). A rate that held nothing back for
//!   [`RELEASE_AFTER`] (the agent sends less than it, or nothing) is lifted.
//! - **Pacing**: a token bucket of [`BURST`] at the rate; a body waits until the bucket can pay
//!   for it (a body larger than the bucket waits for a full one and leaves a debt of at most
//!   [`MAX_DEBT`]), and each wait is stretched by a random 0-[`JITTER`] so that agents refused
//!   together do not send together.
//! - **Smaller bodies**: while limited, a request carries at most [`SPAN`] of the rate, so the
//!   items leave as a stream rather than a burst per second. A body written before the cut that
//!   is more than twice that is written again in bodies of that size.
//! - **Retries**: while limited, an item refused with 429 is sent again within [`RETRY_WITHIN`]
//!   rather than after its growing backoff; the rate keeps it from adding to the storm.
//!
//! `adaptive_concurrency = false` turns this off with the window. Nothing is dropped: a body
//! that waits keeps its items in memory, the driver stops writing requests, and the readers
//! wait on the budget.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::telemetry::{self, metrics};

/// A decrease leaves this much below what the cluster took.
pub const BETA: f64 = 0.9;
/// Decreases are at least this far apart: the refused share is measured over it.
pub const HOLD: Duration = Duration::from_millis(250);
/// A body larger than the bucket leaves a debt of at most this long at the rate (a body built
/// before the rate fell is not held back for its whole size).
pub const MAX_DEBT: Duration = Duration::from_millis(250);
/// Growth per second while the rate holds bodies back, at the rate the cluster last refused at
/// (in log: `rate *= e^(GROWTH t)`).
pub const GROWTH: f64 = 0.025;
/// What the cluster accepted over this long is the base of a decrease.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Growth doubles every this long without a decrease...
pub const DOUBLING: Duration = Duration::from_millis(1500);
/// ...up to this much per second (doubling in about a second and a half).
pub const MAX_GROWTH: f64 = 0.5;
/// The rate is lifted after holding nothing back for this long.
pub const RELEASE_AFTER: Duration = Duration::from_secs(10);
/// The bucket holds this long at the rate.
pub const BURST: Duration = Duration::from_millis(250);
/// A request carries at most this long at the rate while limited...
pub const SPAN: Duration = Duration::from_millis(250);
/// ...and never fewer items than this (a request's fixed cost is paid per request).
pub const MIN_ITEMS: usize = 10;
/// The rate never falls below this many documents per second.
pub const MIN_RATE: f64 = 1.0;
/// While limited, an item refused with 429 is sent again within this long (jittered) whatever
/// its backoff: the rate paces what the cluster gets, and a long backoff would only leave the
/// item last.
pub const RETRY_WITHIN: Duration = Duration::from_secs(1);
/// A share refused within this fraction of the one at the last cut did not move.
pub const UNMOVED: f64 = 0.2;
/// Waits are stretched by up to this share, at random.
pub const JITTER: f64 = 0.25;

/// The learned share, shared by the driver (asks before sending a body) and the request tasks
/// (report each answer).
#[derive(Debug)]
pub struct Share {
    /// `adaptive_concurrency`: without it, refusals set no rate.
    adaptive: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Documents per second; `None`: not limited.
    rate: Option<f64>,
    /// The bucket, in documents (negative: a debt left by a body larger than the bucket).
    tokens: f64,
    /// When the bucket and the rate were last brought up to date.
    at: Option<Instant>,
    /// When the rate last held a body back.
    last_held: Option<Instant>,
    /// When the rate was last decreased: only answers to requests sent after it decrease again.
    last_decrease: Option<Instant>,
    /// Items answered, and refused with 429, of the requests sent since the last decrease.
    since_sent: u64,
    since_refused: u64,
    /// When those counts were last started again.
    since: Option<Instant>,
    /// When the rate was last cut, or a cut was found useless, and the share refused then.
    last_cut: Option<(Instant, f64)>,
    /// The rate just before the last decrease (`None` after the first).
    peak: Option<f64>,
    /// Recent answers: (answered at, items).
    answers: VecDeque<(Instant, u64)>,
}

impl Share {
    pub fn new(adaptive: bool) -> Share {
        telemetry::set_gauge(&metrics().es_share_rate, 0);
        Share {
            adaptive,
            state: Mutex::default(),
        }
    }

    /// The documents per second this agent sends now; `None` when not limited.
    #[cfg(test)]
    pub fn rate(&self) -> Option<f64> {
        self.lock().rate
    }

    /// How long an item refused with 429 waits, given its backoff: no longer than
    /// [`RETRY_WITHIN`] (jittered) while limited.
    pub fn retry_wait(&self, backoff: Duration) -> Duration {
        match self.lock().rate {
            Some(_) => backoff.min(RETRY_WITHIN.mul_f64(0.5 + 0.5 * fastrand::f64())),
            None => backoff,
        }
    }

    /// The most items a request should carry now; `None` when not limited.
    pub fn items(&self) -> Option<usize> {
        self.lock()
            .rate
            .map(|r| ((r * SPAN.as_secs_f64()) as usize).max(MIN_ITEMS))
    }

    /// Whether a body of `items` may leave now, paying for it; if not, how long until it should
    /// be asked again. Nothing is charged for a body that must wait.
    #[cfg(test)]
    pub fn admit(&self, items: usize, now: Instant) -> Result<(), Duration> {
        self.check(items, now)?;
        self.spend(items);
        Ok(())
    }

    /// [`Share::admit`] without paying: the driver asks the send limit between the two, so
    /// that a body one of them holds back is paid for by neither.
    pub fn check(&self, items: usize, now: Instant) -> Result<(), Duration> {
        let mut s = self.lock();
        s.advance(now);
        let Some(rate) = s.rate else {
            return Ok(());
        };
        let need = (items as f64).min(bucket(rate));
        if s.tokens >= need {
            return Ok(());
        }
        s.last_held = Some(now);
        let wait = (need - s.tokens) / rate;
        Err(Duration::from_secs_f64(
            wait * (1.0 + JITTER * fastrand::f64()),
        ))
    }

    /// Pays for a body of `items` that [`Share::check`] let go.
    pub fn spend(&self, items: usize) {
        let mut s = self.lock();
        if let Some(rate) = s.rate {
            s.tokens = (s.tokens - items as f64).max(-rate * MAX_DEBT.as_secs_f64());
        }
    }

    /// A request sent at `sent_at` with `items` items was answered item by item at `now`,
    /// `refused` of them with 429.
    pub fn answered(&self, sent_at: Instant, items: usize, refused: usize, now: Instant) {
        if !self.adaptive {
            return;
        }
        let mut s = self.lock();
        s.advance(now);
        s.answers.push_back((now, items as u64));
        while s
            .answers
            .front()
            .is_some_and(|&(at, _)| now.saturating_duration_since(at) > WINDOW)
        {
            s.answers.pop_front();
        }
        // Only requests sent after the last decrease tell what it did.
        if s.last_decrease.is_some_and(|t| sent_at < t) {
            return;
        }
        // The refused share is measured over the answers since the last decrease, but no
        // further back than HOLD before the first refusal among them: a long quiet spell would
        // hide how much the fleet overshoots now.
        if refused == 0
            && s.since
                .is_none_or(|t| now.saturating_duration_since(t) >= HOLD)
        {
            s.since_sent = 0;
            s.since_refused = 0;
            s.since = Some(now);
        }
        s.since_sent += items as u64;
        s.since_refused += refused as u64;
        if refused == 0
            || s.last_decrease
                .is_some_and(|t| now.saturating_duration_since(t) < HOLD)
        {
            return;
        }
        let rate = match s.rate {
            // Take off the share of items refused since the last decrease: the fleet sends that
            // much more than the cluster takes.
            Some(r) => {
                let refused_share = s.since_refused as f64 / s.since_sent.max(1) as f64;
                // A cut that left the share refused as it was, the last HOLDs, says that the
                // refusals do not depend on this agent's rate (one overloaded shard, items
                // refused whatever comes): cutting again would only starve the agent.
                if let Some((at, share)) = s.last_cut {
                    if now.saturating_duration_since(at) <= HOLD * 3
                        && (refused_share - share).abs() <= share * UNMOVED
                    {
                        s.since_sent = 0;
                        s.since_refused = 0;
                        s.since = Some(now);
                        s.last_cut = Some((now, share));
                        return;
                    }
                }
                s.last_cut = Some((now, refused_share));
                (r * (1.0 - refused_share)).max(r / 2.0) * BETA
            }
            // The first refusal: half of what this agent sent over the last WINDOW. A cluster
            // that was taking everything says little of how far it is overrun (its queues
            // absorbed the start of it, and one answer's refusals are luck), so the cut is
            // TCP's, and the later decreases and the growth find the share.
            None => {
                s.last_cut = Some((now, refused as f64 / items.max(1) as f64));
                let sent: u64 = s.answers.iter().map(|&(_, n)| n).sum();
                sent as f64 / WINDOW.as_secs_f64() / 2.0 * BETA
            }
        };
        let rate = rate.max(MIN_RATE);
        s.since_sent = 0;
        s.since_refused = 0;
        s.since = Some(now);
        let was = s.rate;
        s.peak = was;
        s.rate = Some(rate);
        s.tokens = s.tokens.min(bucket(rate));
        s.last_decrease = Some(now);
        telemetry::set_gauge(&metrics().es_share_rate, rate.ceil() as u64);
        telemetry::add(&metrics().es_share_decreases, 1);
        if was.is_none() {
            let docs_per_second = rate.round() as u64;
            tracing::warn!(
                refused,
                items,
                docs_per_second,
                "Elasticsearch refuses documents (429): its write queues are full. Sending at most this many documents per second, and probing upward slowly."
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Refills the bucket and grows (or lifts) the rate for the time since the last call.
    fn advance(&mut self, now: Instant) {
        let Some(at) = self.at else {
            self.at = Some(now);
            return;
        };
        let Some(rate) = self.rate else {
            self.at = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(at);
        if elapsed < Duration::from_millis(1) {
            return;
        }
        self.at = Some(now);
        let busy = self.last_held.max(self.last_decrease);
        if busy.is_none_or(|t| now.saturating_duration_since(t) >= RELEASE_AFTER) {
            self.rate = None;
            self.tokens = 0.0;
            telemetry::set_gauge(&metrics().es_share_rate, 0);
            tracing::info!(
                "Elasticsearch takes every document again; no longer limiting documents per second."
            );
            return;
        }
        let dt = elapsed.as_secs_f64();
        let mut rate = rate;
        if self
            .last_held
            .is_some_and(|t| now.saturating_duration_since(t) <= Duration::from_secs(1))
        {
            // Slow just after a decrease, faster the longer the cluster takes everything: onto
            // capacity that other agents freed, without overshooting a full cluster.
            let quiet = self
                .last_decrease
                .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
            let mut growth = (GROWTH * (quiet / DOUBLING.as_secs_f64()).exp2()).min(MAX_GROWTH);
            // Past the rate the cluster last refused, without a refusal: others have left.
            if self.peak.is_some_and(|p| rate > p) {
                growth = growth.max(MAX_GROWTH / 2.0);
            }
            rate *= (growth * dt).exp();
            self.rate = Some(rate);
            telemetry::set_gauge(&metrics().es_share_rate, rate.ceil() as u64);
        }
        // Refilled at the rate now in force, up to its bucket: the bucket `admit` compares with.
        self.tokens = (self.tokens + rate * dt).min(bucket(rate));
    }
}

/// The bucket's size at `rate`: [`BURST`] at the rate, at least one document.
fn bucket(rate: f64) -> f64 {
    (rate * BURST.as_secs_f64()).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A second of requests every 100 ms, 100 documents each, nothing refused; returns its end.
    fn a_clean_second(share: &Share, t0: Instant) -> Instant {
        for i in 0..10 {
            let t = t0 + ms(100 * i);
            share.answered(t, 100, 0, t + ms(10));
        }
        t0 + ms(1_000)
    }

    #[test]
    fn a_cluster_that_keeps_up_sets_no_limit() {
        let share = Share::new(true);
        let t0 = Instant::now();
        for i in 0..100 {
            let t = t0 + ms(10 * i);
            assert_eq!(share.admit(5_000, t), Ok(()));
            share.answered(t, 5_000, 0, t + ms(5));
        }
        assert_eq!(share.rate(), None);
        assert_eq!(share.items(), None);
    }

    #[test]
    fn the_first_refusal_halves_and_later_ones_take_off_the_refused_share() {
        let share = Share::new(true);
        let t0 = Instant::now();
        // 1,000 documents per second accepted for a second, then most of a request refused.
        let t = a_clean_second(&share, t0);
        share.answered(t, 100, 90, t + ms(10));
        let rate = share.rate().expect("limited after a 429");
        // Half of the 1,100 sent over the last second, times BETA.
        assert!((rate - 550.0 * BETA).abs() < 0.001, "{rate}");
        assert_eq!(share.items(), Some((rate * 0.25) as usize));
        // The answers of requests sent before the decrease do not decrease it again...
        share.answered(t + ms(5), 100, 100, t + ms(20));
        assert_eq!(share.rate(), Some(rate));
        // ...nor do those within HOLD of it; after it, the share refused since the decrease
        // (a fifth) comes off, and BETA more.
        for i in 0..2 {
            let sent = t + ms(100 + 100 * i);
            share.answered(sent, 100, 20, sent + ms(10));
        }
        assert_eq!(share.rate(), Some(rate));
        let sent = t + ms(250);
        share.answered(sent, 100, 20, sent + ms(10));
        let lower = share.rate().unwrap();
        assert!(
            (lower - rate * 0.8 * BETA).abs() < 0.001,
            "{rate} -> {lower}"
        );
        // A decrease takes at most half.
        let sent = t + ms(1_200);
        share.answered(sent, 100, 100, sent + ms(10));
        assert!((share.rate().unwrap() - lower * 0.5 * BETA).abs() < 0.001);
    }

    #[test]
    fn a_long_quiet_spell_measures_the_share_refused_now() {
        let share = Share::new(true);
        let t0 = Instant::now();
        share.answered(t0, 1_000, 500, t0 + ms(10));
        let rate = share.rate().unwrap();
        // Five seconds of answers with nothing refused, then two thirds of one refused: the
        // share is measured over the last HOLD (three answers, a fifth refused), not diluted
        // by the quiet seconds (where it would be about 1%).
        let mut t = t0 + ms(20);
        for _ in 0..50 {
            t += ms(100);
            share.answered(t, 100, 0, t + ms(10));
        }
        let before = share.rate().unwrap();
        assert_eq!(before, rate, "nothing held back: no growth");
        t += ms(100);
        share.answered(t, 90, 60, t + ms(10));
        let after = share.rate().unwrap();
        assert!(
            after < before * 0.85 * BETA && after > before * 0.5 * BETA,
            "{before} -> {after}"
        );
    }

    #[test]
    fn the_bucket_paces_bodies_with_jittered_waits() {
        let share = Share::new(true);
        let t0 = Instant::now();
        share.answered(t0, 2, 2, t0 + ms(50));
        let t = t0 + ms(50);
        let rate = share.rate().unwrap();
        assert_eq!(rate, MIN_RATE, "two sent: the lowest rate");
        // The bucket starts empty after a decrease: a body waits about one document's time.
        let wait = share.admit(1, t).unwrap_err();
        assert!(wait >= ms(999) && wait <= ms(1_251), "{wait:?}");
        assert_eq!(share.admit(1, t + ms(1_000)), Ok(()));
        // A body larger than the bucket leaves when the bucket is full, and leaves a debt.
        assert!(share.admit(1, t + ms(1_001)).is_err());
        assert_eq!(share.admit(10, t + ms(2_100)), Ok(()));
        // The debt is at most MAX_DEBT at the rate, not ten documents' time.
        assert!(share.admit(1, t + ms(2_900)).is_err());
        assert_eq!(share.admit(1, t + ms(4_300)), Ok(()));
    }

    #[test]
    fn a_rate_that_holds_back_grows_and_one_that_does_not_is_lifted() {
        let share = Share::new(true);
        let t0 = Instant::now();
        let t = a_clean_second(&share, t0);
        share.answered(t, 100, 100, t + ms(10));
        let start = share.rate().unwrap();
        // Bodies wait on the rate for 10 s: it grows by GROWTH a second at first, twice that
        // after each DOUBLING, up to MAX_GROWTH.
        let mut now = t + ms(10);
        for _ in 0..100 {
            now += ms(100);
            let _ = share.admit(100_000, now);
        }
        let grown = share.rate().unwrap();
        let doubling = DOUBLING.as_secs_f64();
        let exponent: f64 = (0..10_000)
            .map(|i| (GROWTH * (i as f64 / 1000.0 / doubling).exp2()).min(MAX_GROWTH) / 1000.0)
            .sum();
        let expected = start * exponent.exp();
        assert!(
            (grown - expected).abs() / expected < 0.05,
            "{start} -> {grown}, expected about {expected}"
        );
        // Then nothing waits for RELEASE_AFTER: the limit is lifted.
        assert_eq!(share.admit(1, now + RELEASE_AFTER + ms(1)), Ok(()));
        assert_eq!(share.rate(), None);
    }

    #[test]
    fn past_the_rate_last_refused_the_rate_grows_fast() {
        let share = Share::new(true);
        let t0 = Instant::now();
        let t = a_clean_second(&share, t0);
        share.answered(t, 100, 90, t + ms(10));
        let before = share.rate().unwrap();
        // A second decrease, a fifth refused: `before` is the rate the cluster last refused.
        let sent = t + ms(300);
        share.answered(sent, 100, 20, sent + ms(10));
        // Bodies held back: the rate comes back to `before` slowly, at GROWTH a second and its
        // doublings...
        let mut now = sent + ms(10);
        while share.rate().unwrap() <= before {
            now += ms(50);
            let _ = share.admit(100_000, now);
            assert!(now < sent + ms(20_000), "never came back");
        }
        let back = now - sent;
        assert!(back > ms(1_500), "back after {back:?}: too fast");
        // ...and past it grows by at least MAX_GROWTH / 2 a second.
        let from = share.rate().unwrap();
        let at = now;
        while now < at + ms(1_000) {
            now += ms(50);
            let _ = share.admit(100_000, now);
        }
        let grown = share.rate().unwrap();
        assert!(
            grown >= from * (MAX_GROWTH / 2.0).exp() * 0.99,
            "{from} -> {grown} after {back:?}"
        );
    }

    #[test]
    fn a_growing_rate_still_lets_bodies_larger_than_its_bucket_leave() {
        let share = Share::new(true);
        let t0 = Instant::now();
        share.answered(t0, 400, 360, t0 + ms(10));
        // The rate grows while bodies wait; a body larger than the bucket must still find the
        // bucket full at some point (it once compared the grown bucket with the old one).
        let mut now = t0 + ms(10);
        let mut sent = 0;
        for _ in 0..200 {
            now += ms(50);
            if share.admit(1_000, now).is_ok() {
                sent += 1;
            }
        }
        assert!(sent >= 5, "{sent} bodies in 10 s");
    }

    #[test]
    fn without_adaptive_concurrency_refusals_set_no_rate() {
        let share = Share::new(false);
        let t0 = Instant::now();
        share.answered(t0, 100, 100, t0 + ms(10));
        assert_eq!(share.rate(), None);
        assert_eq!(share.admit(10_000, t0 + ms(20)), Ok(()));
    }

    #[test]
    fn a_cut_that_does_not_lower_the_share_refused_is_not_repeated() {
        let share = Share::new(true);
        let t0 = Instant::now();
        // Two thirds of every request refused, whatever the rate.
        let mut t = t0;
        share.answered(t, 300, 200, t + ms(10));
        t += ms(20);
        let mut cuts = vec![share.rate().unwrap()];
        for _ in 0..40 {
            t += ms(100);
            share.answered(t, 30, 20, t + ms(10));
            let rate = share.rate().unwrap();
            if rate < *cuts.last().unwrap() {
                cuts.push(rate);
            }
        }
        assert!(cuts.len() <= 2, "{cuts:?}");
    }
}
