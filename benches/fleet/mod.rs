//! The fleet harness as a module of the integration tests (`tests/fleet.rs` runs a short
//! version); `benches/fleet/main.rs` runs it at size.

#![allow(dead_code)]

pub mod capacity;
pub mod harness;
pub mod proxy;
pub mod report;
