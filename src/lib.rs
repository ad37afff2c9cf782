//! `shipper`: a Kubernetes node agent that reads every container's log files and turns
//! them into Elasticsearch bulk requests, with nothing lost and nothing duplicated.
//!
//! # Layout
//!
//! Entry and wiring (may use any module below):
//! - [`cli`]: flags. [`app`]: builds the pipeline from the config and runs it.
//! - [`shutdown`]: the stop order, the signals, workers that fail.
//! - [`reload`]: what changes without a restart (SIGHUP, a changed configuration or
//!   credential file), and when.
//! - [`fuzzing`]: the invariants the fuzz targets check (also replayed by `cargo test`).
//! - [`manifests`]: `shipper manifests`, the Kubernetes objects of the whole EFK stack.
//! - [`retention`]: `shipper retention`, deletes old daily indices.
//! - [`sizing`]: `shipper sizing`, an Elasticsearch plan for a cluster's log volume.
//!
//! The data path, top to bottom (a stage uses only the stages after it and the shared
//! modules; it never reaches back up):
//! - [`reader`]: the read loop; drives discovery, the tail and the record streams.
//! - [`discover`]: finds log files under the Docker and CRI roots and the node's host
//!   files (scan + inotify waker).
//! - [`tail`]: bytes, identity, rotation, truncation and fairness of the open files.
//! - [`journal`]: the systemd journal: the chosen units' entries after the saved cursor,
//!   as documents.
//! - [`enrich`]: which pod, namespace and container a file belongs to (paths, a pod
//!   list, or the Kubernetes API through a node-scoped watch cache).
//! - [`select`]: which settings apply to a file (`[[rules]]`, pod annotations), and
//!   which index its documents go to.
//! - [`record`]: per file, parse → partial merge → multiline → encode: lines in,
//!   documents out.
//! - [`encode`]: the document and its bulk action (the one place that renders them).
//! - [`batch`]: cuts documents into batches that count their own documents.
//! - [`appender`]: appends a batch to the buffer, makes it durable, then moves the
//!   checkpoints.
//! - [`ship`]: frames from the buffer to Elasticsearch, acknowledged item by item.
//!
//! Shared (used by the stages; each uses only the shared modules after it):
//! - [`status`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`config`]: settings from the TOML file, the environment and flags.
//! - [`buffer`]: the disk buffer of CRC-framed segments between appender and shipper.
//! - [`checkpoint`]: per-file positions on disk.
//! - [`index`]: index names (prefix, date format, route templates, a file's route history).
//! - [`ids`]: file identity and document ids.
//! - [`timestamp`]: RFC 3339 timestamps in UTC with the source's precision.
//! - [`state_file`]: the format and atomic writes of the small state files.
//! - [`disk`]: a full disk and the free-space floor, and the pause they cause.
//! - [`metrics`]: the counters, heartbeats and their Prometheus rendering.
//! - [`logging`]: the agent's own logs.
//! - [`memory`]: allocator settings, and memory given back when idle.

mod app;
mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod manifests;
mod reload;
pub mod retention;
mod shutdown;
pub mod sizing;

mod appender;
mod batch;
mod discover;
mod encode;
mod enrich;
mod reader;
mod record;
mod select;
mod ship;
mod tail;

mod buffer;
mod checkpoint;
mod disk;
mod ids;
mod index;
mod journal;
mod logging;
pub mod memory;
mod metrics;
mod state_file;
mod status;
mod timestamp;

// The commands: what `main.rs` runs.
pub use app::{agent, dry_run, DryRun, TEST_WEDGE_ENV};
pub use cli::{Args, Command};
pub use logging::{init as init_logging, Format as LogFormat};
pub use metrics::{Metrics, Stats};
pub use reload::Source as ConfigSource;

// For the integration tests, benchmarks and fuzz targets: the stages' pieces that they
// drive directly.
pub use buffer::frame;
pub use checkpoint::{decode as decode_checkpoints, Checkpoints, Position};
pub use encode::{Doc, Encoder, FileContext, Level, Stream, Text};
pub use enrich::kube::{spawn_watch, ApiSource, WatchOptions};
pub use enrich::{KubeCache, MetaSource, SNAPSHOT_FILE};
pub use ids::{FileId, RECORD_ID_LEN};
pub use index::DateFormat;
pub use reader::{Polled, Reader, ReaderSettings};
pub use record::parse::{cri, docker, Line, ParseError};
pub use record::partial::{Merged, Merger};
pub use ship::{bulk, control};
pub use tail::Resume;
pub use timestamp::Timestamp;
