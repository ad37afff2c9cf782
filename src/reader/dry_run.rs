//! The dry-run's read loop: every file from its beginning, one after the other in path
//! order, the bulk NDJSON written out as it is made; with `follow`, then keeps tailing
//! until told to stop.

use super::Reader;
use crate::discover::Waker;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Output is written in chunks of about this size (one write per chunk).
const FLUSH_BYTES: usize = 1 << 20;

/// Reads everything there is into `out`; with `follow`, keeps reading new lines until
/// `stop` is set. Pending partial records are ended at the end.
pub fn run(
    reader: &mut Reader,
    out: &mut dyn Write,
    follow: bool,
    stop: &AtomicBool,
    rescan_every: Duration,
) -> io::Result<()> {
    let waker = follow.then(|| Waker::new(reader.roots()));
    reader.start();
    let mut buf = Vec::with_capacity(FLUSH_BYTES * 2);
    let mut write = |b: &mut Vec<u8>| -> io::Result<()> {
        out.write_all(b)?;
        b.clear();
        Ok(())
    };
    reader.read_in_order(&mut buf, FLUSH_BYTES, &mut write)?;
    reader.read_journal(&mut buf, FLUSH_BYTES, &mut write)?;
    if let Some(waker) = waker {
        for e in &waker.errors {
            tracing::warn!("{e}; relying on rescans");
        }
        let mut events = waker.rx.clone();
        let mut last_scan = Instant::now();
        // A short idle wait so `stop` is honoured promptly even without file events.
        let idle_wait = rescan_every.min(Duration::from_millis(200));
        while !stop.load(Ordering::Relaxed) {
            if last_scan.elapsed() >= rescan_every {
                reader.rescan();
                last_scan = Instant::now();
            }
            let polled = reader.poll(&mut buf, u64::MAX, None);
            write(&mut buf)?;
            // A file waiting for its pod's metadata is looked at again soon.
            let wait = if reader.waiting_for_metadata() {
                idle_wait.min(Duration::from_millis(20))
            } else {
                idle_wait
            };
            let wait = reader.next_deadline().map_or(wait, |d| d.min(wait));
            if polled.bytes == 0 {
                match events.recv_timeout(wait) {
                    Ok(()) => {
                        // Coalesce a burst of events into one wake-up, and look for new
                        // files.
                        while events.try_recv().is_ok() {}
                        reader.rescan();
                        last_scan = Instant::now();
                    }
                    // No watcher: sleep the whole wait; the rescan finds new files.
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        events = crossbeam_channel::never();
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                }
            }
        }
    }
    reader.finish(&mut buf);
    write(&mut buf)?;
    out.flush()
}
