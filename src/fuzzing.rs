//! The invariants the fuzz targets in `fuzz/` check, one function per target, each
//! taking the fuzzer's raw input. They live in the crate so that `cargo test` replays
//! every committed seed and regression input through exactly the same checks
//! (`tests/fuzz_replay.rs`): a regression of a fixed fuzz crash fails CI without
//! cargo-fuzz. A violated invariant panics: that is the check. So every `expect` and
//! `unwrap` here states a property of the code under test (or of a constant input),
//! with its reason; none guards the fuzzer's input, which every target takes as it is.

use crate::encode::{Doc, Encoder, FileContext, Level, Stream, Text};
use crate::ids::{FileId, RECORD_ID_LEN};
use crate::record::parse::Line;
use crate::record::partial::{Merged, Merger};
use crate::timestamp::Timestamp;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::OnceLock;

/// A fuzz target's check.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name (the names of `fuzz/fuzz_targets/*.rs`).
pub const TARGETS: &[(&str, Check)] = &[
    ("docker_parse", docker_parse),
    ("cri_parse", cri_parse),
    ("partial_merge", partial_merge),
    ("checkpoint_decode", checkpoint_decode),
    ("timestamp_parse", timestamp_parse),
    ("index_date_format", index_date_format),
    ("buffer_frames", buffer_frames),
    ("bulk_response", bulk_response),
    ("multiline_group", multiline_group),
    ("field_parse", field_parse),
    ("redaction", redaction),
    ("index_route", index_route),
    ("rotated_gzip", rotated_gzip),
    ("plain_lines", plain_lines),
    ("journal_file", journal_file),
];

/// The encoder and file context every target encodes with.
fn encoder() -> &'static (Encoder, FileContext) {
    static ENC: OnceLock<(Encoder, FileContext)> = OnceLock::new();
    ENC.get_or_init(|| {
        (
            Encoder::new("logstash"),
            FileContext {
                id: FileId::compute("docker:x", b"l"),
                meta: Vec::new(),
                level: Level::Partial,
                heads: Vec::new(),
            },
        )
    })
}

/// Encodes one record and checks the bulk framing: exactly two NDJSON lines, both valid
/// JSON, with the action pointing at the record's daily index and a 22-character `_id`,
/// and the document carrying the record's timestamp and stream. Returns the document.
pub fn encode_checked(time: Timestamp, stream: Stream, text: &Text<'_>, offset: u64) -> Value {
    let (enc, ctx) = encoder();
    let doc = Doc {
        offset,
        time,
        stream: Some(stream),
        text,
        truncated: false,
        parse_error: None,
        fields: None,
    };
    let mut out = Vec::new();
    enc.encode(&mut out, ctx, &doc);
    let body = out
        .strip_suffix(b"\n")
        .expect("encoded record does not end with a newline");
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    assert_eq!(
        lines.len(),
        2,
        "encoded record is not two lines: {:?}",
        String::from_utf8_lossy(&out)
    );
    let parse = |what: &str, line: &[u8]| -> Value {
        serde_json::from_slice(line).unwrap_or_else(|e| {
            panic!(
                "{what} line is not valid JSON ({e}): {:?}",
                String::from_utf8_lossy(line)
            )
        })
    };
    let action = parse("action", lines[0]);
    let date = time.index_date();
    let index = format!(
        "logstash-{}",
        std::str::from_utf8(&date).expect("an index date is ASCII digits and dots")
    );
    assert_eq!(action["create"]["_index"].as_str(), Some(index.as_str()));
    let id = ctx.id.record_id(offset);
    assert_eq!(id.len(), RECORD_ID_LEN);
    assert_eq!(
        action["create"]["_id"].as_str().map(str::as_bytes),
        Some(&id[..])
    );
    let doc = parse("document", lines[1]);
    assert_eq!(doc["@timestamp"].as_str(), Some(time.as_str()));
    assert_eq!(doc["stream"].as_str(), Some(stream.as_str()));
    assert_eq!(doc["shipper"]["metadata"].as_str(), Some("partial"));
    doc
}

#[derive(serde::Deserialize)]
struct DockerFields {
    log: Option<String>,
    stream: Option<String>,
    time: Option<String>,
}

/// `docker_parse`: on `Ok`, the message is what a real JSON parser reads from the same
/// line (fast path and slow path agree), and it encodes into two valid NDJSON lines
/// whose document's `log` is exactly that message.
pub fn docker_parse(data: &[u8]) {
    let Ok(line) = crate::record::parse::docker::parse(data) else {
        return;
    };
    let text: String = match &line.text {
        Text::Escaped(e) => {
            let quoted = [b"\"", *e, b"\""].concat();
            match serde_json::from_slice(&quoted) {
                Ok(s) => s,
                Err(err) => panic!(
                    "fast path kept content that is not a JSON string ({err}): {:?}",
                    String::from_utf8_lossy(e)
                ),
            }
        }
        Text::Owned(s) => s.clone(),
        Text::Raw(_) => panic!("docker parser returned Text::Raw"),
    };

    let doc = encode_checked(line.time, line.stream, &line.text, 0);
    assert_eq!(doc["log"].as_str(), Some(text.as_str()), "document log");

    // A real JSON parser reads the same fields from the line. (A struct, not a `Value`:
    // serde_json skips unknown fields without validating their strings, as the parser's
    // slow path does, and that is fine.)
    let v: DockerFields = serde_json::from_slice(data).expect("accepted a line that is not JSON");
    let log = v.log.expect("accepted a line without a log");
    assert_eq!(
        line.partial,
        !log.ends_with('\n'),
        "partial flag disagrees with the log value {log:?}"
    );
    let whole = if line.partial {
        &log[..]
    } else {
        &log[..log.len() - 1]
    };
    assert_eq!(text, whole, "parsed text disagrees with the JSON log value");
    assert_eq!(v.stream.as_deref(), Some(line.stream.as_str()));
    let time = v.time.expect("accepted a line without a time");
    assert_eq!(Timestamp::parse(time.as_bytes()), Ok(line.time));
}

