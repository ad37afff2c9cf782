//! The agent end to end: real log files, the real binary, a real in-memory Elasticsearch
//! (osmem-server), and a fault-injecting proxy between them. Every test asserts the exact
//! set of documents in Elasticsearch afterwards: nothing lost, nothing duplicated.

use crate::proxy;
use crate::util::*;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

/// A node's log tree and the agent's data directory, with the lines written so far.
pub(crate) struct Node {
    dir: tempfile::TempDir,
    pub(crate) written: BTreeSet<String>,
    seq: u64,
    /// Every agent started, killed when the test ends, even by a panic: a stray agent
    /// would keep shipping into whatever later listens on its port.
    pids: std::cell::RefCell<Vec<u32>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for pid in self.pids.borrow().iter() {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Node {
    pub(crate) fn new() -> Node {
        Node {
            dir: tempfile::tempdir().unwrap(),
            written: BTreeSet::new(),
            seq: 0,
            pids: Default::default(),
        }
    }

    pub(crate) fn docker(&self) -> PathBuf {
        self.dir.path().join("docker")
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The CRI root (`<pods>/<ns>_<pod>_<uid>/<container>/0.log`).
    pub(crate) fn pods(&self) -> PathBuf {
        self.dir.path().join("pods")
    }

    /// CRI container `c`'s live log.
    pub(crate) fn cri_log(&self, c: usize) -> PathBuf {
        self.pods()
            .join(format!("ns_pod{c}_uid{c}"))
            .join("app")
            .join("0.log")
    }

    /// Appends `n` unique lines to CRI container `c`, dated `day` (2024-07-DD).
    pub(crate) fn cri_write(&mut self, c: usize, n: usize, day: u32) {
        let mut s = String::new();
        for _ in 0..n {
            self.seq += 1;
            let msg = format!(
                "cri c{c} n{} {}",
                self.seq,
                "y".repeat((self.seq % 89) as usize)
            );
            s += &format!(
                "2024-07-{day:02}T03:42:57.{:09}Z stdout F {msg}\n",
                self.seq
            );
            self.written.insert(msg);
        }
        append(&self.cri_log(c), s.as_bytes());
    }

    /// Rotates CRI container `c` like kubelet: the live file to `0.log.<timestamp>`, a
    /// new live file, and every rotated file but the newest gzipped.
    pub(crate) fn cri_rotate(&mut self, c: usize) {
        let live = self.cri_log(c);
        let dir = live.parent().unwrap();
        let mut k = 0;
        let name = |k: u32| dir.join(format!("0.log.2024070803{k:04}"));
        while name(k).exists() || dir.join(format!("0.log.2024070803{k:04}.gz")).exists() {
            k += 1;
        }
        if k > 0 {
            let prev = name(k - 1);
            if prev.exists() {
                let bytes = std::fs::read(&prev).unwrap();
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&bytes).unwrap();
                std::fs::write(
                    dir.join(format!("0.log.2024070803{:04}.gz", k - 1)),
                    gz.finish().unwrap(),
                )
                .unwrap();
                std::fs::remove_file(prev).unwrap();
            }
        }
        if live.exists() {
            std::fs::rename(&live, name(k)).unwrap();
        }
        std::fs::File::create(&live).unwrap();
    }

    pub(crate) fn log(&self, c: usize) -> PathBuf {
        let id = format!("{c:0>4}feed");
        self.docker().join(&id).join(format!("{id}-json.log"))
    }

    /// Appends `n` unique lines to container `c`, dated `day` (2024-07-DD).
    pub(crate) fn write(&mut self, c: usize, n: usize, day: u32) {
        let mut s = String::new();
        for _ in 0..n {
            self.seq += 1;
            let msg = format!(
                "line c{c} n{} {}",
                self.seq,
                "x".repeat((self.seq % 97) as usize)
            );
            let time = format!("2024-07-{day:02}T03:42:57.{:09}Z", self.seq);
            s += &docker_line(
                &format!("{msg}\n"),
                if self.seq.is_multiple_of(5) {
                    "stderr"
                } else {
                    "stdout"
                },
                &time,
            );
            self.written.insert(msg);
        }
        append(&self.log(c), s.as_bytes());
    }

    /// Whether the agent has persisted the identity of container `c`'s live file: files
    /// rotate at megabytes, long after the agent has seen them, and a file rotated away
    /// before any agent saw it is outside what a tailer can promise.
    pub(crate) fn seen(&self, c: usize) -> bool {
        let Ok(bytes) = std::fs::read(self.log(c)) else {
            return false;
        };
        let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
            return false;
        };
        let id = format!("{c:0>4}feed");
        let fid = shipper::FileId::compute(&format!("docker:{id}"), &bytes[..nl]).to_hex();
        std::fs::read_to_string(self.data().join("checkpoints")).is_ok_and(|t| t.contains(&fid))
    }

    /// Rotates container `c` like dockerd: shift `.N` to `.N+1`, live file to `.1`.
    pub(crate) fn rotate(&mut self, c: usize) {
        let live = self.log(c);
        let name = live.file_name().unwrap().to_str().unwrap().to_owned();
        let dir = live.parent().unwrap();
        let mut k = 1;
        while dir.join(format!("{name}.{k}")).exists() {
            k += 1;
        }
        while k > 1 {
            std::fs::rename(
                dir.join(format!("{name}.{}", k - 1)),
                dir.join(format!("{name}.{k}")),
            )
            .unwrap();
            k -= 1;
        }
        if live.exists() {
            std::fs::rename(&live, dir.join(format!("{name}.1"))).unwrap();
        }
        std::fs::File::create(&live).unwrap();
    }

    pub(crate) fn agent(&self, es_url: &str, prefix: &str, env: &[(&str, &str)]) -> Child {
        let mut cmd = shipper();
        // The CRI root only where a test wrote CRI logs (`cri_write`).
        let pods = match self.pods().exists() {
            true => self.pods(),
            false => PathBuf::from("/nonexistent"),
        };
        cmd.arg("--pods-root")
            .arg(pods)
            .args(["--log-level", "debug", "--docker-root"])
            .arg(self.docker())
            .arg("--data-dir")
            .arg(self.data())
            .args(["--es-url", es_url, "--index-prefix", prefix])
            .env("SHIPPER_ELASTICSEARCH_LINGER_MS", "50")
            .env("SHIPPER_INPUT_RESCAN_INTERVAL_MS", "100")
            .env("SHIPPER_INPUT_DRAIN_GRACE_MS", "100")
            .env("SHIPPER_ELASTICSEARCH_MAX_BACKOFF_MS", "300")
            .env("SHIPPER_AGENT_SHUTDOWN_DEADLINE_MS", "5000")
            // Text logs, which the assertions read; a free port for /metrics (see
            // `metrics_addr`). Either can be overridden through `env`.
            .env("SHIPPER_LOG_FORMAT", "text")
            .env("SHIPPER_METRICS_ADDR", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("agent.log")).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        std::fs::create_dir_all(self.docker()).unwrap();
        let child = cmd.spawn().expect("starting the agent");
        self.pids.borrow_mut().push(child.id());
        child
    }

    pub(crate) fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Waits until Elasticsearch holds exactly the lines written, and checks them.
    pub(crate) fn assert_all_indexed(&self, es: &str, prefix: &str) {
        let want = self.written.len() as u64;
        let deadline = std::time::Instant::now() + LONG;
        while es_count(es, &format!("{prefix}-*")) < want {
            if std::time::Instant::now() > deadline {
                let got: BTreeSet<String> =
                    es_logs(es, &format!("{prefix}-*")).into_iter().collect();
                let missing: Vec<&String> = self.written.difference(&got).take(5).collect();
                let log = self.agent_log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "timed out: {} of {want} documents in {prefix}-*; missing e.g. {missing:?}; extra {}\nagent log tail:\n{}",
                    got.len(),
                    got.difference(&self.written).count(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            self.written.len() <= 10_000,
            "es_logs reads at most 10 000 documents"
        );
        let logs = es_logs(es, &format!("{prefix}-*"));
        let got: BTreeSet<String> = logs.iter().cloned().collect();
        assert_eq!(logs.len(), got.len(), "duplicates in Elasticsearch");
        let missing: Vec<&String> = self.written.difference(&got).take(3).collect();
        let extra: Vec<&String> = got.difference(&self.written).take(3).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "documents differ: missing {missing:?}, extra {extra:?}"
        );
    }

    /// The address the agent's metrics listener bound, from its `metrics listening` log
    /// line (text or JSON).
    pub(crate) fn metrics_addr(&self) -> String {
        let mut addr = None;
        wait_until("the agent's metrics address in its log", LONG, || {
            addr = self
                .agent_log()
                .lines()
                .filter(|l| l.contains("metrics listening"))
                .find_map(|l| {
                    let rest = l
                        .split_once("addr=")
                        .or_else(|| l.split_once("\"addr\":\""))?
                        .1;
                    let end = rest.find(['"', ' ']).unwrap_or(rest.len());
                    Some(rest[..end].to_owned())
                });
            addr.is_some()
        });
        addr.unwrap_or_default()
    }

    fn buffer_bytes(&self) -> u64 {
        std::fs::read_dir(self.data().join("buffer"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

pub(crate) fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "agent did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn clean_run_indexes_every_line_once_and_stops_on_sigterm() {
    let Some(es) = es() else { return };
    let mut node = Node::new();
    for c in 0..3 {
        node.write(c, 700, 8);
    }
    let mut agent = node.agent(&es.url, "clean", &[]);
    node.assert_all_indexed(&es.url, "clean");
    node.write(1, 50, 9);
    node.assert_all_indexed(&es.url, "clean");
    assert!(sigterm(&mut agent).success(), "{}", node.agent_log());
    assert!(node.data().join("checkpoints").exists());
    // A restart re-reads nothing: checkpoints followed the acknowledged data.
    let mut again = node.agent(&es.url, "clean", &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(sigterm(&mut again).success());
    node.assert_all_indexed(&es.url, "clean");
    let template: serde_json::Value = http()
        .get(format!("{}/_index_template/shipper-clean", es.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        template["index_templates"][0]["index_template"]["index_patterns"][0],
        "clean-*"
    );
}

#[test]
fn elasticsearch_down_at_start_and_mid_run() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    p.set(|f| f.down = true);
    let mut node = Node::new();
    node.write(0, 300, 8);
    let mut agent = node.agent(&p.url, "down", &[]);
    wait_until(
        "the buffer to hold data while Elasticsearch is down",
        LONG,
        || node.buffer_bytes() > 0,
    );
    assert_eq!(es_count(&es.url, "down-*"), 0);
    p.set(|f| f.down = false);
    node.assert_all_indexed(&es.url, "down");
    p.set(|f| f.drop_connections = true);
    node.write(1, 300, 8);
    // A file rotated away before any agent saw it is outside what a tailer can promise.
    wait_until("the agent to see container 1's file", LONG, || node.seen(1));
    node.rotate(1);
    node.write(1, 100, 8);
    wait_until("failed requests while connections drop", LONG, || {
        node.agent_log().contains("retrying")
    });
    p.set(|f| f.drop_connections = false);
    node.assert_all_indexed(&es.url, "down");
    assert!(sigterm(&mut agent).success());
}

#[test]
fn storm_of_429_and_mixed_item_results() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    p.set(|f| {
        f.bulk_status_every = Some((2, 429));
        f.item_status_every = Some((3, 429));
    });
    let mut node = Node::new();
    for c in 0..2 {
        node.write(c, 1500, 8);
    }
    let mut agent = node.agent(
        &p.url,
        "storm",
        &[("SHIPPER_ELASTICSEARCH_BATCH_DOCS", "200")],
    );
    node.assert_all_indexed(&es.url, "storm");
    assert!(
        p.injected() > 10,
        "the storm happened: {} faults injected, {} bulk requests seen; agent log:\n{}",
        p.injected(),
        p.seen.bulk.load(std::sync::atomic::Ordering::Relaxed),
        node.agent_log()
            .lines()
            .filter(|l| !l.contains("DEBUG"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    p.set(|f| {
        f.bulk_status_every = Some((3, 503));
        f.item_status_every = Some((4, 500));
    });
    node.write(0, 500, 8);
    node.assert_all_indexed(&es.url, "storm");
    assert!(sigterm(&mut agent).success());
}

#[test]
fn split_on_413_garbage_bodies_and_slow_answers() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    p.set(|f| {
        f.max_docs = Some(30);
        f.garbage_every = Some(5);
        f.delay = Duration::from_millis(30);
    });
    let mut node = Node::new();
    node.write(0, 400, 8);
    let mut agent = node.agent(&p.url, "split", &[]);
    node.assert_all_indexed(&es.url, "split");
    assert!(p.seen.status_413.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert!(sigterm(&mut agent).success());
}

#[test]
fn mapping_conflict_goes_to_the_dead_letter_file() {
    let Some(es) = es() else { return };
    // The 2024.07.09 index maps `log` as a number: a text line cannot go there.
    let r = http()
        .put(format!("{}/conflict-2024.07.09", es.url))
        .json(&serde_json::json!({"mappings": {"properties": {"log": {"type": "long"}}}}))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let mut node = Node::new();
    node.write(0, 200, 8);
    node.write(0, 1, 9);
    node.write(0, 200, 8);
    let rejected: String = node
        .written
        .iter()
        .find(|l| l.contains(" n201 "))
        .unwrap()
        .clone();
    let mut agent = node.agent(&es.url, "conflict", &[]);
    wait_until("400 documents indexed", LONG, || {
        es_count(&es.url, "conflict-2024.07.08") >= 400
    });
    let dl = node.data().join("dead-letter.ndjson");
    wait_until("the dead-letter file", LONG, || dl.exists());
    assert!(sigterm(&mut agent).success());
    let text = std::fs::read_to_string(&dl).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["status"], 400);
    assert_eq!(lines[0]["document"]["log"], rejected.as_str());
    assert!(
        lines[0]["error"]["type"]
            .as_str()
            .unwrap()
            .contains("exception"),
        "{text}"
    );
    assert_eq!(es_count(&es.url, "conflict-2024.07.08"), 400);
    let logs: BTreeSet<String> = es_logs(&es.url, "conflict-*").into_iter().collect();
    let mut want = node.written.clone();
    want.remove(&rejected);
    assert_eq!(logs, want);
}

#[test]
fn kill_9_twenty_times_while_writing_and_rotating() {
    let Some(es) = es() else { return };
    let mut node = Node::new();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut agent = node.agent(&es.url, "kill", &[]);
    for round in 0..20 {
        for _ in 0..rng.usize(1..4) {
            let c = rng.usize(0..3);
            node.write(c, rng.usize(20..200), 8);
            if rng.u8(0..4) == 0 && node.seen(c) {
                node.rotate(c);
                node.write(c, rng.usize(1..50), 8);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.u64(20..400)));
        kill9(&mut agent);
        if round % 5 == 4 {
            // Also while it is down.
            let c = rng.usize(0..3);
            node.write(c, 100, 8);
            if node.seen(c) {
                node.rotate(c);
                node.write(c, 10, 8);
            }
        }
        agent = node.agent(&es.url, "kill", &[]);
    }
    node.write(0, 10, 8);
    node.assert_all_indexed(&es.url, "kill");
    assert!(sigterm(&mut agent).success());
}

#[test]
fn full_buffer_pauses_reading_with_flat_memory() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    p.set(|f| f.down = true);
    let mut node = Node::new();
    for round in 0..6 {
        node.write(round % 2, 1000, 8);
    }
    let max = 256 * 1024;
    let env = [
        ("SHIPPER_BUFFER_MAX_BYTES", "262144"),
        ("SHIPPER_BUFFER_SEGMENT_BYTES", "65536"),
        ("SHIPPER_ELASTICSEARCH_BATCH_BYTES", "32768"),
    ];
    let mut agent = node.agent(&p.url, "full", &env);
    wait_until("the buffer to fill", LONG, || node.buffer_bytes() > max / 2);
    std::thread::sleep(Duration::from_millis(500));
    let rss1 = rss_kib(agent.id());
    for round in 0..3 {
        node.write(round % 2, 1000, 8);
    }
    std::thread::sleep(Duration::from_millis(700));
    let rss2 = rss_kib(agent.id());
    assert!(
        node.buffer_bytes() <= max + 65536,
        "buffer over its cap: {}",
        node.buffer_bytes()
    );
    assert!(rss2 < 64 * 1024, "RSS {rss2} KiB");
    assert!(
        rss2 <= rss1 + 4 * 1024,
        "memory grew while paused: {rss1} -> {rss2} KiB"
    );
    p.set(|f| f.down = false);
    node.assert_all_indexed(&es.url, "full");
    assert!(sigterm(&mut agent).success());
}

#[test]
fn corrupted_buffer_segment_is_skipped_and_counted() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    p.set(|f| f.down = true);
    let mut node = Node::new();
    node.write(0, 50, 8);
    let env = [("SHIPPER_AGENT_SHUTDOWN_DEADLINE_MS", "200")];
    let mut agent = node.agent(&p.url, "corrupt", &env);
    wait_until("the batch in the buffer", LONG, || {
        node.buffer_bytes() > 0 && node.data().join("checkpoints").exists()
    });
    node.write(0, 50, 8);
    wait_until("a second batch", LONG, || {
        let segs = segments(&node.data());
        segs.iter().map(|s| frame_count(s)).sum::<usize>() >= 2
    });
    assert!(sigterm(&mut agent).success());
    // Flip one payload byte of the first frame.
    let seg = segments(&node.data()).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let lost = u32::from_le_bytes(bytes[5..9].try_into().unwrap()) as usize;
    bytes[21 + 3] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    p.set(|f| f.down = false);
    let mut agent = node.agent(&p.url, "corrupt", &[]);
    let want = node.written.len() - lost;
    wait_until("the undamaged documents", LONG, || {
        es_count(&es.url, "corrupt-*") >= want as u64
    });
    assert!(sigterm(&mut agent).success());
    assert_eq!(es_count(&es.url, "corrupt-*"), want as u64);
    let log = node.agent_log();
    assert!(
        log.contains("buffer segment damaged") && log.contains(&format!("records_lost={lost}")),
        "{log}"
    );
}

fn segments(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("buffer"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn frame_count(seg: &Path) -> usize {
    let b = std::fs::read(seg).unwrap_or_default();
    let mut at = 0;
    let mut n = 0;
    while at + 21 <= b.len() {
        let len = u32::from_le_bytes(b[at + 9..at + 13].try_into().unwrap()) as usize;
        at += 21 + len;
        n += 1;
    }
    n
}

#[test]
fn legacy_template_for_elasticsearch_7() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    p.set(|f| f.version = Some("7.2.0".into()));
    let mut node = Node::new();
    node.write(0, 20, 8);
    let mut agent = node.agent(&p.url, "seven", &[]);
    node.assert_all_indexed(&es.url, "seven");
    assert!(sigterm(&mut agent).success());
    let t: serde_json::Value = http()
        .get(format!("{}/_template/shipper-seven", es.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        t["shipper-seven"]["index_patterns"],
        serde_json::json!(["node-*", "seven-*"]),
        "{t}"
    );
    let r = http()
        .get(format!("{}/_index_template/shipper-seven", es.url))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "no composable template on 7.2");
}

#[test]
fn tls_with_a_private_ca_and_basic_auth_never_leaks_the_password() {
    let Some(es) = es() else { return };
    let ca =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_der = ca.cert.der().clone();
    let key = rustls_pki_key(ca.signing_key.serialize_der());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert_der], key)
    .unwrap();
    let p = proxy::start_with(
        &es.url,
        Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))),
    );
    use base64::Engine;
    let password = "correct-horse-battery-staple";
    p.set(|f| {
        f.require_auth = Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("elastic:{password}"))
        ))
    });
    let mut node = Node::new();
    std::fs::create_dir_all(node.dir.path()).unwrap();
    let ca_file = node.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let pw_file = node.dir.path().join("password");
    std::fs::write(&pw_file, format!("{password}\n")).unwrap();
    node.write(0, 100, 8);
    let env = [
        ("SHIPPER_ELASTICSEARCH_USERNAME", "elastic"),
        (
            "SHIPPER_ELASTICSEARCH_PASSWORD_FILE",
            pw_file.to_str().unwrap(),
        ),
        ("SHIPPER_ELASTICSEARCH_CA_FILE", ca_file.to_str().unwrap()),
    ];
    let mut agent = node.agent(&p.url, "tls", &env);
    node.assert_all_indexed(&es.url, "tls");
    assert!(sigterm(&mut agent).success());
    let run = Credentials {
        file: &pw_file,
        good: password,
        wrong: "wrong-password-123",
    };
    run.wrong_is_retried_unlogged_then_good_delivers(&mut node, &p, &es.url, "tls", &env);
}

