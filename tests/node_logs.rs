//! The node's own logs: plain-text host files and the systemd journal, next to the
//! container logs. Journal files are real ones, written by Debian's
//! `systemd-journal-remote` from the export format; the agent is the real binary and
//! Elasticsearch is osmem-server. Each test asserts the exact documents, no duplicate.

use crate::agent::{kill9, sigterm, Node};
use crate::util::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

/// `systemd-journal-remote`, which `.ci/setup-deps` installs; `None` (with a message)
/// where it is missing outside CI.
fn journal_remote() -> Option<PathBuf> {
    let found = [
        "/lib/systemd/systemd-journal-remote",
        "/usr/lib/systemd/systemd-journal-remote",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-journal-remote is not installed: run .ci/setup-deps"
        );
        eprintln!("skipping: systemd-journal-remote is not installed (run .ci/setup-deps)");
    }
    found
}

const BOOT: &str = "0123456789abcdef0123456789abcdef";

/// One journal entry to write: realtime (µs), unit, message.
struct Entry<'a> {
    usec: u64,
    unit: &'a str,
    message: String,
}

/// Appends `entries` to the journal file `file` (created if missing), as journald
/// would have written them.
fn journal_append(tool: &Path, file: &Path, entries: &[Entry<'_>]) {
    let mut export = String::new();
    for e in entries {
        let ident = e.unit.trim_end_matches(".service");
        export += &format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={BOOT}\n_HOSTNAME=node-1\n",
            e.usec, e.usec
        );
        if e.unit == "kernel" {
            export += "_TRANSPORT=kernel\nSYSLOG_IDENTIFIER=kernel\nPRIORITY=4\n";
        } else {
            export += &format!(
                "_SYSTEMD_UNIT={}\n_TRANSPORT=stdout\nSYSLOG_IDENTIFIER={ident}\n_PID=42\nPRIORITY=6\n",
                e.unit
            );
        }
        export += &format!("MESSAGE={}\n\n", e.message);
    }
    journal_write(tool, file, &export);
}

