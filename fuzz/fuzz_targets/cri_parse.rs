//! `shipper::parse::cri::parse` on arbitrary lines.
//!
//! On `Ok`: the line is `<time> <stream> <tag>[ <msg>]` with the fields the parser
//! reported, the message is a suffix of the input, the timestamp is UTC text ending in
//! `Z` that re-parses to itself, and the encoded document's `log` is the message with
//! invalid UTF-8 replaced.
//!
//! The check is `shipper::fuzzing::cri_parse`; `cargo test` runs it over every committed
//! seed and regression input too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shipper::fuzzing::cri_parse(data));
