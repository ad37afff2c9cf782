//! Stopping the agent: the signals it answers, the workers it watches, and the order
//! it stops in.
//!
//! **Order.** Stop reading → the reader seals its last batch → the appender appends it,
//! makes it durable and writes the checkpoints → the buffer closes → shipping goes on
//! until the buffer is empty or the deadline passes. Checkpoints never run ahead of the
//! buffer, so a stop cut short at any point loses nothing: what was not delivered is in
//! the buffer or still in the log files, and is sent at the next start.
//!
//! **Signals.** SIGTERM (Kubernetes stopping the Pod) and SIGINT stop cleanly; a second
//! one while the agent drains exits at once (nothing is lost, see above). SIGHUP never
//! kills the agent: it is logged (there is nothing to reload yet).
//!
//! **Workers.** A worker thread that ends on its own, with an error or a panic, starts
//! the same ordered stop, and the agent then exits non-zero so that it is restarted
//! rather than left running with a dead pipeline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The agent's stop: requested by a signal, or by a worker that failed.
#[derive(Debug)]
pub struct Stop {
    /// Set once stopping began: every loop checks it.
    flag: AtomicBool,
    /// Wakes whoever waits for the stop.
    notify: tokio::sync::Notify,
    /// Wakes the threads that sleep until an event (the reader): the sender is dropped
    /// on the stop, which disconnects the receiver.
    wake: (
        Mutex<Option<crossbeam_channel::Sender<()>>>,
        crossbeam_channel::Receiver<()>,
    ),
    /// Why a worker failed, if one did.
    failure: Mutex<Option<String>>,
}

impl Default for Stop {
    fn default() -> Stop {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Stop {
            flag: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
            wake: (Mutex::new(Some(tx)), rx),
            failure: Mutex::new(None),
        }
    }
}

impl Stop {
    pub fn new() -> Arc<Stop> {
        Arc::new(Stop::default())
    }

    /// Starts stopping (idempotent).
    pub fn request(&self) {
        self.flag.store(true, Ordering::Relaxed);
        self.notify.notify_waiters();
        self.notify.notify_one();
        // Dropping the sender disconnects every receiver: a select on it returns.
        self.wake.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// A channel that disconnects when the stop is requested, for a thread that sleeps
    /// until an event to wait on too (it never carries a message).
    pub fn wake_on_stop(&self) -> crossbeam_channel::Receiver<()> {
        self.wake.1.clone()
    }

    /// A worker failed: stop, and remember why (the first reason wins).
    pub fn fail(&self, why: String) {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(why);
        self.request();
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// The flag itself, for loops that poll it.
    pub fn flag(&self) -> &AtomicBool {
        &self.flag
    }

    /// Why a worker failed, if one did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves once stopping began.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// Runs `work` on the thread `shipper-<name>`. If it ends with an error (other than one
/// `expected` says is part of stopping) or panics, the stop starts with the reason; the
/// log says `the <what> failed`.
pub fn spawn_worker<T: Send + 'static>(
    (name, what): (&'static str, &'static str),
    stop: Arc<Stop>,
    expected: fn(&anyhow::Error) -> bool,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> std::io::Result<JoinHandle<anyhow::Result<T>>> {
    std::thread::Builder::new()
        .name(format!("shipper-{name}"))
        .spawn(move || {
            let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                Ok(r) => r,
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| String::from("(no message)"));
                    Err(anyhow::anyhow!("the {name} thread panicked: {msg}"))
                }
            };
            if let Err(e) = &result {
                if !expected(e) {
                    tracing::error!(error = format!("{e:#}"), "the {what} failed; stopping");
                    stop.fail(format!("{e:#}"));
                }
            }
            result
        })
}

/// Joins a worker started by [`spawn_worker`].
pub fn join<T>(handle: JoinHandle<anyhow::Result<T>>, name: &str) -> anyhow::Result<T> {
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("the {name} thread panicked"))
        .and_then(|r| r)
}

/// The running pipeline, as [`drain`] stops it.
pub struct Running {
    pub reader: JoinHandle<anyhow::Result<()>>,
    pub appender: JoinHandle<anyhow::Result<crate::buffer::Writer>>,
    pub shipper: tokio::task::JoinHandle<()>,
    /// Records left in the buffer (for the log line when the deadline cuts shipping).
    pub buffered: crate::buffer::Buffer,
}

