//! The systemd journal as a source: the entries of the chosen units, read after the last
//! durable position, as bulk documents.
//!
//! Journal files are read with `sdjournal`, a pure-Rust reader (the agent's image has
//! neither libsystemd nor `journalctl`): regular and compact journals (systemd 252's
//! default), entries uncompressed or compressed with zstd or lz4 (what current systemd
//! writes); xz, an old systemd default, is not read (such an entry is counted in
//! `shipper_journal_errors_total`).
//!
//! The position is the cursor of the last entry read, handed over with the batch that
//! ends there ([`Journal::position`]) and persisted by the appender, in the checkpoint
//! table under [`id`], once that batch is durable. A restart reads after it. When its
//! entry is gone (the journal was vacuumed or rotated away while the agent was behind or
//! stopped) reading goes on from the oldest entry after it, and the gap is counted: once,
//! and in entries from the sequence numbers around it.
//!
//! `_id` = xxh3 of the entry's realtime and monotonic stamps, boot id and every field: the
//! same entry has the same id in every file that holds it (the volatile journal flushed to
//! the persistent one keeps stamps and fields, not sequence numbers), so a replay is a 409.

use crate::checkpoint::Position;
use crate::encode::{Doc, Encoder, FileContext, Level, Text};
use crate::ids::FileId;
use crate::index::route::{Route, Routes};
use crate::metrics::Stats;
use crate::record::{Controls, Counts};
use crate::timestamp::Timestamp;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The journal's key in the checkpoint table.
pub fn id() -> FileId {
    FileId::compute("journal", b"")
}

/// Entries read in one poll at most (the rest on the next).
const MAX_ENTRIES_PER_POLL: usize = 4096;

/// How often a node without a journal directory is looked at again.
const ABSENT_RECHECK: Duration = Duration::from_secs(5);

/// Errors in a row after which a poll gives up (the next one starts over).
const MAX_ERRORS_PER_POLL: usize = 64;

/// How the journal is read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Journal directories (each holds `<machine-id>/*.journal`).
    pub paths: Vec<PathBuf>,
    /// Units shipped (`kernel`: the kernel's entries); empty: every entry.
    pub units: Vec<String>,
    /// How often the journal is checked for new entries.
    pub poll: Duration,
    /// On a first start (no position), begin at the journal's end.
    pub start_at_end: bool,
    /// Longest message kept; longer ones are cut and flagged.
    pub max_record_bytes: usize,
    /// The node's name (`kubernetes.host`).
    pub node: Option<String>,
}

/// What the rules decide for one unit's entries.
#[derive(Debug, Clone)]
pub struct UnitChoice {
    pub excluded: bool,
    /// Index prefix (or data stream).
    pub route: Arc<str>,
    pub controls: Controls,
}

/// Action heads of a route, by the offset they apply from ([`Encoder::heads`]).
type Heads = Vec<(u64, Vec<u8>)>;

/// Where reading resumes: after this entry.
#[derive(Debug, Clone)]
struct Resume {
    cursor: sdjournal::Cursor,
    text: String,
    seqnum: u64,
    realtime_usec: u64,
    time: Timestamp,
}

/// The journal reader.
pub struct Journal {
    settings: Settings,
    encoder: Encoder,
    journal: Option<sdjournal::Journal>,
    /// Each journal file's (path, length, modification time) when last opened.
    seen: Vec<(PathBuf, u64, Option<SystemTime>)>,
    at: Option<Resume>,
    /// The position came from a checkpoint (or a reopen): check it still exists.
    check_gap: bool,
    next_check: Instant,
    /// The last poll stopped at its budget: the next one goes on at once.
    behind: bool,
    /// What the rules decided per unit, with the action heads of its route.
    choices: HashMap<String, (UnitChoice, Heads)>,
    stats: Arc<Stats>,
    scratch: Vec<u8>,
    warned_absent: bool,
    /// The position moved with no document before it (a start at the journal's end):
    /// it can be saved at once ([`Journal::take_moved`]).
    moved: bool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("paths", &self.settings.paths)
            .field("open", &self.journal.is_some())
            .finish()
    }
}

