//! The record stream of one file: complete lines in, bulk documents out.
//!
//! ```text
//! lines → parse (Docker or CRI, detected from content) → partial merge
//!       → multiline grouping (per stream) → filter → redact → fields → encode
//! ```
//! The record transforms after grouping (filter, redaction, fields) apply where a record
//! or a closed group becomes a `Doc`, in [`Emitter::emit`]. The route (which index a
//! record goes to) is settled when the first record that would use it is encoded, and
//! always by the record's offset: see [`RecordStream::set_route`].
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

pub mod fields;
pub mod filter;
pub mod multiline;
pub mod parse;
pub mod partial;
pub mod redact;

use crate::encode::{Doc, Encoder, Fields, FileContext, Level, Metadata, Stream, Text};
use crate::ids::FileId;
use crate::index::route::Routes;
use crate::timestamp::Timestamp;
use memchr::memchr_iter;
pub use parse::Format;
use parse::{parse_line, ParseError};
use partial::{cap_text, Merger};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

/// Settings shared by every file's stream.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest message kept per record; the rest is dropped and the record flagged.
    pub max_record_bytes: usize,
    /// How parsed fields are shaped.
    pub fields: fields::Options,
    /// What unfinished records may hold across every file (`None`: unbounded, as for a
    /// dry-run, which reads each file once to its end).
    pub budget: Option<std::sync::Arc<partial::MemoryBudget>>,
}

/// How one file's records are shaped: set per file (from rules and annotations), and
/// changed only where no group is open.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSettings {
    pub multiline: multiline::Settings,
    /// How each stream's records (stdout, stderr) are parsed into fields.
    pub parsers: [fields::Parser; 2],
    /// Which records are shipped, and which secrets they lose.
    pub controls: Controls,
    /// The line format when the file's place fixes it (a host file: plain text);
    /// `None`: detected from the first line.
    pub format: Option<Format>,
}

impl FileSettings {
    /// The `stream` a document names: none for a host file's (plain text has none).
    fn stream(&self, s: Stream) -> Option<Stream> {
        (self.format != Some(Format::Plain)).then_some(s)
    }
}

/// The filter and redaction of a file's records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Controls {
    pub filter: Option<Arc<filter::Filter>>,
    pub redact: Option<Arc<redact::Redactor>>,
}

/// Counts by rule or pattern name (a few names: a short list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally(Vec<(Arc<str>, u64)>);

impl Tally {
    pub fn add(&mut self, name: &Arc<str>, n: u64) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some((_, c)) => *c += n,
            None => self.0.push((name.clone(), n)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(k, n)| (&**k, *n))
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    fn merge(&mut self, other: &Tally) {
        for (k, n) in &other.0 {
            self.add(k, *n);
        }
    }
}

/// What a stream produced: added to the batch (documents) and to the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Documents with parsed fields.
    pub fields_parsed: u64,
    /// Records the parser applied to that kept their text only: not valid...
    pub fields_invalid: u64,
    /// ...or past the caps on keys, depth or key length.
    pub fields_caps: u64,
    /// Records dropped by a rule's `drop`/`keep` filter, by rule name.
    pub dropped: Tally,
    /// Secrets replaced, by pattern name.
    pub redactions: Tally,
    /// Newest record timestamp (Unix milliseconds; 0 when none).
    pub newest_ms: u64,
    /// Oldest record timestamp (Unix milliseconds; 0 when none).
    pub oldest_ms: u64,
}

impl Counts {
    /// A document encoded (it is counted in `docs` when it is handed over).
    pub(crate) fn record(&mut self, level: Level, time: &Timestamp) {
        match level {
            Level::Complete => self.complete += 1,
            Level::Partial => self.partial += 1,
            Level::None => self.none += 1,
        }
        let ms = u64::try_from(time.unix_millis()).unwrap_or(0);
        self.newest_ms = self.newest_ms.max(ms);
        self.oldest_ms = crate::timestamp::oldest_ms(self.oldest_ms, ms);
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
        self.fields_parsed += other.fields_parsed;
        self.fields_invalid += other.fields_invalid;
        self.fields_caps += other.fields_caps;
        self.dropped.merge(&other.dropped);
        self.redactions.merge(&other.redactions);
        self.newest_ms = self.newest_ms.max(other.newest_ms);
        self.oldest_ms = crate::timestamp::oldest_ms(self.oldest_ms, other.oldest_ms);
    }
}

/// Where the stream's output goes: NDJSON, the counts of what it is, and each file's
/// route history when it grew (to be persisted before the documents that use it are).
pub struct Output<'a> {
    pub ndjson: &'a mut Vec<u8>,
    pub counts: &'a mut Counts,
    pub routes: &'a mut Vec<(FileId, Routes)>,
}

/// What a stream still holds, for checkpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// The first byte of the earliest record not emitted yet, with the last good
    /// timestamp before it: a restart must resume there.
    pub pending: Option<(u64, Option<Timestamp>)>,
    /// The same for each stream (stdout, stderr): a restart skips the lines of a stream
    /// before its own point, which are in documents already (`None`: every line of the
    /// stream read so far is).
    pub streams: [Option<u64>; 2],
    /// The last good timestamp seen: an unparseable line after it takes it.
    pub last_time: Option<Timestamp>,
    /// The stream halted: a record released from memory (see [`partial::MemoryBudget`])
    /// is complete in the file. Every line before this offset was taken (`u64::MAX`: every
    /// line read so far); the caller reads the file again from `pending`, with a stream
    /// made as for a restart from that checkpoint.
    pub restart: Option<u64>,
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
    /// When the file was first seen (persisted with its checkpoint): the time of lines
    /// with no good line around them. `None` until told: the caller's clock then.
    first_seen: Option<Timestamp>,
    /// Lines are consumed and counted but produce no records (excluded pod, container
    /// or namespace).
    excluded: bool,
    /// Lines of each stream before these offsets are in documents already (the
    /// checkpoint's per-stream points): read for their timestamps, not made again.
    skip_below: [u64; 2],
    docs: Emitter,
    /// The merger halted (a record released from memory is complete): every line before
    /// this offset was pushed; the caller reads the file again from [`Held::pending`].
    restart: Option<u64>,
    /// Lines before this offset were read before (this stream reads them again after a
    /// release): not counted again.
    replayed_below: u64,
    /// What the last look ahead for a good line found: for lines before this offset,
    /// the next good line's time (or none in the rest of the pass). Without it a file
    /// with no good line would search the rest of the pass for every line.
    ahead: Option<(u64, Option<Timestamp>)>,
}

