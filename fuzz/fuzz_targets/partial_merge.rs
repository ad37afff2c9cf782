//! `shipper::parse::partial::Merger` against a model.
//!
//! Input: byte 0 picks the cap (0..=96 bytes); then a sequence of operations, each a
//! header byte `h` and, for pushes, a chunk:
//!   - `h & 1`: stream (stdout/stderr), `h & 2`: partial,
//!   - `h >> 2` in 0..=61: push a `Text::Raw` chunk of that many following bytes,
//!   - `h >> 2 == 62`: `reset()`, `h >> 2 == 63`: `flush()`.
//!
//! The model keeps the raw chunks of each stream's pending record. Every emitted record
//! must be the model's concatenation cut to at most `cap` bytes (at the last character
//! boundary when the bytes are valid UTF-8, at most 3 bytes short otherwise), with
//! `truncated` set iff something was cut, and the first chunk's offset, time and
//! `time_before`; `resume_point()` is the earliest pending record's; `flush()` returns
//! the leftovers in offset order.
//!
//! The check is `shipper::fuzzing::partial_merge`; `cargo test` runs it over every committed
//! seed and regression input too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shipper::fuzzing::partial_merge(data));
