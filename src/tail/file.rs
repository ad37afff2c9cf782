//! One log file being read: its handle, identity, position and partial-line state.
//!
//! The read loop is `pread` at the current position into a buffer the caller owns, split
//! with memchr; an unterminated last line is left unread until its `\n` arrives, so the
//! position always sits on a line boundary. A line longer than the buffer's limit is cut
//! (the first part becomes a truncated record) and the rest is skipped to its `\n`.

use super::FileId;
use crate::checkpoint::Position;
use crate::encode::{Doc, Encoder, FileContext};
use crate::enrich::{Level, SourceInfo};
use crate::metrics::Stats;
use crate::parse::partial::{cap_text, Merger};
use crate::parse::{parse_line, Format, ParseError, Text, Timestamp};
use memchr::{memchr, memchr_iter, memrchr};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
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

/// What one poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub bytes: u64,
    /// Reached the end of the file (for now).
    pub eof: bool,
}

/// A file's link to the live metadata cache (see [`crate::enrich::KubeCache`]).
#[derive(Debug, Clone)]
pub struct LiveMeta {
    /// What the path and Docker's config say: the key to look the pod up by.
    pub info: SourceInfo,
    /// The cache's change counter when the metadata was last checked.
    pub seen: u64,
    /// Revision of the pod and namespace entries the metadata was rendered from.
    pub rev: u64,
    /// The pod is not in the cache yet: the file is not read before this instant
    /// unless the pod shows up.
    pub pending_until: Option<Instant>,
}

/// A file being tailed.
#[derive(Debug)]
pub struct FileTail {
    pub path: PathBuf,
    file: File,
    pub dev: u64,
    pub ino: u64,
    source: String,
    meta: Vec<u8>,
    level: Level,
    ctx: Option<FileContext>,
    format: Option<Format>,
    pos: u64,
    merger: Merger,
    last_time: Option<Timestamp>,
    /// Inside an overlong line that began at this offset (with the time before it).
    skip: Option<(u64, Option<Timestamp>)>,
    pub phase: Phase,
    /// Size at the last rewrite check.
    checked_len: u64,
    /// Lines are read and counted but produce no records (excluded pod, container or
    /// namespace).
    excluded: bool,
    /// Set when metadata comes from the live cache.
    pub live: Option<LiveMeta>,
}

impl FileTail {
    pub fn open(
        path: PathBuf,
        source: String,
        meta: Vec<u8>,
        level: Level,
        limits: &ReadLimits,
    ) -> io::Result<FileTail> {
        let file = File::open(&path)?;
        let m = file.metadata()?;
        Ok(FileTail {
            path,
            file,
            dev: m.dev(),
            ino: m.ino(),
            source,
            meta,
            level,
            ctx: None,
            format: None,
            pos: 0,
            merger: Merger::new(limits.max_record_bytes),
            last_time: None,
            skip: None,
            phase: Phase::Live,
            checked_len: m.len(),
            excluded: false,
            live: None,
        })
    }

    /// Another file of the same container (a rotated sibling), with the same metadata.
    pub fn sibling(&self, path: PathBuf, limits: &ReadLimits) -> io::Result<FileTail> {
        let meta = self
            .ctx
            .as_ref()
            .map_or_else(|| self.meta.clone(), |c| c.meta.clone());
        let mut f = FileTail::open(path, self.source.clone(), meta, self.level(), limits)?;
        f.excluded = self.excluded;
        f.live = self.live.clone();
        Ok(f)
    }

    /// How much metadata the file's records carry.
    pub fn level(&self) -> Level {
        self.ctx.as_ref().map_or(self.level, |c| c.level)
    }

    /// Replaces the rendered metadata (the pod became known, or changed).
    pub fn set_meta(&mut self, meta: Vec<u8>, level: Level) {
        match &mut self.ctx {
            Some(ctx) => {
                ctx.meta = meta;
                ctx.level = level;
            }
            None => {
                self.meta = meta;
                self.level = level;
            }
        }
    }

    pub fn excluded(&self) -> bool {
        self.excluded
    }

    /// Excludes (or includes again) the file's lines from now on. Partial records
    /// pending at that moment are dropped with it.
    pub fn set_excluded(&mut self, excluded: bool) {
        if excluded && !self.excluded {
            self.merger.reset();
        }
        self.excluded = excluded;
    }