/// Stops a running pipeline in order, once the stop was requested: the reader seals its
/// last batch and ends; the appender makes it durable, writes the checkpoints and ends;
/// the buffer closes; shipping goes on until it is empty or `deadline` passes. Returns
/// the first failure: a worker's, else the reader's or the appender's own (an error
/// `expected` says is part of stopping does not count).
pub fn drain(
    runtime: &tokio::runtime::Runtime,
    running: Running,
    stop: &Stop,
    deadline: std::time::Duration,
    expected: fn(&anyhow::Error) -> bool,
) -> anyhow::Result<()> {
    tracing::info!("stopping: no more reading; flushing the buffer");
    let read = join(running.reader, "reader");
    let appended = join(running.appender, "buffer");
    if let Ok(writer) = &appended {
        writer.close();
    }
    let shipped = runtime.block_on(async { tokio::time::timeout(deadline, running.shipper).await });
    match shipped {
        Ok(_) => tracing::info!("buffer delivered; exiting"),
        Err(_) => tracing::warn!(
            records = running.buffered.records(),
            "shutdown deadline reached; the buffer keeps the rest for the next start"
        ),
    }
    // What Elasticsearch acknowledged is not sent again at the next start.
    if appended.is_ok() {
        running.buffered.keep_acks();
    }
    if let Some(why) = stop.failure() {
        anyhow::bail!("a worker failed: {why}");
    }
    match (read, appended) {
        (Err(e), _) if !expected(&e) => Err(e),
        (_, Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Answers signals until the process ends: the first SIGTERM or SIGINT requests the stop,
/// a second one exits at once; SIGHUP asks for a reload.
///
/// The handlers are registered when this is called (inside the runtime's context), not
/// when the returned task first runs: a SIGTERM sent as soon as the agent says it started
/// is answered, never left to the default action (an exit with no drain).
pub fn signals(
    stop: Arc<Stop>,
    reload: crossbeam_channel::Sender<crate::reload::Trigger>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let registered = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    async move { answer(registered, stop, reload).await }
}

type Registered = (
    std::io::Result<tokio::signal::unix::Signal>,
    std::io::Result<tokio::signal::unix::Signal>,
    std::io::Result<tokio::signal::unix::Signal>,
);

async fn answer(
    registered: Registered,
    stop: Arc<Stop>,
    reload: crossbeam_channel::Sender<crate::reload::Trigger>,
) {
    let (mut term, mut int, mut hup) = match registered {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        (t, i, h) => {
            let err = [t.err(), i.err(), h.err()].into_iter().flatten().next();
            tracing::error!(error = ?err, "cannot listen for signals; the agent stops only when killed");
            return;
        }
    };
    loop {
        let code = tokio::select! {
            _ = term.recv() => 128 + 15,
            _ = int.recv() => 128 + 2,
            _ = hup.recv() => {
                tracing::info!("SIGHUP received: reloading the configuration");
                let _ = reload.send(crate::reload::Trigger::Signal);
                continue;
            }
        };
        if stop.is_set() {
            // Checkpoints never run ahead of the buffer: exiting now only means the rest
            // is sent at the next start.
            tracing::warn!("second stop signal while draining: exiting now; the buffer keeps what was not delivered");
            std::process::exit(code);
        }
        tracing::info!("stop signal received");
        stop.request();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_worker_starts_the_stop() {
        let stop = Stop::new();
        let h = spawn_worker(
            ("test", "test"),
            stop.clone(),
            |_| false,
            || -> anyhow::Result<()> { panic!("boom") },
        )
        .unwrap();
        let err = join(h, "test").unwrap_err();
        assert!(format!("{err:#}").contains("boom"), "{err:#}");
        assert!(stop.is_set());
        assert!(stop.failure().unwrap().contains("panicked: boom"));
    }

    #[test]
    fn an_expected_error_does_not_count_as_a_failure() {
        let stop = Stop::new();
        let h = spawn_worker(
            ("test", "test"),
            stop.clone(),
            |_| true,
            || -> anyhow::Result<()> { anyhow::bail!("stopping") },
        )
        .unwrap();
        assert!(join(h, "test").is_err());
        assert!(!stop.is_set());
        assert_eq!(stop.failure(), None);
    }

    #[tokio::test]
    async fn wait_returns_once_requested() {
        let stop = Stop::new();
        let s = stop.clone();
        let waiter = tokio::spawn(async move { s.wait().await });
        tokio::task::yield_now().await;
        stop.request();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
