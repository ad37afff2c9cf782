//! Model-based test of the tailer: random sequences of append / half-line / rename
//! rotation / copytruncate / delete / rescan / poll / stop / restart against real files
//! and real checkpoints on disk, for container logs and for plain-text host files whose
//! every file starts with the same header line (first lines cannot tell them apart). Afterwards every line written must have been read
//! exactly once, except lines of a file deleted while the agent was down (gone for
//! everyone). While the agent is stopped files may be born, rotated and rotated again:
//! their lines are read at the next start.
//!
//! Checkpoints are committed after every tailer action, as the agent does once the
//! records it read are durable.

use crate::util::docker_line;
use proptest::prelude::*;
use shipper::{Checkpoints, MetaSource, Reader, ReaderSettings, Resume, Stats};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Docker containers, then host files.
const CONTAINERS: usize = 5;
const DOCKER: usize = 3;
/// The first line of every host file.
const HEADER: &str = "# app log, format 1";

#[derive(Debug, Clone)]
enum Op {
    Append {
        c: usize,
        n: usize,
    },
    /// Write the first part of a line; its end comes with the next write.
    Half {
        c: usize,
    },
    Rotate {
        c: usize,
    },
    CopyTruncate {
        c: usize,
    },
    Delete {
        c: usize,
    },
    Rescan,
    Poll,
    /// The agent stops (and stays down until the next restart).
    Stop,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CONTAINERS;
    prop_oneof![
        8 => (c.clone(), 1..6usize).prop_map(|(c, n)| Op::Append { c, n }),
        2 => c.clone().prop_map(|c| Op::Half { c }),
        2 => c.clone().prop_map(|c| Op::Rotate { c }),
        1 => c.clone().prop_map(|c| Op::CopyTruncate { c }),
        1 => c.prop_map(|c| Op::Delete { c }),
        3 => Just(Op::Rescan),
        5 => Just(Op::Poll),
        1 => Just(Op::Stop),
        2 => Just(Op::Restart),
    ]
}

struct Container {
    id: String,
    /// The unwritten end of a half-written line.
    half: Option<String>,
    /// Rotated files so far (for unique names).
    rotations: u32,
    /// Whether the tailer has identified the live file's current content (checkpointed).
    identified: bool,
    /// Lines of files that were deleted (excused if the agent was down when it happened).
    deleted: Vec<String>,
    /// A host file whose current content has no header yet.
    fresh: bool,
}

struct World {
    root: tempfile::TempDir,
    /// The node's `/` for host files (outside the container roots).
    host: tempfile::TempDir,
    data: tempfile::TempDir,
    containers: Vec<Container>,
    tailer: Option<Reader>,
    cps: Checkpoints,
    written: Vec<String>,
    /// Lines excused because their file was deleted before the agent could read it.
    excused: Vec<String>,
    received: Vec<String>,
    /// Every document's `_id`: never twice, header lines included.
    ids: Vec<String>,
    seq: u64,
}

impl World {
    fn new() -> World {
        let root = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let containers = (0..CONTAINERS)
            .map(|i| Container {
                id: format!("{i:0>8}cafe"),
                half: None,
                rotations: 0,
                identified: false,
                deleted: Vec::new(),
                fresh: true,
            })
            .collect();
        let cps = Checkpoints::load(data.path()).unwrap();
        let mut w = World {
            root,
            host: tempfile::tempdir().unwrap(),
            data,
            containers,
            tailer: None,
            cps,
            written: Vec::new(),
            excused: Vec::new(),
            received: Vec::new(),
            ids: Vec::new(),
            seq: 0,
        };
        w.start();
        w.past_the_scan();
        w
    }

    fn live(&self, c: usize) -> PathBuf {
        if c >= DOCKER {
            return self.host.path().join(format!("var/log/app{c}.log"));
        }
        let id = &self.containers[c].id;
        self.root.path().join(id).join(format!("{id}-json.log"))
    }

