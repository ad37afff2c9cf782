//! Shipping: frames from the buffer to Elasticsearch, acknowledged only when every
//! document in them is accounted for.
//!
//! A frame is acked once each of its documents was indexed, found already there (409 on
//! `create`: a replay), or rejected for itself and written to the dead-letter file.
//! Everything else is retried forever with capped exponential backoff and jitter: per
//! item (429/5xx items are re-sent alone), per request (connection errors, timeouts,
//! 429, 5xx, 401/403/404 from the cluster), and by halves on 413. The buffer holds the
//! data meanwhile; nothing is dropped because Elasticsearch is down or slow.
//!
//! Concurrency adapts (AIMD): it halves on 429 or slow responses and grows by one after a
//! run of fast, clean ones, between 1 and `max_concurrency` ([`control`], pure).

pub mod bulk;
pub mod client;
pub mod conflict;
pub mod control;
pub mod dead_letter;
pub mod template;

use crate::buffer::{Buffer, Frame};
use crate::metrics::{BulkResult, GaugeFn, Stats};
use bytes::Bytes;
use client::Client;
use control::Concurrency;
use dead_letter::DeadLetter;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Settings of the shipper.
#[derive(Debug, Clone)]
pub struct ShipConfig {
    pub max_concurrency: usize,
    pub max_backoff: Duration,
    pub target: crate::index::Target,
    pub template: bool,
    /// How often the installed template is looked at (see `Shipper::keep_template`).
    pub template_check: Duration,
    pub template_options: template::Options,
    /// gzip bodies that are rebuilt for retries.
    pub compression: bool,
}

impl From<&crate::config::Config> for ShipConfig {
    fn from(cfg: &crate::config::Config) -> ShipConfig {
        let es = &cfg.elasticsearch;
        ShipConfig {
            max_concurrency: usize::try_from(es.max_concurrency).unwrap_or(1),
            max_backoff: Duration::from_millis(es.max_backoff_ms),
            target: es.target(),
            template: es.template,
            template_check: Duration::from_millis(es.template_check_interval_ms),
            template_options: template::Options {
                nanos: es.timestamp_nanos,
                ilm_policy: es.ilm_policy.clone(),
                shards: es.number_of_shards,
                replicas: es.number_of_replicas,
                fields_key: Some(cfg.fields.target.clone()).filter(|k| !k.is_empty()),
                patterns: cfg.index_patterns(),
            },
            compression: es.compression,
        }
    }
}

/// Adaptive limit on requests in flight: [`Concurrency`] behind a lock, with waiters.
#[derive(Debug)]
pub struct Limiter {
    control: Mutex<Concurrency>,
    /// The current limit, readable without the lock (metrics, the fast path).
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    changed: Notify,
}

/// A slot in the limiter, released on drop.
pub struct Permit(Arc<Limiter>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

impl Limiter {
    pub fn new(max: usize) -> Arc<Limiter> {
        let control = Concurrency::new(max);
        Arc::new(Limiter {
            limit: AtomicUsize::new(control.limit()),
            control: Mutex::new(control),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        })
    }

    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let notified = self.changed.notified();
            let cur = self.in_flight.load(Ordering::Acquire);
            if cur < self.limit.load(Ordering::Acquire)
                && self
                    .in_flight
                    .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Permit(self.clone());
            }
            notified.await;
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn update(&self, f: impl FnOnce(&mut Concurrency)) {
        let mut c = self.control.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c);
        self.limit.store(c.limit(), Ordering::Release);
        drop(c);
        self.changed.notify_waiters();
    }

    fn throttled(&self) {
        self.update(|c| {
            c.throttled();
        });
    }

    fn success(&self, latency: Duration) {
        self.update(|c| {
            c.success(latency);
        });
    }
}

/// Delay before retry number `attempt` (0-based), with this process's random jitter.
pub fn backoff(attempt: u32, cap: Duration) -> Duration {
    control::backoff(attempt, cap, fastrand::f64())
}

