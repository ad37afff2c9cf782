//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The example node tree that ships in the repo.
pub fn example() -> PathBuf {
    repo().join("examples/node")
}

/// A `shipper` command with no `SHIPPER_*` settings inherited from the environment.
pub fn shipper() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shipper"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SHIPPER_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("running shipper")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The NDJSON bulk body split into (action, document) pairs.
pub fn bulk_pairs(ndjson: &[u8]) -> Vec<(serde_json::Value, serde_json::Value)> {
    let text = std::str::from_utf8(ndjson).expect("bulk body is UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() % 2, 0, "bulk body has an odd number of lines");
    lines
        .chunks(2)
        .map(|p| {
            (
                serde_json::from_str(p[0]).expect("action line is JSON"),
                serde_json::from_str(p[1]).expect("document line is JSON"),
            )
        })
        .collect()
}

/// Parses the dry-run summary line (`key=value ...`) from stderr.
pub fn summary(stderr: &str) -> std::collections::BTreeMap<String, u64> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("shipper dry-run:"))
        .expect("summary line");
    line["shipper dry-run:".len()..]
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// Writes `bytes` at `path`, creating parent directories.
pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A Docker json-file line as dockerd writes it.
pub fn docker_line(msg: &str, stream: &str, time: &str) -> String {
    let log = serde_json::to_string(msg).unwrap();
    format!("{{\"log\":{log},\"stream\":\"{stream}\",\"time\":\"{time}\"}}\n")
}