    fn config(&self) -> ReaderSettings {
        let mut cfg = shipper::config::Config::default();
        cfg.input.docker_root = self.root.path().to_owned();
        cfg.input.pods_root = self.root.path().join("no-pods");
        // Small reads and budgets so lines straddle buffers and turns.
        cfg.input.max_record_bytes = 4096;
        cfg.input.read_bytes = 256;
        cfg.input.turn_budget_bytes = 300;
        cfg.input.drain_grace_ms = 0;
        cfg.node.root = self.host.path().display().to_string();
        cfg.node.files = (DOCKER..CONTAINERS)
            .map(|c| format!("/var/log/app{c}.log"))
            .collect();
        cfg.node.journal = false;
        ReaderSettings::from_config(&cfg).unwrap()
    }

    fn start(&mut self) {
        let mut t = Reader::new(
            self.config(),
            MetaSource::Node,
            Resume {
                positions: self.cps.table(),
                last_scan: self.cps.last_scan(),
            },
            Arc::new(Stats::default()),
        );
        t.start();
        self.tailer = Some(t);
        self.commit(Vec::new(), true);
    }

    fn tailer(&mut self) -> &mut Reader {
        self.tailer.as_mut().unwrap()
    }

    /// What the agent does once records are durable: checkpoints follow.
    fn commit(&mut self, out: Vec<u8>, scanned: bool) {
        for (action, doc) in crate::util::bulk_pairs(&out) {
            self.received.push(doc["log"].as_str().unwrap().to_owned());
            self.ids
                .push(action["create"]["_id"].as_str().unwrap().to_owned());
        }
        let t = self.tailer.as_mut().unwrap();
        let scanned_ns = t.scanned_ns();
        for id in t.take_closed(scanned_ns) {
            self.cps.remove(&id);
        }
        for (id, pos) in t.positions() {
            self.cps.update(id, pos);
        }
        if scanned {
            // Every file the scan found is in the table now.
            self.cps.set_scanned(t.scanned_ns());
        }
        self.cps.save().unwrap();
        // After a scan the tailer has identified every live file with a complete first
        // line (a poll only reads files it already has).
        for c in (0..CONTAINERS).filter(|_| scanned) {
            let has_line = std::fs::read(self.live(c))
                .map(|b| b.contains(&b'\n'))
                .unwrap_or(false);
            if has_line {
                self.containers[c].identified = true;
            }
        }
    }

    fn rescan(&mut self) {
        if self.tailer.is_none() {
            return;
        }
        self.tailer().rescan();
        self.commit(Vec::new(), true);
    }

    /// Waits until a file written now gets a time after the start of the scan just
    /// recorded: file times come from a clock that may lag the system clock by a tick
    /// (up to 10 ms), and a write within that tick of a scan is the one case
    /// `Tail::open_rotated` cannot tell apart.
    fn past_the_scan(&self) {
        let Some(t) = self.cps.last_scan() else {
            return;
        };
        let probe = self.data.path().join("clock-probe");
        crate::util::wait_until(
            "file times to pass the scan",
            std::time::Duration::from_secs(5),
            || {
                std::fs::write(&probe, b"x").unwrap();
                std::fs::metadata(&probe).unwrap().modified().unwrap() > t
            },
        );
    }

    fn poll(&mut self) -> u64 {
        if self.tailer.is_none() {
            return 0;
        }
        let mut out = Vec::new();
        let n = self.tailer().poll(&mut out, u64::MAX, None).bytes;
        self.commit(out, false);
        n
    }

    fn next_line(&mut self, c: usize) -> String {
        self.seq += 1;
        let msg = format!("c{c}-n{}", self.seq);
        if c >= DOCKER {
            // A new file's header first (not a line the model counts).
            let head = match std::mem::replace(&mut self.containers[c].fresh, false) {
                true => format!("{HEADER}\n"),
                false => String::new(),
            };
            let line = format!("Jul  8 03:42:57 node-1 app[1]: {msg}");
            self.written.push(line.clone());
            return format!("{head}{line}\n");
        }
        let time = format!("2024-07-08T03:42:57.{:09}Z", self.seq);
        self.written.push(msg.clone());
        docker_line(&format!("{msg}\n"), "stdout", &time)
    }

