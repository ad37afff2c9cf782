//! `shipper::fuzzing::redaction` on arbitrary input.
//!
//! The check is `shipper::fuzzing::redaction`; `cargo test` runs it over every committed
//! seed and regression input too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shipper::fuzzing::redaction(data));
