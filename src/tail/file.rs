//! One log file being read: its handle, identity and position.
//!
//! The read loop is `pread` at the current position into a buffer the caller owns, split
//! with memchr; an unterminated last line is left unread until its `\n` arrives, so the
//! position always sits on a line boundary. A line longer than the buffer's limit is cut
//! (its head is handed on as such) and the rest is skipped to its `\n`.

use super::content::Content;
use super::{Event, FileKey, Sink};
use crate::checkpoint::Position;
use crate::ids::{FileId, Place};
use crate::index::route::Routes;
use crate::metrics::Stats;
use crate::record::Held;
use crate::timestamp::Timestamp;
use memchr::{memchr, memrchr};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

/// Limits for reading.
#[derive(Debug, Clone)]
pub struct ReadLimits {
    /// Largest message kept per record; the rest is dropped and the record flagged.
    pub max_record_bytes: usize,
    /// Size of a normal read (the shared buffer's resting size).
    pub read_bytes: usize,
}

impl ReadLimits {
    /// Longest physical line held whole: a capped message plus room for its JSON framing.
    pub fn max_line_bytes(&self) -> usize {
        self.max_record_bytes + 64 * 1024
    }
}

/// Why a file is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The live file at its path.
    Live,
    /// Renamed away or deleted: read to the end, then close.
    Draining { since: Option<Instant> },
}

/// What one turn on a file may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// About this many bytes: a turn ends at the end of the read that reaches it (past
    /// it by less than one read), unless `strict`.
    pub bytes: u64,
    /// End at the last whole line within `bytes` (a rate-limited turn).
    pub strict: bool,
    /// At most this many lines (at least one), counted.
    pub lines: Option<u64>,
}

impl Turn {
    /// About `bytes`, ending at the end of a read.
    pub fn bytes(bytes: u64) -> Turn {
        Turn {
            bytes,
            strict: false,
            lines: None,
        }
    }
}

/// What one poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub bytes: u64,
    /// Lines handed over (counted only in turns with a line limit).
    pub lines: u64,
    /// Reached the end of the file (for now).
    pub eof: bool,
}

/// A file being tailed.
#[derive(Debug)]
pub struct FileTail {
    pub key: FileKey,
    pub path: PathBuf,
    content: Content,
    pub dev: u64,
    pub ino: u64,
    /// Device, inode and birth time: part of a host file's identity (a copy's: those
    /// of the file it was copied from).
    place: Place,
    /// The file's own device, inode and birth time.
    own: Place,
    /// Times the file was truncated and written again: part of a host file's identity.
    pub generation: u32,
    /// Not identified yet since it was opened (a host file looks its generation up in
    /// the checkpoints once).
    pub fresh: bool,
    /// A host file's end as last seen, and a hash of the bytes before it: a file only
    /// appended to never changes them (see [`FileTail::rewritten_since_seen`]).
    seen_end: Option<(u64, u64)>,
    /// The hash before the offset a position was last taken at, computed once: a file
    /// rewritten unnoticed does not change what its checkpoint says was read.
    tail_hash: std::cell::Cell<Option<(u64, u64)>>,
    /// The container the file belongs to: part of its identity.
    source: String,
    id: Option<FileId>,
    /// The caller has been told the identity (an [`Event::Start`]).
    announced: bool,
    pos: u64,
    /// What the consumer of this file's lines still holds (its last reply).
    held: Held,
    /// Where each stream resumed (from the checkpoint), told to the consumer at start.
    resumed: [u64; 2],
    /// The routes the checkpoint holds, told to the consumer at start.
    resumed_routes: Routes,
    /// Inside an overlong line that began at this offset (with the time before it).
    skip: Option<(u64, Option<Timestamp>)>,
    pub phase: Phase,
    /// Size at the last rewrite check.
    checked_len: u64,
    /// When the agent first saw the file (from the checkpoint, or when identified).
    first_seen: Timestamp,
    /// Bytes before this offset were read before (and are read again after a record was
    /// released from memory): not counted again.
    replayed_below: u64,
    /// Skipped by polls until resumed (the caller waits for something, such as the
    /// file's metadata).
    pub paused: bool,
}

