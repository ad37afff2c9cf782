//! The live metadata cache: this node's pods and every namespace, written by the API
//! watch ([`super::kube`]) and read by the tailer, which never waits on the API itself.
//!
//! - **Deletions keep metadata.** A deleted pod or namespace (a `DELETED` event, or
//!   missing from a relist) stays for a grace period, so the last lines of a pod that
//!   is already gone are still enriched.
//! - **Change detection without per-record cost.** Every change bumps one counter
//!   ([`KubeCache::changes`]); each entry remembers the counter value of its last change
//!   (`rev`). A reader compares one atomic per turn and looks up its pod only when the
//!   counter moved. Updates that change nothing documents use (most pod status updates)
//!   do not bump it.
//! - **Snapshots.** The cache is written to `<data-dir>/kubernetes-cache` (one header line
//!   `shipper-kubernetes-cache <version> <crc32 of the body>`, then JSON; temp file,
//!   fsync, rename) and loaded at start, so a restart during an API outage still
//!   enriches. Deletion times are wall-clock, so the grace period continues across a
//!   restart.

use super::{PodEntry, PodIndex, SourceInfo};
use crate::encode::Metadata;
use crate::state_file::write_atomic;
use k8s_openapi::api::core::v1::Namespace;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Namespace label: `"true"` excludes every pod of the namespace.
pub const NAMESPACE_EXCLUDE_LABEL: &str = "shipper.io/exclude";
/// The snapshot's file name in the data directory.
pub const SNAPSHOT_FILE: &str = "kubernetes-cache";
const KIND: crate::state_file::Kind = crate::state_file::Kind {
    name: "metadata snapshot",
    magic: "shipper-kubernetes-cache",
    version: 1,
};

/// Why the metadata snapshot could not be read or written.
pub type CacheError = crate::state_file::StateFileError;

/// What is kept of a namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at_ms: Option<u64>,
    #[serde(skip)]
    pub rev: u64,
}

impl NamespaceEntry {
    /// `None` for a namespace without a name (the API never sends one).
    pub fn from_namespace(ns: &Namespace) -> Option<NamespaceEntry> {
        Some(NamespaceEntry {
            name: ns.metadata.name.clone()?,
            uid: ns.metadata.uid.clone(),
            labels: ns.metadata.labels.clone().unwrap_or_default(),
            deleted_at_ms: None,
            rev: 0,
        })
    }

    pub fn excluded(&self) -> bool {
        self.labels.get(NAMESPACE_EXCLUDE_LABEL).map(|v| v.trim()) == Some("true")
    }
}

/// A change reported by a watch.
#[derive(Debug)]
pub enum Change<E> {
    /// A complete list (initial list or relist): anything cached but not listed was
    /// deleted while nobody watched.
    Replace(Vec<E>),
    /// Added or modified.
    Apply(E),
    /// Deleted (with its last state).
    Delete(E),
}

/// What the cache says about one file's container.
#[derive(Debug, Clone)]
pub struct Described {
    pub meta: Metadata,
    /// The pod's annotations or its namespace's label exclude these logs.
    pub excluded: bool,
    /// The pod was found.
    pub known: bool,
    /// Largest `rev` of the pod and namespace entries used (0: none).
    pub rev: u64,
}

#[derive(Debug, Default)]
struct State {
    pods: PodIndex,
    namespaces: HashMap<String, NamespaceEntry>,
    /// Changed since the last snapshot.
    dirty: bool,
}

