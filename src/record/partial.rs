//! Reassembly of records split over several lines.
//!
//! Docker splits messages longer than 16 KiB into lines whose `log` lacks the trailing
//! `\n`; CRI runtimes tag such chunks `P`. One record may span any number of chunks, and
//! the two streams of a container interleave in one file, so there is one pending record
//! per stream.
//!
//! A record is capped at `cap` bytes of message (as JSON string content for Docker, raw
//! bytes for CRI): the rest of its chunks are read and dropped, and the record is flagged
//! `truncated`. It is never dropped whole.
//!
//! While a record is pending, its first chunk's offset is where a restart must resume, so
//! [`Merger::resume_point`] reports it for checkpoints.
//!
//! **Memory.** What pending records hold across every file is bounded by a
//! [`MemoryBudget`]: a record that grows while the budget is spent is released from memory
//! (its later chunks are read and not kept), and when its last chunk comes the merger
//! [`halts`](Merger::halted): the caller reads the file again from the record's first
//! chunk, as a restart from a checkpoint would, and this time keeps it whole. Record
//! boundaries, contents and ids never depend on memory pressure.

use super::parse::{Line, Stream, Text, Timestamp};
use crate::encode::escaped;

/// One reassembled record, borrowing either the line it came from or the merger's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged<'a> {
    /// Offset of the record's first byte in the file (its first chunk).
    pub offset: u64,
    pub time: Timestamp,
    pub stream: Stream,
    pub text: Text<'a>,
    pub truncated: bool,
    /// Physical lines this record was made of (1 when it was not split).
    pub chunks: u32,
    /// The file's last good timestamp before the record's first chunk.
    pub time_before: Option<Timestamp>,
}

