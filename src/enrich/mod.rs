//! Metadata for each log file: which pod, namespace and container its records belong to.
//!
//! Sources, best first: the Kubernetes API (a node-scoped watch of Pods and a watch of
//! Namespaces feeding [`KubeCache`], see [`self::kube`]), or a pod list (`--pods`, the
//! output of `kubectl get pods -A -o json`); then what the node itself says: the
//! `/var/log/pods/<ns>_<pod>_<uid>/<container>` path (CRI) or the `io.kubernetes.*` labels
//! in Docker's `config.v2.json` next to the log. The document says which it got
//! (`shipper.metadata`: `complete`, `partial` or `none`; rendered by [`crate::encode`]).
//!
//! The three sources reach the read loop through one type, [`MetaSource`]; each file's
//! metadata is a [`FileMeta`], looked up when the file opens and refreshed only when the
//! live cache changed (one atomic load), never per record. A file never loses metadata it
//! had: a pod that expired from the cache leaves it as it was.

mod cache;
pub mod kube;
mod pods;
mod source;

pub use cache::{KubeCache, SNAPSHOT_FILE};
pub use pods::{PodEntry, PodIndex};
pub use source::{docker_config_labels, SourceInfo};

use crate::encode::{Level, Metadata};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where metadata comes from.
#[derive(Debug)]
pub enum MetaSource {
    /// The node alone: log paths and Docker's `config.v2.json`.
    Node,
    /// A pod list (`--pods`).
    PodList(PodIndex),
    /// The live cache fed by the API watch. A file whose pod is not in it yet waits up
    /// to `wait` (its reads are held back) before it is read with what the node says.
    Live {
        cache: Arc<KubeCache>,
        wait: Duration,
    },
}

/// One file's metadata, as of its last refresh.
#[derive(Debug, Clone)]
pub struct FileMeta {
    /// What the path and Docker's config say: the key to look the pod up by.
    info: SourceInfo,
    meta: Metadata,
    excluded: bool,
    /// The live cache's change counter when the metadata was last checked.
    seen: u64,
    /// Revision of the pod and namespace entries the metadata came from.
    rev: u64,
    /// The pod is not in the live cache yet: the file is not read before this instant
    /// unless the pod shows up.
    pending_until: Option<Instant>,
}

/// What a refresh found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// The metadata (or the exclusion) changed.
    pub changed: bool,
    /// A wait for the pod ended (found, or time up): counted in `metadata_waits`.
    pub wait_ended: bool,
}

impl MetaSource {
    /// Metadata for a new file: `info` from its path(s), plus Docker's config labels
    /// from `docker_dir` when there is one.
    pub fn open(&self, mut info: SourceInfo, docker_dir: Option<&Path>, now: Instant) -> FileMeta {
        if info.host_path.is_some() {
            // A host file belongs to the node, not to a pod: nothing to look up or wait
            // for.
            return FileMeta {
                meta: info.to_metadata(),
                info,
                excluded: false,
                seen: 0,
                rev: 0,
                pending_until: None,
            };
        }
        if let Some(dir) = docker_dir {
            match docker_config_labels(dir) {
                Ok(labels) => info.merge(labels),
                Err(e) => tracing::debug!(error = %e, "no kubernetes labels from docker config"),
            }
        }
        let (meta, excluded, seen, rev, pending_until) = match self {
            MetaSource::Live { cache, wait } => {
                // Read the counter first: a change during the lookup is seen next time.
                let seen = cache.changes();
                let d = cache.describe(&info);
                let lookable = info.container_id.is_some() || info.pod_uid.is_some();
                let pending = (!d.known && !d.excluded && lookable).then(|| now + *wait);
                (d.meta, d.excluded, seen, d.rev, pending)
            }
            MetaSource::PodList(pods) => match pods.find(&info) {
                Some((pod, container)) => (
                    pod.metadata(container, &info),
                    pod.excludes(Some(container)),
                    0,
                    0,
                    None,
                ),
                None => (info.to_metadata(), false, 0, 0, None),
            },
            MetaSource::Node => (info.to_metadata(), false, 0, 0, None),
        };
        FileMeta {
            info,
            meta,
            excluded,
            seen,
            rev,
            pending_until,
        }
    }

    /// Brings `f` up to date with the live cache if the cache changed, and ends its wait
    /// for the pod when the pod showed up or the wait ran out.
    pub fn refresh(&self, f: &mut FileMeta, now: Instant) -> Refreshed {
        let mut r = Refreshed::default();
        let MetaSource::Live { cache, .. } = self else {
            return r;
        };
        if f.info.host_path.is_some() {
            return r;
        }
        let changes = cache.changes();
        if f.seen != changes {
            f.seen = changes;
            let d = cache.describe(&f.info);
            // Never downgrade: a pod that expired from the cache leaves the file with
            // the metadata it had.
            if d.rev != f.rev && (d.known || f.meta.level() != Level::Complete) {
                f.rev = d.rev;
                if (d.known || d.excluded) && f.pending_until.take().is_some() {
                    r.wait_ended = true;
                }
                f.meta = d.meta;
                f.excluded = d.excluded;
                r.changed = true;
            }
        }
        if f.pending_until.is_some_and(|t| now >= t) {
            f.pending_until = None;
            r.wait_ended = true;
            tracing::debug!(source = %f.info.source_key(), "pod still unknown; reading with the metadata the node gives");
        }
        r
    }

    /// Blocks until `f`'s pod may have shown up or its wait ran out (the dry-run reads
    /// files one after the other and waits for each).
    pub fn wait(&self, f: &FileMeta) {
        if let (MetaSource::Live { cache, .. }, Some(until)) = (self, f.pending_until) {
            cache.wait_change(f.seen, until);
        }
    }
}

impl FileMeta {
    /// What the records carry.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// Names the node a host file's records come from (`kubernetes.host`, the field
    /// container records carry it in).
    pub fn set_node(&mut self, node: Option<&str>) {
        if self.info.host_path.is_some() {
            self.meta.host = node.map(str::to_owned);
        }
    }

    /// Whether the file is a host file (not a container's).
    pub fn is_host(&self) -> bool {
        self.info.host_path.is_some()
    }

    /// The pod's annotations or its namespace's label exclude the file's logs.
    pub fn excluded(&self) -> bool {
        self.excluded
    }

    /// Still waiting for the pod to show up in the live cache.
    pub fn pending(&self) -> bool {
        self.pending_until.is_some()
    }

    /// When the wait for the pod ends at the latest.
    pub fn pending_until(&self) -> Option<Instant> {
        self.pending_until
    }

    /// The identity source: the container the file belongs to.
    pub fn source_key(&self) -> String {
        self.info.source_key()
    }
}