/// Encodes documents, in file order: a document waits while a group that began before
/// it (in the other stream) is still open.
#[derive(Debug)]
struct Emitter {
    enc: Encoder,
    ctx: FileContext,
    fields: fields::Options,
    /// Scratch for the parser, and the fields of the document being made.
    scratch: Vec<u8>,
    /// The text unescaped, for the filter and the redactor.
    plain: Vec<u8>,
    parsed: Fields,
    waiting: Waiting,
    route: Route,
}

/// Where a file's documents go: the history of its routes (from its checkpoint, then
/// as decided here), and the route wanted now.
#[derive(Debug, Default)]
struct Route {
    history: Routes,
    /// The route the file's selection names (`None`: the encoder's own target).
    wanted: Option<Arc<str>>,
    /// Where a change of route applies from: the file's length when it was decided
    /// (past any record a previous run may have sent).
    from: u64,
    /// `wanted` may differ from the history's last route.
    unsettled: bool,
}

/// Encoded documents waiting for an earlier group: back to back in one buffer, listed
/// by offset. Documents leave in offset order, mostly from the buffer's front; the
/// buffer is emptied when none waits, and compacted when most of it is gone.
#[derive(Debug, Default)]
struct Waiting {
    buf: Vec<u8>,
    /// Offset, stream and bytes in `buf` of each document, by offset.
    docs: VecDeque<(u64, Option<Stream>, Range<usize>)>,
    /// Bytes of `buf` still waiting.
    live: usize,
}

/// What a file's waiting buffer keeps between uses.
const KEEP_BYTES: usize = 16 * 1024;

impl Waiting {
    /// Adds the document at `offset` that `encode` appends.
    fn add(&mut self, offset: u64, stream: Option<Stream>, encode: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        encode(&mut self.buf);
        self.live += self.buf.len() - start;
        let at = self.docs.partition_point(|(o, _, _)| *o < offset);
        self.docs
            .insert(at, (offset, stream, start..self.buf.len()));
    }

    /// Appends the documents before `barrier` to `out`; returns how many.
    fn release(&mut self, barrier: u64, out: &mut Vec<u8>) -> u64 {
        let mut n = 0;
        while let Some((_, _, r)) = self.docs.front().filter(|(o, _, _)| *o < barrier) {
            out.extend_from_slice(&self.buf[r.clone()]);
            self.live -= r.len();
            self.docs.pop_front();
            n += 1;
        }
        if self.docs.is_empty() {
            self.buf.clear();
            self.buf.shrink_to(KEEP_BYTES);
        } else if self.buf.len() > 64 * 1024 && self.live < self.buf.len() / 4 {
            let mut buf = Vec::with_capacity(self.live * 2);
            for (_, _, r) in &mut self.docs {
                let start = buf.len();
                buf.extend_from_slice(&self.buf[r.clone()]);
                *r = start..buf.len();
            }
            self.buf = buf;
        }
        n
    }

    fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The first waiting document of `stream`.
    fn first_of(&self, stream: Stream) -> Option<u64> {
        self.docs
            .iter()
            .find(|(_, st, _)| *st == Some(stream))
            .map(|(o, _, _)| *o)
    }
}

impl Emitter {
    /// A record or closed group becomes a document: unless `ctl`'s filter drops it, its
    /// secrets are replaced, its text parsed into fields (with `parser`, when given),
    /// and it is encoded.
    fn emit(
        &mut self,
        doc: Doc<'_>,
        parser: Option<&fields::Parser>,
        ctl: &Controls,
        barrier: u64,
        out: &mut Output<'_>,
    ) {
        // The filter and the redactor read the text unescaped: unescape it once.
        let stored = doc.text.stored();
        let found = ctl.redact.as_ref().and_then(|r| r.prefilter(stored));
        let mut plain_buf = std::mem::take(&mut self.plain);
        let plain = if ctl.filter.is_some() || found.is_some() {
            doc.text.unescaped(usize::MAX, &mut plain_buf)
        } else {
            &[]
        };
        if let Some(f) = &ctl.filter {
            if !f.keeps_plain(plain, parser) {
                out.counts.dropped.add(&f.rule, 1);
                self.plain = plain_buf;
                return;
            }
        }
        let redacted = match (&ctl.redact, found) {
            (Some(r), Some(found)) => r.redact_plain(found, plain),
            _ => None,
        };
        if plain_buf.capacity() > KEEP_BYTES {
            // A huge record's buffer is not kept for every file.
            plain_buf = Vec::new();
        }
        self.plain = plain_buf;
        let text;
        let doc = match redacted {
            Some(r) => {
                for (name, n) in &r.hits {
                    out.counts.redactions.add(name, *n);
                }
                text = Text::Owned(r.text);
                Doc { text: &text, ..doc }
            }
            None => doc,
        };
        match parser {
            Some(p) => self.parsed_doc(doc, p, barrier, out),
            None => self.doc(&doc, barrier, out),
        }
    }

