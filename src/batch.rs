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
//! requests in flight) batches fill as before. When the shipper is behind (a full batch's
//! worth of documents waits in the buffer: Elasticsearch is down or slower than the
//! node), age does not cut a batch at all: it fills, so a backlog goes out in full
//! requests rather than one small request per `linger` of the outage. Time is passed in, so the policy is
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

/// How far the shipper is from the reader, for when a batch is cut by age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downstream {
    /// The reader caught up, and everything handed over before is acknowledged.
    Idle,
    /// Requests in flight, or the reader has more to read.
    Busy,
    /// At least a full batch of documents waits in the buffer.
    Behind,
}

impl Downstream {
    /// From the buffer's unacknowledged records (`pending`, `None`: something is still
    /// being handed over) and whether the reader caught up.
    pub fn of(pending: Option<u64>, caught_up: bool, limits: &Limits) -> Downstream {
        match pending {
            Some(n) if n >= limits.docs => Downstream::Behind,
            Some(0) if caught_up => Downstream::Idle,
            _ => Downstream::Busy,
        }
    }
}

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
        downstream: Downstream,
    ) -> bool {
        self.bytes + pending >= limits.bytes
            || self.docs + pending_docs >= limits.docs
            || self.linger_left(limits, now, downstream) == Some(Duration::ZERO)
    }

    /// How much more the batch may read before it is full: bytes (at most a chunk),
    /// and documents, with `pending_docs` read but not handed over yet.
    pub fn room(&self, limits: &Limits, pending_docs: u64) -> (usize, u64) {
        (
            limits
                .chunk_bytes
                .min(limits.bytes.saturating_sub(self.bytes).max(1)),
            limits.docs.saturating_sub(self.docs + pending_docs).max(1),
        )
    }

    /// How long until the batch is due by age (`None`: nothing in it yet): `linger`
    /// after its first document, or `quick` when the pipeline is idle. Behind, never:
    /// `linger` is then only when to look again.
    pub fn linger_left(
        &self,
        limits: &Limits,
        now: Instant,
        downstream: Downstream,
    ) -> Option<Duration> {
        let linger = match downstream {
            Downstream::Idle => limits.quick,
            Downstream::Busy => limits.linger,
            Downstream::Behind => return self.started.map(|_| limits.linger),
        };
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
    use Downstream::{Behind, Busy, Idle};

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
        assert!(!b.due(&l, (0, 0), t0, Busy));
        assert_eq!(b.linger_left(&l, t0, Busy), None);
        b.touch(t0, (7, 7));
        assert!(!b.due(&l, (999, 9), t0 + ms(499), Busy));
        assert!(b.due(&l, (1000, 0), t0, Busy));
        assert!(b.due(&l, (0, 10), t0, Busy));
        assert!(b.due(&l, (0, 0), t0 + ms(500), Busy));
        assert_eq!(b.linger_left(&l, t0 + ms(200), Busy), Some(ms(300)));
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
            !b.due(&l, (10, 1), t0 + ms(9), Idle),
            "a burst gets its 10 ms"
        );
        assert_eq!(b.linger_left(&l, t0 + ms(4), Idle), Some(ms(6)));
        assert!(b.due(&l, (10, 1), t0 + ms(10), Idle));
        assert!(!b.due(&l, (10, 1), t0 + ms(10), Busy), "busy: no early cut");
        assert!(!b.due(&l, (900, 9), t0 + ms(499), Busy));
        assert!(b.due(&l, (1000, 9), t0 + ms(11), Busy), "full");
        assert!(b.due(&l, (10, 1), t0 + ms(500), Busy), "linger");
    }

    /// Behind (a full batch waits in the buffer): age does not cut a batch; size does.
    #[test]
    fn a_shipper_behind_gets_full_batches() {
        let l = limits();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = Batch::default();
        assert_eq!(b.linger_left(&l, t0, Behind), None, "nothing waits");
        b.touch(t0, (1, 1));
        assert!(!b.due(&l, (10, 1), t0 + ms(60_000), Behind));
        assert_eq!(
            b.linger_left(&l, t0 + ms(60_000), Behind),
            Some(l.linger),
            "looks again a linger later"
        );
        assert!(b.due(&l, (0, 10), t0 + ms(1), Behind), "full");
        assert!(b.due(&l, (1000, 1), t0 + ms(1), Behind), "full");
        // Back to busy (the buffer drained): the old batch goes at once.
        assert!(b.due(&l, (10, 1), t0 + ms(60_000), Busy));
        // What says behind: a full batch's documents unacknowledged in the buffer.
        assert_eq!(Downstream::of(Some(10), false, &l), Behind);
        assert_eq!(Downstream::of(Some(10), true, &l), Behind);
        assert_eq!(Downstream::of(Some(9), false, &l), Busy);
        assert_eq!(Downstream::of(Some(0), true, &l), Idle);
        assert_eq!(Downstream::of(Some(0), false, &l), Busy);
        assert_eq!(Downstream::of(None, true, &l), Busy, "a hand-off under way");
    }

    #[test]
    fn counts_its_own_documents_and_resets_when_sealed() {
        let l = limits();
        let t0 = Instant::now();
        let mut b = Batch::default();
        assert_eq!(b.room(&l, 0), (300, 10));
        b.touch(t0, (5, 5));
        let c = b.chunk(vec![b'x'; 800], 4);
        assert_eq!((c.docs, c.ndjson.len()), (4, 800));
        assert_eq!(
            b.room(&l, 0),
            (200, 6),
            "the rest of the batch, under a chunk"
        );
        assert_eq!(b.room(&l, 5), (200, 1));
        assert_eq!(b.room(&l, 9), (200, 1), "full: at least one more");
        b.touch(t0, (9, 9));
        b.chunk(vec![b'y'; 10], 2);
        let s = b.seal(Vec::new(), Vec::new(), Vec::new());
        assert_eq!((s.docs, s.oldest_ms, s.newest_ms), (6, 5, 9));
        assert!(b.is_empty());
        assert_eq!(b.linger_left(&l, t0, Busy), None);
    }
}
