//! The agent's counters and their Prometheus rendering. One [`Stats`] shared through an
//! `Arc`, never a global, so tests can run pipelines side by side and read exact values;
//! one [`Metrics`] registry per agent reads it at scrape time.
//!
//! The data path only ever touches atomics: scraping copies their values into metric
//! families, it never takes a lock the readers, writer or shipper hold.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

macro_rules! counters {
    (
        $($(#[doc = $doc:literal])* $name:ident),* $(,)?
        ; state { $($(#[doc = $sdoc:literal])* $sname:ident : $sty:ty),* $(,)? }
    ) => {
        /// The agent's counters (all monotonic except `files_watched` and the `buffer_`
        /// gauges), then state that is not a counter: gauges set by their owner and the
        /// workers' heartbeats.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
            $($(#[doc = $sdoc])* pub $sname: $sty,)*
        }

        impl Stats {
            /// (name, value) pairs of the counters, in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Log files currently tracked.
    files_watched,
    /// Log files opened (including rotated siblings drained at start-up).
    files_opened,
    /// Files found renamed away (rotation) while open.
    files_rotated,
    /// Files found truncated or rewritten in place (copytruncate, inode reuse).
    files_truncated,
    /// Files drained and closed after rotation or deletion.
    files_closed,
    /// Physical lines read.
    lines,
    /// Bytes read and consumed from log files.
    bytes,
    /// Records produced (documents).
    records,
    /// Partial lines merged into the record they continue.
    partials_merged,
    /// Records kept as raw text because their line did not parse.
    parse_errors,
    /// Records cut at the size cap.
    truncated,
    /// Documents made of several lines joined by multiline grouping (stack traces).
    multiline_groups,
    /// Lines joined into a multiline group after its first.
    multiline_lines_joined,
    /// Documents with fields parsed from their text.
    fields_parsed,
    /// Records the field parser applied to that kept their text only: invalid...
    fields_invalid,
    /// ...or past the caps on keys, depth or key length.
    fields_caps,
    /// Documents Elasticsearch refused for their parsed fields, sent again without them:
    /// a value of the wrong type for the mapping...
    fields_rejected_mapper_parsing,
    /// ...a field where an object is mapped (or the reverse), or the total fields limit...
    fields_rejected_illegal_argument,
    /// ...or an index that accepts no new fields.
    fields_rejected_strict_mapping,
    /// Records dropped by a rule's `drop`/`keep` filter (decided, not lost: their
    /// checkpoints move).
    records_dropped,
    /// Secrets replaced by redaction.
    redactions,
    /// Configurations loaded again (SIGHUP, a changed file) and applied.
    config_reloads,
    /// New configurations refused (the previous one stays).
    config_reload_failures,
    /// Bytes of overlong lines skipped past the size cap.
    overlong_bytes_skipped,
    /// Errors reading log files or their metadata.
    read_errors,
    /// Bytes of a final line still without `\n` when a dry-run ended.
    incomplete_bytes,
    /// Bytes of buffer segments on disk (gauge).
    buffer_bytes,
    /// Records in the buffer not yet acknowledged (gauge).
    buffer_records,
    /// The most bytes the buffer's segments held since the start (gauge).
    buffer_bytes_peak,
    /// Writers (buffer, checkpoint file, dead-letter file) waiting for disk space: a full disk or the
    /// free-space floor (gauge).
    disk_full_paused,
    /// Pauses for disk space begun.
    disk_full_episodes,
    /// Damaged regions skipped in buffer segments.
    buffer_damaged_regions,
    /// Records lost to buffer damage (known from intact frame headers).
    buffer_records_lost,
    /// Batches appended to the buffer.
    batches,
    /// Checkpoint files written.
    checkpoint_writes,
    /// Index templates installed again after they went missing or out of date.
    template_installs,
    /// Documents Elasticsearch created.
    records_indexed,
    /// Documents already there (409 on create: a replay).
    records_duplicate,
    /// Documents rejected and written to the dead-letter file.
    records_dead_letter,
    /// Dead-letter entries dropped because the file was full.
    dead_letter_dropped,
    /// Bulk requests that got a per-item answer.
    bulk_requests,
    /// Bulk requests that failed whole (connection, timeout, 429, 5xx, 4xx) and were retried.
    bulk_failures,
    /// Bulk requests split because Elasticsearch answered 413.
    bulk_split,
    /// Documents sent again (per item or in a retried request).
    docs_retried,
    /// Failed requests other than bulk (version detection).
    es_request_failures,
    /// Physical lines read and dropped because their pod, container or namespace is
    /// excluded (`shipper.io/exclude`, `shipper.io/exclude-containers`).
    excluded_lines,
    /// Files whose pod was not in the metadata cache when they were opened, so they
    /// waited (bounded) for the API watch before their first record; counted when the
    /// wait ends (pod found or time up).
    metadata_waits,
    /// Errors from the Kubernetes API (list or watch failed, unreadable objects); each
    /// is retried with backoff.
    kube_errors,
    /// Bytes a file was known to hold past the read position when it was truncated in
    /// place with no rotated copy left to drain them from: gone before they were read.
    /// A file rotated by rename is drained from its open handle, so normal rotation never
    /// counts here.
    rotated_unread_bytes,
    /// Of those, bytes of a container held back by its rate limit at the time.
    rotated_unread_throttled,
    /// Of those, bytes lost while reading was paused because the buffer was full...
    rotated_unread_buffer_full,
    /// ...or because the disk was (or the free-space floor reached).
    rotated_unread_disk_full,
    /// Bytes past the checkpoint of files deleted while the agent was stopped (known
    /// from the length recorded with the checkpoint); counted in `rotated_unread_bytes`.
    rotated_unread_deleted,
    /// Rotated files read at start-up that no checkpoint knew: born and rotated while
    /// the agent was stopped.
    files_unseen_rotated,
    /// Journal entries read (every unit, before the unit filter).
    journal_entries,
    /// Journal entries shipped as documents.
    journal_docs,
    /// Journal entries or files that could not be read (corrupt, unsupported).
    journal_errors,
    /// Times the journal position was gone (its entry vacuumed or rotated away before
    /// it was read past): reading went on from the oldest entry after it.
    journal_cursor_lost,
    /// Entries skipped over when the position was gone (from sequence numbers).
    journal_entries_lost,
    /// Times a file was read again from a record released from memory (the memory
    /// budget of unfinished records was spent) once that record was complete.
    records_reread,
    /// Records whose pod was found (API cache or pod list): `shipper.metadata: complete`.
    metadata_complete,
    /// Records with metadata from the log path and Docker's config only.
    metadata_partial,
    /// Records with no metadata at all.
    metadata_none,
    /// Times a Kubernetes watch started over with a fresh list (after an error or an
    /// expired resource version).
    kube_watch_restarts,
    /// Bulk requests whose every document was indexed or already there.
    bulk_success,
    /// Bulk requests answered 200 with some documents to retry or rejected.
    bulk_partial,
    /// Bulk requests answered 429 as a whole.
    bulk_throttled,
    /// Bulk requests answered 5xx as a whole.
    bulk_server_error,
    /// Bulk requests answered with another 4xx as a whole (401, 403, 404, 413, ...).
    bulk_client_error,
    /// Bulk requests with no usable answer: connection, timeout, TLS, unreadable body.
    bulk_network,
    ; state {
        /// Pods in the live metadata cache, deleted ones in their grace period included
        /// (gauge).
        kube_cache_pods: AtomicU64,
        /// Unix milliseconds at which the oldest unacknowledged buffer frame was appended;
        /// 0 when the buffer is empty (gauge).
        buffer_oldest_append_ms: AtomicU64,
        /// Delivery delay of the newest acknowledged batch: acknowledgement time minus the
        /// newest record timestamp in it, in milliseconds (0 until a batch is
        /// acknowledged; rendered as 0 whenever the agent is caught up: nothing left to
        /// read or to deliver).
        lag_ms: AtomicU64,
        /// The reader has handed over everything it read (only the reader writes it): with
        /// an empty buffer, the agent is caught up and `shipper_lag_seconds` is 0.
        caught_up: std::sync::atomic::AtomicBool,
        /// Duration of bulk requests.
        bulk_duration: LatencyHistogram,
        /// Acknowledgement time minus each record's timestamp.
        delivery_latency: LatencyHistogram,
        /// The appender is waiting for room in a full buffer (reading is paused).
        buffer_full: std::sync::atomic::AtomicBool,
        /// The last reload was refused (gauge, rendered as success 0/1).
        config_reload_failed: std::sync::atomic::AtomicBool,
        /// Open files whose container is held back by its rate limit (gauge).
        files_throttled: AtomicU64,
        /// Heartbeats of the long-lived workers, for `/healthz`.
        live: Liveness,
        /// Records dropped by filters, by rule name.
        dropped_by_rule: Named,
        /// Secrets replaced, by pattern name.
        redactions_by_pattern: Named,
    }
}

/// Counters whose label values come from the configuration (rule and pattern names).
/// The reader adds to them only when something was dropped or redacted, so the lock is
/// rare on the data path.
#[derive(Debug, Default)]
pub struct Named(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl Named {
    pub fn add(&self, name: &str, n: u64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(name) {
            Some(c) => *c += n,
            None => {
                m.insert(name.to_owned(), n);
            }
        }
    }

    /// (name, value) pairs, by name.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Which [`Named`] counters of [`Stats`] a family renders.
type WhichNamed = fn(&Stats) -> &Named;

/// The families of [`Named`] counters: name, help, label, which.
const NAMED: &[(&str, &str, &str, WhichNamed)] = &[
    (
        "shipper_records_filtered_total",
        "Records dropped by a rule's drop or keep filter, by rule name (their checkpoints move: dropped is decided, not lost).",
        "rule",
        |s| &s.dropped_by_rule,
    ),
    (
        "shipper_redactions_total",
        "Secrets replaced by redaction, by pattern name.",
        "pattern",
        |s| &s.redactions_by_pattern,
    ),
];

impl Stats {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Counts a document sent again without its parsed fields.
    pub fn fields_rejected(&self, reason: FieldsRejected) {
        Stats::add(
            match reason {
                FieldsRejected::MapperParsing => &self.fields_rejected_mapper_parsing,
                FieldsRejected::IllegalArgument => &self.fields_rejected_illegal_argument,
                FieldsRejected::StrictMapping => &self.fields_rejected_strict_mapping,
            },
            1,
        );
    }

    /// Counts one bulk request by how it ended, and how long it took.
    pub fn bulk_result(&self, result: BulkResult, took: Duration) {
        Stats::add(
            match result {
                BulkResult::Success => &self.bulk_success,
                BulkResult::Partial => &self.bulk_partial,
                BulkResult::Throttled => &self.bulk_throttled,
                BulkResult::ServerError => &self.bulk_server_error,
                BulkResult::ClientError => &self.bulk_client_error,
                BulkResult::Network => &self.bulk_network,
            },
            1,
        );
        self.bulk_duration.observe(took);
    }

    /// Records that a batch whose newest record is `newest_record_ms` (unix) was fully
    /// acknowledged now.
    /// A frame of `records` records written between `oldest_ms` and `newest_ms` (their
    /// timestamps; 0: unknown) was acknowledged.
    pub fn acknowledged(&self, records: u32, (oldest_ms, newest_ms): (u64, u64)) {
        if newest_ms > 0 {
            let now = unix_ms();
            self.lag_ms
                .store(now.saturating_sub(newest_ms), Ordering::Relaxed);
            let ms = |t: u64| Duration::from_millis(now.saturating_sub(t));
            let oldest = if oldest_ms > 0 { oldest_ms } else { newest_ms };
            self.delivery_latency
                .observe_spread(ms(newest_ms), ms(oldest), u64::from(records));
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why Elasticsearch refused a document's parsed fields: the `reason` label of
/// `shipper_fields_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldsRejected {
    /// `mapper_parsing_exception` / `document_parsing_exception`: a value of the wrong
    /// type for the field's mapping.
    MapperParsing,
    /// `illegal_argument_exception` about a field: an object where a value is mapped (or
    /// the reverse), or the total fields limit.
    IllegalArgument,
    /// `strict_dynamic_mapping_exception`: the index accepts no new fields.
    StrictMapping,
}

/// How a bulk request ended: the `result` label of `shipper_bulk_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkResult {
    /// 200, every item indexed or already there.
    Success,
    /// 200, some items to retry or rejected into the dead-letter file.
    Partial,
    /// 429 for the whole request.
    Throttled,
    /// 5xx for the whole request.
    ServerError,
    /// Any other 4xx for the whole request (401, 403, 404, 413, ...).
    ClientError,
    /// No usable answer: connection refused or reset, timeout, TLS, unreadable body.
    Network,
}

impl BulkResult {
    pub const ALL: [BulkResult; 6] = [
        BulkResult::Success,
        BulkResult::Partial,
        BulkResult::Throttled,
        BulkResult::ServerError,
        BulkResult::ClientError,
        BulkResult::Network,
    ];

    /// The class of a whole-request answer other than 200.
    pub fn from_status(status: u16) -> BulkResult {
        match status {
            429 => BulkResult::Throttled,
            500.. => BulkResult::ServerError,
            400..=499 => BulkResult::ClientError,
            // 1xx/2xx/3xx other than a 200 with items: not a usable bulk answer.
            _ => BulkResult::Network,
        }
    }

    pub fn metric_label(self) -> &'static str {
        match self {
            BulkResult::Success => "success",
            BulkResult::Partial => "partial",
            BulkResult::Throttled => "throttled",
            BulkResult::ServerError => "server_error",
            BulkResult::ClientError => "client_error",
            BulkResult::Network => "network",
        }
    }
}

/// Upper bounds (seconds) of the bulk latency buckets: from a fast local node to a
/// request close to the default timeout.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A lock-free latency histogram with fixed buckets ([`LATENCY_BUCKETS`]).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per-bucket (not cumulative) counts; the last slot is above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observes `n` values spread evenly between `lo` and `hi` (the records of one
    /// frame, whose own times are not kept: only the frame's oldest and newest), each
    /// bucket taking its share of the span.
    pub fn observe_spread(&self, lo: Duration, hi: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let (lo, hi) = (lo.as_secs_f64(), hi.as_secs_f64().max(lo.as_secs_f64()));
        let mut given = 0;
        for (i, &bound) in LATENCY_BUCKETS.iter().enumerate() {
            // The fraction of [lo, hi] at or below `bound` (all of it for a point).
            let upto = if hi > lo {
                ((bound - lo) / (hi - lo)).clamp(0.0, 1.0)
            } else if lo <= bound {
                1.0
            } else {
                0.0
            };
            // Rounded cumulatively, so the shares add up to `n` by the last bound that
            // covers the span.
            let cumulative = ((upto * n as f64).round() as u64).min(n);
            let share = cumulative.saturating_sub(given);
            self.buckets[i].fetch_add(share, Ordering::Relaxed);
            given += share;
        }
        self.buckets[LATENCY_BUCKETS.len()].fetch_add(n - given, Ordering::Relaxed);
        let mean_micros = (lo + hi) / 2.0 * 1e6 * n as f64;
        self.sum_micros
            .fetch_add(mean_micros as u64, Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn to_proto(&self) -> proto::Histogram {
        let mut h = proto::Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let mut b = proto::Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(cumulative);
            buckets.push(b);
        }
        cumulative += self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        h.set_bucket(buckets);
        // Read apart from the buckets: a scrape racing an observation may be off by one
        // between them, which Prometheus tolerates; the count is never below a bucket.
        h.set_sample_count(cumulative.max(self.count()));
        h.set_sample_sum(self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        h
    }
}

/// The long-lived workers that `/healthz` watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// The thread that tails files and cuts batches.
    Reader,
    /// The thread that appends batches to the buffer and writes checkpoints.
    Appender,
    /// The task that ships the buffer to Elasticsearch.
    Shipper,
    /// The Kubernetes metadata watch.
    Kube,
    /// The async runtime itself (a ticker task on it).
    Runtime,
}

impl Worker {
    pub const ALL: [Worker; 5] = [
        Worker::Reader,
        Worker::Appender,
        Worker::Shipper,
        Worker::Kube,
        Worker::Runtime,
    ];

    /// Whether a stale heartbeat means stuck. Not for the shipper: it waits on
    /// Elasticsearch (backoff, slow answers, a full set of requests in flight), so only
    /// whether its task is alive counts.
    fn must_beat(self) -> bool {
        self != Worker::Shipper
    }

    pub fn name(self) -> &'static str {
        match self {
            Worker::Reader => "reader",
            Worker::Appender => "appender",
            Worker::Shipper => "shipper",
            Worker::Kube => "kube_watch",
            Worker::Runtime => "runtime",
        }
    }
}

// 0: not started (the default).
const RUNNING: u8 = 1;
/// A heartbeat that says "waiting for an event" (see [`Liveness::park`]).
const PARKED: u64 = u64::MAX;
const EXITED: u8 = 2;

/// Heartbeats: each worker beats at least every second or so while it works or waits on
/// something that should end (room in the buffer, Elasticsearch), so a stale heartbeat
/// means a worker is stuck, never that Elasticsearch or the API server is down. A worker
/// that waits for an event with nothing to do parks instead ([`Liveness::park`]).
#[derive(Debug)]
pub struct Liveness {
    epoch: Instant,
    /// Milliseconds since `epoch` of each worker's last beat.
    beats: [AtomicU64; Worker::ALL.len()],
    state: [AtomicU8; Worker::ALL.len()],
    stopping: std::sync::atomic::AtomicBool,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness {
            epoch: Instant::now(),
            beats: Default::default(),
            state: Default::default(),
            stopping: Default::default(),
        }
    }
}

/// Why `/healthz` fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unhealthy {
    /// No heartbeat for this long.
    Stale(Worker, Duration),
    /// The worker ended while the agent was not stopping.
    Exited(Worker),
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unhealthy::Stale(w, d) => {
                write!(f, "{}: no heartbeat for {} ms", w.name(), d.as_millis())
            }
            Unhealthy::Exited(w) => write!(f, "{}: exited", w.name()),
        }
    }
}

impl Liveness {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The worker runs from now on.
    pub fn start(&self, w: Worker) {
        self.beat(w);
        self.state[w as usize].store(RUNNING, Ordering::Release);
    }

    pub fn beat(&self, w: Worker) {
        self.beats[w as usize].store(self.now(), Ordering::Relaxed);
    }

    /// The worker waits for something outside it (a file event, a hand-off, a signal)
    /// with nothing to do until then: healthy however long that takes. Its next beat
    /// ends the wait. So an idle agent need not wake up just to say it is alive.
    pub fn park(&self, w: Worker) {
        self.beats[w as usize].store(PARKED, Ordering::Relaxed);
    }

    /// The worker ended (normally at shutdown, or because it failed).
    pub fn exited(&self, w: Worker) {
        self.state[w as usize].store(EXITED, Ordering::Release);
    }

    /// The agent is shutting down: workers ending is expected.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Workers that are stuck (no heartbeat within `timeout`) or gone.
    pub fn check(&self, timeout: Duration) -> Vec<Unhealthy> {
        let now = self.now();
        let stopping = self.stopping.load(Ordering::Relaxed);
        let mut bad = Vec::new();
        for w in Worker::ALL {
            match self.state[w as usize].load(Ordering::Acquire) {
                RUNNING if w.must_beat() => {
                    let beat = self.beats[w as usize].load(Ordering::Relaxed);
                    if beat == PARKED {
                        continue;
                    }
                    let age = Duration::from_millis(now.saturating_sub(beat));
                    if age > timeout {
                        bad.push(Unhealthy::Stale(w, age));
                    }
                }
                EXITED if !stopping => bad.push(Unhealthy::Exited(w)),
                _ => {}
            }
        }
        bad
    }
}

/// Marks a worker exited when dropped, so a panic counts too.
pub struct ExitGuard(pub Arc<Stats>, pub Worker);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.live.exited(self.1);
    }
}

/// A gauge whose value is read from elsewhere at scrape time (the limiter, the client).
pub type GaugeFn = Box<dyn Fn() -> f64 + Send + Sync>;

/// The agent's Prometheus registry (one per agent, never the global default).
pub struct Metrics {
    registry: prometheus::Registry,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Metrics {
    /// A registry over `stats` plus `gauges` (name, help, value) read at scrape time.
    pub fn new(
        stats: Arc<Stats>,
        gauges: Vec<(&'static str, &'static str, GaugeFn)>,
    ) -> Result<Metrics, prometheus::Error> {
        let registry = prometheus::Registry::new();
        let build = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "shipper_build_info",
                "Always 1; the labels say which build is running.",
            ),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build))?;
        registry.register(Box::new(StatsCollector::new(stats)?))?;
        for (name, help, value) in gauges {
            registry.register(Box::new(prometheus::PullingGauge::new(name, help, value)?))?;
        }
        Ok(Metrics { registry })
    }

    /// Every metric in the text exposition format (0.0.4).
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::with_capacity(16 << 10);
        // Encoding into a Vec cannot fail on I/O; a malformed family would be a bug here.
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot render metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

type Read = fn(&Stats) -> f64;

fn counter(c: &AtomicU64) -> f64 {
    c.load(Ordering::Relaxed) as f64
}

/// Plain (unlabelled) metrics read from [`Stats`]: name, help, type, value.
const PLAIN: &[(&str, &str, MetricType, Read)] = {
    use MetricType::{COUNTER as C, GAUGE as G};
    &[
        ("shipper_files_watched", "Log files currently open.", G, |s| counter(&s.files_watched)),
        ("shipper_files_opened_total", "Log files opened, rotated siblings drained at start-up included.", C, |s| counter(&s.files_opened)),
        ("shipper_records_reread_total", "Times a file was read again from an unfinished record released from memory (input.pending_memory_bytes was spent), once the record was complete: memory stays bounded, documents are the same.", C, |s| counter(&s.records_reread)),
        ("shipper_files_unseen_rotated_total", "Rotated files read at start-up that no checkpoint knew: born and rotated while the agent was stopped (read from their start; deterministic ids make any overlap a 409).", C, |s| counter(&s.files_unseen_rotated)),
        ("shipper_journal_entries_read_total", "systemd journal entries read (every unit, before node.journal_units selects).", C, |s| counter(&s.journal_entries)),
        ("shipper_journal_documents_total", "systemd journal entries shipped as documents.", C, |s| counter(&s.journal_docs)),
        ("shipper_journal_errors_total", "Journal files or entries that could not be read (corrupt, unsupported compression): logged and skipped.", C, |s| counter(&s.journal_errors)),
        ("shipper_journal_cursor_lost_total", "Times the journal position was gone (vacuumed or rotated away before it was read past): reading went on from the oldest entry after it.", C, |s| counter(&s.journal_cursor_lost)),
        ("shipper_journal_entries_lost_total", "Journal entries skipped over when the position was gone (from the sequence numbers on both sides of the gap).", C, |s| counter(&s.journal_entries_lost)),
        ("shipper_files_rotated_total", "Open files found renamed away or deleted (then drained).", C, |s| counter(&s.files_rotated)),
        ("shipper_files_truncated_total", "Files found truncated or rewritten in place (copytruncate, inode reuse).", C, |s| counter(&s.files_truncated)),
        ("shipper_files_closed_total", "Files drained and closed after rotation or deletion.", C, |s| counter(&s.files_closed)),
        ("shipper_lines_read_total", "Physical lines read from log files.", C, |s| counter(&s.lines)),
        ("shipper_read_bytes_total", "Bytes read and consumed from log files.", C, |s| counter(&s.bytes)),
        ("shipper_read_errors_total", "Errors reading log files, their directories or metadata.", C, |s| counter(&s.read_errors)),
        ("shipper_records_read_total", "Records (documents) produced by the reader.", C, |s| counter(&s.records)),
        ("shipper_records_parse_error_total", "Records kept as raw text because their line did not parse (indexed too).", C, |s| counter(&s.parse_errors)),
        ("shipper_records_truncated_total", "Records cut at input.max_record_bytes (indexed too).", C, |s| counter(&s.truncated)),
        ("shipper_multiline_groups_total", "Documents made of several lines joined by multiline grouping (a stack trace and its logger line).", C, |s| counter(&s.multiline_groups)),
        ("shipper_multiline_lines_joined_total", "Lines joined into a multiline group after its first (so documents = records - joined).", C, |s| counter(&s.multiline_lines_joined)),
        ("shipper_partial_lines_merged_total", "Partial lines merged into the record they continue.", C, |s| counter(&s.partials_merged)),
        ("shipper_overlong_bytes_skipped_total", "Bytes of overlong lines skipped past the record cap.", C, |s| counter(&s.overlong_bytes_skipped)),
        ("shipper_config_last_reload_successful", "1 unless the last configuration reload was refused (the agent then runs on the previous configuration).", G, |s| if s.config_reload_failed.load(Ordering::Relaxed) { 0.0 } else { 1.0 }),
        ("shipper_files_throttled", "Open files whose container is held back by its rate limit (their backlog waits in the files).", G, |s| counter(&s.files_throttled)),
        ("shipper_buffer_bytes", "Bytes of buffer segments on disk.", G, |s| counter(&s.buffer_bytes)),
        ("shipper_buffer_bytes_peak", "The most bytes the buffer's segments held since the start: at most buffer.max_bytes, or one frame when a single batch is larger.", G, |s| counter(&s.buffer_bytes_peak)),
        ("shipper_disk_full_paused", "Writers (buffer, checkpoint file, dead-letter file) waiting for disk space, because the disk is full or the write would cross the free-space floor (buffer.min_free_bytes, buffer.min_free_percent): reading is paused meanwhile (a batch whose rejections cannot be written goes again later), shipping goes on.", G, |s| counter(&s.disk_full_paused)),
        ("shipper_disk_full_episodes_total", "Pauses for disk space begun (see shipper_disk_full_paused).", C, |s| counter(&s.disk_full_episodes)),
        ("shipper_buffer_records", "Records in the buffer not yet acknowledged by Elasticsearch.", G, |s| counter(&s.buffer_records)),
        ("shipper_buffer_oldest_record_age_seconds", "Age of the oldest unacknowledged batch in the buffer (0 when empty).", G, |s| {
            let at = s.buffer_oldest_append_ms.load(Ordering::Relaxed);
            if at == 0 { 0.0 } else { unix_ms().saturating_sub(at) as f64 / 1e3 }
        }),
        ("shipper_buffer_damaged_regions_total", "Damaged regions skipped in buffer segments.", C, |s| counter(&s.buffer_damaged_regions)),
        ("shipper_buffer_records_lost_total", "Records lost to buffer damage (known from intact frame headers).", C, |s| counter(&s.buffer_records_lost)),
        ("shipper_template_reinstalls_total", "Index templates installed again because the cluster's went missing (deleted, a snapshot restore), was older than this agent's, or lacked a pattern the routes need.", C, |s| counter(&s.template_installs)),
        ("shipper_checkpoint_writes_total", "Checkpoint files written.", C, |s| counter(&s.checkpoint_writes)),
        ("shipper_bulk_splits_total", "Bulk requests split in halves because Elasticsearch answered 413.", C, |s| counter(&s.bulk_split)),
        ("shipper_docs_retried_total", "Documents sent again (per item, or in a retried request).", C, |s| counter(&s.docs_retried)),
        ("shipper_dead_letter_dropped_total", "Dead-letter entries dropped because the file was full.", C, |s| counter(&s.dead_letter_dropped)),
        ("shipper_es_request_failures_total", "Failed Elasticsearch requests other than bulk (version detection).", C, |s| counter(&s.es_request_failures)),
        ("shipper_kube_watch_restarts_total", "Kubernetes watches started over with a fresh list.", C, |s| counter(&s.kube_watch_restarts)),
        ("shipper_kube_errors_total", "Errors from the Kubernetes API (each retried with backoff).", C, |s| counter(&s.kube_errors)),
        ("shipper_kube_cache_pods", "Pods in the metadata cache (deleted ones in their grace period included).", G, |s| counter(&s.kube_cache_pods)),
        ("shipper_metadata_waits_total", "Files that waited (bounded) for their pod to appear in the metadata cache.", C, |s| counter(&s.metadata_waits)),
        ("shipper_lag_seconds", "Acknowledgement time minus the newest record timestamp of the last batch Elasticsearch acknowledged; 0 when caught up (nothing left to read or deliver).", G, |s| {
            let caught_up = s.caught_up.load(Ordering::Relaxed) && s.buffer_records.load(Ordering::Relaxed) == 0;
            if caught_up { 0.0 } else { s.lag_ms.load(Ordering::Relaxed) as f64 / 1e3 }
        }),
    ]
};

/// Labelled counters read from [`Stats`]: name, help, label, (value, reader) pairs.
type Labelled = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, Read)>,
);

