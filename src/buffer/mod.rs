//! The memory budget between reading and acknowledgement.
//!
//! Every batch takes a [`Permit`] for the bytes it holds before it leaves the reader, and gives
//! them back when it is dropped, which is after the sink acknowledged it. When the budget is
//! spent the reader waits: the log files on disk are the buffer (docs/ARCHITECTURE.md, bounded memory).
//!
//! The reader is a plain thread, the sinks are tasks, so the budget is a mutex and a condition
//! variable: taking blocks the reader thread only, giving back never blocks.

pub mod rate_limit;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A byte budget shared by the reader and everything downstream of it.
#[derive(Clone, Debug)]
pub struct Budget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    /// Bytes currently held by permits.
    used: Mutex<usize>,
    freed: Condvar,
    /// Readers waiting in [`Budget::acquire`] now.
    waiting: AtomicUsize,
    /// Woken when a reader starts waiting (see [`Budget::starved`]).
    starved: tokio::sync::Notify,
    /// When a reader last held a file back for room (see [`Budget::held_back`]), in
    /// microseconds since `born`; 0: never.
    held_back_at: AtomicU64,
    born: Instant,
}

/// For how long a file held back for room counts as a reader waiting for it.
const HELD_BACK_FOR: Duration = Duration::from_millis(200);

/// A share of the budget; returned when dropped.
#[derive(Debug)]
pub struct Permit {
    inner: Arc<Inner>,
    bytes: usize,
    /// The holder it is counted for too, if any (see [`Holder`]).
    holder: Option<Holder>,
}

/// What one holder (a file) has of the budget now: the bytes of the permits counted for it
/// ([`Permit::held_by`]). Lets the reader give a file that holds a lot of it no more while others
/// need room (docs/ARCHITECTURE.md, fair reading and delivery).
#[derive(Clone, Debug, Default)]
pub struct Holder(Arc<AtomicUsize>);

impl Holder {
    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why [`Budget::acquire`] returned without a permit.
#[derive(Debug, PartialEq, Eq)]
pub enum AcquireError {
    /// The budget did not free up within the timeout; try again (after checking for shutdown).
    TimedOut,
}

impl Budget {
    /// A budget of `capacity` bytes. A request larger than the whole budget is still granted once
    /// everything else has been returned, so one enormous batch cannot wedge the pipeline.
    pub fn new(capacity: usize) -> Self {
        Budget {
            inner: Arc::new(Inner {
                capacity: capacity.max(1),
                used: Mutex::new(0),
                freed: Condvar::new(),
                waiting: AtomicUsize::new(0),
                starved: tokio::sync::Notify::new(),
                held_back_at: AtomicU64::new(0),
                born: Instant::now(),
            }),
        }
    }

    /// Takes `bytes` from the budget, waiting up to `timeout` for other permits to be returned.
    pub fn acquire(&self, bytes: usize, timeout: Duration) -> Result<Permit, AcquireError> {
        let inner = &self.inner;
        let mut used = inner.used.lock().unwrap_or_else(|e| e.into_inner());
        let fits = |used: usize| used == 0 || used + bytes <= inner.capacity;
        if !fits(*used) {
            inner.waiting.fetch_add(1, Ordering::SeqCst);
            inner.starved.notify_one();
            let waited = inner
                .freed
                .wait_timeout_while(used, timeout, |used| !fits(*used))
                .unwrap_or_else(|e| e.into_inner());
            inner.waiting.fetch_sub(1, Ordering::SeqCst);
            let (guard, result) = waited;
            used = guard;
            if result.timed_out() && !fits(*used) {
                return Err(AcquireError::TimedOut);
            }
        }
        *used += bytes;
        Ok(Permit {
            inner: Arc::clone(inner),
            bytes,
            holder: None,
        })
    }

    /// Takes `bytes` without waiting, even past the capacity: for memory that exists already or
    /// must exist for data to leave (a request body being written or sent). Readers then wait
    /// until it is returned, so the total stays within the capacity plus what is being sent.
    pub fn charge(&self, bytes: usize) -> Permit {
        let mut used = self.inner.used.lock().unwrap_or_else(|e| e.into_inner());
        *used += bytes;
        Permit {
            inner: Arc::clone(&self.inner),
            bytes,
            holder: None,
        }
    }

