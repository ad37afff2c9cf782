//! The agent's read loop: reads every file round-robin, cuts the documents into batches
//! ([`crate::batch`]) and hands them to the appender; sleeps on file events when caught
//! up. A full rescan every `rescan_every` is the source of truth.

use super::Reader;
use crate::appender::Handoff;
use crate::appender::STOP_WAIT;
use crate::batch::{Batch, Limits};
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
        last_scan: Instant::now(),
        rescan_every: settings.rescan_every,
    };
    reader.start();
    outbox.announce(reader)?;
    let new_chunk = || Vec::with_capacity(limits.chunk_bytes + (64 << 10));
    let mut out: Vec<u8> = new_chunk();
    let mut batch = Batch::default();
    let mut chunk_docs = 0u64;
    let idle_wait = Duration::from_millis(100).min(limits.linger.max(Duration::from_millis(10)));
    loop {
        stats.live.beat(Worker::Reader);
        if let Some(rx) = &settings.reloads {
            while let Ok(new) = rx.try_recv() {
                reader.reload(new);
            }
        }
        let stopping = stop.load(Ordering::Relaxed);
        outbox.rescan_if_due(reader);
        let polled = if stopping {
            super::Polled::default()
        } else {
            reader.poll(&mut out, batch.room(&limits) as u64)
        };
        outbox.announce(reader)?;
        chunk_docs += polled.counts.docs;
        let now = Instant::now();
        if !out.is_empty() {
            batch.touch(now, polled.counts.newest_ms);
            stats.caught_up.store(false, Ordering::Relaxed);
        }
        let due = batch.due(&limits, out.len(), chunk_docs, now) || stopping;
        if !out.is_empty() && (out.len() >= limits.chunk_bytes || due) {
            let next = handover.pool.try_recv().unwrap_or_else(|_| new_chunk());
            let ndjson = std::mem::replace(&mut out, next);
            let chunk = batch.chunk(ndjson, std::mem::take(&mut chunk_docs));
            outbox.send(reader, Handoff::Chunk(chunk))?;
        }
        if due && (!batch.is_empty() || stopping) {
            let seal = batch.seal(
                reader.positions(),
                reader.take_closed(),
                reader.take_routes(),
            );
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
            // Wake for whichever comes first: the batch's linger, a multiline group that
            // may close by the clock, or the idle period.
            let wait = [batch.linger_left(&limits, now), reader.next_deadline()]
                .into_iter()
                .flatten()
                .fold(idle_wait, Duration::min);
            if waker.rx.recv_timeout(wait).is_ok() {
                // Coalesce a burst of events into one wake-up, and look for new files.
                while waker.rx.try_recv().is_ok() {}
                reader.rescan();
                outbox.last_scan = Instant::now();
            }
        }
    }
}

/// Sends to the appender, rescanning while it waits.
struct Outbox<'a> {
    handover: &'a Handover,
    stop: &'a AtomicBool,
    last_scan: Instant,
    rescan_every: Duration,
}

impl Outbox<'_> {
    fn rescan_if_due(&mut self, reader: &mut Reader) {
        if self.last_scan.elapsed() >= self.rescan_every {
            reader.rescan();
            self.last_scan = Instant::now();
        }
    }

    /// Hands newly identified files to the appender (their start positions are saved
    /// at once).
    fn announce(&mut self, reader: &mut Reader) -> anyhow::Result<()> {
        let found = reader.take_new();
        if found.is_empty() {
            return Ok(());
        }
        self.send(reader, Handoff::Discovered(found))
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
                    self.rescan_if_due(reader);
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
