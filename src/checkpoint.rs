//! Per-file read positions, persisted in `<data-dir>/checkpoints`.
//!
//! A checkpoint says "every record of file `id` that starts before `offset` is safe";
//! the caller decides what safe means (durable in the buffer) and only then calls
//! [`Checkpoints::update`]. Files are keyed by their content identity
//! ([`crate::ids::FileId`]), never by path or inode, so a checkpoint follows a file
//! through renames and restarts, and a new file that reuses an inode starts at 0.
//!
//! On disk: one header line `shipper-checkpoints <version> <crc32 of the body>` and a
//! JSON body. Writes go to a temp file that is fsynced and renamed over the old one, then
//! the directory is fsynced, so a crash leaves either the old or the new file, whole.

use crate::ids::FileId;
use crate::index::route::{Route, Routes};
use crate::state_file::write_atomic;
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const FILE_NAME: &str = "checkpoints";
const KIND: crate::state_file::Kind = crate::state_file::Kind {
    name: "checkpoint file",
    magic: "shipper-checkpoints",
    version: 1,
};

/// Why checkpoints could not be read or written.
pub type CheckpointError = crate::state_file::StateFileError;

/// A host file's places (see [`Position::host`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPlace {
    /// The place its identity is salted with: the file's own, or for a copytruncate
    /// copy the file it was copied from.
    pub identity: crate::ids::Place,
    pub generation: u32,
    /// Where the file itself is.
    pub at: crate::ids::Place,
}

/// Where to resume one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    /// Timestamp of the last good line before `offset`: a later unparseable line takes it,
    /// so a replay sends that line to the same daily index.
    pub last_time: Option<Timestamp>,
    /// Where the file was last seen (informational; identity is the key).
    pub path: PathBuf,
    /// Where each stream (stdout, stderr) resumes, at or after `offset`: a line of that
    /// stream before it already went into a document (a stream can be ahead of the other
    /// one's open record, and a continuation line re-read without its group would make a
    /// different document).
    pub streams: [u64; 2],
    /// Where the file's records went, from which offset: a replay sends each record
    /// where it went the first time. Changed only by [`Checkpoints::set_routes`].
    pub routes: Routes,
    /// The file's length when the position was taken: if the file is gone at the next
    /// start, the bytes from `offset` to here are known lost (counted).
    pub len: u64,
    /// When the agent first saw the file: the timestamp of its lines that have none and
    /// no good line before them (so a replay sends them to the same daily index).
    pub first_seen: Option<Timestamp>,
    /// The journal's position (its entry [`crate::journal::JOURNAL_ID`] only): the
    /// cursor of the last entry safe, whose sequence number is `offset`.
    pub cursor: Option<String>,
    /// A host file's: a hash of the bytes before `offset`, which a resume checks (the
    /// file may have been replaced by one with the same first line).
    pub tail_hash: Option<u64>,
    /// A host file's: the place and generation its identity is salted with (see
    /// [`crate::ids`]), and the place of the file itself (a copy's differs), so a
    /// restart finds the entry of a file wherever it was renamed, and of what a copy held.
    pub host: Option<HostPlace>,
}

