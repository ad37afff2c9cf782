//! The set of files being read, and the rules for rotation, truncation and deletion.
//!
//! The tail deals in bytes: it hands each file's complete lines to its caller through a
//! [`Sink`], never parses them, and learns back what the caller still holds (a record
//! whose chunks have not all arrived), so that a position it reports never skips a byte
//! of a record not yet emitted.
//!
//! - **Identity**: a file is known by [`FileId`] (container + first line), so a rename
//!   keeps its checkpoint and an inode reused by a new file does not inherit one.
//! - **Rotation** (rename): the old handle is kept and drained; it closes once it has sat
//!   at its end for the drain grace (containerd may still write to it until it reopens).
//!   **Deletion**: the same.
//! - **Truncation** (copytruncate): the file restarts at 0, counted. If a rotated sibling
//!   carries the old identity (logrotate's copy), the unread rest is drained from it.
//! - **Start-up**: rotated siblings whose identity has a checkpoint with unread bytes
//!   (rotation while the agent was down) are drained before the live files.
//! - **Fairness**: [`Tail::poll_round`] gives every file one turn of at most `budget`
//!   bytes, round-robin, so a chatty container cannot starve the others. A paused file
//!   (waiting for its metadata) skips its turns; the others keep being read.
//! - **Rate limits** ([`limit`]): a container over its limit skips turns until its
//!   bucket refills; its backlog stays in its files, nothing is dropped.
//!
//! Checkpoints are read here (to resume a file) but never written: the caller persists
//! [`Tail::positions`] once the records emitted so far are safe.

pub mod content;
mod file;
pub mod limit;

pub use file::{FileTail, Phase, Progress, ReadLimits, Turn};
pub use limit::Limit;

use crate::checkpoint::Position;
use crate::ids::{FileId, Place};
use crate::index::route::Routes;
use crate::metrics::Stats;
use crate::record::Held;
use crate::timestamp::Timestamp;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the tail reads, fixed at start.
#[derive(Debug, Clone)]
pub struct TailSettings {
    pub limits: ReadLimits,
    /// Bytes one file may consume per round.
    pub budget: u64,
    /// How long a rotated or deleted file stays open at its end before it is closed.
    pub drain_grace: Duration,
    /// On the very first start (no previous run), files found then are read from their
    /// end, not their beginning (a migration from another shipper).
    pub start_at_end: bool,
}

/// What the previous run left: where each file resumes, and when it last wrote that.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    pub positions: BTreeMap<FileId, Position>,
    /// When the latest scan whose files the checkpoints hold started; `None`: no
    /// previous run (or one that did not record it).
    pub last_scan: Option<std::time::SystemTime>,
}

impl From<BTreeMap<FileId, Position>> for Resume {
    fn from(positions: BTreeMap<FileId, Position>) -> Resume {
        Resume {
            positions,
            last_scan: None,
        }
    }
}

/// A file's handle in the tail, stable while it is open (the caller keys its own
/// per-file state by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey(u64);

/// What the tail tells the caller about one file.
#[derive(Debug)]
pub enum Event<'a> {
    /// A file opened by the tail itself (logrotate's copy of a truncated file): it
    /// belongs to the same container as `like`.
    Opened { like: FileKey },
    /// The file's identity is known; lines follow. `last_time` is the timestamp of the
    /// last good line before the resume position, `first_seen` when the agent first saw
    /// the file, `streams` where each stream resumes, `routes` where its records went
    /// (all from its checkpoint); `len` is the file's length now.
    Start {
        id: FileId,
        last_time: Option<Timestamp>,
        first_seen: Timestamp,
        streams: [u64; 2],
        routes: Routes,
        len: u64,
        /// The file is read again after a record was released from memory: bytes
        /// before this were read before (records starting there are kept whole, lines
        /// not counted again). 0 otherwise.
        replayed_below: u64,
    },
    /// Complete lines (each with its `\n`), the first at `offset`.
    Lines { offset: u64, data: &'a [u8] },
    /// The head of a line longer than the reader holds whole; its rest is skipped.
    Cut { offset: u64, head: &'a [u8] },
    /// Every complete line of the file was handed over (for now).
    Eof,
    /// The file was truncated or rewritten: what the caller holds of it is void; it is
    /// read again from the start, under a new identity.
    Reset,
    /// No more lines will come (the file is closing, or a dry-run's read is over): end
    /// every pending record.
    End,
}

/// The caller's side of the tail: takes an event, answers with what it still holds.
pub type Sink<'s> = dyn FnMut(FileKey, Event<'_>) -> Held + 's;

