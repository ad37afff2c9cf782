//! Batches: how the reader's documents are cut into buffer frames (one frame, one bulk
//! request), and the count that goes with them.
//!
//! A batch counts its own documents as the record streams report them, never from a
//! metric: the buffer frame's header carries that count, and the shipper and the bulk
//! response parser rely on it being exact (a miscount would retry a frame forever).
//!
//! A batch is handed to the appender as it grows, in chunks of at most `chunk_bytes`
//! ([`crate::appender::Chunk`]), so a whole batch of NDJSON is never held in memory; it
//! ends with a [`crate::appender::Seal`] carrying its document count and the positions it
//! makes safe. It is cut when it reaches `bytes` or `docs`, or when its first document
//! is `linger` old, or only `quick` old when the pipeline is idle: the reader has caught
//! up and everything handed over before is acknowledged. So a line written after a quiet
//! spell goes out in tens of milliseconds, and under load (the reader behind, or
//! requests in flight) batches fill as before. Time is passed in, so the policy is
//! tested without sleeping.

use crate::appender::{Chunk, Seal};
use crate::checkpoint::Position;
use crate::ids::FileId;
use crate::index::route::Routes;
use std::time::{Duration, Instant};

/// A batch is handed to the appender in chunks of about this size: big enough that the
/// hand-off costs nothing, small enough that a few in flight are little memory.
pub const CHUNK_BYTES: usize = 256 << 10;

/// How old a batch gets, at least, when the pipeline is idle: time for the lines written
/// together (a burst over several files, a group's next line) to go in one request.
pub const QUICK: Duration = Duration::from_millis(10);

/// When a batch is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of NDJSON.
    pub bytes: usize,
    /// Documents.
    pub docs: u64,
    /// Age of its first document.
    pub linger: Duration,
    /// Age of its first document when the pipeline is idle.
    pub quick: Duration,
    /// Size of the chunks the batch is handed over in.
    pub chunk_bytes: usize,
}

impl Limits {
    /// The limits `[elasticsearch]` sets.
    pub fn from_config(es: &crate::config::Elasticsearch) -> Limits {
        let bytes = usize::try_from(es.batch_bytes).unwrap_or(usize::MAX);
        Limits {
            bytes,
            docs: es.batch_docs,
            linger: Duration::from_millis(es.linger_ms),
            quick: QUICK.min(Duration::from_millis(es.linger_ms)),
            chunk_bytes: CHUNK_BYTES.min(bytes),
        }
    }
}

/// The batch being cut: what was handed over so far.
#[derive(Debug, Default)]
pub struct Batch {
    /// NDJSON bytes handed over.
    bytes: usize,
    /// Documents handed over.
    docs: u64,
    /// Newest and oldest record timestamps (Unix milliseconds; 0: none), for
    /// `shipper_lag_seconds` and `shipper_delivery_latency_seconds`.
    newest_ms: u64,
    oldest_ms: u64,
    /// When its first document was read.
    started: Option<Instant>,
}

impl Batch {
    /// Notes that documents were read at `now` (and are waiting in the current chunk).
    pub fn touch(&mut self, now: Instant, (oldest_ms, newest_ms): (u64, u64)) {
        self.started.get_or_insert(now);
        self.newest_ms = self.newest_ms.max(newest_ms);
        self.oldest_ms = crate::timestamp::oldest_ms(self.oldest_ms, oldest_ms);
    }

    /// Whether the batch is due: it is full with `pending` more bytes and `pending_docs`
    /// more documents, or old enough (see [`Batch::linger_left`]).
    pub fn due(
        &self,
        limits: &Limits,
        (pending, pending_docs): (usize, u64),
        now: Instant,
        idle: bool,
    ) -> bool {
        self.bytes + pending >= limits.bytes
            || self.docs + pending_docs >= limits.docs
            || self.linger_left(limits, now, idle) == Some(Duration::ZERO)
    }

    /// How much more the batch may read before it is full.
    pub fn room(&self, limits: &Limits) -> usize {
        limits
            .chunk_bytes
            .min(limits.bytes.saturating_sub(self.bytes).max(1))
    }

