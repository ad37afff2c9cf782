//! Delivery control, pure: how many bulk requests may be in flight (AIMD) and how long
//! to wait before a retry (capped exponential backoff with jitter).
//!
//! Nothing here reads a clock or a random source: latencies, outcomes and random draws
//! are passed in, so a test or a simulation drives it deterministically. The async
//! [`super::Limiter`] wraps [`Concurrency`] for the shipper.

use std::time::Duration;

/// A response slower than this counts as back-pressure for adaptive concurrency.
pub const SLOW_RESPONSE: Duration = Duration::from_secs(10);
/// Clean responses in a row before concurrency grows by one.
pub const GROW_AFTER: usize = 8;
/// First retry delay; doubles per attempt up to the configured cap.
pub const BASE_BACKOFF: Duration = Duration::from_millis(100);

/// Adaptive concurrency (additive increase, multiplicative decrease): the limit halves on
/// 429 or a slow response and grows by one after [`GROW_AFTER`] clean ones in a row,
/// between 1 and `max`. It starts at half of `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concurrency {
    limit: usize,
    max: usize,
    clean: usize,
}

impl Concurrency {
    pub fn new(max: usize) -> Concurrency {
        let max = max.max(1);
        Concurrency {
            limit: max.div_ceil(2),
            max,
            clean: 0,
        }
    }

    /// Requests allowed in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Elasticsearch pushed back (429, whole request or items). Returns the new limit.
    pub fn throttled(&mut self) -> usize {
        self.clean = 0;
        self.limit = (self.limit / 2).max(1);
        self.limit
    }

    /// A request settled without back-pressure after `latency`. Returns whether the
    /// limit changed.
    pub fn success(&mut self, latency: Duration) -> bool {
        if latency > SLOW_RESPONSE {
            let before = self.limit;
            self.throttled();
            return before != self.limit;
        }
        self.clean += 1;
        if self.clean >= GROW_AFTER {
            self.clean = 0;
            let before = self.limit;
            self.limit = (self.limit + 1).min(self.max);
            return before != self.limit;
        }
        false
    }
}

/// Delay before retry number `attempt` (0-based): exponential from [`BASE_BACKOFF`],
/// capped at `cap`, scaled by a jitter factor in [50 %, 100 %] taken from `draw` (a
/// uniform draw in [0, 1)), so a fleet of agents does not retry in lockstep.
pub fn backoff(attempt: u32, cap: Duration, draw: f64) -> Duration {
    let exp = BASE_BACKOFF
        .saturating_mul(1u32 << attempt.min(16))
        .min(cap);
    exp.mul_f64(0.5 + draw.clamp(0.0, 1.0) * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let cap = Duration::from_secs(30);
        for attempt in 0..40 {
            let exp = BASE_BACKOFF.saturating_mul(1 << attempt.min(16)).min(cap);
            assert_eq!(backoff(attempt, cap, 0.0), exp / 2, "attempt {attempt}");
            assert_eq!(backoff(attempt, cap, 1.0), exp, "attempt {attempt}");
            let d = backoff(attempt, cap, 0.37);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?}");
        }
        assert_eq!(backoff(0, cap, 0.0), Duration::from_millis(50));
        assert!(backoff(30, cap, 0.99) <= cap);
    }

    #[test]
    fn concurrency_halves_and_grows_back() {
        let mut c = Concurrency::new(8);
        assert_eq!(c.limit(), 4);
        assert_eq!(c.throttled(), 2);
        assert_eq!(c.throttled(), 1);
        assert_eq!(c.throttled(), 1, "never below one");
        for _ in 0..GROW_AFTER - 1 {
            assert!(!c.success(Duration::from_millis(5)));
        }
        assert!(
            c.success(Duration::from_millis(5)),
            "the eighth clean answer grows it"
        );
        assert_eq!(c.limit(), 2);
        for _ in 0..GROW_AFTER * 20 {
            c.success(Duration::from_millis(5));
        }
        assert_eq!(c.limit(), 8, "grows back to the cap, not beyond");
        assert!(c.success(SLOW_RESPONSE * 2));
        assert_eq!(c.limit(), 4, "a slow response counts as back-pressure");
    }

    #[test]
    fn a_throttle_resets_the_run_of_clean_answers() {
        let mut c = Concurrency::new(4);
        for _ in 0..GROW_AFTER - 1 {
            c.success(Duration::ZERO);
        }
        c.throttled();
        for _ in 0..GROW_AFTER - 1 {
            assert!(!c.success(Duration::ZERO));
        }
    }
}
