//! `shipper --dry-run` end to end: the example tree against its checked-in output, and
//! the edge cases a real node produces.

use crate::util::*;
use serde_json::Value;
use std::path::Path;

fn example_cmd(with_pods: bool) -> std::process::Command {
    let mut cmd = shipper();
    cmd.current_dir(repo()).args([
        "--dry-run",
        "--docker-root",
        "examples/node/docker/containers",
        "--pods-root",
        "examples/node/pods",
    ]);
    if with_pods {
        cmd.args(["--pods", "examples/node/pods.json"]);
    }
    cmd
}

/// The README's first command, byte for byte against `tests/expected/example.ndjson`,
/// except host files' `_id`s: a host file's identity includes its inode and birth time
/// (unique on its node, different in every clone of the repository), so they read
/// `HOST-FILE` there, and are checked to be distinct. Regenerate with
/// `BLESS=1 cargo test example_tree`.
#[test]
fn example_tree_matches_expected_output() {
    let o = run(example_cmd(true).args(["--node-root", "examples/node/host"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let (stdout, host_ids) = mask_host_ids(&o.stdout);
    assert_eq!(host_ids.len(), 16, "the host files' lines");
    assert_eq!(
        host_ids
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        host_ids.len()
    );
    let expected_path = repo().join("tests/expected/example.ndjson");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&expected_path, &stdout).unwrap();
    }
    let expected = std::fs::read(&expected_path).expect("tests/expected/example.ndjson");
    assert!(
        stdout == expected,
        "dry-run output differs from {}",
        expected_path.display()
    );
    let s = summary(&stderr(&o));
    let want = [
        // 4 container logs, 3 host files (kubelet.log.1, a rotation, is not read).
        ("files_opened", 7),
        // 58 container lines, 16 host-file lines, 4 journal entries shipped (of 5).
        ("lines", 78),
        ("records", 66),
        ("journal_entries", 5),
        ("journal_docs", 4),
        ("partials_merged", 5),
        ("parse_errors", 2),
        ("truncated", 0),
        ("read_errors", 0),
        ("bytes", 67505),
        // The Go panic's 8 lines are one document.
        ("multiline_groups", 1),
        ("multiline_lines_joined", 7),
        // coredns's and checkout's JSON bodies.
        ("fields_parsed", 2),
    ];
    for (k, v) in want {
        assert_eq!(s[k], v, "summary {k}");
    }
}

#[test]
fn example_tree_semantics() {
    let o = run(&mut example_cmd(true));
    let pairs = bulk_pairs(&o.stdout);
    let ids: std::collections::HashSet<&Value> =
        pairs.iter().map(|(a, _)| &a["create"]["_id"]).collect();
    assert_eq!(
        ids.len(),
        pairs.len(),
        "ids are unique: the symlinked file was read once"
    );
    let docs: Vec<&Value> = pairs.iter().map(|(_, d)| d).collect();
    let by_len = |n: usize| {
        docs.iter()
            .filter(|d| d["log"].as_str().unwrap().len() == n)
            .count()
    };
    assert_eq!(by_len(16384), 1, "the 16384-byte record is one document");
    assert_eq!(
        by_len(40000),
        1,
        "the 40000-byte record split by dockerd is merged"
    );
    let web = docs
        .iter()
        .filter(|d| d["kubernetes"]["pod_name"] == "web-7d9f8b6c5-x2x4q")
        .count();
    assert_eq!(web, 19);
    let web_doc = docs
        .iter()
        .find(|d| d["kubernetes"]["pod_name"] == "web-7d9f8b6c5-x2x4q")
        .unwrap();
    assert_eq!(
        web_doc["kubernetes"]["labels"]["app_kubernetes_io/name"], "web",
        "labels are de-dotted"
    );
    assert_eq!(web_doc["kubernetes"]["host"], "node-1");
    assert_eq!(web_doc["shipper"]["metadata"], "complete");
    let errors: Vec<&&Value> = docs
        .iter()
        .filter(|d| d["shipper"]["parse_error"].is_string())
        .collect();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["log"], "{\"log\":\"half a line wri");
    assert!(
        docs.iter()
            .any(|d| d["log"].as_str().unwrap().contains('\u{fffd}')),
        "invalid UTF-8 replaced"
    );
    let next_day = pairs
        .iter()
        .filter(|(a, _)| a["create"]["_index"] == "logstash-2024.07.09")
        .count();
    assert_eq!(next_day, 2);
    let crio: Vec<&&Value> = docs
        .iter()
        .filter(|d| d["kubernetes"]["container_name"] == "node-exporter")
        .collect();
    assert_eq!(
        crio[0]["@timestamp"], "2024-07-08T03:42:57.123456789Z",
        "+08:00 normalised to UTC"
    );
    for (a, d) in &pairs {
        let ts = d["@timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z'));
        assert_eq!(
            a["create"]["_index"].as_str().unwrap(),
            format!("logstash-{}", ts[..10].replace('-', "."))
        );
    }
}

#[test]
fn without_pod_list_paths_and_docker_config_still_name_the_pod() {
    let o = run(&mut example_cmd(false));
    assert!(o.status.success());
    for (_, d) in bulk_pairs(&o.stdout) {
        assert_eq!(d["shipper"]["metadata"], "partial", "{d}");
        for k in ["namespace_name", "pod_name", "container_name"] {
            assert!(d["kubernetes"][k].is_string(), "{k} missing in {d}");
        }
        assert!(d["kubernetes"].get("labels").is_none());
    }
}

#[test]
fn dry_run_writes_no_checkpoint() {
    let data = tempfile::tempdir().unwrap();
    let o = run(example_cmd(false).arg("--data-dir").arg(data.path()));
    assert!(o.status.success());
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}

fn dry_run_docker(
    root: &Path,
    extra: &[&str],
) -> (Vec<(Value, Value)>, std::collections::BTreeMap<String, u64>) {
    let o = run(shipper()
        .args(["--dry-run", "--pods-root", "/nonexistent", "--docker-root"])
        .arg(root)
        .args(extra));
    assert!(o.status.success(), "{}", stderr(&o));
    (bulk_pairs(&o.stdout), summary(&stderr(&o)))
}

/// dockerd's real form of a 16384-byte message: a full 16 KiB partial, then `"\n"`.
#[test]
fn partials_exactly_16k_and_1mib() {
    let dir = tempfile::tempdir().unwrap();
    let id = "c0ffee";
    let t = "2024-07-08T03:42:57.000000001Z";
    let mut file = String::new();
    let exact = "a".repeat(16384);
    file += &docker_line(&exact, "stdout", t);
    file += &docker_line("\n", "stdout", t);
    let big: String = (0..(1 << 20))
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    for (n, chunk) in big.as_bytes().chunks(16384).enumerate() {
        let mut s = String::from_utf8(chunk.to_vec()).unwrap();
        if n == (1 << 20) / 16384 - 1 {
            s.push('\n');
        }
        file += &docker_line(&s, "stderr", t);
    }
    file += &docker_line("after\n", "stdout", t);
    write(
        &dir.path().join(id).join(format!("{id}-json.log")),
        file.as_bytes(),
    );
    let (pairs, s) = dry_run_docker(dir.path(), &[]);
    let logs: Vec<&str> = pairs
        .iter()
        .map(|(_, d)| d["log"].as_str().unwrap())
        .collect();
    assert_eq!(logs.len(), 3);
    assert_eq!(logs[0], exact);
    assert_eq!(logs[1], big);
    assert_eq!(logs[2], "after");
    assert_eq!(s["partials_merged"], 1 + 63);
    assert!(pairs
        .iter()
        .all(|(_, d)| d["shipper"].get("truncated").is_none()));
}

#[test]
fn records_over_the_cap_are_truncated_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("ns_pod_uid/c");
    let t = "2024-07-08T03:42:57.000000001Z";
    let mut file = Vec::new();
    for _ in 0..64 {
        file.extend_from_slice(format!("{t} stdout P {}\n", "é".repeat(8192)).as_bytes());
    }
    file.extend_from_slice(format!("{t} stdout F end\n").as_bytes());
    // One overlong physical line with no P tag, then a normal one.
    file.extend_from_slice(format!("{t} stderr F {}\n", "x".repeat(3 << 20)).as_bytes());
    file.extend_from_slice(format!("{t} stdout F next\n").as_bytes());
    write(&pod.join("0.log"), &file);
    let o = run(shipper()
        .args([
            "--dry-run",
            "--docker-root",
            "/nonexistent",
            "--max-record-bytes",
            "100001",
            "--pods-root",
        ])
        .arg(dir.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let pairs = bulk_pairs(&o.stdout);
    let docs: Vec<&Value> = pairs.iter().map(|(_, d)| d).collect();
    assert_eq!(docs.len(), 3, "{:?}", summary(&stderr(&o)));
    let first = docs[0]["log"].as_str().unwrap();
    assert!(
        first.len() <= 100001 && first.len() >= 100000 - 4,
        "{}",
        first.len()
    );
    assert!(
        first.chars().all(|c| c == 'é'),
        "cut on a character boundary"
    );
    assert_eq!(docs[0]["shipper"]["truncated"], true);
    assert_eq!(docs[1]["shipper"]["truncated"], true);
    assert_eq!(docs[1]["stream"], "stderr");
    assert!(docs[1]["log"].as_str().unwrap().len() <= 100001);
    assert_eq!(docs[2]["log"], "next");
    assert!(docs[2]["shipper"].get("truncated").is_none());
    let s = summary(&stderr(&o));
    assert_eq!((s["truncated"], s["records"], s["parse_errors"]), (2, 3, 0));
    assert!(s["overlong_bytes_skipped"] > 0);
}

/// DESIGN: a line that cannot be parsed takes the timestamp of the nearest preceding good
/// record of its file, else the next good one.
#[test]
fn garbage_takes_a_neighbours_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let file = "garbage first\n2024-07-09T01:02:03.5Z stdout F good\n\x00\x01 more garbage\n";
    write(&dir.path().join("ns_pod_uid/c/0.log"), file.as_bytes());
    let o = run(shipper()
        .args(["--dry-run", "--docker-root", "/nonexistent", "--pods-root"])
        .arg(dir.path()));
    let pairs = bulk_pairs(&o.stdout);
    assert_eq!(pairs.len(), 3);
    for (a, d) in &pairs {
        assert_eq!(d["@timestamp"], "2024-07-09T01:02:03.5Z", "{d}");
        assert_eq!(a["create"]["_index"], "logstash-2024.07.09");
    }
    assert_eq!(pairs[0].1["log"], "garbage first");
    assert_eq!(pairs[2].1["log"], "\u{0}\u{1} more garbage");
    assert_eq!(summary(&stderr(&o))["parse_errors"], 2);
}

#[test]
fn unterminated_last_line_waits() {
    let dir = tempfile::tempdir().unwrap();
    let file = "2024-07-09T01:02:03Z stdout F done\n2024-07-09T01:02:04Z stdout F still being wri";
    write(&dir.path().join("ns_pod_uid/c/0.log"), file.as_bytes());
    let o = run(shipper()
        .args(["--dry-run", "--docker-root", "/nonexistent", "--pods-root"])
        .arg(dir.path()));
    assert_eq!(bulk_pairs(&o.stdout).len(), 1);
    assert_eq!(summary(&stderr(&o))["incomplete_bytes"], 45);
}

/// `--follow` keeps reading: appended lines, a rename rotation and a new container.
#[test]
fn follow_picks_up_appends_rotations_and_new_files() {
    use shipper::{dry_run, DryRun};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let log = |id: &str| root.join(id).join(format!("{id}-json.log"));
    let t = "2024-07-08T03:42:57Z";
    write(&log("aaa"), docker_line("one\n", "stdout", t).as_bytes());

    let mut cfg = shipper::config::Config::default();
    cfg.input.docker_root = root.clone();
    cfg.input.pods_root = root.join("no-pods");
    cfg.input.rescan_interval_ms = 50;
    // Long enough that the rotated file is still open when its last line comes (the
    // test writes it after the rename); the test stops the run before it closes.
    cfg.input.drain_grace_ms = 5000;
    let out = Shared::default();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (mut out, stop) = (out.clone(), stop.clone());
        std::thread::spawn(move || {
            dry_run(
                &cfg,
                &DryRun {
                    pods: None,
                    follow: true,
                    explain: false,
                },
                &mut out,
                &stop,
            )
            .unwrap()
        })
    };
    let logs = || -> Vec<String> {
        bulk_pairs(&out.0.lock().unwrap())
            .iter()
            .map(|(_, d)| d["log"].as_str().unwrap().to_owned())
            .collect()
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while logs().len() < n {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} records, have {:?}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(1);
    let append = |path: &Path, s: &str| {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(s.as_bytes())
            .unwrap();
    };
    append(&log("aaa"), &docker_line("two\n", "stdout", t));
    wait_for(2);
    // Rotation: the old file gets a last line after the rename, then a new file appears.
    std::fs::rename(log("aaa"), root.join("aaa/aaa-json.log.1")).unwrap();
    append(
        &root.join("aaa/aaa-json.log.1"),
        &docker_line("three\n", "stdout", t),
    );
    write(
        &log("aaa"),
        docker_line("four\n", "stdout", "2024-07-08T03:42:58Z").as_bytes(),
    );
    write(&log("bbb"), docker_line("five\n", "stderr", t).as_bytes());
    wait_for(5);
    stop.store(true, Ordering::Relaxed);
    let stats = handle.join().unwrap();
    let mut got = logs();
    got.sort();
    assert_eq!(got, ["five", "four", "one", "three", "two"]);
    assert_eq!(shipper::Stats::get(&stats.files_rotated), 1);
}

/// Labels `app` and `app.kubernetes.io/name` on one pod: the de-dotted documents index into
/// a real server, under the agent's template, without a mapping conflict.
#[test]
fn labels_app_and_app_kubernetes_io_name_index_without_conflict() {
    let Some(es) = es() else { return };
    let template = br#"{"index_patterns":["logstash-*"],"priority":200,"template":{"mappings":{"dynamic_templates":[{"kubernetes_labels":{"path_match":"kubernetes.labels.*","mapping":{"type":"keyword"}}}]}}}"#;
    let r = http()
        .put(format!("{}/_index_template/shipper-logstash", es.url))
        .header("content-type", "application/json")
        .body(template.to_vec())
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let o = run(&mut example_cmd(true));
    assert!(o.status.success());
    let pairs = bulk_pairs(&o.stdout);
    assert!(pairs
        .iter()
        .any(|(_, d)| d["kubernetes"]["labels"]["app"] == "web"
            && d["kubernetes"]["labels"]["app_kubernetes_io/name"] == "web"));
    let r: Value = http()
        .post(format!("{}/_bulk", es.url))
        .header("content-type", "application/x-ndjson")
        .body(o.stdout.clone())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["errors"], false, "{r}");
    assert_eq!(es_count(&es.url, "logstash-*"), pairs.len() as u64);
}

