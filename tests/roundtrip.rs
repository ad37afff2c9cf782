//! Property: any message, written the way a runtime writes it (split into any number of
//! partial chunks), comes out of parse → merge → encode as a document whose `log` is the
//! original message.

use proptest::prelude::*;
use shipper::FileId;
use shipper::Level;
use shipper::Merger;
use shipper::{cri, docker, Line};
use shipper::{Doc, Encoder, FileContext};

const TIME: &str = "2024-07-08T03:42:57.123456789Z";

fn ctx() -> FileContext {
    FileContext {
        id: FileId::compute("docker:x", b"first"),
        meta: Vec::new(),
        level: Level::Partial,
        heads: Vec::new(),
    }
}

/// Go's encoding/json escapes `<`, `>`, `&`, U+2028 and U+2029 as \uXXXX.
fn go_json(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// Feeds lines through a merger and returns the `log` of every document produced.
fn run_lines<'a>(lines: impl IntoIterator<Item = Line<'a>>) -> Vec<String> {
    let mut merger = Merger::new(usize::MAX / 2);
    let enc = Encoder::new("logstash");
    let mut out = Vec::new();
    for (offset, line) in lines.into_iter().enumerate() {
        if let Some(rec) = merger.push(offset as u64, line, None) {
            let doc = Doc {
                offset: rec.offset,
                time: rec.time,
                stream: Some(rec.stream),
                text: &rec.text,
                truncated: rec.truncated,
                parse_error: None,
                fields: None,
            };
            enc.encode(&mut out, &ctx(), &doc);
        }
    }
    let text = String::from_utf8(out).expect("bulk body is UTF-8");
    text.lines()
        .skip(1)
        .step_by(2)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("document is JSON");
            v["log"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Splits `s` into `n`-ish pieces at character boundaries.
fn split_chars(s: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points.into_iter().chain([chars.len()]) {
        if p > start {
            out.push(chars[start..p].iter().collect());
            start = p;
        }
    }
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

proptest! {
    #[test]
    fn docker_messages_round_trip(msg in any::<String>(), cuts in proptest::collection::vec(any::<usize>(), 0..6), go in any::<bool>()) {
        let chunks = split_chars(&msg, &cuts);
        let last = chunks.len() - 1;
        let raw: Vec<String> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let log = if i == last { format!("{c}\n") } else { c.clone() };
                let log = if go { go_json(&log) } else { serde_json::to_string(&log).unwrap() };
                format!(r#"{{"log":{log},"stream":"stdout","time":"{TIME}"}}"#)
            })
            .collect();
        let lines: Vec<Line<'_>> = raw.iter().map(|l| docker::parse(l.as_bytes()).expect("parses")).collect();
        prop_assert_eq!(run_lines(lines), vec![msg]);
    }

    #[test]
    fn cri_messages_round_trip(msg in proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..300),
                               cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (msg.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut pieces = Vec::new();
        let mut start = 0;
        for p in points.into_iter().chain([msg.len()]) {
            if p > start || (p == msg.len() && pieces.is_empty()) {
                pieces.push(&msg[start..p]);
                start = p;
            }
        }
        let last = pieces.len() - 1;
        let raw: Vec<Vec<u8>> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| [format!("{TIME} stderr {} ", if i == last { 'F' } else { 'P' }).as_bytes(), p].concat())
            .collect();
        let lines: Vec<Line<'_>> = raw.iter().map(|l| cri::parse(l).expect("parses")).collect();
        prop_assert_eq!(run_lines(lines), vec![String::from_utf8_lossy(&msg).into_owned()]);
    }
}
