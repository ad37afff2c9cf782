//! The Kubernetes API side of metadata: which API server to talk to, and the two watches
//! (this node's Pods, all Namespaces) that feed a [`KubeCache`].
//!
//! - **Watch, not GET.** `kube`'s [`watcher`] lists once, then watches from the list's
//!   `resourceVersion`; a dropped watch resumes from the last version it saw (events or
//!   bookmarks), a `410 Gone` relists, and errors back off exponentially (0.8 s doubling
//!   to 30 s, with jitter). Lists ask for `resourceVersion=0`, which the API server
//!   answers from its watch cache instead of etcd. No request is ever made per record.
//! - **Node-scoped.** Pods are watched with `fieldSelector=spec.nodeName=<node>`, so an
//!   agent holds only its own node's pods whatever the cluster's size.
//! - **Our own store rather than `kube`'s reflector `Store`.** The reflector forgets a
//!   pod the moment it is deleted or missing from a relist; here a deleted pod must stay
//!   for a grace period, be found by container id and pod uid, carry a revision for
//!   cheap change detection, and be snapshotted to disk. So watcher events are applied
//!   to [`KubeCache`] the way the reflector applies them to its store (a relist is
//!   buffered from `Init` to `InitDone` and replaces the contents at once).
//! - **Trimmed.** Objects are reduced to [`PodEntry`] / [`NamespaceEntry`] as they arrive.
//!
//! The watches run on their own small tokio runtime and thread ([`spawn_watch`]); the
//! tailer is synchronous and only reads the cache. [`run`] is the same work as a future,
//! for a caller that has a runtime of its own.

use super::cache::{now_ms, Change, KubeCache, NamespaceEntry};
use super::PodEntry;
use crate::metrics::{ExitGuard, Stats, Worker};
use ::kube::runtime::watcher::{self, watcher, Event};
use ::kube::runtime::WatchStreamExt;
use ::kube::{Api, Client};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

/// Where the in-cluster service account's token is mounted.
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: ::kube::config::KubeconfigError,
    },
    #[error("kubeconfig from KUBECONFIG: {0}")]
    KubeconfigEnv(#[source] ::kube::config::KubeconfigError),
    #[error("in-cluster configuration: {0}")]
    InCluster(#[source] ::kube::config::InClusterError),
    #[error("creating the Kubernetes client: {0}")]
    Client(#[source] ::kube::Error),
    #[error("starting the metadata watch: {0}")]
    Runtime(#[source] std::io::Error),
}

impl KubeError {
    /// A small fixed label for error metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            KubeError::Kubeconfig { .. } | KubeError::KubeconfigEnv(_) => "kubeconfig",
            KubeError::InCluster(_) => "in_cluster",
            KubeError::Client(_) => "client",
            KubeError::Runtime(_) => "runtime",
        }
    }
}

/// How to reach the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSource {
    /// A kubeconfig file named in the configuration (`--kubeconfig`).
    Kubeconfig(PathBuf),
    /// The pod's service account (`KUBERNETES_SERVICE_HOST` and a mounted token).
    InCluster,
    /// The file(s) in `KUBECONFIG`.
    KubeconfigEnv,
}