impl Journal {
    /// A reader that resumes after `resume` (the journal's checkpoint, if any).
    pub fn new(
        settings: Settings,
        encoder: Encoder,
        resume: Option<Position>,
        stats: Arc<Stats>,
    ) -> Journal {
        let at = resume.and_then(|p| {
            let text = p.cursor?;
            match sdjournal::Cursor::parse(&text) {
                Ok(cursor) => Some(Resume {
                    cursor,
                    text,
                    seqnum: p.offset,
                    realtime_usec: p.last_time.map_or(0, |t| {
                        u64::try_from(t.unix_nanos() / 1000).unwrap_or(0)
                    }),
                    time: p.last_time.unwrap_or(Timestamp::EPOCH),
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "journal position unreadable; reading the journal from its start");
                    None
                }
            }
        });
        Journal {
            check_gap: at.is_some(),
            at,
            settings,
            encoder,
            journal: None,
            seen: Vec::new(),
            next_check: Instant::now(),
            behind: false,
            choices: HashMap::new(),
            stats,
            scratch: Vec::new(),
            warned_absent: false,
            moved: false,
        }
    }

    /// Forgets what the rules decided (a reload): decided again per unit.
    pub fn clear_choices(&mut self) {
        self.choices.clear();
    }

    /// When the journal should be looked at next, as a wait from now.
    pub fn next_deadline(&self) -> Duration {
        if self.behind {
            return Duration::ZERO;
        }
        self.next_check.saturating_duration_since(Instant::now())
    }

    /// The position, when it moved with no document before it (saved at once, as a new
    /// file's start is).
    pub fn take_moved(&mut self) -> Option<(FileId, Position)> {
        if std::mem::take(&mut self.moved) {
            self.position()
        } else {
            None
        }
    }

    /// Makes the next poll look at the journal whatever the time.
    pub fn look_now(&mut self) {
        self.next_check = Instant::now();
    }

    /// The position to persist once the documents read so far are durable.
    pub fn position(&self) -> Option<(FileId, Position)> {
        let at = self.at.as_ref()?;
        let mut p = Position::at(
            at.seqnum,
            Some(at.time),
            self.settings.paths.first()?.clone(),
        );
        p.cursor = Some(at.text.clone());
        Some((id(), p))
    }

    /// Reads new entries, about `budget` bytes of documents and at most `max_entries`
    /// entries, into `out`; `choose` says what the rules decide for a unit. Returns the entries read (0: none new, or not
    /// the time to look).
    pub fn poll(
        &mut self,
        out: &mut Vec<u8>,
        (budget, max_entries): (usize, usize),
        counts: &mut Counts,
        choose: &mut dyn FnMut(&str) -> UnitChoice,
    ) -> usize {
        let now = Instant::now();
        let behind = std::mem::take(&mut self.behind);
        if !behind && now < self.next_check {
            return 0;
        }
        self.next_check = now + self.settings.poll;
        // New entries change the files; a poll that stopped at its budget goes on.
        let changed = self.reopen_if_changed();
        let Some(journal) = self.journal.clone() else {
            return 0;
        };
        if !(changed || behind) {
            return 0;
        }
        if self.at.is_none() && self.settings.start_at_end {
            self.settings.start_at_end = false;
            self.skip_to_end(&journal);
            return 0;
        }
        let mut q = journal.query();
        if let Some(at) = &self.at {
            q.after_cursor(at.cursor.clone())
                .since_realtime(at.realtime_usec);
        }
        let page = MAX_ENTRIES_PER_POLL.min(max_entries.max(1));
        q.limit(page);
        let iter = match q.iter() {
            Ok(it) => it,
            Err(e) => {
                self.error("cannot query the journal", &e);
                return 0;
            }
        };
        let gone = self.check_gap && self.position_gone(&journal);
        let start = out.len();
        let mut errors = 0;
        let mut first = true;
        let mut read = 0;
        for item in iter {
            read += 1;
            let entry = match item {
                Ok(e) => e,
                Err(e) => {
                    self.error("cannot read a journal entry", &e);
                    errors += 1;
                    if errors >= MAX_ERRORS_PER_POLL {
                        break;
                    }
                    continue;
                }
            };
            if std::mem::take(&mut first) && gone {
                self.count_gap(entry.seqnum());
            }
            self.entry(&entry, out, counts, choose);
            if out.len() - start >= budget {
                self.behind = true;
                break;
            }
        }
        // A full page: more may follow at once.
        self.behind |= read >= page;
        if first && gone {
            // Nothing after the lost position yet.
            self.count_gap(0);
        }
        self.check_gap = false;
        read
    }