/// `cri_parse`: on `Ok`, the message is a suffix of the input and its fourth field,
/// stream and tag match the line, the timestamp re-parses to itself, and the document
/// carries the message.
pub fn cri_parse(data: &[u8]) {
    let Ok(line) = crate::record::parse::cri::parse(data) else {
        return;
    };
    let Text::Raw(msg) = line.text else {
        panic!("cri parser returned {:?}", line.text);
    };
    assert!(data.ends_with(msg), "message is not a suffix of the line");

    let ts = line.time.as_bytes();
    assert_eq!(ts.last(), Some(&b'Z'), "timestamp {:?}", line.time);
    assert_eq!(Timestamp::parse(ts), Ok(line.time), "timestamp re-parse");

    // The fields, split independently.
    let mut fields = data.splitn(4, |&b| b == b' ');
    let time = fields.next().expect("splitn yields at least one field");
    assert_eq!(Timestamp::parse(time), Ok(line.time));
    assert_eq!(
        Stream::parse(fields.next().expect("accepted a line without a stream")),
        Some(line.stream)
    );
    let tag = fields.next().expect("accepted a line without a tag");
    let kind = tag
        .split(|&b| b == b':')
        .next()
        .expect("split yields at least one piece");
    assert_eq!(kind, if line.partial { b"P" } else { b"F" });
    assert_eq!(fields.next().unwrap_or(b""), msg);

    let doc = encode_checked(line.time, line.stream, &line.text, data.len() as u64);
    assert_eq!(
        doc["log"].as_str(),
        Some(&*String::from_utf8_lossy(msg)),
        "document log"
    );
}

#[derive(Debug)]
struct MergePending {
    offset: u64,
    time: Timestamp,
    time_before: Option<Timestamp>,
    bytes: Vec<u8>,
    chunks: u32,
}

/// A distinct timestamp per operation (they repeat every 1000 operations).
fn op_time(i: usize) -> Timestamp {
    static TIMES: OnceLock<Vec<Timestamp>> = OnceLock::new();
    TIMES.get_or_init(|| {
        (0..1000)
            .map(|n| {
                Timestamp::parse(format!("2024-07-08T03:42:57.{n:03}Z").as_bytes())
                    .expect("a constant, valid time")
            })
            .collect()
    })[i % 1000]
}

fn stream_of(i: usize) -> Stream {
    [Stream::Stdout, Stream::Stderr][i]
}

fn check_merged(got: &Merged<'_>, want: &MergePending, stream: Stream, cap: usize) {
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

fn model_resume_point(model: &[Option<MergePending>; 2]) -> Option<(u64, Option<Timestamp>)> {
    model
        .iter()
        .flatten()
        .map(|p| (p.offset, p.time_before))
        .min_by_key(|r| r.0)
}

fn flush_merger(m: &mut Merger, model: &mut [Option<MergePending>; 2], cap: usize) {
    let got = m.flush();
    let mut want: Vec<(Stream, MergePending)> = model
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
        check_merged(g, w, *stream, cap);
    }
    drop(got);
    assert_eq!(m.resume_point(), None, "pending after flush");
}

/// `partial_merge`: a cap (byte 0) and a sequence of push / reset / flush operations;
/// every record is the concatenation of its stream's chunks cut to the cap, with the
/// first chunk's offset and time, and `resume_point` is the earliest pending record.
pub fn partial_merge(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let cap = usize::from(first) % 97;
    let mut m = Merger::new(cap);
    assert_eq!(m.cap(), cap);
    let mut model: [Option<MergePending>; 2] = [None, None];
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
            63 => flush_merger(&mut m, &mut model, cap),
            n => {
                let n = usize::from(n).min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                let stream = stream_of(s);
                let t = op_time(i);
                let line = Line {
                    time: t,
                    stream,
                    partial,
                    text: Text::Raw(chunk),
                };
                let at = offset;
                offset += 1 + n as u64;
                let pending = model[s].get_or_insert_with(|| MergePending {
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
                    let want = model[s]
                        .take()
                        .expect("the model holds the record a final chunk ends");
                    check_merged(
                        &got.expect("a final chunk completed nothing"),
                        &want,
                        stream,
                        cap,
                    );
                }
                prev_time = Some(t);
            }
        }
        assert_eq!(m.resume_point(), model_resume_point(&model), "resume point");
    }
    flush_merger(&mut m, &mut model, cap);
}

const CHECKPOINT_MAGIC: &[u8] = b"shipper-checkpoints";

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = format!("shipper-checkpoints 1 {:08x}\n", crc32fast::hash(body)).into_bytes();
    out.extend_from_slice(body);
    out
}

fn is_lower_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A struct field: serde also reads structs written as JSON arrays, in field order.
fn field<'a>(v: &'a Value, name: &str, index: usize) -> &'a Value {
    match v {
        Value::Array(a) => &a[index],
        _ => &v[name],
    }
}

