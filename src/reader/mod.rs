//! The read side of the pipeline: finds the log files ([`crate::discover`]), reads their
//! bytes ([`crate::tail`]), gives each file its metadata ([`crate::enrich`]) and runs its
//! lines through its own record stream ([`crate::record`]) into bulk documents.
//!
//! [`Reader`] is that per-file wiring, driven by one of two loops: [`agent`] cuts the
//! documents into batches for the appender, [`dry_run`] writes them out in file order.
//! Nothing here decides when data is safe: the reader reports positions
//! ([`Reader::positions`]) and the appender persists them once the batch is durable.

pub mod agent;
pub mod dry_run;

use crate::checkpoint::Position;
use crate::discover::{self, Candidate, Roots};
use crate::encode::Encoder;
use crate::enrich::{FileMeta, MetaSource};
use crate::ids::FileId;
use crate::index::route::Routes;
use crate::metrics::Stats;
use crate::record::{self, Counts, Held, Output, RecordStream};
use crate::select;
use crate::tail::{self, Event, FileKey, NewFile, Tail, TailSettings};
use crate::timestamp::Timestamp;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// How the reader reads, fixed at start.
#[derive(Debug, Clone)]
pub struct ReaderSettings {
    pub roots: Roots,
    pub tail: TailSettings,
    pub record: record::Settings,
    /// How files' records are shaped unless a rule says otherwise.
    pub file: record::FileSettings,
    /// The `[[rules]]` table.
    pub rules: select::Rules,
    /// The multiline modes rules and annotations may name.
    pub multiline: record::multiline::Catalog,
    /// The field parsers rules and annotations may name.
    pub parsers: record::fields::Catalog,
    /// The redaction in force (unless a rule turns it off for a file).
    pub redactor: Option<Arc<record::redact::Redactor>>,
    /// Apply rules' rate limits (the agent does; a dry-run reads at full speed).
    pub rate_limits: bool,
    /// Print what was decided for each file, and by whom (`--dry-run --explain`).
    pub explain: bool,
    /// Renders every document (index target, label options).
    pub encoder: Encoder,
    /// Which index (or data stream) each file's documents go to.
    pub routing: select::Routing,
    /// The node's name, which host files' records carry (`kubernetes.host`).
    pub node: Option<String>,
    /// How the systemd journal is read (`None`: it is not).
    pub journal: Option<crate::journal::Settings>,
}

impl ReaderSettings {
    /// The settings a config implies.
    pub fn from_config(
        cfg: &crate::config::Config,
    ) -> Result<ReaderSettings, crate::config::ConfigError> {
        let i = &cfg.input;
        let max_record_bytes = usize::try_from(i.max_record_bytes).unwrap_or(usize::MAX);
        let catalog = record::multiline::Catalog::from_config(&cfg.multiline);
        let parsers = record::fields::Catalog::from_config(&cfg.fields);
        let parser = parsers
            .parser(&cfg.fields.parser)
            .unwrap_or(record::fields::Parser::None);
        Ok(ReaderSettings {
            roots: Roots {
                docker: i.docker_root.clone(),
                pods: i.pods_root.clone(),
                host: cfg
                    .node
                    .files
                    .iter()
                    .map(|f| cfg.node.under_root(f))
                    .collect(),
                host_root: PathBuf::from(&cfg.node.root),
            },
            tail: TailSettings {
                limits: tail::ReadLimits {
                    max_record_bytes,
                    read_bytes: usize::try_from(i.read_bytes).unwrap_or(usize::MAX),
                },
                budget: i.turn_budget_bytes,
                drain_grace: std::time::Duration::from_millis(i.drain_grace_ms),
                start_at_end: i.start_at == crate::config::StartAt::End,
            },
            record: record::Settings {
                budget: (i.pending_memory_bytes > 0).then(|| {
                    Arc::new(record::partial::MemoryBudget::new(
                        usize::try_from(i.pending_memory_bytes).unwrap_or(usize::MAX),
                    ))
                }),
                max_record_bytes,
                fields: record::fields::Options::from_config(&cfg.fields)?,
            },
            file: record::FileSettings {
                multiline: record::multiline::Settings::from_config(
                    &cfg.multiline,
                    &catalog,
                    max_record_bytes,
                ),
                parsers: [parser.clone(), parser],
                controls: record::Controls::default(),
                format: None,
            },
            rules: select::Rules::from_config(&cfg.rules),
            multiline: catalog,
            parsers,
            redactor: redactor(&cfg.redact)?,
            rate_limits: true,
            explain: false,
            encoder: Encoder::for_target(&cfg.elasticsearch.target())
                .with_labels(cfg.kubernetes.dedot_labels, cfg.kubernetes.annotations)
                .with_fields_key(&cfg.fields.target),
            routing: select::Routing::from_config(cfg),
            node: Some(cfg.kubernetes.node_name.clone()).filter(|n| !n.is_empty()),
            journal: cfg.node.journal.then(|| crate::journal::Settings {
                paths: cfg
                    .node
                    .journal_paths
                    .iter()
                    .map(|p| PathBuf::from(cfg.node.under_root(p)))
                    .collect(),
                units: cfg
                    .node
                    .journal_units
                    .iter()
                    .map(|u| crate::journal::unit_name(u))
                    .collect(),
                poll: std::time::Duration::from_millis(cfg.node.journal_poll_ms),
                start_at_end: i.start_at == crate::config::StartAt::End,
                max_record_bytes,
                node: Some(cfg.kubernetes.node_name.clone()).filter(|n| !n.is_empty()),
            }),
        })
    }
}

