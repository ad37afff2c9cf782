//! Helpers shared by the fuzz targets (see `fuzz_targets/`).

use std::sync::OnceLock;
use serde_json::Value;
use shipper::encode::{Doc, Encoder, FileContext};
use shipper::enrich::Level;
use shipper::parse::{Stream, Text, Timestamp};
use shipper::tail::{FileId, RECORD_ID_LEN};

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
    let index = format!("logstash-{}", std::str::from_utf8(&date).unwrap());
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
