//! Buffer segment recovery: any bytes scan without a panic; every frame found is whole
//! and checksummed; frames written by the encoder are all found again, in order, even
//! after arbitrary garbage in front of them.
//!
//! The check is `shipper::fuzzing::buffer_frames`; `cargo test` runs it over every committed
//! seed and regression input too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shipper::fuzzing::buffer_frames(data));
