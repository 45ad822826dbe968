//! The one backoff of the host: after failures in a row, the next try
//! waits `first`, doubling with each failure, at most `longest`
//! ([`doubling`]); with [`jitter`] where many tasks or hosts would
//! otherwise try again in step. [`Backoff`] keeps the count for a loop.
//!
//! Not `backon`: its API retries a future it is given, while these waits
//! sit inside loops that also select on a stop, a run asked for by hand
//! or a timer, and keep their count across iterations (receives, the
//! reconcile wake-up queue, a database outage); the formula is one line.
//!
//! Must not sleep or log: callers do.

use std::time::Duration;

/// The wait after `tries` failed tries in a row (1 for the first):
/// `first`, doubling, at most `longest`.
pub fn doubling(first: Duration, tries: u32, longest: Duration) -> Duration {
    first.saturating_mul(1 << tries.saturating_sub(1).min(16)).min(longest)
}

/// `wait` spread over half to one and a half of itself.
pub fn jitter(wait: Duration) -> Duration {
    wait.mul_f64(rand::random_range(0.5..1.5))
}

/// The failures in a row of one thing, and the wait each calls for.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    first: Duration,
    longest: Duration,
    tries: u32,
}

impl Backoff {
    pub const fn new(first: Duration, longest: Duration) -> Backoff {
        Backoff { first, longest, tries: 0 }
    }

    /// One more failure: the wait before the next try (no jitter).
    pub fn failed(&mut self) -> Duration {
        self.tries = self.tries.saturating_add(1);
        doubling(self.first, self.tries, self.longest)
    }

    /// A success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.tries = 0;
    }

    /// Failures in a row so far.
    pub fn tries(&self) -> u32 {
        self.tries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_the_longest_and_a_success_starts_again() {
        let (first, longest) = (Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(doubling(first, 0, longest), first);
        assert_eq!(doubling(first, u32::MAX, longest), longest);
        let mut b = Backoff::new(first, longest);
        let waits: Vec<u64> = (0..7).map(|_| b.failed().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!((b.tries(), b.failed()), (0, first));
    }

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(j >= Duration::from_secs(5) && j <= Duration::from_secs(15), "{j:?}");
        }
    }
}
