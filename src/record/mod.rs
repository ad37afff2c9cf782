//! The record stream of one file: complete lines in, bulk documents out.
//!
//! ```text
//! lines → parse (Docker or CRI, detected from content) → partial merge
//!       → multiline grouping (per stream) → encode
//! ```
//! Later record transforms (structured fields, filters) slot in before the encoder, where
//! a record or a closed group becomes a `Doc`.
//!
//! Documents come out in file order (a group's document at its first line's offset),
//! which a group still open in the other stream can delay; a group closes at the latest
//! once a line of either stream is `gap` later than its last line, so the delay and the
//! memory it takes are bounded by the gap.
//!
//! The stream is pure: it owns no file and reads no clock (the caller passes `now`), does
//! no I/O and touches no metric. What it produced is counted in [`Counts`], which the
//! caller adds to the agent's metrics and to the batch. What it still holds (a record
//! whose chunks have not all arrived) is reported by [`RecordStream::held`], so the
//! caller never checkpoints past the first byte of a record not yet emitted.

pub mod multiline;
pub mod parse;
pub mod partial;

use crate::encode::{Doc, Encoder, FileContext, Level, Metadata, Stream, Text};
use crate::ids::FileId;
use crate::timestamp::Timestamp;
use memchr::memchr_iter;
use parse::{parse_line, Format, ParseError};
use partial::{cap_text, Merger};

/// Settings shared by every file's stream.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest message kept per record; the rest is dropped and the record flagged.
    pub max_record_bytes: usize,
}

/// How one file's records are shaped: set per file (from rules and annotations), and
/// changed only where no group is open.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSettings {
    pub multiline: multiline::Settings,
}

/// What a stream produced: added to the batch (documents) and to the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Documents encoded.
    pub docs: u64,
    /// Documents by the metadata they carry.
    pub complete: u64,
    pub partial: u64,
    pub none: u64,
    /// Physical lines consumed.
    pub lines: u64,
    /// Lines consumed without a document because the file is excluded.
    pub excluded_lines: u64,
    /// Partial lines merged into the record they continue.
    pub partials_merged: u64,
    /// Records kept as raw text because their line did not parse.
    pub parse_errors: u64,
    /// Records cut at the size cap.
    pub truncated: u64,
    /// Documents made of several lines (multiline groups).
    pub groups: u64,
    /// Lines joined into a group after its first.
    pub lines_joined: u64,
    /// Newest record timestamp (Unix milliseconds; 0 when none).
    pub newest_ms: u64,
}

impl Counts {
    /// A document encoded (it is counted in `docs` when it is handed over).
    fn record(&mut self, level: Level, time: &Timestamp) {
        match level {
            Level::Complete => self.complete += 1,
            Level::Partial => self.partial += 1,
            Level::None => self.none += 1,
        }
        let ms = u64::try_from(time.unix_millis()).unwrap_or(0);
        self.newest_ms = self.newest_ms.max(ms);
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Counts) {
        self.docs += other.docs;
        self.complete += other.complete;
        self.partial += other.partial;
        self.none += other.none;
        self.lines += other.lines;
        self.excluded_lines += other.excluded_lines;
        self.partials_merged += other.partials_merged;
        self.parse_errors += other.parse_errors;
        self.truncated += other.truncated;
        self.groups += other.groups;
        self.lines_joined += other.lines_joined;
        self.newest_ms = self.newest_ms.max(other.newest_ms);
    }
}

/// Where the stream's output goes: NDJSON and the counts of what it is.
pub struct Output<'a> {
    pub ndjson: &'a mut Vec<u8>,
    pub counts: &'a mut Counts,
}

/// What a stream still holds, for checkpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// The first byte of the earliest record not emitted yet, with the last good
    /// timestamp before it: a restart must resume there.
    pub pending: Option<(u64, Option<Timestamp>)>,
    /// The last good timestamp seen: an unparseable line after it takes it.
    pub last_time: Option<Timestamp>,
}

/// One file's record stream.
#[derive(Debug)]
pub struct RecordStream {
    format: Option<Format>,
    merger: Merger,
    settings: FileSettings,
    /// Settings to apply once no group is open.
    next_settings: Option<FileSettings>,
    /// One grouper per stream (stdout, stderr).
    groups: [multiline::Grouper; 2],
    /// Every byte of the file was read (multiline groups may expire by the clock).
    at_end: bool,
    /// Timestamp of the last line that parsed.
    last_time: Option<Timestamp>,
    /// Lines are consumed and counted but produce no records (excluded pod, container
    /// or namespace).
    excluded: bool,
    docs: Emitter,
}

