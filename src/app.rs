//! Wiring: builds the pipeline from a [`Config`] and runs it (the agent, or the dry-run).
//! The stop order and the signals are [`crate::shutdown`]'s; each stage owns its rules.

use crate::appender::{Appender, Handoff};
use crate::batch::Limits;
use crate::checkpoint::Checkpoints;
use crate::config::Config;
use crate::discover::Roots;
use crate::encode::Encoder;
use crate::enrich::kube::{api_source, spawn_watch, WatchHandle, WatchOptions};
use crate::enrich::{KubeCache, MetaSource, PodIndex};
use crate::metrics::{ExitGuard, GaugeFn, Stats, Worker};
use crate::reader::agent::{Abandoned, Handover, LoopSettings};
use crate::reader::{Reader, ReaderSettings};
use crate::shutdown::{self, Stop};
use crate::tail::{ReadLimits, TailSettings};
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The reader hands NDJSON to the appender in chunks of about this size.
const CHUNK_BYTES: usize = 256 << 10;
/// Chunks queued between reader and appender (with one being filled and one being
/// compressed, this bounds the NDJSON in memory to a few chunks).
const CHUNKS_QUEUED: usize = 2;

/// Options of `--dry-run`.
#[derive(Debug, Clone, Default)]
pub struct DryRun {
    pub pods: Option<PathBuf>,
    pub follow: bool,
}