    /// Reopens the journal when its files changed (new entries, a rotation, a vacuum).
    /// Returns whether it did.
    fn reopen_if_changed(&mut self) -> bool {
        let files = journal_files(&self.settings.paths);
        if files.is_empty() {
            if !self.warned_absent {
                self.warned_absent = true;
                tracing::info!(paths = ?self.settings.paths, "no journal files found; looking again every {} s", ABSENT_RECHECK.as_secs());
            }
            self.journal = None;
            self.next_check = Instant::now() + ABSENT_RECHECK.max(self.settings.poll);
            return false;
        }
        self.warned_absent = false;
        if self.journal.is_some() && files == self.seen {
            return false;
        }
        let removed = self
            .seen
            .iter()
            .any(|(p, ..)| !files.iter().any(|(q, ..)| q == p));
        let existing: Vec<PathBuf> = self
            .settings
            .paths
            .iter()
            .filter(|p| p.is_dir())
            .cloned()
            .collect();
        let config = sdjournal::JournalConfig {
            // Entries up to the largest record the agent keeps, whole (then cut).
            max_decompressed_bytes: self.settings.max_record_bytes.max(1 << 20) + 4096,
            ..sdjournal::JournalConfig::default()
        };
        match sdjournal::Journal::open_dirs_with_config(&existing, config) {
            Ok(j) => {
                self.journal = Some(j);
                self.seen = files;
                // A file went away: the position may have gone with it.
                self.check_gap |= removed && self.at.is_some();
                true
            }
            Err(e) => {
                self.error("cannot open the journal", &e);
                self.journal = None;
                false
            }
        }
    }

    /// A first start at the journal's end: the newest entry becomes the position.
    fn skip_to_end(&mut self, journal: &sdjournal::Journal) {
        let mut q = journal.query();
        q.seek_tail().limit(1);
        if let Some(Ok(last)) = q.iter().ok().and_then(|mut it| it.next()) {
            if let Ok(cursor) = last.cursor() {
                self.at = Some(Resume {
                    text: cursor.to_string(),
                    cursor,
                    seqnum: last.seqnum(),
                    realtime_usec: last.realtime_usec(),
                    time: usec_time(last.realtime_usec()),
                });
                // Nothing before it is shipped: the position is safe as it is.
                self.moved = true;
                tracing::info!("journal read from its end (input.start_at = \"end\")");
            }
        }
    }

    /// Whether the entry of the position is no longer in the journal.
    fn position_gone(&self, journal: &sdjournal::Journal) -> bool {
        let Some(at) = &self.at else { return false };
        let Ok(mut q) = journal.seek_cursor(&at.cursor) else {
            return true;
        };
        q.since_realtime(at.realtime_usec).limit(1);
        let first = q.iter().ok().and_then(|mut it| it.next());
        !matches!(first, Some(Ok(e)) if e.cursor().is_ok_and(|c| c.to_string() == at.text))
    }

    /// Counts a lost position, and the entries skipped when `next_seqnum` (the first
    /// entry read after it; 0: none yet) says how many.
    fn count_gap(&mut self, next_seqnum: u64) {
        let Some(at) = &self.at else { return };
        let lost = next_seqnum.saturating_sub(at.seqnum.saturating_add(1));
        Stats::add(&self.stats.journal_cursor_lost, 1);
        Stats::add(&self.stats.journal_entries_lost, lost);
        tracing::warn!(entries = lost, "journal position gone (vacuumed or rotated away before it was read); reading on from the oldest entry after it");
    }

    fn error(&self, what: &str, e: &sdjournal::SdJournalError) {
        Stats::add(&self.stats.journal_errors, 1);
        crate::log_every!(crate::logging::EVERY, warn, error = %e, "{what}");
    }

