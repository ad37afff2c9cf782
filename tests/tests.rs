//! Integration tests, compiled as one binary.

mod util;

mod agent;
mod cli;
mod control;
mod dry_run;
mod fleet;
#[path = "../benches/fleet/mod.rs"]
mod fleet_bench;
mod fuzz_replay;
mod kube;
mod kube_api;
mod layering;
mod manifests;
mod node_faults;
mod node_logs;
mod observability;
mod proxy;
mod retention;
mod roundtrip;
mod shutdown;
mod structured;
mod tail_model;
