//! `shipper::index::route`: route templates (parsing, rendering over metadata values,
//! sanitising), a pod's chosen index, retention's owner of a routed index, and route
//! histories, on arbitrary bytes.
//!
//! Input: `template \0 namespace \0 pod \0 container \0 label`. Never a panic. A
//! rendered name is a valid index prefix, covered by the template's pattern, and owned by
//! that pattern in retention; a route history keeps its offsets in order.
//!
//! The check is `shipper::fuzzing::index_route`; `cargo test` runs it over every
//! committed seed and regression input too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shipper::fuzzing::index_route(data));
