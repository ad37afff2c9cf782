//! The dead-letter file: documents Elasticsearch rejected (a mapping conflict, an illegal
//! value), kept with the reason so nothing disappears silently.
//!
//! `<data-dir>/dead-letter.ndjson`, one JSON object per line:
//! `{"@timestamp":…,"status":400,"error":{…},"action":{…},"document":{…}}`. When it passes
//! half the cap it becomes `dead-letter.1.ndjson`, replacing the previous one, whose
//! entries are counted as dropped.

use crate::metrics::Stats;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

pub const FILE_NAME: &str = "dead-letter.ndjson";
pub const OLD_FILE_NAME: &str = "dead-letter.1.ndjson";

/// One rejected document.
#[derive(Debug)]
pub struct Entry<'a> {
    pub status: u16,
    /// The error object from the bulk response (JSON).
    pub error: &'a str,
    /// The action line and the document line, as sent (JSON, no newline).
    pub action: &'a [u8],
    pub document: &'a [u8],
}

pub struct DeadLetter {
    dir: PathBuf,
    max_bytes: u64,
    file: Option<File>,
    len: u64,
    stats: Arc<Stats>,
}

impl DeadLetter {
    pub fn new(dir: PathBuf, max_bytes: u64, stats: Arc<Stats>) -> DeadLetter {
        let len = fs::metadata(dir.join(FILE_NAME))
            .map(|m| m.len())
            .unwrap_or(0);
        DeadLetter {
            dir,
            max_bytes,
            file: None,
            len,
            stats,
        }
    }

    /// Appends entries and syncs them.
    pub fn write(&mut self, entries: &[Entry<'_>]) -> io::Result<()> {
        let mut out = Vec::new();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        for e in entries {
            out.extend_from_slice(
                format!(
                    "{{\"@timestamp\":\"{now}\",\"status\":{},\"error\":",
                    e.status
                )
                .as_bytes(),
            );
            out.extend_from_slice(json_or_string(e.error.as_bytes()).as_slice());
            out.extend_from_slice(b",\"action\":");
            out.extend_from_slice(&json_or_string(e.action));
            out.extend_from_slice(b",\"document\":");
            out.extend_from_slice(&json_or_string(e.document));
            out.extend_from_slice(b"}\n");
        }
        if self.len > 0 && self.len + out.len() as u64 > self.max_bytes / 2 {
            self.rotate()?;
        }
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join(FILE_NAME))?,
            );
        }
        if let Some(f) = &mut self.file {
            if let Err(e) = f.write_all(&out).and_then(|()| f.sync_data()) {
                // Cut a partial write off (a full disk): the file keeps whole lines, and
                // the same entries are written again later.
                let _ = f.set_len(self.len);
                return Err(e);
            }
        }
        self.len += out.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let old = self.dir.join(OLD_FILE_NAME);
        let dropped = File::open(&old)
            .map(|f| io::BufReader::new(f).split(b'\n').count() as u64)
            .unwrap_or(0);
        if dropped > 0 {
            Stats::add(&self.stats.dead_letter_dropped, dropped);
            tracing::warn!(
                entries = dropped,
                "dead-letter file full: dropped its oldest entries"
            );
        }
        fs::rename(self.dir.join(FILE_NAME), old)?;
        self.len = 0;
        Ok(())
    }
}

/// Embeds valid JSON as is; anything else as a JSON string (never produce a bad line).
fn json_or_string(b: &[u8]) -> Vec<u8> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok() {
        b.to_vec()
    } else {
        serde_json::to_vec(&String::from_utf8_lossy(b)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_valid_lines_and_rotates() {
        let d = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let mut dl = DeadLetter::new(d.path().to_owned(), 600, stats.clone());
        let e = Entry {
            status: 400,
            error: r#"{"type":"mapper_parsing_exception"}"#,
            action: br#"{"create":{"_id":"x"}}"#,
            document: br#"{"log":"a"}"#,
        };
        dl.write(&[e]).unwrap();
        let text = fs::read_to_string(d.path().join(FILE_NAME)).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["error"]["type"], "mapper_parsing_exception");
        assert_eq!(v["document"]["log"], "a");
        let bad = Entry {
            status: 400,
            error: "not json",
            action: b"{",
            document: b"x",
        };
        for _ in 0..10 {
            dl.write(&[bad.clone_ref()]).unwrap();
        }
        assert!(d.path().join(OLD_FILE_NAME).exists());
        assert!(
            Stats::get(&stats.dead_letter_dropped) > 0,
            "rotating twice drops the oldest"
        );
        for line in fs::read_to_string(d.path().join(FILE_NAME))
            .unwrap()
            .lines()
        {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    impl Entry<'_> {
        fn clone_ref(&self) -> Entry<'_> {
            Entry {
                status: self.status,
                error: self.error,
                action: self.action,
                document: self.document,
            }
        }
    }
}
