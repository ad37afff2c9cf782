//! Wiring: builds the pipeline from a [`Config`] and runs it.

use crate::checkpoint::Checkpoints;
use crate::config::Config;
use crate::discover::{Roots, Waker};
use crate::encode::Encoder;
use crate::enrich::kube::{api_source, spawn_watch, WatchHandle, WatchOptions};
use crate::enrich::{KubeCache, PodIndex};
use crate::metrics::{ExitGuard, Stats, Worker};
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
        Encoder::for_target(&cfg.elasticsearch.target()),
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

/// Test hook, read once at start: `reader` makes the reader thread stop (it blocks
/// without heartbeats until shutdown), `reader-exit` makes it end at once, so tests of the
/// real binary can see `/healthz` fail. Nothing sets it in production; the agent logs a
/// warning when it is set.
pub const TEST_WEDGE_ENV: &str = "SHIPPER_TEST_WEDGE";

/// What [`TEST_WEDGE_ENV`] asks of the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wedge {
    None,
    Block,
    Exit,
}

/// From the reader to the buffer writer. A batch (one buffer frame, one bulk request)
/// arrives as [`ToBuffer::Data`] chunks and ends with [`ToBuffer::End`], so a whole
/// batch of NDJSON is never held in memory: the writer compresses chunks as they come.
enum ToBuffer {
    /// NDJSON of whole records (action and document lines), part of the current batch.
    Data { ndjson: Vec<u8>, records: u32 },
    /// The current batch ends here; resume points as of its end, safe once it is durable.
    End {
        positions: Vec<(crate::tail::FileId, crate::checkpoint::Position)>,
        closed: Vec<crate::tail::FileId>,
        /// Newest record timestamp in the batch (unix milliseconds), for
        /// `shipper_lag_seconds`.
        newest_record_ms: u64,
    },
    /// Files just identified, at their start positions: saved at once (see
    /// [`Tailer::take_new`]).
    Discovered(Vec<(crate::tail::FileId, crate::checkpoint::Position)>),
}

/// The reader gave up handing over a message because the agent is stopping and the
/// buffer is full.
#[derive(Debug, thiserror::Error)]
#[error("stopping with the buffer full")]
struct Abandoned;

/// How long a stopping reader or writer waits for room in a full buffer before leaving
/// the rest in the log files.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// The reader hands NDJSON to the buffer writer in chunks of about this size.
const CHUNK_BYTES: usize = 256 << 10;
/// Chunks queued between reader and writer (with one being filled and one being
/// compressed, this bounds the NDJSON in memory to a few chunks).
const CHUNKS_QUEUED: usize = 2;

/// The batch being built by the buffer writer: NDJSON compressed as it arrives (into
/// an output buffer reused from batch to batch), or the reader's chunks kept as they
/// are and written one after the other.
struct FrameBuilder {
    gzip: Option<flate2::write::GzEncoder<Vec<u8>>>,
    compressed: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    compress: bool,
    records: u32,
}

impl FrameBuilder {
    fn new(compress: bool) -> FrameBuilder {
        FrameBuilder {
            gzip: None,
            compressed: Vec::new(),
            chunks: Vec::new(),
            compress,
            records: 0,
        }
    }

    /// Takes a chunk; returns it when done with it (compressed), to be reused.
    fn write(&mut self, ndjson: Vec<u8>, records: u32) -> io::Result<Option<Vec<u8>>> {
        self.records = self.records.saturating_add(records);
        if !self.compress {
            self.chunks.push(ndjson);
            return Ok(None);
        }
        let out = &mut self.compressed;
        self.gzip
            .get_or_insert_with(|| {
                flate2::write::GzEncoder::new(std::mem::take(out), flate2::Compression::fast())
            })
            .write_all(&ndjson)?;
        Ok(Some(ndjson))
    }

    /// The finished payload, in parts (none when no record came).
    fn finish(&mut self) -> io::Result<Vec<&[u8]>> {
        if let Some(enc) = self.gzip.take() {
            self.compressed = enc.finish()?;
        }
        Ok(if self.compress {
            vec![&self.compressed[..]]
        } else {
            self.chunks.iter().map(Vec::as_slice).collect()
        })
    }

