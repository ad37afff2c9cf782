//! `shipper::encode::index::DateFormat`: parsing a configured format, rendering dates
//! with it, and reading index names back (retention), on arbitrary bytes.
//!
//! Input: `format \0 name`. Never a panic. When the format parses: every rendering is
//! a valid index name piece of the documented fixed width, and for formats that name a
//! day with a four-digit year, reading a rendering back gives the timestamp's date.
//!
//! The check is `shipper::fuzzing::index_date_format`; `cargo test` runs it over every committed
//! seed and regression input too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shipper::fuzzing::index_date_format(data));
