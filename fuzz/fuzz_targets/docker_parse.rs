//! `shipper::parse::docker::parse` on arbitrary lines.
//!
//! On `Ok`: the message is what a real JSON parser reads from the same line (fast path and
//! slow path agree), and encoding it yields two valid NDJSON lines whose document's `log`
//! is exactly that message.
//!
//! The check is `shipper::fuzzing::docker_parse`; `cargo test` runs it over every committed
//! seed and regression input too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shipper::fuzzing::docker_parse(data));