    /// One entry: its document, unless its unit is not chosen or a rule drops it.
    fn entry(
        &mut self,
        e: &sdjournal::EntryRef,
        out: &mut Vec<u8>,
        counts: &mut Counts,
        choose: &mut dyn FnMut(&str) -> UnitChoice,
    ) {
        Stats::add(&self.stats.journal_entries, 1);
        let time = usec_time(e.realtime_usec());
        if let Ok(cursor) = e.cursor() {
            self.at = Some(Resume {
                text: cursor.to_string(),
                cursor,
                seqnum: e.seqnum(),
                realtime_usec: e.realtime_usec(),
                time,
            });
        }
        let units = &self.settings.units;
        let own = unit(e);
        let unit = match about(e) {
            // systemd speaking of a chosen unit: that unit's entry.
            Some(u) if !units.is_empty() && !units.iter().any(|c| c == own) => u,
            _ => own,
        };
        if !units.is_empty() && !units.iter().any(|c| c == unit) {
            return;
        }
        counts.lines += 1;
        let encoder = &self.encoder;
        let (choice, heads) = self.choices.entry(unit.to_owned()).or_insert_with(|| {
            let c = choose(unit);
            let routes = Routes::new(vec![Route {
                from: 0,
                name: c.route.clone(),
            }]);
            let heads = encoder.heads(&routes);
            (c, heads)
        });
        if choice.excluded {
            counts.excluded_lines += 1;
            return;
        }
        let message = e.get("MESSAGE").unwrap_or_default();
        let cap = self.settings.max_record_bytes;
        let truncated = message.len() > cap;
        let mut text = Text::Raw(&message[..message.len().min(cap)]);
        let redacted;
        if let Some(f) = &choice.controls.filter {
            if !f.keeps(&text, None, &mut self.scratch) {
                counts.dropped.add(&f.rule, 1);
                return;
            }
        }
        if let Some(r) = &choice.controls.redact {
            if let Some(hit) = r.redact(&text, &mut self.scratch) {
                for (name, n) in &hit.hits {
                    counts.redactions.add(name, *n);
                }
                redacted = hit.text;
                text = Text::Owned(redacted);
            }
        }
        let ctx = FileContext {
            id: id(),
            meta: render_fields(e, unit, self.settings.node.as_deref()),
            level: Level::None,
            heads: heads.clone(),
        };
        let doc = Doc {
            offset: entry_hash(e),
            time,
            stream: None,
            text: &text,
            truncated,
            parse_error: None,
            fields: None,
        };
        self.encoder.encode(out, &ctx, &doc);
        counts.truncated += u64::from(truncated);
        counts.docs += 1;
        counts.record(Level::None, &time);
        Stats::add(&self.stats.journal_docs, 1);
    }
}

/// Field `k` of entry `e`, when it is there and UTF-8.
fn field<'e>(e: &'e sdjournal::EntryRef, k: &str) -> Option<&'e str> {
    e.get(k).and_then(|v| std::str::from_utf8(v).ok())
}

/// The unit an entry belongs to: `_SYSTEMD_UNIT`, `kernel` for the kernel's messages,
/// else its syslog identifier (or `unknown`).
fn unit(e: &sdjournal::EntryRef) -> &str {
    let text = |k: &str| field(e, k);
    if let Some(u) = text("_SYSTEMD_UNIT") {
        return u;
    }
    if text("_TRANSPORT") == Some("kernel") {
        return "kernel";
    }
    text("SYSLOG_IDENTIFIER").unwrap_or("unknown")
}

/// The unit an entry is about, when systemd or the kernel speaks of one (as `journalctl
/// -u` matches them): `UNIT` in PID 1's messages ("kubelet.service: Main process
/// exited"), `OBJECT_SYSTEMD_UNIT` and `COREDUMP_UNIT` from root's.
fn about(e: &sdjournal::EntryRef) -> Option<&str> {
    let text = |k: &str| field(e, k);
    if text("_PID") == Some("1") {
        if let Some(u) = text("UNIT") {
            return Some(u);
        }
    }
    if text("_UID") == Some("0") {
        return text("OBJECT_SYSTEMD_UNIT").or_else(|| text("COREDUMP_UNIT"));
    }
    None
}

/// A unit name as configured: a name without a type is a service (`kubelet` →
/// `kubelet.service`), as `journalctl -u` takes it.
pub fn unit_name(name: &str) -> String {
    if name == "kernel" || name.contains('.') {
        name.to_owned()
    } else {
        format!("{name}.service")
    }
}

