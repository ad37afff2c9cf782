//! The set of files being read, and the rules for rotation, truncation and deletion.
//!
//! - **Identity**: a file is known by [`FileId`] (container + first line), so a rename
//!   keeps its checkpoint and an inode reused by a new file does not inherit one.
//! - **Rotation** (rename): the old handle is kept and drained; it closes once it has sat
//!   at its end for [`Tailer::drain_grace`] (containerd may still write to it until it
//!   reopens). **Deletion**: the same.
//! - **Truncation** (copytruncate): the file restarts at 0, counted. If a rotated sibling
//!   carries the old identity (logrotate's copy), the unread rest is drained from it.
//! - **Start-up**: rotated siblings whose identity has a checkpoint with unread bytes
//!   (rotation while the agent was down) are drained before the live files.
//! - **Fairness**: [`Tailer::poll_round`] gives every file one turn of at most `budget`
//!   bytes, round-robin, so a chatty container cannot starve the others.
//! - **Metadata**: with a live cache ([`Tailer::set_kube`]) a file whose pod is not known
//!   yet skips its turns until the pod shows up or its bounded wait ends (other files
//!   keep being read); a file renders its metadata again when its pod or namespace
//!   changed, checked with one atomic load per turn, never per record. A file never
//!   loses metadata it had: a pod that expired from the cache leaves it as it was.
//!
//! Checkpoints are read here but never written: the caller persists
//! [`Tailer::positions`] once the records emitted so far are safe.

mod file;
mod identity;

pub use file::{first_line, FileTail, LiveMeta, Phase, Progress, ReadLimits};
pub use identity::{FileId, RECORD_ID_LEN};

use crate::checkpoint::{Checkpoints, Position};
use crate::discover::{self, Candidate, Roots};
use crate::encode::Encoder;
use crate::enrich::{docker_config_labels, KubeCache, Level, PodIndex};
use crate::metrics::Stats;
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything the tailer needs to know, fixed at start.
#[derive(Debug, Clone)]
pub struct TailConfig {
    pub roots: Roots,
    pub limits: ReadLimits,
    /// Bytes one file may consume per round.
    pub budget: u64,
    /// How long a rotated or deleted file stays open at its end before it is closed.
    pub drain_grace: Duration,
    /// De-dot label keys.
    pub dedot: bool,
    /// Render pod annotations.
    pub annotations: bool,
}

/// The live metadata cache and how long a file waits for its pod to appear in it.
#[derive(Debug, Clone)]
struct KubeLink {
    cache: Arc<KubeCache>,
    wait: Duration,
}

/// Reads every discovered log file.
pub struct Tailer {
    cfg: TailConfig,
    enc: Encoder,
    pods: Option<PodIndex>,
    kube: Option<KubeLink>,
    files: Vec<FileTail>,
    /// Identities of files closed since the last [`Tailer::take_closed`].
    closed: Vec<FileId>,
    buf: Vec<u8>,
    stats: Arc<Stats>,
    /// Where the next round starts (round-robin across calls).
    cursor: usize,
    /// Missing roots already reported.
    warned_roots: HashSet<PathBuf>,
    /// Files identified since the last [`Tailer::take_new`], with where they start.
    new: Vec<(FileId, Position)>,
}

impl Tailer {
    pub fn new(cfg: TailConfig, enc: Encoder, pods: Option<PodIndex>, stats: Arc<Stats>) -> Tailer {
        let buf = vec![0; cfg.limits.read_bytes];
        Tailer {
            cfg,
            enc,
            pods,
            kube: None,
            files: Vec::new(),
            closed: Vec::new(),
            buf,
            stats,
            cursor: 0,
            warned_roots: HashSet::new(),
            new: Vec::new(),
        }
    }

