//! The appender: the one owner of the durability rule.
//!
//! **A file's checkpoint moves only after its lines are durable in the buffer.** Batches
//! arrive from the reader as [`Chunk`]s (compressed as they come when request
//! compression is on, so a batch is compressed once and sent as stored) and end with a
//! [`Seal`]. On the seal the batch is appended to the buffer as one frame and synced
//! (per `buffer.fsync`); only when that returned do the positions the seal carries enter
//! the checkpoint table, which a [`Saver`] writes on its own thread at most every
//! [`CHECKPOINT_EVERY`] (and at the end).
//!
//! A file's route history (which index its records go to, from which offset) is the
//! exception: it must be on disk *before* the batch that uses it, since a replay after a
//! crash re-encodes the records past the checkpoint and must send them where they went.
//! A batch that grew a history waits for the checkpoint file to be written first (once
//! per new file or route change, not per batch).
//!
//! When the buffer is full the appender waits for room, so the reader's hand-off blocks
//! and reading pauses; the backlog stays in the log files. A full disk (or an append that
//! would cross the free-space floor) is the same pause: the batch is tried again until
//! it is written, while the shipper frees space. Stopping with the buffer full,
//! it gives up the batch after [`STOP_WAIT`]: its positions never entered the table, so
//! those records are read again at the next start.

use crate::buffer::{Room, Writer};
use crate::checkpoint::{Checkpoints, Position, Saver};
use crate::disk::{Cause, Pause};
use crate::ids::FileId;
use crate::index::route::Routes;
use crate::metrics::{Stats, Worker};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Checkpoints are written at most this often (and at the end); in between they are
/// only in memory, which costs a few extra 409s after a crash, never data.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How long a stopping reader or appender waits for room in a full buffer before leaving
/// the rest in the log files.
pub const STOP_WAIT: Duration = Duration::from_secs(2);

/// Chunks queued between reader and appender (with one being filled and one being
/// compressed, this bounds the NDJSON in memory to a few chunks).
pub const CHUNKS_QUEUED: usize = 2;

/// From the reader to the appender.
#[derive(Debug)]
pub enum Handoff {
    /// NDJSON of whole documents, part of the current batch.
    Chunk(Chunk),
    /// The current batch ends here.
    Seal(Seal),
    /// Files just identified, at their start positions: saved at once, so a restart
    /// finds them among rotated siblings even if nothing of them was read yet. With the
    /// start of the latest scan (unix nanoseconds): every file it found is known.
    Discovered {
        found: Vec<(FileId, Position)>,
        scanned_ns: u64,
    },
}

/// Part of a batch: action and document lines of `docs` documents.
#[derive(Debug)]
pub struct Chunk {
    pub ndjson: Vec<u8>,
    pub docs: u64,
}

/// The end of a batch.
#[derive(Debug, Default)]
pub struct Seal {
    /// Documents in the batch (the sum of its chunks').
    pub docs: u64,
    /// Resume points as of the batch's end: safe once it is durable.
    pub positions: Vec<(FileId, Position)>,
    /// Files closed (or restarted): their checkpoints go once the batch is durable.
    pub closed: Vec<FileId>,
    /// Route histories that grew: written to the checkpoint file before the batch is
    /// appended, so a replay of any of its records goes where they went.
    pub routes: Vec<(FileId, Routes)>,
    /// Newest record timestamp in the batch (Unix milliseconds), for the lag metric.
    pub newest_ms: u64,
    /// Oldest record timestamp in the batch (Unix milliseconds), for the latency one.
    pub oldest_ms: u64,
    /// The start of the latest scan whose files were all handed over before this seal
    /// (unix nanoseconds; 0: unknown).
    pub scanned_ns: u64,
}

/// The batch being built: NDJSON compressed as it arrives (into an output buffer reused
/// from batch to batch), or the reader's chunks kept as they are and written one after
/// the other.
struct FrameBuilder {
    gzip: Option<flate2::write::GzEncoder<Vec<u8>>>,
    compressed: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    compress: bool,
    docs: u64,
}

impl FrameBuilder {
    fn new(compress: bool) -> FrameBuilder {
        FrameBuilder {
            gzip: None,
            compressed: Vec::new(),
            chunks: Vec::new(),
            compress,
            docs: 0,
        }
    }

