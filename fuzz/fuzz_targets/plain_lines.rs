//! A host file (plain text) through the record stream: every complete line is exactly
//! one document whose `log` is the line, dated by its klog, RFC 3339, logrus or syslog
//! stamp when it has one, else by DESIGN's rule (the last good line's time).
//!
//! The check is `shipper::fuzzing::plain_lines`; `cargo test` runs it over every
//! committed seed and regression input too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shipper::fuzzing::plain_lines(data));