/// A credential in a file (a mounted Secret), replaced by a wrong one and back.
struct Credentials<'a> {
    file: &'a Path,
    good: &'a str,
    wrong: &'a str,
}

impl Credentials<'_> {
    /// With the wrong credential every request is answered 401: retried (never
    /// dead-lettered), and neither credential ever printed; with the good one back,
    /// everything is delivered.
    fn wrong_is_retried_unlogged_then_good_delivers(
        &self,
        node: &mut Node,
        p: &proxy::Proxy,
        es: &str,
        prefix: &str,
        env: &[(&str, &str)],
    ) {
        std::fs::write(self.file, self.wrong).unwrap();
        node.write(0, 10, 8);
        let mut agent = node.agent(&p.url, prefix, env);
        wait_until("401s", LONG, || {
            p.seen
                .unauthorized
                .load(std::sync::atomic::Ordering::Relaxed)
                > 2
        });
        kill9(&mut agent);
        let log = node.agent_log();
        assert!(log.contains("401"), "{log}");
        assert!(
            !log.contains(self.good) && !log.contains(self.wrong),
            "a credential reached the log"
        );
        assert!(!node.data().join("dead-letter.ndjson").exists());
        std::fs::write(self.file, self.good).unwrap();
        let mut agent = node.agent(&p.url, prefix, env);
        node.assert_all_indexed(es, prefix);
        assert!(sigterm(&mut agent).success());
    }
}