/// Picks the API source. `kubeconfig` is the configured file (empty: none). The
/// dry-run uses an API only when one was named explicitly; the agent falls back to the
/// service account, then `KUBECONFIG`. `None` means: metadata from paths only.
pub fn api_source(
    kubeconfig: &std::path::Path,
    dry_run: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Option<ApiSource> {
    if !kubeconfig.as_os_str().is_empty() {
        return Some(ApiSource::Kubeconfig(kubeconfig.to_owned()));
    }
    if dry_run {
        return None;
    }
    let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
    if set("KUBERNETES_SERVICE_HOST") && std::path::Path::new(SERVICE_ACCOUNT_TOKEN).exists() {
        return Some(ApiSource::InCluster);
    }
    if set("KUBECONFIG") {
        return Some(ApiSource::KubeconfigEnv);
    }
    None
}

/// Builds a client. Must run inside a tokio runtime (the client spawns a task).
pub async fn client(source: &ApiSource) -> Result<Client, KubeError> {
    let config = match source {
        ApiSource::Kubeconfig(path) => {
            let err = |source| KubeError::Kubeconfig {
                path: path.clone(),
                source,
            };
            let kc = ::kube::config::Kubeconfig::read_from(path).map_err(err)?;
            ::kube::Config::from_custom_kubeconfig(
                kc,
                &::kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(err)?
        }
        ApiSource::InCluster => ::kube::Config::incluster().map_err(KubeError::InCluster)?,
        ApiSource::KubeconfigEnv => {
            ::kube::Config::from_kubeconfig(&::kube::config::KubeConfigOptions::default())
                .await
                .map_err(KubeError::KubeconfigEnv)?
        }
    };
    Client::try_from(config).map_err(KubeError::Client)
}

/// What the watch needs besides the client.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Watch only this node's pods. `None` watches every pod: for a dry-run on a laptop,
    /// never for an agent on a large cluster.
    pub node_name: Option<String>,
    /// Snapshot the cache into this directory (the agent's data dir); `None`: never.
    pub snapshot_dir: Option<PathBuf>,
    /// Write the snapshot at most this often (when something changed).
    pub snapshot_interval: Duration,
    /// Wait this long before the first list (see [`start_delay`]).
    pub start_delay: Duration,
}

/// How long a restart waits before it lists: a spread of `jitter` given by the node's
/// name (the same every time for one node, even over many), and none at all without a
/// snapshot (`loaded` pods) to enrich files from meanwhile, or without a node name.
pub fn start_delay(node: Option<&str>, jitter: Duration, loaded: usize) -> Duration {
    let (Some(node), true) = (node, loaded > 0) else {
        return Duration::ZERO;
    };
    let ms = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(xxhash_rust::xxh3::xxh3_64(node.as_bytes()) % ms)
}

/// Watches pods and namespaces into `cache` until `shutdown` completes, expiring deleted
/// entries and writing snapshots along the way, and a last snapshot at the end.
pub async fn run(
    client: Client,
    opts: WatchOptions,
    cache: Arc<KubeCache>,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) {
    // `resourceVersion=0` lets the API server answer lists from its watch cache rather
    // than etcd: what matters when thousands of agents relist at once. It is only sent
    // without a page size, and the watch cache does not paginate anyway (a node has at
    // most a few hundred pods).
    let list_config = || watcher::Config {
        page_size: None,
        ..watcher::Config::default().any_semantic()
    };
    let mut pod_config = list_config();
    if let Some(node) = &opts.node_name {
        pod_config = pod_config.fields(&format!("spec.nodeName={node}"));
    }
    let pods = watcher(Api::<Pod>::all(client.clone()), pod_config).default_backoff();
    let namespaces = watcher(Api::<Namespace>::all(client), list_config()).default_backoff();
    let pods = drive(
        "pods",
        pods,
        |p: &Pod| Some(PodEntry::from_pod(p)),
        {
            let cache = cache.clone();
            let stats = stats.clone();
            move |c| {
                cache.apply_pods(c, now_ms());
                let pods = cache.len().0 as u64;
                stats
                    .kube_cache_pods
                    .store(pods, std::sync::atomic::Ordering::Relaxed);
            }
        },
        &stats,
    );
    let namespaces = drive(
        "namespaces",
        namespaces,
        NamespaceEntry::from_namespace,
        {
            let cache = cache.clone();
            move |c| cache.apply_namespaces(c, now_ms())
        },
        &stats,
    );
    let mut pods = pin!(pods);
    let mut namespaces = pin!(namespaces);
    let mut shutdown = pin!(shutdown);
    let mut ticks = tokio::time::interval(opts.snapshot_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The watch's own runtime answering is what liveness can know; the API server being
    // unreachable is retried, never a reason to restart the agent.
    // The task waits on the watches' streams: parked (healthy) while it runs; its
    // exit is what liveness sees.
    stats.live.start(Worker::Kube);
    stats.live.park(Worker::Kube);
    let _guard = ExitGuard(stats.clone(), Worker::Kube);
    if !opts.start_delay.is_zero() {
        // Files are enriched from the snapshot meanwhile; the watches (whose first poll
        // lists) start once the node's turn comes.
        tracing::info!(delay_ms = opts.start_delay.as_millis() as u64, "metadata snapshot loaded: listing pods and namespaces after this node's start delay (kubernetes.start_jitter_ms), so a rollout does not list in lockstep");
        tokio::select! {
            () = tokio::time::sleep(opts.start_delay) => {}
            () = &mut shutdown => return,
        }
    }
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut pods => break,
            () = &mut namespaces => break,
            _ = ticks.tick() => {
                // Working: a save that hangs shows as a stale heartbeat.
                stats.live.beat(Worker::Kube);
                let expired = cache.expire(now_ms());
                if expired > 0 {
                    tracing::debug!(expired, "forgot deleted pods and namespaces past their grace period");
                }
                save(&cache, opts.snapshot_dir.as_ref()).await;
                stats.live.park(Worker::Kube);
            }
        }
    }
    save(&cache, opts.snapshot_dir.as_ref()).await;
}

