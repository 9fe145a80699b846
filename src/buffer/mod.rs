//! The memory budget between reading and acknowledgement.
//!
//! Every batch takes a [`Permit`] for the bytes it holds before it leaves the reader, and gives
//! them back when it is dropped, which is after the sink acknowledged it. When the budget is
//! spent the reader waits: the log files on disk are the buffer (DESIGN.md invariant 3).
//!
//! The reader is a plain thread, the sinks are tasks, so the budget is a mutex and a condition
//! variable: taking blocks the reader thread only, giving back never blocks.

pub mod rate_limit;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

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
}

/// A share of the budget; returned when dropped.
#[derive(Debug)]
pub struct Permit {
    inner: Arc<Inner>,
    bytes: usize,
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
            }),
        }
    }

    /// Takes `bytes` from the budget, waiting up to `timeout` for other permits to be returned.
    pub fn acquire(&self, bytes: usize, timeout: Duration) -> Result<Permit, AcquireError> {
        let inner = &self.inner;
        let mut used = inner.used.lock().unwrap_or_else(|e| e.into_inner());
        let fits = |used: usize| used == 0 || used + bytes <= inner.capacity;
        if !fits(*used) {
            let (guard, result) = inner
                .freed
                .wait_timeout_while(used, timeout, |used| !fits(*used))
                .unwrap_or_else(|e| e.into_inner());
            used = guard;
            if result.timed_out() && !fits(*used) {
                return Err(AcquireError::TimedOut);
            }
        }
        *used += bytes;
        Ok(Permit {
            inner: Arc::clone(inner),
            bytes,
        })
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
}

impl Drop for Permit {
    fn drop(&mut self) {
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
    fn oversize_request_is_granted_when_budget_is_empty() {
        let budget = Budget::new(10);
        let p = budget.acquire(1000, Duration::ZERO).unwrap();
        assert_eq!(budget.used(), 1000);
        assert!(budget.acquire(1, Duration::from_millis(5)).is_err());
        drop(p);
        assert!(budget.acquire(1, Duration::ZERO).is_ok());
    }
}