/// A stored body's NDJSON lines (each with its `\n`), two per document.
fn split_lines(payload: Bytes, gzip: bool, docs: usize) -> std::io::Result<Vec<Bytes>> {
    let ndjson = if gzip {
        let mut out = Vec::with_capacity(payload.len() * 4);
        flate2::read::MultiGzDecoder::new(&payload[..]).read_to_end(&mut out)?;
        Bytes::from(out)
    } else {
        payload
    };
    let mut start = 0;
    let mut lines = Vec::with_capacity(docs * 2);
    for nl in memchr::memchr_iter(b'\n', &ndjson) {
        lines.push(ndjson.slice(start..nl + 1));
        start = nl + 1;
    }
    if lines.len() != docs * 2 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame has the wrong number of lines",
        ));
    }
    Ok(lines)
}

/// Lines joined into a body, gzip-compressed when `compress` (and that works).
fn join_lines(lines: &[Bytes], compress: bool) -> (Bytes, bool) {
    let mut raw = Vec::with_capacity(lines.iter().map(Bytes::len).sum());
    for l in lines {
        raw.extend_from_slice(l);
    }
    if compress {
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4),
            flate2::Compression::fast(),
        );
        if enc.write_all(&raw).is_ok() {
            if let Ok(z) = enc.finish() {
                return (Bytes::from(z), true);
            }
        }
    }
    (Bytes::from(raw), false)
}

/// Part of a frame being delivered: the stored body, or selected NDJSON lines.
struct Part {
    stored: Option<(Bytes, bool)>,
    /// Action + document lines (each with its `\n`), two per document.
    lines: Vec<Bytes>,
    docs: usize,
}

impl Part {
    fn from_frame(f: &Frame) -> Part {
        Part {
            stored: Some((f.payload.clone(), f.gzip)),
            lines: Vec::new(),
            docs: f.records as usize,
        }
    }

    /// The NDJSON lines, decompressing the stored body if needed (see [`Part::unpack`]
    /// for doing that off the runtime's threads).
    fn lines(&mut self) -> std::io::Result<&[Bytes]> {
        if let Some((payload, gzip)) = self.stored.take() {
            self.lines = split_lines(payload, gzip, self.docs)?;
        }
        Ok(&self.lines)
    }

    /// Decompresses and splits the stored body on a blocking thread, so the runtime's
    /// threads (which also answer `/healthz`) never spend a batch's worth of CPU on it.
    /// A body that cannot be split stays stored (and [`Part::lines`] says why).
    async fn unpack(&mut self) {
        let Some((payload, gzip)) = self.stored.clone() else {
            return;
        };
        let docs = self.docs;
        let split = tokio::task::spawn_blocking(move || split_lines(payload, gzip, docs)).await;
        if let Ok(Ok(lines)) = split {
            self.stored = None;
            self.lines = lines;
        }
    }

    /// The request body: the stored one, or the lines joined (and compressed, on a
    /// blocking thread).
    async fn body(&self, compress: bool) -> (Bytes, bool) {
        if let Some((payload, gzip)) = &self.stored {
            return (payload.clone(), *gzip);
        }
        let lines = self.lines.clone();
        let built = tokio::task::spawn_blocking(move || join_lines(&lines, compress)).await;
        built.unwrap_or_else(|_| (join_lines(&self.lines, false).0, false))
    }

    fn select(&mut self, items: &[usize]) -> std::io::Result<Part> {
        let lines = self.lines()?;
        let picked = items
            .iter()
            .flat_map(|&i| [lines[2 * i].clone(), lines[2 * i + 1].clone()])
            .collect();
        Ok(Part {
            stored: None,
            lines: picked,
            docs: items.len(),
        })
    }
}

/// Ships frames from the buffer until it is closed and drained.
pub struct Shipper {
    client: Arc<Client>,
    buffer: Buffer,
    cfg: ShipConfig,
    stats: Arc<Stats>,
    dead: Arc<Mutex<DeadLetter>>,
    /// Pauses of the dead-letter file for disk space.
    dead_disk: Mutex<crate::disk::Pause>,
    pub limiter: Arc<Limiter>,
    /// The index template's patterns, which a reload may change.
    pub patterns: Arc<TemplatePatterns>,
}

/// The patterns the index template covers. A reload that routes to new indices sets
/// them; the shipper installs the template again and says so, and the reload waits for
/// that (a while) before the first document goes to an index it would not map.
#[derive(Debug)]
pub struct TemplatePatterns {
    state: Mutex<PatternState>,
    installed: std::sync::Condvar,
    changed: Notify,
    /// Look at the installed template now (Elasticsearch answers again after failures).
    check: Notify,
    /// Templates are installed at all (`elasticsearch.template`).
    enabled: bool,
}

