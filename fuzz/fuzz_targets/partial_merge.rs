//! `shipper::parse::partial::Merger` against a model.
//!
//! Input: byte 0 picks the cap (0..=96 bytes); then a sequence of operations, each a
//! header byte `h` and, for pushes, a chunk:
//!   - `h & 1`: stream (stdout/stderr), `h & 2`: partial,
//!   - `h >> 2` in 0..=61: push a `Text::Raw` chunk of that many following bytes,
//!   - `h >> 2 == 62`: `reset()`, `h >> 2 == 63`: `flush()`.
//!
//! The model keeps the raw chunks of each stream's pending record. Every emitted record
//! must be the model's concatenation cut to at most `cap` bytes (at the last character
//! boundary when the bytes are valid UTF-8, at most 3 bytes short otherwise), with
//! `truncated` set iff something was cut, and the first chunk's offset, time and
//! `time_before`; `resume_point()` is the earliest pending record's; `flush()` returns
//! the leftovers in offset order.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shipper::parse::partial::{Merged, Merger};
use shipper::parse::{Line, Stream, Text, Timestamp};
use std::sync::OnceLock;

#[derive(Debug)]
struct Pending {
    offset: u64,
    time: Timestamp,
    time_before: Option<Timestamp>,
    bytes: Vec<u8>,
    chunks: u32,
}

/// A distinct timestamp per operation (they repeat every 1000 operations).
fn time(i: usize) -> Timestamp {
    static TIMES: OnceLock<Vec<Timestamp>> = OnceLock::new();
    TIMES.get_or_init(|| {
        (0..1000)
            .map(|n| Timestamp::parse(format!("2024-07-08T03:42:57.{n:03}Z").as_bytes()).unwrap())
            .collect()
    })[i % 1000]
}

fn stream_of(i: usize) -> Stream {
    [Stream::Stdout, Stream::Stderr][i]
}

fn check(got: &Merged<'_>, want: &Pending, stream: Stream, cap: usize) {
    assert_eq!(got.offset, want.offset, "offset of {want:?}");
    assert_eq!(got.time, want.time, "time of {want:?}");
    assert_eq!(got.stream, stream);
    assert_eq!(got.chunks, want.chunks, "chunks of {want:?}");
    let Text::Raw(out) = got.text else {
        panic!("raw chunks merged into {:?}", got.text);
    };
    let all = &want.bytes[..];
    if all.len() <= cap {
        assert_eq!(out, all, "uncut record, cap {cap}");
        assert!(!got.truncated, "flagged truncated but nothing was cut");
        return;
    }
    assert!(got.truncated, "cut but not flagged: {all:?} cap {cap}");
    assert!(all.starts_with(out), "not a prefix: {out:?} of {all:?}");
    assert!(out.len() <= cap, "{} bytes over cap {cap}", out.len());
    if let Ok(s) = std::str::from_utf8(all) {
        let mut end = cap;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        assert_eq!(out.len(), end, "cut {s:?} at {} with cap {cap}", out.len());
    } else {
        assert!(
            out.len() + 3 >= cap,
            "cut {} bytes short of cap {cap}",
            cap - out.len()
        );
    }
}

fn resume_point(model: &[Option<Pending>; 2]) -> Option<(u64, Option<Timestamp>)> {
    model
        .iter()
        .flatten()
        .map(|p| (p.offset, p.time_before))
        .min_by_key(|r| r.0)
}

fn flush(m: &mut Merger, model: &mut [Option<Pending>; 2], cap: usize) {
    let got = m.flush();
    let mut want: Vec<(Stream, Pending)> = model
        .iter_mut()
        .enumerate()
        .filter_map(|(i, p)| Some((stream_of(i), p.take()?)))
        .collect();
    want.sort_by_key(|(_, p)| p.offset);
    assert_eq!(
        got.len(),
        want.len(),
        "flush returned {got:?}, model {want:?}"
    );
    for (g, (stream, w)) in got.iter().zip(&want) {
        check(g, w, *stream, cap);
    }
    drop(got);
    assert_eq!(m.resume_point(), None, "pending after flush");
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let cap = usize::from(first) % 97;
    let mut m = Merger::new(cap);
    assert_eq!(m.cap(), cap);
    let mut model: [Option<Pending>; 2] = [None, None];
    let mut offset = 0u64;
    let mut prev_time = None;
    let mut i = 0;
    while let Some((&h, tail)) = rest.split_first() {
        rest = tail;
        i += 1;
        let s = usize::from(h & 1);
        let partial = h & 2 != 0;
        match h >> 2 {
            62 => {
                m.reset();
                model = [None, None];
            }
            63 => flush(&mut m, &mut model, cap),
            n => {
                let n = usize::from(n).min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                let stream = stream_of(s);
                let t = time(i);
                let line = Line {
                    time: t,
                    stream,
                    partial,
                    text: Text::Raw(chunk),
                };
                let at = offset;
                offset += 1 + n as u64;
                let pending = model[s].get_or_insert_with(|| Pending {
                    offset: at,
                    time: t,
                    time_before: prev_time,
                    bytes: Vec::new(),
                    chunks: 0,
                });
                pending.bytes.extend_from_slice(chunk);
                pending.chunks += 1;
                let got = m.push(at, line, prev_time);
                if partial {
                    assert!(got.is_none(), "a partial chunk completed {got:?}");
                } else {
                    let want = model[s].take().unwrap();
                    check(
                        &got.expect("a final chunk completed nothing"),
                        &want,
                        stream,
                        cap,
                    );
                }
                prev_time = Some(t);
            }
        }
        assert_eq!(m.resume_point(), resume_point(&model), "resume point");
    }
    flush(&mut m, &mut model, cap);
});