    /// Starts the next batch, keeping the compressed buffer's memory; hands back the
    /// chunks kept.
    fn reset(&mut self) -> std::vec::Drain<'_, Vec<u8>> {
        self.compressed.clear();
        self.records = 0;
        self.chunks.drain(..)
    }
}

/// Checkpoints are written at most this often (and at shutdown); in between they are
/// only in memory, which costs a few extra 409s after a crash, never data.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Runs the agent until `shutdown` resolves, then stops in order: stop reading, flush the
/// last batch into the buffer, write checkpoints, keep shipping until the buffer is empty
/// or the deadline passes.
pub fn agent(
    cfg: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Arc<Stats>> {
    use crate::buffer;
    use crate::ship::{client::Client, dead_letter::DeadLetter, ShipConfig, Shipper};
    use std::sync::Mutex;

    let stats = Arc::new(Stats::default());
    let data_dir = &cfg.agent.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    // Metadata never holds up reading or shipping: files wait (bounded) per file.
    let kube = start_kube(cfg, false, &stats)?;
    let kube_cache = kube.as_ref().map(|k| {
        (
            k.cache.clone(),
            Duration::from_millis(cfg.kubernetes.pending_wait_ms),
        )
    });
    let cps = match Checkpoints::load(data_dir) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "checkpoints unreadable; reading every file from the start (ids make the repeats harmless)");
            Checkpoints::empty_at(data_dir)
        }
    };
    let cps = Arc::new(Mutex::new(cps));
    let b = &cfg.buffer;
    let (buf, mut writer) = buffer::open(
        &data_dir.join("buffer"),
        b.max_bytes,
        b.segment_bytes,
        b.fsync,
        stats.clone(),
    )?;
    let client = Client::new(&cfg.elasticsearch)?;
    let es = &cfg.elasticsearch;
    let ship_cfg = ShipConfig {
        max_concurrency: usize::try_from(es.max_concurrency).unwrap_or(1),
        max_backoff: Duration::from_millis(es.max_backoff_ms),
        target: es.target(),
        template: es.template,
        template_options: crate::ship::template::Options {
            nanos: es.timestamp_nanos,
            ilm_policy: es.ilm_policy.clone(),
        },
        compression: es.compression,
    };
    let dead = DeadLetter::new(
        data_dir.clone(),
        cfg.agent.dead_letter_max_bytes,
        stats.clone(),
    );
    let shipper = Shipper::new(client, buf.clone(), ship_cfg, stats.clone(), dead);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("shipper-io")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let status = crate::status::start(cfg, &runtime, &stats, &shipper)?;
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
    let wedge = match std::env::var(TEST_WEDGE_ENV).as_deref() {
        Ok("reader") => Wedge::Block,
        Ok("reader-exit") => Wedge::Exit,
        Ok(other) => anyhow::bail!("{TEST_WEDGE_ENV}=`{other}`: expected reader or reader-exit"),
        Err(_) => Wedge::None,
    };
    if wedge != Wedge::None {
        tracing::warn!(
            "{TEST_WEDGE_ENV} is set: the reader will stop (a test hook; never set it in production)"
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = crossbeam_channel::bounded::<ToBuffer>(CHUNKS_QUEUED);
    // Emptied chunks go back to the reader, so chunk memory is allocated once.
    // Without compression a batch is kept as its chunks until appended: room for all.
    let pool_size = usize::try_from(es.batch_bytes).unwrap_or(usize::MAX) / CHUNK_BYTES + 4;
    let (pool_tx, pool_rx) = crossbeam_channel::bounded::<Vec<u8>>(pool_size.min(512));

    // Set when the reader or the buffer writer ends on its own (an error): the agent
    // then stops as on SIGTERM and exits non-zero, so it is restarted, rather than
    // staying up with a dead pipeline.
    let died = Arc::new(tokio::sync::Notify::new());
    // Appender: compress as chunks arrive, append a batch whole, then (and only then)
    // move checkpoints.
    let appender = {
        let cps = cps.clone();
        let stats = stats.clone();
        let stop = stop.clone();
        let died = died.clone();
        let gzip = es.compression;
        std::thread::Builder::new()
            .name("shipper-buffer".into())
            .spawn(move || -> anyhow::Result<buffer::Writer> {
                let result = (|| -> anyhow::Result<buffer::Writer> {
                stats.live.start(Worker::Appender);
                let _guard = ExitGuard(stats.clone(), Worker::Appender);
                let mut last_save = Instant::now();
                let mut frame = FrameBuilder::new(gzip);
                let mut stopping_since: Option<Instant> = None;
                'messages: loop {
                    let received = rx.recv_timeout(CHECKPOINT_EVERY);
                    stats.live.beat(Worker::Appender);
                    let msg = match received {
                        Ok(m) => m,
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                            // Quiet files still get their checkpoints written promptly.
                            save_checkpoints(
                                &mut cps.lock().unwrap_or_else(|p| p.into_inner()),
                                &stats,
                            );
                            last_save = Instant::now();
                            continue;
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    };
                    match msg {
                        ToBuffer::Data { ndjson, records } => {
                            if let Some(mut done) = frame.write(ndjson, records)? {
                                done.clear();
                                let _ = pool_tx.try_send(done);
                            }
                        }
                        ToBuffer::Discovered(found) => {
                            let mut c = cps.lock().unwrap_or_else(|p| p.into_inner());
                            for (id, pos) in found {
                                // Only adds files not known yet; never moves an offset.
                                if c.get(&id).is_none() {
                                    c.update(id, pos);
                                }
                            }
                            save_checkpoints(&mut c, &stats);
                            last_save = Instant::now();
                        }
                        ToBuffer::End {
                            positions,
                            closed,
                            newest_record_ms,
                        } => {
                            let records = frame.records;
                            if records > 0 {
                                let parts = frame.finish()?;
                                let len: usize = parts.iter().map(|p| p.len()).sum();
                                while !writer.wait_for_room(
                                    len as u64,
                                    Duration::from_millis(500),
                                )? {
                                    // Waiting for room is not being stuck.
                                    stats.live.beat(Worker::Appender);
                                    tracing::debug!("buffer full; reading paused");
                                    if stop.load(Ordering::Relaxed)
                                        && stopping_since
                                            .get_or_insert_with(Instant::now)
                                            .elapsed()
                                            >= STOP_WAIT
                                    {
                                        tracing::warn!(records, "stopping with the buffer full: the last batch stays in the log files and is read again at the next start");
                                        break 'messages;
                                    }
                                }
                                writer.set_newest_record_ms(newest_record_ms);
                                writer.append_parts(&parts, records, gzip)?;
                                Stats::add(&stats.batches, 1);
                            }
                            for mut chunk in frame.reset() {
                                chunk.clear();
                                let _ = pool_tx.try_send(chunk);
                            }
                            let mut c = cps.lock().unwrap_or_else(|p| p.into_inner());
                            for id in &closed {
                                c.remove(id);
                            }
                            for (id, pos) in positions {
                                c.update(id, pos);
                            }
                            if last_save.elapsed() >= CHECKPOINT_EVERY {
                                save_checkpoints(&mut c, &stats);
                                last_save = Instant::now();
                            }
                        }
                    }
                }
                // A batch still half built here (the reader stopped with the buffer full,
                // or failed) is dropped: its checkpoints never moved, so it is read again.
                save_checkpoints(&mut cps.lock().unwrap_or_else(|p| p.into_inner()), &stats);
                Ok(writer)
                })();
                if let Err(e) = &result {
                    tracing::error!(error = format!("{e:#}"), "the buffer writer failed; stopping");
                    died.notify_one();
                }
                result
            })?
    };

    // Reader: tail files, cut batches by bytes, documents or age.
    let reader = {
        let tail_cfg = tail_config(cfg);
        let enc = Encoder::for_target(&es.target());
        let stats = stats.clone();
        let stop = stop.clone();
        let cps = cps.clone();
        let limits = (
            usize::try_from(es.batch_bytes).unwrap_or(usize::MAX),
            es.batch_docs,
            Duration::from_millis(es.linger_ms),
        );
        let rescan_every = Duration::from_millis(cfg.input.rescan_interval_ms);
        let died = died.clone();
        std::thread::Builder::new()
            .name("shipper-read".into())
            .spawn(move || {
                stats.live.start(Worker::Reader);
                let _guard = ExitGuard(stats.clone(), Worker::Reader);
                let result = if wedge != Wedge::None {
                    wedge_reader(wedge, &stop)
                } else {
                    read_loop(
                        tail_cfg,
                        enc,
                        stats,
                        cps,
                        (tx, pool_rx),
                        &stop,
                        limits,
                        rescan_every,
                        kube_cache,
                    )
                };
                match &result {
                    Err(e) if !e.is::<Abandoned>() => {
                        tracing::error!(error = format!("{e:#}"), "the reader failed; stopping");
                        died.notify_one();
                    }
                    _ => {}
                }
                result
            })?
    };

    if let Some(s) = &status {
        s.ready.store(true, Ordering::Relaxed);
    }
    let failed = runtime.block_on(async {
        tokio::select! {
            () = shutdown => false,
            () = died.notified() => true,
        }
    });
    stats.live.stopping();
    if let Some(s) = &status {
        s.ready.store(false, Ordering::Relaxed);
    }
    tracing::info!("stopping: no more reading; flushing the buffer");
    stop.store(true, Ordering::Relaxed);
    let read_result = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))
        .and_then(|r| r);
    let writer_result = appender
        .join()
        .map_err(|_| anyhow::anyhow!("buffer thread panicked"))
        .and_then(|r| r);
    // Deliver what is in the buffer (until the deadline) even after a failure.
    let mut failure = match read_result {
        Err(e) if !e.is::<Abandoned>() => Some(e),
        _ => None,
    };
    match writer_result {
        Ok(writer) => writer.close(),
        Err(e) => failure = Some(failure.unwrap_or(e)),
    }
    if failed && failure.is_none() {
        failure = Some(anyhow::anyhow!("a worker stopped unexpectedly"));
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
    match failure {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// The reader as [`TEST_WEDGE_ENV`] asks: stuck without heartbeats until shutdown, or
/// gone at once.
fn wedge_reader(wedge: Wedge, stop: &AtomicBool) -> anyhow::Result<()> {
    if wedge == Wedge::Exit {
        anyhow::bail!("{TEST_WEDGE_ENV}=reader-exit: the reader ends here");
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn save_checkpoints(c: &mut Checkpoints, stats: &Stats) {
    match c.save() {
        Ok(true) => Stats::add(&stats.checkpoint_writes, 1),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "cannot write checkpoints; will retry"),
    }
}

#[allow(clippy::too_many_arguments)]
fn read_loop(
    tail_cfg: TailConfig,
    enc: Encoder,
    stats: Arc<Stats>,
    cps: Arc<std::sync::Mutex<Checkpoints>>,
    (tx, pool): (
        crossbeam_channel::Sender<ToBuffer>,
        crossbeam_channel::Receiver<Vec<u8>>,
    ),
    stop: &AtomicBool,
    (batch_bytes, batch_docs, linger): (usize, u64, Duration),
    rescan_every: Duration,
    kube: Option<(Arc<crate::enrich::KubeCache>, Duration)>,
) -> anyhow::Result<()> {
    use crossbeam_channel::SendTimeoutError;
    let waker = Waker::new(&tail_cfg.roots);
    for e in &waker.errors {
        tracing::warn!("{e}; relying on rescans");
    }
    let mut tailer = Tailer::new(tail_cfg, enc, None, stats.clone());
    if let Some((cache, wait)) = kube {
        tailer.set_kube(cache, wait);
    }
    let lock = |c: &Arc<std::sync::Mutex<Checkpoints>>| -> Checkpoints {
        // The tailer only reads checkpoints (to resume files); a snapshot is enough.
        let g = c.lock().unwrap_or_else(|p| p.into_inner());
        g.snapshot()
    };
    let mut last_scan = Instant::now();
    // Hands a message to the buffer writer. While the buffer is full the writer stops
    // taking them: keep scanning (so every file is open and nothing rotates away unseen)
    // but read nothing more.
    // Stopping with the buffer full, the writer gives up its batch and the reader its
    // message ([`Abandoned`]): checkpoints have not moved past them, so those records
    // are read again at the next start.
    let mut send = |tailer: &mut Tailer, mut msg: ToBuffer| -> anyhow::Result<()> {
        let mut stopping_since: Option<Instant> = None;
        loop {
            match tx.send_timeout(msg, Duration::from_millis(100)) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(m)) => {
                    msg = m;
                    // Waiting for room is not being stuck.
                    stats.live.beat(Worker::Reader);
                    if stop.load(Ordering::Relaxed)
                        && stopping_since.get_or_insert_with(Instant::now).elapsed() >= STOP_WAIT
                    {
                        return Err(Abandoned.into());
                    }
                    if last_scan.elapsed() >= rescan_every {
                        tailer.rescan(&lock(&cps));
                        last_scan = Instant::now();
                    }
                }
                Err(SendTimeoutError::Disconnected(_)) if stop.load(Ordering::Relaxed) => {
                    return Err(Abandoned.into());
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    anyhow::bail!("the buffer writer stopped")
                }
            }
        }
    };
    let announce =
        |tailer: &mut Tailer, send: &mut dyn FnMut(&mut Tailer, ToBuffer) -> anyhow::Result<()>| {
            let found = tailer.take_new();
            if found.is_empty() {
                return Ok(());
            }
            send(tailer, ToBuffer::Discovered(found))
        };
    tailer.start(&lock(&cps));
    announce(&mut tailer, &mut send)?;
    let chunk_limit = CHUNK_BYTES.min(batch_bytes);
    let new_chunk = || Vec::with_capacity(chunk_limit + (64 << 10));
    let mut out: Vec<u8> = new_chunk();
    // The batch being cut: bytes and records already handed over, and when it began.
    let mut batch_len = 0usize;
    let mut batch_records = 0u64;
    let mut started: Option<Instant> = None;
    let mut records_at_chunk = Stats::get(&stats.records);
    let mut next_scan = Instant::now() + rescan_every;
    let idle_wait = Duration::from_millis(100).min(linger.max(Duration::from_millis(10)));
    loop {
        stats.live.beat(Worker::Reader);
        let stopping = stop.load(Ordering::Relaxed);
        let snapshot = lock(&cps);
        if Instant::now() >= next_scan {
            tailer.rescan(&snapshot);
            next_scan = Instant::now() + rescan_every;
        }
        let room = chunk_limit.min(batch_bytes.saturating_sub(batch_len).max(1));
        let n = if stopping {
            0
        } else {
            tailer.poll_until(&snapshot, &mut out, room)
        };
        announce(&mut tailer, &mut send)?;
        let chunk_records = Stats::get(&stats.records) - records_at_chunk;
        if !out.is_empty() && started.is_none() {
            started = Some(Instant::now());
        }
        let due = batch_len + out.len() >= batch_bytes
            || batch_records + chunk_records >= batch_docs
            || started.is_some_and(|t| t.elapsed() >= linger)
            || stopping;
        if !out.is_empty() && (out.len() >= chunk_limit || due) {
            let next = pool.try_recv().unwrap_or_else(|_| new_chunk());
            let ndjson = std::mem::replace(&mut out, next);
            batch_len += ndjson.len();
            batch_records += chunk_records;
            records_at_chunk += chunk_records;
            let records = u32::try_from(chunk_records).unwrap_or(u32::MAX);
            send(&mut tailer, ToBuffer::Data { ndjson, records })?;
        }
        if due && (batch_len > 0 || stopping) {
            let end = ToBuffer::End {
                newest_record_ms: stats.batch_newest_record_ms.swap(0, Ordering::Relaxed),
                positions: tailer.positions(),
                closed: tailer.take_closed(),
            };
            send(&mut tailer, end)?;
            batch_len = 0;
            batch_records = 0;
            started = None;
        }
        if stopping {
            return Ok(());
        }
        if n == 0 {
            if batch_len == 0 && out.is_empty() && Stats::get(&stats.buffer_records) == 0 {
                // Caught up: every byte written to the logs so far has been read and
                // delivered. The lag of the last delivered batch no longer describes
                // the node (an idle node would keep it forever).
                stats.lag_ms.store(0, Ordering::Relaxed);
            }
            let wait = match started {
                Some(t) => linger.saturating_sub(t.elapsed()).min(idle_wait),
                None => idle_wait,
            };
            if waker.rx.recv_timeout(wait).is_ok() {
                while waker.rx.try_recv().is_ok() {}
                tailer.rescan(&lock(&cps));
                next_scan = Instant::now() + rescan_every;
            }
        }
    }
}
