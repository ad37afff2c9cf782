//! `shipper::parse::Timestamp::parse` on arbitrary bytes.
//!
//! On `Ok`: the text is `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, keeps the input's fractional
//! digits exactly, re-parses to itself, its index date is its date, and it is the same
//! instant as chrono's reading of the input (when chrono accepts the input).
//! On `Err`: chrono does not accept the input either, when the input is in the grammar
//! the parser documents (`T`, at most nine fractional digits, `Z` or `±HH:MM`, no leap
//! second) and its UTC year is within 0..=9999.
//!
//! The check is `shipper::fuzzing::timestamp_parse`; `cargo test` runs it over every committed
//! seed and regression input too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shipper::fuzzing::timestamp_parse(data));