    /// Takes metadata from the live cache (instead of the pod list, if any). A file whose
    /// pod is not in it waits at most `wait` before it is read with path metadata.
    pub fn set_kube(&mut self, cache: Arc<KubeCache>, wait: Duration) {
        self.kube = Some(KubeLink { cache, wait });
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    pub fn drain_grace(&self) -> Duration {
        self.cfg.drain_grace
    }

    /// Paths of the files being read, in round-robin order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// First scan: opens every live file, and before them the rotated siblings that a
    /// checkpoint says still have unread bytes.
    pub fn start(&mut self, cps: &Checkpoints) {
        let candidates = self.scan();
        let mut siblings = Vec::new();
        for c in &candidates {
            for path in discover::rotated_siblings(&c.path) {
                siblings.push((c.clone(), path));
            }
        }
        for (c, path) in siblings {
            let Some(tail) = self.open(&c, Some(path.clone())) else {
                continue;
            };
            if let Some(tail) = self.resume_sibling(tail, cps) {
                tracing::info!(path = %path.display(), offset = tail.offset(), "draining file rotated while stopped");
                self.files.push(tail);
            }
        }
        self.add_new(candidates, cps);
    }

    fn resume_sibling(&mut self, mut tail: FileTail, cps: &Checkpoints) -> Option<FileTail> {
        let id = tail.compute_id(&mut self.buf, &self.cfg.limits).ok()??;
        let pos = cps.get(&id)?;
        if pos.offset >= tail.size().ok()? {
            return None;
        }
        tail.start(id, Some(pos));
        tail.phase = Phase::Draining { since: None };
        Stats::add(&self.stats.files_opened, 1);
        self.new.extend(tail.position());
        Some(tail)
    }

    fn scan(&mut self) -> Vec<Candidate> {
        let (candidates, report) = discover::scan(&self.cfg.roots);
        for root in &report.missing_roots {
            // Once per root: a node without Docker has no Docker root, every rescan.
            if self.warned_roots.insert(root.clone()) {
                tracing::warn!(root = %root.display(), "log root does not exist or cannot be read; will look again");
            }
        }
        for (path, err) in &report.errors {
            Stats::add(&self.stats.read_errors, 1);
            crate::log_every!(crate::logging::EVERY, warn, path = %path.display(), error = %err, "cannot read log path");
        }
        candidates
    }

    /// Rescans the roots: opens new files, marks rotated and deleted ones for draining,
    /// and checks open files for truncation or in-place rewrites.
    pub fn rescan(&mut self, cps: &Checkpoints) {
        let candidates = self.scan();
        let live: HashSet<(u64, u64)> = candidates.iter().map(|c| (c.dev, c.ino)).collect();
        for i in 0..self.files.len() {
            let f = &mut self.files[i];
            if f.phase == Phase::Live && !live.contains(&(f.dev, f.ino)) {
                f.phase = Phase::Draining { since: None };
                Stats::add(&self.stats.files_rotated, 1);
                tracing::debug!(path = %f.path.display(), "file rotated or deleted; draining");
            }
            self.identify(i, cps);
            self.check_rewritten(i, cps, true);
        }
        self.add_new(candidates, cps);
    }

    fn add_new(&mut self, candidates: Vec<Candidate>, cps: &Checkpoints) {
        let open: HashSet<(u64, u64)> = self.files.iter().map(|f| (f.dev, f.ino)).collect();
        for c in candidates {
            if open.contains(&(c.dev, c.ino)) {
                continue;
            }
            if let Some(tail) = self.open(&c, None) {
                Stats::add(&self.stats.files_opened, 1);
                self.files.push(tail);
                self.identify(self.files.len() - 1, cps);
            }
        }
        self.stats
            .files_watched
            .store(self.files.len() as u64, Ordering::Relaxed);
    }

    fn open(&self, c: &Candidate, path: Option<PathBuf>) -> Option<FileTail> {
        let mut info = c.info.clone();
        if let Some(dir) = &c.docker_dir {
            match docker_config_labels(dir) {
                Ok(labels) => info.merge(labels),
                Err(e) => tracing::debug!(error = %e, "no kubernetes labels from docker config"),
            }
        }
        let (meta, excluded, live) = match &self.kube {
            Some(k) => {
                // Read the counter first: a change during the lookup is seen next turn.
                let seen = k.cache.changes();
                let d = k.cache.describe(&info);
                let lookable = info.container_id.is_some() || info.pod_uid.is_some();
                let pending_until =
                    (!d.known && !d.excluded && lookable).then(|| Instant::now() + k.wait);
                let live = LiveMeta {
                    info: info.clone(),
                    seen,
                    rev: d.rev,
                    pending_until,
                };
                (d.meta, d.excluded, Some(live))
            }
            None => match self.pods.as_ref().and_then(|p| p.find(&info)) {
                Some((pod, container)) => (
                    pod.metadata(container, &info),
                    pod.excludes(Some(container)),
                    None,
                ),
                None => (info.to_metadata(), false, None),
            },
        };
        let path = path.unwrap_or_else(|| c.path.clone());
        match FileTail::open(
            path.clone(),
            info.source_key(),
            meta.render(self.cfg.dedot, self.cfg.annotations),
            meta.level(),
            &self.cfg.limits,
        ) {
            Ok(mut t) => {
                if live.as_ref().is_some_and(|l| l.pending_until.is_some()) {
                    tracing::debug!(path = %path.display(), "pod not in the metadata cache yet; waiting for the watch");
                }
                t.set_excluded(excluded);
                t.live = live;
                Some(t)
            }
            Err(e) => {
                Stats::add(&self.stats.read_errors, 1);
                crate::log_every!(crate::logging::EVERY, warn, path = %path.display(), error = %e, "cannot open log file");
                None
            }
        }
    }

    /// Fixes file `i`'s identity once its first line is complete, and resumes it at its
    /// checkpoint. A file whose identity is already open elsewhere (a copy) stays unread.
    fn identify(&mut self, i: usize, cps: &Checkpoints) {
        let f = &self.files[i];
        if f.id().is_some() {
            return;
        }
        match f.compute_id(&mut self.buf, &self.cfg.limits) {
            Ok(Some(id)) => {
                let dup = self
                    .files
                    .iter()
                    .enumerate()
                    .any(|(j, g)| j != i && g.id() == Some(id));
                if dup {
                    return;
                }
                let len = f.size().unwrap_or(0);
                let pos = cps.get(&id).filter(|p| p.offset <= len);
                self.files[i].start(id, pos);
                self.new.extend(self.files[i].position());
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
    fn check_rewritten(&mut self, i: usize, cps: &Checkpoints, force: bool) {
        let f = &mut self.files[i];
        let Some(id) = f.id() else { return };
        let Ok(len) = f.size() else { return };
        let last_seen = f.checked_len();
        let changed = f.size_changed(len);
        if !force && !changed && len <= f.offset() {
            return;
        }
        let truncated = len < f.offset();
        // A different first line, or none at all where there was one: rewritten in place.
        let rewritten = !truncated
            && match f.compute_id(&mut self.buf, &self.cfg.limits) {
                Ok(Some(now)) => now != id,
                Ok(None) => true,
                Err(_) => false,
            };
        if !(truncated || rewritten) {
            return;
        }
        Stats::add(&self.stats.files_truncated, 1);
        tracing::info!(path = %f.path.display(), "file truncated or rewritten; reading it again from the start");
        let old = f.position();
        // What the file was last seen to hold past our position.
        let unread = if truncated {
            last_seen.saturating_sub(f.offset())
        } else {
            0
        };
        self.closed.push(id);
        f.restart();
        // logrotate's copytruncate copied the file aside before truncating it: the bytes
        // we had not read yet are in that copy, under the old identity.
        let copied = match old {
            Some((old_id, pos)) => self.drain_copy(i, old_id, &pos),
            None => false,
        };
        if !copied && unread > 0 {
            Stats::add(&self.stats.rotated_unread_bytes, unread);
            tracing::warn!(path = %self.files[i].path.display(), bytes = unread, "file truncated before its last bytes were read, and no copy of it found");
        }
        self.identify(i, cps);
    }

    /// Opens the copy of a truncated file, if one is beside it; returns whether it did.
    fn drain_copy(&mut self, i: usize, old_id: FileId, pos: &Position) -> bool {
        for sibling in discover::rotated_siblings(&self.files[i].path) {
            let Ok(mut copy) = self.files[i].sibling(sibling.clone(), &self.cfg.limits) else {
                continue;
            };
            let Ok(Some(id)) = copy.compute_id(&mut self.buf, &self.cfg.limits) else {
                continue;
            };
            if id != old_id || copy.size().map(|l| l <= pos.offset).unwrap_or(true) {
                continue;
            }
            tracing::info!(path = %sibling.display(), offset = pos.offset, "reading the rest of a truncated file from its copy");
            copy.start(id, Some(pos));
            copy.phase = Phase::Draining { since: None };
            self.new.extend(copy.position());
            Stats::add(&self.stats.files_opened, 1);
            self.files.push(copy);
            return true;
        }
        false
    }

    /// Brings file `i`'s metadata up to date with the live cache if the cache changed.
    /// Returns whether the file may be read now: `false` while it waits for its pod.
    fn refresh_meta(&mut self, i: usize) -> bool {
        let Some(k) = &self.kube else { return true };
        let f = &mut self.files[i];
        let Some(mut live) = f.live.take() else {
            return true;
        };
        let now = k.cache.changes();
        if live.seen != now {
            live.seen = now;
            let d = k.cache.describe(&live.info);
            // Never downgrade: a pod that expired from the cache leaves the file with
            // the metadata it had.
            if d.rev != live.rev && (d.known || f.level() != Level::Complete) {
                live.rev = d.rev;
                if (d.known || d.excluded) && live.pending_until.take().is_some() {
                    Stats::add(&self.stats.metadata_waits, 1);
                }
                f.set_meta(
                    d.meta.render(self.cfg.dedot, self.cfg.annotations),
                    d.meta.level(),
                );
                f.set_excluded(d.excluded);
            }
        }
        let ready = match live.pending_until {
            Some(t) if Instant::now() < t => false,
            Some(_) => {
                live.pending_until = None;
                Stats::add(&self.stats.metadata_waits, 1);
                tracing::debug!(path = %f.path.display(), "pod still unknown; reading with the metadata the node gives");
                true
            }
            None => true,
        };
        f.live = Some(live);
        ready
    }

    /// Whether some file is waiting for its pod to appear in the metadata cache.
    pub fn waiting_for_metadata(&self) -> bool {
        self.files
            .iter()
            .any(|f| f.live.as_ref().is_some_and(|l| l.pending_until.is_some()))
    }

    /// Blocks until file `i` may be read: its pod is known or its wait ran out.
    fn wait_meta(&mut self, i: usize) {
        while !self.refresh_meta(i) {
            let (Some(k), Some(live)) = (&self.kube, &self.files[i].live) else {
                return;
            };
            let Some(until) = live.pending_until else {
                return;
            };
            k.cache.wait_change(live.seen, until);
        }
    }

    /// One round: every file gets a turn of at most `budget` bytes. Returns the bytes
    /// consumed; 0 means every file is at its end (or waiting for its metadata).
    pub fn poll_round(&mut self, cps: &Checkpoints, out: &mut Vec<u8>) -> u64 {
        self.poll_until(cps, out, usize::MAX)
    }

    /// Like [`Tailer::poll_round`], but stops early once `out` holds `limit` bytes (a full
    /// batch); the next call starts with the next file, so every file keeps its turn.
    pub fn poll_until(&mut self, cps: &Checkpoints, out: &mut Vec<u8>, limit: usize) -> u64 {
        let mut total = 0;
        let mut turns = self.files.len();
        while turns > 0 && !self.files.is_empty() && out.len() < limit {
            turns -= 1;
            let i = self.cursor % self.files.len();
            self.identify(i, cps);
            self.check_rewritten(i, cps, false);
            if !self.refresh_meta(i) {
                // Waiting for the watch: skip this file's turn, not the others'.
                self.cursor = i + 1;
                continue;
            }
            // A turn reads at most what still fits in the batch (input bytes; the output
            // is somewhat larger), so batches stay near their configured size.
            let room = limit.saturating_sub(out.len()) as u64;
            let progress = self.poll_file(i, out, self.cfg.budget.min(room.max(4096)));
            total += progress.bytes;
            if !self.maybe_close(i, progress, out) {
                self.cursor = i + 1;
            }
        }
        total
    }

    fn poll_file(&mut self, i: usize, out: &mut Vec<u8>, budget: u64) -> Progress {
        let Tailer {
            files,
            buf,
            cfg,
            enc,
            stats,
            ..
        } = self;
        let f = &mut files[i];
        match f.poll(buf, &cfg.limits, enc, out, stats, budget) {
            Ok(p) => p,
            Err(e) => {
                Stats::add(&stats.read_errors, 1);
                crate::log_every!(crate::logging::EVERY, warn, path = %f.path.display(), error = %e, "error reading log file");
                Progress {
                    bytes: 0,
                    eof: true,
                }
            }
        }
    }

    /// Closes a draining file that has sat at its end for the grace period.
    fn maybe_close(&mut self, i: usize, progress: Progress, out: &mut Vec<u8>) -> bool {
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
        let mut f = self.files.remove(i);
        f.flush(&self.enc, out, &self.stats);
        if let Some(id) = f.id() {
            self.closed.push(id);
        }
        Stats::add(&self.stats.files_closed, 1);
        self.stats
            .files_watched
            .store(self.files.len() as u64, Ordering::Relaxed);
        tracing::debug!(path = %f.path.display(), "drained and closed");
        true
    }

    /// Reads every file to its current end, one after the other in path order (the
    /// dry-run's order), calling `sink` whenever `out` holds more than `flush_at` bytes.
    pub fn read_all_in_order(
        &mut self,
        cps: &Checkpoints,
        out: &mut Vec<u8>,
        flush_at: usize,
        sink: &mut dyn FnMut(&mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut order: Vec<usize> = (0..self.files.len()).collect();
        order.sort_by(|&a, &b| self.files[a].path.cmp(&self.files[b].path));
        for i in order {
            self.identify(i, cps);
            self.wait_meta(i);
            loop {
                let budget = (flush_at as u64).max(1 << 20);
                let p = self.poll_file(i, out, budget);
                if out.len() >= flush_at {
                    sink(out)?;
                }
                if p.eof {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Ends every pending partial record and counts unterminated final lines (a dry-run
    /// is over).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        for f in &mut self.files {
            f.flush(&self.enc, out, &self.stats);
            if let Ok(len) = f.size() {
                Stats::add(&self.stats.incomplete_bytes, len.saturating_sub(f.offset()));
            }
        }
    }

    /// Resume points of every identified file, for the caller to persist once the
    /// records emitted so far are safe.
    pub fn positions(&self) -> Vec<(FileId, Position)> {
        self.files.iter().filter_map(FileTail::position).collect()
    }

    /// Files identified since the last call, at the position they start from. Persist
    /// these at once: a checkpoint that knows a file exists lets a restart find it among
    /// rotated siblings even if the agent died before reading any of it.
    pub fn take_new(&mut self) -> Vec<(FileId, Position)> {
        std::mem::take(&mut self.new)
    }

    /// Identities of files closed (or restarted) since the last call: their checkpoints
    /// can go once the records emitted so far are safe.
    pub fn take_closed(&mut self) -> Vec<FileId> {
        std::mem::take(&mut self.closed)
    }
}
