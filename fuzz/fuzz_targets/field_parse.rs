//! `shipper::fuzzing::field_parse` on arbitrary input.
//!
//! The check is `shipper::fuzzing::field_parse`; `cargo test` runs it over every committed
//! seed and regression input too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shipper::fuzzing::field_parse(data));