/// Appends entries in journald's export format to the journal file `file`.
fn journal_write(tool: &Path, file: &Path, export: &str) {
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mut child = Command::new(tool)
        .arg("-o")
        .arg(file)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(export.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "systemd-journal-remote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `n` entries from `first` on (a message each, `<tag> <i>`), alternating kubelet,
/// sshd (not shipped by default) and the kernel.
fn entries(tag: &str, first: u64, n: u64) -> Vec<Entry<'static>> {
    let base = now_usec();
    (first..first + n)
        .map(|i| Entry {
            usec: base + i,
            unit: ["kubelet.service", "sshd.service", "kernel"][(i % 3) as usize],
            message: format!("{tag} {i}"),
        })
        .collect()
}

fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// The messages of `entries` the default units ship.
fn shipped(entries: &[Entry<'_>]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.unit != "sshd.service")
        .map(|e| e.message.clone())
        .collect()
}

/// Every document's `_source` in indices matching `pattern` (at most 10 000).
fn es_sources(url: &str, pattern: &str) -> Vec<serde_json::Value> {
    es_search(url, pattern, None)
        .into_iter()
        .map(|h| h["_source"].clone())
        .collect()
}

/// Waits until `node-*` holds exactly `want` (as a multiset of `log`), then checks it.
fn assert_node_docs(node: &Node, es: &str, want: &[String]) {
    let mut want = want.to_vec();
    want.sort();
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let mut got = es_logs(es, "node-*");
        got.sort();
        if got == want {
            return;
        }
        if got.len() > want.len() || std::time::Instant::now() > deadline {
            let log = node.agent_log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).take(5).collect();
            panic!(
                "node-* holds {} documents, {} wanted; missing e.g. {missing:?}\nagent log tail:\n{}",
                got.len(),
                want.len(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The environment that points the agent at a node tree under `root`.
fn node_env(root: &Path, files: &str) -> Vec<(String, String)> {
    vec![
        ("SHIPPER_NODE_ROOT".into(), root.display().to_string()),
        ("SHIPPER_NODE_FILES".into(), files.into()),
        ("SHIPPER_NODE_JOURNAL_POLL_MS".into(), "50".into()),
        ("SHIPPER_KUBERNETES_NODE_NAME".into(), "node-1".into()),
        ("SHIPPER_KUBERNETES_ENABLED".into(), "false".into()),
    ]
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The journal fuzz target's base file is there and read whole (its empty input is the
/// unmodified journal: five entries, five documents, checked inside).
#[test]
fn the_fuzzed_journal_is_the_example_one() {
    let dir = example().join("host/var/log/journal");
    let machine = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(machine.join("system.journal").is_file());
    shipper::fuzzing::journal_file(b"");
}

/// A dry-run over the example node, its host files and journal included.
fn example_dry_run() -> Command {
    let ex = example();
    let mut cmd = shipper();
    cmd.arg("--dry-run")
        .arg("--docker-root")
        .arg(ex.join("docker/containers"))
        .arg("--pods-root")
        .arg(ex.join("pods"))
        .arg("--node-root")
        .arg(ex.join("host"));
    cmd
}

#[test]
fn dry_run_over_sample_host_files_and_journal() {
    let ex = example();
    let o = run(example_dry_run()
        .arg("--pods")
        .arg(ex.join("pods.json"))
        .env("SHIPPER_KUBERNETES_NODE_NAME", "node-1"));
    assert!(o.status.success(), "{}", stderr(&o));
    let docs: Vec<serde_json::Value> = bulk_pairs(&o.stdout)
        .into_iter()
        .filter(|(action, _)| {
            action["create"]["_index"]
                .as_str()
                .is_some_and(|i| i.starts_with("node-"))
        })
        .map(|(_, d)| d)
        .collect();
    let by_path =
        |p: &str| -> Vec<&serde_json::Value> { docs.iter().filter(|d| d["path"] == p).collect() };
    let kubelet = by_path("/var/log/kubelet.log");
    assert_eq!(kubelet.len(), 8, "the live file, each line a record");
    assert!(
        by_path("/var/log/kubelet.log.1").is_empty(),
        "a rotation is no source"
    );
    assert_eq!(by_path("/var/log/containerd.log").len(), 2);
    assert_eq!(by_path("/var/log/kube-proxy.log").len(), 6);
    // klog's header has the year; its other lines take the header's time; klog's stamps
    // take the year from it; a line without one takes the line before's.
    let t = |d: &serde_json::Value| d["@timestamp"].as_str().unwrap().to_owned();
    assert_eq!(t(kubelet[0]), "2024-07-08T03:42:50.000000000Z");
    assert_eq!(t(kubelet[3]), "2024-07-08T03:42:50.000000000Z");
    assert_eq!(t(kubelet[4]), "2024-07-08T03:42:57.123456000Z");
    assert_eq!(kubelet[6]["log"], "goroutine 1 [running]:");
    assert_eq!(t(kubelet[6]), t(kubelet[5]));
    assert_eq!(
        t(by_path("/var/log/containerd.log")[0]),
        "2024-07-08T03:42:56.987654321Z"
    );
    for d in by_path("/var/log/kubelet.log") {
        assert_eq!(d["kubernetes"]["host"], "node-1");
        assert!(d.get("stream").is_none(), "plain text has no stream");
    }
    // The journal: kubelet, kernel and containerd entries; not sshd's.
    let journal: Vec<&serde_json::Value> =
        docs.iter().filter(|d| d.get("systemd").is_some()).collect();
    let units: Vec<&str> = journal
        .iter()
        .map(|d| d["systemd"]["unit"].as_str().unwrap())
        .collect();
    assert_eq!(
        units,
        [
            "kubelet.service",
            "kernel",
            "containerd.service",
            "kubelet.service"
        ]
    );
    let oom = journal[1];
    assert_eq!(oom["priority"], 3);
    assert_eq!(oom["level"], "error");
    assert_eq!(oom["@timestamp"], "2024-07-08T03:42:02.000000000Z");
    assert!(oom["log"].as_str().unwrap().contains("out of memory"));
    assert_eq!(journal[0]["systemd"]["pid"], 1234);
    assert_eq!(journal[0]["syslog"]["identifier"], "kubelet");
    assert_eq!(journal[0]["kubernetes"]["host"], "node-1");
    let sum = summary(&stderr(&o));
    assert_eq!(sum["journal_entries"], 5);
    assert_eq!(sum["journal_docs"], 4);
    assert_eq!(sum["journal_errors"], 0);
    // Every id once.
    let ids: std::collections::BTreeSet<String> = bulk_pairs(&o.stdout)
        .iter()
        .map(|(a, _)| a["create"]["_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), bulk_pairs(&o.stdout).len());
    // Turned off, the same run has no node document.
    let off = run(example_dry_run().arg("--no-node-logs"));
    assert!(off.status.success());
    assert!(!String::from_utf8_lossy(&off.stdout).contains("node-2024"));
}

/// `[[rules]]` select node logs by kind and path or unit, for the same settings as
/// container logs: exclusion, a line filter, redaction, the index.
#[test]
fn rules_select_host_files_and_journal_units() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("shipper.toml");
    write(
        &cfg,
        br#"
[redact]
builtins = []
[redact.patterns.pod]
regex = 'pod="([^"]+)"'

[[rules]]
name = "no-proxy"
source = "host"
path = "/var/log/kube-proxy*"
exclude = true

[[rules]]
name = "kubelet-errors"
source = "host"
path = "/var/log/kubelet.log"
keep = '^E'

[[rules]]
name = "kernel-apart"
source = "journal"
unit = "kernel"
index = "node-kernel"

[[rules]]
name = "no-containerd"
source = "journal"
unit = "containerd.*"
exclude = true

[[rules]]
name = "containers-are-not-node-logs"
exclude = true
"#,
    );
    let o = run(example_dry_run().arg("--config").arg(&cfg));
    assert!(o.status.success(), "{}", stderr(&o));
    let pairs = bulk_pairs(&o.stdout);
    let index = |a: &serde_json::Value| a["create"]["_index"].as_str().unwrap().to_owned();
    let paths: Vec<&str> = pairs
        .iter()
        .filter_map(|(_, d)| d["path"].as_str())
        .collect();
    assert!(!paths.contains(&"/var/log/kube-proxy.log"), "excluded");
    let kubelet: Vec<&serde_json::Value> = pairs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["path"] == "/var/log/kubelet.log")
        .collect();
    assert_eq!(kubelet.len(), 1, "only the error line is kept: {kubelet:?}");
    assert_eq!(
        kubelet[0]["log"],
        r#"E0708 03:42:58.000321    1234 pod_workers.go:1298] "Error syncing pod, skipping" err="CrashLoopBackOff" pod="[REDACTED]""#
    );
    assert_eq!(
        paths
            .iter()
            .filter(|p| **p == "/var/log/containerd.log")
            .count(),
        2
    );
    let units: Vec<(String, &str)> = pairs
        .iter()
        .filter(|(_, d)| d.get("systemd").is_some())
        .map(|(a, d)| (index(a), d["systemd"]["unit"].as_str().unwrap()))
        .collect();
    assert_eq!(
        units,
        [
            ("node-2024.07.08".to_owned(), "kubelet.service"),
            ("node-kernel-2024.07.08".to_owned(), "kernel"),
            ("node-2024.07.08".to_owned(), "kubelet.service"),
        ]
    );
    assert!(
        pairs.iter().all(|(a, _)| index(a).starts_with("node")),
        "the catch-all rule excludes container logs only"
    );
    let sum = summary(&stderr(&o));
    assert_eq!(sum["records_dropped"], 7, "kubelet.log's other lines");
}

/// More entries than one poll reads (4096): a dry-run reads them all; systemd's own
/// messages about a chosen unit (PID 1, `UNIT=`) are that unit's, as `journalctl -u`
/// has them; units are configured without their `.service`.
#[test]
fn dry_run_reads_a_long_journal_and_systemds_words_about_a_unit() {
    let Some(tool) = journal_remote() else { return };
    let t = tempfile::tempdir().unwrap();
    let file = t
        .path()
        .join("var/log/journal/5f2c0b1e9d8a4c7b8e6f1a2b3c4d5e6f/system.journal");
    let many = entries("many", 0, 9000);
    journal_append(&tool, &file, &many);
    let mut export = String::new();
    export += &format!(
        "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP=1\n_BOOT_ID={BOOT}\n_PID=1\n_UID=0\n_SYSTEMD_UNIT=init.scope\n_TRANSPORT=journal\nSYSLOG_IDENTIFIER=systemd\nUNIT=kubelet.service\nPRIORITY=4\nMESSAGE=kubelet.service: Main process exited, code=exited, status=1/FAILURE\n\n",
        now_usec() + 100_000
    );
    journal_write(&tool, &file, &export);
    let o = run(shipper()
        .args([
            "--dry-run",
            "--docker-root",
            "/nonexistent",
            "--pods-root",
            "/nonexistent",
        ])
        .arg("--node-root")
        .arg(t.path())
        .env("SHIPPER_NODE_FILES", "")
        .env("SHIPPER_NODE_JOURNAL_UNITS", "kubelet,kernel"));
    assert!(o.status.success(), "{}", stderr(&o));
    let docs: Vec<serde_json::Value> = bulk_pairs(&o.stdout).into_iter().map(|(_, d)| d).collect();
    assert_eq!(
        docs.len(),
        shipped(&many).len() + 1,
        "every chosen entry, past a page"
    );
    let last = docs.last().unwrap();
    assert_eq!(last["systemd"]["unit"], "kubelet.service");
    assert!(last["log"]
        .as_str()
        .unwrap()
        .contains("Main process exited"));
    let sum = summary(&stderr(&o));
    assert_eq!(sum["journal_entries"], 9001);
}

#[test]
fn journal_through_appends_rotation_vacuum_and_restarts() {
    let Some(tool) = journal_remote() else { return };
    let Some(es) = es() else { return };
    let node = Node::new();
    let root = node.data().with_file_name("root");
    let dir = root.join("var/log/journal/5f2c0b1e9d8a4c7b8e6f1a2b3c4d5e6f");
    let live = dir.join("system.journal");
    let env = node_env(&root, "");
    let mut want = Vec::new();

    let first = entries("boot", 0, 30);
    journal_append(&tool, &live, &first);
    want.extend(shipped(&first));
    let mut agent = node.agent(&es.url, "c", &env_refs(&env));
    assert_node_docs(&node, &es.url, &want);

    // Appends to the active file are read as they come.
    let more = entries("append", 30, 30);
    journal_append(&tool, &live, &more);
    want.extend(shipped(&more));
    assert_node_docs(&node, &es.url, &want);

    // Rotation: the active file archived, a new one started.
    std::fs::rename(
        &live,
        dir.join("system@0001-0000000000000001-0000000000000001.journal"),
    )
    .unwrap();
    let rotated = entries("rotated", 60, 30);
    journal_append(&tool, &live, &rotated);
    want.extend(shipped(&rotated));
    assert_node_docs(&node, &es.url, &want);

    // Stopped: more entries and the oldest file vacuumed; the position survives.
    assert!(sigterm(&mut agent).success());
    let down = entries("down", 90, 30);
    journal_append(&tool, &live, &down);
    want.extend(shipped(&down));
    std::fs::remove_file(dir.join("system@0001-0000000000000001-0000000000000001.journal"))
        .unwrap();
    let mut agent = node.agent(&es.url, "c", &env_refs(&env));
    assert_node_docs(&node, &es.url, &want);
    let addr = node.metrics_addr();
    assert_eq!(metric(&addr, "shipper_journal_cursor_lost_total"), 0.0);

    // Stopped again: the file holding the position and entries never read are both
    // vacuumed; a new file follows. Reading goes on from it, and the gap is counted.
    assert!(sigterm(&mut agent).success());
    let never = entries("never", 120, 30);
    journal_append(&tool, &live, &never);
    std::fs::remove_file(&live).unwrap();
    let after = entries("after", 150, 30);
    journal_append(&tool, &live, &after);
    want.extend(shipped(&after));
    let mut agent = node.agent(&es.url, "c", &env_refs(&env));
    assert_node_docs(&node, &es.url, &want);
    let addr = node.metrics_addr();
    wait_until("the lost position counted", LONG, || {
        metric(&addr, "shipper_journal_cursor_lost_total") == 1.0
    });
    assert_eq!(metric(&addr, "shipper_journal_errors_total"), 0.0);
    // sshd's entries were read, not shipped.
    assert_eq!(
        metric(&addr, "shipper_journal_documents_total") as usize,
        shipped(&after).len()
    );
    let docs = es_sources(&es.url, "node-*");
    let kernel = docs
        .iter()
        .find(|d| d["systemd"]["unit"] == "kernel")
        .expect("a kernel entry");
    assert_eq!(kernel["level"], "warn");
    assert_eq!(kernel["kubernetes"]["host"], "node-1");
    assert!(sigterm(&mut agent).success());
}

#[test]
fn host_files_rotated_with_the_same_first_line_and_copytruncated_lose_nothing() {
    let Some(es) = es() else { return };
    let node = Node::new();
    let root = node.data().with_file_name("root");
    let log = root.join("var/log/app.log");
    let env = node_env(&root, "/var/log/app.log");
    let env: Vec<(String, String)> = env
        .into_iter()
        .chain([("SHIPPER_NODE_JOURNAL".into(), "false".into())])
        .collect();
    // Every file starts with the same header: first lines cannot tell them apart.
    const HEADER: &str = "# app log, format 1";
    let mut want: Vec<String> = Vec::new();
    let mut n = 0;
    let mut lines = |k: usize, want: &mut Vec<String>| -> String {
        let mut s = String::new();
        for _ in 0..k {
            n += 1;
            let line = format!("Jul  8 03:42:57 node-1 app[1]: line {n}");
            s += &line;
            s += "\n";
            want.push(line);
        }
        s
    };
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let body = lines(20, &mut want);
    write(&log, format!("{HEADER}\n{body}").as_bytes());
    want.push(HEADER.into());
    let mut agent = node.agent(&es.url, "c", &env_refs(&env));
    assert_node_docs(&node, &es.url, &want);

    // logrotate's rename + create: a new file, the same first line.
    for round in 0..3 {
        std::fs::rename(&log, root.join(format!("var/log/app.log.{}", round + 1))).unwrap();
        let body = lines(15, &mut want);
        write(&log, format!("{HEADER}\n{body}").as_bytes());
        want.push(HEADER.into());
        assert_node_docs(&node, &es.url, &want);
    }

    // copytruncate: copied aside, truncated in place, written on.
    let tail = lines(10, &mut want);
    append(&log, tail.as_bytes());
    assert_node_docs(&node, &es.url, &want);
    std::fs::copy(&log, root.join("var/log/app.log.copy")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    let body = lines(10, &mut want);
    append(&log, format!("{HEADER}\n{body}").as_bytes());
    want.push(HEADER.into());
    assert_node_docs(&node, &es.url, &want);

    // A restart sends nothing again.
    assert!(sigterm(&mut agent).success());
    let mut agent = node.agent(&es.url, "c", &env_refs(&env));
    let body = lines(1, &mut want);
    append(&log, body.as_bytes());
    assert_node_docs(&node, &es.url, &want);
    assert!(sigterm(&mut agent).success());
    let docs = es_sources(&es.url, "node-*");
    assert!(docs.iter().all(|d| d["path"] == "/var/log/app.log"));
}

#[test]
fn kill_9_while_containers_host_files_and_the_journal_are_written() {
    let Some(tool) = journal_remote() else { return };
    let Some(es) = es() else { return };
    let mut node = Node::new();
    let root = node.data().with_file_name("root");
    let host = root.join("var/log/kubelet.log");
    let journal = root.join("var/log/journal/5f2c0b1e9d8a4c7b8e6f1a2b3c4d5e6f/system.journal");
    let env = node_env(&root, "/var/log/kubelet.log");
    std::fs::create_dir_all(host.parent().unwrap()).unwrap();
    let mut want: Vec<String> = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut next = 0u64;
    let mut agent = node.agent(&es.url, "c", &env_refs(&env));
    for round in 0..12 {
        node.write(round % 3, 40, 8);
        let mut s = String::new();
        for _ in 0..25 {
            next += 1;
            let line = format!("I0708 03:42:57.{next:06}    1234 kubelet.go:1] line {next}");
            s += &line;
            s += "\n";
            want.push(line);
        }
        append(&host, s.as_bytes());
        *counts.entry("host").or_default() += 25;
        if round == 6 {
            std::fs::rename(&host, root.join("var/log/kubelet.log.1")).unwrap();
        }
        let batch = entries(&format!("j{round}"), u64::from(round as u32) * 30, 30);
        journal_append(&tool, &journal, &batch);
        want.extend(shipped(&batch));
        // Killed at once, or after a moment of shipping.
        if round % 2 == 1 {
            wait_until("some progress", LONG, || es_count(&es.url, "node-*") > 0);
        }
        kill9(&mut agent);
        agent = node.agent(&es.url, "c", &env_refs(&env));
    }
    node.assert_all_indexed(&es.url, "c");
    assert_node_docs(&node, &es.url, &want);
    assert!(sigterm(&mut agent).success());
    assert!(counts["host"] == 300);
}
