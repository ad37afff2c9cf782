//! The agent's read loop: reads every file round-robin, cuts the documents into batches
//! ([`crate::batch`]) and hands them to the appender; sleeps on file events when caught
//! up. A full rescan is the source of truth: every `rescan_every` while lines come, and
//! less often the longer nothing does (up to [`MAX_RESCAN_FACTOR`] times), since only
//! files written without inotify events (some network or overlay filesystems) depend
//! on it.
//!
//! Caught up, the loop sleeps until something is due: a file event, a batch's linger, a
//! multiline group's flush gap, a rate-limited file's refill, the next rescan, a reload
//! or the stop. Nothing wakes it periodically otherwise.

use super::Reader;
use crate::appender::Handoff;
use crate::appender::STOP_WAIT;
use crate::batch::{Batch, Downstream, Limits};
use crate::discover::Waker;
use crate::metrics::Worker;
use crossbeam_channel::{Receiver, SendTimeoutError, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The reader gave up handing over a batch because the agent is stopping and the buffer
/// is full: nothing is lost (its positions were never persisted).
#[derive(Debug, thiserror::Error)]
#[error("stopping with the buffer full")]
pub struct Abandoned;

/// The reader's end of the hand-off to the appender.
pub struct Handover {
    pub tx: Sender<Handoff>,
    /// Emptied chunk buffers coming back, so chunk memory is allocated once.
    pub pool: Receiver<Vec<u8>>,
}

/// Test hook, read once at start: `reader` makes the read loop stop (it blocks without
/// heartbeats until shutdown), `reader-exit` makes it end at once with an error,
/// `reader-panic` makes it panic, so tests of the real binary can see `/healthz` fail and
/// the agent stop. Nothing sets it in production; the agent logs a warning when it is set.
pub const TEST_WEDGE_ENV: &str = "SHIPPER_TEST_WEDGE";

/// What [`TEST_WEDGE_ENV`] asks of the read loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wedge {
    None,
    Block,
    Exit,
    Panic,
}

impl Wedge {
    pub fn from_env() -> anyhow::Result<Wedge> {
        let w = match std::env::var(TEST_WEDGE_ENV).as_deref() {
            Ok("reader") => Wedge::Block,
            Ok("reader-exit") => Wedge::Exit,
            Ok("reader-panic") => Wedge::Panic,
            Ok(other) => anyhow::bail!(
                "{TEST_WEDGE_ENV}=`{other}`: expected reader, reader-exit or reader-panic"
            ),
            Err(_) => Wedge::None,
        };
        if w != Wedge::None {
            tracing::warn!("{TEST_WEDGE_ENV} is set: the reader will stop (a test hook; never set it in production)");
        }
        Ok(w)
    }

