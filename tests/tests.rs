//! Integration tests, compiled as one binary.

mod util;

mod cli;
mod dry_run;
mod kube;
mod kube_api;
mod roundtrip;
mod tail_model;