/// The redactor `[redact]` describes (`None`: off, or nothing to redact).
fn redactor(
    cfg: &crate::config::Redact,
) -> Result<Option<Arc<record::redact::Redactor>>, crate::config::ConfigError> {
    use record::redact::{hash_key, Redactor, Replacement};
    if !cfg.enabled || (cfg.builtins.is_empty() && cfg.patterns.is_empty()) {
        return Ok(None);
    }
    let invalid = |key: &str, reason: String| crate::config::ConfigError::Invalid {
        key: key.into(),
        reason,
    };
    let replacement = match (cfg.replacement.as_str(), &cfg.hash_key_file) {
        ("hash", Some(path)) => {
            let key = std::fs::read(path)
                .map_err(|e| invalid("redact.hash_key_file", format!("{}: {e}", path.display())))?;
            let key = key.trim_ascii();
            if key.is_empty() {
                return Err(invalid(
                    "redact.hash_key_file",
                    format!("{} is empty", path.display()),
                ));
            }
            Replacement::Hash(hash_key(key))
        }
        (text, _) => Replacement::Text(text.to_owned()),
    };
    let user: Vec<(String, String)> = cfg
        .patterns
        .iter()
        .map(|(name, p)| (name.clone(), p.regex.clone()))
        .collect();
    Redactor::new(&cfg.builtins, &user, replacement)
        .map(|r| Some(Arc::new(r)))
        .map_err(|e| invalid("redact.patterns", e.to_string()))
}