    /// Parses a record's text into fields with `parser`, then encodes its document.
    fn parsed_doc(
        &mut self,
        doc: Doc<'_>,
        parser: &fields::Parser,
        barrier: u64,
        out: &mut Output<'_>,
    ) {
        if matches!(parser, fields::Parser::None) {
            return self.doc(&doc, barrier, out);
        }
        let mut parsed = std::mem::take(&mut self.parsed);
        let found = match fields::parse(
            parser,
            &self.fields,
            doc.text,
            &mut self.scratch,
            &mut parsed,
        ) {
            Ok(found) => found,
            Err(fields::Skip::Invalid) => {
                out.counts.fields_invalid += 1;
                false
            }
            Err(fields::Skip::Caps) => {
                out.counts.fields_caps += 1;
                false
            }
        };
        out.counts.fields_parsed += u64::from(found);
        let doc = Doc {
            fields: found.then_some(&parsed),
            ..doc
        };
        self.doc(&doc, barrier, out);
        self.parsed = parsed;
    }

    /// Encodes `doc`: out at once, unless an open group (first offset `barrier`) or a
    /// waiting document comes before it in the file.
    fn doc(&mut self, doc: &Doc<'_>, barrier: u64, out: &mut Output<'_>) {
        if self.route.unsettled {
            self.settle_route(out);
        }
        out.counts.record(self.ctx.level, &doc.time);
        out.counts.truncated += u64::from(doc.truncated);
        if self.waiting.is_empty() && doc.offset < barrier {
            self.enc.encode(out.ndjson, &self.ctx, doc);
            out.counts.docs += 1;
            return;
        }
        let (enc, ctx) = (&self.enc, &self.ctx);
        self.waiting
            .add(doc.offset, doc.stream, |buf| enc.encode(buf, ctx, doc));
    }

    /// Decides the route before a document uses it: the first route of a file applies
    /// from its start; a different one from where it was decided. A history that grew
    /// goes to `out`.
    fn settle_route(&mut self, out: &mut Output<'_>) {
        let r = &mut self.route;
        r.unsettled = false;
        let Some(want) = &r.wanted else {
            return;
        };
        r.history = match r.history.last() {
            None => r.history.then(0, want.clone()),
            Some(last) if last.name == *want => return,
            Some(_) => r.history.then(r.from, want.clone()),
        };
        self.ctx.heads = self.enc.heads(&r.history);
        out.routes.push((self.ctx.id, r.history.clone()));
    }

    /// Hands over the waiting documents that no open group comes before.
    fn release(&mut self, barrier: u64, out: &mut Output<'_>) {
        out.counts.docs += self.waiting.release(barrier, out.ndjson);
    }
}

impl RecordStream {
    /// A stream for file `id` whose records carry `meta`, resuming after a line whose
    /// timestamp was `last_time`, with the lines of each stream before `skip_below` in
    /// documents already (from the file's checkpoint).
    pub fn new(
        settings: &Settings,
        file: FileSettings,
        enc: Encoder,
        id: FileId,
        meta: &Metadata,
        (last_time, skip_below): (Option<Timestamp>, [u64; 2]),
    ) -> RecordStream {
        let ctx = enc.file_context(id, meta);
        RecordStream {
            format: file.format,
            merger: match &settings.budget {
                Some(b) => Merger::new(settings.max_record_bytes).with_budget(b.clone(), 0),
                None => Merger::new(settings.max_record_bytes),
            },
            restart: None,
            replayed_below: 0,
            ahead: None,
            settings: file,
            next_settings: None,
            groups: Default::default(),
            at_end: false,
            last_time,
            first_seen: None,
            excluded: false,
            skip_below,
            docs: Emitter {
                enc,
                ctx,
                fields: settings.fields.clone(),
                scratch: Vec::new(),
                plain: Vec::new(),
                parsed: Fields::default(),
                waiting: Waiting::default(),
                route: Route::default(),
            },
        }
    }

    /// When the file was first seen (from its checkpoint): the time of lines that have
    /// none and no good line around them.
    pub fn set_first_seen(&mut self, t: Timestamp) {
        self.first_seen = Some(t);
    }

    /// Resumes the file's route history (from its checkpoint, which resumed the file at
    /// `resumed_at`) and names the route it should take; `len` is the file's length now.
    /// A different route than the last one applies from `len` on, as any change does
    /// (see [`RecordStream::set_route`]). A file resumed past its start without a history
    /// was read by a version without routes: its records went to the target's own
    /// prefix.
    pub fn resume_route(
        &mut self,
        history: Routes,
        wanted: Arc<str>,
        (resumed_at, len): (u64, u64),
    ) {
        let history = if history.is_empty() && resumed_at > 0 {
            history.then(0, self.docs.enc.name().into())
        } else {
            history
        };
        let r = &mut self.docs.route;
        self.docs.ctx.heads = self.docs.enc.heads(&history);
        r.history = history;
        r.wanted = Some(wanted);
        r.from = len;
        r.unsettled = true;
    }

    /// The file's id and route history (for a copy of it, after a truncation).
    pub fn route_history(&self) -> (FileId, Routes) {
        (self.docs.ctx.id, self.docs.route.history.clone())
    }