/// Applies one watch's events to the cache. Returns only if the stream ends (it does
/// not: the watcher retries forever).
async fn drive<K, E>(
    what: &'static str,
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    convert: fn(&K) -> Option<E>,
    apply: impl Fn(Change<E>),
    stats: &Stats,
) {
    let mut stream = pin!(stream);
    let mut listed: Vec<E> = Vec::new();
    let mut lists = 0u64;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => {
                // Every list after the first is the watch starting over.
                if lists > 0 {
                    Stats::add(&stats.kube_watch_restarts, 1);
                }
                lists += 1;
                listed.clear();
            }
            Ok(Event::InitApply(obj)) => listed.extend(convert(&obj)),
            Ok(Event::InitDone) => {
                tracing::info!(what, count = listed.len(), "listed");
                apply(Change::Replace(std::mem::take(&mut listed)));
            }
            Ok(Event::Apply(obj)) => {
                if let Some(e) = convert(&obj) {
                    apply(Change::Apply(e));
                }
            }
            Ok(Event::Delete(obj)) => {
                if let Some(e) = convert(&obj) {
                    apply(Change::Delete(e));
                }
            }
            Err(e) => {
                Stats::add(&stats.kube_errors, 1);
                crate::log_every!(crate::logging::EVERY, warn, what, error = %e, "Kubernetes API watch failed; retrying with backoff, metadata comes from the cache meanwhile");
            }
        }
    }
}

/// Writes the snapshot off the runtime's thread (fsync blocks).
async fn save(cache: &Arc<KubeCache>, dir: Option<&PathBuf>) {
    let Some(dir) = dir.cloned() else { return };
    let cache = cache.clone();
    match tokio::task::spawn_blocking(move || cache.save(&dir)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the metadata snapshot; will retry"),
        Err(e) => tracing::warn!(error = %e, "metadata snapshot task failed"),
    }
}

/// The watch running on its own thread; stopping it writes a last snapshot.
#[derive(Debug)]
pub struct WatchHandle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WatchHandle {
    /// Stops the watch and waits for its last snapshot.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("metadata watch thread panicked");
            }
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the watch on a small single-threaded tokio runtime of its own. Errors in the
/// client configuration (an unreadable kubeconfig) are returned here; errors talking to
/// the API server are retried for ever in the background.
pub fn spawn_watch(
    source: &ApiSource,
    opts: WatchOptions,
    cache: Arc<KubeCache>,
    stats: Arc<Stats>,
) -> Result<WatchHandle, KubeError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(KubeError::Runtime)?;
    let client = rt.block_on(client(source))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(String::from("shipper-kube"))
        .spawn(move || {
            rt.block_on(run(client, opts, cache, stats, async {
                let _ = rx.await;
            }));
        })
        .map_err(KubeError::Runtime)?;
    Ok(WatchHandle {
        stop: Some(tx),
        thread: Some(thread),
    })
}

/// The live metadata cache and the watch feeding it.
pub struct LiveMeta {
    pub cache: Arc<KubeCache>,
    pub watch: WatchHandle,
}

impl LiveMeta {
    /// Files take their metadata from this cache; one whose pod is not in it waits up
    /// to `wait` (see [`MetaSource::Live`]).
    pub fn source(&self, wait: Duration) -> super::MetaSource {
        super::MetaSource::Live {
            cache: self.cache.clone(),
            wait,
        }
    }
}