impl FileTail {
    pub fn open(key: FileKey, path: PathBuf, source: String) -> io::Result<FileTail> {
        let (content, m) = Content::open(&path)?;
        Ok(FileTail {
            key,
            path,
            content,
            dev: m.dev(),
            ino: m.ino(),
            place: Place::of(&m),
            own: Place::of(&m),
            generation: 0,
            fresh: true,
            seen_end: None,
            tail_hash: std::cell::Cell::new(None),
            source,
            id: None,
            announced: false,
            pos: 0,
            held: Held::default(),
            resumed_routes: Routes::default(),
            resumed: [0; 2],
            skip: None,
            phase: Phase::Live,
            // The file's size as stat says (a `.gz` is not decompressed to open it).
            checked_len: m.len(),
            first_seen: Timestamp::now(),
            replayed_below: 0,
            paused: false,
        })
    }

    /// Another file of the same container (a rotated sibling).
    pub fn sibling(&self, key: FileKey, path: PathBuf) -> io::Result<FileTail> {
        FileTail::open(key, path, self.source.clone())
    }

    /// The size seen by the last [`FileTail::size_changed`] call.
    pub fn checked_len(&self) -> u64 {
        self.checked_len
    }

    /// Whether the size differs from the last call's (and remembers this one).
    pub fn size_changed(&mut self, len: u64) -> bool {
        std::mem::replace(&mut self.checked_len, len) != len
    }

