//! How fast requests leave: protecting the cluster from the agents.
//!
//! Two mechanisms, both in front of the request tasks (the driver asks before it starts one):
//!
//! - **Adaptive concurrency** (AIMD, on by default): the number of requests at once starts at
//!   `max_in_flight`; a 429 from Elasticsearch (for the whole request or for any item: its write
//!   queues are full) halves it, at most once per [`DECREASE_EVERY`] so that the answers of one
//!   congested round count once; each round of that many requests answered without a 429 adds
//!   one back, up to `max_in_flight`. A thousand agents seeing 429 thus back off together and
//!   creep back, instead of each retrying at full concurrency.
//! - **A global send limit** (off by default): requests per second and bytes per second sent
//!   (after compression), written like the per-container limits (`20/s`, `10MiB/s`, both with a
//!   comma). A body waits until the buckets can pay for it; a body larger than one second's worth
//!   pays in several turns, so it is never refused.
//!
//! Neither ever drops anything: bodies wait, the driver stops writing requests, and the readers
//! wait on the memory budget (docs/ARCHITECTURE.md, bounded memory).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::buffer::rate_limit::{LimitSpec, Limiter, Owed};
use crate::telemetry::{self, metrics};

/// The shortest time between two halvings of the concurrency.
pub const DECREASE_EVERY: Duration = Duration::from_secs(1);

/// The concurrency window, shared by the driver (reads it) and the request tasks (report to it).
#[derive(Debug)]
pub struct Window {
    /// The most the window can be: `max_in_flight`.
    max: usize,
    /// Whether 429s make it adapt at all (`adaptive_concurrency`).
    adaptive: bool,
    current: AtomicUsize,
    /// Requests answered without a 429 since the window last grew or shrank.
    passed: AtomicU64,
    last_decrease: Mutex<Option<Instant>>,
}

impl Window {
    pub fn new(max: usize, adaptive: bool) -> Window {
        let max = max.max(1);
        telemetry::set_gauge(&metrics().es_concurrency, max as u64);
        Window {
            max,
            adaptive,
            current: AtomicUsize::new(max),
            passed: AtomicU64::new(0),
            last_decrease: Mutex::new(None),
        }
    }

    /// Requests that may be in flight now.
    pub fn get(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Elasticsearch answered 429 (for the request or an item): too many requests.
    pub fn congested(&self, now: Instant) {
        if !self.adaptive {
            return;
        }
        let mut last = self.last_decrease.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < DECREASE_EVERY) {
            return;
        }
        *last = Some(now);
        let was = self.current.load(Ordering::Relaxed);
        let now_at = (was / 2).max(1);
        self.current.store(now_at, Ordering::Relaxed);
        self.passed.store(0, Ordering::Relaxed);
        telemetry::set_gauge(&metrics().es_concurrency, now_at as u64);
        if now_at < was {
            telemetry::add(&metrics().es_concurrency_decreases, 1);
            tracing::warn!(
                from = was,
                to = now_at,
                "Elasticsearch answered 429 (too many requests); sending fewer requests at once."
            );
        }
    }

    /// A request was answered without any 429.
    pub fn passed(&self) {
        if !self.adaptive {
            return;
        }
        let current = self.current.load(Ordering::Relaxed);
        if current >= self.max {
            return;
        }
        let passed = self.passed.fetch_add(1, Ordering::Relaxed) + 1;
        if passed >= current as u64 {
            // One round at this window went through: one more request at once.
            self.passed.store(0, Ordering::Relaxed);
            let next = (current + 1).min(self.max);
            self.current.store(next, Ordering::Relaxed);
            telemetry::set_gauge(&metrics().es_concurrency, next as u64);
            if next == self.max {
                tracing::info!(
                    requests = next,
                    "Elasticsearch keeps up again; back to the full number of requests at once."
                );
            }
        }
    }
}

/// The global send limit, paid by each body before it is sent.
#[derive(Debug)]
pub struct SendLimit {
    limiter: Limiter,
    /// What the body at the head of the queue still owes.
    owed: Owed,
    /// The head body has been charged (is in `owed`).
    charged: bool,
    /// When the head body was first refused: the time it waited is counted when it goes.
    waiting_since: Option<Instant>,
}

/// Bursts of the send limit: one second at the rate.
const BURST: Duration = Duration::from_secs(1);

impl SendLimit {
    /// `None` when `spec` is unlimited.
    pub fn new(spec: LimitSpec) -> Option<SendLimit> {
        (!spec.is_unlimited()).then(|| SendLimit {
            limiter: Limiter::new(spec, BURST),
            owed: Owed::default(),
            charged: false,
            waiting_since: None,
        })
    }

    /// Whether a body of `bytes` may be sent now; if not, how long until it should be asked
    /// again. Asked for the same body until it says yes: what was paid stays paid.
    pub fn admit(&mut self, bytes: usize) -> Result<(), Duration> {
        if !self.charged {
            self.owed = Owed {
                lines: 1,
                bytes: bytes as u64,
            };
            self.charged = true;
        }
        match self.limiter.pay(&mut self.owed) {
            Ok(()) => {
                self.charged = false;
                if let Some(since) = self.waiting_since.take() {
                    telemetry::add_duration(&metrics().es_send_limit_wait, since.elapsed());
                }
                Ok(())
            }
            Err(wait) => {
                self.waiting_since.get_or_insert_with(Instant::now);
                Err(wait)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_429_once_per_round_and_creeps_back() {
        let w = Window::new(8, true);
        let t0 = Instant::now();
        w.congested(t0);
        assert_eq!(w.get(), 4);
        // The other answers of the same congested round do not halve again.
        w.congested(t0 + Duration::from_millis(10));
        assert_eq!(w.get(), 4);
        w.congested(t0 + DECREASE_EVERY);
        assert_eq!(w.get(), 2);
        w.congested(t0 + DECREASE_EVERY * 2);
        w.congested(t0 + DECREASE_EVERY * 3);
        assert_eq!(w.get(), 1, "never below one request");
        // Additive increase: one more per round of `current` requests that passed.
        w.passed();
        assert_eq!(w.get(), 2);
        w.passed();
        assert_eq!(w.get(), 2);
        w.passed();
        assert_eq!(w.get(), 3);
        for _ in 0..100 {
            w.passed();
        }
        assert_eq!(w.get(), 8, "back to max_in_flight, not beyond");
    }

    #[test]
    fn a_fixed_window_ignores_429() {
        let w = Window::new(4, false);
        w.congested(Instant::now());
        assert_eq!(w.get(), 4);
    }

    #[test]
    fn the_send_limit_paces_requests_and_bytes() {
        assert!(SendLimit::new(LimitSpec::default()).is_none());
        let mut limit = SendLimit::new(LimitSpec::parse("2/s").unwrap()).unwrap();
        // A burst of one second's worth, then a wait of about half a second per request.
        assert!(limit.admit(100).is_ok());
        assert!(limit.admit(100).is_ok());
        let wait = limit.admit(100).unwrap_err();
        assert!(wait > Duration::from_millis(100) && wait <= Duration::from_millis(600));

        let mut limit = SendLimit::new(LimitSpec::parse("1KiB/s").unwrap()).unwrap();
        assert!(limit.admit(1024).is_ok());
        // Larger than a second's worth: paid over turns, never refused for good.
        let wait = limit.admit(3000).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
    }
}