    /// The read loop as the hook asks: stuck without heartbeats until `stop`, gone at
    /// once, or panicking.
    fn run(self, stop: &AtomicBool) -> anyhow::Result<()> {
        match self {
            Wedge::Exit => anyhow::bail!("{TEST_WEDGE_ENV}=reader-exit: the reader ends here"),
            Wedge::Panic => panic!("{TEST_WEDGE_ENV}=reader-panic: the reader panics here"),
            _ => {}
        }
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// The periodic rescan backs off to this many times `rescan_every` while no line comes.
pub const MAX_RESCAN_FACTOR: u32 = 8;

/// While documents wait for the requests before them to be acknowledged, the loop looks
/// whether they were after this long, then after twice as long each time up to
/// [`DOWNSTREAM_POLL_MAX`] (to send the next batch at once when Elasticsearch is quick,
/// with few wake-ups when it is slow; see [`crate::batch`]).
/// With no new file, the start of the latest scan is recorded with the checkpoints at
/// least this often (a batch records it too): a restart then reads rotated files it does
/// not know only if they were written after it, and re-reads little.
const RECORD_SCAN_EVERY: Duration = Duration::from_secs(600);

const DOWNSTREAM_POLL: Duration = Duration::from_millis(10);

/// Caught up with nothing due for this long, the loop gives memory back (see
/// [`crate::memory::release_free`]), once per quiet spell.
const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// The longest wait between two such looks.
const DOWNSTREAM_POLL_MAX: Duration = Duration::from_millis(100);

/// How often a file waiting for its pod's metadata is looked at again.
const METADATA_POLL: Duration = Duration::from_millis(100);

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub limits: Limits,
    /// Full rescan period.
    pub rescan_every: Duration,
    /// The test hook (see [`TEST_WEDGE_ENV`]).
    pub wedge: Wedge,
    /// Reloaded settings (see `reload`).
    pub reloads: Option<crossbeam_channel::Receiver<super::ReaderSettings>>,
    /// Disconnects when the agent stops (see [`crate::shutdown::Stop::wake_on_stop`]).
    pub stopped: Option<crossbeam_channel::Receiver<()>>,
}

/// Runs until `stop` is set, then seals the last batch and returns.
pub fn run(
    reader: &mut Reader,
    handover: &Handover,
    stop: &AtomicBool,
    settings: LoopSettings,
) -> anyhow::Result<()> {
    if settings.wedge != Wedge::None {
        return settings.wedge.run(stop);
    }
    let limits = settings.limits;
    let stats = reader.stats().clone();
    let waker = Waker::new(reader.roots());
    for e in &waker.errors {
        tracing::warn!("{e}; relying on rescans");
    }
    let mut outbox = Outbox {
        handover,
        stop,
        scanned_ns: 0,
        recorded_ns: 0,
        last_scan: Instant::now(),
        rescan_every: settings.rescan_every,
        backoff: 1,
    };
    reader.start();
    outbox.announce(reader)?;
    let new_chunk = || Vec::with_capacity(limits.chunk_bytes + (64 << 10));
    let mut out: Vec<u8> = new_chunk();
    let mut batch = Batch::default();
    let mut chunk_docs = 0u64;
    use crossbeam_channel::never;
    let mut sleep = Sleep {
        events: waker.rx.clone(),
        reloads: settings.reloads.clone().unwrap_or_else(never),
        stopped: settings.stopped.clone().unwrap_or_else(never),
        released: false,
        downstream_poll: DOWNSTREAM_POLL,
    };
    loop {
        stats.live.beat(Worker::Reader);
        while let Ok(new) = sleep.reloads.try_recv() {
            reader.reload(new);
        }
        let stopping = stop.load(Ordering::Relaxed);
        outbox.rescan_if_due(reader, true);
        let polled = if stopping {
            super::Polled::default()
        } else {
            // A batch holds `batch_docs` at most: a read ends at the lines it has room for.
            let (bytes, docs) = batch.room(&limits, chunk_docs);
            reader.poll(&mut out, bytes as u64, Some(docs))
        };
        outbox.announce(reader)?;
        chunk_docs += polled.counts.docs;
        let now = Instant::now();
        if polled.bytes > 0 {
            outbox.backoff = 1;
            sleep.released = false;
        }
        if !out.is_empty() {
            batch.touch(now, (polled.counts.oldest_ms, polled.counts.newest_ms));
            stats.caught_up.store(false, Ordering::Relaxed);
        }
        let downstream = downstream(handover, &stats, &limits, polled.bytes == 0);
        let due = batch.due(&limits, (out.len(), chunk_docs), now, downstream) || stopping;
        if !out.is_empty() && (out.len() >= limits.chunk_bytes || due) {
            let next = handover.pool.try_recv().unwrap_or_else(|_| new_chunk());
            let ndjson = std::mem::replace(&mut out, next);
            let chunk = batch.chunk(ndjson, std::mem::take(&mut chunk_docs));
            outbox.send(reader, Handoff::Chunk(chunk))?;
        }
        if due && (!batch.is_empty() || stopping) {
            // Files found by scans run while the hand-off waited go first: the seal
            // records the latest scan as complete.
            outbox.announce(reader)?;
            let mut seal = batch.seal(
                reader.positions(),
                reader.take_closed(outbox.scanned_ns),
                reader.take_routes(),
            );
            seal.scanned_ns = outbox.scanned_ns;
            outbox.recorded_ns = outbox.scanned_ns;
            outbox.send(reader, Handoff::Seal(seal))?;
        }
        if stopping {
            return Ok(());
        }
        if polled.bytes == 0 {
            // Caught up once everything read so far is handed over.
            stats
                .caught_up
                .store(batch.is_empty() && out.is_empty(), Ordering::Relaxed);
            sleep.until_due(reader, &mut outbox, (&batch, &limits), &mut out);
        }
    }
}

/// Where the shipper is: idle (the reader `caught_up`, the hand-off channel empty and
/// every record in the buffer acknowledged), behind (a full batch unacknowledged in the
/// buffer), or busy.
fn downstream(
    handover: &Handover,
    stats: &crate::metrics::Stats,
    limits: &Limits,
    caught_up: bool,
) -> Downstream {
    let pending = handover
        .tx
        .is_empty()
        .then(|| stats.buffer_records.load(Ordering::Relaxed));
    Downstream::of(pending, caught_up, limits)
}

/// The caught-up reader's sleep: what wakes it, and what it does on going quiet.
struct Sleep {
    events: Receiver<()>,
    reloads: Receiver<super::ReaderSettings>,
    stopped: Receiver<()>,
    /// Memory was given back since the last line read.
    released: bool,
    /// How long to wait before looking again whether the requests before the batch
    /// were acknowledged (doubles while they are not).
    downstream_poll: Duration,
}

impl Sleep {
    /// Sleeps until the first thing due: the batch's linger (soon, if the requests
    /// before it are acknowledged meanwhile), a multiline group that may close by the
    /// clock, a rate-limited file's refill, a draining file's grace, a file waiting for
    /// its metadata, the next rescan; or a file event, a reload, the stop.
    fn until_due(
        &mut self,
        reader: &mut Reader,
        outbox: &mut Outbox<'_>,
        (batch, limits): (&Batch, &Limits),
        out: &mut Vec<u8>,
    ) {
        let stats = reader.stats().clone();
        let state = downstream(outbox.handover, &stats, limits, true);
        // `Some` when documents wait (handed over or not).
        let linger = batch.linger_left(limits, Instant::now(), state);
        let downstream = (linger.is_some() && state != Downstream::Idle).then(|| {
            // 10, 20, 40... 100 ms: quick when Elasticsearch is, few wake-ups when it
            // is not, and never more than 100 ms late once it answered.
            let d = self.downstream_poll;
            self.downstream_poll = (d * 2).min(DOWNSTREAM_POLL_MAX);
            d
        });
        if linger.is_none() {
            self.downstream_poll = DOWNSTREAM_POLL;
        }
        let first = |waits: &[Option<Duration>]| {
            waits
                .iter()
                .flatten()
                .min()
                .copied()
                .unwrap_or(Duration::ZERO)
        };
        // Until something in flight needs the loop (the journal's periodic look is no
        // work in flight: an idle agent gives its spare memory back all the same).
        let quiet = first(&[
            downstream,
            reader.busy_deadline(),
            reader.waiting_for_metadata().then_some(METADATA_POLL),
            Some(outbox.rescan_left()),
        ]);
        let wait = first(&[Some(quiet), linger, reader.next_deadline()]);
        if linger.is_none() && quiet >= RELEASE_AFTER && !self.released {
            // Going quiet: the spare chunk buffers and the free heap go back to the
            // system, so an idle agent holds what it uses.
            while outbox.handover.pool.try_recv().is_ok() {}
            *out = Vec::new();
            crate::memory::release_free();
            self.released = true;
        }
        // Nothing to do until an event: healthy however long that takes.
        stats.live.park(Worker::Reader);
        crossbeam_channel::select! {
            recv(self.events) -> ev => match ev {
                Ok(()) => {
                    stats.live.beat(Worker::Reader);
                    // Coalesce a burst of events into one wake-up, and look for new files.
                    while self.events.try_recv().is_ok() {}
                    outbox.backoff = 1;
                    reader.rescan();
                    outbox.last_scan = Instant::now();
                }
                // No watcher: the periodic rescan is all there is.
                Err(_) => self.events = crossbeam_channel::never(),
            },
            recv(self.reloads) -> new => match new {
                Ok(new) => {
                    stats.live.beat(Worker::Reader);
                    reader.reload(new);
                }
                Err(_) => self.reloads = crossbeam_channel::never(),
            },
            recv(self.stopped) -> _ => {}
            default(wait) => {}
        }
        // Awake: whatever comes next (a rescan, a reload, a read) beats.
        stats.live.beat(Worker::Reader);
    }
}

/// Sends to the appender, rescanning while it waits.
struct Outbox<'a> {
    handover: &'a Handover,
    stop: &'a AtomicBool,
    /// The start of the latest scan whose files were all handed over (unix ns).
    scanned_ns: u64,
    /// The latest such start handed over to be recorded with the checkpoints.
    recorded_ns: u64,
    last_scan: Instant,
    rescan_every: Duration,
    /// The rescan period's multiple of `rescan_every` (reset when lines come).
    backoff: u32,
}

