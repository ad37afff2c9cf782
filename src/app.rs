//! Wiring: builds the pipeline from a [`Config`] and runs it (the agent, or the dry-run).
//! The stop order and the signals are [`crate::shutdown`]'s; each stage owns its rules.

use crate::appender::{Appender, Handoff};
use crate::batch::Limits;
use crate::checkpoint::Checkpoints;
use crate::config::Config;
use crate::enrich::kube::LiveMeta;
use crate::enrich::{MetaSource, PodIndex};
use crate::metrics::{ExitGuard, GaugeFn, Stats, Worker};
use crate::reader::agent::{Abandoned, Handover, LoopSettings, Wedge};
use crate::reader::{Reader, ReaderSettings};
use crate::shutdown::{self, Running, Stop};
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use crate::reader::agent::TEST_WEDGE_ENV;

/// Options of `--dry-run`.
#[derive(Debug, Clone, Default)]
pub struct DryRun {
    pub pods: Option<PathBuf>,
    pub follow: bool,
    /// Print which rule or annotation decided each file's settings.
    pub explain: bool,
}

/// Where files get their metadata: the live cache when there is one.
fn meta_source(cfg: &Config, kube: Option<&LiveMeta>) -> MetaSource {
    let wait = Duration::from_millis(cfg.kubernetes.pending_wait_ms);
    kube.map_or(MetaSource::Node, |k| k.source(wait))
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
            let kube =
                crate::enrich::kube::start(&cfg.kubernetes, &cfg.agent.data_dir, true, &stats)?;
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
    // Rate limits pace the agent's reading; a dry-run reads at full speed. It reads
    // each file once to its end and ends what is pending there: no memory budget (a
    // record released from memory is read again by the agent's tail, not at an end).
    let mut settings = ReaderSettings {
        rate_limits: false,
        explain: opts.explain,
        ..ReaderSettings::from_config(cfg)?
    };
    settings.record.budget = None;
    let mut reader = Reader::new(
        settings,
        source,
        crate::tail::Resume::default(),
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

/// Runs the agent until a stop signal (or a failed worker), then stops in the order
/// [`shutdown::drain`] documents. Returns the counters; an error if a worker failed.
/// Runs the agent on `cfg`, loaded from `source` (loaded again the same way on a reload).
pub fn agent(cfg: &Config, source: crate::reload::Source) -> anyhow::Result<Arc<Stats>> {
    use crate::ship::{client::Client, dead_letter::DeadLetter, Shipper};
    let stats = Arc::new(Stats::default());
    let stop = Stop::new();
    let data_dir = &cfg.agent.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    // Metadata never holds up reading or shipping: files wait (bounded) per file.
    let kube = crate::enrich::kube::start(&cfg.kubernetes, data_dir, false, &stats)?;
    let cps = Checkpoints::load(data_dir).unwrap_or_else(|e| {
        tracing::error!(error = %e, "checkpoints unreadable; reading every file from the start (ids make the repeats harmless)");
        Checkpoints::empty_at(data_dir)
    });
    let (b, es) = (&cfg.buffer, &cfg.elasticsearch);
    let (buffered, writer) = crate::buffer::open(
        &data_dir.join("buffer"),
        b.max_bytes,
        b.segment_bytes,
        b.fsync,
        b.floor(),
        stats.clone(),
    )?;
    let dead = DeadLetter::new(
        data_dir.clone(),
        cfg.agent.dead_letter_max_bytes,
        stats.clone(),
    );
    let client = Client::new(es)?;
    let credentials = client.credentials();
    let mut ship_cfg = crate::ship::ShipConfig::from(cfg);
    // Files keep the routes they had for the records before a change: the index template
    // covers those too.
    ship_cfg.template_options.patterns = cfg.index_patterns_with(cps.route_names());
    let shipper = Shipper::new(client, buffered.clone(), ship_cfg, stats.clone(), dead);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("shipper-io")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (reload_tx, reload_rx) = crossbeam_channel::unbounded();
    let reloader = crate::reload::start(
        source,
        cfg.clone(),
        reload_tx,
        (credentials, shipper.patterns.clone()),
        stats.clone(),
        stop.wake_on_stop(),
    )?;
    let signals = {
        let _context = runtime.enter();
        shutdown::signals(stop.clone(), reloader.trigger.clone())
    };
    runtime.spawn(signals);
    let max_bytes = b.max_bytes as f64;
    let mut gauges: Vec<(&'static str, &'static str, GaugeFn)> = vec![(
        "shipper_buffer_max_bytes",
        "Size cap of the buffer (buffer.max_bytes).",
        Box::new(move || max_bytes),
    )];
    gauges.extend(shipper.gauges());
    let status = crate::status::start(cfg, &runtime, &stats, gauges)?;
    stats.live.start(Worker::Shipper);
    let guard = ExitGuard(stats.clone(), Worker::Shipper);
    let ship = shipper.run();
    let ship = runtime.spawn(async move {
        ship.await;
        drop(guard);
    });
    let source = meta_source(cfg, kube.as_ref());
    let (reader, appender) = spawn_workers(cfg, &stats, &stop, (source, reload_rx), cps, writer)?;

    let ready = |r: bool| {
        status
            .iter()
            .for_each(|s| s.ready.store(r, Ordering::Relaxed))
    };
    ready(true);
    runtime.block_on(stop.wait());
    stats.live.stopping();
    ready(false);
    let running = Running {
        reader,
        appender,
        shipper: ship,
        buffered,
    };
    let deadline = Duration::from_millis(cfg.agent.shutdown_deadline_ms);
    let result = shutdown::drain(&runtime, running, &stop, deadline, |e| e.is::<Abandoned>());
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(kube);
    drop(reloader);
    result.map(|()| stats)
}

type Thread<T> = std::thread::JoinHandle<anyhow::Result<T>>;

/// Starts the appender and the reader threads, joined by the hand-off channel.
fn spawn_workers(
    cfg: &Config,
    stats: &Arc<Stats>,
    stop: &Arc<Stop>,
    (source, reloads): (MetaSource, crossbeam_channel::Receiver<ReaderSettings>),
    cps: Checkpoints,
    writer: crate::buffer::Writer,
) -> anyhow::Result<(Thread<()>, Thread<crate::buffer::Writer>)> {
    let es = &cfg.elasticsearch;
    let (tx, rx) = crossbeam_channel::bounded::<Handoff>(crate::appender::CHUNKS_QUEUED);
    let batch_bytes = usize::try_from(es.batch_bytes).unwrap_or(usize::MAX);
    // Emptied chunks go back to the reader, so chunk memory is allocated once.
    // Without compression a batch is kept as its chunks until appended: room for all.
    let (pool_tx, pool_rx) =
        crossbeam_channel::bounded((batch_bytes / crate::batch::CHUNK_BYTES + 4).min(512));
    let mut reader = Reader::new(
        ReaderSettings::from_config(cfg)?,
        source,
        crate::tail::Resume {
            positions: cps.table(),
            last_scan: cps.last_scan(),
        },
        stats.clone(),
    );
    let appender = Appender::new(writer, cps, es.compression, stats.clone())
        .context("starting the checkpoint writer")?;
    let (st, sp) = (stats.clone(), stop.clone());
    let appender = shutdown::spawn_worker(
        ("buffer", "buffer writer"),
        stop.clone(),
        |_| false,
        move || {
            st.live.start(Worker::Appender);
            let _guard = ExitGuard(st, Worker::Appender);
            appender.run(&rx, &pool_tx, sp.flag())
        },
    )?;
    let settings = LoopSettings {
        limits: Limits::from_config(es),
        rescan_every: Duration::from_millis(cfg.input.rescan_interval_ms),
        wedge: Wedge::from_env()?,
        reloads: Some(reloads),
        stopped: Some(stop.wake_on_stop()),
    };
    let (st, sp) = (stats.clone(), stop.clone());
    let reader = shutdown::spawn_worker(
        ("read", "reader"),
        stop.clone(),
        |e| e.is::<Abandoned>(),
        move || {
            st.live.start(Worker::Reader);
            let _guard = ExitGuard(st, Worker::Reader);
            let handover = Handover { tx, pool: pool_rx };
            crate::reader::agent::run(&mut reader, &handover, sp.flag(), settings)
        },
    )?;
    Ok((reader, appender))
}