    /// Whether a reader is waiting for room now, or held a file back for it lately.
    pub fn readers_waiting(&self) -> bool {
        if self.inner.waiting.load(Ordering::SeqCst) > 0 {
            return true;
        }
        let at = self.inner.held_back_at.load(Ordering::Relaxed);
        at > 0
            && self.inner.born.elapsed().as_micros() as u64 - at < HELD_BACK_FOR.as_micros() as u64
    }

    /// A reader did not read a file because the budget is nearly spent (it waits for room
    /// without blocking): counts as a reader waiting, for [`Budget::readers_waiting`] and
    /// [`Budget::starved`].
    pub fn held_back(&self) {
        let now = (self.inner.born.elapsed().as_micros() as u64).max(1);
        self.inner.held_back_at.store(now, Ordering::Relaxed);
        self.inner.starved.notify_one();
    }

    /// Returns once a reader started waiting for room (possibly before this was called): the
    /// sink then sends what it holds rather than wait for more that cannot come.
    pub async fn starved(&self) {
        self.inner.starved.notified().await;
    }

    /// Bytes currently held by permits.
    pub fn used(&self) -> usize {
        *self.inner.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }
}

impl Permit {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Counts the permit for `holder` too, until it is dropped.
    pub fn held_by(mut self, holder: &Holder) -> Permit {
        holder.0.fetch_add(self.bytes, Ordering::Relaxed);
        self.holder = Some(holder.clone());
        self
    }

    /// Resizes the permit to `bytes` without waiting (see [`Budget::charge`]): a body being
    /// written holds what it has written so far.
    pub fn resize(&mut self, bytes: usize) {
        if bytes == self.bytes {
            return;
        }
        if let Some(holder) = &self.holder {
            holder.0.fetch_add(bytes, Ordering::Relaxed);
            holder.0.fetch_sub(self.bytes, Ordering::Relaxed);
        }
        let mut used = self.inner.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = *used + bytes - self.bytes;
        let shrunk = bytes < self.bytes;
        self.bytes = bytes;
        drop(used);
        if shrunk {
            self.inner.freed.notify_all();
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(holder) = &self.holder {
            holder.0.fetch_sub(self.bytes, Ordering::Relaxed);
        }
        let mut used = self.inner.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= self.bytes;
        drop(used);
        self.inner.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn waits_until_permits_are_returned() {
        let budget = Budget::new(100);
        let a = budget.acquire(60, Duration::ZERO).unwrap();
        assert_eq!(
            budget.acquire(60, Duration::from_millis(20)).unwrap_err(),
            AcquireError::TimedOut
        );
        let b2 = budget.clone();
        let waiter = std::thread::spawn(move || {
            let start = Instant::now();
            let p = b2.acquire(60, Duration::from_secs(10)).unwrap();
            (start.elapsed(), p.bytes())
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(a);
        let (waited, bytes) = waiter.join().unwrap();
        assert!(
            waited >= Duration::from_millis(40),
            "granted before the first permit was returned"
        );
        assert_eq!(bytes, 60);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn charges_never_wait_but_make_readers_wait() {
        let budget = Budget::new(100);
        let reader = budget.acquire(80, Duration::ZERO).unwrap();
        let mut body = budget.charge(50);
        assert_eq!(budget.used(), 130, "a charge is granted past the capacity");
        drop(reader);
        assert!(budget.acquire(60, Duration::from_millis(5)).is_err());
        body.resize(10);
        assert_eq!(budget.used(), 10);
        assert!(budget.acquire(60, Duration::ZERO).is_ok());
        drop(body);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_holder_counts_its_permits_until_they_are_returned() {
        let budget = Budget::new(100);
        let file = Holder::default();
        let a = budget.acquire(30, Duration::ZERO).unwrap().held_by(&file);
        let mut b = budget.acquire(20, Duration::ZERO).unwrap().held_by(&file);
        let other = budget.acquire(10, Duration::ZERO).unwrap();
        assert_eq!((file.held(), budget.used()), (50, 60));
        b.resize(5);
        assert_eq!(file.held(), 35);
        drop(a);
        drop(other);
        assert_eq!((file.held(), budget.used()), (5, 5));
        drop(b);
        assert_eq!(file.held(), 0);
    }

    #[test]
    fn oversize_request_is_granted_when_budget_is_empty() {
        let budget = Budget::new(10);
        let p = budget.acquire(1000, Duration::ZERO).unwrap();
        assert_eq!(budget.used(), 1000);
        assert!(budget.acquire(1, Duration::from_millis(5)).is_err());
        drop(p);
        assert!(budget.acquire(1, Duration::ZERO).is_ok());
    }
}