fn check_checkpoints(bytes: &[u8]) {
    let Ok(map) = crate::checkpoint::decode(Path::new("x"), bytes) else {
        return;
    };
    for (id, pos) in &map {
        let hex = id.to_hex();
        assert!(is_lower_hex(&hex), "to_hex gave {hex:?}");
        assert_eq!(FileId::from_hex(&hex), Some(*id));
        assert_eq!(FileId::from_hex(&hex.to_uppercase()), Some(*id));
        if let Some(t) = pos.last_time {
            assert!(t.as_str().ends_with('Z'), "last_time {t}");
            assert_eq!(Timestamp::parse(t.as_bytes()), Ok(t));
        }
    }

    // Every id as written in the file is hex (any case) of the id it decoded to.
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .expect("a decoded file has its header line");
    let body: Value = serde_json::from_slice(&bytes[nl + 1..]).expect("decoded body is JSON");
    let files = field(&body, "files", 0)
        .as_array()
        .expect("files is an array");
    for e in files {
        let text = field(e, "id", 0).as_str().expect("id is a string");
        let lower = text.to_ascii_lowercase();
        assert!(is_lower_hex(&lower), "accepted id {text:?}");
        let id = FileId::from_hex(text).expect("accepted an id from_hex rejects");
        assert!(map.contains_key(&id));
    }

    // Re-encoded in the documented format, the table decodes to itself.
    let files: Vec<Value> = map
        .iter()
        .map(|(id, p)| {
            let mut e = json!({
                "id": id.to_hex(),
                "offset": p.offset,
                "path": p.path.to_str().expect("a path read from JSON is UTF-8"),
            });
            if let Some(t) = p.last_time {
                e["last_time"] = t.to_string().into();
            }
            if p.streams != [p.offset; 2] {
                e["streams"] = json!(p.streams);
            }
            if p.len > p.offset {
                e["len"] = p.len.into();
            }
            if let Some(t) = p.first_seen {
                e["first_seen"] = t.to_string().into();
            }
            let routes: Vec<Value> = p
                .routes
                .as_slice()
                .iter()
                .map(|r| json!([r.from, r.name.to_string()]))
                .collect();
            if !routes.is_empty() {
                e["routes"] = routes.into();
            }
            e
        })
        .collect();
    let body = serde_json::to_vec_pretty(&json!({ "files": files }))
        .expect("a JSON value always serialises");
    let again = crate::checkpoint::decode(Path::new("x"), &frame(&body))
        .expect("re-encoded table does not decode");
    assert_eq!(again, map);
}

/// `checkpoint_decode`: never panics, on the input and on the input re-framed under a
/// valid header; on `Ok`, ids round-trip through hex and the table re-encoded decodes
/// to itself.
pub fn checkpoint_decode(data: &[u8]) {
    check_checkpoints(data);
    let body = match data.strip_prefix(CHECKPOINT_MAGIC) {
        Some(rest) => match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => &rest[nl + 1..],
            None => rest,
        },
        None => data,
    };
    check_checkpoints(&frame(body));
}

/// The fractional digits after the seconds (`s[19] == '.'`).
fn fraction(s: &[u8]) -> &[u8] {
    match s.get(19) {
        Some(b'.') => {
            let n = s[20..].iter().take_while(|b| b.is_ascii_digit()).count();
            &s[20..20 + n]
        }
        _ => &[],
    }
}

/// `(seconds, nanoseconds)` since the epoch.
fn instant<Tz: chrono::TimeZone>(t: &chrono::DateTime<Tz>) -> (i64, u32) {
    (t.timestamp(), t.timestamp_subsec_nanos())
}

fn in_documented_grammar(s: &[u8]) -> bool {
    if s.len() < 20 || !matches!(s[10], b'T' | b't') || &s[17..19] == b"60" {
        return false;
    }
    let frac = fraction(s);
    if frac.len() > 9 {
        return false;
    }
    let rest = if frac.is_empty() {
        &s[19..]
    } else {
        &s[20 + frac.len()..]
    };
    matches!(rest, [b'Z' | b'z'] | [b'+' | b'-', _, _, b':', _, _])
}

/// `timestamp_parse`: on `Ok`, the output is `YYYY-MM-DDTHH:MM:SS[.f]Z` with the
/// input's fraction, re-parses to itself and is the same instant as chrono's reading;
/// on `Err`, chrono rejects it too (within the documented grammar and years).
pub fn timestamp_parse(data: &[u8]) {
    use chrono::{DateTime, Datelike};
    let chrono = std::str::from_utf8(data)
        .ok()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    let ts = match Timestamp::parse(data) {
        Ok(ts) => ts,
        Err(e) => {
            if let Some(c) = chrono {
                let year = c.naive_utc().year();
                assert!(
                    !in_documented_grammar(data) || !(0..=9999).contains(&year),
                    "rejected {:?} ({e}), which chrono reads as {c}",
                    String::from_utf8_lossy(data)
                );
            }
            return;
        }
    };
    let out = ts.as_bytes();
    assert!(out.ends_with(b"Z"), "{ts:?}");
    assert_eq!(ts.as_str().as_bytes(), out, "not ASCII: {out:?}");
    let frac = fraction(data);
    assert_eq!(fraction(out), frac, "fraction of {ts:?}");
    let shape_len = if frac.is_empty() { 20 } else { 21 + frac.len() };
    assert_eq!(out.len(), shape_len, "{ts:?}");
    for (i, &b) in out[..19].iter().enumerate() {
        let ok = match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        };
        assert!(ok, "byte {i} of {ts:?}");
    }
    assert_eq!(Timestamp::parse(out), Ok(ts), "re-parse of {ts:?}");
    let date = ts.index_date();
    assert_eq!(&date[..4], &out[..4]);
    assert_eq!(&date[5..7], &out[5..7]);
    assert_eq!(&date[8..10], &out[8..10]);

    let ours = DateTime::parse_from_rfc3339(ts.as_str())
        .unwrap_or_else(|e| panic!("chrono rejects our output {ts:?}: {e}"));
    assert_eq!(ours.offset().local_minus_utc(), 0);
    if let Some(c) = chrono {
        assert_eq!(
            instant(&c),
            instant(&ours),
            "{:?} became {ts:?}",
            String::from_utf8_lossy(data)
        );
        assert_eq!(c.timestamp_nanos_opt(), ours.timestamp_nanos_opt());
        if let Some(n) = ours.timestamp_nanos_opt() {
            assert_eq!(ts.unix_nanos(), n, "unix_nanos of {ts:?}");
        }
        assert_eq!(
            ts.unix_millis(),
            ours.timestamp_millis(),
            "unix_millis of {ts:?}"
        );
    }
}

const INDEX_TIMES: [&str; 5] = [
    "2024-07-08T03:42:58.332568869Z",
    "2021-01-03T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:00:00Z",
    "2020-12-31T12:00:00+14:00",
];