/// The example tree's counters as `/metrics` renders them: exact lines.
#[test]
fn example_tree_counters_in_prometheus_text() {
    let mut cfg = shipper::config::Config::default();
    cfg.input.docker_root = repo().join("examples/node/docker/containers");
    cfg.input.pods_root = repo().join("examples/node/pods");
    let opts = shipper::DryRun {
        pods: Some(repo().join("examples/node/pods.json")),
        follow: false,
        explain: false,
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stats = shipper::dry_run(&cfg, &opts, &mut std::io::sink(), &stop).unwrap();
    let text = shipper::Metrics::new(stats, vec![]).unwrap().render();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    for want in [
        "shipper_files_opened_total 4",
        "shipper_files_watched 4",
        "shipper_lines_read_total 58",
        "shipper_read_bytes_total 66396",
        "shipper_records_read_total 46",
        "shipper_multiline_groups_total 1",
        "shipper_multiline_lines_joined_total 7",
        "shipper_fields_total{outcome=\"parsed\"} 2",
        "shipper_partial_lines_merged_total 5",
        "shipper_records_parse_error_total 2",
        "shipper_records_truncated_total 0",
        "shipper_read_errors_total 0",
        "shipper_records_total{outcome=\"excluded\"} 0",
        "shipper_records_total{outcome=\"indexed\"} 0",
        "shipper_bulk_requests_total{result=\"success\"} 0",
        "shipper_bulk_request_duration_seconds_count 0",
        // Every pod is in the pod list.
        "shipper_metadata_total{status=\"complete\"} 46",
        "shipper_metadata_total{status=\"partial\"} 0",
        "shipper_metadata_total{status=\"none\"} 0",
    ] {
        assert!(lines.contains(&want), "missing `{want}` in:\n{text}");
    }
}

/// A `*.log` symlink under a root that leads outside the roots (to a secret, say) is not
/// read: skipped, counted as a read error and logged; its neighbours are read.
#[test]
fn a_symlink_leading_outside_the_roots_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("etc/shadow");
    write(&secret, b"2024-07-09T01:02:03Z stdout F root:secret-hash\n");
    let c = dir.path().join("pods/ns_pod_uid/app");
    write(&c.join("1.log"), b"2024-07-09T01:02:03Z stdout F fine\n");
    std::os::unix::fs::symlink(&secret, c.join("0.log")).unwrap();
    let o = run(shipper()
        .args(["--dry-run", "--docker-root", "/nonexistent", "--pods-root"])
        .arg(dir.path().join("pods")));
    let logs: Vec<String> = bulk_pairs(&o.stdout)
        .iter()
        .map(|(_, d)| d["log"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(logs, ["fine"]);
    let err = stderr(&o);
    assert_eq!(summary(&err)["read_errors"], 1);
    assert!(err.contains("outside the log roots"), "{err}");
}

/// `ndjson` with the `_id` of every host-file document (one with a `path`) replaced by
/// `HOST-FILE`, and those ids.
fn mask_host_ids(ndjson: &[u8]) -> (Vec<u8>, Vec<String>) {
    let text = String::from_utf8_lossy(ndjson);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::new();
    let mut ids = Vec::new();
    for pair in lines.chunks(2) {
        let [action, doc] = pair else {
            out.extend(pair.iter().copied());
            continue;
        };
        let is_host = serde_json::from_str::<Value>(doc).is_ok_and(|d| d.get("path").is_some());
        match (is_host, action.find(r#""_id":""#)) {
            (true, Some(at)) => {
                let start = at + r#""_id":""#.len();
                let end = start + action[start..].find('"').unwrap();
                ids.push(action[start..end].to_owned());
                out.push_str(&action[..start]);
                out.push_str("HOST-FILE");
                out.push_str(&action[end..]);
            }
            _ => out.push_str(action),
        }
        out.push_str(doc);
    }
    (out.into_bytes(), ids)
}