/// The reader settings a config implies.
pub fn reader_settings(cfg: &Config) -> ReaderSettings {
    let i = &cfg.input;
    let max_record_bytes = usize::try_from(i.max_record_bytes).unwrap_or(usize::MAX);
    ReaderSettings {
        roots: Roots {
            docker: i.docker_root.clone(),
            pods: i.pods_root.clone(),
        },
        tail: TailSettings {
            limits: ReadLimits {
                max_record_bytes,
                read_bytes: usize::try_from(i.read_bytes).unwrap_or(usize::MAX),
            },
            budget: i.turn_budget_bytes,
            drain_grace: Duration::from_millis(i.drain_grace_ms),
        },
        record: crate::record::Settings { max_record_bytes },
        encoder: Encoder::for_target(&cfg.elasticsearch.target())
            .with_labels(cfg.kubernetes.dedot_labels, cfg.kubernetes.annotations),
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

/// Where files get their metadata: the live cache when there is one.
fn meta_source(cfg: &Config, kube: Option<&KubeMeta>) -> MetaSource {
    match kube {
        Some(k) => MetaSource::Live {
            cache: k.cache.clone(),
            wait: Duration::from_millis(cfg.kubernetes.pending_wait_ms),
        },
        None => MetaSource::Node,
    }
}

/// Runs the dry-run: every file from its beginning, in path order, bulk NDJSON to `out`.
/// With `follow`, keeps reading until `stop` is set. Returns the counters.
pub fn dry_run(
    cfg: &Config,
    opts: &DryRun,
    out: &mut dyn Write,
    stop: &AtomicBool,
) -> anyhow::Result<Arc<Stats>> {
    let stats = Arc::new(Stats::default());
    let (source, kube) = match &opts.pods {
        Some(p) => (MetaSource::PodList(PodIndex::load(p)?), None),
        None => {
            let kube = start_kube(cfg, true, &stats)?;
            (meta_source(cfg, kube.as_ref()), kube)
        }
    };
    if let Some(k) = &kube {
        // The dry-run's output should not depend on how fast the API answers: give the
        // first list the same bounded wait a new file gets.
        let wait = Duration::from_millis(cfg.kubernetes.pending_wait_ms);
        if !k.cache.wait_synced(wait) {
            tracing::warn!("Kubernetes API has not answered yet; reading with cached and path metadata meanwhile");
        }
    }
    let mut reader = Reader::new(
        reader_settings(cfg),
        source,
        Default::default(),
        stats.clone(),
    );
    let rescan_every = Duration::from_millis(cfg.input.rescan_interval_ms);
    crate::reader::dry_run::run(&mut reader, out, opts.follow, stop, rescan_every)
        .context("writing output")?;
    if let Some(k) = kube {
        k.watch.stop();
    }
    Ok(stats)
}

/// Test hook, read once at start: `reader` makes the reader thread stop (it blocks
/// without heartbeats until shutdown), `reader-exit` makes it end at once with an error,
/// `reader-panic` makes it panic, so tests of the real binary can see `/healthz` fail and
/// the agent stop. Nothing sets it in production; the agent logs a warning when it is set.
pub const TEST_WEDGE_ENV: &str = "SHIPPER_TEST_WEDGE";

/// What [`TEST_WEDGE_ENV`] asks of the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wedge {
    None,
    Block,
    Exit,
    Panic,
}

fn wedge() -> anyhow::Result<Wedge> {
    let w = match std::env::var(TEST_WEDGE_ENV).as_deref() {
        Ok("reader") => Wedge::Block,
        Ok("reader-exit") => Wedge::Exit,
        Ok("reader-panic") => Wedge::Panic,
        Ok(other) => {
            anyhow::bail!(
                "{TEST_WEDGE_ENV}=`{other}`: expected reader, reader-exit or reader-panic"
            )
        }
        Err(_) => Wedge::None,
    };
    if w != Wedge::None {
        tracing::warn!("{TEST_WEDGE_ENV} is set: the reader will stop (a test hook; never set it in production)");
    }
    Ok(w)
}

/// The reader as [`TEST_WEDGE_ENV`] asks: stuck without heartbeats until shutdown, gone
/// at once, or panicking.
fn wedged_reader(wedge: Wedge, stop: &AtomicBool) -> anyhow::Result<()> {
    match wedge {
        Wedge::Exit => anyhow::bail!("{TEST_WEDGE_ENV}=reader-exit: the reader ends here"),
        Wedge::Panic => panic!("{TEST_WEDGE_ENV}=reader-panic: the reader panics here"),
        _ => {}
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Runs the agent until a stop signal (or a failed worker), then stops in the order
/// [`crate::shutdown`] documents. Returns the counters; an error if a worker failed.
pub fn agent(cfg: &Config) -> anyhow::Result<Arc<Stats>> {
    use crate::buffer;
    use crate::ship::{client::Client, dead_letter::DeadLetter, Shipper};

    let stats = Arc::new(Stats::default());
    let stop = Stop::new();
    let data_dir = &cfg.agent.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    // Metadata never holds up reading or shipping: files wait (bounded) per file.
    let kube = start_kube(cfg, false, &stats)?;
    let cps = match Checkpoints::load(data_dir) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "checkpoints unreadable; reading every file from the start (ids make the repeats harmless)");
            Checkpoints::empty_at(data_dir)
        }
    };
    let resume = cps.table();
    let b = &cfg.buffer;
    let (buf, writer) = buffer::open(
        &data_dir.join("buffer"),
        b.max_bytes,
        b.segment_bytes,
        b.fsync,
        stats.clone(),
    )?;
    let es = &cfg.elasticsearch;
    let dead = DeadLetter::new(
        data_dir.clone(),
        cfg.agent.dead_letter_max_bytes,
        stats.clone(),
    );
    let shipper = Shipper::new(
        Client::new(es)?,
        buf.clone(),
        es.into(),
        stats.clone(),
        dead,
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("shipper-io")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.spawn(shutdown::signals(stop.clone()));
    let max_bytes = b.max_bytes as f64;
    let mut gauges: Vec<(&'static str, &'static str, GaugeFn)> = vec![(
        "shipper_buffer_max_bytes",
        "Size cap of the buffer (buffer.max_bytes).",
        Box::new(move || max_bytes),
    )];
    gauges.extend(shipper.gauges());
    let status = crate::status::start(cfg, &runtime, &stats, gauges)?;
    stats.live.start(Worker::Runtime);
    runtime.spawn({
        let stats = stats.clone();
        async move {
            loop {
                stats.live.beat(Worker::Runtime);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    stats.live.start(Worker::Shipper);
    let ship_task = runtime.spawn({
        let guard = ExitGuard(stats.clone(), Worker::Shipper);
        let run = shipper.clone().run();
        async move {
            run.await;
            drop(guard);
        }
    });
    let wedge = wedge()?;

    let (tx, rx) = crossbeam_channel::bounded::<Handoff>(CHUNKS_QUEUED);
    // Emptied chunks go back to the reader, so chunk memory is allocated once.
    // Without compression a batch is kept as its chunks until appended: room for all.
    let pool_size = usize::try_from(es.batch_bytes).unwrap_or(usize::MAX) / CHUNK_BYTES + 4;
    let (pool_tx, pool_rx) = crossbeam_channel::bounded::<Vec<u8>>(pool_size.min(512));
    let appender = Appender::new(writer, cps, es.compression, stats.clone())
        .context("starting the checkpoint writer")?;
    let appender = shutdown::spawn_worker(("buffer", "buffer writer"), stop.clone(), |_| false, {
        let (stats, stop) = (stats.clone(), stop.clone());
        move || {
            stats.live.start(Worker::Appender);
            let _guard = ExitGuard(stats, Worker::Appender);
            appender.run(&rx, &pool_tx, stop.flag())
        }
    })?;
    let mut reader = Reader::new(
        reader_settings(cfg),
        meta_source(cfg, kube.as_ref()),
        resume,
        stats.clone(),
    );
    let loop_settings = LoopSettings {
        limits: Limits {
            bytes: usize::try_from(es.batch_bytes).unwrap_or(usize::MAX),
            docs: es.batch_docs,
            linger: Duration::from_millis(es.linger_ms),
            chunk_bytes: CHUNK_BYTES.min(usize::try_from(es.batch_bytes).unwrap_or(usize::MAX)),
        },
        rescan_every: Duration::from_millis(cfg.input.rescan_interval_ms),
    };
    let reader =
        shutdown::spawn_worker(("read", "reader"), stop.clone(), |e| e.is::<Abandoned>(), {
            let (stats, stop) = (stats.clone(), stop.clone());
            move || {
                stats.live.start(Worker::Reader);
                let _guard = ExitGuard(stats, Worker::Reader);
                if wedge != Wedge::None {
                    return wedged_reader(wedge, stop.flag());
                }
                let handover = Handover { tx, pool: pool_rx };
                crate::reader::agent::run(&mut reader, &handover, stop.flag(), loop_settings)
            }
        })?;

    if let Some(s) = &status {
        s.ready.store(true, Ordering::Relaxed);
    }
    runtime.block_on(stop.wait());
    stats.live.stopping();
    if let Some(s) = &status {
        s.ready.store(false, Ordering::Relaxed);
    }
    tracing::info!("stopping: no more reading; flushing the buffer");
    // The reader seals its last batch, the appender makes it durable and writes the
    // checkpoints; then the buffer closes and shipping goes on until the deadline.
    let read = shutdown::join(reader, "reader");
    let appended = shutdown::join(appender, "buffer");
    if let Ok(writer) = &appended {
        writer.close();
    }
    let deadline = Duration::from_millis(cfg.agent.shutdown_deadline_ms);
    match runtime.block_on(async { tokio::time::timeout(deadline, ship_task).await }) {
        Ok(_) => tracing::info!("buffer delivered; exiting"),
        Err(_) => tracing::warn!(
            records = buf.records(),
            "shutdown deadline reached; the buffer keeps the rest for the next start"
        ),
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(kube);
    if let Some(why) = stop.failure() {
        anyhow::bail!("a worker failed: {why}");
    }
    match (read, appended) {
        (Err(e), _) if !e.is::<Abandoned>() => Err(e),
        (_, Err(e)) => Err(e),
        _ => Ok(stats),
    }
}