/// `index_date_format`: input `format \\0 name`; parsing, rendering and reading back
/// never panic, renderings are valid index name pieces, and a day-naming format reads
/// its rendering back as the timestamp's date.
pub fn index_date_format(data: &[u8]) {
    use crate::index::DateFormat;
    let (fmt, name) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(fmt) = std::str::from_utf8(fmt) else {
        return;
    };
    let Ok(format) = DateFormat::parse(fmt) else {
        return;
    };
    if let Ok(name) = std::str::from_utf8(name) {
        let _ = format.parse_date(name);
    }
    let round_trips = format.has_day() && !fmt.contains("%y");
    for t in INDEX_TIMES {
        let ts = Timestamp::parse(t.as_bytes()).expect("INDEX_TIMES are valid times");
        let mut out = Vec::new();
        format.render(&ts, &mut out);
        let s = std::str::from_utf8(&out).expect("rendered dates are ASCII");
        assert!(
            s.bytes()
                .all(|b| !b.is_ascii_uppercase() && !b" \\/*?\"<>|,#:".contains(&b)),
            "{fmt:?} rendered {s:?}"
        );
        // Before 0000-01-03 the ISO year would be -1; it is rendered as 0000.
        if round_trips && !(fmt.contains("%G") && t.starts_with("0000")) {
            let day = chrono::NaiveDate::parse_from_str(&ts.as_str()[..10], "%Y-%m-%d")
                .expect("a parsed timestamp starts with its date");
            assert_eq!(format.parse_date(s), Some(day), "{fmt:?}: {s:?} from {t}");
        }
    }
}

/// `buffer_frames`: every frame a scan finds is whole and checks out, frames do not
/// overlap, and frames encoded after garbage are found again.
pub fn buffer_frames(data: &[u8]) {
    use crate::buffer::frame;
    let (found, damage) = frame::scan(data);
    let mut end = 0u64;
    for f in &found {
        assert!(f.offset >= end, "frames overlap");
        let bytes = &data[f.offset as usize..];
        let h = frame::decode_header(bytes)
            .expect("found frame has a valid header")
            .expect("found frame is whole");
        assert_eq!(h, f.header);
        frame::check_payload(&h, bytes).expect("found frame's payload checks out");
        end = f.offset + h.frame_len();
    }
    assert!(damage.torn_tail <= data.len() as u64);

    // Round trip: garbage, then frames made of the input's pieces. The garbage holds no
    // frame start (no `S`): a segment is append-only and a restart writes a new one, so
    // frames never follow damage within one segment; a crafted valid frame in front
    // could legitimately claim the bytes after it, which is not damage.
    let mut seg: Vec<u8> = data[..data.len().min(64)]
        .iter()
        .map(|&b| if b == frame::MAGIC[0] { b's' } else { b })
        .collect();
    let mut payloads = Vec::new();
    for chunk in data.chunks(97).take(8) {
        frame::encode(&mut seg, 0, chunk.len() as u32, chunk);
        payloads.push(chunk);
    }
    let (again, _) = frame::scan(&seg);
    let tail: Vec<&[u8]> = again
        .iter()
        .rev()
        .take(payloads.len())
        .rev()
        .map(|f| {
            frame::check_payload(&f.header, &seg[f.offset as usize..])
                .expect("a frame encoded after garbage checks out")
        })
        .collect();
    assert_eq!(tail, payloads, "encoded frames are found again");
}

/// `bulk_response`: byte 0 is the number of documents sent (mod 64), the rest the body;
/// on `Ok`, every document is accounted for exactly once and rejects keep their error
/// as JSON.
pub fn bulk_response(data: &[u8]) {
    use crate::ship::bulk;
    let (sent, body) = match data.split_first() {
        Some((&n, rest)) => (usize::from(n % 64), rest),
        None => (0, data),
    };
    if let Ok(r) = bulk::parse(body, sent) {
        assert_eq!(
            r.indexed + r.duplicate + r.retry.len() + r.reject.len(),
            sent,
            "every document accounted for"
        );
        assert!(r.throttled <= r.retry.len());
        let mut seen = vec![false; sent];
        for &i in r.retry.iter().chain(r.reject.iter().map(|(i, _, _)| i)) {
            assert!(i < sent && !seen[i], "position {i} out of range or twice");
            seen[i] = true;
        }
        for (_, status, err) in &r.reject {
            assert_eq!(bulk::classify(*status), bulk::Outcome::Reject);
            // Valid JSON grammar (a number may be beyond what `Value` can hold).
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(err).is_ok(),
                "error kept as JSON"
            );
        }
    }
}

/// `multiline_group`: byte 0 picks the mode (off, auto, one language), the rest is lines
/// of CRI messages (bit 6 of a line's first byte: stderr; its low bits: milliseconds
/// since the line before). Fed at once or line by line, the record stream makes the same
/// documents; every line lands in exactly one document, in order within its stream; a
/// restart from any checkpoint the stream reports makes the same documents from there.
pub fn multiline_group(data: &[u8]) {
    use crate::record::multiline::{Lang, Mode};
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mode = match sel % 9 {
        0 => Mode::Off,
        1 => Mode::Auto,
        n => Mode::Lang(Lang::ALL[usize::from(n - 2)]),
    };
    let text = String::from_utf8_lossy(rest);
    let mut file = String::new();
    let mut messages: [Vec<String>; 2] = Default::default();
    let mut ms: i64 = 0;
    for line in text.split('\n').take(200) {
        let first = line.bytes().next().unwrap_or(0);
        let stderr = first & 0x40 != 0;
        ms += i64::from(first & 0x0f) * 30;
        let t = Timestamp::from_unix_nanos(1_720_410_177_000_000_000 + ms * 1_000_000);
        let stream = if stderr { "stderr" } else { "stdout" };
        file += &format!("{t} {stream} F {line}\n");
        messages[usize::from(stderr)].push(line.to_owned());
    }
    let docs =
        |from: usize, skip: [u64; 2], chunk: usize| stream_docs(&mode, &file, from, skip, chunk);
    let whole = docs(0, [0; 2], usize::MAX);
    assert_eq!(docs(0, [0; 2], 1), whole, "read line by line");
    // Every line in exactly one document, in order, per stream.
    for (s, want) in messages.iter().enumerate() {
        let stream = if s == 1 { "stderr" } else { "stdout" };
        let got: Vec<&str> = whole
            .iter()
            .filter(|d| d.2 == stream)
            .flat_map(|d| d.1.split('\n'))
            .collect();
        assert_eq!(&got, want, "the {stream} lines");
    }
    // A restart from the checkpoint after each line rebuilds the same documents.
    let mut offset = 0;
    for line in file.split_inclusive('\n').take(40) {
        offset += line.len();
        let (held, skip) = held_after(&mode, &file, offset);
        let again = docs(held, skip, usize::MAX);
        for d in &again {
            assert!(whole.contains(d), "restart at {held} {skip:?} made {d:?}");
        }
        let stream_of = |d: &(String, String, String, u64)| usize::from(d.2 == "stderr");
        let after = whole.iter().filter(|d| d.3 >= skip[stream_of(d)]).count();
        assert_eq!(again.len(), after, "restart at {held} {skip:?}");
    }
}

