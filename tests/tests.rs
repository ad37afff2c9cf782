//! Integration tests, compiled as one binary.

mod util;

mod agent;
mod cli;
mod dry_run;
mod proxy;
mod roundtrip;
mod tail_model;