/// Pods and namespaces, shared between the watch (writer) and the tailer (readers).
#[derive(Debug)]
pub struct KubeCache {
    state: RwLock<State>,
    changes: AtomicU64,
    /// Each watch has completed a list since start. Atomics, like `changes`, so a waiter
    /// checks them holding only the signal mutex (never the state lock, which a writer
    /// holds while it signals).
    pods_synced: AtomicBool,
    namespaces_synced: AtomicBool,
    grace: Duration,
    /// Wakes readers waiting for a pod or for the first sync.
    signal: (Mutex<()>, Condvar),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    pods: Vec<PodEntry>,
    namespaces: Vec<NamespaceEntry>,
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl KubeCache {
    /// An empty cache whose deleted entries stay for `grace`.
    pub fn new(grace: Duration) -> KubeCache {
        KubeCache {
            state: RwLock::new(State::default()),
            changes: AtomicU64::new(1),
            pods_synced: AtomicBool::new(false),
            namespaces_synced: AtomicBool::new(false),
            grace,
            signal: (Mutex::new(()), Condvar::new()),
        }
    }

    /// The change counter: moves whenever anything a document uses changed.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A writer that panicked left consistent data (every write is a few map
        // operations); keep serving it rather than poisoning every reader.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Bumps the counter and wakes waiters. Called with the write lock held, so a
    /// reader that sees the new counter also sees the new data.
    fn bump(&self) -> u64 {
        let rev = self.changes.fetch_add(1, Ordering::AcqRel) + 1;
        let _guard = self.signal.0.lock().unwrap_or_else(|e| e.into_inner());
        self.signal.1.notify_all();
        rev
    }

    /// Metadata for a file: the pod (by container id or pod uid) and its namespace.
    /// An unknown pod still gets its namespace's uid and labels when the path names it.
    pub fn describe(&self, src: &SourceInfo) -> Described {
        let state = self.read();
        let found = state.pods.find(src);
        let ns_name = found
            .and_then(|(p, _)| p.namespace.as_deref())
            .or(src.namespace.as_deref());
        let ns = ns_name.and_then(|n| state.namespaces.get(n));
        let mut meta = match found {
            Some((pod, container)) => pod.metadata(container, src),
            None => src.to_metadata(),
        };
        if let Some(ns) = ns {
            meta.namespace_id = ns.uid.clone();
            meta.namespace_labels = ns.labels.clone();
        }
        let container = found.map(|(_, c)| c).or(src.container.as_deref());
        Described {
            excluded: found.is_some_and(|(p, _)| p.excludes(container))
                || ns.is_some_and(NamespaceEntry::excluded),
            known: found.is_some(),
            rev: found.map_or(0, |(p, _)| p.rev).max(ns.map_or(0, |n| n.rev)),
            meta,
        }
    }

    /// Applies a pod watch event. `now_ms` is the deletion time of deleted pods.
    pub fn apply_pods(&self, change: Change<PodEntry>, now_ms: u64) {
        let mut state = self.write();
        match change {
            Change::Replace(list) => {
                let listed: std::collections::HashSet<String> =
                    list.iter().map(|p| p.key.clone()).collect();
                for entry in list {
                    self.put_pod(&mut state, entry);
                }
                let gone: Vec<String> = state
                    .pods
                    .iter()
                    .filter(|p| p.deleted_at_ms.is_none() && !listed.contains(&p.key))
                    .map(|p| p.key.clone())
                    .collect();
                for key in gone {
                    if let Some(p) = state.pods.get_mut(&key) {
                        p.deleted_at_ms = Some(now_ms);
                    }
                }
                self.pods_synced.store(true, Ordering::Release);
                state.dirty = true;
                // Waiters for the first sync look at the flag, not the counter.
                self.bump();
            }
            Change::Apply(entry) => self.put_pod(&mut state, entry),
            Change::Delete(mut entry) => {
                entry.deleted_at_ms = Some(now_ms);
                self.put_pod(&mut state, entry);
            }
        }
    }

    /// Stores a pod, bumping the counter only if something documents use changed.
    fn put_pod(&self, state: &mut State, mut entry: PodEntry) {
        if let Some(old) = state.pods.get_mut(&entry.key) {
            let same = PodEntry {
                rev: old.rev,
                deleted_at_ms: old.deleted_at_ms,
                ..entry.clone()
            } == *old;
            if same {
                let at = deletion(old.deleted_at_ms, entry.deleted_at_ms);
                if at != old.deleted_at_ms {
                    old.deleted_at_ms = at;
                    state.dirty = true;
                }
                return;
            }
        }
        state.dirty = true;
        entry.rev = self.bump();
        state.pods.insert(entry);
    }

    /// Applies a namespace watch event.
    pub fn apply_namespaces(&self, change: Change<NamespaceEntry>, now_ms: u64) {
        let mut state = self.write();
        match change {
            Change::Replace(list) => {
                let listed: std::collections::HashSet<String> =
                    list.iter().map(|n| n.name.clone()).collect();
                for entry in list {
                    self.put_namespace(&mut state, entry);
                }
                for ns in state.namespaces.values_mut() {
                    if ns.deleted_at_ms.is_none() && !listed.contains(&ns.name) {
                        ns.deleted_at_ms = Some(now_ms);
                    }
                }
                self.namespaces_synced.store(true, Ordering::Release);
                state.dirty = true;
                self.bump();
            }
            Change::Apply(entry) => self.put_namespace(&mut state, entry),
            Change::Delete(mut entry) => {
                entry.deleted_at_ms = Some(now_ms);
                self.put_namespace(&mut state, entry);
            }
        }
    }

    fn put_namespace(&self, state: &mut State, mut entry: NamespaceEntry) {
        if let Some(old) = state.namespaces.get_mut(&entry.name) {
            if old.uid == entry.uid && old.labels == entry.labels {
                let at = deletion(old.deleted_at_ms, entry.deleted_at_ms);
                if at != old.deleted_at_ms {
                    old.deleted_at_ms = at;
                    state.dirty = true;
                }
                return;
            }
        }
        state.dirty = true;
        entry.rev = self.bump();
        state.namespaces.insert(entry.name.clone(), entry);
    }

    /// Forgets entries deleted more than the grace period before `now_ms`. Returns how
    /// many were forgotten. Files already reading keep the metadata they rendered.
    pub fn expire(&self, now_ms: u64) -> usize {
        let grace = u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX);
        let expired = |at: Option<u64>| at.is_some_and(|t| now_ms.saturating_sub(t) >= grace);
        let mut state = self.write();
        let pods: Vec<String> = state
            .pods
            .iter()
            .filter(|p| expired(p.deleted_at_ms))
            .map(|p| p.key.clone())
            .collect();
        for key in &pods {
            state.pods.remove(key);
        }
        let before = state.namespaces.len();
        state.namespaces.retain(|_, n| !expired(n.deleted_at_ms));
        let n = pods.len() + before - state.namespaces.len();
        if n > 0 {
            state.dirty = true;
            self.bump();
        }
        n
    }