/// (id, log, stream, offset) of the documents a record stream makes from `file[from..]`,
/// fed `chunk` lines at a time.
fn stream_docs(
    mode: &crate::record::multiline::Mode,
    file: &str,
    from: usize,
    skip: [u64; 2],
    chunk: usize,
) -> Vec<(String, String, String, u64)> {
    let mut s = fuzz_stream(mode, skip);
    let mut ndjson = Vec::new();
    let mut counts = crate::record::Counts::default();
    let mut offset = from;
    let lines: Vec<&str> = file[from..].split_inclusive('\n').collect();
    for group in lines.chunks(chunk.max(1)) {
        let joined = group.concat();
        let mut out = crate::record::Output {
            ndjson: &mut ndjson,
            counts: &mut counts,
            routes: &mut Vec::new(),
        };
        s.push(offset as u64, joined.as_bytes(), Timestamp::EPOCH, &mut out);
        offset += joined.len();
    }
    let mut out = crate::record::Output {
        ndjson: &mut ndjson,
        counts: &mut counts,
        routes: &mut Vec::new(),
    };
    s.finish(&mut out);
    let text = String::from_utf8(ndjson).expect("NDJSON is UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len() as u64,
        2 * counts.docs,
        "counts match the documents"
    );
    let id_of = crate::ids::FileId::compute("cri:fuzz", b"first");
    let mut starts = std::collections::HashMap::new();
    let mut o = 0;
    for line in file.split_inclusive('\n') {
        starts.insert(id_of.record_id(o as u64).to_vec(), o as u64);
        o += line.len();
    }
    lines
        .chunks(2)
        .map(|p| {
            let a: Value = serde_json::from_str(p[0]).expect("action is JSON");
            let d: Value = serde_json::from_str(p[1]).expect("document is JSON");
            let id = a["create"]["_id"].as_str().unwrap_or_default().to_owned();
            let offset = *starts
                .get(id.as_bytes())
                .expect("the id is a line's offset");
            (
                id,
                d["log"].as_str().unwrap_or_default().to_owned(),
                d["stream"].as_str().unwrap_or_default().to_owned(),
                offset,
            )
        })
        .collect()
}

/// Where a restart would resume after the stream read `file[..upto]`: the offset, and
/// each stream's own point.
fn held_after(mode: &crate::record::multiline::Mode, file: &str, upto: usize) -> (usize, [u64; 2]) {
    let mut s = fuzz_stream(mode, [0; 2]);
    let mut ndjson = Vec::new();
    let mut counts = crate::record::Counts::default();
    let mut out = crate::record::Output {
        ndjson: &mut ndjson,
        counts: &mut counts,
        routes: &mut Vec::new(),
    };
    s.push(0, &file.as_bytes()[..upto], Timestamp::EPOCH, &mut out);
    let held = s.held();
    let streams = held.streams.map(|o| o.unwrap_or(upto as u64));
    (held.pending.map_or(upto, |(o, _)| o as usize), streams)
}

fn fuzz_stream(
    mode: &crate::record::multiline::Mode,
    skip: [u64; 2],
) -> crate::record::RecordStream {
    use crate::record::{fields, multiline, FileSettings, RecordStream, Settings};
    let file = FileSettings {
        multiline: multiline::Settings {
            mode: mode.clone(),
            gap_ns: 200_000_000,
            max_lines: 7,
            max_bytes: 400,
        },
        parsers: [fields::Parser::None, fields::Parser::None],
        controls: Default::default(),
        format: None,
    };
    let settings = Settings {
        budget: None,
        max_record_bytes: 1 << 16,
        fields: fields::Options::from_config(&crate::config::FieldsConfig::default())
            .expect("the default field options are valid"),
    };
    RecordStream::new(
        &settings,
        file,
        Encoder::new("fuzz"),
        FileId::compute("cri:fuzz", b"first"),
        &crate::encode::Metadata::default(),
        (None, skip),
    )
}