fn labelled() -> Vec<Labelled> {
    let results = BulkResult::ALL
        .iter()
        .map(|r| -> (&'static str, Read) {
            let read: Read = match r {
                BulkResult::Success => |s| counter(&s.bulk_success),
                BulkResult::Partial => |s| counter(&s.bulk_partial),
                BulkResult::Throttled => |s| counter(&s.bulk_throttled),
                BulkResult::ServerError => |s| counter(&s.bulk_server_error),
                BulkResult::ClientError => |s| counter(&s.bulk_client_error),
                BulkResult::Network => |s| counter(&s.bulk_network),
            };
            (r.metric_label(), read)
        })
        .collect();
    vec![
        (
            "shipper_records_total",
            "Records by final outcome: indexed (created), duplicate (409 on create: already there), dead_letter (rejected, written to the dead-letter file), excluded (lines of excluded files: rules, annotations, labels), dropped (by a rule's drop or keep filter).",
            "outcome",
            vec![
                ("indexed", |s| counter(&s.records_indexed)),
                ("duplicate", |s| counter(&s.records_duplicate)),
                ("dead_letter", |s| counter(&s.records_dead_letter)),
                ("excluded", |s| counter(&s.excluded_lines)),
                ("dropped", |s| counter(&s.records_dropped)),
            ],
        ),
        (
            "shipper_bulk_requests_total",
            "Bulk requests by result: success, partial (some items retried or rejected), throttled (429), server_error (5xx), client_error (other 4xx), network (no usable answer).",
            "result",
            results,
        ),
        (
            "shipper_fields_total",
            "Records the field parser applied to, by outcome: parsed (fields in the document), invalid (looked like the format, did not parse) and caps (past fields.max_keys, max_depth or max_key_bytes); the last two keep their text only.",
            "outcome",
            vec![
                ("parsed", |s| counter(&s.fields_parsed)),
                ("invalid", |s| counter(&s.fields_invalid)),
                ("caps", |s| counter(&s.fields_caps)),
            ],
        ),
        (
            "shipper_fields_rejected_total",
            "Documents Elasticsearch refused because of their parsed fields, sent again without them (shipper.fields_rejected says why), by reason: mapper_parsing (a value of the wrong type), illegal_argument (object vs value, or the total fields limit), strict_mapping.",
            "reason",
            vec![
                ("mapper_parsing", |s| counter(&s.fields_rejected_mapper_parsing)),
                ("illegal_argument", |s| counter(&s.fields_rejected_illegal_argument)),
                ("strict_mapping", |s| counter(&s.fields_rejected_strict_mapping)),
            ],
        ),
        (
            "shipper_config_reloads_total",
            "Configuration reloads (SIGHUP or a changed file) by result: success (applied; settings that need a restart are logged), failure (refused; the previous configuration stays).",
            "result",
            vec![
                ("success", |s| counter(&s.config_reloads)),
                ("failure", |s| counter(&s.config_reload_failures)),
            ],
        ),
        (
            "shipper_rotated_unread_bytes_total",
            "Bytes a file held past the read position when they became unreadable, by reason: truncated (copytruncate or a rewrite with no copy left to read them from), throttled, buffer_full, disk_full (the same while the container was held back by its rate limit, or reading was paused for a full buffer or a full disk), deleted_while_down (the file was deleted while the agent was stopped; known from the length its checkpoint recorded).",
            "reason",
            vec![
                ("truncated", |s| {
                    counter(&s.rotated_unread_bytes)
                        - counter(&s.rotated_unread_throttled)
                        - counter(&s.rotated_unread_buffer_full)
                        - counter(&s.rotated_unread_disk_full)
                        - counter(&s.rotated_unread_deleted)
                }),
                ("throttled", |s| counter(&s.rotated_unread_throttled)),
                ("buffer_full", |s| counter(&s.rotated_unread_buffer_full)),
                ("disk_full", |s| counter(&s.rotated_unread_disk_full)),
                ("deleted_while_down", |s| counter(&s.rotated_unread_deleted)),
            ],
        ),
        (
            "shipper_metadata_total",
            "Records by the metadata they carry (shipper.metadata): complete, partial, none.",
            "status",
            vec![
                ("complete", |s| counter(&s.metadata_complete)),
                ("partial", |s| counter(&s.metadata_partial)),
                ("none", |s| counter(&s.metadata_none)),
            ],
        ),
    ]
}