/// Encodes documents, in file order: a document waits while a group that began before
/// it (in the other stream) is still open.
#[derive(Debug)]
struct Emitter {
    enc: Encoder,
    ctx: FileContext,
    /// Encoded documents waiting for an earlier group, by offset.
    waiting: Vec<(u64, Vec<u8>)>,
}

impl Emitter {
    /// Encodes `doc`: out at once, unless an open group (first offset `barrier`) or a
    /// waiting document comes before it in the file.
    fn doc(&mut self, doc: &Doc<'_>, barrier: u64, out: &mut Output<'_>) {
        out.counts.record(self.ctx.level, &doc.time);
        out.counts.truncated += u64::from(doc.truncated);
        if self.waiting.is_empty() && doc.offset < barrier {
            self.enc.encode(out.ndjson, &self.ctx, doc);
            out.counts.docs += 1;
            return;
        }
        let mut ndjson = Vec::with_capacity(256);
        self.enc.encode(&mut ndjson, &self.ctx, doc);
        let at = self.waiting.partition_point(|(o, _)| *o < doc.offset);
        self.waiting.insert(at, (doc.offset, ndjson));
    }

    /// Hands over the waiting documents that no open group comes before.
    fn release(&mut self, barrier: u64, out: &mut Output<'_>) {
        let n = self.waiting.partition_point(|(o, _)| *o < barrier);
        for (_, ndjson) in self.waiting.drain(..n) {
            out.ndjson.extend_from_slice(&ndjson);
            out.counts.docs += 1;
        }
    }
}

impl RecordStream {
    /// A stream for file `id` whose records carry `meta`, resuming after a line whose
    /// timestamp was `last_time` (from the file's checkpoint).
    pub fn new(
        settings: &Settings,
        file: FileSettings,
        enc: Encoder,
        id: FileId,
        meta: &Metadata,
        last_time: Option<Timestamp>,
    ) -> RecordStream {
        let ctx = enc.file_context(id, meta);
        RecordStream {
            format: None,
            merger: Merger::new(settings.max_record_bytes),
            settings: file,
            next_settings: None,
            groups: Default::default(),
            at_end: false,
            last_time,
            excluded: false,
            docs: Emitter {
                enc,
                ctx,
                waiting: Vec::new(),
            },
        }
    }

    /// Changes how records are shaped, from the next position where no group is open
    /// (a group's boundaries never depend on when settings changed).
    pub fn set_settings(&mut self, file: FileSettings) {
        if file == self.settings {
            self.next_settings = None;
        } else {
            self.next_settings = Some(file);
            self.apply_settings();
        }
    }

    fn apply_settings(&mut self) {
        if self.barrier() == u64::MAX {
            if let Some(s) = self.next_settings.take() {
                self.settings = s;
            }
        }
    }