/// The record id's hash: the same entry in any file that holds it.
fn entry_hash(e: &sdjournal::EntryRef) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&e.realtime_usec().to_be_bytes());
    h.update(&e.monotonic_usec().to_be_bytes());
    h.update(&e.boot_id());
    for (k, v) in e.iter_fields() {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(&(v.len() as u64).to_be_bytes());
        h.update(v);
    }
    h.digest()
}

fn usec_time(usec: u64) -> Timestamp {
    Timestamp::from_unix_nanos(i64::try_from(usec.saturating_mul(1000)).unwrap_or(i64::MAX))
}

/// `,"systemd":{...},"syslog":{...},"priority":N,"level":"...","kubernetes":{"host":...}`.
fn render_fields(e: &sdjournal::EntryRef, unit: &str, node: Option<&str>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Systemd<'a> {
        unit: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        transport: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        comm: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        boot_id: Option<String>,
    }
    #[derive(Serialize)]
    struct Syslog {
        #[serde(skip_serializing_if = "Option::is_none")]
        identifier: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        facility: Option<u64>,
    }
    #[derive(Serialize)]
    struct Host<'a> {
        host: &'a str,
    }
    #[derive(Serialize)]
    struct Fields<'a> {
        systemd: Systemd<'a>,
        syslog: Syslog,
        #[serde(skip_serializing_if = "Option::is_none")]
        priority: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        level: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        kubernetes: Option<Host<'a>>,
    }
    let text = |k: &str| e.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
    let num = |k: &str| text(k).and_then(|v| v.trim().parse::<u64>().ok());
    let priority = num("PRIORITY").filter(|p| *p <= 7);
    let f = Fields {
        systemd: Systemd {
            unit,
            transport: text("_TRANSPORT"),
            pid: num("_PID"),
            comm: text("_COMM"),
            boot_id: text("_BOOT_ID"),
        },
        syslog: Syslog {
            identifier: text("SYSLOG_IDENTIFIER"),
            facility: num("SYSLOG_FACILITY"),
        },
        level: priority.map(level),
        priority,
        kubernetes: node.map(|host| Host { host }),
    };
    // Serialising plain strings and numbers into a Vec cannot fail.
    let mut out = serde_json::to_vec(&f).unwrap_or_default();
    // `{...}` → `,...`: members appended to the document.
    if out.len() >= 2 {
        out[0] = b',';
        out.pop();
    }
    out
}

/// The normalised level of a syslog priority (as `[fields]` normalises them).
fn level(priority: u64) -> &'static str {
    match priority {
        0..=2 => "fatal",
        3 => "error",
        4 => "warn",
        5 | 6 => "info",
        _ => "debug",
    }
}

/// Every journal file under `paths` (and their machine-id directories), with its
/// length and modification time, sorted.
fn journal_files(paths: &[PathBuf]) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    fn walk(dir: &std::path::Path, depth: u8, out: &mut Vec<(PathBuf, u64, Option<SystemTime>)>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            let Ok(m) = std::fs::metadata(&path) else {
                continue;
            };
            if m.is_dir() && depth > 0 {
                walk(&path, depth - 1, out);
            } else if m.is_file() && path.extension().is_some_and(|x| x == "journal") {
                out.push((path, m.len(), m.modified().ok()));
            }
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, 1, &mut out);
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_syslog_priorities() {
        assert_eq!(level(0), "fatal");
        assert_eq!(level(3), "error");
        assert_eq!(level(4), "warn");
        assert_eq!(level(6), "info");
        assert_eq!(level(7), "debug");
    }

    #[test]
    fn no_journal_is_no_documents() {
        let t = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let mut j = Journal::new(
            Settings {
                paths: vec![t.path().join("none")],
                units: Vec::new(),
                poll: Duration::from_millis(10),
                start_at_end: false,
                max_record_bytes: 1024,
                node: None,
            },
            Encoder::new("node"),
            None,
            stats,
        );
        let mut out = Vec::new();
        let mut counts = Counts::default();
        j.poll(
            &mut out,
            (1 << 20, usize::MAX),
            &mut counts,
            &mut |_| unreachable!(),
        );
        assert!(out.is_empty());
        assert!(j.position().is_none());
        assert!(j.next_deadline() >= Duration::from_secs(1), "backs off");
    }
}