const HISTOGRAM: (&str, &str) = (
    "shipper_bulk_request_duration_seconds",
    "Duration of bulk requests, from sending to the whole answer read (failed ones included).",
);

const DELIVERY_HISTOGRAM: (&str, &str) = (
    "shipper_delivery_latency_seconds",
    "Acknowledgement by Elasticsearch minus the record's timestamp, per record (the records of one request are taken as spread evenly between its oldest and newest).",
);

/// Renders [`Stats`] as metric families at scrape time.
struct StatsCollector {
    stats: Arc<Stats>,
    labelled: Vec<Labelled>,
    descs: Vec<Desc>,
}

impl StatsCollector {
    fn new(stats: Arc<Stats>) -> Result<StatsCollector, prometheus::Error> {
        let labelled = labelled();
        let mut descs = Vec::new();
        for (name, help, _, _) in PLAIN {
            descs.push(Desc::new(
                (*name).into(),
                (*help).into(),
                vec![],
                Default::default(),
            )?);
        }
        for (name, help, label, _) in NAMED {
            descs.push(Desc::new(
                (*name).into(),
                (*help).into(),
                vec![(*label).into()],
                Default::default(),
            )?);
        }
        for (name, help, label, _) in &labelled {
            descs.push(Desc::new(
                (*name).into(),
                (*help).into(),
                vec![(*label).into()],
                Default::default(),
            )?);
        }
        for (name, help) in [HISTOGRAM, DELIVERY_HISTOGRAM] {
            descs.push(Desc::new(
                name.into(),
                help.into(),
                vec![],
                Default::default(),
            )?);
        }
        Ok(StatsCollector {
            stats,
            labelled,
            descs,
        })
    }
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn value_metric(kind: MetricType, v: f64, label: Option<(&str, &str)>) -> proto::Metric {
    let mut m = proto::Metric::default();
    if kind == MetricType::COUNTER {
        let mut c = proto::Counter::default();
        c.set_value(v);
        m.set_counter(c);
    } else {
        let mut g = proto::Gauge::default();
        g.set_value(v);
        m.set_gauge(g);
    }
    if let Some((name, value)) = label {
        let mut l = proto::LabelPair::default();
        l.set_name(name.into());
        l.set_value(value.into());
        m.set_label(vec![l]);
    }
    m
}

impl Collector for StatsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &*self.stats;
        let mut out = Vec::with_capacity(self.descs.len());
        for (name, help, kind, read) in PLAIN {
            out.push(family(
                name,
                help,
                *kind,
                vec![value_metric(*kind, read(s), None)],
            ));
        }
        for (name, help, label, values) in &self.labelled {
            let metrics = values
                .iter()
                .map(|(v, read)| value_metric(MetricType::COUNTER, read(s), Some((label, v))))
                .collect();
            out.push(family(name, help, MetricType::COUNTER, metrics));
        }
        for (name, help, label, which) in NAMED {
            let metrics = which(s)
                .snapshot()
                .into_iter()
                .map(|(v, n)| value_metric(MetricType::COUNTER, n as f64, Some((label, &v))))
                .collect();
            out.push(family(name, help, MetricType::COUNTER, metrics));
        }
        for ((name, help), h) in [
            (HISTOGRAM, &s.bulk_duration),
            (DELIVERY_HISTOGRAM, &s.delivery_latency),
        ] {
            let mut m = proto::Metric::default();
            m.set_histogram(h.to_proto());
            out.push(family(name, help, MetricType::HISTOGRAM, vec![m]));
        }
        out
    }
}