impl Position {
    /// A position where both streams resume at `offset`.
    pub fn at(offset: u64, last_time: Option<Timestamp>, path: PathBuf) -> Position {
        Position {
            offset,
            last_time,
            path,
            streams: [offset; 2],
            routes: Routes::default(),
            len: offset,
            first_seen: None,
            cursor: None,
            tail_hash: None,
            host: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    files: Vec<Entry>,
    /// Unix nanoseconds at which the latest scan whose files the table holds started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scanned_ns: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_time: Option<String>,
    path: PathBuf,
    /// Per-stream resume offsets, when a stream is ahead of `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    streams: Option<[u64; 2]>,
    /// `[from, name]` pairs, oldest first (absent in files written before routes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<(u64, String)>,
    /// The file's length when the position was taken, when past `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    len: Option<u64>,
    /// When the agent first saw the file (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_seen: Option<String>,
    /// The journal's cursor (its entry only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
    /// A host file's hash of the bytes before `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tail_hash: Option<u64>,
    /// A host file's `[dev, inode, birth ns, generation, its own dev, inode, birth ns]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<[u64; 7]>,
}

/// The in-memory checkpoint table and its file.
#[derive(Debug, Default)]
pub struct Checkpoints {
    path: Option<PathBuf>,
    map: BTreeMap<FileId, Position>,
    /// When the latest scan whose files are all in `map` started (unix nanoseconds):
    /// a rotated file the table does not know and that was written after it was never
    /// seen (see [`crate::tail::Tail::open_rotated`]).
    scanned_ns: Option<u64>,
    dirty: bool,
}

impl Checkpoints {
    /// A table that is never written (dry-run, tests).
    pub fn in_memory() -> Checkpoints {
        Checkpoints::default()
    }

    /// When the latest scan whose files the table holds started (`None`: no table, or
    /// one written before scans were recorded).
    pub fn last_scan(&self) -> Option<std::time::SystemTime> {
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(self.scanned_ns?))
    }

    /// Records that every file a scan started at `ns` (unix nanoseconds) found is in
    /// the table.
    pub fn set_scanned(&mut self, ns: u64) {
        if ns > self.scanned_ns.unwrap_or(0) {
            self.scanned_ns = Some(ns);
            self.dirty = true;
        }
    }

    /// Loads `<dir>/checkpoints`; a missing file is an empty table.
    pub fn load(dir: &Path) -> Result<Checkpoints, CheckpointError> {
        let path = dir.join(FILE_NAME);
        let (map, scanned_ns) = match fs::read(&path) {
            Ok(bytes) => decode_table(&path, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => (BTreeMap::new(), None),
            Err(source) => return Err(CheckpointError::Read { path, source }),
        };
        Ok(Checkpoints {
            path: Some(path),
            map,
            scanned_ns,
            dirty: false,
        })
    }

    /// An empty table that will be written to `<dir>/checkpoints` (used after a corrupt
    /// file was reported: starting over is safe because ids are deterministic).
    pub fn empty_at(dir: &Path) -> Checkpoints {
        Checkpoints {
            path: Some(dir.join(FILE_NAME)),
            map: BTreeMap::new(),
            scanned_ns: None,
            dirty: true,
        }
    }

    /// The positions, for a reader to resume files at.
    pub fn table(&self) -> BTreeMap<FileId, Position> {
        self.map.clone()
    }

    pub fn get(&self, id: &FileId) -> Option<&Position> {
        self.map.get(id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &FileId> {
        self.map.keys()
    }

    /// Every name the files' route histories hold.
    pub fn route_names(&self) -> std::collections::BTreeSet<String> {
        self.map
            .values()
            .flat_map(|p| p.routes.as_slice().iter().map(|r| r.name.to_string()))
            .collect()
    }

    /// Records positions that the caller has made safe. The file's routes stay as they
    /// are (see [`Checkpoints::set_routes`]).
    pub fn update(&mut self, id: FileId, mut pos: Position) {
        let old = self.map.get(&id);
        pos.routes = old.map(|p| p.routes.clone()).unwrap_or_default();
        if old != Some(&pos) {
            self.map.insert(id, pos);
            self.dirty = true;
        }
    }

    /// Records a file's route history (before any document that uses it is durable);
    /// a file not in the table yet enters at offset 0. Returns whether it changed.
    pub fn set_routes(&mut self, id: FileId, routes: Routes) -> bool {
        let p = self
            .map
            .entry(id)
            .or_insert_with(|| Position::at(0, None, PathBuf::new()));
        if p.routes == routes {
            return false;
        }
        p.routes = routes;
        self.dirty = true;
        true
    }

    /// Forgets files that are gone for good.
    pub fn remove(&mut self, id: &FileId) {
        self.dirty |= self.map.remove(id).is_some();
    }

    /// Keeps only the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&FileId) -> bool) {
        let before = self.map.len();
        self.map.retain(|id, _| keep(id));
        self.dirty |= self.map.len() != before;
    }

    /// Whether the table changed since it was last encoded or saved.
    pub fn is_dirty(&self) -> bool {
        self.dirty && self.path.is_some()
    }

    /// The table encoded for its file, if it changed since the last call (to be written
    /// by a [`Saver`]). A table that is never written returns `None`.
    pub fn take_changes(&mut self) -> Option<Vec<u8>> {
        if self.path.is_none() || !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(encode(&self.map, self.scanned_ns))
    }

    /// Where the table is written (`None`: never).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes the table if it changed. Returns whether a write happened.
    pub fn save(&mut self) -> Result<bool, CheckpointError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        if !self.dirty {
            return Ok(false);
        }
        let bytes = encode(&self.map, self.scanned_ns);
        write_atomic(path, &bytes).map_err(|source| CheckpointError::Write {
            path: path.clone(),
            source,
        })?;
        self.dirty = false;
        Ok(true)
    }
}

/// Writes checkpoint files on a thread of its own, so that two fsyncs never hold up the
/// appender (and, through it, the reader). Only the newest table waits to be written: an
/// older one not written yet is superseded, which is safe because every table offered
/// describes data that is already durable. A failed write is retried.
pub struct Saver {
    shared: std::sync::Arc<SaverShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct SaverShared {
    state: std::sync::Mutex<SaverState>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct SaverState {
    next: Option<Vec<u8>>,
    closed: bool,
    /// Tables offered so far, and the number of the last one written (a table's
    /// number is its ticket: a later table holds everything an earlier one did).
    offered: u64,
    written: u64,
}

/// How long a failed checkpoint write waits before it is tried again.
const SAVE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl Saver {
    /// Starts the writer thread for the checkpoint file at `path`.
    pub fn spawn(path: PathBuf, stats: std::sync::Arc<crate::metrics::Stats>) -> io::Result<Saver> {
        let shared = std::sync::Arc::new(SaverShared {
            state: std::sync::Mutex::new(SaverState::default()),
            wake: std::sync::Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("shipper-ckpt".into())
            .spawn(move || s.run(&path, &stats))?;
        Ok(Saver {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands over the newest table (from [`Checkpoints::take_changes`]); returns its
    /// ticket for [`Saver::wait_written`].
    pub fn offer(&self, bytes: Vec<u8>) -> u64 {
        let mut st = self.shared.lock();
        st.next = Some(bytes);
        st.offered += 1;
        self.shared.wake.notify_all();
        st.offered
    }

    /// Waits up to `timeout` until the table of `ticket` (or a later one) is on disk.
    pub fn wait_written(&self, ticket: u64, timeout: std::time::Duration) -> bool {
        let st = self.shared.lock();
        let (st, _) = self
            .shared
            .wake
            .wait_timeout_while(st, timeout, |st| st.written < ticket)
            .unwrap_or_else(|p| p.into_inner());
        st.written >= ticket
    }

    /// Writes the last table offered, then stops the thread.
    pub fn close(mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

impl SaverShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SaverState> {
        // The state is a slot and two flags: consistent whatever a panicking holder did.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self, path: &Path, stats: &std::sync::Arc<crate::metrics::Stats>) {
        let mut disk = crate::disk::Pause::new("checkpoints", stats.clone());
        let mut st = self.lock();
        loop {
            let Some(bytes) = st.next.take() else {
                if st.closed {
                    return;
                }
                st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let ticket = st.offered;
            drop(st);
            let result = write_atomic(path, &bytes);
            st = self.lock();
            let Err(e) = result else {
                disk.leave();
                crate::metrics::Stats::add(&stats.checkpoint_writes, 1);
                st.written = st.written.max(ticket);
                self.wake.notify_all();
                continue;
            };
            // A full disk is a pause (logged once); anything else is logged now and then.
            if crate::disk::is_full(&e) {
                disk.enter(crate::disk::Cause::Full, &e);
            } else {
                crate::log_every!(crate::logging::EVERY, error, path = %path.display(), error = %e, "cannot write checkpoints; will retry");
            }
            // Retry this table unless a newer one came meanwhile.
            st.next.get_or_insert(bytes);
            if st.closed {
                return;
            }
            st = self
                .wake
                .wait_timeout(st, SAVE_RETRY)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn encode(map: &BTreeMap<FileId, Position>, scanned_ns: Option<u64>) -> Vec<u8> {
    let body = Body {
        scanned_ns,
        files: map
            .iter()
            .map(|(id, p)| Entry {
                id: id.to_hex(),
                offset: p.offset,
                last_time: p.last_time.map(|t| t.to_string()),
                path: p.path.clone(),
                streams: (p.streams != [p.offset; 2]).then_some(p.streams),
                routes: p
                    .routes
                    .as_slice()
                    .iter()
                    .map(|r| (r.from, r.name.to_string()))
                    .collect(),
                len: (p.len > p.offset).then_some(p.len),
                first_seen: p.first_seen.map(|t| t.to_string()),
                cursor: p.cursor.clone(),
                tail_hash: p.tail_hash,
                host: p.host.map(|h| {
                    let (i, a) = (h.identity, h.at);
                    [
                        i.dev,
                        i.ino,
                        i.born_ns,
                        u64::from(h.generation),
                        a.dev,
                        a.ino,
                        a.born_ns,
                    ]
                }),
            })
            .collect(),
    };
    // Serialising plain structs of strings and integers cannot fail.
    let json = serde_json::to_vec_pretty(&body).unwrap_or_default();
    KIND.encode(&json)
}

/// Parses a checkpoint file. Pure, so it can be fuzzed.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<BTreeMap<FileId, Position>, CheckpointError> {
    decode_table(path, bytes).map(|(map, _)| map)
}

/// The table and the start of the latest scan it holds.
type Table = (BTreeMap<FileId, Position>, Option<u64>);

fn decode_table(path: &Path, bytes: &[u8]) -> Result<Table, CheckpointError> {
    let body: Body = KIND.decode(path, bytes)?;
    let mut map = BTreeMap::new();
    for e in body.files {
        let bad = |what: &str| CheckpointError::Json {
            path: path.to_owned(),
            source: serde::de::Error::custom(format!("{what} in entry for {}", e.path.display())),
        };
        let id = FileId::from_hex(&e.id).ok_or_else(|| bad("invalid id"))?;
        let last_time = match &e.last_time {
            Some(t) => Some(Timestamp::parse(t.as_bytes()).map_err(|_| bad("invalid last_time"))?),
            None => None,
        };
        let first_seen = match &e.first_seen {
            Some(t) => Some(Timestamp::parse(t.as_bytes()).map_err(|_| bad("invalid first_seen"))?),
            None => None,
        };
        let streams = e.streams.unwrap_or([e.offset; 2]);
        if streams.iter().any(|&s| s < e.offset) {
            return Err(bad("a stream resumes before the file's offset"));
        }
        if e.routes.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(bad("routes out of order"));
        }
        if let Some((_, name)) = e
            .routes
            .iter()
            .find(|(_, n)| crate::index::check_name(n).is_err())
        {
            return Err(bad(&format!("invalid route {name:?}")));
        }
        let routes = Routes::new(
            e.routes
                .into_iter()
                .map(|(from, name)| Route {
                    from,
                    name: name.into(),
                })
                .collect(),
        );
        map.insert(
            id,
            Position {
                offset: e.offset,
                last_time,
                path: e.path,
                streams,
                routes,
                len: e.len.unwrap_or(e.offset).max(e.offset),
                first_seen,
                cursor: e.cursor,
                tail_hash: e.tail_hash,
                host: e
                    .host
                    .map(|[dev, ino, born_ns, g, adev, aino, aborn]| HostPlace {
                        identity: crate::ids::Place { dev, ino, born_ns },
                        generation: u32::try_from(g).unwrap_or(u32::MAX),
                        at: crate::ids::Place {
                            dev: adev,
                            ino: aino,
                            born_ns: aborn,
                        },
                    }),
            },
        );
    }
    Ok((map, body.scanned_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> FileId {
        FileId::from_bytes([n; 16])
    }

    #[test]
    fn round_trip_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::load(dir.path()).unwrap();
        assert!(c.is_empty());
        assert!(!c.save().unwrap(), "nothing changed, nothing written");
        let t = Timestamp::parse(b"2024-07-08T03:42:57.5Z").unwrap();
        c.update(
            id(1),
            Position {
                offset: 42,
                last_time: Some(t),
                path: "/a".into(),
                streams: [42; 2],
                routes: Routes::default(),
                len: 100,
                first_seen: Some(t),
                cursor: None,
                tail_hash: None,
                host: None,
            },
        );
        c.update(
            id(2),
            Position {
                offset: 7,
                last_time: None,
                path: "/b".into(),
                streams: [7; 2],
                routes: Routes::default(),
                len: 7,
                first_seen: None,
                cursor: None,
                tail_hash: None,
                host: None,
            },
        );
        assert!(c.save().unwrap());
        let back = Checkpoints::load(dir.path()).unwrap();
        assert_eq!(back.get(&id(1)).unwrap().offset, 42);
        assert_eq!(back.get(&id(1)).unwrap().len, 100, "the length seen");
        assert_eq!(back.get(&id(1)).unwrap().first_seen, Some(t));
        assert_eq!(back.get(&id(2)).unwrap().len, 7);
        assert_eq!(back.get(&id(1)).unwrap().last_time, Some(t));
        assert_eq!(back.get(&id(2)).unwrap().last_time, None);
        assert!(!dir.path().join("checkpoints.tmp").exists());
    }

    #[test]
    fn routes_persist_and_offsets_never_overwrite_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::load(dir.path()).unwrap();
        let routes = Routes::default()
            .then(0, "logs-shop".into())
            .then(4096, "logs-team".into());
        assert!(c.set_routes(id(1), routes.clone()));
        assert!(!c.set_routes(id(1), routes.clone()), "unchanged");
        assert_eq!(c.get(&id(1)).unwrap().offset, 0, "a new file enters at 0");
        // The tail's positions carry no routes: moving the offset keeps them.
        c.update(id(1), Position::at(100, None, "/a".into()));
        assert_eq!(c.get(&id(1)).unwrap().routes, routes);
        assert!(c.save().unwrap());
        let back = Checkpoints::load(dir.path()).unwrap();
        assert_eq!(back.get(&id(1)).unwrap().routes, routes);
        assert_eq!(back.get(&id(1)).unwrap().offset, 100);

        // A file written before routes existed reads as having none.
        let body =
            br#"{"files":[{"id":"01010101010101010101010101010101","offset":5,"path":"/x"}]}"#;
        let mut old = format!("{} 1 {:08x}\n", KIND.magic, crc32fast::hash(body)).into_bytes();
        old.extend_from_slice(body);
        let map = decode(Path::new("cp"), &old).unwrap();
        assert!(map.get(&id(1)).unwrap().routes.is_empty());
        // Routes out of order, or not an index name, are a corrupt file.
        for routes in [r#"[[9,"a"],[3,"b"]]"#, r#"[[0,"Bad Name"]]"#] {
            let body = format!(
                r#"{{"files":[{{"id":"01010101010101010101010101010101","offset":5,"path":"/x","routes":{routes}}}]}}"#
            );
            let mut bad = format!(
                "{} 1 {:08x}\n",
                KIND.magic,
                crc32fast::hash(body.as_bytes())
            )
            .into_bytes();
            bad.extend_from_slice(body.as_bytes());
            assert!(
                matches!(
                    decode(Path::new("cp"), &bad),
                    Err(CheckpointError::Json { .. })
                ),
                "{routes}"
            );
        }
    }

    #[test]
    fn corruption_is_an_error_not_a_panic() {
        let mut map = BTreeMap::new();
        map.insert(
            id(3),
            Position {
                offset: 1,
                last_time: None,
                path: "/x".into(),
                streams: [1; 2],
                routes: Routes::default(),
                len: 1,
                first_seen: None,
                cursor: None,
                tail_hash: None,
                host: None,
            },
        );
        let good = encode(&map, None);
        let p = Path::new("cp");
        assert!(decode(p, &good).is_ok());
        let mut flipped = good.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 1;
        assert!(matches!(
            decode(p, &flipped),
            Err(CheckpointError::Checksum { .. })
        ));
        assert!(matches!(
            decode(p, b""),
            Err(CheckpointError::Header { .. })
        ));
        assert!(matches!(
            decode(p, b"shipper-checkpoints 9 0\n{}"),
            Err(CheckpointError::Version { found: 9, .. })
        ));
        let body = br#"{"files":[{"id":"zz","offset":1,"path":"/x"}]}"#;
        let mut bad_id = format!("{} 1 {:08x}\n", KIND.magic, crc32fast::hash(body)).into_bytes();
        bad_id.extend_from_slice(body);
        assert!(matches!(
            decode(p, &bad_id),
            Err(CheckpointError::Json { .. })
        ));
    }
}