/// `field_parse`: byte 0 picks the parser (json or logfmt) and the target (a key or the
/// root), the rest is the text. The document encoded with the fields is valid JSON whose
/// `@timestamp`, `log` and `stream` are the agent's; `shipper.fields` lists what was
/// added; JSON values are exactly the input's; stripping the fields (as the shipper does
/// after a mapping conflict) leaves a valid document without them.
pub fn field_parse(data: &[u8]) {
    use crate::record::fields::{self, Parser};
    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    let parser = if sel & 1 == 0 {
        Parser::Json
    } else {
        Parser::Logfmt
    };
    let root = sel & 2 != 0;
    let mut cfg = crate::config::FieldsConfig::default();
    if root {
        cfg.target = String::new();
    }
    if sel & 4 != 0 {
        cfg.level_keys = vec!["level".into()];
        cfg.keep_log = false;
    }
    let opts = fields::Options::from_config(&cfg).expect("valid options");
    let mut parsed = crate::encode::Fields::default();
    let raw = Text::Raw(text);
    let found = fields::parse(&parser, &opts, &raw, &mut Vec::new(), &mut parsed);
    let Ok(true) = found else {
        return;
    };
    let enc = Encoder::new("fuzz").with_fields_key(&cfg.target);
    let ctx = FileContext {
        id: FileId::compute("cri:fuzz", b"l"),
        meta: Vec::new(),
        level: Level::None,
        heads: Vec::new(),
    };
    let time = Timestamp::parse(b"2024-07-08T03:42:57Z").expect("a valid time");
    let doc = Doc {
        offset: 0,
        time,
        stream: Some(Stream::Stdout),
        text: &raw,
        truncated: false,
        parse_error: None,
        fields: Some(&parsed),
    };
    let mut out = Vec::new();
    enc.encode(&mut out, &ctx, &doc);
    let line = out.split(|&b| b == b'\n').nth(1).expect("a document line");
    let d: Value = serde_json::from_slice(line).unwrap_or_else(|e| {
        panic!(
            "document is not JSON ({e}): {}",
            String::from_utf8_lossy(line)
        )
    });
    assert_eq!(d["stream"], "stdout");
    assert!(d["log"].is_string());
    let listed: Vec<&str> = d["shipper"]["fields"]
        .as_array()
        .expect("shipper.fields lists the added keys")
        .iter()
        .map(|k| k.as_str().expect("keys are strings"))
        .collect();
    for k in &listed {
        assert!(d.get(*k).is_some(), "listed key {k} is in the document");
    }
    if matches!(parser, Parser::Json) && !root {
        let original: Value = serde_json::from_slice(text).expect("parsed text is JSON");
        for (k, v) in d["fields"].as_object().expect("fields is an object") {
            assert_eq!(Some(v), original.get(k), "field {k} as written");
        }
    }
    let stripped =
        crate::ship::conflict::strip(line, "test").expect("a document with fields strips");
    let s: Value = serde_json::from_slice(&stripped).expect("stripped document is JSON");
    for k in &listed {
        assert!(s.get(*k).is_none(), "{k} was stripped");
    }
    assert_eq!(s["log"], d["log"]);
    assert_eq!(s["shipper"]["fields_rejected"], "test");
}

/// `redaction`: byte 0 picks the replacement (a text or a keyed hash), the rest is the
/// text. The redactor sees the same text whether it is stored raw or JSON-escaped (as
/// Docker stores it), so both give the same result; a redacted text encodes into a valid
/// document; every pattern named in the counts replaced something.
pub fn redaction(data: &[u8]) {
    use crate::config::REDACT_BUILTINS;
    use crate::record::redact::{hash_key, Redactor, Replacement};
    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    // One redactor per variant, built once (compiling the patterns per input would
    // make the fuzzer a regex-compilation benchmark).
    static REDACTORS: OnceLock<Vec<Redactor>> = OnceLock::new();
    let redactors = REDACTORS.get_or_init(|| {
        let builtins: Vec<String> = REDACT_BUILTINS.iter().map(|b| (*b).to_owned()).collect();
        let user = [("digits".to_owned(), "id=([0-9]+)".to_owned())];
        (0..4u8)
            .map(|v| {
                let replacement = if v & 1 == 0 {
                    Replacement::Text("[REDACTED]".into())
                } else {
                    Replacement::Hash(hash_key(b"fuzz"))
                };
                let user = if v & 2 != 0 { &user[..] } else { &[] };
                // The built-ins and this one user pattern are fixed, valid expressions.
                Redactor::new(&builtins, user, replacement).expect("valid patterns")
            })
            .collect()
    });
    let r = &redactors[usize::from(sel & 3)];
    let Ok(utf8) = std::str::from_utf8(text) else {
        // Raw bytes that are not UTF-8 still redact without a panic.
        let _ = r.redact(&Text::Raw(text), &mut Vec::new());
        return;
    };
    let raw = r.redact(&Text::Raw(text), &mut Vec::new());
    let mut escaped = Vec::new();
    crate::encode::escaped::escape_into(&mut escaped, utf8.as_bytes());
    let from_escaped = r.redact(&Text::Escaped(&escaped), &mut Vec::new());
    assert_eq!(raw, from_escaped, "raw and escaped forms redact alike");
    if let Some(red) = raw {
        assert!(red.hits.iter().all(|(_, n)| *n > 0));
        assert!(!red.hits.is_empty());
        // A constant, valid RFC 3339 time.
        let t = crate::timestamp::Timestamp::parse(b"2024-07-08T03:42:57Z").expect("valid");
        encode_checked(t, Stream::Stdout, &Text::Owned(red.text), 0);
    }
}