impl Outbox<'_> {
    /// The current rescan period: `rescan_every`, doubled at each rescan with no line
    /// read since the one before, up to [`MAX_RESCAN_FACTOR`] times.
    fn period(&self) -> Duration {
        self.rescan_every * self.backoff
    }

    fn rescan_left(&self) -> Duration {
        self.period().saturating_sub(self.last_scan.elapsed())
    }

    /// Rescans when the period is over; `quiet`: nothing else is going on (the read
    /// loop, not a wait for room in the buffer, which must keep every file open), so
    /// the next period may be longer.
    fn rescan_if_due(&mut self, reader: &mut Reader, quiet: bool) {
        if self.last_scan.elapsed() >= self.period() {
            reader.rescan();
            self.last_scan = Instant::now();
            if quiet {
                self.backoff = (self.backoff * 2).min(MAX_RESCAN_FACTOR);
            } else {
                self.backoff = 1;
            }
        }
    }

    /// Hands newly identified files to the appender (their start positions are saved
    /// at once), with the start of the latest scan: every file it found is then known.
    /// With nothing new that start is still recorded now and then (and with every
    /// batch), so a restart reads only rotated files born after it.
    fn announce(&mut self, reader: &mut Reader) -> anyhow::Result<()> {
        let scanned_ns = reader.scanned_ns();
        let found = reader.take_new();
        self.scanned_ns = scanned_ns;
        let stale = scanned_ns >= self.recorded_ns + RECORD_SCAN_EVERY.as_nanos() as u64;
        if found.is_empty() && !stale {
            return Ok(());
        }
        self.recorded_ns = scanned_ns;
        self.send(reader, Handoff::Discovered { found, scanned_ns })
    }

    /// Hands a message to the appender. While the buffer is full the appender stops
    /// taking them: keep scanning (so every file is open and nothing rotates away
    /// unseen) but read nothing more. Stopping with the buffer full, give up
    /// ([`Abandoned`]): checkpoints have not moved past the message, so its records are
    /// read again at the next start.
    fn send(&mut self, reader: &mut Reader, mut msg: Handoff) -> anyhow::Result<()> {
        let mut stopping_since: Option<Instant> = None;
        loop {
            match self
                .handover
                .tx
                .send_timeout(msg, Duration::from_millis(100))
            {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(m)) => {
                    msg = m;
                    // Waiting for room is not being stuck.
                    reader.stats().live.beat(Worker::Reader);
                    if self.stop.load(Ordering::Relaxed)
                        && stopping_since.get_or_insert_with(Instant::now).elapsed() >= STOP_WAIT
                    {
                        return Err(Abandoned.into());
                    }
                    self.rescan_if_due(reader, false);
                }
                Err(SendTimeoutError::Disconnected(_)) if self.stop.load(Ordering::Relaxed) => {
                    return Err(Abandoned.into());
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    anyhow::bail!("the buffer writer stopped")
                }
            }
        }
    }
}
