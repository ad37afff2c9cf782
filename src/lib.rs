//! `shipper`: a Kubernetes node agent that reads every container's log files and turns
//! them into Elasticsearch bulk requests, with nothing lost and nothing duplicated.
//!
//! # Layout, in data-path order
//!
//! - [`discover`]: finds log files under the Docker and CRI roots (scan + inotify waker).
//! - [`tail`]: reads each file from its checkpoint; identity, rotation, truncation,
//!   fairness.
//! - [`parse`]: Docker json-file and CRI line parsers, timestamps, partial-line merging.
//! - [`enrich`]: pod/namespace metadata from paths, Docker config, pod lists and the
//!   Kubernetes API (a node-scoped watch into a cache that survives deletions, restarts
//!   and outages).
//! - [`encode`]: one bulk `create` action + document per record, deterministic `_id`.
//! - [`checkpoint`]: per-file positions on disk, written atomically ([`state_file`] format).
//! - [`metrics`]: the counters, worker heartbeats and their Prometheus rendering;
//!   [`status`] serves them (`/metrics`, `/healthz`, `/readyz`); [`logging`]: the agent's
//!   own logs.
//! - [`config`], [`cli`], [`app`]: settings and wiring.
//!
//! Beside the agent: [`manifests`] (`shipper manifests`, the Kubernetes objects of the
//! whole EFK stack) and [`retention`] (`shipper retention`, deletes old daily indices).

pub mod app;
pub mod buffer;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod discover;
pub mod encode;
pub mod enrich;
pub mod logging;
pub mod manifests;
pub mod metrics;
pub mod parse;
pub mod retention;
pub mod ship;
pub mod state_file;
pub mod status;
pub mod tail;
