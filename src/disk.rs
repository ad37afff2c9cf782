//! The data volume's space: whether a failed write means the disk is full, the free-space
//! floor the agent keeps, and the pause either one causes (one episode, logged once).
//!
//! A full disk is back-pressure, never an exit: the writer that met it (the buffer, the
//! checkpoint file) waits and tries again, the reader waits behind it exactly as behind a
//! full buffer, and the shipper keeps sending what is buffered, which frees space.

use crate::metrics::Stats;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Whether `e` says the volume (or the user's quota) has no room left.
pub fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        || matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
}

/// Space the agent leaves free on the volume of its data directory: a write that would
/// take the free space under either bound waits instead (0 turns a bound off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Floor {
    pub min_free_bytes: u64,
    /// Percent of the volume's size.
    pub min_free_percent: u8,
}

/// Free and total bytes of a volume, as an unprivileged writer sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub available: u64,
    pub total: u64,
}

impl Floor {
    /// The bytes that must stay free on a volume of `total` bytes.
    pub fn keep(&self, total: u64) -> u64 {
        let pct = total / 100 * u64::from(self.min_free_percent.min(100));
        self.min_free_bytes.max(pct)
    }

    /// Whether writing `need` more bytes to the volume of `dir` would go under the
    /// floor: `Some(bytes free now)` if so, `None` if it fits (or the floor is off); an
    /// error when the volume cannot be asked (the write itself then says).
    pub fn under(&self, dir: &Path, need: u64) -> io::Result<Option<u64>> {
        if *self == Floor::default() {
            return Ok(None);
        }
        let s = space(dir)?;
        Ok((s.available.saturating_sub(need) < self.keep(s.total)).then_some(s.available))
    }
}

/// The space of the volume that holds `dir`.
// The statvfs field types differ between platforms (u32 on some 32-bit ones).
#[allow(clippy::unnecessary_cast)]
pub fn space(dir: &Path) -> io::Result<Space> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs only writes into it, and it is read only on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the whole struct.
    let st = unsafe { st.assume_init() };
    let unit = st.f_frsize as u64;
    Ok(Space {
        available: (st.f_bavail as u64).saturating_mul(unit),
        total: (st.f_blocks as u64).saturating_mul(unit),
    })
}

/// Why a writer waits for space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A write failed with ENOSPC or EDQUOT.
    Full,
    /// The write would take the volume under the free-space floor.
    Floor,
}

/// One writer's pauses for space: entering one counts an episode, raises
/// `shipper_disk_full_paused` and logs once; leaving it lowers the gauge and logs how
/// long it lasted.
#[derive(Debug)]
pub struct Pause {
    what: &'static str,
    since: Option<Instant>,
    stats: Arc<Stats>,
}

impl Pause {
    /// Pauses of the writer of `what` (the buffer, the checkpoint file).
    pub fn new(what: &'static str, stats: Arc<Stats>) -> Pause {
        Pause {
            what,
            since: None,
            stats,
        }
    }

    /// The writer waits for space (a no-op while it already does).
    pub fn enter(&mut self, cause: Cause, detail: &dyn std::fmt::Display) {
        if self.since.is_some() {
            return;
        }
        self.since = Some(Instant::now());
        Stats::add(&self.stats.disk_full_episodes, 1);
        self.stats.disk_full_paused.fetch_add(1, Ordering::Relaxed);
        match cause {
            Cause::Full => {
                tracing::warn!(writer = self.what, error = %detail, "disk full: reading paused, shipping goes on; the write is tried again until there is room")
            }
            Cause::Floor => {
                tracing::warn!(writer = self.what, free = %detail, "free-space floor reached: reading paused, shipping goes on until the volume has room again")
            }
        }
    }

    /// The write went through: the pause (if any) is over.
    pub fn leave(&mut self) {
        if let Some(since) = self.since.take() {
            self.stats.disk_full_paused.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(
                writer = self.what,
                paused_ms = since.elapsed().as_millis() as u64,
                "disk has room again; reading resumed"
            );
        }
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        if self.since.take().is_some() {
            self.stats.disk_full_paused.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_means_enospc_or_quota() {
        assert!(is_full(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_full(&io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(!is_full(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(!is_full(&io::Error::other("x")));
    }

    #[test]
    fn the_floor_keeps_the_larger_bound() {
        let f = Floor {
            min_free_bytes: 1000,
            min_free_percent: 5,
        };
        assert_eq!(f.keep(10_000), 1000);
        assert_eq!(f.keep(100_000), 5000);
        let off = Floor::default();
        assert_eq!(off.keep(u64::MAX), 0);
        assert_eq!(
            off.under(Path::new("/nonexistent/dir"), u64::MAX).unwrap(),
            None
        );
        // A real volume: asking for more than it has is refused, nothing is allowed.
        let dir = tempfile::tempdir().unwrap();
        let s = space(dir.path()).unwrap();
        assert!(s.total > 0 && s.available <= s.total);
        let one = Floor {
            min_free_bytes: 1,
            min_free_percent: 0,
        };
        assert!(one.under(dir.path(), s.total).unwrap().is_some());
        assert!(space(Path::new("/nonexistent/dir")).is_err());
    }

    #[test]
    fn a_pause_is_one_episode_and_a_gauge() {
        let stats = Arc::new(Stats::default());
        let mut p = Pause::new("buffer", stats.clone());
        p.enter(Cause::Full, &"ENOSPC");
        p.enter(Cause::Full, &"ENOSPC");
        assert_eq!(stats.disk_full_paused.load(Ordering::Relaxed), 1);
        assert_eq!(stats.disk_full_episodes.load(Ordering::Relaxed), 1);
        p.leave();
        p.leave();
        assert_eq!(stats.disk_full_paused.load(Ordering::Relaxed), 0);
        p.enter(Cause::Floor, &"1 MiB");
        drop(p);
        assert_eq!(stats.disk_full_paused.load(Ordering::Relaxed), 0);
        assert_eq!(stats.disk_full_episodes.load(Ordering::Relaxed), 2);
    }
}
