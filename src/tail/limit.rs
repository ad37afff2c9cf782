//! Per-container rate limits: token buckets over bytes and lines read. Over its limit a
//! container's files are read more slowly; their backlog stays in the files, nothing is
//! dropped, and the other files keep their turns.

use std::time::{Duration, Instant};

/// The least a throttled turn waits to read: 50 ms of its rates.
const TURN_SECS: f64 = 0.05;

/// A limit: sustained rates and how long a burst may run at full speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Bytes per second (`None`: no byte limit).
    pub bytes_per_sec: Option<f64>,
    /// Lines per second (`None`: no line limit).
    pub lines_per_sec: Option<f64>,
    /// The bucket holds this many seconds of each rate.
    pub burst_secs: f64,
}

/// One token bucket per rate, allowed to go into debt by one turn's overshoot (a turn
/// reads whole lines): the next turn waits until the debt is repaid.
#[derive(Debug, Clone)]
pub struct Bucket {
    limit: Limit,
    bytes: f64,
    lines: f64,
    at: Instant,
    /// The last turn was refused or cut short while the file had more to read.
    pub throttled: bool,
}

impl Bucket {
    /// A full bucket.
    pub fn new(limit: Limit, now: Instant) -> Bucket {
        Bucket {
            bytes: limit.bytes_per_sec.map_or(0.0, |r| r * limit.burst_secs),
            lines: limit.lines_per_sec.map_or(0.0, |r| r * limit.burst_secs),
            limit,
            at: now,
            throttled: false,
        }
    }

    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// Replaces the limit, keeping the tokens (capped to the new burst).
    pub fn set_limit(&mut self, limit: Limit) {
        self.limit = limit;
        self.refill(self.at);
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        let l = self.limit;
        if let Some(r) = l.bytes_per_sec {
            self.bytes = (self.bytes + r * dt).min(r * l.burst_secs);
        }
        if let Some(r) = l.lines_per_sec {
            self.lines = (self.lines + r * dt).min(r * l.burst_secs);
        }
    }

    /// Tokens a turn waits for: 1, or 50 ms of the rate if that is more, so a throttled
    /// container is read in a few turns a second rather than a line at a time.
    fn threshold(rate: f64) -> f64 {
        (rate * TURN_SECS).max(1.0)
    }

    /// How many bytes and lines a turn may read now (`None`: wait for
    /// [`Bucket::ready_in`]).
    pub fn allowance(&mut self, now: Instant) -> Option<(u64, u64)> {
        self.refill(now);
        let l = self.limit;
        let (bytes, lines) = (self.bytes, self.lines);
        let short =
            |tokens: f64, rate: Option<f64>| rate.is_some_and(|r| tokens < Self::threshold(r));
        if short(bytes, l.bytes_per_sec) || short(lines, l.lines_per_sec) {
            return None;
        }
        let cap = |tokens: f64, rate: Option<f64>| rate.map_or(u64::MAX, |_| tokens as u64);
        Some((cap(bytes, l.bytes_per_sec), cap(lines, l.lines_per_sec)))
    }

    /// Takes what a turn read.
    pub fn spend(&mut self, bytes: u64, lines: u64) {
        if self.limit.bytes_per_sec.is_some() {
            self.bytes -= bytes as f64;
        }
        if self.limit.lines_per_sec.is_some() {
            self.lines -= lines as f64;
        }
    }

    /// How long until a turn is allowed again.
    pub fn ready_in(&self) -> Duration {
        let wait = |tokens: f64, rate: Option<f64>| match rate {
            Some(r) if tokens < Self::threshold(r) && r > 0.0 => (Self::threshold(r) - tokens) / r,
            _ => 0.0,
        };
        let l = self.limit;
        let s = wait(self.bytes, l.bytes_per_sec).max(wait(self.lines, l.lines_per_sec));
        Duration::from_secs_f64(s.min(3600.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let limit = Limit {
            bytes_per_sec: Some(1000.0),
            lines_per_sec: Some(10.0),
            burst_secs: 2.0,
        };
        let mut b = Bucket::new(limit, t0);
        assert_eq!(b.allowance(t0), Some((2000, 20)));
        b.spend(2500, 5);
        assert_eq!(b.allowance(t0), None, "in debt after an overshoot");
        // Back to 50 ms of the byte rate (50 bytes): 550 ms.
        let ms = b.ready_in().as_secs_f64() * 1000.0;
        assert!((ms - 550.0).abs() < 0.01, "{ms}");
        assert_eq!(
            b.allowance(t0 + Duration::from_millis(600)),
            Some((100, 20))
        );
        b.spend(0, 20);
        assert_eq!(
            b.allowance(t0 + Duration::from_millis(600)),
            None,
            "lines too"
        );
        // Idle for long: the bucket refills to its burst, no more.
        assert_eq!(b.allowance(t0 + Duration::from_secs(60)), Some((2000, 20)));
    }

    #[test]
    fn a_lines_only_limit_does_not_cap_bytes() {
        let t0 = Instant::now();
        let mut b = Bucket::new(
            Limit {
                bytes_per_sec: None,
                lines_per_sec: Some(5.0),
                burst_secs: 1.0,
            },
            t0,
        );
        assert_eq!(b.allowance(t0), Some((u64::MAX, 5)), "lines cap the turn");
        b.spend(1 << 20, 5);
        assert_eq!(b.allowance(t0), None);
        let ms = b.ready_in().as_secs_f64() * 1000.0;
        assert!((ms - 200.0).abs() < 0.01, "{ms}");
    }
}
