//! The agent's counters. One struct shared through an `Arc`, never a global, so tests
//! can run pipelines side by side and read exact values.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// Counters of the read path. All monotonic except `files_watched`.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        impl Stats {
            /// (name, value) pairs in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Log files currently tracked.
    files_watched,
    /// Log files opened (including rotated siblings drained at start-up).
    files_opened,
    /// Files found renamed away (rotation) while open.
    files_rotated,
    /// Files found truncated or rewritten in place (copytruncate, inode reuse).
    files_truncated,
    /// Files drained and closed after rotation or deletion.
    files_closed,
    /// Physical lines read.
    lines,
    /// Bytes read and consumed from log files.
    bytes,
    /// Records produced (documents).
    records,
    /// Partial lines merged into the record they continue.
    partials_merged,
    /// Records kept as raw text because their line did not parse.
    parse_errors,
    /// Records cut at the size cap.
    truncated,
    /// Bytes of overlong lines skipped past the size cap.
    overlong_bytes_skipped,
    /// Errors reading log files or their metadata.
    read_errors,
    /// Bytes of a final line still without `\n` when a dry-run ended.
    incomplete_bytes,
    /// Bytes of buffer segments on disk (gauge).
    buffer_bytes,
    /// Records in the buffer not yet acknowledged (gauge).
    buffer_records,
    /// Damaged regions skipped in buffer segments.
    buffer_damaged_regions,
    /// Records lost to buffer damage (known from intact frame headers).
    buffer_records_lost,
    /// Batches appended to the buffer.
    batches,
    /// Checkpoint files written.
    checkpoint_writes,
    /// Documents Elasticsearch created.
    records_indexed,
    /// Documents already there (409 on create: a replay).
    records_duplicate,
    /// Documents rejected and written to the dead-letter file.
    records_dead_letter,
    /// Dead-letter entries dropped because the file was full.
    dead_letter_dropped,
    /// Bulk requests that got a per-item answer.
    bulk_requests,
    /// Bulk requests that failed whole (connection, timeout, 429, 5xx, 4xx) and were retried.
    bulk_failures,
    /// Bulk requests split because Elasticsearch answered 413.
    bulk_split,
    /// Documents sent again (per item or in a retried request).
    docs_retried,
    /// Failed requests other than bulk (version detection).
    es_request_failures,
    /// Physical lines read and dropped because their pod, container or namespace is
    /// excluded (`shipper.io/exclude`, `shipper.io/exclude-containers`).
    excluded_lines,
    /// Files whose pod was not in the metadata cache when they were opened, so they
    /// waited (bounded) for the API watch before their first record; counted when the
    /// wait ends (pod found or time up).
    metadata_waits,
    /// Errors from the Kubernetes API (list or watch failed, unreadable objects); each
    /// is retried with backoff.
    kube_errors,
}

impl Stats {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

impl fmt::Display for Stats {
    /// One line: `files_watched=3 files_opened=3 ... incomplete_bytes=0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.snapshot().into_iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}
