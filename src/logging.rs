//! The agent's own logs: JSON lines when stderr is not a terminal (a container, whose
//! runtime collects stderr), human text on a terminal, and a [`Gate`] that keeps one
//! noisy call site (a broken file, a long Elasticsearch outage) from flooding them.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often a gated call site logs at most.
pub const EVERY: Duration = Duration::from_secs(10);

/// Output format of the agent's own logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`).
    Json,
    /// Human-readable text.
    Text,
}

/// The format to use when none was asked for: JSON for machines, text for people. The
/// dry-run is a tool for people whatever its stderr is.
pub fn default_format(dry_run: bool, stderr_is_terminal: bool) -> Format {
    if dry_run || stderr_is_terminal {
        Format::Text
    } else {
        Format::Json
    }
}

/// Installs the global subscriber: `RUST_LOG` filters win over `level`.
pub fn init(format: Option<Format>, level: &str, dry_run: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let tty = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.unwrap_or_else(|| default_format(dry_run, tty)) {
        Format::Json => builder.json().with_current_span(false).init(),
        Format::Text => builder.with_ansi(tty).init(),
    }
}

fn elapsed_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let ms = START.get_or_init(Instant::now).elapsed().as_millis();
    // +1: 0 means "never logged".
    u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
}

/// Lets one call site log at most once per period, counting what it held back.
#[derive(Debug, Default)]
pub struct Gate {
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Gate {
    pub const fn new() -> Gate {
        Gate {
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if the site may log now, `n` being the messages held back since it last
    /// did; `None` (and one more held back) otherwise.
    pub fn admit(&self, every: Duration) -> Option<u64> {
        self.admit_at(elapsed_ms(), every)
    }

    fn admit_at(&self, now: u64, every: Duration) -> Option<u64> {
        let every = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < every {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            // Another thread logged this very moment.
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// `tracing::<level>!` at most once per `every` for this call site, with a
/// `suppressed=<n>` field counting the messages held back since the last one:
/// `log_every!(EVERY, warn, error = %e, "cannot read log file")`.
#[macro_export]
macro_rules! log_every {
    ($every:expr, $level:ident, $($arg:tt)+) => {{
        static GATE: $crate::logging::Gate = $crate::logging::Gate::new();
        if let Some(suppressed) = GATE.admit($every) {
            tracing::$level!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_admits_once_per_period_and_counts_the_rest() {
        let g = Gate::new();
        let every = Duration::from_secs(10);
        assert_eq!(g.admit_at(1, every), Some(0));
        for t in 2..=101 {
            assert_eq!(g.admit_at(t, every), None);
        }
        assert_eq!(g.admit_at(10_000, every), None, "still inside the period");
        assert_eq!(g.admit_at(10_001, every), Some(101));
        assert_eq!(
            g.admit_at(20_001, every),
            Some(0),
            "nothing held back since"
        );
    }

    #[test]
    fn default_format_is_json_only_for_a_non_terminal_agent() {
        assert_eq!(default_format(false, false), Format::Json);
        assert_eq!(default_format(false, true), Format::Text);
        assert_eq!(default_format(true, false), Format::Text);
    }
}