/// A file to open, as found by discovery.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub path: PathBuf,
    /// The container the file belongs to (part of its identity).
    pub source: String,
}

/// What a truncated file's copy (logrotate's copytruncate) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    /// Bytes not read yet: it is being read.
    Reading,
    /// Nothing more; it was last written then.
    Read(std::time::SystemTime),
    /// There is no copy.
    None,
}

/// Reads every open file.
pub struct Tail {
    cfg: TailSettings,
    files: Vec<FileTail>,
    /// Checkpoints as of the start: where a file that appears resumes.
    resume: BTreeMap<FileId, Position>,
    /// When the latest scan the checkpoints hold started (`None`: a first start).
    last_scan: Option<std::time::SystemTime>,
    /// Until [`Tail::started`]: identities met among rotated siblings.
    starting: Option<HashSet<FileId>>,
    /// Identities of files closed since the last [`Tail::take_closed`].
    closed: Vec<FileId>,
    /// Identities closed whose bytes may still be on disk, with when that file was last
    /// written: given to [`Tail::take_closed`] once a scan started after that, so the
    /// checkpoints never forget a file while [`Tail::open_rotated`] would take it for
    /// one born while the agent was away.
    /// With each, where it ended: its checkpoint stays there until it goes.
    closing: Vec<(FileId, std::time::SystemTime, Position)>,
    /// When the latest scan started.
    scan_started: Option<std::time::SystemTime>,
    /// Host file identities that copies found at start-up took (copytruncate while the
    /// agent was away): the live file goes on in its next generation.
    claimed: HashMap<FileId, (Place, u32)>,
    /// Files identified since the last [`Tail::take_new`], with where they start.
    new: Vec<(FileId, Position)>,
    buf: Vec<u8>,
    stats: Arc<Stats>,
    /// Where the next round starts (round-robin across calls).
    cursor: usize,
    next_key: u64,
    /// Rate limits, one bucket per container (its live and rotated files share it).
    buckets: HashMap<String, limit::Bucket>,
}

impl Tail {
    /// A tail that resumes files where the previous run left them.
    pub fn new(cfg: TailSettings, resume: Resume, stats: Arc<Stats>) -> Tail {
        let buf = vec![0; cfg.limits.read_bytes];
        Tail {
            cfg,
            files: Vec::new(),
            resume: resume.positions,
            last_scan: resume.last_scan,
            starting: Some(HashSet::new()),
            closed: Vec::new(),
            closing: Vec::new(),
            claimed: HashMap::new(),
            scan_started: None,
            new: Vec::new(),
            buf,
            stats,
            cursor: 0,
            next_key: 0,
            buckets: HashMap::new(),
        }
    }

    /// Sets (or removes) the rate limit of the container file `key` belongs to.
    pub fn set_limit(&mut self, key: FileKey, limit: Option<Limit>) {
        let Some(i) = self.find(key) else { return };
        let source = self.files[i].source();
        match (limit, self.buckets.get_mut(source)) {
            (None, _) => {
                self.buckets.remove(source);
            }
            (Some(l), Some(b)) if b.limit() != l => b.set_limit(l),
            (Some(_), Some(_)) => {}
            (Some(l), None) => {
                let b = limit::Bucket::new(l, Instant::now());
                self.buckets.insert(source.to_owned(), b);
            }
        }
        self.publish_throttled();
    }

    /// When a throttled container may read again, as a wait from now.
    pub fn next_refill(&self) -> Option<Duration> {
        self.buckets
            .values()
            .filter(|b| b.throttled)
            .map(limit::Bucket::ready_in)
            .min()
    }

    /// When a draining file (rotated or deleted, read to its end) may be closed: its
    /// grace period runs out. As a wait from now.
    pub fn next_close(&self) -> Option<Duration> {
        self.files
            .iter()
            .filter_map(|f| match f.phase {
                Phase::Draining { since: Some(s) } => {
                    Some(self.cfg.drain_grace.saturating_sub(s.elapsed()))
                }
                _ => None,
            })
            .min()
    }

    fn publish_throttled(&self) {
        let n = (0..self.files.len()).filter(|&i| self.throttled(i)).count();
        self.stats
            .files_throttled
            .store(n as u64, Ordering::Relaxed);
    }

