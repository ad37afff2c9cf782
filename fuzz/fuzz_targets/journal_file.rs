//! The systemd journal reader over a damaged journal file: the example node's journal
//! (written by systemd-journal-remote) with bytes of its header and objects overwritten.
//! Never panics, never loops; every document is valid NDJSON; damage is counted.
//!
//! The check is `shipper::fuzzing::journal_file`; `cargo test` runs it over every
//! committed seed and regression input too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shipper::fuzzing::journal_file(data));
