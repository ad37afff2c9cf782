//! The record stream of one file: complete lines in, bulk documents out.
//!
//! ```text
//! lines → parse (Docker or CRI, detected from content) → partial merge → encode
//! ```
//! Later record transforms (multiline grouping, structured fields, filters) slot in
//! between the merge and the encoder, in [`RecordStream::emit`].
//!
//! The stream is pure: it owns no file and reads no clock (the caller passes `now`), does
//! no I/O and touches no metric. What it produced is counted in [`Counts`], which the
//! caller adds to the agent's metrics and to the batch. What it still holds (a record
//! whose chunks have not all arrived) is reported by [`RecordStream::held`], so the
//! caller never checkpoints past the first byte of a record not yet emitted.

pub mod parse;
pub mod partial;

use crate::encode::{Doc, Encoder, FileContext, Level, Metadata, Text};
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
    /// Newest record timestamp (Unix milliseconds; 0 when none).
    pub newest_ms: u64,
}

impl Counts {
    fn record(&mut self, level: Level, time: &Timestamp) {
        self.docs += 1;
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
    enc: Encoder,
    ctx: FileContext,
    format: Option<Format>,
    merger: Merger,
    /// Timestamp of the last line that parsed.
    last_time: Option<Timestamp>,
    /// Lines are consumed and counted but produce no records (excluded pod, container
    /// or namespace).
    excluded: bool,
}

impl RecordStream {
    /// A stream for file `id` whose records carry `meta`, resuming after a line whose
    /// timestamp was `last_time` (from the file's checkpoint).
    pub fn new(
        settings: &Settings,
        enc: Encoder,
        id: FileId,
        meta: &Metadata,
        last_time: Option<Timestamp>,
    ) -> RecordStream {
        let ctx = enc.file_context(id, meta);
        RecordStream {
            enc,
            ctx,
            format: None,
            merger: Merger::new(settings.max_record_bytes),
            last_time,
            excluded: false,
        }
    }

    /// Replaces the metadata of the records emitted from now on.
    pub fn set_meta(&mut self, meta: &Metadata) {
        self.ctx = self.enc.file_context(self.ctx.id, meta);
    }

    /// Excludes (or includes again) the file's lines from now on. Partial records
    /// pending at that moment are dropped with it.
    pub fn set_excluded(&mut self, excluded: bool) {
        if excluded && !self.excluded {
            self.merger.reset();
        }
        self.excluded = excluded;
    }

    /// Feeds complete lines (each ending in `\n`) whose first byte is at `offset` in
    /// the file.
    pub fn push(&mut self, offset: u64, lines: &[u8], now: Timestamp, out: &mut Output<'_>) {
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
    }

    /// Feeds the head of a line longer than the reader holds whole: it becomes a
    /// truncated record (the rest of the line is skipped by the reader).
    pub fn push_cut(&mut self, offset: u64, head: &[u8], now: Timestamp, out: &mut Output<'_>) {
        out.counts.lines += 1;
        if self.excluded {
            out.counts.excluded_lines += 1;
            return;
        }
        self.line(offset, head, &[], true, now, out);
    }

    /// Ends every pending record (the file is closing, or a dry-run reached its end).
    pub fn finish(&mut self, out: &mut Output<'_>) {
        let RecordStream {
            enc, ctx, merger, ..
        } = self;
        for rec in merger.flush() {
            out.counts.record(ctx.level, &rec.time);
            out.counts.partials_merged += u64::from(rec.chunks - 1);
            out.counts.truncated += u64::from(rec.truncated);
            let doc = Doc {
                offset: rec.offset,
                time: rec.time,
                stream: Some(rec.stream),
                text: &rec.text,
                truncated: rec.truncated,
                parse_error: None,
            };
            enc.encode(out.ndjson, ctx, &doc);
        }
    }

    /// What the stream still holds (see [`Held`]).
    pub fn held(&self) -> Held {
        Held {
            pending: self.merger.resume_point(),
            last_time: self.last_time,
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
        let RecordStream {
            enc,
            ctx,
            format,
            merger,
            last_time,
            ..
        } = self;
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
                    out.counts.record(ctx.level, &rec.time);
                    out.counts.partials_merged += u64::from(rec.chunks - 1);
                    out.counts.truncated += u64::from(truncated);
                    let doc = Doc {
                        offset: rec.offset,
                        time: rec.time,
                        stream: Some(rec.stream),
                        text: &rec.text,
                        truncated,
                        parse_error: None,
                    };
                    enc.encode(out.ndjson, ctx, &doc);
                }
            }
            Err(err) => {
                // DESIGN: an unparseable line takes the time of the nearest good line
                // before it in this file, else the next one, so replays pick the same
                // daily index.
                let time = last_time
                    .or_else(|| next_good_time(*format, after))
                    .unwrap_or(now);
                let (text, capped) = cap_text(Text::Raw(line), merger.cap());
                let truncated = capped || cut;
                out.counts.record(ctx.level, &time);
                out.counts.parse_errors += 1;
                out.counts.truncated += u64::from(truncated);
                let doc = Doc {
                    offset,
                    time,
                    stream: None,
                    text: &text,
                    truncated,
                    parse_error: Some(err.reason()),
                };
                enc.encode(out.ndjson, ctx, &doc);
            }
        }
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