    fn append_raw(&self, c: usize, s: &str) {
        if let Some(dir) = self.live(c).parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        crate::util::append(&self.live(c), s.as_bytes());
    }

    fn finish_half(&mut self, c: usize) {
        if let Some(rest) = self.containers[c].half.take() {
            self.append_raw(c, &rest);
        }
    }

    /// Lines in a live file, as written (for deletion bookkeeping).
    fn lines_in(path: &Path, host: bool) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if host {
            return text
                .lines()
                .filter(|l| *l != HEADER)
                .map(str::to_owned)
                .collect();
        }
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["log"].as_str().unwrap().trim_end_matches('\n').to_owned())
            .collect()
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Append { c, n } => {
                self.finish_half(c);
                let mut s = String::new();
                for _ in 0..n {
                    s += &self.next_line(c);
                }
                self.append_raw(c, &s);
            }
            Op::Half { c } => {
                self.finish_half(c);
                let line = self.next_line(c);
                let (a, b) = line.split_at(line.len() / 2);
                self.append_raw(c, a);
                self.containers[c].half = Some(b.to_owned());
            }
            Op::Rotate { c } | Op::CopyTruncate { c } | Op::Delete { c } => {
                self.finish_half(c);
                let live = self.live(c);
                if !live.exists() {
                    return;
                }
                // A running agent sees files before they rotate (rotation happens at
                // megabytes, scans every few seconds); a file created and rotated away
                // between two scans of a running agent is outside what a tailer can
                // promise. A stopped agent reads what rotated meanwhile when it starts.
                // A host file's first line tells nothing (the same header in every file):
                // what the agent last saw of it does, so it sees it before it rotates.
                if (!self.containers[c].identified || c >= DOCKER) && self.tailer.is_some() {
                    self.rescan();
                    self.past_the_scan();
                }
                self.containers[c].rotations += 1;
                let k = self.containers[c].rotations;
                let name = live.file_name().unwrap().to_string_lossy().into_owned();
                let rotated = live.with_file_name(format!("{name}.{k}"));
                let host = c >= DOCKER;
                match op {
                    Op::Rotate { .. } => {
                        std::fs::rename(&live, &rotated).unwrap();
                        std::fs::File::create(&live).unwrap();
                    }
                    Op::CopyTruncate { .. } => {
                        std::fs::copy(&live, &rotated).unwrap();
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&live)
                            .unwrap()
                            .set_len(0)
                            .unwrap();
                    }
                    _ => {
                        let dir = live.parent().unwrap();
                        for e in std::fs::read_dir(dir).unwrap() {
                            let p = e.unwrap().path();
                            // A host file's directory holds the other host files too.
                            if !p.to_string_lossy().starts_with(&*live.to_string_lossy()) {
                                continue;
                            }
                            let lines = World::lines_in(&p, host);
                            self.containers[c].deleted.extend(lines);
                            std::fs::remove_file(p).unwrap();
                        }
                    }
                }
                self.containers[c].identified = false;
                self.containers[c].fresh = true;
            }
            Op::Rescan => {
                self.rescan();
                self.past_the_scan();
            }
            Op::Poll => {
                self.poll();
            }
            Op::Stop => self.tailer = None,
            Op::Restart => {
                self.tailer = None;
                // Files deleted while the agent is down are gone: their unread lines are
                // excused (and so are lines of files deleted earlier but not yet drained).
                for c in 0..CONTAINERS {
                    for line in std::mem::take(&mut self.containers[c].deleted) {
                        if !self.received.contains(&line) {
                            self.excused.push(line);
                        }
                    }
                }
                self.cps = Checkpoints::load(self.data.path()).unwrap();
                self.start();
                self.past_the_scan();
            }
        }
    }

    /// Finishes every write, then reads until nothing moves.
    fn settle(&mut self) {
        for c in 0..CONTAINERS {
            self.finish_half(c);
        }
        if self.tailer.is_none() {
            self.apply(&Op::Restart);
        }
        let mut quiet = 0;
        for _ in 0..10_000 {
            self.rescan();
            let n = self.poll();
            quiet = if n == 0 && self.tailer().len() <= CONTAINERS {
                quiet + 1
            } else {
                0
            };
            if quiet >= 3 {
                return;
            }
        }
        panic!("tailer never settled");
    }
}

fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut w = World::new();
    for op in ops {
        w.apply(op);
    }
    verify(w)
}

/// Settles `w`, then checks every line was read exactly once and no `_id` twice.
fn verify(mut w: World) -> Result<(), TestCaseError> {
    w.settle();
    let mut got: BTreeMap<&str, usize> = BTreeMap::new();
    for line in w.received.iter().filter(|l| *l != HEADER) {
        *got.entry(line).or_default() += 1;
    }
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &w.ids {
        *ids.entry(id).or_default() += 1;
    }
    for (id, n) in &ids {
        prop_assert_eq!(
            *n,
            1,
            "_id {} given {} times (two files took one identity)",
            id,
            n
        );
    }
    for (line, n) in &got {
        prop_assert_eq!(*n, 1, "line {} read {} times", line, n);
    }
    for line in &w.written {
        if !w.excused.contains(line) {
            prop_assert!(got.contains_key(line.as_str()), "line {} never read", line);
        }
    }
    prop_assert!(got.len() <= w.written.len());
    Ok(())
}

proptest! {
    // 64 cases by default (about a second); PROPTEST_CASES=5000 for a soak.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_line_is_read_exactly_once(ops in proptest::collection::vec(op(), 1..40)) {
        check(&ops)?;
    }
}

/// Fixed sequences that pin the interesting transitions.
#[test]
fn rotation_while_stopped_is_drained_at_start() {
    let ops = [
        Op::Append { c: 0, n: 3 },
        Op::Rescan,
        Op::Poll,
        Op::Append { c: 0, n: 2 },
        Op::Restart,
        Op::Rotate { c: 0 },
        Op::Append { c: 0, n: 2 },
        Op::Restart,
    ];
    check(&ops).unwrap();
}

#[test]
fn copytruncate_reads_the_rest_from_the_copy() {
    let ops = [
        Op::Append { c: 1, n: 2 },
        Op::Rescan,
        Op::Poll,
        Op::Append { c: 1, n: 4 },
        Op::CopyTruncate { c: 1 },
        Op::Append { c: 1, n: 1 },
        Op::Poll,
    ];
    check(&ops).unwrap();
}

/// A file truncated in place before its last bytes were read, with no copy beside it:
/// those bytes are gone, and counted. With a copy, nothing is counted (it is read).
#[test]
fn truncation_without_a_copy_counts_the_unread_bytes() {
    for with_copy in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let id = "0000beef";
        let live = root.path().join(id).join(format!("{id}-json.log"));
        std::fs::create_dir_all(live.parent().unwrap()).unwrap();
        let line = |n: u32| docker_line(&format!("line {n}\n"), "stdout", "2024-07-08T03:42:57Z");
        std::fs::write(&live, (1..=3).map(line).collect::<String>()).unwrap();
        let mut cfg = shipper::config::Config::default();
        cfg.input.docker_root = root.path().to_owned();
        cfg.input.pods_root = root.path().join("no-pods");
        let stats = Arc::new(Stats::default());
        let mut t = Reader::new(
            ReaderSettings::from_config(&cfg).unwrap(),
            MetaSource::Node,
            Default::default(),
            stats.clone(),
        );
        t.start();
        let mut out = Vec::new();
        while t.poll(&mut out, u64::MAX, None).bytes > 0 {}
        assert_eq!(Stats::get(&stats.lines), 3);
        // Two more lines, seen by a rescan but not read yet.
        let more: String = (4..=5).map(line).collect();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&live)
            .unwrap()
            .write_all(more.as_bytes())
            .unwrap();
        t.rescan();
        if with_copy {
            std::fs::copy(&live, live.with_extension("log.1")).unwrap();
        }
        std::fs::write(&live, line(6)).unwrap();
        let before = t.positions();
        t.take_closed(t.scanned_ns());
        t.rescan();
        assert_eq!(Stats::get(&stats.files_truncated), 1);
        // The truncated file's identity goes on in its copy (its checkpoint and routes
        // stay); without a copy it is closed.
        let closed = t.take_closed(t.scanned_ns());
        assert_eq!(
            closed.len(),
            usize::from(!with_copy),
            "with a copy: {with_copy}"
        );
        let old_id = before[0].0;
        assert_eq!(
            t.positions().iter().any(|(id, _)| *id == old_id),
            with_copy,
            "the copy reads on under the old identity"
        );
        let want = if with_copy { 0 } else { more.len() as u64 };
        assert_eq!(
            Stats::get(&stats.rotated_unread_bytes),
            want,
            "with a copy: {with_copy}"
        );
    }
}