impl ReaderSettings {
    /// How the records of a file with metadata `meta` are shaped: the defaults, with what
    /// the rules and the pod's annotations select; whether a rule excludes the file, and
    /// its container's rate limit.
    fn file_settings(&self, meta: &crate::encode::Metadata) -> Choice {
        let host = meta.path.is_some();
        let kind = if meta.unit.is_some() {
            select::SourceKind::Journal
        } else if host {
            select::SourceKind::Host
        } else {
            select::SourceKind::Container
        };
        let mut sel = self.rules.select(meta, kind);
        let (route, origin) = self.routing.choose(meta, sel.index.as_ref());
        sel.index = Some(select::Chosen {
            value: route.to_string(),
            origin,
        });
        let explanation = self.explain.then(|| sel.clone());
        let mut file = self.file.clone();
        if host {
            file.format = Some(record::Format::Plain);
        }
        file.controls = record::Controls {
            filter: sel.filter.clone(),
            redact: match sel.redact {
                Some((false, _)) => None,
                _ => self.redactor.clone(),
            },
        };
        let excluded = matches!(sel.exclude, Some((true, _)));
        if let Some(chosen) = sel.multiline {
            match self.multiline.mode(&chosen.value) {
                Some(mode) => file.multiline.mode = mode,
                None => {
                    crate::log_every!(crate::logging::EVERY, warn, mode = %chosen.value, origin = ?chosen.origin, pod = ?meta.pod, "unknown multiline mode; using the default")
                }
            }
        }
        for (slot, chosen) in file.parsers.iter_mut().zip(&sel.parser) {
            let Some(chosen) = chosen else { continue };
            match self.parsers.parser(&chosen.value) {
                Some(p) => *slot = p,
                None => {
                    crate::log_every!(crate::logging::EVERY, warn, parser = %chosen.value, origin = ?chosen.origin, pod = ?meta.pod, "unknown field parser; using the default")
                }
            }
        }
        let limit = sel
            .rate_limit
            .filter(|_| self.rate_limits)
            .map(|(l, _)| tail::Limit {
                bytes_per_sec: l.bytes_per_sec.map(|r| r as f64),
                lines_per_sec: l.records_per_sec.map(|r| r as f64),
                burst_secs: l.burst_secs,
            });
        Choice {
            settings: file,
            excluded,
            limit,
            route,
            explanation,
        }
    }
}

/// What the rules decide for a journal unit's entries.
fn unit_choice(settings: &ReaderSettings, unit: &str) -> crate::journal::UnitChoice {
    let meta = crate::encode::Metadata {
        unit: Some(unit.to_owned()),
        host: settings.node.clone(),
        ..Default::default()
    };
    let choice = settings.file_settings(&meta);
    if let Some(sel) = &choice.explanation {
        eprintln!(
            "shipper explain: journal unit {unit}: {}",
            sel.explain(false)
        );
    }
    crate::journal::UnitChoice {
        excluded: choice.excluded,
        route: choice.route,
        controls: choice.settings.controls,
    }
}

/// Decides again what the rules say for file `key` and applies it: exclusion and the
/// rate limit at once, record shaping where no group is open.
fn reselect(settings: &ReaderSettings, tail: &mut Tail, key: FileKey, f: &mut FileState) {
    f.choice = settings.file_settings(f.meta.metadata());
    explain(&f.meta, &f.choice);
    tail.set_limit(key, f.choice.limit);
    let excluded = f.excluded();
    if let Some(s) = &mut f.stream {
        s.set_excluded(excluded);
        s.set_settings(f.choice.settings.clone());
        if let Some(len) = tail.file_len(key) {
            s.set_route(f.choice.route.clone(), len);
        }
    }
}

/// Prints what was decided for a file (`--dry-run --explain`), on stderr.
fn explain(meta: &FileMeta, choice: &Choice) {
    let Some(sel) = &choice.explanation else {
        return;
    };
    let m = meta.metadata();
    if let Some(path) = &m.path {
        eprintln!(
            "shipper explain: host file {path}: {}",
            sel.explain(meta.excluded())
        );
        return;
    }
    let who = |v: &Option<String>| v.as_deref().unwrap_or("?").to_owned();
    eprintln!(
        "shipper explain: {}/{}/{} ({}): {}",
        who(&m.namespace),
        who(&m.pod),
        who(&m.container),
        who(&m.container_id),
        sel.explain(meta.excluded())
    );
}

/// What the rules decide for one file.
#[derive(Clone)]
struct Choice {
    settings: record::FileSettings,
    /// A rule excludes the file.
    excluded: bool,
    limit: Option<tail::Limit>,
    /// The index prefix (or data stream) of its documents.
    route: Arc<str>,
    /// What decided it, when asked to explain.
    explanation: Option<select::Selection>,
}

/// One open file, as the reader knows it.
struct FileState {
    meta: FileMeta,
    /// What the rules decide for it (from its metadata).
    choice: Choice,
    /// Set once the tail knows the file's identity.
    stream: Option<RecordStream>,
    /// The route history of the identity the file had before it was truncated: its
    /// copy (logrotate's copytruncate) continues that identity and its routes.
    truncated_routes: Option<(FileId, Routes)>,
}

