//! How far behind a file is: bytes not acknowledged yet, and since when the oldest of them has
//! been waiting.
//!
//! The tailer samples each file's size about once a second. A [`Lag`] remembers when each size
//! was first seen, as long as some byte below it is not acknowledged: the oldest unshipped byte
//! (the acknowledged position) was there at the first sample whose size is past it, so that
//! sample's time is when it was first seen. At most [`SAMPLES`] samples are kept per file; when
//! more are needed the two oldest are merged, keeping the older time, so the age is never
//! understated. A file that is caught up holds no samples (and no memory).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples kept per file at most.
pub const SAMPLES: usize = 16;

/// The lag of one file.
#[derive(Debug, Default)]
pub struct Lag {
    /// (size, first seen), sizes increasing.
    samples: VecDeque<(u64, Instant)>,
}

impl Lag {
    /// Records that the file is `size` bytes long at `now` and acknowledged up to `acked`;
    /// returns the bytes behind and how long the oldest of them has waited.
    pub fn sample(&mut self, size: u64, acked: u64, now: Instant) -> (u64, Duration) {
        while self.samples.front().is_some_and(|&(s, _)| s <= acked) {
            self.samples.pop_front();
        }
        if size <= acked {
            // Caught up (or truncated below what was acknowledged).
            self.samples = VecDeque::new();
            return (0, Duration::ZERO);
        }
        if self.samples.back().is_none_or(|&(s, _)| s < size) {
            if self.samples.len() == SAMPLES {
                if let (Some((_, oldest)), Some(next)) =
                    (self.samples.pop_front(), self.samples.front_mut())
                {
                    next.1 = oldest;
                }
            }
            self.samples.push_back((size, now));
        }
        let since = self.samples.front().map_or(now, |&(_, t)| t);
        (size - acked, now.duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_is_that_of_the_oldest_unacknowledged_byte() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut lag = Lag::default();
        assert_eq!(lag.sample(100, 100, s(0)), (0, Duration::ZERO));
        assert_eq!(lag.sample(200, 100, s(1)), (100, Duration::ZERO));
        assert_eq!(lag.sample(300, 100, s(2)), (200, Duration::from_secs(1)));
        // Bytes up to 200 shipped: the oldest waiting byte appeared at 2 s.
        assert_eq!(lag.sample(300, 200, s(3)), (100, Duration::from_secs(1)));
        // A steady small lag does not grow with time.
        assert_eq!(lag.sample(400, 300, s(4)), (100, Duration::ZERO));
        assert_eq!(lag.sample(500, 400, s(5)), (100, Duration::ZERO));
        assert_eq!(lag.sample(500, 500, s(6)), (0, Duration::ZERO));
        assert!(lag.samples.is_empty());
    }

    #[test]
    fn merged_samples_never_understate_the_age() {
        let t0 = Instant::now();
        let mut lag = Lag::default();
        for i in 0..100u64 {
            lag.sample(1000 + i * 10, 1000, t0 + Duration::from_secs(i));
        }
        assert!(lag.samples.len() <= SAMPLES);
        let (behind, age) = lag.sample(2000, 1005, t0 + Duration::from_secs(100));
        assert_eq!(behind, 995);
        // Byte 1000 was first seen at 1 s (at 0 s the file ended there).
        assert_eq!(age, Duration::from_secs(99));
    }
}