    /// The container the file belongs to.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn id(&self) -> Option<FileId> {
        self.id
    }

    /// The offset just past the file's last complete line (0 without one).
    pub fn end_of_last_line(&self) -> io::Result<u64> {
        const STEP: u64 = 64 << 10;
        let mut buf = vec![0; STEP as usize];
        let mut end = self.size()?;
        while end > 0 {
            let start = end.saturating_sub(STEP);
            let n = self
                .content
                .read_full(&mut buf[..(end - start) as usize], start)?;
            if let Some(i) = memrchr(b'\n', &buf[..n]) {
                return Ok(start + i as u64 + 1);
            }
            end = start;
        }
        Ok(0)
    }

    /// When the file was last written (now, if that cannot be known).
    pub fn modified(&self) -> std::time::SystemTime {
        self.content
            .modified()
            .unwrap_or_else(|_| std::time::SystemTime::now())
    }

    /// The file's current size.
    pub fn size(&self) -> io::Result<u64> {
        self.content.len()
    }

    /// Computes the identity: a container's from its first complete line (`None` until
    /// that line exists), a host file's from its path, place and generation (at once).
    pub fn compute_id(&self, buf: &mut Vec<u8>, limits: &ReadLimits) -> io::Result<Option<FileId>> {
        if self.is_host() {
            return Ok(Some(self.host_id(self.place, self.generation)));
        }
        Ok(first_line(&self.content, buf, limits)?.map(|line| FileId::compute(&self.source, line)))
    }

    /// A host file's identity at `place` in `generation`: its first line is no
    /// fingerprint (a fixed header, a second-precision stamp), its place is (see
    /// [`crate::ids`]).
    pub fn host_id(&self, place: Place, generation: u32) -> FileId {
        FileId::compute(&self.source, b"").salted(place, generation)
    }

    /// A host file (not a container's): its identity is its path, place and generation.
    pub fn is_host(&self) -> bool {
        self.source.starts_with("host:")
    }

    /// The place a host file's identity is salted with (see [`FileTail::identify_as`]).
    pub fn place(&self) -> Place {
        self.place
    }

    /// Where the file itself is.
    pub fn own_place(&self) -> Place {
        self.own
    }

    /// A hash of the [`SEEN_BYTES`] before `end` (fewer at the file's start); `None`
    /// when the file is shorter than `end`.
    pub fn hash_before(&self, end: u64) -> io::Result<Option<u64>> {
        let mut buf = [0u8; SEEN_BYTES as usize];
        let from = end.saturating_sub(SEEN_BYTES);
        let want = (end - from) as usize;
        let n = self.content.read_full(&mut buf[..want], from)?;
        Ok((n == want).then(|| xxhash_rust::xxh3::xxh3_64(&buf[..n])))
    }

    /// The hash before `offset`, taken the first time a position is taken there.
    fn tail_hash_at(&self, offset: u64) -> Option<u64> {
        match self.tail_hash.get() {
            Some((o, h)) if o == offset => Some(h),
            _ => {
                let h = self.hash_before(offset).ok().flatten()?;
                self.tail_hash.set(Some((offset, h)));
                Some(h)
            }
        }
    }

    /// Whether the content before `end` is still what hashed to `hash` (a checkpoint's
    /// [`Position::tail_hash`], a copy's).
    pub fn holds(&self, end: u64, hash: Option<u64>) -> bool {
        hash.is_none_or(|h| self.hash_before(end).ok().flatten() == Some(h))
    }

    /// The host file's end as last seen, and the hash before it.
    pub fn seen_end(&self) -> Option<(u64, u64)> {
        self.seen_end
    }

    /// Whether bytes seen before changed or went: a host file truncated (perhaps before
    /// it was read) or truncated and written again past where it was (its first line
    /// the same, a fixed header, so nothing else can tell). Then remembers the end at `len`. One small read when the size changed; a
    /// container's log is known by its first line (a nanosecond stamp) and not checked.
    pub fn rewritten_since_seen(&mut self, len: u64) -> io::Result<bool> {
        if !self.is_host() {
            return Ok(false);
        }
        if let Some((end, hash)) = self.seen_end {
            if len < end {
                // Truncated below what was seen (perhaps not below what was read).
                return Ok(true);
            }
            if self.hash_before(end)? != Some(hash) {
                return Ok(true);
            }
        }
        self.seen_end = self.hash_before(len)?.map(|h| (len, h));
        Ok(false)
    }

    /// Makes the file known by the place and generation of the file it was copied
    /// from (a copytruncate copy): its identity is computed there from now on.
    pub fn identify_as(&mut self, place: Place, generation: u32) {
        self.place = place;
        self.generation = generation;
    }

    /// Fixes the identity and where to start reading (a checkpoint, or 0).
    pub fn start(&mut self, id: FileId, at: Option<&Position>) {
        self.id = Some(id);
        self.announced = false;
        // What a host file holds now must not change (an unread file truncated and
        // written again with the same first line is new content).
        self.seen_end = None;
        self.tail_hash
            .set(at.and_then(|p| Some((p.offset, p.tail_hash?))));
        if self.is_host() {
            if let Ok(len) = self.size() {
                // Only remembers the end: nothing was seen before to compare.
                let _ = self.rewritten_since_seen(len);
            }
        }
        // First seen now, unless the checkpoint says when (files checkpointed before
        // that was recorded are taken as first seen now).
        self.first_seen = at.and_then(|p| p.first_seen).unwrap_or_else(Timestamp::now);
        if let Some(p) = at {
            self.pos = p.offset;
            self.held.last_time = p.last_time;
            self.resumed = p.streams;
            self.resumed_routes = p.routes.clone();
        }
    }

    /// Tells the caller the identity, once, before any line.
    pub fn announce(&mut self, sink: &mut Sink<'_>) {
        if self.announced {
            return;
        }
        if let Some(id) = self.id {
            self.announced = true;
            let last_time = self.held.last_time;
            let streams = self.resumed;
            let routes = std::mem::take(&mut self.resumed_routes);
            let len = self.size().unwrap_or(self.pos).max(self.pos);
            self.held = sink(
                self.key,
                Event::Start {
                    id,
                    last_time,
                    first_seen: self.first_seen,
                    streams,
                    routes,
                    len,
                    replayed_below: self.replayed_below,
                },
            );
        }
    }

    /// The caller released a record from memory and its last chunk came (see
    /// [`crate::record::Held::restart`]): everything before `at` was taken. Reads the
    /// file again from where a restart would resume now, telling the caller to make its
    /// records as after a restart from that checkpoint (a new [`Event::Start`]), this
    /// time keeping the records before `at` whole.
    fn read_again(&mut self, at: u64, stats: &Stats, sink: &mut Sink<'_>) {
        Stats::add(&stats.records_reread, 1);
        self.pos = if at == u64::MAX { self.pos } else { at };
        let Some((_, p)) = self.position() else {
            return;
        };
        self.replayed_below = self.replayed_below.max(self.pos);
        self.pos = p.offset;
        self.resumed = p.streams;
        self.held = Held {
            last_time: p.last_time,
            ..Held::default()
        };
        self.skip = None;
        self.announced = false;
        self.announce(sink);
    }

    /// Forgets identity and position: the file was truncated or rewritten. The caller
    /// drops what it held.
    pub fn restart(&mut self, sink: &mut Sink<'_>) {
        if self.announced {
            sink(self.key, Event::Reset);
        }
        self.seen_end = None;
        self.tail_hash.set(None);
        self.id = None;
        self.announced = false;
        self.pos = 0;
        self.held = Held::default();
        self.resumed = [0; 2];
        self.resumed_routes = Routes::default();
        self.skip = None;
    }

    /// Where a restart would have to resume to lose nothing: before any record the
    /// caller still holds and before an overlong line being skipped.
    pub fn position(&self) -> Option<(FileId, Position)> {
        let id = self.id?;
        let (offset, last_time) = self
            .held
            .pending
            .into_iter()
            .chain(self.skip)
            .min_by_key(|(o, _)| *o)
            .unwrap_or((self.pos, self.held.last_time));
        // A stream that holds nothing is done up to the read position; before the
        // consumer first answered, up to where it resumed.
        let streams = [0, 1].map(|s| {
            self.held.streams[s]
                .unwrap_or(self.pos.max(self.resumed[s]))
                .max(offset)
        });
        Some((
            id,
            Position {
                offset,
                last_time,
                path: self.path.clone(),
                streams,
                routes: Routes::default(),
                len: self.checked_len.max(self.pos),
                first_seen: Some(self.first_seen),
                cursor: None,
                // A host file's content before the offset, checked when it resumes (a
                // file replaced while the agent was away may have the same first line).
                tail_hash: if self.is_host() {
                    self.tail_hash_at(offset)
                } else {
                    None
                },
                host: self.is_host().then_some(crate::checkpoint::HostPlace {
                    identity: self.place,
                    generation: self.generation,
                    at: self.own,
                }),
            },
        ))
    }

    /// The read offset (next unread byte).
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// Reads complete lines as `turn` allows and hands them to `sink`.
    pub fn poll(
        &mut self,
        buf: &mut Vec<u8>,
        limits: &ReadLimits,
        stats: &Stats,
        turn: Turn,
        sink: &mut Sink<'_>,
    ) -> io::Result<Progress> {
        let Turn {
            bytes: budget,
            strict,
            lines: max_lines,
        } = turn;
        let mut progress = Progress::default();
        if self.id.is_none() {
            progress.eof = true;
            return Ok(progress);
        }
        self.announce(sink);
        while progress.bytes < budget && max_lines.is_none_or(|max| progress.lines < max) {
            let n = self.content.read_full(buf, self.pos)?;
            if n == 0 {
                progress.eof = true;
                break;
            }
            let data = &buf[..n];
            if self.skip.is_some() {
                let used = match memchr(b'\n', data) {
                    Some(i) => {
                        self.skip = None;
                        i + 1
                    }
                    None => n,
                };
                Stats::add(&stats.overlong_bytes_skipped, used as u64);
                self.advance(used, &mut progress, stats);
                continue;
            }
            // A strict turn ends at the last whole line within its budget (at least one
            // line); any other at the end of a read, so nothing read is read again (cutting
            // every turn at its budget costs 7 % more CPU on the shipping benchmark).
            let room = usize::try_from(budget - progress.bytes).unwrap_or(usize::MAX);
            let mut last_nl = if strict && n > room {
                memrchr(b'\n', &data[..room]).or_else(|| memchr(b'\n', data))
            } else {
                memrchr(b'\n', data)
            };
            // With a line limit, one pass counts the lines and finds where the limit cuts.
            let mut lines = 0u64;
            if let (Some(max), Some(nl)) = (max_lines, last_nl) {
                let left = max.saturating_sub(progress.lines).max(1);
                for at in memchr::memchr_iter(b'\n', &data[..=nl]) {
                    lines += 1;
                    if lines == left {
                        last_nl = Some(at);
                        break;
                    }
                }
            }
            let Some(last_nl) = last_nl else {
                if n < buf.len() {
                    // A line still being written: wait for its end.
                    progress.eof = true;
                    break;
                }
                if buf.len() < limits.max_line_bytes() {
                    let grown = (buf.len() * 2).min(limits.max_line_bytes());
                    buf.resize(grown, 0);
                    continue;
                }
                // Overlong line: its head becomes a truncated record, the rest is skipped.
                let before = self.held.last_time;
                let offset = self.pos;
                self.held = sink(self.key, Event::Cut { offset, head: data });
                progress.lines += u64::from(max_lines.is_some());
                if let Some(at) = self.held.restart {
                    self.read_again(at.min(offset), stats, sink);
                    continue;
                }
                self.skip = Some((offset, before));
                self.advance(n, &mut progress, stats);
                continue;
            };
            let offset = self.pos;
            progress.lines += lines;
            self.held = sink(
                self.key,
                Event::Lines {
                    offset,
                    data: &data[..=last_nl],
                },
            );
            if let Some(at) = self.held.restart {
                let taken = at.clamp(offset, offset + last_nl as u64 + 1) - offset;
                self.advance(taken as usize, &mut progress, stats);
                self.read_again(at.min(self.pos), stats, sink);
                continue;
            }
            self.advance(last_nl + 1, &mut progress, stats);
        }
        if buf.len() > limits.read_bytes {
            buf.truncate(limits.read_bytes);
            buf.shrink_to_fit();
        }
        if progress.eof {
            self.held = sink(self.key, Event::Eof);
        }
        Ok(progress)
    }

    fn advance(&mut self, n: usize, progress: &mut Progress, stats: &Stats) {
        // Bytes read again after a release were counted the first time.
        let fresh = (self.pos + n as u64).saturating_sub(self.replayed_below.max(self.pos));
        self.pos += n as u64;
        progress.bytes += n as u64;
        Stats::add(&stats.bytes, fresh);
    }

    /// Ends what the caller holds: `false` when it cannot yet (a record released from
    /// memory is pending: the file is read again first, and may not close).
    pub fn try_end(&mut self, stats: &Stats, sink: &mut Sink<'_>) -> bool {
        self.end(sink);
        match self.held.restart {
            Some(at) => {
                self.read_again(at, stats, sink);
                false
            }
            None => true,
        }
    }

    /// The read is over for this file (closing, or a dry-run's end): the caller ends
    /// what it holds (and may forget the file).
    pub fn end(&mut self, sink: &mut Sink<'_>) {
        self.held = sink(self.key, Event::End);
        self.skip = None;
    }
}

/// Bytes before a host file's last seen end that must not change (see
/// [`FileTail::rewritten_since_seen`]).
const SEEN_BYTES: u64 = 64;

/// Size of the first read when looking for the first line; most first lines are short.
const FIRST_LINE_PROBE: usize = 4096;

/// The file's first complete line (without `\n`), or its first `max_line_bytes` bytes if
/// that line is longer; `None` while the first line is still being written.
pub fn first_line<'b>(
    file: &Content,
    buf: &'b mut Vec<u8>,
    limits: &ReadLimits,
) -> io::Result<Option<&'b [u8]>> {
    let max = limits.max_line_bytes();
    let mut want = FIRST_LINE_PROBE.min(max);
    loop {
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let n = file.read_full(&mut buf[..want], 0)?;
        if let Some(nl) = memchr(b'\n', &buf[..n]) {
            return Ok(Some(&buf[..nl]));
        }
        if n < want {
            return Ok(None);
        }
        if want >= max {
            return Ok(Some(&buf[..max]));
        }
        want = (want * 4).min(max);
    }
}
