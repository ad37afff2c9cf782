//! `shipper::parse::docker::parse` on arbitrary lines.
//!
//! On `Ok`: the message is what a real JSON parser reads from the same line (fast path and
//! slow path agree), and encoding it yields two valid NDJSON lines whose document's `log`
//! is exactly that message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use shipper::parse::{docker, Text, Timestamp};
use shipper_fuzz::encode_checked;

#[derive(Deserialize)]
struct Fields {
    log: Option<String>,
    stream: Option<String>,
    time: Option<String>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = docker::parse(data) else {
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
    let v: Fields = serde_json::from_slice(data).expect("accepted a line that is not JSON");
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
});