impl FileState {
    fn new(meta: FileMeta, choice: Choice) -> FileState {
        FileState {
            meta,
            choice,
            stream: None,
            truncated_routes: None,
        }
    }

    /// Whether the file's lines are shipped: a rule, the pod's annotations or labels,
    /// or its namespace's label can exclude it.
    fn excluded(&self) -> bool {
        self.choice.excluded || self.meta.excluded()
    }
}

/// What one poll produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Polled {
    /// Bytes consumed from the files.
    pub bytes: u64,
    /// What the record streams produced (documents included).
    pub counts: Counts,
}

/// Reads every discovered log file into documents.
pub struct Reader {
    settings: ReaderSettings,
    tail: Tail,
    files: HashMap<FileKey, FileState>,
    source: MetaSource,
    stats: Arc<Stats>,
    /// Missing roots already reported.
    warned_roots: HashSet<PathBuf>,
    /// Roots that exist but hold no log file (warned about after a while).
    empty_roots: discover::EmptyRoots,
    /// Host file patterns that match nothing (reported after a while).
    empty_globs: discover::EmptyRoots,
    /// Route histories that grew since [`Reader::take_routes`].
    routes: Vec<(FileId, Routes)>,
    /// The systemd journal, when it is read.
    journal: Option<crate::journal::Journal>,
}