    /// How long until the batch is due by age (`None`: nothing in it yet): `linger`
    /// after its first document, or `quick` when `idle` (the reader caught up, and
    /// nothing handed over before waits for Elasticsearch).
    pub fn linger_left(&self, limits: &Limits, now: Instant, idle: bool) -> Option<Duration> {
        let linger = if idle { limits.quick } else { limits.linger };
        self.started
            .map(|t| linger.saturating_sub(now.duration_since(t)))
    }

    /// A chunk of `docs` documents, handed over.
    pub fn chunk(&mut self, ndjson: Vec<u8>, docs: u64) -> Chunk {
        self.bytes += ndjson.len();
        self.docs += docs;
        Chunk { ndjson, docs }
    }

    /// Whether anything was handed over.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Ends the batch: its document count and the positions it makes safe.
    pub fn seal(
        &mut self,
        positions: Vec<(FileId, Position)>,
        closed: Vec<FileId>,
        routes: Vec<(FileId, Routes)>,
    ) -> Seal {
        let b = std::mem::take(self);
        Seal {
            docs: b.docs,
            positions,
            closed,
            routes,
            newest_ms: b.newest_ms,
            oldest_ms: b.oldest_ms,
            scanned_ns: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            bytes: 1000,
            docs: 10,
            linger: Duration::from_millis(500),
            quick: Duration::from_millis(10),
            chunk_bytes: 300,
        }
    }

    #[test]
    fn due_by_bytes_docs_or_age() {
        let l = limits();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = Batch::default();
        assert!(!b.due(&l, (0, 0), t0, false));
        assert_eq!(b.linger_left(&l, t0, false), None);
        b.touch(t0, (7, 7));
        assert!(!b.due(&l, (999, 9), t0 + ms(499), false));
        assert!(b.due(&l, (1000, 0), t0, false));
        assert!(b.due(&l, (0, 10), t0, false));
        assert!(b.due(&l, (0, 0), t0 + ms(500), false));
        assert_eq!(b.linger_left(&l, t0 + ms(200), false), Some(ms(300)));
    }

    /// Quiet: a batch goes out `quick` after its first line once the reader has caught
    /// up. Busy (the reader behind, or requests in flight): it fills, or waits `linger`.
    #[test]
    fn an_idle_pipeline_sends_at_once_a_busy_one_fills_its_batches() {
        let l = limits();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = Batch::default();
        b.touch(t0, (1, 1));
        assert!(
            !b.due(&l, (10, 1), t0 + ms(9), true),
            "a burst gets its 10 ms"
        );
        assert_eq!(b.linger_left(&l, t0 + ms(4), true), Some(ms(6)));
        assert!(b.due(&l, (10, 1), t0 + ms(10), true));
        assert!(
            !b.due(&l, (10, 1), t0 + ms(10), false),
            "busy: no early cut"
        );
        assert!(!b.due(&l, (900, 9), t0 + ms(499), false));
        assert!(b.due(&l, (1000, 9), t0 + ms(11), false), "full");
        assert!(b.due(&l, (10, 1), t0 + ms(500), false), "linger");
    }

    #[test]
    fn counts_its_own_documents_and_resets_when_sealed() {
        let l = limits();
        let t0 = Instant::now();
        let mut b = Batch::default();
        assert_eq!(b.room(&l), 300);
        b.touch(t0, (5, 5));
        let c = b.chunk(vec![b'x'; 800], 4);
        assert_eq!((c.docs, c.ndjson.len()), (4, 800));
        assert_eq!(b.room(&l), 200, "the rest of the batch, under a chunk");
        b.touch(t0, (9, 9));
        b.chunk(vec![b'y'; 10], 2);
        let s = b.seal(Vec::new(), Vec::new(), Vec::new());
        assert_eq!((s.docs, s.oldest_ms, s.newest_ms), (6, 5, 9));
        assert!(b.is_empty());
        assert_eq!(b.linger_left(&l, t0, false), None);
    }
}