/// Unfinished records past the memory budget are released from memory and read again
/// from their file once complete: the documents (ids, text, order) are those of a run
/// without a budget, every line and byte is counted once, and a file closing with a
/// released record pending is read again before it closes.
#[test]
fn records_released_from_memory_are_read_again_the_same() {
    let root = tempfile::tempdir().unwrap();
    let chunk = "x".repeat(16 * 1024);
    let mut text = String::new();
    let line = |log: &str, stream: &str, n: usize| {
        let t = format!("2024-07-08T03:42:57.{n:09}Z");
        serde_json::json!({"log": log, "stream": stream, "time": t}).to_string() + "\n"
    };
    // Four containers, each a 640 KiB stdout record in 16 KiB chunks with stderr lines
    // between them, whole lines around; the last one's record never finishes.
    for c in 0..4 {
        let id = format!("{c:0>4}beef");
        let path = root.path().join(&id).join(format!("{id}-json.log"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut s = line("before\n", "stdout", 0);
        for i in 0..40 {
            s += &line(&chunk, "stdout", i + 1);
            if i % 7 == 3 {
                s += &line(&format!("err {c} {i}\n"), "stderr", i + 1);
            }
        }
        if c < 3 {
            s += &line("end\n", "stdout", 50);
            s += &line("after\n", "stdout", 51);
        }
        std::fs::write(&path, &s).unwrap();
        text += &s;
    }
    let run = |budget: u64| {
        let mut cfg = shipper::config::Config::default();
        cfg.input.docker_root = root.path().to_owned();
        cfg.input.pods_root = root.path().join("no-pods");
        cfg.input.pending_memory_bytes = budget;
        cfg.input.read_bytes = 65536;
        cfg.input.drain_grace_ms = 0;
        cfg.multiline.mode = "off".into();
        let stats = Arc::new(Stats::default());
        let mut t = Reader::new(
            ReaderSettings::from_config(&cfg).unwrap(),
            MetaSource::Node,
            Resume::default(),
            stats.clone(),
        );
        t.start();
        let mut out = Vec::new();
        while t.poll(&mut out, u64::MAX, None).bytes > 0 {}
        // The last container's files go away: its pending record ends as it closes.
        let last = root.path().join("0003beef");
        let moved = root.path().join("gone");
        std::fs::rename(&last, &moved).unwrap();
        t.rescan();
        for _ in 0..100 {
            t.poll(&mut out, u64::MAX, None);
            if t.len() == 3 {
                break;
            }
        }
        std::fs::rename(&moved, &last).unwrap();
        let docs: Vec<(String, String)> = crate::util::bulk_pairs(&out)
            .into_iter()
            .map(|(a, d)| {
                (
                    a["create"]["_id"].as_str().unwrap().to_owned(),
                    d["log"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        (docs, stats)
    };
    let (unbounded, s0) = run(0);
    // 32 KiB: every record is released at its third chunk, and read again when complete
    // (three) or when its file closes (one).
    let (bounded, s1) = run(32 * 1024);
    // The same documents; a file's own documents in the same order (a record read again
    // comes out later than other files' documents, never than its own file's later ones).
    let of_file = |d: &[(String, String)], c: usize| -> Vec<(String, String)> {
        let mark = format!("err {c} ");
        let mut v: Vec<(String, String)> = d.to_vec();
        v.retain(|(_, l)| !l.starts_with("err ") || l.starts_with(&mark));
        v
    };
    let mut a = bounded.clone();
    let mut b = unbounded.clone();
    a.sort();
    b.sort();
    assert_eq!(a.len(), b.len());
    assert!(a == b, "the same documents");
    for c in 0..4 {
        let errs = |d: &[(String, String)]| -> Vec<String> {
            of_file(d, c)
                .into_iter()
                .filter(|(_, l)| l.starts_with("err "))
                .map(|(i, _)| i)
                .collect()
        };
        assert_eq!(errs(&bounded), errs(&unbounded), "file {c}'s order");
    }
    assert_eq!(Stats::get(&s0.records_reread), 0);
    assert_eq!(Stats::get(&s1.records_reread), 4);
    assert!(bounded.iter().any(|(_, log)| log.len() > 600 * 1024));
    assert_eq!(Stats::get(&s1.lines), Stats::get(&s0.lines));
    assert_eq!(Stats::get(&s1.bytes), text.len() as u64);
    assert_eq!(Stats::get(&s0.bytes), text.len() as u64);
}

/// A file copytruncated before it was read: its copy is read and closed in one turn,
/// and a stop before a scan lets its checkpoint go must find it read to its end (not at
/// the offset of the last position committed while it was open).
#[test]
fn copytruncate_of_a_file_never_read_then_stop() {
    let ops = [
        Op::Half { c: 1 },
        Op::Rotate { c: 1 },
        Op::Append { c: 2, n: 1 },
        Op::CopyTruncate { c: 2 },
        Op::Poll,
        Op::Poll,
        Op::Stop,
    ];
    check(&ops).unwrap();
}

/// Host files, every one starting with the same header: copytruncate seen running,
/// then a rewrite to the very same size; a copytruncate and a rename while stopped.
#[test]
fn host_files_with_one_header_through_copytruncate_and_stops() {
    use Op::*;
    let cases: [&[Op]; 3] = [
        &[
            Append { c: 4, n: 1 },
            Append { c: 0, n: 1 },
            Restart,
            Poll,
            CopyTruncate { c: 4 },
            Append { c: 4, n: 1 },
            Poll,
            Stop,
        ],
        &[
            Append { c: 4, n: 1 },
            Rescan,
            Poll,
            Append { c: 4, n: 1 },
            CopyTruncate { c: 4 },
            Stop,
            Half { c: 4 },
            Rotate { c: 4 },
        ],
        &[
            Half { c: 3 },
            Rescan,
            Poll,
            CopyTruncate { c: 3 },
            Restart,
            Stop,
        ],
    ];
    for ops in cases {
        check(ops).unwrap();
    }
}

/// A copytruncate copy being read when the agent stops, renamed while it is stopped
/// (logrotate shifting `.1` to `.2`): found by its own place, read on from where it was.
#[test]
fn host_copy_renamed_while_stopped_is_read_on() {
    use Op::*;
    let mut w = World::new();
    for op in [
        Append { c: 4, n: 3 },
        Rescan,
        Poll,
        Append { c: 4, n: 2 },
        CopyTruncate { c: 4 },
        // The truncation is seen and the copy opened, not read yet.
        Rescan,
        Stop,
    ] {
        w.apply(&op);
    }
    let copy = w.live(4).with_file_name("app4.log.1");
    assert!(copy.exists());
    std::fs::rename(&copy, w.live(4).with_file_name("app4.log.7")).unwrap();
    verify(w).unwrap();
}
