//! `shipper::checkpoint::decode` on arbitrary bytes, and on the same bytes framed as a
//! body under a valid header (so mutations reach the JSON layer past the CRC check).
//!
//! Never panics. On `Ok`: every id is 32 lowercase hex characters that round-trip through
//! `FileId::to_hex`/`from_hex`, and was written as such in the file; every `last_time` is
//! UTC text that re-parses to itself; and the table re-encoded in the documented format
//! decodes to the same table.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use shipper::checkpoint::decode;
use shipper::parse::Timestamp;
use shipper::tail::FileId;
use std::path::Path;

const MAGIC: &[u8] = b"shipper-checkpoints";

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

fn check(bytes: &[u8]) {
    let Ok(map) = decode(Path::new("x"), bytes) else {
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
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
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
            e
        })
        .collect();
    let body = serde_json::to_vec_pretty(&json!({ "files": files })).unwrap();
    let again = decode(Path::new("x"), &frame(&body)).expect("re-encoded table does not decode");
    assert_eq!(again, map);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let body = match data.strip_prefix(MAGIC) {
        Some(rest) => match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => &rest[nl + 1..],
            None => rest,
        },
        None => data,
    };
    check(&frame(body));
});
