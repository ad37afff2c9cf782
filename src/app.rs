//! Wiring: builds the pipeline from a [`Config`] and runs it.

use crate::checkpoint::Checkpoints;
use crate::config::Config;
use crate::discover::{Roots, Waker};
use crate::encode::Encoder;
use crate::enrich::PodIndex;
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
    let pods = match &opts.pods {
        Some(p) => Some(PodIndex::load(p)?),
        None => None,
    };
    let stats = Arc::new(Stats::default());
    let tail_cfg = tail_config(cfg);
    let mut tailer = Tailer::new(
        tail_cfg.clone(),
        Encoder::new(&cfg.elasticsearch.index_prefix),
        pods,
        stats.clone(),
    );
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
        if n == 0 && waker.rx.recv_timeout(idle_wait).is_ok() {
            // Coalesce a burst of events into one wake-up, and look for new files.
            while waker.rx.try_recv().is_ok() {}
            tailer.rescan(cps);
            last_scan = Instant::now();
        }
    }
    Ok(())
}