#[derive(Debug, Default)]
struct PatternState {
    patterns: Vec<String>,
    /// Generations: of the patterns set, and of the last ones installed.
    wanted: u64,
    installed: u64,
}

impl TemplatePatterns {
    fn new(patterns: Vec<String>, enabled: bool) -> TemplatePatterns {
        TemplatePatterns {
            state: Mutex::new(PatternState {
                patterns,
                ..PatternState::default()
            }),
            installed: std::sync::Condvar::new(),
            changed: Notify::new(),
            check: Notify::new(),
            enabled,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PatternState> {
        // A list and two counters: consistent whatever a panicking holder did.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds patterns (a no-op when there is nothing new); returns the generation to
    /// wait for. Patterns are never taken away while the agent runs: files keep the
    /// routes they had for the records before a change.
    pub fn add(&self, patterns: Vec<String>) -> u64 {
        let mut st = self.lock();
        let before = st.patterns.len();
        for p in patterns {
            if !st.patterns.contains(&p) {
                st.patterns.push(p);
            }
        }
        if st.patterns.len() != before && self.enabled {
            st.patterns.sort();
            st.wanted += 1;
            self.changed.notify_one();
        }
        st.wanted
    }

    /// Waits up to `timeout` for generation `gen` to be installed.
    pub fn wait_installed(&self, gen: u64, timeout: Duration) -> bool {
        let st = self.lock();
        let (st, _) = self
            .installed
            .wait_timeout_while(st, timeout, |st| st.installed < gen)
            .unwrap_or_else(|p| p.into_inner());
        st.installed >= gen
    }

    fn current(&self) -> (Vec<String>, u64) {
        let st = self.lock();
        (st.patterns.clone(), st.wanted)
    }

    fn mark_installed(&self, gen: u64) {
        let mut st = self.lock();
        st.installed = st.installed.max(gen);
        self.installed.notify_all();
    }
}

impl Shipper {
    pub fn new(
        client: Client,
        buffer: Buffer,
        cfg: ShipConfig,
        stats: Arc<Stats>,
        dead: DeadLetter,
    ) -> Arc<Shipper> {
        let limiter = Limiter::new(cfg.max_concurrency);
        let patterns = Arc::new(TemplatePatterns::new(
            cfg.template_options.patterns.clone(),
            cfg.template,
        ));
        Arc::new(Shipper {
            client: Arc::new(client),
            buffer,
            cfg,
            dead_disk: Mutex::new(crate::disk::Pause::new("dead-letter file", stats.clone())),
            stats,
            dead: Arc::new(Mutex::new(dead)),
            limiter,
            patterns,
        })
    }

    /// The shipper's gauges, read at scrape time (name, help, value).
    pub fn gauges(self: &Arc<Self>) -> Vec<(&'static str, &'static str, GaugeFn)> {
        let (l1, l2) = (self.limiter.clone(), self.limiter.clone());
        let (c1, c2) = (self.client.clone(), self.client.clone());
        vec![
            (
                "shipper_bulk_in_flight",
                "Bulk requests in flight.",
                Box::new(move || l1.in_flight() as f64),
            ),
            (
                "shipper_bulk_concurrency_limit",
                "Adaptive limit of bulk requests in flight (halves on 429 or slow answers).",
                Box::new(move || l2.limit() as f64),
            ),
            (
                "shipper_es_endpoints",
                "Elasticsearch endpoints configured.",
                Box::new(move || c1.endpoints() as f64),
            ),
            (
                "shipper_es_endpoints_healthy",
                "Elasticsearch endpoints whose last request was answered (below 500).",
                Box::new(move || c2.answering_endpoints() as f64),
            ),
        ]
    }

    /// Finds the server (retrying until it answers) and installs the template.
    async fn connect(&self) -> client::Version {
        let mut attempt = 0;
        let version = loop {
            match self.client.info().await {
                Ok(v) => break v,
                Err(e) => {
                    Stats::add(&self.stats.es_request_failures, 1);
                    crate::log_every!(crate::logging::EVERY, warn, error = %e, "Elasticsearch not reachable yet; reading continues into the buffer");
                    tokio::time::sleep(backoff(attempt, self.cfg.max_backoff)).await;
                    attempt += 1;
                }
            }
        };
        tracing::info!(server = %version, "connected to Elasticsearch");
        if version.major < 7 && !version.opensearch {
            tracing::error!(server = %version, "Elasticsearch before 7.0 needs mapping types, which this agent never sends; bulk requests will likely fail");
        }
        if let crate::index::Target::Fixed(name) = &self.cfg.target {
            if !version.data_streams() {
                tracing::error!(server = %version, data_stream = %name, "this server has no data streams (Elasticsearch 7.9+ or OpenSearch needed); documents go to a regular index of that name");
            }
        }
        if self.cfg.template_options.ilm_policy.is_some() && version.opensearch {
            tracing::warn!(server = %version, "elasticsearch.ilm_policy is ignored on OpenSearch: give an ISM policy an ism_template for these indices instead");
        }
        if self.cfg.template {
            let (patterns, gen) = self.patterns.current();
            if let Err(e) = self.put_template(&version, patterns).await {
                tracing::error!(error = %e, "could not install the index template; shipping anyway with dynamic mappings, and trying again");
                self.patterns.check.notify_one();
            }
            self.patterns.mark_installed(gen);
        }
        version
    }

    async fn put_template(
        &self,
        version: &client::Version,
        patterns: Vec<String>,
    ) -> Result<(), client::ClientError> {
        let opts = template::Options {
            patterns,
            ..self.cfg.template_options.clone()
        };
        self.client
            .put_template(version, &self.cfg.target, &opts)
            .await
    }

    /// Installs the template again whenever its patterns change (a reload), retrying
    /// until the server takes it; and heals it: every `template_check` and after
    /// Elasticsearch answers again following failed requests, the installed template is
    /// looked at and installed again if it is missing (deleted, or lost to a snapshot
    /// restore), older than this agent's or without a pattern the routes need. Before the
    /// next index is created, in the usual case: a daily index is created once a day.
    async fn keep_template(self: Arc<Self>, version: client::Version) {
        loop {
            tokio::select! {
                () = self.patterns.changed.notified() => {}
                () = self.patterns.check.notified() => {
                    self.heal_template(&version).await;
                    continue;
                }
                () = tokio::time::sleep(self.cfg.template_check) => {
                    self.heal_template(&version).await;
                    continue;
                }
            }
            let mut attempt = 0;
            loop {
                let (patterns, gen) = self.patterns.current();
                match self.put_template(&version, patterns.clone()).await {
                    Ok(()) => {
                        tracing::info!(
                            ?patterns,
                            "index template installed again for the new routes"
                        );
                        self.patterns.mark_installed(gen);
                        break;
                    }
                    Err(e) => {
                        crate::log_every!(crate::logging::EVERY, warn, error = %e, "could not install the index template for the new routes; retrying");
                        tokio::time::sleep(backoff(attempt, self.cfg.max_backoff)).await;
                        attempt += 1;
                    }
                }
            }
        }
    }

    /// Installs the template again if the server's is missing or outdated.
    async fn heal_template(&self, version: &client::Version) {
        let installed = match self.client.get_template(version, &self.cfg.target).await {
            Ok(i) => i,
            Err(e) => {
                crate::log_every!(crate::logging::EVERY, warn, error = %e, "could not check the index template; will look again");
                return;
            }
        };
        let (patterns, gen) = self.patterns.current();
        let opts = template::Options {
            patterns: patterns.clone(),
            ..self.cfg.template_options.clone()
        };
        let Some(why) = template::outdated(&installed, &self.cfg.target, &opts) else {
            return;
        };
        match self.put_template(version, patterns).await {
            Ok(()) => {
                Stats::add(&self.stats.template_installs, 1);
                tracing::warn!(why, "the index template was {why}: installed again");
                self.patterns.mark_installed(gen);
            }
            Err(e) => {
                crate::log_every!(crate::logging::EVERY, warn, error = %e, why, "could not install the index template again; will look again");
            }
        }
    }

    /// Runs until the buffer is closed and everything in it was delivered.
    pub async fn run(self: Arc<Self>) {
        let version = self.connect().await;
        let keeper = self
            .cfg
            .template
            .then(|| tokio::spawn(self.clone().keep_template(version)));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let permit = self.limiter.acquire().await;
            let buffer = self.buffer.clone();
            let next = tokio::task::spawn_blocking(move || buffer.next()).await;
            match next {
                Ok(Ok(Some(frame))) => {
                    let me = self.clone();
                    tasks.spawn(async move {
                        me.deliver(frame).await;
                        drop(permit);
                    });
                }
                Ok(Ok(None)) => {
                    drop(permit);
                    if self.buffer.is_drained() {
                        break;
                    }
                    // The writer wakes this on every frame (a permit is kept if
                    // nobody waits yet); the timeout is only a safety net.
                    tokio::select! {
                        _ = self.buffer.wait_for_data() => {}
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                }
                Ok(Err(e)) => {
                    drop(permit);
                    tracing::error!(error = %e, "cannot read the buffer");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    drop(permit);
                    tracing::error!(error = %e, "buffer reader task failed");
                }
            }
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        if let Some(k) = keeper {
            k.abort();
        }
    }

    /// Delivers one frame, then acks it.
    async fn deliver(&self, frame: Frame) {
        let mut queue = vec![Part::from_frame(&frame)];
        let mut whole_failures = 0u32;
        while let Some(mut part) = queue.pop() {
            let mut attempt = 0u32;
            loop {
                let (body, gzip) = part.body(self.cfg.compression).await;
                let started = Instant::now();
                let result = self.client.bulk(body, gzip).await;
                let latency = started.elapsed();
                if whole_failures > 0 && matches!(&result, Ok(a) if a.status == 200) {
                    // Elasticsearch answers again: it may have come back without our
                    // template (a new cluster, a snapshot restore).
                    whole_failures = 0;
                    self.patterns.check.notify_one();
                }
                let retry_reason = match result {
                    Ok(a) if a.status == 200 => match bulk::parse(&a.body, part.docs) {
                        Ok(report) => match self.settle(&mut part, report, latency).await {
                            Settled::Done => break,
                            Settled::Retry(next) => {
                                part = next;
                                attempt = attempt.saturating_add(1);
                                tokio::time::sleep(backoff(attempt - 1, self.cfg.max_backoff))
                                    .await;
                                continue;
                            }
                        },
                        Err(e) => {
                            self.stats.bulk_result(BulkResult::Network, latency);
                            format!("{}: {e}", self.client.endpoint_url(a.endpoint))
                        }
                    },
                    Ok(a) if a.status == 413 && part.docs > 1 => {
                        self.stats.bulk_result(BulkResult::ClientError, latency);
                        Stats::add(&self.stats.bulk_split, 1);
                        let half = part.docs / 2;
                        part.unpack().await;
                        let first: Vec<usize> = (0..half).collect();
                        let second: Vec<usize> = (half..part.docs).collect();
                        match (part.select(&first), part.select(&second)) {
                            (Ok(a), Ok(b)) => {
                                queue.push(b);
                                part = a;
                                continue;
                            }
                            _ => String::from("cannot split the batch"),
                        }
                    }
                    Ok(a) if a.status == 413 => {
                        self.stats.bulk_result(BulkResult::ClientError, latency);
                        if self.reject_all(&mut part, 413, r#"{"type":"request_too_large","reason":"a single document is larger than the cluster accepts (http.max_content_length)"}"#).await {
                            break;
                        }
                        String::from("the dead-letter file's disk is full")
                    }
                    Ok(a) => {
                        self.stats
                            .bulk_result(BulkResult::from_status(a.status), latency);
                        if a.status == 429 {
                            self.limiter.throttled();
                        }
                        format!(
                            "{} answered {}: {}",
                            self.client.endpoint_url(a.endpoint),
                            a.status,
                            client::snippet(&a.body)
                        )
                    }
                    Err(e) => {
                        self.stats.bulk_result(BulkResult::Network, latency);
                        e.to_string()
                    }
                };
                Stats::add(&self.stats.bulk_failures, 1);
                Stats::add(&self.stats.docs_retried, part.docs as u64);
                whole_failures += 1;
                let delay = backoff(attempt, self.cfg.max_backoff);
                // Loud, but not once per attempt per frame through a long outage.
                crate::log_every!(crate::logging::EVERY, warn, attempt, docs = part.docs, retry_in_ms = delay.as_millis() as u64, error = %retry_reason, "bulk request failed; retrying");
                attempt = attempt.saturating_add(1);
                tokio::time::sleep(delay).await;
            }
        }
        // Acknowledging may delete a segment file: not on the runtime's threads.
        let buffer = self.buffer.clone();
        let id = frame.id;
        if tokio::task::spawn_blocking(move || buffer.ack(id))
            .await
            .is_err()
        {
            self.buffer.ack(id);
        }
    }

    /// Accounts for a parsed response. Returns the part to retry, if any.
    async fn settle(&self, part: &mut Part, report: bulk::Report, latency: Duration) -> Settled {
        Stats::add(&self.stats.bulk_requests, 1);
        Stats::add(&self.stats.records_indexed, report.indexed as u64);
        Stats::add(&self.stats.records_duplicate, report.duplicate as u64);
        let clean = report.retry.is_empty() && report.reject.is_empty();
        self.stats.bulk_result(
            if clean {
                BulkResult::Success
            } else {
                BulkResult::Partial
            },
            latency,
        );
        if !clean {
            // Some documents go again or to the dead-letter file: their lines are needed.
            part.unpack().await;
        }
        // Documents refused for their parsed fields go again without them; the rest of
        // the refused go to the dead-letter file.
        let (stripped, dead) = self.strip_fields(part, report.reject);
        if !dead.is_empty() && !self.dead_letter(part, &dead).await {
            // The dead-letter file cannot be written (a full disk): the batch goes again
            // later, whole (created documents answer 409), so no rejection is lost; the
            // frame stays in the buffer meanwhile, which pauses reading once it is full.
            return Settled::Retry(Part {
                stored: part.stored.clone(),
                lines: part.lines.clone(),
                docs: part.docs,
            });
        }
        if report.retry.is_empty() && stripped.is_empty() {
            self.limiter.success(latency);
            return Settled::Done;
        }
        if report.throttled > 0 {
            self.limiter.throttled();
        }
        Stats::add(&self.stats.docs_retried, report.retry.len() as u64);
        match part.select(&report.retry) {
            Ok(mut next) => {
                next.docs += stripped.len();
                for (action, doc) in stripped {
                    next.lines.push(action);
                    next.lines.push(doc);
                }
                Settled::Retry(next)
            }
            Err(e) => {
                // The stored batch cannot be split (damaged on disk): send it whole again;
                // 409s make the repeat harmless.
                tracing::error!(error = %e, "cannot rebuild the failed part of a batch; re-sending it whole");
                Settled::Retry(Part {
                    stored: part.stored.clone(),
                    lines: part.lines.clone(),
                    docs: part.docs,
                })
            }
        }
    }

    /// Splits refused documents into those sent again without their parsed fields
    /// (action and new document lines) and those for the dead-letter file.
    #[allow(clippy::type_complexity)]
    fn strip_fields(
        &self,
        part: &mut Part,
        rejects: Vec<(usize, u16, String)>,
    ) -> (Vec<(Bytes, Bytes)>, Vec<(usize, u16, String)>) {
        let mut stripped = Vec::new();
        let mut dead = Vec::new();
        for (i, status, error) in rejects {
            let Some(reason) = conflict::reason(&error) else {
                dead.push((i, status, error));
                continue;
            };
            let new = part.lines().ok().and_then(|lines| {
                let doc = lines.get(2 * i + 1)?;
                let doc = doc.strip_suffix(b"\n").unwrap_or(doc);
                let mut new = conflict::strip(doc, &conflict::describe(&error))?;
                new.push(b'\n');
                Some((lines[2 * i].clone(), Bytes::from(new)))
            });
            match new {
                Some(pair) => {
                    self.stats.fields_rejected(reason);
                    crate::log_every!(crate::logging::EVERY, warn, error = %error, "a document's parsed fields were refused; sending it again without them");
                    stripped.push(pair);
                }
                None => dead.push((i, status, error)),
            }
        }
        (stripped, dead)
    }

    /// Writes rejected documents to the dead-letter file. `false` when the disk is full:
    /// nothing was written, the caller tries again later.
    async fn dead_letter(&self, part: &mut Part, rejects: &[(usize, u16, String)]) -> bool {
        let lines = match part.lines() {
            Ok(l) => l.to_vec(),
            Err(e) => {
                Stats::add(&self.stats.records_dead_letter, rejects.len() as u64);
                tracing::error!(error = %e, docs = rejects.len(), "rejected documents could not be read back for the dead-letter file");
                return true;
            }
        };
        let owned: Vec<(u16, String, Bytes, Bytes)> = rejects
            .iter()
            .map(|(i, status, err)| {
                (
                    *status,
                    err.clone(),
                    lines[2 * i].clone(),
                    lines[2 * i + 1].clone(),
                )
            })
            .collect();
        if let Some((status, err, _, _)) = owned.first() {
            crate::log_every!(crate::logging::EVERY, warn, status, error = %err, docs = owned.len(), "Elasticsearch rejected documents; written to the dead-letter file");
        }
        let dead = self.dead.clone();
        let res = tokio::task::spawn_blocking(move || {
            let entries: Vec<dead_letter::Entry<'_>> = owned
                .iter()
                .map(|(status, err, action, doc)| dead_letter::Entry {
                    status: *status,
                    error: err,
                    action: action.strip_suffix(b"\n").unwrap_or(action),
                    document: doc.strip_suffix(b"\n").unwrap_or(doc),
                })
                .collect();
            dead.lock()
                .unwrap_or_else(|p| p.into_inner())
                .write(&entries)
        })
        .await;
        let mut disk = self.dead_disk.lock().unwrap_or_else(|p| p.into_inner());
        match res {
            Ok(Err(e)) if crate::disk::is_full(&e) => {
                disk.enter(crate::disk::Cause::Full, &e);
                return false;
            }
            Ok(Ok(())) => {}
            _ => tracing::error!(
                "cannot write the dead-letter file; rejected documents are only counted"
            ),
        }
        disk.leave();
        Stats::add(&self.stats.records_dead_letter, rejects.len() as u64);
        true
    }

    /// Rejects every document of the part (see [`Shipper::dead_letter`]).
    async fn reject_all(&self, part: &mut Part, status: u16, error: &str) -> bool {
        let all: Vec<(usize, u16, String)> = (0..part.docs)
            .map(|i| (i, status, error.to_owned()))
            .collect();
        self.dead_letter(part, &all).await
    }
}

enum Settled {
    Done,
    Retry(Part),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limiter_halves_and_grows() {
        let l = Limiter::new(8);
        assert_eq!(l.limit(), 4);
        l.throttled();
        l.throttled();
        l.throttled();
        assert_eq!(l.limit(), 1);
        let p = l.acquire().await;
        assert_eq!(l.in_flight(), 1);
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "limit 1 holds the second request");
        drop(p);
        let _p2 = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        for _ in 0..control::GROW_AFTER * 20 {
            l.success(Duration::from_millis(5));
        }
        assert_eq!(l.limit(), 8, "grows back to the cap");
        l.success(control::SLOW_RESPONSE * 2);
        assert_eq!(l.limit(), 4, "a slow response counts as back-pressure");
    }

    #[tokio::test]
    async fn parts_select_lines() {
        let ndjson = b"{\"create\":{}}\n{\"log\":\"a\"}\n{\"create\":{}}\n{\"log\":\"b\"}\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(ndjson).unwrap();
        let frame = Frame {
            id: crate::buffer::FrameId {
                segment: 1,
                index: 0,
            },
            records: 2,
            gzip: true,
            payload: Bytes::from(gz.finish().unwrap()),
        };
        let mut p = Part::from_frame(&frame);
        p.unpack().await;
        assert!(p.stored.is_none(), "unpacked off the runtime");
        let mut second = p.select(&[1]).unwrap();
        assert_eq!(second.docs, 1);
        let (body, gz) = second.body(false).await;
        assert!(!gz);
        assert_eq!(&body[..], b"{\"create\":{}}\n{\"log\":\"b\"}\n");
        assert_eq!(second.lines().unwrap().len(), 2);
        let (zipped, gz) = second.body(true).await;
        assert!(gz);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&zipped[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(&back[..], &body[..]);
    }
}