    /// Names the route the file's selection wants now; `len` is the file's length.
    /// Decided when the next record is encoded: records from `len` on take it (the
    /// earlier ones, read or not, keep the route they had, so a replay never moves a
    /// document to another index).
    pub fn set_route(&mut self, wanted: Arc<str>, len: u64) {
        let r = &mut self.docs.route;
        if r.wanted.as_ref() == Some(&wanted) {
            return;
        }
        r.from = if r.unsettled { r.from.max(len) } else { len };
        r.wanted = Some(wanted);
        r.unsettled = true;
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

    fn barrier(&self) -> u64 {
        barrier(&self.groups)
    }

    /// Replaces the metadata of the records emitted from now on.
    pub fn set_meta(&mut self, meta: &Metadata) {
        let heads = std::mem::take(&mut self.docs.ctx.heads);
        self.docs.ctx = self.docs.enc.file_context(self.docs.ctx.id, meta);
        self.docs.ctx.heads = heads;
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
        if self.restart.is_some() {
            return;
        }
        if self.excluded {
            // Lines read again after a release were counted the first time.
            let fresh = usize::try_from(self.replayed_below.saturating_sub(offset))
                .map_or(0, |skip| lines.len().saturating_sub(skip));
            let n = memchr_iter(b'\n', &lines[lines.len() - fresh..]).count() as u64;
            out.counts.lines += n;
            out.counts.excluded_lines += n;
            // Documents made before the exclusion and waiting behind a group go out.
            self.docs.release(u64::MAX, out);
            return;
        }
        let mut start = 0;
        for nl in memchr_iter(b'\n', lines) {
            let line = &lines[start..nl];
            let after = &lines[nl + 1..];
            // Counted as taken (a halt leaves the rest to be read again), and once: lines
            // read again after a release were counted the first time.
            out.counts.lines += u64::from(offset + start as u64 >= self.replayed_below);
            if self.next_settings.is_some() {
                // New settings apply at the first line where no group is open.
                self.apply_settings();
            }
            self.line(offset + start as u64, line, after, false, now, out);
            start = nl + 1;
            if self.merger.halted() {
                // The rest is read again after the released record.
                self.restart = Some(offset + start as u64);
                break;
            }
        }
        self.docs.release(self.barrier(), out);
    }

    /// This stream reads the file again from a checkpoint after a release (see
    /// [`Held::restart`]): the records that begin before `below` are kept whole whatever
    /// the memory budget, and its lines are not counted again.
    pub fn replaying(&mut self, below: u64) {
        self.replayed_below = below;
        self.merger.exempt_below(below);
    }

    /// Feeds the head of a line longer than the reader holds whole: it becomes a
    /// truncated record (the rest of the line is skipped by the reader).
    pub fn push_cut(&mut self, offset: u64, head: &[u8], now: Timestamp, out: &mut Output<'_>) {
        self.at_end = false;
        if self.restart.is_some() {
            return;
        }
        out.counts.lines += u64::from(offset >= self.replayed_below);
        if self.excluded {
            out.counts.excluded_lines += 1;
            self.docs.release(u64::MAX, out);
            return;
        }
        self.line(offset, head, &[], true, now, out);
        if self.merger.halted() {
            // The cut line itself is read again.
            self.restart = Some(offset);
        }
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
        if merger.holds_released() {
            // A released record is pending: read again before anything is ended.
            self.restart = Some(u64::MAX);
            return;
        }
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
        // Caught up: buffers a big record grew go back.
        self.merger.shrink();
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
        let streams = [Stream::Stdout, Stream::Stderr].map(|s| {
            let waiting = self.docs.waiting.first_of(s);
            [
                self.merger.pending_offset(s),
                self.groups[s.index()].resume_point().map(|(o, _)| o),
                waiting,
            ]
            .into_iter()
            .flatten()
            .min()
        });
        Held {
            pending,
            streams,
            last_time: self.last_time,
            restart: self.restart,
        }
    }

    /// Closes the groups that are `gap` older than `now_ns` (the wall clock at the end
    /// of the file, or the timestamp of a later line of either stream).
    fn expire(&mut self, now_ns: i64, out: &mut Output<'_>) {
        if self.groups.iter().all(|g| g.resume_point().is_none()) {
            return;
        }
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
        match closed {
            [None, None] => {}
            [Some(a), None] => self.group(Stream::Stdout, a, out),
            [None, Some(b)] => self.group(Stream::Stderr, b, out),
            [Some(a), Some(b)] if a.offset < b.offset => {
                self.group(Stream::Stdout, a, out);
                self.group(Stream::Stderr, b, out);
            }
            [Some(a), Some(b)] => {
                self.group(Stream::Stderr, b, out);
                self.group(Stream::Stdout, a, out);
            }
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
        // The year of a plain line's stamp: nearest the last good line's, else the
        // file's first-seen time (both persisted, so a replay picks the same year).
        let reference = self
            .last_time
            .or(self.first_seen)
            .unwrap_or(now)
            .unix_nanos();
        let parsed = match detected.and_then(|f| parse_line(f, line, reference)) {
            // A host file's line without a stamp is a record of its own, at the time of
            // the nearest good line before it (DESIGN's rule, as for unparseable lines).
            Err(ParseError::NoTimestamp) => Ok((
                parse::Line {
                    time: self.timeless((offset + line.len() as u64 + 1, after), now),
                    stream: Stream::Stdout,
                    partial: false,
                    text: Text::Raw(line),
                },
                false,
            )),
            other => other.map(|p| (p, true)),
        };
        match parsed {
            Ok((parsed, good)) => {
                let before = if good {
                    self.last_time.replace(parsed.time)
                } else {
                    self.last_time
                };
                // A line of either stream this far after a group's last line ends it: the
                // group's own next line could only come later still.
                self.expire(parsed.time.unix_nanos(), out);
                if offset < self.skip_below[parsed.stream.index()] {
                    // In a document already (read again after a restart).
                    return;
                }
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
                // before it in this file, else the next one read in the same pass, else
                // the file's first-seen time, so replays pick the same daily index.
                let time = self.timeless((offset + line.len() as u64 + 1, after), now);
                let (text, capped) = cap_text(Text::Raw(line), self.merger.cap());
                out.counts.parse_errors += 1;
                let doc = Doc {
                    offset,
                    time,
                    stream: None,
                    text: &text,
                    truncated: capped || cut,
                    parse_error: Some(err.reason()),
                    fields: None,
                };
                let barrier = self.barrier();
                self.docs
                    .emit(doc, None, &self.settings.controls, barrier, out);
            }
        }
    }

    /// The time of a line without one of its own: the nearest good line's before it
    /// in this file, else the next one read in the same pass, else the file's
    /// first-seen time, so replays pick the same daily index.
    /// `after` starts at offset `from`.
    fn timeless(&mut self, (from, after): (u64, &[u8]), now: Timestamp) -> Timestamp {
        if let Some(t) = self.last_time {
            return t;
        }
        let next = match self.ahead {
            Some((until, t)) if from <= until => t,
            _ => {
                let reference = self.first_seen.unwrap_or(now).unix_nanos();
                let found = next_good_time(self.format, after, reference);
                let until = found.map_or(after.len(), |(at, _)| at) as u64;
                let t = found.map(|(_, t)| t);
                self.ahead = Some((from + until, t));
                t
            }
        };
        next.or(self.first_seen).unwrap_or(now)
    }

    /// Encodes a closed group.
    fn group(&mut self, stream: Stream, g: multiline::Group, out: &mut Output<'_>) {
        let barrier = self.barrier();
        let text = group_doc(&mut self.docs, &self.settings, stream, g, barrier, out);
        self.groups[stream.index()].recycle(text);
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
    let parser = &settings.parsers[rec.stream.index()];
    if settings.multiline.mode == multiline::Mode::Off && barrier(groups) == u64::MAX {
        let doc = Doc {
            offset: rec.offset,
            time: rec.time,
            stream: settings.stream(rec.stream),
            text: rec.text,
            truncated: rec.truncated,
            parse_error: None,
            fields: None,
        };
        return docs.emit(doc, Some(parser), &settings.controls, u64::MAX, out);
    }
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
    if let Some(g) = closed {
        let text = group_doc(docs, settings, rec.stream, g, barrier(groups), out);
        groups[rec.stream.index()].recycle(text);
    }
    if pass {
        let doc = Doc {
            offset: rec.offset,
            time: rec.time,
            stream: settings.stream(rec.stream),
            text: rec.text,
            truncated: rec.truncated,
            parse_error: None,
            fields: None,
        };
        docs.emit(doc, Some(parser), &settings.controls, barrier(groups), out);
    }
}

/// The first offset of the earliest open group (`u64::MAX`: none): documents after it
/// wait for it.
fn barrier(groups: &[multiline::Grouper; 2]) -> u64 {
    groups
        .iter()
        .filter_map(|g| g.resume_point().map(|(o, _)| o))
        .min()
        .unwrap_or(u64::MAX)
}

/// Encodes a closed group: one document, at its first line's offset and time; a
/// one-line group is parsed into fields (a multiline trace never is). Gives back the
/// group's text buffer.
fn group_doc(
    docs: &mut Emitter,
    settings: &FileSettings,
    stream: Stream,
    g: multiline::Group,
    barrier: u64,
    out: &mut Output<'_>,
) -> Vec<u8> {
    if g.lines > 1 {
        out.counts.groups += 1;
        out.counts.lines_joined += u64::from(g.lines - 1);
    }
    let text = Text::Escaped(&g.text);
    let doc = Doc {
        offset: g.offset,
        time: g.time,
        stream: settings.stream(stream),
        text: &text,
        truncated: g.truncated,
        parse_error: None,
        fields: None,
    };
    let parser = (g.lines == 1).then(|| &settings.parsers[stream.index()]);
    docs.emit(doc, parser, &settings.controls, barrier, out);
    g.text
}

/// The time of the first line in `after` that parses (detecting the format if the file's
/// is not known yet).
/// Where in `after` it starts.
fn next_good_time(
    format: Option<Format>,
    after: &[u8],
    reference: i64,
) -> Option<(usize, Timestamp)> {
    let mut at = 0;
    after.split(|&b| b == b'\n').find_map(|l| {
        let start = at;
        at += l.len() + 1;
        parse_line(format.or_else(|| Format::detect(l))?, l, reference)
            .ok()
            .map(|p| (start, p.time))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Encoder;

    const T0: &str = "2024-07-08T03:42:57.";

    fn docker(stream: &str, ms: u32, msg: &str) -> String {
        let log = serde_json::to_string(&format!("{msg}\n")).unwrap();
        format!("{{\"log\":{log},\"stream\":\"{stream}\",\"time\":\"{T0}{ms:03}000000Z\"}}\n")
    }

    /// What a stream's output is collected into.
    #[derive(Default)]
    struct Collected {
        ndjson: Vec<u8>,
        counts: Counts,
        routes: Vec<(FileId, Routes)>,
    }

    impl Collected {
        fn out(&mut self) -> Output<'_> {
            Output {
                ndjson: &mut self.ndjson,
                counts: &mut self.counts,
                routes: &mut self.routes,
            }
        }
    }

    fn stream(mode: multiline::Mode) -> RecordStream {
        stream_at(mode, [0; 2])
    }

    fn stream_at(mode: multiline::Mode, skip: [u64; 2]) -> RecordStream {
        stream_with(mode, skip, Controls::default())
    }

    fn stream_with(mode: multiline::Mode, skip: [u64; 2], controls: Controls) -> RecordStream {
        let file = FileSettings {
            multiline: multiline::Settings {
                mode,
                gap_ns: 200_000_000,
                max_lines: 500,
                max_bytes: 1 << 20,
            },
            parsers: [fields::Parser::None, fields::Parser::None],
            controls,
            format: None,
        };
        let id = FileId::compute("docker:t", b"first");
        RecordStream::new(
            &Settings {
                budget: None,
                max_record_bytes: 1 << 20,
                fields: fields::Options::from_config(&crate::config::FieldsConfig::default())
                    .unwrap(),
            },
            file,
            Encoder::new("t"),
            id,
            &Metadata::default(),
            (None, skip),
        )
    }

    /// Feeds `text` from `from` in pushes of `chunk` lines; returns (id, log) per
    /// document, and the counts.
    fn run(
        s: &mut RecordStream,
        text: &str,
        from: usize,
        chunk: usize,
    ) -> (Vec<(String, String)>, Counts) {
        let mut c = Collected::default();
        let bytes = &text.as_bytes()[from..];
        let mut offset = from;
        let mut lines = bytes.split_inclusive(|&b| b == b'\n').peekable();
        while lines.peek().is_some() {
            let take: Vec<&[u8]> = lines.by_ref().take(chunk).collect();
            let joined = take.concat();
            let mut out = c.out();
            s.push(offset as u64, &joined, Timestamp::EPOCH, &mut out);
            offset += joined.len();
        }
        let mut out = c.out();
        s.finish(&mut out);
        let docs: Vec<(String, String)> = String::from_utf8(c.ndjson)
            .unwrap()
            .lines()
            .collect::<Vec<_>>()
            .chunks(2)
            .map(|p| {
                let a: serde_json::Value = serde_json::from_str(p[0]).unwrap();
                let d: serde_json::Value = serde_json::from_str(p[1]).unwrap();
                (
                    a["create"]["_id"].as_str().unwrap().to_owned(),
                    d["log"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            docs.len() as u64,
            c.counts.docs,
            "the counts count the documents"
        );
        (docs, c.counts)
    }

    /// Pushes `lines` at `offset` and returns each document's index, with the route
    /// histories reported.
    fn indices(s: &mut RecordStream, offset: u64, lines: &str) -> (Vec<String>, Vec<Routes>) {
        let mut c = Collected::default();
        let mut out = c.out();
        s.push(offset, lines.as_bytes(), Timestamp::EPOCH, &mut out);
        let idx = String::from_utf8(c.ndjson)
            .unwrap()
            .lines()
            .step_by(2)
            .map(|a| {
                let a: serde_json::Value = serde_json::from_str(a).unwrap();
                a["create"]["_index"].as_str().unwrap().to_owned()
            })
            .collect();
        (idx, c.routes.into_iter().map(|(_, r)| r).collect())
    }

    /// Garbage with no good line around it takes the file's first-seen time (from its
    /// checkpoint), not the clock: a replay on another day goes to the same index.
    #[test]
    fn garbage_takes_the_first_seen_time_not_the_clock() {
        let mut s = stream(multiline::Mode::Off);
        s.resume_route(Routes::default(), "t".into(), (0, 0));
        let first_seen = Timestamp::parse(b"2024-07-06T10:00:00Z").unwrap();
        s.set_first_seen(first_seen);
        let (idx, _) = indices(&mut s, 0, "garbage\nmore garbage\n");
        assert_eq!(idx, ["t-2024.07.06", "t-2024.07.06"]);
        // Without it (never told), the caller's clock: here the epoch.
        let mut s = stream(multiline::Mode::Off);
        s.resume_route(Routes::default(), "t".into(), (0, 0));
        let (idx, _) = indices(&mut s, 0, "garbage\n");
        assert_eq!(idx, ["t-1970.01.01"]);
    }

    #[test]
    fn a_route_is_settled_by_the_first_record_and_changes_only_past_the_file_length() {
        let line = |ms| docker("stdout", ms, "hello");
        let day = "2024.07.08";
        let mut s = stream(multiline::Mode::Off);
        s.resume_route(Routes::default(), "pending".into(), (0, 0));
        // The selection changes before any record: nothing was decided yet.
        s.set_route("shop".into(), 0);
        let one = line(1);
        let (idx, reported) = indices(&mut s, 0, &one);
        assert_eq!(idx, [format!("shop-{day}")]);
        assert_eq!(reported.len(), 1, "the first route is reported");
        assert_eq!(reported[0].as_slice()[0].from, 0);
        // A change decided when the file was 500 bytes long: records before 500 (read
        // or not) keep the old route, later ones take the new one.
        s.set_route("team".into(), 500);
        let two = line(2);
        let (idx, reported) = indices(&mut s, one.len() as u64, &two);
        assert_eq!(idx, [format!("shop-{day}")]);
        assert_eq!(reported.len(), 1);
        let history = reported[0].clone();
        assert_eq!(history.as_slice()[1].from, 500);
        let (idx, reported) = indices(&mut s, 500, &line(3));
        assert_eq!(idx, [format!("team-{day}")]);
        assert!(reported.is_empty(), "reported once");

        // A restart resumes the history: a replay of the same offsets goes where the
        // first read sent them, whatever the selection says now.
        let mut r = stream(multiline::Mode::Off);
        r.resume_route(history.clone(), "other".into(), (0, 900));
        let (idx, reported) = indices(&mut r, one.len() as u64, &two);
        assert_eq!(idx, [format!("shop-{day}")]);
        assert_eq!(reported[0].as_slice().last().unwrap().from, 900);
        let (idx, _) = indices(&mut r, 500, &line(3));
        assert_eq!(idx, [format!("team-{day}")]);
        let (idx, _) = indices(&mut r, 900, &line(4));
        assert_eq!(idx, [format!("other-{day}")]);

        // Resumed with the route it already has: nothing new to persist.
        let mut same = stream(multiline::Mode::Off);
        same.resume_route(history, "team".into(), (0, 900));
        let (idx, reported) = indices(&mut same, 900, &line(5));
        assert_eq!(idx, [format!("team-{day}")]);
        assert!(reported.is_empty());

        // A checkpoint from before routes (resumed mid-file, no history): what was sent
        // went to the target's own prefix (`t`); a new route applies past the length.
        let mut old = stream(multiline::Mode::Off);
        old.resume_route(Routes::default(), "team".into(), (10, 900));
        let (idx, reported) = indices(&mut old, 10, &line(6));
        assert_eq!(idx, [format!("t-{day}")]);
        let h = reported[0].as_slice();
        assert_eq!(
            (h[0].from, &*h[0].name, h[1].from, &*h[1].name),
            (0, "t", 900, "team")
        );
    }

    #[test]
    fn filters_drop_whole_groups_and_redaction_covers_them() {
        let text = [
            docker("stdout", 1, "GET /healthz kube-probe/1.29"),
            docker(
                "stderr",
                2,
                "ERROR [main] App - login failed password=hunter2",
            ),
            docker("stderr", 2, "java.lang.IllegalStateException: bad"),
            docker("stderr", 3, "\tat a.B.c(B.java:1)"),
            docker("stdout", 4, "GET /orders token AKIAIOSFODNN7EXAMPLE"),
            docker("stdout", 5, "kube-probe again"),
        ]
        .concat();
        let redactor = redact::Redactor::new(
            &["password".into(), "aws_access_key".into()],
            &[],
            redact::Replacement::Text("[REDACTED]".into()),
        )
        .unwrap();
        let controls = Controls {
            filter: Some(Arc::new(
                filter::Filter::new("probes", false, "kube-probe").unwrap(),
            )),
            redact: Some(Arc::new(redactor)),
        };
        let mut all = Vec::new();
        for chunk in [1, 2, 100] {
            let mut s = stream_with(multiline::Mode::Auto, [0; 2], controls.clone());
            let (docs, counts) = run(&mut s, &text, 0, chunk);
            let logs: Vec<&str> = docs.iter().map(|(_, l)| l.as_str()).collect();
            assert_eq!(
                logs,
                [
                    "ERROR [main] App - login failed password=[REDACTED]\njava.lang.IllegalStateException: bad\n\tat a.B.c(B.java:1)",
                    "GET /orders token [REDACTED]",
                ]
            );
            assert_eq!(counts.dropped.iter().collect::<Vec<_>>(), [("probes", 2)]);
            assert_eq!(counts.redactions.total(), 2);
            assert_eq!(counts.lines, 6);
            assert_eq!(
                s.held().pending,
                None,
                "a dropped record holds nothing back"
            );
            all.push(docs);
        }
        assert!(
            all.windows(2).all(|w| w[0] == w[1]),
            "ids do not depend on reads"
        );
    }

    /// A Java trace on stderr while access lines go to stdout, as the runtimes write them.
    fn interleaved() -> String {
        [
            docker("stdout", 1, "GET /a 200"),
            docker("stderr", 2, "ERROR [main] App - request failed"),
            docker("stderr", 2, "java.lang.IllegalStateException: bad"),
            docker("stdout", 3, "GET /b 200"),
            docker("stderr", 3, "\tat a.B.c(B.java:1)"),
            docker("stderr", 3, "\tat a.B.d(B.java:2)"),
            docker("stdout", 4, "GET /c 500"),
            docker("stderr", 5, "INFO [main] App - next"),
            docker("stdout", 6, "GET /d 200"),
        ]
        .concat()
    }

    /// Documents waiting behind a group when the file is excluded are not lost: they
    /// were decided before the exclusion, and go out with the next lines read.
    #[test]
    fn an_exclusion_releases_the_documents_waiting_behind_a_group() {
        let text = [
            docker("stderr", 2, "java.lang.IllegalStateException: bad"),
            docker("stdout", 3, "GET /b 200"),
            docker("stdout", 4, "GET /c 200"),
        ]
        .concat();
        let mut s = stream(multiline::Mode::Auto);
        let mut c = Collected::default();
        let mut out = c.out();
        s.push(0, text.as_bytes(), Timestamp::EPOCH, &mut out);
        assert_eq!(
            out.counts.docs, 0,
            "the stdout lines wait behind the open trace"
        );
        assert!(s.held().pending.is_some());
        s.set_excluded(true);
        let more = docker("stdout", 5, "GET /d 200");
        s.push(
            text.len() as u64,
            more.as_bytes(),
            Timestamp::EPOCH,
            &mut out,
        );
        assert_eq!(out.counts.docs, 2, "both waiting documents went out");
        assert_eq!(out.counts.excluded_lines, 1);
        assert_eq!(s.held().pending, None);
        let logs: Vec<String> = String::from_utf8(c.ndjson)
            .unwrap()
            .lines()
            .skip(1)
            .step_by(2)
            .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap()["log"].to_string())
            .collect();
        assert_eq!(logs, ["\"GET /b 200\"", "\"GET /c 200\""]);
    }

    #[test]
    fn a_trace_is_one_document_in_file_order_with_the_first_lines_id() {
        let text = interleaved();
        let (docs, counts) = run(&mut stream(multiline::Mode::Auto), &text, 0, 100);
        let logs: Vec<&str> = docs.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            logs,
            [
                "GET /a 200",
                "ERROR [main] App - request failed\njava.lang.IllegalStateException: bad\n\tat a.B.c(B.java:1)\n\tat a.B.d(B.java:2)",
                "GET /b 200",
                "GET /c 500",
                "INFO [main] App - next",
                "GET /d 200",
            ]
        );
        let second_line = text.find("{\"log\":\"ERROR").unwrap() as u64;
        let id = FileId::compute("docker:t", b"first").record_id(second_line);
        assert_eq!(docs[1].0.as_bytes(), &id[..]);
        assert_eq!(
            (counts.groups, counts.lines_joined, counts.lines),
            (1, 3, 9)
        );
        let (off, _) = run(&mut stream(multiline::Mode::Off), &text, 0, 100);
        assert_eq!(off.len(), 9, "off: one document per line");
    }

    /// Group boundaries depend only on the bytes: any way of reading them, and a restart
    /// from any checkpoint the stream reported, give the same documents under the same ids.
    #[test]
    fn groups_do_not_depend_on_reads_or_restarts() {
        let text = interleaved();
        let (whole, _) = run(&mut stream(multiline::Mode::Auto), &text, 0, 100);
        for chunk in 1..=4 {
            let (docs, _) = run(&mut stream(multiline::Mode::Auto), &text, 0, chunk);
            assert_eq!(docs, whole, "read {chunk} lines at a time");
        }
        // Every checkpoint the stream would report, line by line; a restart from it
        // makes exactly the documents of the whole run that were not made before it,
        // under the same ids.
        let mut s = stream(multiline::Mode::Auto);
        let mut offset = 0;
        let mut made = Vec::new();
        let mut counts = Counts::default();
        for line in text.split_inclusive('\n') {
            let mut out = Output {
                ndjson: &mut made,
                counts: &mut counts,
                routes: &mut Vec::new(),
            };
            s.push(offset as u64, line.as_bytes(), Timestamp::EPOCH, &mut out);
            offset += line.len();
            let held = s.held();
            let from = held.pending.map_or(offset, |(o, _)| o as usize);
            let skip = held.streams.map(|o| o.unwrap_or(offset as u64));
            let (after, _) = run(
                &mut stream_at(multiline::Mode::Auto, skip),
                &text,
                from,
                100,
            );
            let before = String::from_utf8(made.clone()).unwrap().lines().count() / 2;
            let mut rebuilt = whole[..before].to_vec();
            rebuilt.extend(after);
            let (mut a, mut b) = (rebuilt.clone(), whole.clone());
            a.sort();
            b.sort();
            assert_eq!(a, b, "restart at {from} {skip:?} after {offset}");
        }
    }

    #[test]
    fn a_group_spans_docker_partials() {
        let long_frame = format!("\tat a.B.c({}.java:1)", "x".repeat(40_000));
        let mut text = docker("stderr", 1, "java.lang.Error: x");
        // dockerd's split: chunks without the trailing newline, then the last one.
        let log = format!("{long_frame}\n");
        let (a, b) = log.split_at(16_384);
        for (piece, end) in [(a, false), (b, true)] {
            let l = serde_json::to_string(piece).unwrap();
            let _ = end;
            text += &format!("{{\"log\":{l},\"stream\":\"stderr\",\"time\":\"{T0}001000000Z\"}}\n");
        }
        text += &docker("stderr", 2, "\tat a.B.d(B.java:2)");
        let (docs, counts) = run(&mut stream(multiline::Mode::Auto), &text, 0, 1);
        assert_eq!(docs.len(), 1);
        assert_eq!(
            docs[0].1,
            format!("java.lang.Error: x\n{long_frame}\n\tat a.B.d(B.java:2)")
        );
        assert_eq!(counts.partials_merged, 1);
    }

    #[test]
    fn a_group_spans_cri_partial_lines() {
        let cri = |ms: u32, stream: &str, tag: &str, msg: &str| {
            format!("{T0}{ms:03}000000Z {stream} {tag} {msg}\n")
        };
        let text = [
            cri(1, "stderr", "F", "Traceback (most recent call last):"),
            cri(1, "stderr", "P", "  File \"/app/a.py\", line 3, in "),
            cri(1, "stdout", "F", "GET / 200"),
            cri(1, "stderr", "F", "<module>"),
            cri(1, "stderr", "F", "ValueError: bad"),
            cri(2, "stderr", "F", "INFO done"),
        ]
        .concat();
        let (docs, counts) = run(&mut stream(multiline::Mode::Auto), &text, 0, 1);
        let logs: Vec<&str> = docs.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            logs,
            [
                "Traceback (most recent call last):\n  File \"/app/a.py\", line 3, in <module>\nValueError: bad",
                "GET / 200",
                "INFO done"
            ]
        );
        assert_eq!(
            (counts.partials_merged, counts.groups, counts.lines_joined),
            (1, 1, 2)
        );
    }

    #[test]
    fn the_clock_closes_a_trace_only_at_the_end_of_the_file() {
        let text = [
            docker("stderr", 1, "java.lang.Error: x"),
            docker("stderr", 1, "\tat a.B.c(B.java:1)"),
        ]
        .concat();
        let mut s = stream(multiline::Mode::Auto);
        let mut c = Collected::default();
        let mut out = c.out();
        s.push(0, text.as_bytes(), Timestamp::EPOCH, &mut out);
        assert_eq!(s.next_deadline(), None, "not at the end yet");
        let last = Timestamp::parse(format!("{T0}001000000Z").as_bytes()).unwrap();
        s.at_end(
            Timestamp::from_unix_nanos(last.unix_nanos() + 100_000_000),
            &mut out,
        );
        assert_eq!(out.counts.docs, 0, "within the gap: still open");
        assert_eq!(s.next_deadline(), Some(last.unix_nanos() + 200_000_001));
        assert_eq!(s.held().pending.map(|p| p.0), Some(0));
        s.at_end(
            Timestamp::from_unix_nanos(last.unix_nanos() + 250_000_000),
            &mut out,
        );
        assert_eq!(out.counts.docs, 1);
        assert_eq!(s.held().pending, None);
    }

    #[test]
    fn only_a_line_that_may_introduce_a_trace_is_held() {
        let mut s = stream(multiline::Mode::Auto);
        let mut c = Collected::default();
        let mut out = c.out();
        let plain = docker("stdout", 1, "GET /healthz 200 0.2ms");
        s.push(0, plain.as_bytes(), Timestamp::EPOCH, &mut out);
        assert_eq!(out.counts.docs, 1, "nothing can join an ordinary line");
        assert_eq!(s.held().pending, None);
        for (i, text) in [
            "ERROR c.a.Orders - failed",
            "request failed: connection refused error",
            "http: panic serving 10.0.0.1:80",
        ]
        .into_iter()
        .enumerate()
        {
            let mut s = stream(multiline::Mode::Auto);
            let line = docker("stdout", 1, text);
            s.push(100, line.as_bytes(), Timestamp::EPOCH, &mut out);
            assert_eq!(
                out.counts.docs,
                1 + i as u64,
                "{text} waits for its next line"
            );
            assert_eq!(s.held().pending.map(|p| p.0), Some(100), "{text}");
            s.finish(&mut out);
            assert_eq!(out.counts.docs, 2 + i as u64, "{text}");
        }
    }

    #[test]
    fn a_later_line_of_the_other_stream_closes_a_stale_group() {
        let text = [
            docker("stderr", 1, "ERROR x - boom"),
            docker("stdout", 500, "ERROR much later, other stream"),
        ]
        .concat();
        let mut s = stream(multiline::Mode::Auto);
        let mut c = Collected::default();
        let mut out = c.out();
        s.push(0, text.as_bytes(), Timestamp::EPOCH, &mut out);
        assert_eq!(out.counts.docs, 1, "the stderr group closed: 499 ms > gap");
        let second = text.find('\n').unwrap() as u64 + 1;
        assert_eq!(s.held().pending.map(|p| p.0), Some(second));
    }
}
