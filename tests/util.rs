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
    // The machine's own /var/log and journal are not the tests' business: a test that
    // reads node logs names its own tree (`--node-root`).
    cmd.env("SHIPPER_NODE_ROOT", "/nonexistent-node-root");
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

/// Appends `bytes` to the file at `path`, creating it and its parent directories.
pub fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// A Docker json-file line as dockerd writes it.
pub fn docker_line(msg: &str, stream: &str, time: &str) -> String {
    let log = serde_json::to_string(msg).unwrap();
    format!("{{\"log\":{log},\"stream\":\"{stream}\",\"time\":\"{time}\"}}\n")
}

/// A running osmem-server (in-memory OpenSearch-compatible), killed on drop: the fleet
/// harness's, which finds and starts it the same way for the benchmarks.
pub use crate::fleet_bench::harness::Osmem as Es;

/// Starts osmem-server on a free loopback port, or returns `None` (with a message) when it
/// is not installed and this is not CI; in CI a missing server fails the test.
pub fn es() -> Option<Es> {
    let Some(bin) = Es::binary() else {
        if std::env::var_os("CI").is_some() {
            panic!("osmem-server is not installed: run .ci/setup-deps");
        }
        eprintln!("skipping: osmem-server is not installed (run .ci/setup-deps)");
        return None;
    };
    Some(Es::start(&bin).expect("starting osmem-server"))
}

/// reqwest is built without a bundled TLS provider; like the agent, use ring.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Blocking HTTP for test assertions.
pub fn http() -> reqwest::blocking::Client {
    install_tls_provider();
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The value of one series in the agent's `/metrics` at `addr` (0 when absent or the
/// agent does not answer).
pub fn metric(addr: &str, series: &str) -> f64 {
    let Ok(r) = http().get(format!("http://{addr}/metrics")).send() else {
        return 0.0;
    };
    r.text()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Documents in indices matching `pattern`.
pub fn es_count(url: &str, pattern: &str) -> u64 {
    match http().get(format!("{url}/{pattern}/_count")).send() {
        Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().unwrap()["count"]
            .as_u64()
            .unwrap_or(0),
        _ => 0,
    }
}

/// Every document's `log` in indices matching `pattern` (at most 10 000).
pub fn es_logs(url: &str, pattern: &str) -> Vec<String> {
    es_hits(url, pattern)
        .into_iter()
        .map(|(_, log)| log)
        .collect()
}

/// The hits of a search of indices matching `pattern` (at most 10 000), with the
/// `_source` fields `fields` (`None`: all).
pub fn es_search(url: &str, pattern: &str, fields: Option<&[&str]>) -> Vec<serde_json::Value> {
    let mut body = serde_json::json!({"size": 10000, "query": {"match_all": {}}});
    if let Some(f) = fields {
        body["_source"] = serde_json::json!(f);
    }
    let r: serde_json::Value = http()
        .post(format!("{url}/{pattern}/_search"))
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    r["hits"]["hits"].as_array().cloned().unwrap_or_default()
}

/// Every document's index and `log` in indices matching `pattern` (at most 10 000).
pub fn es_hits(url: &str, pattern: &str) -> Vec<(String, String)> {
    es_search(url, pattern, Some(&["log"]))
        .iter()
        .map(|h| {
            (
                h["_index"].as_str().unwrap_or("").to_owned(),
                h["_source"]["log"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Waits until `cond` holds, polling; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}
