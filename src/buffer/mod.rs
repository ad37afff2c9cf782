//! The disk buffer between reading and shipping.
//!
//! # Invariants
//!
//! 1. **Append-only segments.** `<data-dir>/buffer/<seq>.seg` files of [`frame`]s, each
//!    frame one bulk batch (NDJSON, gzip-compressed when request compression is on, so a
//!    batch is compressed once and sent as stored). Only the newest segment is written; a
//!    restart always starts a new one, so recovery never writes into old data.
//! 2. **Durable before checkpoint.** [`Writer::append`] returns only after the frame is
//!    written and, with `fsync = "always"`, synced; the caller moves file checkpoints only
//!    after that. With `fsync = "never"` a process crash loses nothing (the page cache
//!    holds the data) but a power loss can lose the last batches.
//! 3. **Deleted only when acknowledged.** A segment file is deleted when it is no longer
//!    the one being written and every frame in it was acknowledged by Elasticsearch. A
//!    clean stop writes the offsets of the acknowledged frames of every segment left
//!    beside it (`<seq>.acked`, [`Buffer::keep_acks`]), and deletes a segment done whole:
//!    the next start sends none of them again. After a crash the frames acknowledged
//!    since are sent again; deterministic ids turn those repeats into 409s, not
//!    duplicates.
//! 4. **Bounded.** Segment bytes on disk never exceed `max_bytes`, except for one frame
//!    taken alone by an empty buffer (a single batch larger than the cap): the peak is
//!    at most `max(max_bytes, largest frame)`. The writer waits for room, which pauses
//!    reading; the backlog then stays in the log files. It also waits while an append
//!    would take the volume under the free-space floor ([`crate::disk::Floor`]), and when
//!    an append fails for a full disk the frame is cut off and may be tried again.
//! 5. **Damage is skipped, counted, and never fatal.** At start every segment is scanned;
//!    a torn tail or a corrupt frame is skipped (resuming at the next valid frame) and
//!    counted, with the records known lost.

pub mod frame;

use crate::metrics::Stats;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// When appended frames are synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// After every batch, before its checkpoints move (safe against power loss).
    Always,
    /// Never explicitly (safe against process crashes, not power loss).
    Never,
}

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("buffer segment {path}: {source}")]
    Segment { path: PathBuf, source: io::Error },
    #[error(
        "a batch of {len} bytes is over the frame size limit ({} bytes)",
        frame::MAX_PAYLOAD
    )]
    TooLarge { len: u64 },
}

impl BufferError {
    /// Whether the write failed for want of disk space (to be tried again).
    pub fn is_disk_full(&self) -> bool {
        match self {
            BufferError::Dir { source, .. } | BufferError::Segment { source, .. } => {
                crate::disk::is_full(source)
            }
            BufferError::TooLarge { .. } => false,
        }
    }
}

/// What [`Writer::wait_for_room`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// The frame fits.
    Fits,
    /// The buffer is at its cap (until the shipper frees a segment).
    Full,
    /// The volume would go under the free-space floor; the bytes it has free.
    Floor(u64),
}

/// Identifies one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrameId {
    pub segment: u64,
    pub index: usize,
}

/// One frame read for shipping.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: FrameId,
    pub records: u32,
    pub gzip: bool,
    pub payload: bytes::Bytes,
}

#[derive(Debug)]
struct FrameMeta {
    offset: u64,
    len: u64,
    records: u32,
    acked: bool,
    /// Unix milliseconds of the append (for recovered frames: their segment's mtime).
    /// Kept in memory only, for `shipper_buffer_oldest_record_age_seconds`.
    appended_ms: u64,
    /// Newest and oldest record timestamps in the frame (unix milliseconds, 0 if
    /// unknown, as for recovered frames). In memory only, for `shipper_lag_seconds` and
    /// `shipper_delivery_latency_seconds`.
    newest_record_ms: u64,
    oldest_record_ms: u64,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// Offsets of frames acknowledged in an earlier run (left out of `frames`).
    acked_before: Vec<u64>,
    file: Option<Arc<File>>,
    frames: Vec<FrameMeta>,
    /// Frames handed to the reader so far.
    read: usize,
    acked: usize,
    bytes: u64,
    writing: bool,
}

