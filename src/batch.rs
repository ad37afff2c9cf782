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
//! is `linger` old. Time is passed in, so the policy is tested without sleeping.

use crate::appender::{Chunk, Seal};
use crate::checkpoint::Position;
use crate::ids::FileId;
use crate::index::route::Routes;
use std::time::{Duration, Instant};

/// A batch is handed to the appender in chunks of about this size: big enough that the
/// hand-off costs nothing, small enough that a few in flight are little memory.
pub const CHUNK_BYTES: usize = 256 << 10;

/// When a batch is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of NDJSON.
    pub bytes: usize,
    /// Documents.
    pub docs: u64,
    /// Age of its first document.
    pub linger: Duration,
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
    /// Newest record timestamp (Unix milliseconds), for `shipper_lag_seconds`.
    newest_ms: u64,
    /// When its first document was read.
    started: Option<Instant>,
}

impl Batch {
    /// Notes that documents were read at `now` (and are waiting in the current chunk).
    pub fn touch(&mut self, now: Instant, newest_ms: u64) {
        self.started.get_or_insert(now);
        self.newest_ms = self.newest_ms.max(newest_ms);
    }

    /// Whether the batch is due: it is full with `pending` more bytes and `pending_docs`
    /// more documents, or old enough.
    pub fn due(&self, limits: &Limits, pending: usize, pending_docs: u64, now: Instant) -> bool {
        self.bytes + pending >= limits.bytes
            || self.docs + pending_docs >= limits.docs
            || self
                .started
                .is_some_and(|t| now.duration_since(t) >= limits.linger)
    }

    /// How much more the batch may read before it is full.
    pub fn room(&self, limits: &Limits) -> usize {
        limits
            .chunk_bytes
            .min(limits.bytes.saturating_sub(self.bytes).max(1))
    }

    /// How long until the batch is due by age (`None`: nothing in it yet).
    pub fn linger_left(&self, limits: &Limits, now: Instant) -> Option<Duration> {
        self.started
            .map(|t| limits.linger.saturating_sub(now.duration_since(t)))
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
            chunk_bytes: 300,
        }
    }

    #[test]
    fn due_by_bytes_docs_or_age() {
        let l = limits();
        let t0 = Instant::now();
        let mut b = Batch::default();
        assert!(!b.due(&l, 0, 0, t0));
        assert_eq!(b.linger_left(&l, t0), None);
        b.touch(t0, 7);
        assert!(!b.due(&l, 999, 9, t0 + Duration::from_millis(499)));
        assert!(b.due(&l, 1000, 0, t0));
        assert!(b.due(&l, 0, 10, t0));
        assert!(b.due(&l, 0, 0, t0 + Duration::from_millis(500)));
        assert_eq!(
            b.linger_left(&l, t0 + Duration::from_millis(200)),
            Some(Duration::from_millis(300))
        );
    }

    #[test]
    fn counts_its_own_documents_and_resets_when_sealed() {
        let l = limits();
        let t0 = Instant::now();
        let mut b = Batch::default();
        assert_eq!(b.room(&l), 300);
        b.touch(t0, 5);
        let c = b.chunk(vec![b'x'; 800], 4);
        assert_eq!((c.docs, c.ndjson.len()), (4, 800));
        assert_eq!(b.room(&l), 200, "the rest of the batch, under a chunk");
        b.touch(t0, 9);
        b.chunk(vec![b'y'; 10], 2);
        let s = b.seal(Vec::new(), Vec::new(), Vec::new());
        assert_eq!((s.docs, s.newest_ms), (6, 9));
        assert!(b.is_empty());
        assert_eq!(b.linger_left(&l, t0), None);
    }
}