impl fmt::Display for Stats {
    /// One line: `files_watched=3 files_opened=3 ... incomplete_bytes=0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.snapshot().into_iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn renders_counters_labels_gauges_and_the_histogram() {
        let stats = Arc::new(Stats::default());
        Stats::add(&stats.records_indexed, 7);
        Stats::add(&stats.records_duplicate, 2);
        Stats::add(&stats.excluded_lines, 3);
        Stats::add(&stats.lines, 12);
        Stats::add(&stats.records, 1);
        Stats::add(&stats.metadata_partial, 1);
        stats.bulk_result(BulkResult::Success, Duration::from_millis(3));
        stats.bulk_result(BulkResult::from_status(429), Duration::from_millis(40));
        stats.bulk_result(BulkResult::from_status(503), Duration::from_secs(100));
        stats.buffer_bytes.store(4096, Ordering::Relaxed);
        let m = Metrics::new(
            stats.clone(),
            vec![("shipper_bulk_in_flight", "in flight", Box::new(|| 2.0))],
        )
        .unwrap();
        let text = m.render();
        let got = lines(&text);
        for want in [
            concat!(
                "shipper_build_info{version=\"",
                env!("CARGO_PKG_VERSION"),
                "\"} 1"
            ),
            "shipper_records_total{outcome=\"indexed\"} 7",
            "shipper_records_total{outcome=\"duplicate\"} 2",
            "shipper_records_total{outcome=\"dead_letter\"} 0",
            "shipper_records_total{outcome=\"excluded\"} 3",
            "shipper_lines_read_total 12",
            "shipper_records_read_total 1",
            "shipper_metadata_total{status=\"partial\"} 1",
            "shipper_metadata_total{status=\"complete\"} 0",
            "shipper_bulk_requests_total{result=\"success\"} 1",
            "shipper_bulk_requests_total{result=\"partial\"} 0",
            "shipper_bulk_requests_total{result=\"throttled\"} 1",
            "shipper_bulk_requests_total{result=\"server_error\"} 1",
            "shipper_bulk_requests_total{result=\"client_error\"} 0",
            "shipper_bulk_requests_total{result=\"network\"} 0",
            "shipper_bulk_request_duration_seconds_bucket{le=\"0.005\"} 1",
            "shipper_bulk_request_duration_seconds_bucket{le=\"0.05\"} 2",
            "shipper_bulk_request_duration_seconds_bucket{le=\"60\"} 2",
            "shipper_bulk_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "shipper_bulk_request_duration_seconds_sum 100.043",
            "shipper_bulk_request_duration_seconds_count 3",
            "shipper_buffer_bytes 4096",
            "shipper_buffer_oldest_record_age_seconds 0",
            "shipper_lag_seconds 0",
            "shipper_bulk_in_flight 2",
        ] {
            assert!(got.contains(&want), "missing `{want}` in:\n{text}");
        }
        assert!(text.contains("# TYPE shipper_records_total counter"));
        assert!(text.contains("# TYPE shipper_files_watched gauge"));
        assert!(text.contains("# TYPE shipper_bulk_request_duration_seconds histogram"));
        for l in &got {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(name.starts_with("shipper_"), "{l}");
        }
    }

    #[test]
    fn every_family_is_declared_once() {
        let stats = Arc::new(Stats::default());
        let c = StatsCollector::new(stats).unwrap();
        let mut names: Vec<&str> = c.desc().iter().map(|d| d.fq_name.as_str()).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a metric name appears twice");
        assert_eq!(c.collect().len(), n, "every declared family is collected");
    }

    #[test]
    fn lag_is_measured_at_acknowledgement() {
        let stats = Stats::default();
        stats.acknowledged(5, (0, 0));
        assert_eq!(
            Stats::get(&stats.lag_ms),
            0,
            "unknown timestamps leave it alone"
        );
        stats.acknowledged(4, (unix_ms() - 95_000, unix_ms() - 90_000));
        let lag = Stats::get(&stats.lag_ms);
        assert!((90_000..100_000).contains(&lag), "{lag}");
        assert_eq!(
            stats.delivery_latency.count(),
            4,
            "every record of the frame"
        );
    }

    #[test]
    fn a_frames_records_are_spread_over_its_span() {
        let h = LatencyHistogram::default();
        // 100 records written between 20 ms and 120 ms before their acknowledgement.
        h.observe_spread(Duration::from_millis(20), Duration::from_millis(120), 100);
        let p = h.to_proto();
        let at = |bound: f64| {
            p.get_bucket()
                .iter()
                .find(|b| b.upper_bound() == bound)
                .unwrap()
                .cumulative_count()
        };
        assert_eq!(at(0.01), 0);
        assert_eq!(at(0.025), 5, "5 ms of the 100 ms span");
        assert_eq!(at(0.05), 30);
        assert_eq!(at(0.1), 80);
        assert_eq!(at(0.25), 100);
        assert_eq!(p.get_sample_count(), 100);
        assert!((p.get_sample_sum() - 7.0).abs() < 1e-6, "mean 70 ms");
        // One record, or a span of one instant: one bucket.
        let h = LatencyHistogram::default();
        h.observe_spread(Duration::from_millis(30), Duration::from_millis(30), 3);
        h.observe_spread(Duration::from_secs(90), Duration::from_secs(100), 1);
        // Two records over 0-22 ms: both within the 25 ms bound, none lost to +Inf.
        h.observe_spread(Duration::ZERO, Duration::from_millis(22), 2);
        let p = h.to_proto();
        assert_eq!(p.get_bucket()[2].cumulative_count(), 2, "le 0.025");
        assert_eq!(p.get_bucket()[3].cumulative_count(), 5, "le 0.05");
        assert_eq!(p.get_sample_count(), 6, "one above every bound");
        assert_eq!(p.get_bucket().last().unwrap().cumulative_count(), 5);
    }
}