    /// Takes a chunk; returns it when done with it (compressed), to be reused.
    fn write(&mut self, chunk: Chunk) -> io::Result<Option<Vec<u8>>> {
        self.docs += chunk.docs;
        if !self.compress {
            self.chunks.push(chunk.ndjson);
            return Ok(None);
        }
        let out = &mut self.compressed;
        self.gzip
            .get_or_insert_with(|| {
                flate2::write::GzEncoder::new(std::mem::take(out), flate2::Compression::fast())
            })
            .write_all(&chunk.ndjson)?;
        Ok(Some(chunk.ndjson))
    }

    /// The finished payload, in parts.
    fn finish(&mut self) -> io::Result<Vec<&[u8]>> {
        if let Some(enc) = self.gzip.take() {
            self.compressed = enc.finish()?;
        }
        Ok(if self.compress {
            vec![&self.compressed[..]]
        } else {
            self.chunks.iter().map(Vec::as_slice).collect()
        })
    }

    /// Starts the next batch, keeping the compressed buffer's memory; hands back the
    /// chunks kept.
    fn reset(&mut self) -> std::vec::Drain<'_, Vec<u8>> {
        self.compressed.clear();
        self.docs = 0;
        self.chunks.drain(..)
    }
}

/// Waits (up to half a second) for room for a batch, and appends it when there is.
/// `Ok(Room::Fits)` once it is durable; any other room answer means it was not written.
fn append(
    writer: &mut Writer,
    parts: &[&[u8]],
    records: u32,
    gzip: bool,
    (oldest_ms, newest_ms): (u64, u64),
) -> Result<Room, crate::buffer::BufferError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let room = writer.wait_for_room(len as u64, Duration::from_millis(500))?;
    if room == Room::Fits {
        writer.set_record_span(oldest_ms, newest_ms);
        writer.append_parts(parts, records, gzip)?;
    }
    Ok(room)
}

/// Appends batches and moves checkpoints; runs on a thread of its own.
pub struct Appender {
    writer: Writer,
    /// Waiting for disk space (a full disk, the free-space floor).
    disk: Pause,
    frame: FrameBuilder,
    cps: Checkpoints,
    saver: Option<Saver>,
    stats: Arc<Stats>,
    last_save: Instant,
}

impl Appender {
    /// An appender writing to `writer`, moving the checkpoints in `cps` (written by a
    /// saver thread when `cps` has a file).
    pub fn new(
        writer: Writer,
        cps: Checkpoints,
        compress: bool,
        stats: Arc<Stats>,
    ) -> io::Result<Appender> {
        let saver = match cps.path() {
            Some(p) => Some(Saver::spawn(p.to_owned(), stats.clone())?),
            None => None,
        };
        Ok(Appender {
            writer,
            disk: Pause::new("buffer", stats.clone()),
            frame: FrameBuilder::new(compress),
            cps,
            saver,
            stats,
            last_save: Instant::now(),
        })
    }

