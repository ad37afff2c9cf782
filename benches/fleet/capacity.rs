//! The capacity of an Elasticsearch cluster's write pool, as a model shared by the fleet
//! harness's proxy (real time) and the fleet simulation (virtual time): it indexes `rate`
//! documents a second, first come first served, and queues at most `queue_docs` documents
//! beyond the one being indexed. A bulk request that finds the queue full is refused
//! whole (429); one that finds room for part of its documents has the rest refused item
//! by item (429 per item), as a shard's full write queue does.

/// What the pool does with a bulk request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admission {
    /// Documents taken, from the front of the request (0: the request is refused whole).
    pub admitted: usize,
    /// When the last taken document is indexed (seconds on the caller's clock): the
    /// answer goes out then.
    pub done_at: f64,
}

#[derive(Debug, Clone)]
pub struct WritePool {
    rate: f64,
    queue_docs: f64,
    /// When the documents taken so far are all indexed.
    busy_until: f64,
}

impl WritePool {
    pub fn new(rate_docs_per_s: f64, queue_docs: u64) -> WritePool {
        WritePool {
            rate: rate_docs_per_s.max(1.0),
            queue_docs: queue_docs as f64,
            busy_until: 0.0,
        }
    }

    /// Offers a request of `docs` documents at `now` (seconds, never decreasing).
    pub fn offer(&mut self, now: f64, docs: usize) -> Admission {
        let start = self.busy_until.max(now);
        let queued = (start - now) * self.rate;
        let room = (self.queue_docs - queued).floor().max(0.0) as usize;
        let admitted = docs.min(room);
        self.busy_until = start + admitted as f64 / self.rate;
        Admission {
            admitted,
            done_at: if admitted == 0 { now } else { self.busy_until },
        }
    }
}