    /// The first offset of the earliest open group (`u64::MAX`: none).
    fn barrier(&self) -> u64 {
        self.groups
            .iter()
            .filter_map(|g| g.resume_point().map(|(o, _)| o))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Replaces the metadata of the records emitted from now on.
    pub fn set_meta(&mut self, meta: &Metadata) {
        self.docs.ctx = self.docs.enc.file_context(self.docs.ctx.id, meta);
    }

    /// Excludes (or includes again) the file's lines from now on. Records pending at
    /// that moment are dropped with it.
    pub fn set_excluded(&mut self, excluded: bool) {
        if excluded && !self.excluded {
            self.merger.reset();
            for g in &mut self.groups {
                g.reset();
            }
        }
        self.excluded = excluded;
    }

    /// Feeds complete lines (each ending in `\n`) whose first byte is at `offset` in
    /// the file.
    pub fn push(&mut self, offset: u64, lines: &[u8], now: Timestamp, out: &mut Output<'_>) {
        self.at_end = false;
        let n = memchr_iter(b'\n', lines).count() as u64;
        out.counts.lines += n;
        if self.excluded {
            out.counts.excluded_lines += n;
            return;
        }
        let mut start = 0;
        for nl in memchr_iter(b'\n', lines) {
            let line = &lines[start..nl];
            let after = &lines[nl + 1..];
            self.line(offset + start as u64, line, after, false, now, out);
            start = nl + 1;
        }
        self.docs.release(self.barrier(), out);
    }

    /// Feeds the head of a line longer than the reader holds whole: it becomes a
    /// truncated record (the rest of the line is skipped by the reader).
    pub fn push_cut(&mut self, offset: u64, head: &[u8], now: Timestamp, out: &mut Output<'_>) {
        self.at_end = false;
        out.counts.lines += 1;
        if self.excluded {
            out.counts.excluded_lines += 1;
            return;
        }
        self.line(offset, head, &[], true, now, out);
        self.docs.release(self.barrier(), out);
    }

    /// Ends every pending record (the file is closing, or a dry-run reached its end).
    pub fn finish(&mut self, out: &mut Output<'_>) {
        let RecordStream {
            merger,
            groups,
            settings,
            docs,
            ..
        } = self;
        for rec in merger.flush() {
            out.counts.partials_merged += u64::from(rec.chunks - 1);
            let record = Record {
                offset: rec.offset,
                time: rec.time,
                time_before: rec.time_before,
                stream: rec.stream,
                text: &rec.text,
                truncated: rec.truncated,
            };
            group_or_emit(groups, settings, docs, record, out);
        }
        self.close_groups(|g| g.flush(), out);
        self.docs.release(u64::MAX, out);
        self.apply_settings();
    }

    /// Every byte of the file was read, at wall-clock time `now`: groups that have
    /// waited `gap` past their last line end (later lines would be split off by the gap
    /// anyway). Called again as time passes, while nothing new arrives.
    pub fn at_end(&mut self, now: Timestamp, out: &mut Output<'_>) {
        self.at_end = true;
        self.expire(now.unix_nanos(), out);
        self.docs.release(self.barrier(), out);
        self.apply_settings();
    }

    /// When [`RecordStream::at_end`] should be called again (Unix nanoseconds): the
    /// earliest expiry of an open group, once the file is read to its end.
    pub fn next_deadline(&self) -> Option<i64> {
        if !self.at_end {
            return None;
        }
        self.groups
            .iter()
            .filter_map(|g| g.deadline(&self.settings.multiline))
            .min()
    }

    /// What the stream still holds (see [`Held`]).
    pub fn held(&self) -> Held {
        let pending = self
            .merger
            .resume_point()
            .into_iter()
            .chain(
                self.groups
                    .iter()
                    .filter_map(multiline::Grouper::resume_point),
            )
            .min_by_key(|(o, _)| *o);
        Held {
            pending,
            last_time: self.last_time,
        }
    }

    /// Closes the groups that are `gap` older than `now_ns` (the wall clock at the end
    /// of the file, or the timestamp of a later line of either stream).
    fn expire(&mut self, now_ns: i64, out: &mut Output<'_>) {
        let settings = &self.settings.multiline;
        let mut closed = [None, None];
        for (i, g) in self.groups.iter_mut().enumerate() {
            closed[i] = g.expire(settings, now_ns);
        }
        self.emit_closed(closed, out);
    }

    /// Closes every group `take` returns, in file order.
    fn close_groups(
        &mut self,
        mut take: impl FnMut(&mut multiline::Grouper) -> Option<multiline::Group>,
        out: &mut Output<'_>,
    ) {
        let closed = [take(&mut self.groups[0]), take(&mut self.groups[1])];
        self.emit_closed(closed, out);
    }

    fn emit_closed(&mut self, closed: [Option<multiline::Group>; 2], out: &mut Output<'_>) {
        let [a, b] = closed;
        let mut closed: Vec<(Stream, multiline::Group)> =
            [(Stream::Stdout, a), (Stream::Stderr, b)]
                .into_iter()
                .filter_map(|(s, g)| Some((s, g?)))
                .collect();
        closed.sort_by_key(|(_, g)| g.offset);
        for (stream, g) in closed {
            self.group(stream, g, out);
        }
    }

    /// Handles one physical line found at `offset`. `after` is the rest of the lines,
    /// searched for a timestamp when an unparseable line has no earlier one.
    fn line(
        &mut self,
        offset: u64,
        line: &[u8],
        after: &[u8],
        cut: bool,
        now: Timestamp,
        out: &mut Output<'_>,
    ) {
        let detected = match self.format.or_else(|| Format::detect(line)) {
            Some(f) => {
                self.format = Some(f);
                Ok(f)
            }
            None => Err(ParseError::UnknownFormat),
        };
        match detected.and_then(|f| parse_line(f, line)) {
            Ok(parsed) => {
                let before = self.last_time.replace(parsed.time);
                // A line of either stream this far after a group's last line ends it: the
                // group's own next line could only come later still.
                self.expire(parsed.time.unix_nanos(), out);
                let RecordStream {
                    merger,
                    groups,
                    settings,
                    docs,
                    ..
                } = self;
                if let Some(rec) = merger.push(offset, parsed, before) {
                    out.counts.partials_merged += u64::from(rec.chunks - 1);
                    let record = Record {
                        offset: rec.offset,
                        time: rec.time,
                        time_before: rec.time_before,
                        stream: rec.stream,
                        text: &rec.text,
                        truncated: rec.truncated || cut,
                    };
                    group_or_emit(groups, settings, docs, record, out);
                }
            }
            Err(err) => {
                // DESIGN: an unparseable line takes the time of the nearest good line
                // before it in this file, else the next one, so replays pick the same
                // daily index.
                let time = self
                    .last_time
                    .or_else(|| next_good_time(self.format, after))
                    .unwrap_or(now);
                let (text, capped) = cap_text(Text::Raw(line), self.merger.cap());
                out.counts.parse_errors += 1;
                let doc = Doc {
                    offset,
                    time,
                    stream: None,
                    text: &text,
                    truncated: capped || cut,
                    parse_error: Some(err.reason()),
                };
                let barrier = self.barrier();
                self.docs.doc(&doc, barrier, out);
            }
        }
    }

    /// Encodes a closed group: one document, at its first line's offset and time.
    fn group(&mut self, stream: Stream, g: multiline::Group, out: &mut Output<'_>) {
        if g.lines > 1 {
            out.counts.groups += 1;
            out.counts.lines_joined += u64::from(g.lines - 1);
        }
        let text = Text::Escaped(&g.text);
        let doc = Doc {
            offset: g.offset,
            time: g.time,
            stream: Some(stream),
            text: &text,
            truncated: g.truncated,
            parse_error: None,
        };
        let barrier = self.barrier();
        self.docs.doc(&doc, barrier, out);
    }
}

/// A record after partial merge.
struct Record<'a> {
    offset: u64,
    time: Timestamp,
    time_before: Option<Timestamp>,
    stream: Stream,
    text: &'a Text<'a>,
    truncated: bool,
}

