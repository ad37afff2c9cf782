//! Integration tests, compiled as one binary.

mod util;

mod cli;
mod dry_run;
mod manifests;
mod retention;
mod roundtrip;
mod tail_model;