fn rustls_pki_key(der: Vec<u8>) -> tokio_rustls::rustls::pki_types::PrivateKeyDer<'static> {
    tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(der.into())
}

#[test]
fn hourly_index_date_format_and_small_bulk_responses() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    let mut node = Node::new();
    node.write(0, 30, 8);
    node.write(1, 30, 9);
    let env = [("SHIPPER_ELASTICSEARCH_INDEX_DATE_FORMAT", "%Y.%m.%d.%H")];
    let mut agent = node.agent(&p.url, "hourly", &env);
    node.assert_all_indexed(&es.url, "hourly");
    assert!(sigterm(&mut agent).success());
    // Records are dated 03:42 UTC on 8 and 9 July.
    assert_eq!(es_count(&es.url, "hourly-2024.07.08.03"), 30);
    assert_eq!(es_count(&es.url, "hourly-2024.07.09.03"), 30);
    let paths = p.seen.bulk_paths.lock().unwrap().clone();
    assert!(!paths.is_empty());
    for path in &paths {
        assert_eq!(
            path, "/_bulk?filter_path=errors,items.*.status,items.*.error",
            "bulk responses are asked for the fields read only"
        );
    }
    let templates = p.seen.templates.lock().unwrap().clone();
    assert_eq!(templates.len(), 1, "{templates:?}");
    assert_eq!(templates[0].0, "/_index_template/shipper-hourly");
    let body: serde_json::Value = serde_json::from_str(&templates[0].1).unwrap();
    assert_eq!(
        body["index_patterns"],
        serde_json::json!(["hourly-*", "node-*"])
    );
}

