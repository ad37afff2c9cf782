//! `_bulk` response parsing: never a panic; an accepted response accounts for every
//! document sent exactly once, and the positions it names are in range.
//!
//! The check is `shipper::fuzzing::bulk_response`; `cargo test` runs it over every committed
//! seed and regression input too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shipper::fuzzing::bulk_response(data));