    /// (pods, namespaces) cached, deleted ones included.
    pub fn len(&self) -> (usize, usize) {
        let s = self.read();
        (s.pods.len(), s.namespaces.len())
    }

    /// Whether both watches have completed a list since start.
    pub fn synced(&self) -> bool {
        self.pods_synced.load(Ordering::Acquire) && self.namespaces_synced.load(Ordering::Acquire)
    }

    /// Waits until both watches have listed once, at most `timeout`. Returns whether
    /// they did.
    pub fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.wait_until(deadline, || self.synced())
    }

    /// Waits until the change counter differs from `seen`, at most until `deadline`.
    pub fn wait_change(&self, seen: u64, deadline: Instant) -> bool {
        self.wait_until(deadline, || self.changes() != seen)
    }

    /// `done` must only read atomics: it runs holding the signal mutex.
    fn wait_until(&self, deadline: Instant, done: impl Fn() -> bool) -> bool {
        let (lock, cvar) = &self.signal;
        let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if done() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = cvar
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The snapshot bytes if anything changed since the last call (then call
    /// [`KubeCache::mark_dirty`] if writing them fails).
    pub fn take_snapshot(&self) -> Option<Vec<u8>> {
        let mut state = self.write();
        if !state.dirty {
            return None;
        }
        state.dirty = false;
        let mut pods: Vec<PodEntry> = state.pods.iter().cloned().collect();
        pods.sort_by(|a, b| a.key.cmp(&b.key));
        let mut namespaces: Vec<NamespaceEntry> = state.namespaces.values().cloned().collect();
        namespaces.sort_by(|a, b| a.name.cmp(&b.name));
        drop(state);
        Some(encode(&Body { pods, namespaces }))
    }

    pub fn mark_dirty(&self) {
        self.write().dirty = true;
    }

    /// Writes the snapshot to `<dir>/kubernetes-cache` if anything changed. Blocking
    /// (fsync): call it from a blocking thread.
    pub fn save(&self, dir: &Path) -> Result<bool, CacheError> {
        let Some(bytes) = self.take_snapshot() else {
            return Ok(false);
        };
        let path = dir.join(SNAPSHOT_FILE);
        write_atomic(&path, &bytes).map_err(|source| {
            self.mark_dirty();
            CacheError::Write { path, source }
        })?;
        Ok(true)
    }

    /// Loads `<dir>/kubernetes-cache` into the cache (a missing file loads nothing).
    /// Entries whose grace period ran out while the agent was stopped are dropped.
    /// Returns the number of pods loaded.
    pub fn load(&self, dir: &Path, now_ms: u64) -> Result<usize, CacheError> {
        let path = dir.join(SNAPSHOT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(CacheError::Read { path, source }),
        };
        let body = decode(&path, &bytes)?;
        let n = body.pods.len();
        let mut state = self.write();
        for p in body.pods {
            self.put_pod(&mut state, p);
        }
        for ns in body.namespaces {
            self.put_namespace(&mut state, ns);
        }
        state.dirty = false;
        drop(state);
        self.expire(now_ms);
        Ok(n)
    }
}

/// The deletion time after an update: a second deletion keeps the first time (the grace
/// period runs from when the object went away); an update that is not a deletion (the
/// object is back, or listed again) clears it.
fn deletion(old: Option<u64>, new: Option<u64>) -> Option<u64> {
    match (old, new) {
        (Some(first), Some(_)) => Some(first),
        (_, new) => new,
    }
}

fn encode(body: &Body) -> Vec<u8> {
    // Serialising plain structs of strings, maps and integers cannot fail.
    let json = serde_json::to_vec(body).unwrap_or_default();
    KIND.encode(&json)
}

/// Parses a snapshot. Pure, so corruption can be tested (and fuzzed) without disk.
fn decode(path: &Path, bytes: &[u8]) -> Result<Body, CacheError> {
    KIND.decode(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::pods::ContainerEntry;

    fn pod(uid: &str, ns: &str, container_id: &str) -> PodEntry {
        PodEntry {
            key: uid.into(),
            uid: Some(uid.into()),
            name: Some(format!("pod-{uid}")),
            namespace: Some(ns.into()),
            containers: vec![ContainerEntry {
                name: "app".into(),
                ids: vec![container_id.into()],
                ..ContainerEntry::default()
            }],
            ..PodEntry::default()
        }
    }

    fn ns(name: &str, labels: &[(&str, &str)]) -> NamespaceEntry {
        NamespaceEntry {
            name: name.into(),
            uid: Some(format!("ns-{name}")),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..NamespaceEntry::default()
        }
    }

    const GRACE: Duration = Duration::from_secs(300);

    #[test]
    fn describe_pod_namespace_and_revisions() {
        let c = KubeCache::new(GRACE);
        let docker = SourceInfo::from_docker_id("c1");
        let d = c.describe(&docker);
        assert!(!d.known && d.rev == 0 && !d.excluded);
        c.apply_pods(Change::Apply(pod("u1", "shop", "c1")), 0);
        let d = c.describe(&docker);
        assert!(d.known);
        assert_eq!(d.meta.pod.as_deref(), Some("pod-u1"));
        assert_eq!(d.meta.namespace_id, None);
        let before = c.changes();
        c.apply_pods(Change::Apply(pod("u1", "shop", "c1")), 0);
        assert_eq!(
            c.changes(),
            before,
            "an update with nothing new is not a change"
        );
        c.apply_namespaces(Change::Apply(ns("shop", &[("env", "prod")])), 0);
        assert_ne!(c.changes(), before);
        let d2 = c.describe(&docker);
        assert!(d2.rev > d.rev);
        assert_eq!(d2.meta.namespace_id.as_deref(), Some("ns-shop"));
        assert_eq!(d2.meta.namespace_labels["env"], "prod");
        // A CRI path names the namespace even when the pod is unknown.
        let cri = SourceInfo::from_cri_dirs("shop_p_u9", "app");
        let d = c.describe(&cri);
        assert!(!d.known);
        assert_eq!(d.meta.namespace_id.as_deref(), Some("ns-shop"));
    }

    #[test]
    fn exclusion_by_pod_container_and_namespace() {
        let c = KubeCache::new(GRACE);
        let mut p = pod("u1", "shop", "c1");
        p.annotations.insert(
            crate::enrich::pods::EXCLUDE_CONTAINERS_KEY.into(),
            "app".into(),
        );
        c.apply_pods(Change::Apply(p), 0);
        c.apply_pods(Change::Apply(pod("u2", "quiet", "c2")), 0);
        assert!(c.describe(&SourceInfo::from_docker_id("c1")).excluded);
        assert!(!c.describe(&SourceInfo::from_docker_id("c2")).excluded);
        c.apply_namespaces(
            Change::Apply(ns("quiet", &[(NAMESPACE_EXCLUDE_LABEL, "true")])),
            0,
        );
        assert!(c.describe(&SourceInfo::from_docker_id("c2")).excluded);
        assert!(
            c.describe(&SourceInfo::from_cri_dirs("quiet_x_u7", "y"))
                .excluded,
            "an unknown pod of an excluded namespace"
        );
    }

    #[test]
    fn deleted_and_unlisted_entries_stay_for_the_grace_period() {
        let c = KubeCache::new(GRACE);
        let ms = GRACE.as_millis() as u64;
        c.apply_pods(
            Change::Replace(vec![pod("u1", "a", "c1"), pod("u2", "a", "c2")]),
            1000,
        );
        c.apply_namespaces(Change::Replace(vec![ns("a", &[])]), 1000);
        assert!(c.synced());
        c.apply_pods(Change::Delete(pod("u1", "a", "c1")), 2000);
        // A relist that no longer has u2: deleted while nobody watched.
        c.apply_pods(Change::Replace(vec![pod("u3", "a", "c3")]), 3000);
        c.apply_namespaces(Change::Replace(vec![]), 3000);
        for id in ["c1", "c2", "c3"] {
            let d = c.describe(&SourceInfo::from_docker_id(id));
            assert!(d.known && d.meta.namespace_id.is_some(), "{id}");
        }
        assert_eq!(c.expire(2000 + ms - 1), 0);
        assert_eq!(c.expire(2000 + ms), 1, "u1 expires first");
        assert!(!c.describe(&SourceInfo::from_docker_id("c1")).known);
        assert!(c.describe(&SourceInfo::from_docker_id("c2")).known);
        assert_eq!(c.expire(3000 + ms), 2, "u2 and the namespace");
        assert_eq!(c.len(), (1, 0));
        // A pod deleted twice keeps its first deletion time.
        c.apply_pods(Change::Delete(pod("u3", "a", "c3")), 10_000);
        c.apply_pods(Change::Delete(pod("u3", "a", "c3")), 20_000);
        assert_eq!(c.expire(10_000 + ms), 1);
    }

    #[test]
    fn snapshot_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let c = KubeCache::new(GRACE);
        assert!(!c.save(dir.path()).unwrap(), "nothing to write");
        c.apply_pods(Change::Apply(pod("u1", "a", "c1")), 0);
        c.apply_pods(Change::Delete(pod("u2", "a", "c2")), now_ms());
        c.apply_pods(Change::Delete(pod("u3", "a", "c3")), 1);
        c.apply_namespaces(Change::Apply(ns("a", &[("k", "v")])), 0);
        assert!(c.save(dir.path()).unwrap());
        assert!(!c.save(dir.path()).unwrap(), "unchanged since");
        assert!(!dir.path().join("kubernetes-cache.tmp").exists());

        let back = KubeCache::new(GRACE);
        assert_eq!(back.load(dir.path(), now_ms()).unwrap(), 3);
        assert!(!back.synced(), "a snapshot is not a sync");
        assert_eq!(back.len(), (2, 1), "u3's grace ran out while stopped");
        let d = back.describe(&SourceInfo::from_docker_id("c2"));
        assert!(d.known);
        assert_eq!(d.meta.namespace_labels["k"], "v");

        let p = dir.path().join(SNAPSHOT_FILE);
        let good = std::fs::read(&p).unwrap();
        assert!(decode(&p, &good).is_ok());
        let mut flipped = good.clone();
        let i = flipped.len() - 2;
        flipped[i] ^= 1;
        assert!(matches!(
            decode(&p, &flipped),
            Err(CacheError::Checksum { .. })
        ));
        assert!(matches!(
            decode(&p, b"nope"),
            Err(CacheError::Header { .. })
        ));
        assert!(matches!(
            decode(&p, b"shipper-kubernetes-cache 7 0\n{}"),
            Err(CacheError::Version { found: 7, .. })
        ));
        let body = b"{\"pods\":7,\"namespaces\":[]}";
        let mut bad = format!("{} 1 {:08x}\n", KIND.magic, crc32fast::hash(body)).into_bytes();
        bad.extend_from_slice(body);
        assert!(matches!(decode(&p, &bad), Err(CacheError::Json { .. })));
        std::fs::write(&p, &flipped).unwrap();
        assert!(KubeCache::new(GRACE).load(dir.path(), 0).is_err());
        assert_eq!(
            KubeCache::new(GRACE)
                .load(&dir.path().join("missing"), 0)
                .unwrap(),
            0
        );
    }

    #[test]
    fn waits_are_bounded_and_woken() {
        let c = std::sync::Arc::new(KubeCache::new(GRACE));
        let seen = c.changes();
        let t = Instant::now();
        assert!(!c.wait_change(seen, Instant::now() + Duration::from_millis(20)));
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert!(!c.wait_synced(Duration::from_millis(1)));
        let writer = {
            let c = c.clone();
            std::thread::spawn(move || {
                c.apply_pods(Change::Replace(vec![]), 0);
                c.apply_namespaces(Change::Replace(vec![]), 0);
            })
        };
        assert!(c.wait_synced(Duration::from_secs(10)));
        assert!(c.wait_change(seen, Instant::now() + Duration::from_secs(10)));
        writer.join().unwrap();
    }
}
