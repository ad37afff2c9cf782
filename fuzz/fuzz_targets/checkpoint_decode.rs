//! `shipper::checkpoint::decode` on arbitrary bytes, and on the same bytes framed as a
//! body under a valid header (so mutations reach the JSON layer past the CRC check).
//!
//! Never panics. On `Ok`: every id is 32 lowercase hex characters that round-trip through
//! `FileId::to_hex`/`from_hex`, and was written as such in the file; every `last_time` is
//! UTC text that re-parses to itself; and the table re-encoded in the documented format
//! decodes to the same table.
//!
//! The check is `shipper::fuzzing::checkpoint_decode`; `cargo test` runs it over every committed
//! seed and regression input too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shipper::fuzzing::checkpoint_decode(data));