    /// Whether the container of file `i` is being held back by its rate limit.
    fn throttled(&self, i: usize) -> bool {
        self.buckets
            .get(self.files[i].source())
            .is_some_and(|b| b.throttled)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Whether the file at (dev, inode) is open.
    pub fn is_open(&self, dev: u64, ino: u64) -> bool {
        self.files.iter().any(|f| f.dev == dev && f.ino == ino)
    }

    /// Keys of the open files, by path (the dry-run's order).
    pub fn keys_by_path(&self) -> Vec<FileKey> {
        let mut v: Vec<(&Path, FileKey)> = self
            .files
            .iter()
            .map(|f| (f.path.as_path(), f.key))
            .collect();
        v.sort();
        v.into_iter().map(|(_, k)| k).collect()
    }

    fn find(&self, key: FileKey) -> Option<usize> {
        self.files.iter().position(|f| f.key == key)
    }

    fn key(&mut self) -> FileKey {
        self.next_key += 1;
        FileKey(self.next_key)
    }

    fn publish_watched(&self) {
        self.stats
            .files_watched
            .store(self.files.len() as u64, Ordering::Relaxed);
    }

    /// Opens a live file. Returns its key; the caller then calls [`Tail::identify`].
    pub fn open(&mut self, f: &NewFile) -> Option<FileKey> {
        let key = self.key();
        match FileTail::open(key, f.path.clone(), f.source.clone()) {
            Ok(t) => {
                Stats::add(&self.stats.files_opened, 1);
                self.files.push(t);
                self.publish_watched();
                Some(key)
            }
            Err(e) => {
                Stats::add(&self.stats.read_errors, 1);
                crate::log_every!(crate::logging::EVERY, warn, path = %f.path.display(), error = %e, "cannot open log file");
                None
            }
        }
    }

    /// At start-up: opens `path`, a rotated sibling of `f` (rotated while the agent was
    /// down), if it may hold lines not read yet: its checkpoint says it has unread bytes,
    /// or it has none and was written after the last scan the checkpoints hold started.
    /// Such a file was never seen: every scan before its first line was complete missed
    /// it. A file that was seen and closed (read to its end, its checkpoint dropped) was
    /// last written before it was renamed, so before the scan that found it rotated, and
    /// is not read again. A never-seen file is read from its start. Siblings are drained
    /// before the live files are read.
    pub fn open_rotated(&mut self, f: &NewFile, path: &Path) -> Option<FileKey> {
        let key = self.key();
        let mut tail = match FileTail::open(key, path.to_owned(), f.source.clone()) {
            Ok(t) => t,
            Err(e) => {
                Stats::add(&self.stats.read_errors, 1);
                crate::log_every!(crate::logging::EVERY, warn, path = %path.display(), error = %e, "cannot read rotated log file");
                return None;
            }
        };
        let mut id = tail.compute_id(&mut self.buf, &self.cfg.limits).ok()??;
        if tail.is_host() {
            let own = tail.own_place();
            if let Some(h) = self.known_at(own).filter(|h| h.identity != own) {
                // A copy being read, renamed since: it goes on as what it copied.
                tail.identify_as(h.identity, h.generation);
                id = tail.host_id(h.identity, h.generation);
                self.claimed.insert(id, (h.identity, h.generation));
            } else if let Some((g, pos)) = self.newest_generation(own) {
                // Rotated by rename: its own place, its newest generation, unless it no
                // longer holds what that checkpoint says (truncated and written again,
                // or the generation went on in a copy, while the agent was away).
                let g = if self.intact(&tail, g, &pos) {
                    g
                } else {
                    g + 1
                };
                tail.generation = g;
                id = tail.host_id(own, g);
            } else if let Some((place, g)) = self.copied_from(&tail, &f.path) {
                // A copy (copytruncate while the agent was away) of a file of this path
                // holds what that file's checkpoint says it held: it goes on under that
                // identity.
                tail.identify_as(place, g);
                id = tail.host_id(place, g);
                self.claimed.insert(id, (place, g));
            }
        }
        // The same lines twice (a `.gz` next to the file it was made from): read once.
        if let Some(found) = &mut self.starting {
            if !found.insert(id) {
                return None;
            }
        }
        match self.resume.get(&id) {
            // Read to its end already (the size asked only of a known file: a `.gz`
            // sibling read and closed long ago is not decompressed at every start).
            Some(pos) if pos.offset >= tail.size().ok()? => return None,
            Some(_) => {
                // Its checkpoint is in use: the tail's copy of it is no longer needed.
                let pos = self.resume.remove(&id);
                tail.start(id, pos.as_ref());
                tracing::info!(path = %path.display(), offset = tail.offset(), "draining file rotated while stopped");
            }
            None => {
                let mtime = fs::metadata(path).and_then(|m| m.modified()).ok()?;
                if self.last_scan.is_none_or(|t| mtime <= t) {
                    return None;
                }
                tail.start(id, None);
                Stats::add(&self.stats.files_unseen_rotated, 1);
                tracing::info!(path = %path.display(), "reading file born and rotated while stopped");
            }
        }
        tail.phase = Phase::Draining { since: None };
        Stats::add(&self.stats.files_opened, 1);
        self.new.extend(tail.position());
        self.files.push(tail);
        self.publish_watched();
        Some(key)
    }

    /// The first scan is over. Checkpoints of files found nowhere (neither live nor
    /// among the rotated siblings) belong to files deleted while the agent was away:
    /// what they held past their offset is counted lost (`deleted_while_down`) and
    /// their entries go. Only after a `clean` scan (nothing unreadable), and never for a
    /// file under a root that is `missing` (not mounted, say): a file merely out of reach
    /// keeps its checkpoint.
    pub fn started(&mut self, clean: bool, missing: &[PathBuf]) {
        let Some(found) = self.starting.take() else {
            return;
        };
        // Rotated files read to their end: nothing will resume them any more.
        self.resume.retain(|id, _| !found.contains(id));
        if !clean {
            return;
        }
        let open: HashSet<FileId> = self.files.iter().filter_map(FileTail::id).collect();
        let gone: Vec<FileId> = self
            .resume
            .iter()
            .filter(|(id, _)| !open.contains(id))
            .filter(|(_, p)| !missing.iter().any(|root| p.path.starts_with(root)))
            .map(|(id, _)| id)
            .copied()
            .collect();
        for id in gone {
            let Some(pos) = self.resume.remove(&id) else {
                continue;
            };
            let lost = pos.len.saturating_sub(pos.offset);
            if lost > 0 {
                Stats::add(&self.stats.rotated_unread_bytes, lost);
                Stats::add(&self.stats.rotated_unread_deleted, lost);
                tracing::warn!(path = %pos.path.display(), bytes = lost, "file deleted while the agent was stopped, before its last bytes were read");
            }
            self.closed.push(id);
        }
    }

    /// Marks open files missing from `live` (the (dev, inode) pairs a scan found) as
    /// rotated or deleted, then checks every file's identity and size.
    pub fn rescan(&mut self, live: &HashSet<(u64, u64)>, sink: &mut Sink<'_>) {
        for i in 0..self.files.len() {
            let f = &mut self.files[i];
            if f.phase == Phase::Live && !live.contains(&(f.dev, f.ino)) {
                f.phase = Phase::Draining { since: None };
                Stats::add(&self.stats.files_rotated, 1);
                tracing::debug!(path = %f.path.display(), "file rotated or deleted; draining");
            }
            self.identify_at(i, sink);
            self.check_rewritten(i, true, sink);
        }
    }

    /// Fixes a file's identity once its first line is complete and resumes it at its
    /// checkpoint; announces an identity known already.
    pub fn identify(&mut self, key: FileKey, sink: &mut Sink<'_>) {
        if let Some(i) = self.find(key) {
            self.identify_at(i, sink);
        }
    }

    /// A file whose identity is already open elsewhere (a copy) stays unread.
    fn identify_at(&mut self, i: usize, sink: &mut Sink<'_>) {
        let f = &self.files[i];
        if f.id().is_some() {
            self.files[i].announce(sink);
            return;
        }
        match f.compute_id(&mut self.buf, &self.cfg.limits) {
            Ok(Some(mut id)) => {
                if f.is_host() && std::mem::take(&mut self.files[i].fresh) {
                    let f = &self.files[i];
                    // The newest generation the checkpoints know for this place, if
                    // the file still holds what that checkpoint says (else it was
                    // truncated, or a copy took that generation, while the agent was
                    // away: what it holds now is the next one).
                    if let Some((g, pos)) = self.newest_generation(f.place()) {
                        let intact = self.intact(f, g, &pos);
                        let g = if intact { g } else { g + 1 };
                        if !intact {
                            tracing::info!(path = %f.path.display(), "host file replaced while the agent was stopped; reading its new content from the start");
                        }
                        self.files[i].generation = g;
                        id = self.files[i].host_id(self.files[i].place(), g);
                    }
                }
                // Held by another open file: a copy of this one (the copy is read first;
                // a host file's copy took its generation, which `intact` saw).
                let dup = self
                    .files
                    .iter()
                    .enumerate()
                    .any(|(j, g)| j != i && g.id() == Some(id));
                if dup {
                    return;
                }
                let f = &self.files[i];
                let len = f.size().unwrap_or(0);
                let first_start = self.starting.is_some() && self.last_scan.is_none();
                let at_end = (first_start && self.cfg.start_at_end)
                    .then(|| f.end_of_last_line().ok())
                    .flatten()
                    .map(|end| Position::at(end, None, f.path.clone()));
                // The file's checkpoint, taken: each resumes once.
                let pos = self.resume.remove(&id).filter(|p| p.offset <= len);
                self.files[i].start(id, pos.as_ref().or(at_end.as_ref()));
                self.new.extend(self.files[i].position());
                self.files[i].announce(sink);
            }
            Ok(None) => {}
            Err(e) => {
                Stats::add(&self.stats.read_errors, 1);
                crate::log_every!(crate::logging::EVERY, warn, path = %f.path.display(), error = %e, "cannot read log file");
            }
        }
    }

    /// Detects truncation (size below our offset) and in-place rewrites (the first line
    /// changed: copytruncate followed by new writes, or the inode reused). Before reading
    /// (`force` false) the first line is checked only when there is something to read or
    /// the size changed, so an idle file costs one fstat; rescans always check, which
    /// catches a file rewritten to exactly its old size while we were caught up.
    fn check_rewritten(&mut self, i: usize, force: bool, sink: &mut Sink<'_>) {
        let f = &mut self.files[i];
        let Some(id) = f.id() else { return };
        let Ok(len) = f.size() else { return };
        let last_seen = f.checked_len();
        let changed = f.size_changed(len);
        if !force && !changed && len <= f.offset() {
            return;
        }
        let truncated = len < f.offset();
        // A different first line, or none at all where there was one: rewritten in place;
        // a host file also when bytes it held before changed (its first line may not).
        let rewritten = !truncated
            && (match f.compute_id(&mut self.buf, &self.cfg.limits) {
                Ok(Some(now)) => now != id,
                Ok(None) => true,
                Err(_) => false,
            } || f.rewritten_since_seen(len).unwrap_or(false));
        if !(truncated || rewritten) {
            return;
        }
        Stats::add(&self.stats.files_truncated, 1);
        tracing::info!(path = %f.path.display(), "file truncated or rewritten; reading it again from the start");
        let old = f.position();
        // What a host file was last seen to hold: its copy holds the same.
        let prior = f.seen_end();
        // What the file was last seen to hold past our position.
        let unread = if truncated {
            last_seen.saturating_sub(f.offset())
        } else {
            0
        };
        f.restart(sink);
        // logrotate's copytruncate copied the file aside before truncating it: the bytes
        // we had not read yet are in that copy, under the old identity, which goes on
        // (checkpoint, routes and all) until the copy is drained. Without a copy it is
        // closed here.
        let copy = match old {
            Some((old_id, ref pos)) => self.drain_copy(i, (old_id, pos, prior), sink),
            None => Copy::None,
        };
        match copy {
            Copy::Reading => {}
            // The copy holds the old identity's bytes: it is closed like a drained file.
            Copy::Read(written) => {
                if let Some((_, pos)) = &old {
                    self.closing.push((id, written, pos.clone()));
                }
            }
            Copy::None => self.closed.push(id),
        }
        if copy != Copy::Reading && unread > 0 {
            Stats::add(&self.stats.rotated_unread_bytes, unread);
            // Why the bytes were still unread: the first cause that held reading back.
            let why = if self.throttled(i) {
                Some(&self.stats.rotated_unread_throttled)
            } else if self.stats.disk_full_paused.load(Ordering::Relaxed) > 0 {
                Some(&self.stats.rotated_unread_disk_full)
            } else if self.stats.buffer_full.load(Ordering::Relaxed) {
                Some(&self.stats.rotated_unread_buffer_full)
            } else {
                None
            };
            if let Some(c) = why {
                Stats::add(c, unread);
            }
            tracing::warn!(path = %self.files[i].path.display(), bytes = unread, "file truncated before its last bytes were read, and no copy of it found");
        }
        // New content in the same place: a host file's next generation, whatever its
        // first line (a container's first line carries a nanosecond stamp).
        let f = &mut self.files[i];
        if f.is_host() {
            f.generation = f.generation.saturating_add(1);
        }
        self.identify_at(i, sink);
    }

    /// Opens the copy of a truncated file, if one is beside it with bytes not read yet.
    fn drain_copy(
        &mut self,
        i: usize,
        (old_id, pos, prior): (FileId, &Position, Option<(u64, u64)>),
        sink: &mut Sink<'_>,
    ) -> Copy {
        // Newest first: the copy was just made, an older rotation may start alike.
        let mut siblings = rotated_siblings_with_gz(&self.files[i].path);
        siblings.retain(|p| !is_ignored(&p.to_string_lossy()));
        siblings.reverse();
        for sibling in siblings {
            let key = self.key();
            let Ok(mut copy) = self.files[i].sibling(key, sibling.clone()) else {
                continue;
            };
            let live = &self.files[i];
            let same = if live.is_host() {
                // A host file's copy holds what the file was last seen to hold, and goes
                // on as the file it was copied from.
                let at = (live.place(), live.generation);
                // What was read (its checkpoint's hash), else what was seen.
                let read = pos.offset > 0
                    && pos.tail_hash.is_some()
                    && copy.holds(pos.offset, pos.tail_hash);
                let same = read || prior.is_some_and(|(end, hash)| copy.holds(end, Some(hash)));
                if same {
                    copy.identify_as(at.0, at.1);
                }
                same
            } else {
                matches!(copy.compute_id(&mut self.buf, &self.cfg.limits), Ok(Some(id)) if id == old_id)
            };
            if !same {
                continue;
            }
            let id = old_id;
            if copy.size().map(|l| l <= pos.offset).unwrap_or(true) {
                return Copy::Read(copy.modified());
            }
            tracing::info!(path = %sibling.display(), offset = pos.offset, "reading the rest of a truncated file from its copy");
            sink(
                key,
                Event::Opened {
                    like: self.files[i].key,
                },
            );
            copy.start(id, Some(pos));
            copy.phase = Phase::Draining { since: None };
            self.new.extend(copy.position());
            copy.announce(sink);
            Stats::add(&self.stats.files_opened, 1);
            self.files.push(copy);
            self.publish_watched();
            return Copy::Reading;
        }
        Copy::None
    }

    /// A file's length now, at least its read offset (`None`: not open).
    pub fn file_len(&self, key: FileKey) -> Option<u64> {
        let f = &self.files[self.find(key)?];
        Some(f.size().unwrap_or(0).max(f.offset()))
    }

    /// Pauses or resumes a file's turns.
    pub fn set_paused(&mut self, key: FileKey, paused: bool) {
        if let Some(i) = self.find(key) {
            self.files[i].paused = paused;
        }
    }

    /// One round: every file gets a turn of at most the per-file budget, until `limit`
    /// bytes were consumed in all, or `lines` lines read (the next call starts with the
    /// next file, so every file keeps its turn). Returns the bytes consumed; 0 means
    /// every file is at its end (or paused).
    pub fn poll_round(&mut self, (limit, lines): (u64, Option<u64>), sink: &mut Sink<'_>) -> u64 {
        let mut total = 0;
        let mut lines_left = lines;
        let mut turns = self.files.len();
        while turns > 0 && !self.files.is_empty() && total < limit && lines_left != Some(0) {
            turns -= 1;
            let i = self.cursor % self.files.len();
            self.identify_at(i, sink);
            self.check_rewritten(i, false, sink);
            if self.files[i].paused {
                self.cursor = i + 1;
                continue;
            }
            // A turn reads at most what still fits in the caller's batch, and what the
            // container's rate limit allows.
            let room = limit.saturating_sub(total);
            let mut turn = Turn {
                lines: lines_left,
                ..Turn::bytes(self.cfg.budget.min(room.max(4096)))
            };
            let bucket = self.buckets.get_mut(self.files[i].source());
            if let Some(b) = bucket {
                let Some((bytes, lines)) = b.allowance(Instant::now()) else {
                    b.throttled = true;
                    self.cursor = i + 1;
                    continue;
                };
                turn.bytes = turn.bytes.min(bytes);
                turn.strict = true;
                turn.lines = Some(turn.lines.map_or(lines, |l| l.min(lines)));
            }
            let progress = self.poll_at(i, turn, sink);
            total += progress.bytes;
            lines_left = lines_left.map(|l| l.saturating_sub(progress.lines));
            if let Some(b) = self.buckets.get_mut(self.files[i].source()) {
                b.spend(progress.bytes, progress.lines);
                b.throttled = !progress.eof;
            }
            if !self.maybe_close(i, progress, sink) {
                self.cursor = i + 1;
            }
        }
        self.publish_throttled();
        total
    }

    /// Reads one file, up to `budget` bytes.
    pub fn poll_file(&mut self, key: FileKey, budget: u64, sink: &mut Sink<'_>) -> Progress {
        match self.find(key) {
            Some(i) => self.poll_at(i, Turn::bytes(budget), sink),
            None => Progress {
                eof: true,
                ..Progress::default()
            },
        }
    }

    fn poll_at(&mut self, i: usize, turn: Turn, sink: &mut Sink<'_>) -> Progress {
        let Tail {
            files,
            buf,
            cfg,
            stats,
            ..
        } = self;
        let f = &mut files[i];
        match f.poll(buf, &cfg.limits, stats, turn, sink) {
            Ok(p) => p,
            Err(e) => {
                Stats::add(&stats.read_errors, 1);
                crate::log_every!(crate::logging::EVERY, warn, path = %f.path.display(), error = %e, "error reading log file");
                Progress {
                    eof: true,
                    ..Progress::default()
                }
            }
        }
    }

    /// Closes a draining file that has sat at its end for the grace period.
    fn maybe_close(&mut self, i: usize, progress: Progress, sink: &mut Sink<'_>) -> bool {
        let grace = self.cfg.drain_grace;
        let f = &mut self.files[i];
        let Phase::Draining { since } = f.phase else {
            return false;
        };
        if !progress.eof || progress.bytes > 0 {
            f.phase = Phase::Draining { since: None };
            return false;
        }
        let since = since.unwrap_or_else(Instant::now);
        f.phase = Phase::Draining { since: Some(since) };
        if since.elapsed() < grace {
            return false;
        }
        if !self.files[i].try_end(&self.stats, sink) {
            // A record released from memory is read again first.
            self.files[i].phase = Phase::Draining { since: None };
            return false;
        }
        let f = self.files.remove(i);
        if let Some((id, pos)) = f.position() {
            self.closing.push((id, f.modified(), pos));
        }
        if !self.files.iter().any(|o| o.source() == f.source()) {
            // The container's last file: its rate-limit bucket goes with it.
            self.buckets.remove(f.source());
        }
        Stats::add(&self.stats.files_closed, 1);
        self.publish_watched();
        tracing::debug!(path = %f.path.display(), "drained and closed");
        true
    }

    /// Ends every file's pending records and counts unterminated final lines (a dry-run
    /// is over).
    pub fn finish(&mut self, sink: &mut Sink<'_>) {
        for f in &mut self.files {
            f.end(sink);
            if let Ok(len) = f.size() {
                Stats::add(&self.stats.incomplete_bytes, len.saturating_sub(f.offset()));
            }
        }
    }

    /// Resume points of every identified file, for the caller to persist once the
    /// records emitted so far are safe.
    pub fn positions(&self) -> Vec<(FileId, Position)> {
        let closing = self.closing.iter().map(|(id, _, p)| (*id, p.clone()));
        self.files
            .iter()
            .filter_map(FileTail::position)
            .chain(closing)
            .collect()
    }

    /// Files identified since the last call, at the position they start from. Persist
    /// these at once: a checkpoint that knows a file exists lets a restart find it among
    /// rotated siblings even if the agent died before reading any of it.
    pub fn take_new(&mut self) -> Vec<(FileId, Position)> {
        std::mem::take(&mut self.new)
    }

    /// Identities of files closed (or restarted) since the last call: their checkpoints
    /// can go once the records emitted so far are safe. A closed file still on disk is
    /// given only if the scan the checkpoints will record, started at `scanned_ns`
    /// (unix nanoseconds), started after it was last written (see `closing`).
    pub fn take_closed(&mut self, scanned_ns: u64) -> Vec<FileId> {
        let mut out = std::mem::take(&mut self.closed);
        let scanned = std::time::UNIX_EPOCH + Duration::from_nanos(scanned_ns);
        self.closing.retain(|(id, written, _)| {
            let done = *written < scanned;
            if done {
                out.push(*id);
            }
            !done
        });
        out
    }

    /// A scan starts now.
    pub fn scanning(&mut self) {
        self.scan_started = Some(std::time::SystemTime::now());
    }

    /// When the latest scan started, in unix nanoseconds (0: none yet).
    pub fn scan_started_ns(&self) -> u64 {
        self.scan_started
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl Tail {
    /// The newest generation at `place` that the checkpoints hold (with its position)
    /// or that a copy took (with none: that content is the copy's).
    fn newest_generation(&self, place: Place) -> Option<(u32, Position)> {
        let taken = self
            .claimed
            .values()
            .filter(|(pl, _)| *pl == place)
            .map(|(_, g)| (*g, Position::at(u64::MAX, None, PathBuf::new())));
        self.resume
            .values()
            .filter_map(|p| Some((p.host?, p)))
            .filter(|(h, _)| h.identity == place)
            .map(|(h, p)| (h.generation, p.clone()))
            .chain(taken)
            .max_by_key(|(g, _)| *g)
    }

    /// The places of the newest checkpoint of the host file at `at` (its own place).
    fn known_at(&self, at: Place) -> Option<crate::checkpoint::HostPlace> {
        self.resume
            .values()
            .filter_map(|p| p.host)
            .filter(|h| h.at == at)
            .max_by_key(|h| h.generation)
    }

    /// Whether host file `f` is still generation `g`, at checkpoint `pos`: no copy took
    /// that generation, and the file holds what the checkpoint says it held.
    fn intact(&self, f: &FileTail, g: u32, pos: &Position) -> bool {
        let len = f.size().unwrap_or(0);
        !self.claimed.contains_key(&f.host_id(f.place(), g))
            && pos.offset <= len
            && f.holds(pos.offset, pos.tail_hash)
    }

    /// The place and generation of the checkpointed file of `live`'s path whose content
    /// `copy` holds (the most of it, when several), not taken by another copy.
    fn copied_from(&self, copy: &FileTail, live: &Path) -> Option<(Place, u32)> {
        let name = live.file_name()?.to_string_lossy().into_owned();
        let len = copy.size().ok()?;
        let written_since = self.last_scan.is_some_and(|t| copy.modified() > t);
        self.resume
            .iter()
            .filter(|(id, _)| !self.claimed.contains_key(*id))
            .filter_map(|(_, p)| Some(((p.host?.identity, p.host?.generation), p)))
            .filter(|(_, p)| {
                p.path.parent() == live.parent()
                    && p.path
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&name))
            })
            // The checkpoint saw this copy where it is now; or the copy was made after the
            // last scan (a file read and closed before is not a copy) and holds what the
            // checkpoint says its file held.
            .filter(|(_, p)| p.path == copy.path || (p.offset > 0 && written_since))
            .filter(|(_, p)| len >= p.offset && copy.holds(p.offset, p.tail_hash))
            .max_by_key(|(_, p)| (p.path == copy.path, p.offset))
            .map(|(host, _)| host)
    }
}

/// Whether file name `n` is a rotation of the file named `live`: `<live>.<anything>`
/// (`.1`, `.20240708-034200`), or logrotate's dateext `<live>-<digits...>`.
pub fn is_rotation_of(n: &str, live: &str) -> bool {
    match n.strip_prefix(live).map(str::as_bytes) {
        Some([b'.', _, ..]) => true,
        Some([b'-', d, ..]) => d.is_ascii_digit(),
        _ => false,
    }
}

/// Whether a file name is never a log source (compressed or temporary rotations).
pub fn is_ignored(name: &str) -> bool {
    name.ends_with(".gz") || name.ends_with(".tmp")
}

/// Rotated siblings of a live log file (`x-json.log.1`, `0.log.20240708-034200`,
/// `kubelet.log-20240708`), sorted by name. Compressed and temporary files are left out.
#[cfg(test)]
pub fn rotated_siblings(live: &Path) -> Vec<PathBuf> {
    siblings(live, false)
}

/// Rotated siblings of a live log file, compressed ones (`0.log.<timestamp>.gz`)
/// included, oldest first (by modification time, then name).
pub fn rotated_siblings_with_gz(live: &Path) -> Vec<PathBuf> {
    let mut out: Vec<(Option<std::time::SystemTime>, PathBuf)> = siblings(live, true)
        .into_iter()
        .map(|p| (fs::metadata(&p).and_then(|m| m.modified()).ok(), p))
        .collect();
    out.sort();
    out.into_iter().map(|(_, p)| p).collect()
}

fn siblings(live: &Path, gz: bool) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (live.parent(), live.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let ignored = is_ignored(&n) && !(gz && n.ends_with(".gz"));
            (is_rotation_of(&n, name) && !ignored).then(|| e.path())
        })
        .collect();
    out.sort();
    out
}