    /// Takes hand-offs until the reader is gone, then writes the checkpoints a last
    /// time. Emptied chunk buffers go back through `pool`. Returns the buffer writer
    /// (for the caller to close).
    pub fn run(
        mut self,
        rx: &Receiver<Handoff>,
        pool: &Sender<Vec<u8>>,
        stop: &AtomicBool,
    ) -> anyhow::Result<Writer> {
        loop {
            // Unsaved checkpoints are written within CHECKPOINT_EVERY; with none, there
            // is nothing to do until the reader hands something over.
            let received = if self.cps.is_dirty() {
                rx.recv_timeout(CHECKPOINT_EVERY)
            } else {
                self.stats.live.park(Worker::Appender);
                rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            self.stats.live.beat(Worker::Appender);
            match received {
                Ok(Handoff::Chunk(chunk)) => {
                    if let Some(mut done) = self.frame.write(chunk)? {
                        done.clear();
                        let _ = pool.try_send(done);
                    }
                }
                Ok(Handoff::Discovered { found, scanned_ns }) => {
                    let new = !found.is_empty();
                    for (id, pos) in found {
                        // Only adds files not known yet; never moves an offset.
                        if self.cps.get(&id).is_none() {
                            self.cps.update(id, pos);
                        }
                    }
                    self.cps.set_scanned(scanned_ns);
                    if new {
                        self.save();
                    }
                }
                Ok(Handoff::Seal(seal)) => {
                    if !self.seal(seal, pool, stop)? {
                        break;
                    }
                }
                // Quiet files still get their checkpoints written promptly.
                Err(RecvTimeoutError::Timeout) => self.save(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // A batch still half built here (the reader stopped with the buffer full, or
        // failed) is dropped: its checkpoints never moved, so it is read again.
        self.save();
        if let Some(s) = self.saver.take() {
            s.close();
        }
        Ok(self.writer)
    }

    /// Appends the batch and moves checkpoints. Returns `false` when it gave the batch
    /// up (stopping with the buffer full).
    fn seal(
        &mut self,
        seal: Seal,
        pool: &Sender<Vec<u8>>,
        stop: &AtomicBool,
    ) -> anyhow::Result<bool> {
        let docs = self.frame.docs;
        if docs != seal.docs {
            // The batch and the chunks count the same documents; a difference is a bug,
            // and the frame must carry what it holds.
            tracing::error!(
                chunks = docs,
                batch = seal.docs,
                "a batch's document count disagrees with its chunks'; using the chunks'"
            );
        }
        if !self.persist_routes(seal.routes, stop) {
            tracing::warn!("stopping before the checkpoint file took the batch's routes: the batch stays in the log files and is read again at the next start");
            return Ok(false);
        }
        if docs > 0 {
            let records = u32::try_from(docs).unwrap_or(u32::MAX);
            let compress = self.frame.compress;
            let parts = self.frame.finish()?;
            let span = (seal.oldest_ms, seal.newest_ms);
            let mut stopping_since: Option<Instant> = None;
            loop {
                let appended = append(&mut self.writer, &parts, records, compress, span);
                match appended {
                    Ok(Room::Fits) => break,
                    Ok(Room::Full) => {
                        self.disk.leave();
                        self.stats.buffer_full.store(true, Ordering::Relaxed);
                        tracing::debug!("buffer full; reading paused");
                    }
                    Ok(Room::Floor(free)) => self.disk.enter(Cause::Floor, &free),
                    Err(e) if e.is_disk_full() => {
                        self.disk.enter(Cause::Full, &e);
                        // Space comes back as the shipper deletes segments.
                        self.writer.wait_for_room(0, Duration::from_millis(500))?;
                    }
                    Err(e) => return Err(e.into()),
                }
                // Waiting for room is not being stuck; positions made safe by earlier
                // batches still reach the disk meanwhile.
                self.stats.live.beat(Worker::Appender);
                if self.last_save.elapsed() >= CHECKPOINT_EVERY {
                    offer(&self.saver, &mut self.cps, &mut self.last_save);
                }
                if stop.load(Ordering::Relaxed)
                    && stopping_since.get_or_insert_with(Instant::now).elapsed() >= STOP_WAIT
                {
                    tracing::warn!(records, "stopping with the buffer full or the disk out of room: the last batch stays in the log files and is read again at the next start");
                    return Ok(false);
                }
            }
            self.disk.leave();
            self.stats.buffer_full.store(false, Ordering::Relaxed);
            Stats::add(&self.stats.batches, 1);
        }
        for mut chunk in self.frame.reset() {
            chunk.clear();
            let _ = pool.try_send(chunk);
        }
        // The batch is durable: its positions are safe.
        for id in &seal.closed {
            self.cps.remove(id);
        }
        for (id, pos) in seal.positions {
            self.cps.update(id, pos);
        }
        self.cps.set_scanned(seal.scanned_ns);
        if self.last_save.elapsed() >= CHECKPOINT_EVERY {
            self.save();
        }
        Ok(true)
    }

    /// Writes the route histories that grew into the checkpoint file and waits until it
    /// is on disk. Returns `false` if stopping and the write did not complete in
    /// [`STOP_WAIT`].
    fn persist_routes(&mut self, routes: Vec<(FileId, Routes)>, stop: &AtomicBool) -> bool {
        let mut grew = false;
        for (id, r) in routes {
            grew |= self.cps.set_routes(id, r);
        }
        let (Some(saver), true) = (&self.saver, grew) else {
            return true;
        };
        let Some(bytes) = self.cps.take_changes() else {
            return true;
        };
        self.last_save = Instant::now();
        let ticket = saver.offer(bytes);
        let mut stopping_since: Option<Instant> = None;
        while !saver.wait_written(ticket, Duration::from_millis(500)) {
            // Waiting for the disk is not being stuck.
            self.stats.live.beat(Worker::Appender);
            if stop.load(Ordering::Relaxed)
                && stopping_since.get_or_insert_with(Instant::now).elapsed() >= STOP_WAIT
            {
                return false;
            }
        }
        true
    }

    fn save(&mut self) {
        offer(&self.saver, &mut self.cps, &mut self.last_save);
    }
}

/// Hands the table to the saver if it changed.
fn offer(saver: &Option<Saver>, cps: &mut Checkpoints, last_save: &mut Instant) {
    *last_save = Instant::now();
    if let (Some(saver), Some(bytes)) = (saver, cps.take_changes()) {
        saver.offer(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::route::Routes;

    fn id(n: u8) -> FileId {
        FileId::from_bytes([n; 16])
    }

    fn chunk(bytes: usize) -> Chunk {
        let mut ndjson = b"{\"create\":{}}\n{\"log\":\"".to_vec();
        ndjson.resize(bytes, b'x');
        ndjson.extend_from_slice(b"\"}\n");
        Chunk { ndjson, docs: 1 }
    }

    /// A seal's route histories are in the checkpoint file before its batch is in the
    /// buffer (a batch given up for a full buffer leaves them there), and moving a
    /// file's position keeps them.
    #[test]
    fn routes_reach_the_disk_before_the_batch_and_stay() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let (buffer, writer) = crate::buffer::open(
            &dir.path().join("buffer"),
            4096,
            4096,
            crate::buffer::Fsync::Always,
            crate::disk::Floor::default(),
            stats.clone(),
        )
        .unwrap();
        let cps = Checkpoints::load(dir.path()).unwrap();
        let mut a = Appender::new(writer, cps, false, stats).unwrap();
        let (pool_tx, _pool_rx) = crossbeam_channel::unbounded();
        let stop = AtomicBool::new(false);
        let on_disk = |n: u8| {
            Checkpoints::load(dir.path())
                .unwrap()
                .get(&id(n))
                .map(|p| (p.offset, p.routes.clone()))
        };
        let routes = Routes::default()
            .then(0, "old".into())
            .then(300, "new".into());
        a.frame.write(chunk(3000)).unwrap();
        let first = Seal {
            docs: 1,
            positions: vec![(id(1), Position::at(100, None, "/a".into()))],
            routes: vec![(id(1), routes.clone())],
            ..Seal::default()
        };
        assert!(a.seal(first, &pool_tx, &stop).unwrap());
        assert_eq!(on_disk(1).unwrap().1, routes);
        assert_eq!(buffer.next().unwrap().map(|f| f.records), Some(1));

        // Moving the file's position (here to its copy, after a copytruncate) keeps
        // its routes.
        let copy = Seal {
            positions: vec![(id(1), Position::at(200, None, "/a.1".into()))],
            ..Seal::default()
        };
        assert!(a.seal(copy, &pool_tx, &stop).unwrap());
        a.save();

        // The next batch does not fit, and the agent is stopping: the batch is given
        // up (read again at the next start), its routes are on disk already.
        let other = Routes::default().then(0, "team".into());
        a.frame.write(chunk(3000)).unwrap();
        let full = Seal {
            docs: 1,
            positions: vec![(id(2), Position::at(100, None, "/b".into()))],
            routes: vec![(id(2), other.clone())],
            ..Seal::default()
        };
        stop.store(true, Ordering::Relaxed);
        assert!(!a.seal(full, &pool_tx, &stop).unwrap());
        assert_eq!(on_disk(2), Some((0, other)), "the routes, not the offset");
        assert!(
            buffer.next().unwrap().is_none(),
            "the batch is not in the buffer"
        );
        if let Some(s) = a.saver.take() {
            s.close();
        }
        assert_eq!(on_disk(1), Some((200, routes)));
    }
}