/// The tail's sink: routes each file's events to its record stream.
fn sink<'a>(
    files: &'a mut HashMap<FileKey, FileState>,
    settings: &'a ReaderSettings,
    (ndjson, counts, routes): (
        &'a mut Vec<u8>,
        &'a mut Counts,
        &'a mut Vec<(FileId, Routes)>,
    ),
    now: Timestamp,
) -> impl FnMut(FileKey, Event<'_>) -> Held + 'a {
    move |key, event| {
        let mut out = Output {
            ndjson: &mut *ndjson,
            counts: &mut *counts,
            routes: &mut *routes,
        };
        match event {
            Event::Opened { like } => {
                if let Some(f) = files.get(&like) {
                    let mut state = FileState::new(f.meta.clone(), f.choice.clone());
                    state.truncated_routes.clone_from(&f.truncated_routes);
                    files.insert(key, state);
                }
                Held::default()
            }
            Event::End => {
                let Some(mut f) = files.remove(&key) else {
                    return Held::default();
                };
                if let Some(s) = f.stream.as_mut() {
                    s.finish(&mut out);
                    let held = s.held();
                    if held.restart.is_some() {
                        // A record released from memory is read again before the file
                        // closes: the file stays.
                        files.insert(key, f);
                        return held;
                    }
                }
                Held::default()
            }
            event => {
                let Some(f) = files.get_mut(&key) else {
                    return Held::default();
                };
                match event {
                    Event::Start {
                        id,
                        last_time,
                        first_seen,
                        streams,
                        routes,
                        len,
                        replayed_below,
                    } => {
                        // A copy of a truncated file carries on its identity's routes; a
                        // file read again after a release, its stream's.
                        let inherited = f.truncated_routes.take().filter(|(i, _)| *i == id);
                        let again = (replayed_below > 0)
                            .then(|| f.stream.as_ref().map(|s| s.route_history().1))
                            .flatten();
                        let routes = match (inherited, again) {
                            (Some((_, r)), _) if routes.is_empty() => r,
                            (_, Some(r)) if routes.is_empty() => r,
                            _ => routes,
                        };
                        let mut s = RecordStream::new(
                            &settings.record,
                            f.choice.settings.clone(),
                            settings.encoder.clone(),
                            id,
                            f.meta.metadata(),
                            (last_time, streams),
                        );
                        let resumed_at = streams[0].min(streams[1]);
                        s.resume_route(routes, f.choice.route.clone(), (resumed_at, len));
                        s.set_first_seen(first_seen);
                        if replayed_below > 0 {
                            s.replaying(replayed_below);
                        }
                        s.set_excluded(f.excluded());
                        f.stream = Some(s);
                    }
                    Event::Lines { offset, data } => {
                        if let Some(s) = &mut f.stream {
                            s.push(offset, data, now, &mut out);
                        }
                    }
                    Event::Cut { offset, head } => {
                        if let Some(s) = &mut f.stream {
                            s.push_cut(offset, head, now, &mut out);
                        }
                    }
                    Event::Eof => {
                        if let Some(s) = &mut f.stream {
                            s.at_end(now, &mut out);
                        }
                    }
                    Event::Reset => {
                        f.truncated_routes = f.stream.take().map(|s| s.route_history());
                    }
                    Event::Opened { .. } | Event::End => {}
                }
                f.stream
                    .as_ref()
                    .map(RecordStream::held)
                    .unwrap_or_default()
            }
        }
    }
}

impl Reader {
    /// A reader that resumes files at the positions in `resume` (the checkpoints) and
    /// takes metadata from `source`.
    pub fn new(
        settings: ReaderSettings,
        source: MetaSource,
        resume: tail::Resume,
        stats: Arc<Stats>,
    ) -> Reader {
        let mut resume = resume;
        // The journal's position is not a file's: the tail never sees it.
        let at = resume.positions.remove(&crate::journal::id());
        let first_start = resume.last_scan.is_none();
        let journal = settings.journal.clone().map(|mut j| {
            // As for files: the end only on the very first start, never again.
            j.start_at_end &= first_start;
            crate::journal::Journal::new(j, settings.encoder.clone(), at, stats.clone())
        });
        let tail = Tail::new(settings.tail.clone(), resume, stats.clone());
        Reader {
            journal,
            settings,
            tail,
            files: HashMap::new(),
            source,
            stats,
            warned_roots: HashSet::new(),
            empty_roots: discover::EmptyRoots::default(),
            empty_globs: discover::EmptyRoots::default(),
            routes: Vec::new(),
        }
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    pub fn roots(&self) -> &Roots {
        &self.settings.roots
    }

    /// Files open.
    pub fn len(&self) -> usize {
        self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tail.is_empty()
    }

    /// First scan: opens every live file, and before them the rotated siblings that may
    /// hold unread lines (see [`Tail::open_rotated`]); then lets the tail account for
    /// checkpointed files found nowhere.
    pub fn start(&mut self) {
        self.tail.scanning();
        let errors_before = Stats::get(&self.stats.read_errors);
        let (candidates, report) = discover::scan(&self.settings.roots);
        self.report(&report);
        let now = Instant::now();
        for c in &candidates {
            // A host file's `.gz` rotation is a new file with what its `.1` held (read
            // then): only a container's keeps its identity through compression.
            let host = c.info.host_path.is_some();
            let siblings = tail::rotated_siblings_with_gz(&c.path).into_iter();
            for path in siblings.filter(|p| !(host && tail::is_ignored(&p.to_string_lossy()))) {
                let meta = self
                    .source
                    .open(c.info.clone(), c.docker_dir.as_deref(), now);
                let file = NewFile {
                    path: c.path.clone(),
                    source: meta.source_key(),
                };
                if let Some(key) = self.tail.open_rotated(&file, &path) {
                    self.add_state(key, meta);
                }
            }
        }
        self.add_new(candidates);
        let clean =
            report.errors.is_empty() && Stats::get(&self.stats.read_errors) == errors_before;
        self.tail.started(clean, &report.missing_roots);
    }

    /// Rescans the roots: opens new files, marks rotated and deleted ones for draining,
    /// and checks open files for truncation or in-place rewrites.
    pub fn rescan(&mut self) {
        self.tail.scanning();
        let candidates = self.scan();
        let live: HashSet<(u64, u64)> = candidates.iter().map(|c| (c.dev, c.ino)).collect();
        self.with_sink(|tail, sink| tail.rescan(&live, sink));
        self.add_new(candidates);
    }

    /// When the latest scan started (unix nanoseconds).
    pub fn scanned_ns(&self) -> u64 {
        self.tail.scan_started_ns()
    }

    fn scan(&mut self) -> Vec<Candidate> {
        let (candidates, report) = discover::scan(&self.settings.roots);
        self.report(&report);
        candidates
    }

    /// Logs what a scan could not see (each missing root once).
    fn report(&mut self, report: &discover::ScanReport) {
        for root in &report.missing_roots {
            // Once per root: a node without Docker has no Docker root, every rescan.
            if self.warned_roots.insert(root.clone()) {
                tracing::warn!(root = %root.display(), "log root does not exist or cannot be read; will look again");
            }
        }
        for root in self
            .empty_roots
            .observe(&report.empty_roots, Instant::now())
        {
            let secs = discover::EMPTY_ROOT_WARNING.as_secs();
            tracing::warn!(root = %root.display(), "log root has held no log file for {secs} s: check input.docker_root (<root>/<id>/<id>-json.log) and input.pods_root (<root>/<namespace>_<pod>_<uid>/<container>/<n>.log; /var/log/containers holds links into it and is not a root)");
        }
        for glob in self
            .empty_globs
            .observe(&report.empty_globs, Instant::now())
        {
            let secs = discover::EMPTY_ROOT_WARNING.as_secs();
            let pattern = glob.to_string_lossy();
            if crate::config::DEFAULT_NODE_FILES.contains(&pattern.as_ref()) {
                // A default that this node's distribution does not use (kubelet logging
                // to the journal, say): worth a line, not a warning.
                tracing::info!(pattern = %pattern, "node.files pattern has matched no file for {secs} s");
            } else {
                tracing::warn!(pattern = %pattern, "node.files pattern has matched no file for {secs} s: check the path (the directory part is a plain path; only the file name may be a glob)");
            }
        }
        for (path, err) in &report.errors {
            Stats::add(&self.stats.read_errors, 1);
            crate::log_every!(crate::logging::EVERY, warn, path = %path.display(), error = %err, "cannot read log path");
        }
    }

    fn add_new(&mut self, candidates: Vec<Candidate>) {
        let now = Instant::now();
        for c in candidates {
            if self.tail.is_open(c.dev, c.ino) {
                continue;
            }
            let meta = self.source.open(c.info, c.docker_dir.as_deref(), now);
            let file = NewFile {
                path: c.path,
                source: meta.source_key(),
            };
            if let Some(key) = self.tail.open(&file) {
                if meta.pending() {
                    tracing::debug!(path = %file.path.display(), "pod not in the metadata cache yet; waiting for the watch");
                }
                self.add_state(key, meta);
                self.with_sink(|tail, sink| tail.identify(key, sink));
            }
        }
    }

    fn add_state(&mut self, key: FileKey, mut meta: FileMeta) {
        meta.set_node(self.settings.node.as_deref());
        self.tail.set_paused(key, meta.pending());
        let choice = self.settings.file_settings(meta.metadata());
        explain(&meta, &choice);
        self.tail.set_limit(key, choice.limit);
        self.files.insert(key, FileState::new(meta, choice));
    }

    /// Runs `f` with the tail and a sink into a scratch output (for calls that produce
    /// no documents: identification, rescans).
    fn with_sink(&mut self, f: impl FnOnce(&mut Tail, &mut tail::Sink<'_>)) -> Counts {
        let mut out = Vec::new();
        let counts = self.with_sink_into(&mut out, f);
        debug_assert!(out.is_empty(), "a rescan produced documents");
        counts
    }

    fn with_sink_into(
        &mut self,
        out: &mut Vec<u8>,
        f: impl FnOnce(&mut Tail, &mut tail::Sink<'_>),
    ) -> Counts {
        let mut counts = Counts::default();
        let Reader {
            tail,
            files,
            settings,
            routes,
            ..
        } = self;
        let mut sink = sink(
            files,
            settings,
            (out, &mut counts, routes),
            Timestamp::now(),
        );
        f(tail, &mut sink);
        drop(sink);
        self.count(&counts);
        counts
    }

    /// Brings every file's metadata up to date with the live cache (one atomic load per
    /// file when nothing changed).
    fn refresh_meta(&mut self) {
        let now = Instant::now();
        for (key, f) in &mut self.files {
            let r = self.source.refresh(&mut f.meta, now);
            if r.wait_ended {
                Stats::add(&self.stats.metadata_waits, 1);
                self.tail.set_paused(*key, f.meta.pending());
            }
            if r.changed {
                if let Some(s) = &mut f.stream {
                    s.set_meta(f.meta.metadata());
                }
                reselect(&self.settings, &mut self.tail, *key, f);
            }
        }
    }

    /// Takes a reloaded configuration's rules, redaction, multiline and parser settings
    /// (the roots, the tail's and the records' other settings stay as they started), and
    /// applies them to every open file.
    pub fn reload(&mut self, new: ReaderSettings) {
        let s = &mut self.settings;
        s.file = new.file;
        s.rules = new.rules;
        s.multiline = new.multiline;
        s.parsers = new.parsers;
        s.redactor = new.redactor;
        s.routing = new.routing;
        if let Some(j) = &mut self.journal {
            j.clear_choices();
        }
        for (key, f) in &mut self.files {
            reselect(&self.settings, &mut self.tail, *key, f);
        }
    }

    /// When the reader next needs the clock, as a wait from now: a multiline group that
    /// may expire, a rate-limited container whose bucket refills, a draining file whose
    /// grace period ends, or the journal's next look.
    pub fn next_deadline(&self) -> Option<std::time::Duration> {
        let journal = self.journal.as_ref().map(|j| j.next_deadline());
        [self.busy_deadline(), journal].into_iter().flatten().min()
    }

    /// [`Reader::next_deadline`] without the journal's periodic look (which is no work
    /// in flight: an idle agent that looks at the journal every second still gives its
    /// spare memory back).
    pub fn busy_deadline(&self) -> Option<std::time::Duration> {
        let group = self
            .files
            .values()
            .filter_map(|f| f.stream.as_ref()?.next_deadline())
            .min()
            .map(|at| {
                let now = crate::timestamp::now_nanos();
                std::time::Duration::from_nanos(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
            });
        [group, self.tail.next_refill(), self.tail.next_close()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether some file is waiting for its pod to appear in the metadata cache.
    pub fn waiting_for_metadata(&self) -> bool {
        self.files.values().any(|f| f.meta.pending())
    }

    /// One round: every file gets a turn, until about `limit` bytes were read, or
    /// lines for `docs` documents (a line is at most one document); then the journal,
    /// with what is left (at least a quarter of `docs`, so a backlog of files does not
    /// starve it). The documents go to `out`.
    pub fn poll(&mut self, out: &mut Vec<u8>, limit: u64, docs: Option<u64>) -> Polled {
        self.refresh_meta();
        let has_journal = self.journal.is_some();
        let file_lines = docs.map(|d| if has_journal { (d - d / 4).max(1) } else { d });
        let mut bytes = 0;
        let mut counts = self.with_sink_into(out, |tail, sink| {
            bytes = tail.poll_round((limit, file_lines), sink)
        });
        let entries = docs.map_or(usize::MAX, |d| {
            usize::try_from(d.saturating_sub(counts.docs)).unwrap_or(usize::MAX)
        });
        if entries == 0 {
            return Polled { bytes, counts };
        }
        let rest = usize::try_from(limit.saturating_sub(bytes)).unwrap_or(usize::MAX);
        let before = out.len();
        let (journal, _) = self.poll_journal(out, (rest.max(64 << 10), entries));
        bytes += (out.len() - before) as u64;
        counts.add(&journal);
        Polled { bytes, counts }
    }

    /// Reads new journal entries, about `budget.0` bytes of documents and at most
    /// `budget.1` entries, into `out`.
    /// Returns what the record streams would (the counts), and the entries read.
    fn poll_journal(&mut self, out: &mut Vec<u8>, budget: (usize, usize)) -> (Counts, usize) {
        let mut counts = Counts::default();
        let Reader {
            journal, settings, ..
        } = self;
        let read = journal.as_mut().map_or(0, |j| {
            j.poll(out, budget, &mut counts, &mut |unit| {
                unit_choice(settings, unit)
            })
        });
        self.count(&counts);
        (counts, read)
    }

    /// Reads the journal to its current end (the dry-run, after the files), calling
    /// `flush` whenever `out` holds more than `flush_at` bytes.
    pub fn read_journal(
        &mut self,
        out: &mut Vec<u8>,
        flush_at: usize,
        flush: &mut dyn FnMut(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        while let Some(j) = &mut self.journal {
            // Look whatever the clock: the dry-run reads to the end, page after page.
            j.look_now();
            let (_, read) = self.poll_journal(out, (flush_at.max(1 << 20), usize::MAX));
            if out.len() >= flush_at {
                flush(out)?;
            }
            if read == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Reads every file to its current end, one after the other in path order (the
    /// dry-run's order), calling `flush` whenever `out` holds more than `flush_at` bytes.
    pub fn read_in_order(
        &mut self,
        out: &mut Vec<u8>,
        flush_at: usize,
        flush: &mut dyn FnMut(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        for key in self.tail.keys_by_path() {
            self.with_sink(|tail, sink| tail.identify(key, sink));
            self.wait_meta(key);
            loop {
                let budget = (flush_at as u64).max(1 << 20);
                let mut p = tail::Progress::default();
                self.with_sink_into(out, |tail, sink| p = tail.poll_file(key, budget, sink));
                if out.len() >= flush_at {
                    flush(out)?;
                }
                if p.eof {
                    break;
                }
            }
            // Nothing is persisted in a dry-run: route histories need not be kept.
            self.routes.clear();
        }
        Ok(())
    }

    /// Blocks until file `key` may be read: its pod is known or its wait ran out.
    fn wait_meta(&mut self, key: FileKey) {
        loop {
            self.refresh_meta();
            match self.files.get(&key) {
                Some(f) if f.meta.pending() => self.source.wait(&f.meta),
                _ => return,
            }
        }
    }

    /// Ends every pending record and counts unterminated final lines (a dry-run is
    /// over).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.with_sink_into(out, |tail, sink| tail.finish(sink));
    }

    fn count(&self, c: &Counts) {
        let s = &self.stats;
        Stats::add(&s.records, c.docs);
        Stats::add(&s.metadata_complete, c.complete);
        Stats::add(&s.metadata_partial, c.partial);
        Stats::add(&s.metadata_none, c.none);
        Stats::add(&s.lines, c.lines);
        Stats::add(&s.excluded_lines, c.excluded_lines);
        Stats::add(&s.partials_merged, c.partials_merged);
        Stats::add(&s.parse_errors, c.parse_errors);
        Stats::add(&s.truncated, c.truncated);
        Stats::add(&s.multiline_groups, c.groups);
        Stats::add(&s.multiline_lines_joined, c.lines_joined);
        Stats::add(&s.fields_parsed, c.fields_parsed);
        Stats::add(&s.fields_invalid, c.fields_invalid);
        Stats::add(&s.fields_caps, c.fields_caps);
        Stats::add(&s.records_dropped, c.dropped.total());
        Stats::add(&s.redactions, c.redactions.total());
        for (rule, n) in c.dropped.iter() {
            s.dropped_by_rule.add(rule, n);
        }
        for (pattern, n) in c.redactions.iter() {
            s.redactions_by_pattern.add(pattern, n);
        }
    }

    /// Resume points of every identified file, for the caller to persist once the
    /// documents emitted so far are safe.
    pub fn positions(&self) -> Vec<(FileId, Position)> {
        let mut out = self.tail.positions();
        out.extend(self.journal.as_ref().and_then(|j| j.position()));
        out
    }

    /// Files identified since the last call, at the position they start from (see
    /// [`Tail::take_new`]).
    pub fn take_new(&mut self) -> Vec<(FileId, Position)> {
        let mut out = self.tail.take_new();
        out.extend(self.journal.as_mut().and_then(|j| j.take_moved()));
        out
    }

    /// Identities of files closed (or restarted) since the last call, as of the scan
    /// that started at `scanned_ns` (see [`Tail::take_closed`]).
    pub fn take_closed(&mut self, scanned_ns: u64) -> Vec<FileId> {
        self.tail.take_closed(scanned_ns)
    }

    /// Route histories that grew since the last call: to be persisted before the
    /// documents emitted so far are durable (see [`crate::appender`]).
    pub fn take_routes(&mut self) -> Vec<(FileId, Routes)> {
        std::mem::take(&mut self.routes)
    }
}