    /// The size seen by the last [`FileTail::size_changed`] call.
    pub fn checked_len(&self) -> u64 {
        self.checked_len
    }

    /// Whether the size differs from the last call's (and remembers this one).
    pub fn size_changed(&mut self, len: u64) -> bool {
        std::mem::replace(&mut self.checked_len, len) != len
    }

    pub fn id(&self) -> Option<FileId> {
        self.ctx.as_ref().map(|c| c.id)
    }

    /// The file's current size.
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Links to the file (0 once deleted).
    pub fn nlink(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.nlink())
    }

    /// Computes the identity from the first complete line. `None` until that line exists.
    pub fn compute_id(&self, buf: &mut Vec<u8>, limits: &ReadLimits) -> io::Result<Option<FileId>> {
        Ok(first_line(&self.file, buf, limits)?.map(|line| FileId::compute(&self.source, line)))
    }

    /// Fixes the identity and where to start reading (a checkpoint, or 0).
    pub fn start(&mut self, id: FileId, at: Option<&Position>) {
        self.ctx = Some(FileContext {
            id,
            meta: std::mem::take(&mut self.meta),
            level: self.level,
        });
        if let Some(p) = at {
            self.pos = p.offset;
            self.last_time = p.last_time;
        }
    }

    /// Forgets identity and position: the file was truncated or rewritten.
    pub fn restart(&mut self) {
        if let Some(ctx) = self.ctx.take() {
            self.meta = ctx.meta;
            self.level = ctx.level;
        }
        self.format = None;
        self.pos = 0;
        self.merger.reset();
        self.last_time = None;
        self.skip = None;
    }

    /// Where a restart would have to resume to lose nothing: before any pending partial
    /// record and before an overlong line being skipped.
    pub fn position(&self) -> Option<(FileId, Position)> {
        let id = self.id()?;
        let (offset, last_time) = self
            .merger
            .resume_point()
            .into_iter()
            .chain(self.skip)
            .min_by_key(|(o, _)| *o)
            .unwrap_or((self.pos, self.last_time));
        Some((
            id,
            Position {
                offset,
                last_time,
                path: self.path.clone(),
            },
        ))
    }

    /// The read offset (next unread byte).
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// Reads up to about `budget` bytes of complete lines and encodes their records.
    pub fn poll(
        &mut self,
        buf: &mut Vec<u8>,
        limits: &ReadLimits,
        enc: &Encoder,
        out: &mut Vec<u8>,
        stats: &Stats,
        budget: u64,
    ) -> io::Result<Progress> {
        let mut progress = Progress::default();
        if self.ctx.is_none() {
            progress.eof = true;
            return Ok(progress);
        }
        while progress.bytes < budget {
            let n = read_full(&self.file, buf, self.pos)?;
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
            if self.excluded {
                // Excluded logs are consumed (so positions move) but not parsed.
                let used = match memrchr(b'\n', data) {
                    Some(i) => i + 1,
                    None if n < buf.len() => {
                        progress.eof = true;
                        break;
                    }
                    None => n,
                };
                let lines = memchr_iter(b'\n', &data[..used]).count() as u64;
                Stats::add(&stats.lines, lines);
                Stats::add(&stats.excluded_lines, lines);
                self.advance(used, &mut progress, stats);
                continue;
            }
            let Some(last_nl) = memrchr(b'\n', data) else {
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
                // Overlong line: keep its head as a truncated record, skip the rest.
                let before = self.last_time;
                self.line(self.pos, data, &[], true, enc, out, stats);
                self.skip = Some((self.pos, before));
                Stats::add(&stats.lines, 1);
                self.advance(n, &mut progress, stats);
                continue;
            };
            let chunk = &data[..=last_nl];
            let mut start = 0;
            for nl in memchr_iter(b'\n', chunk) {
                let line = &chunk[start..nl];
                self.line(
                    self.pos + start as u64,
                    line,
                    &chunk[nl + 1..],
                    false,
                    enc,
                    out,
                    stats,
                );
                start = nl + 1;
            }
            Stats::add(&stats.lines, memchr_iter(b'\n', chunk).count() as u64);
            self.advance(last_nl + 1, &mut progress, stats);
        }
        if buf.len() > limits.read_bytes {
            buf.truncate(limits.read_bytes);
            buf.shrink_to_fit();
        }
        Ok(progress)
    }

    fn advance(&mut self, n: usize, progress: &mut Progress, stats: &Stats) {
        self.pos += n as u64;
        progress.bytes += n as u64;
        Stats::add(&stats.bytes, n as u64);
    }

    /// Handles one physical line found at `offset`. `after` is the rest of the buffer,
    /// searched for a timestamp when an unparseable line has no earlier one.
    #[allow(clippy::too_many_arguments)]
    fn line(
        &mut self,
        offset: u64,
        line: &[u8],
        after: &[u8],
        cut: bool,
        enc: &Encoder,
        out: &mut Vec<u8>,
        stats: &Stats,
    ) {
        let FileTail {
            ctx,
            format,
            merger,
            last_time,
            ..
        } = self;
        let Some(ctx) = ctx.as_ref() else { return };
        let detected = match format.or_else(|| Format::detect(line)) {
            Some(f) => {
                *format = Some(f);
                Ok(f)
            }
            None => Err(ParseError::UnknownFormat),
        };
        match detected.and_then(|f| parse_line(f, line)) {
            Ok(parsed) => {
                let before = last_time.replace(parsed.time);
                if let Some(rec) = merger.push(offset, parsed, before) {
                    let truncated = rec.truncated || cut;
                    stats.record(ctx.level, rec.time.unix_millis());
                    Stats::add(&stats.partials_merged, u64::from(rec.chunks - 1));
                    Stats::add(&stats.truncated, u64::from(truncated));
                    let doc = Doc {
                        offset: rec.offset,
                        time: rec.time,
                        stream: Some(rec.stream),
                        text: &rec.text,
                        truncated,
                        parse_error: None,
                    };
                    enc.encode(out, ctx, &doc);
                }
            }
            Err(err) => {
                // DESIGN: an unparseable line takes the time of the nearest good line
                // before it in this file, else the next one, so replays pick the same
                // daily index.
                let time = last_time
                    .or_else(|| next_good_time(*format, after))
                    .unwrap_or_else(Timestamp::now);
                let (text, capped) = cap_text(Text::Raw(line), merger.cap());
                let truncated = capped || cut;
                stats.record(ctx.level, time.unix_millis());
                Stats::add(&stats.parse_errors, 1);
                Stats::add(&stats.truncated, u64::from(truncated));
                let doc = Doc {
                    offset,
                    time,
                    stream: None,
                    text: &text,
                    truncated,
                    parse_error: Some(err.reason()),
                };
                enc.encode(out, ctx, &doc);
            }
        }
    }

    /// Ends pending partial records (the file is closing, or a dry-run reached its end).
    pub fn flush(&mut self, enc: &Encoder, out: &mut Vec<u8>, stats: &Stats) {
        let Some(ctx) = &self.ctx else { return };
        for rec in self.merger.flush() {
            stats.record(ctx.level, rec.time.unix_millis());
            Stats::add(&stats.partials_merged, u64::from(rec.chunks - 1));
            Stats::add(&stats.truncated, u64::from(rec.truncated));
            let doc = Doc {
                offset: rec.offset,
                time: rec.time,
                stream: Some(rec.stream),
                text: &rec.text,
                truncated: rec.truncated,
                parse_error: None,
            };
            enc.encode(out, ctx, &doc);
        }
        self.skip = None;
    }
}

/// The time of the first line in `after` that parses (detecting the format if the file's
/// is not known yet).
fn next_good_time(format: Option<Format>, after: &[u8]) -> Option<Timestamp> {
    after.split(|&b| b == b'\n').find_map(|l| {
        parse_line(format.or_else(|| Format::detect(l))?, l)
            .ok()
            .map(|p| p.time)
    })
}

/// Reads at `offset` until `buf` is full or the file ends. Returns the bytes read.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Size of the first read when looking for the first line; most first lines are short.
const FIRST_LINE_PROBE: usize = 4096;

/// The file's first complete line (without `\n`), or its first `max_line_bytes` bytes if
/// that line is longer; `None` while the first line is still being written.
pub fn first_line<'b>(
    file: &File,
    buf: &'b mut Vec<u8>,
    limits: &ReadLimits,
) -> io::Result<Option<&'b [u8]>> {
    let max = limits.max_line_bytes();
    let mut want = FIRST_LINE_PROBE.min(max);
    loop {
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let n = read_full(file, &mut buf[..want], 0)?;
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