#[derive(Debug, Default)]
struct State {
    segments: VecDeque<Segment>,
    bytes: u64,
    records: u64,
    closed: bool,
    /// Frames handed out whose read failed: handed out again first.
    retry: VecDeque<FrameId>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    floor: crate::disk::Floor,
    state: Mutex<State>,
    /// Signalled when room is made (a segment deleted) or the buffer closes.
    room: Condvar,
    /// Wakes the shipper when a frame is appended.
    data: tokio::sync::Notify,
    stats: Arc<Stats>,
}

/// Read side of the buffer (shared with acks); cheap to clone.
#[derive(Debug, Clone)]
pub struct Buffer {
    shared: Arc<Shared>,
}

/// Write side of the buffer; one per buffer.
#[derive(Debug)]
pub struct Writer {
    shared: Arc<Shared>,
    fsync: Fsync,
    segment_bytes: u64,
    file: File,
    seq: u64,
    len: u64,
    /// Oldest and newest record timestamps of the next frame (see
    /// [`Writer::set_record_span`]).
    record_span: (u64, u64),
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock would be a bug; the state is still consistent
    // enough to keep shipping, so do not cascade it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

fn acks_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.acked"))
}

/// `<seq>.acked`: the offsets of a segment's frames Elasticsearch acknowledged.
const ACKS: crate::state_file::Kind = crate::state_file::Kind {
    name: "buffer acknowledgement file",
    magic: "shipper-acked",
    version: 1,
};

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Acked {
    offsets: Vec<u64>,
}

/// The offsets a segment's `.acked` file lists (none if it has none or it is damaged:
/// its frames are then sent again, which costs 409s, never data).
fn read_acks(dir: &Path, seq: u64) -> Vec<u64> {
    let path = acks_path(dir, seq);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read buffer acknowledgements; those frames are sent again");
            return Vec::new();
        }
    };
    match ACKS.decode::<Acked>(&path, &bytes) {
        Ok(a) => a.offsets,
        Err(e) => {
            tracing::warn!(error = %e, "buffer acknowledgements unreadable; those frames are sent again");
            Vec::new()
        }
    }
}