/// Bytes all pending records may hold together (shared by every file's merger).
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: std::sync::atomic::AtomicUsize,
    /// Records released from memory to be read again.
    released: std::sync::atomic::AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            limit,
            used: Default::default(),
            released: Default::default(),
        }
    }

    /// Bytes pending records hold now.
    pub fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records released from memory (and read again) so far.
    pub fn released(&self) -> u64 {
        self.released.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn charge(&self, n: usize) {
        self.used.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn refund(&self, n: usize) {
        self.used.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn spent(&self) -> bool {
        self.used() > self.limit
    }
}

#[derive(Debug, Default)]
struct Pending {
    active: bool,
    /// Released from memory: later chunks are not kept; the record is read again.
    released: bool,
    /// Bytes of `buf` charged to the budget.
    charged: usize,
    offset: u64,
    time: Option<Timestamp>,
    /// The file's last good timestamp before this record began (for checkpoints).
    time_before: Option<Timestamp>,
    buf: Vec<u8>,
    /// `buf` holds JSON string content (true) or raw bytes (false).
    escaped: bool,
    truncated: bool,
    chunks: u32,
}

/// A finished record's buffer is kept for the next one up to this size.
const KEEP_BYTES: usize = 64 * 1024;

/// Per-file partial-line state.
#[derive(Debug)]
pub struct Merger {
    cap: usize,
    pending: [Pending; 2],
    budget: Option<std::sync::Arc<MemoryBudget>>,
    /// Records starting before this offset are kept whole whatever the budget (they
    /// are being read again after a release).
    exempt_below: u64,
    /// A released record's last chunk came: the file must be read again from
    /// [`Merger::resume_point`].
    halted: bool,
}

impl Drop for Merger {
    fn drop(&mut self) {
        for p in &mut self.pending {
            self.budget.iter().for_each(|b| b.refund(p.charged));
            p.charged = 0;
        }
    }
}

impl Merger {
    pub fn new(cap: usize) -> Merger {
        Merger {
            cap,
            pending: Default::default(),
            budget: None,
            exempt_below: 0,
            halted: false,
        }
    }

    /// A merger whose pending records count against `budget`; those that start before
    /// `exempt_below` do not (they are read again after a release).
    pub fn with_budget(
        mut self,
        budget: std::sync::Arc<MemoryBudget>,
        exempt_below: u64,
    ) -> Merger {
        self.budget = Some(budget);
        self.exempt_below = exempt_below;
        self
    }

    /// Whether a pending record was released from memory.
    pub fn holds_released(&self) -> bool {
        self.pending.iter().any(|p| p.active && p.released)
    }

    /// Records starting before `below` are kept whole whatever the budget.
    pub fn exempt_below(&mut self, below: u64) {
        self.exempt_below = below;
    }

    /// A released record is complete in the file: nothing more may be pushed; the file
    /// is to be read again from [`Merger::resume_point`].
    pub fn halted(&self) -> bool {
        self.halted
    }

    /// Feeds one parsed line found at `offset`. Returns the record it completes, if any.
    /// `time_before` is the file's last good timestamp before this line.
    pub fn push<'a>(
        &'a mut self,
        offset: u64,
        line: Line<'a>,
        time_before: Option<Timestamp>,
    ) -> Option<Merged<'a>> {
        let cap = self.cap;
        let budget = self.budget.as_deref();
        let exempt_below = self.exempt_below;
        let p = &mut self.pending[line.stream.index()];
        if !p.active && !line.partial {
            // The common case: a whole record on one line, borrowed as is.
            let (text, truncated) = cap_text(line.text, cap);
            return Some(Merged {
                offset,
                time: line.time,
                stream: line.stream,
                text,
                truncated,
                chunks: 1,
                time_before,
            });
        }
        if !p.active {
            if p.buf.capacity() > KEEP_BYTES {
                p.buf = Vec::new();
            }
            p.active = true;
            p.released = false;
            p.offset = offset;
            p.time = Some(line.time);
            p.time_before = time_before;
            p.buf.clear();
            p.escaped = !matches!(line.text, Text::Raw(_));
            p.truncated = false;
            p.chunks = 0;
        }
        p.chunks += 1;
        if !p.released {
            p.append(&line.text, cap);
            if let Some(b) = budget {
                b.charge(p.buf.len() - p.charged);
                p.charged = p.buf.len();
                if line.partial && p.offset >= exempt_below && b.spent() {
                    // Over budget: this record is read again when complete.
                    b.refund(p.charged);
                    p.charged = 0;
                    p.buf = Vec::new();
                    p.released = true;
                    b.released
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        if line.partial {
            return None;
        }
        if p.released {
            // Complete, but not in memory: the caller reads it again (`halted`). It
            // stays pending, so the resume point keeps its first chunk.
            self.halted = true;
            return None;
        }
        p.active = false;
        budget.iter().for_each(|b| b.refund(p.charged));
        p.charged = 0;
        Some(p.take(line.stream))
    }

    /// Ends every pending record (the file is closing, or a dry-run reached its end) and
    /// returns them in file order. A released record is not in memory: it stays pending
    /// and the merger halts (the caller reads it again first).
    pub fn flush(&mut self) -> Vec<Merged<'_>> {
        if self.pending.iter().any(|p| p.active && p.released) {
            self.halted = true;
            return Vec::new();
        }
        let [a, b] = &mut self.pending;
        let mut out: Vec<Merged<'_>> = [(a, Stream::Stdout), (b, Stream::Stderr)]
            .into_iter()
            .filter(|(p, _)| p.active)
            .map(|(p, stream)| {
                p.active = false;
                self.budget.iter().for_each(|b| b.refund(p.charged));
                p.charged = 0;
                p.take(stream)
            })
            .collect();
        out.sort_by_key(|m| m.offset);
        out
    }

    /// Gives back the memory of records that grew large, once they are done: a file
    /// that once had a 4 MiB record does not keep 4 MiB after it.
    pub fn shrink(&mut self) {
        for p in self.pending.iter_mut().filter(|p| !p.active) {
            if p.buf.capacity() > KEEP_BYTES {
                p.buf = Vec::new();
            }
        }
    }

    /// Drops all pending state (the file was truncated).
    pub fn reset(&mut self) {
        for p in &mut self.pending {
            self.budget.iter().for_each(|b| b.refund(p.charged));
            p.charged = 0;
            p.active = false;
            p.released = false;
            p.buf = Vec::new();
        }
        self.halted = false;
    }

    /// Where a restart must resume so that no pending record loses its first chunks:
    /// the earliest pending record's first offset, with the timestamp before it.
    pub fn resume_point(&self) -> Option<(u64, Option<Timestamp>)> {
        self.pending
            .iter()
            .filter(|p| p.active)
            .map(|p| (p.offset, p.time_before))
            .min_by_key(|(offset, _)| *offset)
    }

    /// The first offset of `stream`'s pending record, if it has one.
    pub fn pending_offset(&self, stream: Stream) -> Option<u64> {
        let p = &self.pending[stream.index()];
        p.active.then_some(p.offset)
    }

    /// The size cap of a record's message.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Bytes held by pending records.
    pub fn pending_bytes(&self) -> usize {
        self.pending.iter().map(|p| p.buf.len()).sum()
    }
}

impl Pending {
    fn append(&mut self, text: &Text<'_>, cap: usize) {
        if self.escaped {
            if let Text::Raw(raw) = text {
                let mut tmp = Vec::with_capacity(raw.len());
                escaped::escape_into(&mut tmp, raw);
                self.append_escaped(&tmp, cap);
            } else if let Text::Owned(s) = text {
                let mut tmp = Vec::with_capacity(s.len());
                escaped::escape_into(&mut tmp, s.as_bytes());
                self.append_escaped(&tmp, cap);
            } else if let Text::Escaped(e) = text {
                self.append_escaped(e, cap);
            }
            return;
        }
        match text {
            Text::Raw(raw) => self.append_raw(raw, cap),
            // A JSON chunk in a raw record cannot happen with one format per file; if it
            // does, switch the record to escaped content rather than lose anything.
            other => {
                let raw = std::mem::take(&mut self.buf);
                escaped::escape_into(&mut self.buf, &raw);
                self.escaped = true;
                self.append(other, cap);
            }
        }
    }

    fn append_escaped(&mut self, e: &[u8], cap: usize) {
        if self.truncated {
            return;
        }
        let room = cap.saturating_sub(self.buf.len());
        let take = escaped::safe_prefix(e, room);
        self.buf.extend_from_slice(&e[..take]);
        self.truncated = take < e.len();
    }

    fn append_raw(&mut self, raw: &[u8], cap: usize) {
        if self.truncated {
            return;
        }
        let room = cap.saturating_sub(self.buf.len());
        if raw.len() <= room {
            self.buf.extend_from_slice(raw);
        } else {
            self.buf.extend_from_slice(&raw[..room]);
            let keep = utf8_floor(&self.buf, self.buf.len());
            self.buf.truncate(keep);
            self.truncated = true;
        }
    }

    fn take(&mut self, stream: Stream) -> Merged<'_> {
        let text = if self.escaped {
            Text::Escaped(&self.buf)
        } else {
            Text::Raw(&self.buf)
        };
        Merged {
            offset: self.offset,
            time: self.time.unwrap_or(Timestamp::EPOCH),
            stream,
            text,
            truncated: self.truncated,
            chunks: self.chunks,
            time_before: self.time_before,
        }
    }
}

/// Applies the cap to a single-line record.
pub fn cap_text(text: Text<'_>, cap: usize) -> (Text<'_>, bool) {
    match text {
        Text::Escaped(e) if e.len() > cap => {
            (Text::Escaped(&e[..escaped::safe_prefix(e, cap)]), true)
        }
        Text::Raw(r) if r.len() > cap => (Text::Raw(&r[..utf8_floor(r, cap)]), true),
        Text::Owned(mut s) if s.len() > cap => {
            let mut end = cap;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            (Text::Owned(s), true)
        }
        other => (other, false),
    }
}

/// The largest `n <= at` such that `s[..n]` does not end inside a UTF-8 sequence that
/// `s[n..]` would have completed.
fn utf8_floor(s: &[u8], at: usize) -> usize {
    let at = at.min(s.len());
    // Walk back over at most three continuation bytes to the lead byte.
    let mut lead = at;
    while lead > 0 && at - lead < 4 && (s[lead - 1] & 0xC0) == 0x80 {
        lead -= 1;
    }
    if lead > 0 && at - lead < 4 {
        let need = escaped::utf8_len(s[lead - 1]);
        if need > 1 && lead - 1 + need > at {
            return lead - 1;
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s.as_bytes()).unwrap()
    }

    fn line(stream: Stream, partial: bool, text: Text<'_>) -> Line<'_> {
        Line {
            time: t("2024-07-08T03:42:57Z"),
            stream,
            partial,
            text,
        }
    }

    #[test]
    fn whole_lines_pass_through_borrowed() {
        let mut m = Merger::new(100);
        let out = m
            .push(7, line(Stream::Stdout, false, Text::Escaped(b"abc")), None)
            .unwrap();
        assert_eq!(out.text, Text::Escaped(b"abc"));
        assert_eq!((out.offset, out.chunks, out.truncated), (7, 1, false));
        assert_eq!(m.resume_point(), None);
    }

    /// A big record's buffer goes once it is done; a small one's is kept for reuse.
    #[test]
    fn a_big_record_gives_its_memory_back() {
        let mut m = Merger::new(1 << 20);
        let chunk = vec![b'x'; 16 * 1024];
        for i in 0..20u64 {
            m.push(i, line(Stream::Stdout, true, Text::Raw(&chunk)), None);
        }
        let out = m.push(20, line(Stream::Stdout, false, Text::Raw(b"!")), None);
        assert_eq!(out.unwrap().chunks, 21);
        assert!(m.pending[0].buf.capacity() > KEEP_BYTES);
        m.shrink();
        assert_eq!(m.pending[0].buf.capacity(), 0);
        m.push(30, line(Stream::Stdout, true, Text::Raw(b"ab")), None);
        m.push(31, line(Stream::Stdout, false, Text::Raw(b"c")), None);
        m.shrink();
        assert!(m.pending[0].buf.capacity() > 0, "a small buffer is kept");
    }

    #[test]
    fn chunks_merge_across_any_number_of_lines() {
        let mut m = Merger::new(1 << 20);
        for i in 0..50u64 {
            assert!(m
                .push(
                    100 + i * 10,
                    line(Stream::Stdout, true, Text::Raw(b"ab")),
                    None
                )
                .is_none());
            assert_eq!(m.resume_point().map(|r| r.0), Some(100));
        }
        let out = m
            .push(999, line(Stream::Stdout, false, Text::Raw(b"!")), None)
            .unwrap();
        assert_eq!(
            out.text,
            Text::Raw(&[b"ab".repeat(50), b"!".to_vec()].concat())
        );
        assert_eq!((out.offset, out.chunks), (100, 51));
        assert_eq!(m.resume_point(), None);
    }

    #[test]
    fn streams_interleave() {
        let mut m = Merger::new(100);
        let before = Some(t("2024-07-08T00:00:00Z"));
        assert!(m
            .push(
                0,
                line(Stream::Stdout, true, Text::Escaped(b"out1 ")),
                before
            )
            .is_none());
        let err = m
            .push(10, line(Stream::Stderr, false, Text::Escaped(b"err")), None)
            .unwrap();
        assert_eq!((err.offset, err.text), (10, Text::Escaped(&b"err"[..])));
        assert_eq!(m.resume_point(), Some((0, before)));
        let out = m
            .push(
                20,
                line(Stream::Stdout, false, Text::Escaped(b"out2")),
                None,
            )
            .unwrap();
        assert_eq!(
            (out.offset, out.text),
            (0, Text::Escaped(&b"out1 out2"[..]))
        );
    }

    #[test]
    fn cap_truncates_and_flags() {
        let mut m = Merger::new(5);
        assert!(m
            .push(0, line(Stream::Stdout, true, Text::Raw(b"abcd")), None)
            .is_none());
        assert!(m
            .push(5, line(Stream::Stdout, true, Text::Raw(b"efgh")), None)
            .is_none());
        let out = m
            .push(9, line(Stream::Stdout, false, Text::Raw(b"ijkl")), None)
            .unwrap();
        assert_eq!(out.text, Text::Raw(b"abcde"));
        assert!(out.truncated);
        let out = m
            .push(
                20,
                line(Stream::Stdout, false, Text::Escaped(br"ab\ncd")),
                None,
            )
            .unwrap();
        assert_eq!(
            (out.text, out.truncated),
            (Text::Escaped(&br"ab\nc"[..]), true)
        );
        let mut m3 = Merger::new(3);
        let out = m3
            .push(
                25,
                line(Stream::Stdout, false, Text::Escaped(br"ab\ncd")),
                None,
            )
            .unwrap();
        assert_eq!(
            (out.text, out.truncated),
            (Text::Escaped(&b"ab"[..]), true),
            "never cut inside an escape"
        );
        let out = m
            .push(
                30,
                line(Stream::Stdout, false, Text::Raw("abcdé".as_bytes())),
                None,
            )
            .unwrap();
        assert_eq!((out.text, out.truncated), (Text::Raw(&b"abcd"[..]), true));
        let out = m
            .push(
                40,
                line(Stream::Stdout, false, Text::Raw("abcé".as_bytes())),
                None,
            )
            .unwrap();
        assert_eq!(
            (out.text, out.truncated),
            (Text::Raw("abcé".as_bytes()), false)
        );
    }

    #[test]
    fn raw_chunks_split_inside_a_character_are_rejoined() {
        let mut m = Merger::new(100);
        let s = "é".as_bytes();
        assert!(m
            .push(0, line(Stream::Stdout, true, Text::Raw(&s[..1])), None)
            .is_none());
        let out = m
            .push(5, line(Stream::Stdout, false, Text::Raw(&s[1..])), None)
            .unwrap();
        assert_eq!(out.text, Text::Raw(s));
    }

    #[test]
    fn flush_returns_unterminated_records_in_file_order() {
        let mut m = Merger::new(100);
        assert!(m
            .push(50, line(Stream::Stderr, true, Text::Raw(b"e")), None)
            .is_none());
        assert!(m
            .push(10, line(Stream::Stdout, true, Text::Raw(b"o")), None)
            .is_none());
        let out = m.flush();
        assert_eq!(
            out.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![10, 50]
        );
        drop(out);
        assert_eq!(m.resume_point(), None);
        assert!(m.flush().is_empty());
    }

    #[test]
    fn utf8_floor_cases() {
        let s = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        assert_eq!(utf8_floor(s, 1), 1);
        assert_eq!(utf8_floor(s, 2), 1);
        assert_eq!(utf8_floor(s, 3), 3);
        assert_eq!(utf8_floor(s, 5), 3);
        assert_eq!(utf8_floor(s, 6), 6);
        assert_eq!(utf8_floor(s, 9), 6);
        assert_eq!(utf8_floor(s, 10), 10);
        assert_eq!(utf8_floor(b"\x80\x80\x80\x80\x80", 3), 3);
    }
}