/// `index_route`: input `template \0 namespace \0 pod \0 container \0 label`; parsing
/// and rendering never panic; a rendered name is a valid index prefix that the
/// template's pattern covers and that retention gives to that pattern (never to
/// another prefix); a pod's choice is accepted only when covered; a route history
/// keeps its offsets in order and routes every offset to one of its names.
pub fn index_route(data: &[u8]) {
    use crate::index::route::{self, Field, Routes, Template};
    let mut parts = data.split(|&b| b == 0).map(String::from_utf8_lossy);
    let Some(text) = parts.next() else { return };
    let values: Vec<String> = parts.map(|p| p.into_owned()).collect();
    let value = |i: usize| values.get(i).map(String::as_str);
    let Ok(template) = Template::parse(&text) else {
        return;
    };
    let rendered = template.render(|f| match f {
        Field::Namespace => value(0),
        Field::Pod => value(1),
        Field::Container => value(2),
        Field::Label(_) | Field::NamespaceLabel(_) => value(3),
    });
    let patterns = vec![template.pattern()];
    if let Some(name) = &rendered {
        assert!(
            crate::index::check_name(name).is_ok(),
            "{text:?} rendered {name:?}"
        );
        assert!(name.len() <= route::MAX_PREFIX_BYTES);
        let covered = route::covered(name, &patterns, true)
            || (!patterns[0].ends_with('*') && *name == patterns[0]);
        assert!(covered, "{name:?} outside {patterns:?}");
        let index = format!("{name}-2024.07.08");
        let format = crate::index::DateFormat::default();
        use crate::retention::Prefix;
        let (p, other) = (Prefix::of(&patterns[0], 1), Prefix::of("logstash", 1));
        let both = [p.clone(), other.clone()];
        let by = crate::retention::owner(&index, &both, &format).map(|(o, _)| o.clone());
        assert!(
            by == Some(p.clone()) || (by == Some(other) && *name == "logstash"),
            "{index:?} owned by {by:?}, not {p:?}"
        );
    }
    if let Some(v) = value(0) {
        if let Some(name) = route::accept(v, &patterns, true) {
            assert!(crate::index::check_name(&name).is_ok(), "{name:?}");
            assert!(route::covered(&name, &patterns, true));
        }
    }
    let mut routes = Routes::default();
    for (i, v) in values.iter().enumerate() {
        let from = v.len() as u64 * (i as u64 + 1);
        routes = routes.then(from, v.as_str().into());
        let froms: Vec<u64> = routes.as_slice().iter().map(|r| r.from).collect();
        assert!(froms.windows(2).all(|w| w[0] < w[1]), "{froms:?}");
        let last = routes.last().expect("a route was just added");
        let at = routes
            .index_at(last.from)
            .expect("a history with a route routes every offset");
        assert_eq!(&*routes.as_slice()[at].name, v.as_str());
        assert_eq!(at, routes.as_slice().len() - 1);
    }
}

/// `rotated_gzip`: a compressed rotation read through the tail's `Content`. Byte 0 picks
/// the input's shape: `z` wraps the rest as a valid gzip file of two members (split at
/// byte 1), anything else is taken as the file's bytes. Nothing panics; a file that
/// decompresses has its decompressed length, one that does not has none, and reads at
/// offsets taken from the input (forward, backward, past the end) give exactly the
/// decompressed bytes there.
pub fn rotated_gzip(data: &[u8]) {
    use crate::tail::content::Content;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let file = match data.split_first() {
        Some((b'z', rest)) => {
            let cut = usize::from(rest.first().copied().unwrap_or(0)).min(rest.len());
            let mut out = Vec::new();
            for part in [&rest[..cut], &rest[cut..]] {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(part).expect("writing to memory cannot fail");
                out.extend(e.finish().expect("finishing in memory cannot fail"));
            }
            out
        }
        _ => data.to_vec(),
    };
    let path = std::env::temp_dir().join(format!(
        "shipper-fuzz-{}-{}.gz",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::write(&path, &file).is_err() {
        // No temp directory to write to: nothing to check (not a property of the code).
        return;
    }
    let opened = Content::open(&path);
    let Ok((content, _)) = opened else {
        let _ = std::fs::remove_file(&path);
        return;
    };
    let mut whole = Vec::new();
    let decoded = flate2::read::MultiGzDecoder::new(&file[..]).read_to_end(&mut whole);
    let len = content.len();
    if decoded.is_err() {
        assert!(len.is_err(), "a damaged file has no length");
        let _ = std::fs::remove_file(&path);
        return;
    }
    assert_eq!(
        len.expect("a file that decompresses has a length"),
        whole.len() as u64
    );
    let mut buf = vec![0u8; 97];
    for &b in data.iter().rev().take(8) {
        let off = (u64::from(b) * 131) % (whole.len() as u64 + 2);
        let n = content
            .read_full(&mut buf, off)
            .expect("a read of an open gzip works");
        let from = (off as usize).min(whole.len());
        let want = &whole[from..(from + buf.len()).min(whole.len())];
        assert_eq!(&buf[..n], want, "read at {off}");
    }
    let _ = std::fs::remove_file(&path);
}

/// `plain_lines`: a host file (plain text). Bytes 0..8 pick the reference time (within
/// 1970..2200) that dates year-less stamps, the rest is the file. Every complete line is
/// exactly one document, in order, whose `log` is the line; a line with a known stamp
/// prefix is dated by it, and every `@timestamp` is valid RFC 3339 in UTC.
pub fn plain_lines(data: &[u8]) {
    use crate::record::parse::plain;
    use crate::record::{fields, multiline, FileSettings, Format, Output, RecordStream, Settings};
    if data.len() < 8 {
        return;
    }
    let (head, file) = data.split_at(8);
    let span = 230 * 365 * 86_400 * 1_000_000_000_i64;
    // `split_at(8)`: exactly 8 bytes, the conversion cannot fail.
    let reference = i64::from_le_bytes(head.try_into().expect("8 bytes")).rem_euclid(span);
    let end = file.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let file = &file[..end];
    let settings = Settings {
        budget: None,
        max_record_bytes: 1 << 16,
        fields: fields::Options::from_config(&crate::config::FieldsConfig::default())
            // The defaults are validated by the config tests: cannot fail.
            .expect("the default field options are valid"),
    };
    let first_seen = Timestamp::from_unix_nanos(reference);
    let mut s = RecordStream::new(
        &settings,
        FileSettings {
            multiline: multiline::Settings {
                mode: multiline::Mode::Off,
                gap_ns: 200_000_000,
                max_lines: 7,
                max_bytes: 1 << 16,
            },
            parsers: [fields::Parser::None, fields::Parser::None],
            controls: Default::default(),
            format: Some(Format::Plain),
        },
        Encoder::new("node"),
        FileId::compute("host:/var/log/fuzz.log", b"first"),
        &crate::encode::Metadata::default(),
        (None, [0; 2]),
    );
    s.set_first_seen(first_seen);
    let mut ndjson = Vec::new();
    let mut counts = crate::record::Counts::default();
    let mut routes = Vec::new();
    let mut out = Output {
        ndjson: &mut ndjson,
        counts: &mut counts,
        routes: &mut routes,
    };
    s.push(0, file, first_seen, &mut out);
    s.finish(&mut out);
    let lines: Vec<&[u8]> = file
        .split(|&b| b == b'\n')
        .take(file.iter().filter(|&&b| b == b'\n').count())
        .collect();
    let docs: Vec<Value> = ndjson
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        // The property checked: a panic here is a finding.
        .map(|l| serde_json::from_slice(l).expect("every NDJSON line is JSON"))
        .collect();
    assert_eq!(docs.len(), 2 * lines.len(), "one document per line");
    let mut last: Option<String> = None;
    for (i, (pair, line)) in docs.chunks(2).zip(&lines).enumerate() {
        let doc = &pair[1];
        // The property checked (every document has one): a panic here is a finding.
        let ts = doc["@timestamp"].as_str().expect("a timestamp");
        assert!(Timestamp::parse(ts.as_bytes()).is_ok(), "{ts}");
        if let Ok(text) = std::str::from_utf8(line) {
            assert_eq!(doc["log"], text, "the line is the message");
        }
        assert!(doc.get("stream").is_none(), "plain text has no stream");
        let near = last
            .as_deref()
            .and_then(|t| Timestamp::parse(t.as_bytes()).ok())
            .map_or(reference, |t| t.unix_nanos());
        match plain::timestamp(line, near) {
            Some(t) => {
                assert_eq!(ts, t.as_str(), "dated by its own stamp");
                last = Some(ts.to_owned());
            }
            // The last good line's time; before any, the next good one's in the same
            // pass, else the file's first-seen time.
            None => {
                let want = last.clone().unwrap_or_else(|| {
                    lines[i + 1..]
                        .iter()
                        .find_map(|l| plain::timestamp(l, reference))
                        .unwrap_or(first_seen)
                        .as_str()
                        .to_owned()
                });
                assert_eq!(ts, want, "a line without a stamp");
            }
        }
    }
}

/// The example node's journal (a real one, written by systemd-journal-remote), read once.
pub(crate) fn example_journal() -> Option<&'static [u8]> {
    static J: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    J.get_or_init(|| {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/node/host/var/log/journal"
        );
        let machine = std::fs::read_dir(dir).ok()?.flatten().next()?.path();
        std::fs::read(machine.join("system.journal")).ok()
    })
    .as_deref()
}