/// Deletes a segment file and its acknowledgements.
fn remove_segment(dir: &Path, seq: u64) -> io::Result<()> {
    match fs::remove_file(acks_path(dir, seq)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    fs::remove_file(segment_path(dir, seq))
}

/// Opens (creating) the buffer in `dir`, recovering existing segments.
pub fn open(
    dir: &Path,
    max_bytes: u64,
    segment_bytes: u64,
    fsync: Fsync,
    floor: crate::disk::Floor,
    stats: Arc<Stats>,
) -> Result<(Buffer, Writer), BufferError> {
    let dir_err = |source| BufferError::Dir {
        path: dir.to_owned(),
        source,
    };
    fs::create_dir_all(dir).map_err(dir_err)?;
    let mut seqs: Vec<u64> = fs::read_dir(dir)
        .map_err(dir_err)?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
        .collect();
    seqs.sort_unstable();
    let mut state = State::default();
    for &seq in &seqs {
        let path = segment_path(dir, seq);
        let bytes = fs::read(&path).map_err(|source| BufferError::Segment {
            path: path.clone(),
            source,
        })?;
        let (found, damage) = frame::scan(&bytes);
        let mtime_ms = fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or_else(crate::metrics::unix_ms, |d| d.as_millis() as u64);
        // An append cut short by a crash: with synced appends its records never moved
        // a checkpoint (they are read again from the log files); without, a power loss
        // may have lost what checkpoints had moved past.
        let lost = damage.records
            + match fsync {
                Fsync::Always => 0,
                Fsync::Never => damage.tail_records,
            };
        if damage.bytes > 0 {
            Stats::add(&stats.buffer_damaged_regions, damage.regions);
            Stats::add(&stats.buffer_records_lost, lost);
            tracing::error!(
                segment = %path.display(),
                regions = damage.regions,
                bytes = damage.bytes,
                torn_tail = damage.torn_tail,
                records_lost = lost,
                records_read_again = damage.tail_records - (lost - damage.records),
                "buffer segment damaged; skipped the damaged parts"
            );
        }
        // Frames acknowledged before a clean stop are done: left out.
        let acked_before = read_acks(dir, seq);
        let frames: Vec<FrameMeta> = found
            .iter()
            .filter(|f| !acked_before.contains(&f.offset))
            .map(|f| FrameMeta {
                offset: f.offset,
                len: f.header.frame_len(),
                records: f.header.records,
                acked: false,
                appended_ms: mtime_ms,
                newest_record_ms: 0,
                oldest_record_ms: 0,
            })
            .collect();
        if frames.is_empty() {
            let _ = remove_segment(dir, seq);
            continue;
        }
        let records: u64 = frames.iter().map(|f| u64::from(f.records)).sum();
        state.bytes += bytes.len() as u64;
        state.records += records;
        state.segments.push_back(Segment {
            seq,
            path,
            acked_before,
            file: None,
            frames,
            read: 0,
            acked: 0,
            bytes: bytes.len() as u64,
            writing: false,
        });
    }
    let seq = seqs.last().map_or(1, |s| s + 1);
    let (file, path) = create_segment(dir, seq)?;
    remove_stray_acks(dir, &seqs);
    state.segments.push_back(Segment {
        seq,
        path,
        acked_before: Vec::new(),
        file: None,
        frames: Vec::new(),
        read: 0,
        acked: 0,
        bytes: 0,
        writing: true,
    });
    let shared = Arc::new(Shared {
        dir: dir.to_owned(),
        max_bytes,
        floor,
        state: Mutex::new(state),
        room: Condvar::new(),
        data: tokio::sync::Notify::new(),
        stats,
    });
    shared.publish_gauges(&lock(&shared.state));
    let writer = Writer {
        shared: shared.clone(),
        fsync,
        segment_bytes,
        file,
        seq,
        len: 0,
        record_span: (0, 0),
    };
    Ok((Buffer { shared }, writer))
}

/// Deletes `.acked` files whose segment is gone (a crash between the two deletes).
fn remove_stray_acks(dir: &Path, seqs: &[u64]) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        let seq = name
            .to_str()
            .and_then(|n| n.strip_suffix(".acked")?.parse::<u64>().ok());
        if seq.is_some_and(|q| !seqs.contains(&q) || !segment_path(dir, q).exists()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

fn create_segment(dir: &Path, seq: u64) -> Result<(File, PathBuf), BufferError> {
    let path = segment_path(dir, seq);
    let seg_err = |source| BufferError::Segment {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(seg_err)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| BufferError::Dir {
            path: dir.to_owned(),
            source,
        })?;
    Ok((file, path))
}

impl Shared {
    fn publish_gauges(&self, s: &State) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.buffer_bytes.store(s.bytes, Relaxed);
        self.stats.buffer_bytes_peak.fetch_max(s.bytes, Relaxed);
        self.stats.buffer_records.store(s.records, Relaxed);
        let oldest = s
            .segments
            .iter()
            .filter(|g| g.acked < g.frames.len())
            .find_map(|g| g.frames.iter().find(|f| !f.acked))
            .map_or(0, |f| f.appended_ms.max(1));
        self.stats.buffer_oldest_append_ms.store(oldest, Relaxed);
    }
}

impl Writer {
    /// Waits until a frame of `len` payload bytes fits under the size cap and above the
    /// free-space floor, or `timeout` passes. Returns what it found last.
    pub fn wait_for_room(&mut self, len: u64, timeout: Duration) -> Result<Room, BufferError> {
        let need = len + frame::HEADER_LEN as u64;
        let max = self.shared.max_bytes;
        // An empty buffer always takes one frame, however large, so progress is possible.
        let fits = |s: &State| s.bytes == 0 || s.bytes + need <= max || s.closed;
        let deadline = std::time::Instant::now() + timeout;
        let mut room = Room::Full;
        loop {
            let s = lock(&self.shared.state);
            if fits(&s) {
                room = self.above_floor(need);
                if room == Room::Fits || s.closed {
                    return Ok(Room::Fits);
                }
            }
            // The segment being written is only deleted once it is no longer written: if
            // everything in it is acknowledged, move on so it can go.
            let active_done = s.segments.iter().any(|g| {
                g.seq == self.seq && g.writing && !g.frames.is_empty() && g.acked == g.frames.len()
            });
            if active_done {
                drop(s);
                self.roll()?;
                continue;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(room);
            }
            // Room is made when the shipper deletes a segment (or, for the floor, by
            // anyone on the volume: looked at again at the deadline).
            drop(
                self.shared
                    .room
                    .wait_timeout(s, left)
                    .unwrap_or_else(|p| p.into_inner()),
            );
        }
    }

    /// Whether `need` bytes can be written above the free-space floor. A volume that
    /// cannot be asked does not stop the write (which then says whether there was room).
    fn above_floor(&self, need: u64) -> Room {
        match self.shared.floor.under(&self.shared.dir, need) {
            Ok(Some(free)) => Room::Floor(free),
            Ok(None) | Err(_) => Room::Fits,
        }
    }

    /// The oldest and newest record timestamps (unix milliseconds) of the next frame
    /// appended: when that frame is acknowledged, `shipper_lag_seconds` is measured from
    /// the newest, `shipper_delivery_latency_seconds` over the span.
    pub fn set_record_span(&mut self, oldest_ms: u64, newest_ms: u64) {
        self.record_span = (oldest_ms, newest_ms);
    }

    /// Appends one batch. Returns once it is written (and synced, per the policy).
    #[cfg(test)]
    pub fn append(
        &mut self,
        payload: &[u8],
        records: u32,
        gzip: bool,
    ) -> Result<FrameId, BufferError> {
        self.append_parts(&[payload], records, gzip)
    }

    /// Appends one batch whose payload is `parts` one after the other (the chunks the
    /// reader handed over), without joining them first.
    pub fn append_parts(
        &mut self,
        parts: &[&[u8]],
        records: u32,
        gzip: bool,
    ) -> Result<FrameId, BufferError> {
        // Header and payload are written as they are: no copy of the batch.
        let flags = if gzip { frame::FLAG_GZIP } else { 0 };
        let payload: usize = parts.iter().map(|p| p.len()).sum();
        if payload > frame::MAX_PAYLOAD as usize {
            return Err(BufferError::TooLarge {
                len: payload as u64,
            });
        }
        let header = frame::header_of_parts(flags, records, parts);
        let len = (header.len() + payload) as u64;
        if self.len > 0 && self.len + len > self.segment_bytes {
            self.roll()?;
        }
        let seg_err = |source| BufferError::Segment {
            path: segment_path(&self.shared.dir, self.seq),
            source,
        };
        let written = self
            .file
            .write_all(&header)
            .and_then(|()| parts.iter().try_for_each(|part| self.file.write_all(part)))
            .and_then(|()| match self.fsync {
                Fsync::Always => self.file.sync_data(),
                Fsync::Never => Ok(()),
            });
        if let Err(e) = written {
            // Cut the frame off (a sync can fail after the bytes were written, as for a
            // full disk with delayed allocation), so the next append starts where the
            // index says and a frame that failed never reaches the shipper.
            let _ = self.file.set_len(self.len);
            return Err(seg_err(e));
        }
        let offset = self.len;
        self.len += len;
        let mut s = lock(&self.shared.state);
        let seg = s.segments.back_mut().filter(|g| g.seq == self.seq);
        let index = match seg {
            Some(seg) => {
                seg.frames.push(FrameMeta {
                    offset,
                    len,
                    records,
                    acked: false,
                    appended_ms: crate::metrics::unix_ms(),
                    oldest_record_ms: self.record_span.0,
                    newest_record_ms: std::mem::take(&mut self.record_span).1,
                });
                seg.bytes += len;
                seg.frames.len() - 1
            }
            None => 0,
        };
        s.bytes += len;
        s.records += u64::from(records);
        self.shared.publish_gauges(&s);
        drop(s);
        self.shared.data.notify_one();
        Ok(FrameId {
            segment: self.seq,
            index,
        })
    }

    /// Starts a new segment; the old one is deleted at once if everything in it is acked.
    fn roll(&mut self) -> Result<(), BufferError> {
        let seq = self.seq + 1;
        let (file, path) = create_segment(&self.shared.dir, seq)?;
        let mut s = lock(&self.shared.state);
        if let Some(old) = s.segments.iter_mut().find(|g| g.seq == self.seq) {
            old.writing = false;
        }
        s.segments.push_back(Segment {
            seq,
            path,
            acked_before: Vec::new(),
            file: None,
            frames: Vec::new(),
            read: 0,
            acked: 0,
            bytes: 0,
            writing: true,
        });
        Buffer::collect(&self.shared, &mut s);
        drop(s);
        self.file = file;
        self.seq = seq;
        self.len = 0;
        Ok(())
    }

    /// Marks the buffer closed: readers return `None` once everything is read, waiters
    /// for room give up.
    pub fn close(&self) {
        lock(&self.shared.state).closed = true;
        self.shared.room.notify_all();
        self.shared.data.notify_waiters();
        self.shared.data.notify_one();
    }
}

impl Buffer {
    /// The next frame not yet handed out, oldest first; `None` when everything written so
    /// far has been handed out. Damaged frames found here are skipped and counted.
    pub fn next(&self) -> Result<Option<Frame>, BufferError> {
        loop {
            let (file, meta, id) = {
                let mut s = lock(&self.shared.state);
                let retry = s.retry.pop_front();
                let seg = match retry {
                    Some(id) => s.segments.iter_mut().find(|g| g.seq == id.segment),
                    None => s.segments.iter_mut().find(|g| g.read < g.frames.len()),
                };
                let Some(seg) = seg else {
                    if retry.is_some() {
                        continue;
                    }
                    return Ok(None);
                };
                if seg.file.is_none() {
                    let f = File::open(&seg.path).map_err(|source| BufferError::Segment {
                        path: seg.path.clone(),
                        source,
                    })?;
                    seg.file = Some(Arc::new(f));
                }
                let index = match retry {
                    Some(id) => id.index,
                    None => {
                        seg.read += 1;
                        seg.read - 1
                    }
                };
                let m = &seg.frames[index];
                (
                    seg.file.clone(),
                    (m.offset, m.len, m.records),
                    FrameId {
                        segment: seg.seq,
                        index,
                    },
                )
            };
            let Some(file) = file else { continue };
            let (offset, len, records) = meta;
            let mut buf = vec![0u8; len as usize];
            let path = segment_path(&self.shared.dir, id.segment);
            if let Err(source) = file.read_exact_at(&mut buf, offset) {
                // Not handed out after all: the next call tries this frame again, so a
                // passing read error never strands it (unacknowledged, its segment kept).
                lock(&self.shared.state).retry.push_back(id);
                return Err(BufferError::Segment { path, source });
            }
            let checked = frame::decode_header(&buf)
                .ok()
                .flatten()
                .and_then(|h| frame::check_payload(&h, &buf).ok().map(|p| (h, p.len())));
            match checked {
                Some((h, plen)) => {
                    let payload =
                        bytes::Bytes::from(buf).slice(frame::HEADER_LEN..frame::HEADER_LEN + plen);
                    return Ok(Some(Frame {
                        id,
                        records,
                        gzip: h.gzip(),
                        payload,
                    }));
                }
                None => {
                    Stats::add(&self.shared.stats.buffer_damaged_regions, 1);
                    Stats::add(&self.shared.stats.buffer_records_lost, u64::from(records));
                    tracing::error!(
                        segment = id.segment,
                        frame = id.index,
                        records,
                        "buffer frame damaged on disk; skipped"
                    );
                    self.ack(id);
                }
            }
        }
    }

    /// Waits until a frame may be available (or the buffer closes).
    pub async fn wait_for_data(&self) {
        self.shared.data.notified().await;
    }

    /// Whether the writer closed the buffer and every frame has been handed out.
    pub fn is_drained(&self) -> bool {
        let s = lock(&self.shared.state);
        s.closed && s.retry.is_empty() && s.segments.iter().all(|g| g.read >= g.frames.len())
    }

    /// Whether nothing is left unacknowledged.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        lock(&self.shared.state).records == 0
    }

    /// Records in frames not yet acknowledged.
    pub fn records(&self) -> u64 {
        lock(&self.shared.state).records
    }

    /// Bytes of segments on disk.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        lock(&self.shared.state).bytes
    }

    /// Elasticsearch acknowledged every document of this frame.
    pub fn ack(&self, id: FrameId) {
        let mut s = lock(&self.shared.state);
        let Some(seg) = s.segments.iter_mut().find(|g| g.seq == id.segment) else {
            return;
        };
        let Some(m) = seg.frames.get_mut(id.index) else {
            return;
        };
        if m.acked {
            return;
        }
        m.acked = true;
        self.shared
            .stats
            .acknowledged(m.records, (m.oldest_record_ms, m.newest_record_ms));
        let records = u64::from(m.records);
        seg.acked += 1;
        s.records -= records;
        Buffer::collect(&self.shared, &mut s);
        // The writer may be waiting for its own segment to be done (see wait_for_room).
        self.shared.room.notify_all();
    }

    /// At a clean stop (the writer closed): deletes every segment done whole, the one
    /// last written too, and writes beside each other one the offsets of its frames
    /// Elasticsearch acknowledged, so the next start sends none of them again.
    pub fn keep_acks(&self) {
        let mut s = lock(&self.shared.state);
        let dir = self.shared.dir.clone();
        for seg in &mut s.segments {
            seg.writing = false;
            if seg.acked == 0 || seg.acked == seg.frames.len() {
                continue;
            }
            let mut offsets = seg.acked_before.clone();
            offsets.extend(seg.frames.iter().filter(|f| f.acked).map(|f| f.offset));
            let json = serde_json::to_vec(&Acked { offsets }).unwrap_or_default();
            let path = acks_path(&dir, seg.seq);
            if let Err(e) = crate::state_file::write_atomic(&path, &ACKS.encode(&json)) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write buffer acknowledgements; those frames are sent again at the next start");
            }
        }
        Buffer::collect(&self.shared, &mut s);
    }

    /// Deletes segments that are done (not being written, every frame acked).
    fn collect(shared: &Shared, s: &mut State) {
        let mut freed = false;
        while let Some(pos) = s
            .segments
            .iter()
            .position(|g| !g.writing && g.acked == g.frames.len())
        {
            if let Some(seg) = s.segments.remove(pos) {
                if let Err(e) = remove_segment(&shared.dir, seg.seq) {
                    tracing::warn!(segment = %seg.path.display(), error = %e, "cannot delete acknowledged buffer segment");
                }
                s.bytes -= seg.bytes;
                freed = true;
            }
        }
        shared.publish_gauges(s);
        if freed {
            shared.room.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_in(dir: &Path, max: u64, seg: u64) -> (Buffer, Writer) {
        let floor = crate::disk::Floor::default();
        open(
            dir,
            max,
            seg,
            Fsync::Always,
            floor,
            Arc::new(Stats::default()),
        )
        .unwrap()
    }

    #[test]
    fn a_batch_in_parts_is_the_same_frame_as_joined() {
        let d = tempfile::tempdir().unwrap();
        let (buf, mut w) = open_in(d.path(), 1 << 20, 1 << 16);
        w.append_parts(&[b"{\"a\":1}\n", b"", b"{\"b\":2}\n"], 1, false)
            .unwrap();
        w.append(b"{\"a\":1}\n{\"b\":2}\n", 1, false).unwrap();
        let f1 = buf.next().unwrap().unwrap();
        let f2 = buf.next().unwrap().unwrap();
        assert_eq!(f1.payload, f2.payload);
        let disk = fs::read(segment_path(d.path(), f1.id.segment)).unwrap();
        let half = disk.len() / 2;
        assert_eq!(disk[..half], disk[half..], "byte-identical frames");
    }

    #[test]
    fn append_read_ack_delete() {
        let d = tempfile::tempdir().unwrap();
        let (buf, mut w) = open_in(d.path(), 1 << 20, 100);
        let a = w
            .append(
                b"first batch of sixty bytes.................................",
                3,
                false,
            )
            .unwrap();
        let b = w.append(b"second", 2, true).unwrap();
        assert_ne!(
            a.segment, b.segment,
            "the second frame rolled to a new segment"
        );
        assert_eq!(buf.records(), 5);
        let f1 = buf.next().unwrap().unwrap();
        let f2 = buf.next().unwrap().unwrap();
        assert!(buf.next().unwrap().is_none());
        assert_eq!((f1.id, f1.records, f1.gzip), (a, 3, false));
        assert_eq!((&f2.payload[..], f2.gzip), (&b"second"[..], true));
        let segs = || fs::read_dir(d.path()).unwrap().count();
        assert_eq!(segs(), 2);
        buf.ack(f1.id);
        assert_eq!(segs(), 1, "the first segment is done and deleted");
        buf.ack(f2.id);
        assert_eq!(segs(), 1, "the segment being written stays");
        assert!(buf.is_empty());
    }

    #[test]
    fn a_full_buffer_of_one_acknowledged_segment_rolls_and_frees_it() {
        let d = tempfile::tempdir().unwrap();
        let (buf, mut w) = open_in(d.path(), 1000, 1 << 20);
        w.append(&[b'x'; 900], 1, false).unwrap();
        assert_eq!(
            w.wait_for_room(500, Duration::from_millis(10)).unwrap(),
            Room::Full
        );
        let f = buf.next().unwrap().unwrap();
        buf.ack(f.id);
        assert_eq!(
            w.wait_for_room(500, Duration::from_secs(5)).unwrap(),
            Room::Fits,
            "the acknowledged active segment rolled and was deleted"
        );
        assert_eq!(buf.bytes(), 0);
    }

    /// A frame whose read fails is handed out by the next call, once the read works.
    #[test]
    fn a_failed_read_is_tried_again() {
        let d = tempfile::tempdir().unwrap();
        let (buf, mut w) = open_in(d.path(), 1 << 20, 1 << 20);
        w.append(b"first", 1, false).unwrap();
        w.append(b"second", 1, false).unwrap();
        let seg = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let bytes = fs::read(&seg).unwrap();
        // The open segment loses its tail: reading the first frame fails.
        fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(4)
            .unwrap();
        assert!(buf.next().is_err());
        fs::write(&seg, &bytes).unwrap();
        let got: Vec<String> = std::iter::from_fn(|| buf.next().unwrap())
            .map(|f| {
                buf.ack(f.id);
                String::from_utf8(f.payload.to_vec()).unwrap()
            })
            .collect();
        assert_eq!(got, ["first", "second"]);
        assert_eq!(buf.records(), 0, "every frame acknowledged");
    }

    /// A clean stop keeps what was acknowledged: the next start sends the rest only, and
    /// a segment done whole (the one being written too) is gone.
    #[test]
    fn a_clean_stop_keeps_the_acknowledgements() {
        let d = tempfile::tempdir().unwrap();
        {
            let (buf, mut w) = open_in(d.path(), 1 << 20, 1 << 20);
            for i in 0..4u32 {
                w.append(format!("batch {i}").as_bytes(), 1, false).unwrap();
            }
            let frames: Vec<Frame> = std::iter::from_fn(|| buf.next().unwrap()).collect();
            buf.ack(frames[0].id);
            buf.ack(frames[2].id);
            w.close();
            buf.keep_acks();
        }
        let files = || {
            let mut v: Vec<String> = fs::read_dir(d.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            files(),
            ["00000000000000000001.acked", "00000000000000000001.seg"]
        );
        {
            let (buf, w) = open_in(d.path(), 1 << 20, 1 << 20);
            assert_eq!(buf.records(), 2);
            let got: Vec<Frame> = std::iter::from_fn(|| buf.next().unwrap()).collect();
            let text: Vec<&[u8]> = got.iter().map(|f| &f.payload[..]).collect();
            assert_eq!(text, [&b"batch 1"[..], b"batch 3"]);
            // A crash now: the earlier acknowledgements still hold.
            buf.ack(got[0].id);
            drop((buf, w));
        }
        {
            let (buf, w) = open_in(d.path(), 1 << 20, 1 << 20);
            assert_eq!(
                buf.records(),
                2,
                "acknowledged since the clean stop: sent again"
            );
            for f in std::iter::from_fn(|| buf.next().unwrap()).collect::<Vec<_>>() {
                buf.ack(f.id);
            }
            w.close();
            buf.keep_acks();
        }
        assert!(files().is_empty(), "{:?}", files());
    }

    /// An append cut short by a crash (its header whole, its payload not) is lost only
    /// if appends were not synced: a synced append moves checkpoints only once whole.
    #[test]
    fn an_append_cut_short_is_lost_only_without_sync() {
        for (fsync, lost) in [(Fsync::Always, 0), (Fsync::Never, 7)] {
            let d = tempfile::tempdir().unwrap();
            {
                let (_buf, mut w) = open_in(d.path(), 1 << 20, 1 << 20);
                w.append(b"whole", 1, false).unwrap();
                w.append(&[b'x'; 100], 7, false).unwrap();
            }
            let seg = segment_path(d.path(), 1);
            let len = fs::metadata(&seg).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(&seg)
                .unwrap()
                .set_len(len - 50)
                .unwrap();
            let stats = Arc::new(Stats::default());
            let floor = crate::disk::Floor::default();
            let (buf, _w) = open(d.path(), 1 << 20, 1 << 20, fsync, floor, stats.clone()).unwrap();
            assert_eq!(buf.records(), 1, "the whole frame is kept");
            assert_eq!(Stats::get(&stats.buffer_records_lost), lost, "{fsync:?}");
            assert_eq!(Stats::get(&stats.buffer_damaged_regions), 1);
        }
    }

    #[test]
    fn restart_resends_unacked_and_skips_damage() {
        let d = tempfile::tempdir().unwrap();
        {
            let (buf, mut w) = open_in(d.path(), 1 << 20, 1 << 20);
            for i in 0..4u32 {
                w.append(format!("batch {i}").as_bytes(), i + 1, false)
                    .unwrap();
            }
            let f = buf.next().unwrap().unwrap();
            buf.ack(f.id);
        }
        // Damage the third frame's payload and tear the tail.
        let seg = fs::read_dir(d.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = fs::read(&seg).unwrap();
        let frame_len = frame::HEADER_LEN + 7;
        bytes[2 * frame_len + frame::HEADER_LEN] ^= 0xff;
        bytes.extend_from_slice(b"SHB1\x00");
        fs::write(&seg, &bytes).unwrap();
        let stats = Arc::new(Stats::default());
        let floor = crate::disk::Floor::default();
        let (buf, _w) = open(
            d.path(),
            1 << 20,
            1 << 20,
            Fsync::Never,
            floor,
            stats.clone(),
        )
        .unwrap();
        let mut got = Vec::new();
        while let Some(f) = buf.next().unwrap() {
            got.push(String::from_utf8(f.payload.to_vec()).unwrap());
        }
        assert_eq!(
            got,
            ["batch 0", "batch 1", "batch 3"],
            "unacked frames come back; the damaged one is skipped"
        );
        assert_eq!(Stats::get(&stats.buffer_records_lost), 3);
        assert_eq!(Stats::get(&stats.buffer_damaged_regions), 2);
    }

    #[test]
    fn full_buffer_waits_for_room() {
        let d = tempfile::tempdir().unwrap();
        let (buf, mut w) = open_in(d.path(), 200, 60);
        let payload = [b'x'; 30];
        w.append(&payload, 1, false).unwrap();
        w.append(&payload, 1, false).unwrap();
        w.append(&payload, 1, false).unwrap();
        assert_eq!(
            w.wait_for_room(30, Duration::from_millis(10)).unwrap(),
            Room::Full,
            "200 bytes hold three 51-byte frames, not four"
        );
        let first = buf.next().unwrap().unwrap();
        let waiter = std::thread::spawn(move || {
            let ok = w.wait_for_room(30, Duration::from_secs(10)).unwrap();
            (ok, w)
        });
        buf.ack(first.id);
        let (ok, _w) = waiter.join().unwrap();
        assert_eq!(ok, Room::Fits, "acking a sealed segment makes room");
        assert!(buf.bytes() <= 200);
    }

    /// The peak gauge never passes the cap, except for one frame alone in the buffer.
    #[test]
    fn the_peak_stays_under_the_cap_or_is_one_frame() {
        let d = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let floor = crate::disk::Floor::default();
        let (buf, mut w) = open(d.path(), 200, 100, Fsync::Never, floor, stats.clone()).unwrap();
        let peak = || Stats::get(&stats.buffer_bytes_peak);
        for _ in 0..20 {
            if w.wait_for_room(60, Duration::ZERO).unwrap() == Room::Fits {
                w.append(&[b'x'; 60], 1, false).unwrap();
            } else {
                let f = buf.next().unwrap().unwrap();
                buf.ack(f.id);
            }
            assert!(peak() <= 200, "{}", peak());
        }
        while let Some(f) = buf.next().unwrap() {
            buf.ack(f.id);
        }
        assert_eq!(
            w.wait_for_room(1000, Duration::from_secs(5)).unwrap(),
            Room::Fits,
            "an empty buffer takes a frame larger than the cap"
        );
        w.append(&[b'x'; 1000], 1, false).unwrap();
        assert_eq!(peak(), 1000 + frame::HEADER_LEN as u64);
    }

    /// The writer refuses a frame the reader would refuse (nothing of it is written).
    #[test]
    fn a_frame_over_the_size_limit_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (buf, mut w) = open_in(d.path(), 1 << 30, 1 << 20);
        let mib = vec![b'x'; 1 << 20];
        let parts: Vec<&[u8]> = (0..257).map(|_| &mib[..]).collect();
        assert!(matches!(
            w.append_parts(&parts, 1, false),
            Err(BufferError::TooLarge { .. })
        ));
        w.append(b"fine", 1, false).unwrap();
        let f = buf.next().unwrap().unwrap();
        assert_eq!(&f.payload[..], b"fine");
    }

    /// A frame that would take the volume under the floor waits, reported as such.
    #[test]
    fn the_free_space_floor_holds_frames_back() {
        let d = tempfile::tempdir().unwrap();
        let total = crate::disk::space(d.path()).unwrap().total;
        let floor = crate::disk::Floor {
            min_free_bytes: total,
            min_free_percent: 0,
        };
        let stats = Arc::new(Stats::default());
        let (_buf, mut w) = open(d.path(), 1 << 20, 1 << 20, Fsync::Never, floor, stats).unwrap();
        assert!(matches!(
            w.wait_for_room(10, Duration::from_millis(10)).unwrap(),
            Room::Floor(_)
        ));
    }
}