/// Sends a record through its stream's grouper: it is held (grouped), or passes straight
/// to the encoder; a group it closed is encoded first.
fn group_or_emit(
    groups: &mut [multiline::Grouper; 2],
    settings: &FileSettings,
    docs: &mut Emitter,
    rec: Record<'_>,
    out: &mut Output<'_>,
) {
    let input = multiline::Input {
        offset: rec.offset,
        time: rec.time,
        time_before: rec.time_before,
        text: rec.text,
        truncated: rec.truncated,
    };
    let (closed, pass) = match groups[rec.stream.index()].push(&settings.multiline, input) {
        multiline::Step::Held { closed } => (closed, false),
        multiline::Step::Pass { closed } => (closed, true),
    };
    let barrier = || {
        groups
            .iter()
            .filter_map(|g| g.resume_point().map(|(o, _)| o))
            .min()
            .unwrap_or(u64::MAX)
    };
    if let Some(g) = closed {
        if g.lines > 1 {
            out.counts.groups += 1;
            out.counts.lines_joined += u64::from(g.lines - 1);
        }
        let text = Text::Escaped(&g.text);
        let doc = Doc {
            offset: g.offset,
            time: g.time,
            stream: Some(rec.stream),
            text: &text,
            truncated: g.truncated,
            parse_error: None,
        };
        docs.doc(
            &doc,
            barrier().min(if pass { rec.offset } else { u64::MAX }),
            out,
        );
    }
    if pass {
        let doc = Doc {
            offset: rec.offset,
            time: rec.time,
            stream: Some(rec.stream),
            text: rec.text,
            truncated: rec.truncated,
            parse_error: None,
        };
        docs.doc(&doc, barrier(), out);
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