/// `journal_file`: the example node's journal with bytes overwritten. The input is a list
/// of 6-byte patches: a little-endian u32 offset (high bit clear: into the header and the
/// field hash table, the file's first 6 KiB; set: into the objects, after the data hash
/// table) and two bytes. The journal reader never panics and never loops: every entry it
/// reads is counted, every document is valid NDJSON, and a damaged entry or file is
/// counted in `journal_errors`, never fatal.
pub fn journal_file(data: &[u8]) {
    use crate::journal::{Journal, Settings, UnitChoice};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let Some(base) = example_journal() else {
        return;
    };
    let field = |at: usize| {
        // `at..at + 8`: exactly 8 bytes, the conversion below cannot fail.
        base.get(at..at + 8).map_or(0, |b| {
            u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize
        })
    };
    // Where the objects are: after the data hash table, up to the last one (and a page).
    let objects = field(104).saturating_add(field(112)).min(base.len());
    let used = field(136).saturating_add(4096).clamp(objects, base.len());
    let mut file = base[..used].to_vec();
    for p in data.chunks_exact(6).take(64) {
        let raw = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
        let (from, len) = if raw & (1 << 31) == 0 {
            (0, 6144.min(used))
        } else {
            (objects, used - objects)
        };
        if len == 0 {
            continue;
        }
        let off = from + (raw & !(1 << 31)) as usize % len;
        file[off] = p[4];
        if off + 1 < used {
            file[off + 1] = p[5];
        }
    }
    let dir = std::env::temp_dir().join(format!(
        "shipper-fuzz-journal-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let machine = dir.join("5f2c0b1e9d8a4c7b8e6f1a2b3c4d5e6f");
    let written = std::fs::create_dir_all(&machine)
        .and_then(|()| std::fs::File::create(machine.join("system.journal")))
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(&file)?;
            // The rest of the file as the writer left it: zeros, not stored.
            f.set_len(base.len() as u64)
        });
    if written.is_err() {
        // No temp directory to write to: nothing to check (not a property of the code).
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let stats = std::sync::Arc::new(crate::metrics::Stats::default());
    let mut j = Journal::new(
        Settings {
            paths: vec![dir.clone()],
            units: Vec::new(),
            poll: std::time::Duration::ZERO,
            start_at_end: false,
            max_record_bytes: 1 << 16,
            node: Some("node-1".into()),
        },
        Encoder::new("node"),
        None,
        stats.clone(),
    );
    let mut out = Vec::new();
    let mut counts = crate::record::Counts::default();
    let mut choose = |_: &str| UnitChoice {
        excluded: false,
        route: "node".into(),
        controls: Default::default(),
    };
    // Reads until nothing more comes (bounded: the example holds a handful of entries).
    for _ in 0..64 {
        j.look_now();
        if j.poll(&mut out, (1 << 20, usize::MAX), &mut counts, &mut choose) == 0 {
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let entries = crate::metrics::Stats::get(&stats.journal_entries);
    assert!(entries < 10_000, "{entries} entries from a 5-entry journal");
    let lines: Vec<&[u8]> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        lines.len() as u64,
        2 * counts.docs,
        "two lines per document"
    );
    for l in lines {
        // The property checked: a panic here is a finding.
        let v: Value = serde_json::from_slice(l).expect("every NDJSON line is JSON");
        assert!(v.is_object());
    }
    if data.is_empty() {
        assert_eq!(entries, 5, "the unmodified example journal");
        assert_eq!(counts.docs, 5);
    }
}
