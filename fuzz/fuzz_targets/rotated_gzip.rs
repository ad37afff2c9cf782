//! A gzip-compressed rotation (kubelet's `0.log.<timestamp>.gz`) read through the tail's
//! `Content`, as the agent reads one rotated while it was stopped.
//!
//! Never panics. When the file opens: its length is the decompressed length, and a read
//! at any offset gives exactly the decompressed bytes there (offsets in the decompressed
//! stream, so ids are those of the uncompressed file).
//!
//! The check is `shipper::fuzzing::rotated_gzip`; `cargo test` runs it over every
//! committed seed and regression input too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shipper::fuzzing::rotated_gzip(data));