/// Starts the metadata watch if the settings allow and an API can be found (see
/// [`api_source`]); `None` means metadata from paths only. The cache starts from the
/// snapshot in `data_dir`; the agent (`dry_run` false) also writes snapshots there, the
/// dry-run only reads it.
pub fn start(
    k: &crate::config::Kubernetes,
    data_dir: &std::path::Path,
    dry_run: bool,
    stats: &Arc<Stats>,
) -> anyhow::Result<Option<LiveMeta>> {
    use anyhow::Context;
    if !k.enabled {
        tracing::info!("Kubernetes API disabled; metadata from log paths only");
        return Ok(None);
    }
    let Some(source) = api_source(&k.kubeconfig, dry_run, |v| std::env::var(v).ok()) else {
        if !dry_run {
            tracing::warn!("no Kubernetes API configuration (not in a cluster, no KUBECONFIG, no --kubeconfig); metadata from log paths only (shipper.metadata: partial)");
        }
        return Ok(None);
    };
    let node_name = Some(k.node_name.clone()).filter(|n| !n.is_empty());
    if node_name.is_none() && !dry_run {
        anyhow::bail!("kubernetes.node_name is not set: set NODE_NAME from the downward API (fieldRef spec.nodeName) so the agent watches only its own node's pods, or run with --no-kubernetes");
    }
    let cache = Arc::new(KubeCache::new(Duration::from_millis(k.deleted_grace_ms)));
    let loaded = match cache.load(data_dir, now_ms()) {
        Ok(0) => 0,
        Ok(n) => {
            tracing::info!(pods = n, "metadata cache loaded from snapshot");
            n
        }
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the metadata snapshot; starting from the API alone");
            0
        }
    };
    let jitter = Duration::from_millis(if dry_run { 0 } else { k.start_jitter_ms });
    let opts = WatchOptions {
        start_delay: start_delay(node_name.as_deref(), jitter, loaded),
        node_name,
        snapshot_dir: (!dry_run).then(|| data_dir.to_owned()),
        snapshot_interval: Duration::from_millis(k.snapshot_interval_ms),
    };
    let watch = spawn_watch(&source, opts, cache.clone(), stats.clone())
        .context("starting the Kubernetes metadata watch")?;
    Ok(Some(LiveMeta { cache, watch }))
}

#[cfg(test)]
mod jitter_tests {
    use super::*;

    #[test]
    fn start_delay_spreads_nodes_and_waits_only_with_a_snapshot() {
        let j = Duration::from_secs(10);
        assert_eq!(
            start_delay(Some("node-1"), j, 0),
            Duration::ZERO,
            "first start"
        );
        assert_eq!(start_delay(None, j, 5), Duration::ZERO);
        assert_eq!(
            start_delay(Some("node-1"), Duration::ZERO, 5),
            Duration::ZERO
        );
        let d = start_delay(Some("node-1"), j, 5);
        assert_eq!(d, start_delay(Some("node-1"), j, 9), "the same for a node");
        assert!(d < j);
        // 5,000 nodes over 10 s: no 100 ms slot holds more than three times its share.
        let mut slots = [0u32; 100];
        for n in 0..5000 {
            let d = start_delay(
                Some(&format!("ip-10-0-{}-{}.ec2.internal", n / 250, n % 250)),
                j,
                1,
            );
            slots[(d.as_millis() / 100) as usize] += 1;
        }
        assert!(slots.iter().all(|&c| c <= 150), "{slots:?}");
        assert!(slots.iter().all(|&c| c >= 15), "{slots:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn api_source_rules() {
        let none = |_: &str| None;
        let kc = |k: &str| (k == "KUBECONFIG").then(|| String::from("/k"));
        let explicit = Path::new("/explicit");
        let unset = Path::new("");
        assert_eq!(
            api_source(explicit, true, none),
            Some(ApiSource::Kubeconfig(explicit.into()))
        );
        assert_eq!(api_source(unset, true, kc), None, "dry-run: explicit only");
        assert_eq!(api_source(unset, false, kc), Some(ApiSource::KubeconfigEnv));
        assert_eq!(api_source(unset, false, none), None);
    }

    #[test]
    fn unreadable_kubeconfig_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        let src = ApiSource::Kubeconfig(path.clone());
        let cache = Arc::new(KubeCache::new(Duration::from_secs(1)));
        let stats = Arc::new(Stats::default());
        let opts = WatchOptions {
            node_name: None,
            snapshot_dir: None,
            snapshot_interval: Duration::from_secs(1),
            start_delay: Duration::ZERO,
        };
        let e = spawn_watch(&src, opts.clone(), cache.clone(), stats.clone()).unwrap_err();
        assert_eq!(e.metric_label(), "kubeconfig");
        assert!(e.to_string().contains("kubeconfig"), "{e}");
        std::fs::write(&path, "clusters: [not: a: kubeconfig").unwrap();
        assert!(spawn_watch(&src, opts, cache, stats).is_err());
    }
}
