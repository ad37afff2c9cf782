//! Wiring: builds the pipeline from a [`Config`] and runs it.

use crate::checkpoint::Checkpoints;
use crate::config::Config;
use crate::discover::{Roots, Waker};
use crate::encode::Encoder;
use crate::enrich::kube::{api_source, spawn_watch, WatchHandle, WatchOptions};
use crate::enrich::{KubeCache, PodIndex};
use crate::metrics::Stats;
use crate::tail::{ReadLimits, TailConfig, Tailer};
use anyhow::Context;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Output is written in chunks of about this size (one write per chunk).
const FLUSH_BYTES: usize = 1 << 20;

/// Options of `--dry-run`.
#[derive(Debug, Clone, Default)]
pub struct DryRun {
    pub pods: Option<PathBuf>,
    pub follow: bool,
}

/// The tailer settings a config implies.
pub fn tail_config(cfg: &Config) -> TailConfig {
    let i = &cfg.input;
    TailConfig {
        roots: Roots {
            docker: i.docker_root.clone(),
            pods: i.pods_root.clone(),
        },
        limits: ReadLimits {
            max_record_bytes: usize::try_from(i.max_record_bytes).unwrap_or(usize::MAX),
            read_bytes: usize::try_from(i.read_bytes).unwrap_or(usize::MAX),
        },
        budget: i.turn_budget_bytes,
        drain_grace: Duration::from_millis(i.drain_grace_ms),
        dedot: cfg.kubernetes.dedot_labels,
        annotations: cfg.kubernetes.annotations,
    }
}

/// The live metadata cache and the watch feeding it.
pub struct KubeMeta {
    pub cache: Arc<KubeCache>,
    pub watch: WatchHandle,
}

/// Starts the Kubernetes metadata watch if the configuration allows and an API can be
/// found (see [`api_source`]); `None` means metadata from paths only. The cache starts
/// from the snapshot in the data directory; the agent (`dry_run` false) also writes
/// snapshots there, the dry-run only reads it.
pub fn start_kube(
    cfg: &Config,
    dry_run: bool,
    stats: &Arc<Stats>,
) -> anyhow::Result<Option<KubeMeta>> {
    let k = &cfg.kubernetes;
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
    let dir = &cfg.agent.data_dir;
    match cache.load(dir, crate::enrich::now_ms()) {
        Ok(0) => {}
        Ok(n) => tracing::info!(pods = n, "metadata cache loaded from snapshot"),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the metadata snapshot; starting from the API alone")
        }
    }
    let opts = WatchOptions {
        node_name,
        snapshot_dir: (!dry_run).then(|| dir.clone()),
        snapshot_interval: Duration::from_millis(k.snapshot_interval_ms),
    };
    let watch = spawn_watch(&source, opts, cache.clone(), stats.clone())
        .context("starting the Kubernetes metadata watch")?;
    Ok(Some(KubeMeta { cache, watch }))
}

/// Runs the dry-run: every file from its beginning, in path order, bulk NDJSON to `out`.
/// With `follow`, keeps reading until `stop` is set. Returns the counters.
pub fn dry_run(
    cfg: &Config,
    opts: &DryRun,
    out: &mut dyn Write,
    stop: &AtomicBool,
) -> anyhow::Result<Arc<Stats>> {
    let pods = match &opts.pods {
        Some(p) => Some(PodIndex::load(p)?),
        None => None,
    };
    let stats = Arc::new(Stats::default());
    let kube = match pods {
        Some(_) => None,
        None => start_kube(cfg, true, &stats)?,
    };
    let tail_cfg = tail_config(cfg);
    let mut tailer = Tailer::new(
        tail_cfg.clone(),
        Encoder::new(&cfg.elasticsearch.index_prefix),
        pods,
        stats.clone(),
    );
    if let Some(k) = &kube {
        let wait = Duration::from_millis(cfg.kubernetes.pending_wait_ms);
        // The dry-run's output should not depend on how fast the API answers: give the
        // first list the same bounded wait a new file gets.
        if !k.cache.wait_synced(wait) {
            tracing::warn!("Kubernetes API has not answered yet; reading with cached and path metadata meanwhile");
        }
        tailer.set_kube(k.cache.clone(), wait);
    }
    let cps = Checkpoints::in_memory();
    let waker = opts.follow.then(|| Waker::new(&tail_cfg.roots));
    tailer.start(&cps);
    let mut buf = Vec::with_capacity(FLUSH_BYTES * 2);
    let mut write = |b: &mut Vec<u8>| -> io::Result<()> {
        out.write_all(b)?;
        b.clear();
        Ok(())
    };
    tailer
        .read_all_in_order(&cps, &mut buf, FLUSH_BYTES, &mut write)
        .context("writing output")?;
    if let Some(waker) = waker {
        for e in &waker.errors {
            tracing::warn!("{e}; relying on rescans");
        }
        follow(
            &mut tailer,
            &cps,
            &mut buf,
            &mut write,
            &waker,
            stop,
            Duration::from_millis(cfg.input.rescan_interval_ms),
        )?;
    }
    tailer.finish(&mut buf);
    write(&mut buf).context("writing output")?;
    out.flush().context("writing output")?;
    if let Some(k) = kube {
        k.watch.stop();
    }
    Ok(stats)
}

fn follow(
    tailer: &mut Tailer,
    cps: &Checkpoints,
    buf: &mut Vec<u8>,
    write: &mut dyn FnMut(&mut Vec<u8>) -> io::Result<()>,
    waker: &Waker,
    stop: &AtomicBool,
    rescan_every: Duration,
) -> anyhow::Result<()> {
    let mut last_scan = Instant::now();
    // A short idle wait so `stop` is honoured promptly even without file events.
    let idle_wait = rescan_every.min(Duration::from_millis(200));
    while !stop.load(Ordering::Relaxed) {
        if last_scan.elapsed() >= rescan_every {
            tailer.rescan(cps);
            last_scan = Instant::now();
        }
        let n = tailer.poll_round(cps, buf);
        write(buf).context("writing output")?;
        // A file waiting for its pod's metadata is looked at again soon.
        let wait = if tailer.waiting_for_metadata() {
            idle_wait.min(Duration::from_millis(20))
        } else {
            idle_wait
        };
        if n == 0 && waker.rx.recv_timeout(wait).is_ok() {
            // Coalesce a burst of events into one wake-up, and look for new files.
            while waker.rx.try_recv().is_ok() {}
            tailer.rescan(cps);
            last_scan = Instant::now();
        }
    }
    Ok(())
}