#[test]
fn api_key_from_a_file_is_sent_and_never_logged() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    // The form Elasticsearch's create-API-key call returns as `encoded`.
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .encode("VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw");
    p.set(|f| f.require_auth = Some(format!("ApiKey {key}")));
    let mut node = Node::new();
    std::fs::create_dir_all(node.dir.path()).unwrap();
    let key_file = node.dir.path().join("api-key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    node.write(0, 50, 8);
    let env = [(
        "SHIPPER_ELASTICSEARCH_API_KEY_FILE",
        key_file.to_str().unwrap(),
    )];
    let mut agent = node.agent(&p.url, "apikey", &env);
    node.assert_all_indexed(&es.url, "apikey");
    assert!(sigterm(&mut agent).success());
    assert_eq!(
        p.seen
            .unauthorized
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "every request carried the key"
    );
    // A revoked key, then the good one back.
    let run = Credentials {
        file: &key_file,
        good: &key,
        wrong: "cmV2b2tlZDprZXk=",
    };
    run.wrong_is_retried_unlogged_then_good_delivers(&mut node, &p, &es.url, "apikey", &env);
}

/// The test server has no data streams (it answers each document 400
/// `unsupported_operation_exception`), so this checks what the agent sends — a
/// composable template declaring the data stream, `create` actions into the stream's
/// name — and that a server refusing the documents loses none of them: each is in the
/// dead-letter file with the server's reason.
#[test]
fn data_stream_mode_sends_a_data_stream_template_and_creates_into_the_stream() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    let mut node = Node::new();
    node.write(0, 40, 8);
    let env = [("SHIPPER_ELASTICSEARCH_DATA_STREAM", "true")];
    let mut agent = node.agent(&p.url, "logs-k8s-default", &env);
    let dead = node.data().join("dead-letter.ndjson");
    wait_until("documents settled", LONG, || {
        std::fs::read_to_string(&dead).is_ok_and(|t| t.lines().count() >= 40)
    });
    assert!(sigterm(&mut agent).success());
    let templates = p.seen.templates.lock().unwrap().clone();
    assert_eq!(templates.len(), 1, "{templates:?}");
    assert_eq!(templates[0].0, "/_index_template/shipper-logs-k8s-default");
    let body: serde_json::Value = serde_json::from_str(&templates[0].1).unwrap();
    assert_eq!(body["data_stream"], serde_json::json!({}));
    assert_eq!(
        body["index_patterns"],
        serde_json::json!(["logs-k8s-default", "node"])
    );
    let actions = p.seen.actions.lock().unwrap().clone();
    assert_eq!(actions.len(), 40);
    for a in &actions {
        let v: serde_json::Value = serde_json::from_str(a).unwrap();
        assert_eq!(v["create"]["_index"], "logs-k8s-default", "{a}");
    }
    let entries = std::fs::read_to_string(&dead).unwrap();
    assert_eq!(entries.lines().count(), 40);
    let mut logs = BTreeSet::new();
    for line in entries.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            e.to_string().contains("data streams are not supported"),
            "{e}"
        );
        logs.insert(e.to_string());
    }
    for msg in &node.written {
        assert!(
            logs.iter().any(|l| l.contains(msg.as_str())),
            "{msg} is not in the dead-letter file"
        );
    }
}
