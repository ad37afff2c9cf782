//! `shipper::parse::cri::parse` on arbitrary lines.
//!
//! On `Ok`: the line is `<time> <stream> <tag>[ <msg>]` with the fields the parser
//! reported, the message is a suffix of the input, the timestamp is UTC text ending in
//! `Z` that re-parses to itself, and the encoded document's `log` is the message with
//! invalid UTF-8 replaced.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shipper::parse::{cri, Stream, Text, Timestamp};
use shipper_fuzz::encode_checked;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = cri::parse(data) else {
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
    let time = fields.next().unwrap();
    assert_eq!(Timestamp::parse(time), Ok(line.time));
    assert_eq!(Stream::parse(fields.next().unwrap()), Some(line.stream));
    let tag = fields.next().expect("accepted a line without a tag");
    let kind = tag.split(|&b| b == b':').next().unwrap();
    assert_eq!(kind, if line.partial { b"P" } else { b"F" });
    assert_eq!(fields.next().unwrap_or(b""), msg);

    let doc = encode_checked(line.time, line.stream, &line.text, data.len() as u64);
    assert_eq!(
        doc["log"].as_str(),
        Some(&*String::from_utf8_lossy(msg)),
        "document log"
    );
});
