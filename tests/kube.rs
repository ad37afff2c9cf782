//! Kubernetes metadata end to end: the dry-run (and the agent's watch) with the real
//! `kube` client against the loopback API server in `kube_api.rs`. Each scenario
//! asserts the exact documents produced.

use crate::kube_api::{namespace, pod, wait_until, FakeApi, Kind};
use crate::util::*;
use serde_json::{json, Value};
use shipper::config::Config;
use shipper::Stats;
use shipper::{dry_run, DryRun};
use shipper::{spawn_watch, ApiSource, WatchOptions};
use shipper::{KubeCache, SNAPSHOT_FILE};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODE: &str = "node-1";
const T: &str = "2024-07-08T03:42:57.000000001Z";
/// Generous bound for anything that crosses the loopback API and the tailer.
const WAIT: Duration = Duration::from_secs(20);

/// A node's log roots in a temp dir.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        std::fs::create_dir_all(dir.path().join("pods")).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        Node { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    /// `<pods>/<ns>_<pod>_<uid>/<container>/<n>.log`
    fn cri(&self, ns: &str, pod: &str, uid: &str, container: &str, n: u32) -> PathBuf {
        self.path()
            .join("pods")
            .join(format!("{ns}_{pod}_{uid}"))
            .join(container)
            .join(format!("{n}.log"))
    }

    fn docker(&self, id: &str) -> PathBuf {
        self.path()
            .join("docker")
            .join(id)
            .join(format!("{id}-json.log"))
    }

    fn config(&self, kubeconfig: Option<&Path>) -> Config {
        let mut cfg = Config::default();
        cfg.input.docker_root = self.path().join("docker");
        cfg.input.pods_root = self.path().join("pods");
        cfg.input.rescan_interval_ms = 50;
        cfg.input.drain_grace_ms = 0;
        cfg.agent.data_dir = self.data();
        cfg.kubernetes.node_name = NODE.into();
        cfg.kubernetes.pending_wait_ms = 2_000;
        if let Some(k) = kubeconfig {
            cfg.kubernetes.kubeconfig = k.to_owned();
        }
        cfg
    }
}

fn cri_lines(msgs: &[&str]) -> String {
    msgs.iter().map(|m| format!("{T} stdout F {m}\n")).collect()
}

fn docker_lines(msgs: &[&str]) -> String {
    msgs.iter()
        .map(|m| docker_line(&format!("{m}\n"), "stdout", T))
        .collect()
}

fn append(path: &Path, s: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(s.as_bytes())
        .unwrap();
}

/// Whether this process holds `path` open (the tailer runs in-process).
fn is_open(path: &Path) -> bool {
    let want = std::fs::canonicalize(path).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == want))
}

/// The metadata a document carries when its pod was found, as `kube_api::pod` builds it.
struct Expect<'a> {
    ns: &'a str,
    ns_uid: &'a str,
    ns_labels: Value,
    pod: &'a str,
    uid: &'a str,
    container: &'a str,
    container_id: &'a str,
    labels: Value,
}

impl Expect<'_> {
    fn doc(&self, log: &str) -> Value {
        let mut k = json!({
            "container_name": self.container,
            "namespace_name": self.ns,
            "pod_name": self.pod,
            "pod_id": self.uid,
            "pod_ip": "10.244.1.7",
            "host": NODE,
            "container_image": format!("registry.example/{}:1.0", self.container),
            "container_image_id": format!("registry.example/{}@sha256:{}", self.container, "ab".repeat(32)),
            "namespace_id": self.ns_uid,
            "owner": {"kind": "Deployment", "name": self.pod.split('-').next().unwrap()},
        });
        if self.labels.as_object().is_some_and(|l| !l.is_empty()) {
            k["labels"] = self.labels.clone();
        }
        if self.ns_labels.as_object().is_some_and(|l| !l.is_empty()) {
            k["namespace_labels"] = self.ns_labels.clone();
        }
        json!({
            "@timestamp": T,
            "log": log,
            "stream": "stdout",
            "docker": {"container_id": self.container_id},
            "kubernetes": k,
            "shipper": {"metadata": "complete"},
        })
    }
}

/// What a CRI path alone says.
fn partial_cri_doc(ns: &str, pod: &str, uid: &str, container: &str, log: &str) -> Value {
    json!({
        "@timestamp": T, "log": log, "stream": "stdout",
        "kubernetes": {"container_name": container, "namespace_name": ns, "pod_name": pod, "pod_id": uid},
        "shipper": {"metadata": "partial"},
    })
}

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

/// `shipper --dry-run --follow` running in a thread.
struct Following {
    out: Shared,
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Arc<Stats>>,
}

impl Following {
    fn start(cfg: Config) -> Following {
        let out = Shared::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (mut out, stop) = (out.clone(), stop.clone());
            std::thread::spawn(move || {
                let opts = DryRun {
                    pods: None,
                    follow: true,
                    explain: false,
                };
                dry_run(&cfg, &opts, &mut out, &stop).unwrap()
            })
        };
        Following { out, stop, handle }
    }

    fn docs(&self) -> Vec<Value> {
        bulk_pairs(&self.out.0.lock().unwrap())
            .into_iter()
            .map(|(_, d)| d)
            .collect()
    }

    /// Waits for at least `n` documents whose `log` starts with `prefix`; returns them.
    fn wait_docs(&self, prefix: &str, n: usize) -> Vec<Value> {
        let matching = || -> Vec<Value> {
            self.docs()
                .into_iter()
                .filter(|d| d["log"].as_str().unwrap_or("").starts_with(prefix))
                .collect()
        };
        wait_until(&format!("{n} documents `{prefix}*`"), WAIT, || {
            matching().len() >= n
        });
        matching()
    }

    fn stop(self) -> (Vec<Value>, Arc<Stats>) {
        self.stop.store(true, Ordering::Relaxed);
        let out = self.out.clone();
        let stats = self.handle.join().unwrap();
        let docs = bulk_pairs(&out.0.lock().unwrap())
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        (docs, stats)
    }
}

fn run_once(cfg: &Config) -> (Vec<Value>, Arc<Stats>) {
    let mut out = Vec::new();
    let stop = AtomicBool::new(false);
    let stats = dry_run(cfg, &DryRun::default(), &mut out, &stop).unwrap();
    (
        bulk_pairs(&out).into_iter().map(|(_, d)| d).collect(),
        stats,
    )
}

fn watches_open(api: &FakeApi) -> bool {
    api.count(Kind::Pod).1 >= 1 && api.count(Kind::Namespace).1 >= 1
}

/// A pod that starts after the agent: its first lines wait for the watch (other files
/// are not held up) and carry the full metadata.
#[test]
fn pod_created_after_start_is_enriched_from_its_first_line() {
    let node = Node::new();
    let api = FakeApi::start();
    api.apply(namespace("shop", "ns-shop", json!({"team": "payments"})));
    // A pod that was already there, to show other files are read while one waits.
    api.apply(pod(
        "shop",
        "db-0",
        "uid-db",
        NODE,
        &[("postgres", "c-db")],
        json!({}),
        json!({}),
    ));
    let db_log = node.cri("shop", "db-0", "uid-db", "postgres", 0);
    write(&db_log, cri_lines(&["db 1"]).as_bytes());
    let mut cfg = node.config(Some(&api.kubeconfig(node.path())));
    // The wait is what this test is about: a generous bound keeps it deterministic on
    // a loaded machine (the default is 2 s).
    cfg.kubernetes.pending_wait_ms = 10_000;
    let run = Following::start(cfg);
    wait_until("the watches to open", WAIT, || watches_open(&api));
    run.wait_docs("db", 1);

    let web_log = node.cri("shop", "web-7c4f9", "uid-web", "nginx", 0);
    write(&web_log, cri_lines(&["first", "second"]).as_bytes());
    wait_until("the tailer to open the new file", WAIT, || {
        is_open(&web_log)
    });
    // The file is open and its pod unknown: the chatty neighbour keeps flowing.
    append(&db_log, &cri_lines(&["db 2"]));
    run.wait_docs("db", 2);
    assert!(run.wait_docs("db", 2).len() == 2 && run.docs().len() == 2);
    api.apply(pod(
        "shop",
        "web-7c4f9",
        "uid-web",
        NODE,
        &[("nginx", "c-web")],
        json!({"app": "web"}),
        json!({}),
    ));
    run.wait_docs("", 4);
    let (docs, stats) = run.stop();
    let web = Expect {
        ns: "shop",
        ns_uid: "ns-shop",
        ns_labels: json!({"team": "payments"}),
        pod: "web-7c4f9",
        uid: "uid-web",
        container: "nginx",
        container_id: "c-web",
        labels: json!({"app": "web"}),
    };
    let db = Expect {
        pod: "db-0",
        uid: "uid-db",
        container: "postgres",
        container_id: "c-db",
        labels: json!({}),
        ns: web.ns,
        ns_uid: web.ns_uid,
        ns_labels: web.ns_labels.clone(),
    };
    let web_docs: Vec<&Value> = docs
        .iter()
        .filter(|d| d["log"] != "db 1" && d["log"] != "db 2")
        .collect();
    assert_eq!(web_docs, [&web.doc("first"), &web.doc("second")]);
    assert_eq!(docs[0], db.doc("db 1"));
    assert_eq!(docs.len(), 4);
    assert_eq!(Stats::get(&stats.metadata_waits), 1, "the new file waited");
}

/// A pod's new labels reach the lines read after the change; the last lines of a deleted
/// pod, and a file of it opened after the deletion, are still enriched (the deleted pod
/// stays cached for the grace period).
#[test]
fn pod_deleted_while_its_last_lines_are_read_is_still_enriched() {
    let node = Node::new();
    let api = FakeApi::start();
    api.apply(namespace("shop", "ns-shop", json!({})));
    api.apply(pod(
        "shop",
        "job-8d2kq",
        "uid-job",
        NODE,
        &[("worker", "c-job")],
        json!({"app": "job"}),
        json!({}),
    ));
    let docker_log = node.docker("c-job");
    write(&docker_log, docker_lines(&["job 1"]).as_bytes());
    let run = Following::start(node.config(Some(&api.kubeconfig(node.path()))));
    run.wait_docs("job", 1);

    api.apply(pod(
        "shop",
        "job-8d2kq",
        "uid-job",
        NODE,
        &[("worker", "c-job")],
        json!({"app": "job", "phase": "finishing"}),
        json!({}),
    ));
    api.delete(Kind::Pod, "shop", "job-8d2kq");
    // A marker after the change and the deletion on the same watch stream: once the
    // marker pod's file is enriched, both have been applied too.
    api.apply(pod(
        "shop",
        "marker-x7k2p",
        "uid-marker",
        NODE,
        &[("m", "c-marker")],
        json!({}),
        json!({}),
    ));
    write(
        &node.cri("shop", "marker-x7k2p", "uid-marker", "m", 0),
        cri_lines(&["marker"]).as_bytes(),
    );
    let marker = run.wait_docs("marker", 1);
    assert_eq!(marker[0]["shipper"]["metadata"], "complete");

    append(&docker_log, &docker_lines(&["job 2", "job 3"]));
    let restarted = node.cri("shop", "job-8d2kq", "uid-job", "worker", 1);
    write(&restarted, cri_lines(&["job 4"]).as_bytes());
    run.wait_docs("job", 4);
    let (docs, _) = run.stop();
    let job = |labels: Value| Expect {
        ns: "shop",
        ns_uid: "ns-shop",
        ns_labels: json!({}),
        pod: "job-8d2kq",
        uid: "uid-job",
        container: "worker",
        container_id: "c-job",
        labels,
    };
    let before = job(json!({"app": "job"}));
    let after = job(json!({"app": "job", "phase": "finishing"}));
    let mut job_docs: Vec<Value> = docs
        .into_iter()
        .filter(|d| d["log"].as_str().unwrap().starts_with("job"))
        .collect();
    job_docs.sort_by_key(|d| d["log"].as_str().unwrap().to_owned());
    assert_eq!(
        job_docs,
        [
            before.doc("job 1"),
            after.doc("job 2"),
            after.doc("job 3"),
            after.doc("job 4"),
        ]
    );
}

/// The agent's watch writes snapshots; a restart while the API is down reads it.
#[test]
fn api_down_at_start_enriches_from_the_snapshot() {
    let node = Node::new();
    let api = FakeApi::start();
    api.apply(namespace("shop", "ns-shop", json!({"team": "payments"})));
    api.apply(pod(
        "shop",
        "web-7c4f9",
        "uid-web",
        NODE,
        &[("nginx", "c-web")],
        json!({"app": "web"}),
        json!({}),
    ));
    // Another node's pod is not this agent's business.
    api.apply(pod(
        "shop",
        "other-5k2pq",
        "uid-other",
        "node-2",
        &[("x", "c-other")],
        json!({}),
        json!({}),
    ));
    let kubeconfig = api.kubeconfig(node.path());

    // The agent, earlier: the watch with snapshots in the data dir.
    let cache = Arc::new(KubeCache::new(Duration::from_secs(300)));
    let watch = spawn_watch(
        &ApiSource::Kubeconfig(kubeconfig.clone()),
        WatchOptions {
            node_name: Some(NODE.into()),
            snapshot_dir: Some(node.data()),
            snapshot_interval: Duration::from_millis(100),
            start_delay: Duration::ZERO,
        },
        cache.clone(),
        Arc::new(Stats::default()),
    )
    .unwrap();
    assert!(cache.wait_synced(WAIT));
    assert_eq!(cache.len(), (1, 1), "only this node's pod");
    watch.stop();
    assert!(node.data().join(SNAPSHOT_FILE).exists());
    let list = api
        .requests()
        .into_iter()
        .find(|r| r.kind == Kind::Pod && !r.watch)
        .unwrap();
    assert_eq!(list.query["fieldSelector"], "spec.nodeName=node-1");
    assert_eq!(
        list.query["resourceVersion"], "0",
        "served from the watch cache"
    );

    // Now the API server is down, and the agent starts again.
    api.set_down(true);
    write(
        &node.cri("shop", "web-7c4f9", "uid-web", "nginx", 0),
        cri_lines(&["one", "two"]).as_bytes(),
    );
    let mut cfg = node.config(Some(&kubeconfig));
    cfg.kubernetes.pending_wait_ms = 300;
    let (docs, stats) = run_once(&cfg);
    let web = Expect {
        ns: "shop",
        ns_uid: "ns-shop",
        ns_labels: json!({"team": "payments"}),
        pod: "web-7c4f9",
        uid: "uid-web",
        container: "nginx",
        container_id: "c-web",
        labels: json!({"app": "web"}),
    };
    assert_eq!(docs, [web.doc("one"), web.doc("two")]);
    assert_eq!(
        Stats::get(&stats.metadata_waits),
        0,
        "known from the snapshot"
    );
    assert!(Stats::get(&stats.kube_errors) >= 1, "the outage is counted");
}

/// No API and no snapshot: the path's metadata, flagged partial, after a bounded wait.
#[test]
fn api_down_without_snapshot_gives_path_metadata() {
    let node = Node::new();
    let api = FakeApi::start();
    api.set_down(true);
    write(
        &node.cri("shop", "web-7c4f9", "uid-web", "nginx", 0),
        cri_lines(&["one", "two"]).as_bytes(),
    );
    let mut cfg = node.config(Some(&api.kubeconfig(node.path())));
    cfg.kubernetes.pending_wait_ms = 300;
    let started = Instant::now();
    let (docs, stats) = run_once(&cfg);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        docs,
        ["one", "two"].map(|l| partial_cri_doc("shop", "web-7c4f9", "uid-web", "nginx", l))
    );
    assert_eq!(Stats::get(&stats.metadata_waits), 1);
    assert!(
        !node.data().join(SNAPSHOT_FILE).exists(),
        "the dry-run writes no snapshot"
    );
}

/// A watch cut mid-stream resumes from the last version seen (a bookmark's), with no
/// relist and no event twice; a `410 Gone` relists, and a pod deleted while nobody
/// watched stays cached.
#[test]
fn watch_disconnect_and_410_lose_nothing() {
    let node = Node::new();
    let api = FakeApi::start();
    api.apply(namespace("shop", "ns-shop", json!({})));
    let a = |name, uid, id| {
        pod(
            "shop",
            name,
            uid,
            NODE,
            &[("app", id)],
            json!({}),
            json!({}),
        )
    };
    api.apply(a("alpha-5k2pq", "uid-a", "c-a"));
    write(
        &node.cri("shop", "alpha-5k2pq", "uid-a", "app", 0),
        cri_lines(&["alpha 1"]).as_bytes(),
    );
    let run = Following::start(node.config(Some(&api.kubeconfig(node.path()))));
    run.wait_docs("alpha", 1);
    wait_until("the watches to open", WAIT, || watches_open(&api));

    // Other nodes' changes move the version; a bookmark tells the watch.
    api.bump();
    let bookmark = api.bookmark();
    wait_until("the bookmark", WAIT, || {
        api.delivered()
            .iter()
            .any(|d| d.kind == Kind::Pod && d.kind_of_event == "BOOKMARK")
    });
    // A dropped connection; a pod created while the watch reconnects.
    api.drop_watches(true);
    api.apply(a("bravo-7c4f9", "uid-b", "c-b"));
    write(
        &node.cri("shop", "bravo-7c4f9", "uid-b", "app", 0),
        cri_lines(&["bravo 1"]).as_bytes(),
    );
    run.wait_docs("bravo", 1);
    let pod_watches: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.kind == Kind::Pod && r.watch)
        .collect();
    assert!(pod_watches.len() >= 2);
    assert_eq!(
        pod_watches[1].query["resourceVersion"],
        bookmark.to_string(),
        "resumed from the bookmark"
    );
    assert_eq!(
        api.count(Kind::Pod).0,
        1,
        "no relist after a dropped connection"
    );

    // Down long enough for history to be compacted: alpha deleted and charlie created
    // with nobody watching.
    api.set_down(true);
    api.drop_watches(true);
    api.delete(Kind::Pod, "shop", "alpha-5k2pq");
    api.apply(a("charlie-9x8wv", "uid-c", "c-c"));
    api.compact();
    api.set_down(false);
    wait_until("a relist after 410", WAIT, || api.count(Kind::Pod).0 >= 2);
    write(
        &node.cri("shop", "charlie-9x8wv", "uid-c", "app", 0),
        cri_lines(&["charlie 1"]).as_bytes(),
    );
    // charlie is known only from the relist: once its document is out, the relist has
    // been applied.
    run.wait_docs("charlie", 1);
    // A file of alpha opened only now (its container restarted): alpha was deleted
    // while nobody watched, and is still known.
    write(
        &node.cri("shop", "alpha-5k2pq", "uid-a", "app", 1),
        cri_lines(&["alpha 2"]).as_bytes(),
    );
    run.wait_docs("alpha", 2);
    let (docs, _) = run.stop();

    let expect = |pod, uid, id| Expect {
        ns: "shop",
        ns_uid: "ns-shop",
        ns_labels: json!({}),
        pod,
        uid,
        container: "app",
        container_id: id,
        labels: json!({}),
    };
    let mut got = docs.clone();
    got.sort_by_key(|d| d["log"].as_str().unwrap().to_owned());
    assert_eq!(
        got,
        [
            expect("alpha-5k2pq", "uid-a", "c-a").doc("alpha 1"),
            expect("alpha-5k2pq", "uid-a", "c-a").doc("alpha 2"),
            expect("bravo-7c4f9", "uid-b", "c-b").doc("bravo 1"),
            expect("charlie-9x8wv", "uid-c", "c-c").doc("charlie 1"),
        ]
    );
    let events: Vec<u64> = api
        .delivered()
        .iter()
        .filter(|d| d.kind == Kind::Pod && d.kind_of_event != "BOOKMARK")
        .map(|d| d.rv)
        .collect();
    let mut unique = events.clone();
    unique.dedup();
    assert_eq!(events, unique, "no event delivered twice");
}

/// A line of garbage on the watch is counted and skipped; the events after it still
/// arrive.
#[test]
fn garbage_on_the_watch_is_counted_and_the_stream_goes_on() {
    let node = Node::new();
    let api = FakeApi::start();
    api.apply(namespace("shop", "ns-shop", json!({})));
    let run = Following::start(node.config(Some(&api.kubeconfig(node.path()))));
    wait_until("the watches to open", WAIT, || watches_open(&api));
    api.send_garbage();
    api.apply(pod(
        "shop",
        "web-7c4f9",
        "uid-web",
        NODE,
        &[("nginx", "c-web")],
        json!({}),
        json!({}),
    ));
    write(
        &node.cri("shop", "web-7c4f9", "uid-web", "nginx", 0),
        cri_lines(&["after garbage"]).as_bytes(),
    );
    run.wait_docs("after", 1);
    let (docs, stats) = run.stop();
    let web = Expect {
        ns: "shop",
        ns_uid: "ns-shop",
        ns_labels: json!({}),
        pod: "web-7c4f9",
        uid: "uid-web",
        container: "nginx",
        container_id: "c-web",
        labels: json!({}),
    };
    assert_eq!(docs, [web.doc("after garbage")]);
    assert!(Stats::get(&stats.kube_errors) >= 1);
    assert_eq!(api.count(Kind::Pod).0, 1, "no relist for one bad line");
}

/// Excluded pod (annotation), container (annotation) and namespace (label): their
/// lines are read, counted and dropped.
#[test]
fn excluded_pod_container_and_namespace_are_skipped() {
    let node = Node::new();
    let api = FakeApi::start();
    api.apply(namespace("shop", "ns-shop", json!({})));
    api.apply(namespace(
        "quiet",
        "ns-quiet",
        json!({"shipper.io/exclude": "true"}),
    ));
    api.apply(pod(
        "shop",
        "noisy-5k2pq",
        "uid-noisy",
        NODE,
        &[("app", "c-noisy")],
        json!({}),
        json!({"shipper.io/exclude": "true"}),
    ));
    api.apply(pod(
        "shop",
        "web-7c4f9",
        "uid-web",
        NODE,
        &[("app", "c-web"), ("sidecar", "c-side")],
        json!({}),
        json!({"shipper.io/exclude-containers": "sidecar, other"}),
    ));
    api.apply(pod(
        "quiet",
        "batch-9x8wv",
        "uid-batch",
        NODE,
        &[("app", "c-batch")],
        json!({}),
        json!({}),
    ));
    let two = cri_lines(&["x", "y"]);
    write(
        &node.cri("shop", "noisy-5k2pq", "uid-noisy", "app", 0),
        two.as_bytes(),
    );
    write(
        &node.cri("shop", "web-7c4f9", "uid-web", "app", 0),
        two.as_bytes(),
    );
    write(
        &node.cri("shop", "web-7c4f9", "uid-web", "sidecar", 0),
        two.as_bytes(),
    );
    write(
        &node.cri("quiet", "batch-9x8wv", "uid-batch", "app", 0),
        two.as_bytes(),
    );
    // Docker too: excluded by container id.
    write(&node.docker("c-noisy"), docker_lines(&["z"]).as_bytes());
    let (docs, stats) = run_once(&node.config(Some(&api.kubeconfig(node.path()))));
    let web = Expect {
        ns: "shop",
        ns_uid: "ns-shop",
        ns_labels: json!({}),
        pod: "web-7c4f9",
        uid: "uid-web",
        container: "app",
        container_id: "c-web",
        labels: json!({}),
    };
    assert_eq!(docs, [web.doc("x"), web.doc("y")]);
    assert_eq!(Stats::get(&stats.excluded_lines), 7);
    assert_eq!(Stats::get(&stats.records), 2);
}

/// `app` and `app.kubernetes.io/name` on one pod: both kept, de-dotted, so they cannot
/// collide in the mapping. The list answers slowly (within the bounded wait).
#[test]
fn app_and_dotted_app_labels_are_de_dotted_with_a_slow_api() {
    let node = Node::new();
    let api = FakeApi::start();
    api.set_list_delay(Duration::from_millis(400));
    api.apply(namespace(
        "shop",
        "ns-shop",
        json!({"kubernetes.io/metadata.name": "shop"}),
    ));
    api.apply(pod(
        "shop",
        "web-7c4f9",
        "uid-web",
        NODE,
        &[("nginx", "c-web")],
        json!({"app": "web", "app.kubernetes.io/name": "web", "app.kubernetes.io/part-of": "shop"}),
        json!({"team.example.com/owner": "payments"}),
    ));
    write(&node.docker("c-web"), docker_lines(&["hello"]).as_bytes());
    let mut cfg = node.config(Some(&api.kubeconfig(node.path())));
    let (docs, _) = run_once(&cfg);
    let web = Expect {
        ns: "shop",
        ns_uid: "ns-shop",
        ns_labels: json!({"kubernetes_io/metadata_name": "shop"}),
        pod: "web-7c4f9",
        uid: "uid-web",
        container: "nginx",
        container_id: "c-web",
        labels: json!({"app": "web", "app_kubernetes_io/name": "web", "app_kubernetes_io/part-of": "shop"}),
    };
    assert_eq!(docs, [web.doc("hello")]);

    // Annotations are opt-in, de-dotted the same way; de-dotting can be turned off.
    cfg.kubernetes.annotations = true;
    cfg.kubernetes.dedot_labels = false;
    let (docs, _) = run_once(&cfg);
    let k = &docs[0]["kubernetes"];
    assert_eq!(
        k["labels"],
        json!({"app": "web", "app.kubernetes.io/name": "web", "app.kubernetes.io/part-of": "shop"})
    );
    assert_eq!(
        k["annotations"],
        json!({"team.example.com/owner": "payments"})
    );
}

/// The binary: `--dry-run` talks to an API only when given `--kubeconfig`, not because
/// `KUBECONFIG` is set; an unreadable kubeconfig is a clear error.
#[test]
fn dry_run_uses_an_api_only_when_told() {
    let node = Node::new();
    let api = FakeApi::start();
    api.apply(pod(
        "shop",
        "web-7c4f9",
        "uid-web",
        NODE,
        &[("nginx", "c-web")],
        json!({}),
        json!({}),
    ));
    write(
        &node.cri("shop", "web-7c4f9", "uid-web", "nginx", 0),
        cri_lines(&["one"]).as_bytes(),
    );
    let kubeconfig = api.kubeconfig(node.path());
    let roots = |cmd: &mut std::process::Command| {
        cmd.arg("--dry-run")
            .arg("--pods-root")
            .arg(node.path().join("pods"))
            .arg("--docker-root")
            .arg(node.path().join("docker"))
            .arg("--data-dir")
            .arg(node.data());
    };
    let mut cmd = shipper();
    roots(&mut cmd);
    let o = run(cmd.env("KUBECONFIG", &kubeconfig));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        bulk_pairs(&o.stdout)[0].1,
        partial_cri_doc("shop", "web-7c4f9", "uid-web", "nginx", "one")
    );
    assert!(
        api.requests().is_empty(),
        "KUBECONFIG alone is not a reason to call"
    );

    let mut cmd = shipper();
    roots(&mut cmd);
    let o = run(cmd.arg("--kubeconfig").arg(&kubeconfig));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        bulk_pairs(&o.stdout)[0].1["shipper"]["metadata"],
        "complete"
    );
    assert!(!api.requests().is_empty());

    let mut cmd = shipper();
    roots(&mut cmd);
    let o = run(cmd.arg("--kubeconfig").arg(node.path().join("missing")));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("kubeconfig"), "{}", stderr(&o));

    let mut cmd = shipper();
    roots(&mut cmd);
    let o = run(cmd
        .env("SHIPPER_KUBERNETES_KUBECONFIG", &kubeconfig)
        .arg("--no-kubernetes"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(bulk_pairs(&o.stdout)[0].1["shipper"]["metadata"], "partial");
}

/// A restart's start delay (`kubernetes.start_jitter_ms`, for a node with a snapshot)
/// holds its lists back: two watches started together, one without a delay and one with
/// an hour's, against two API servers; once the first has listed, the second has not
/// asked anything, and stops at once when told.
#[test]
fn a_start_delay_holds_the_lists_back() {
    let now = FakeApi::start();
    let later = FakeApi::start();
    let node = Node::new();
    let start = |api: &FakeApi, delay: Duration| {
        spawn_watch(
            &ApiSource::Kubeconfig(api.kubeconfig(node.path())),
            WatchOptions {
                node_name: Some(NODE.into()),
                snapshot_dir: None,
                snapshot_interval: Duration::from_secs(1),
                start_delay: delay,
            },
            Arc::new(KubeCache::new(Duration::from_secs(300))),
            Arc::new(Stats::default()),
        )
        .unwrap()
    };
    let delayed = start(&later, Duration::from_secs(3600));
    let prompt = start(&now, Duration::ZERO);
    wait_until("the prompt watch's lists", WAIT, || {
        now.count(Kind::Pod).0 >= 1 && now.count(Kind::Namespace).0 >= 1
    });
    assert!(later.requests().is_empty(), "{:?}", later.requests());
    prompt.stop();
    let stopped = std::time::Instant::now();
    delayed.stop();
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "a waiting watch stops at once"
    );
    assert!(later.requests().is_empty());
}

/// Every request one agent makes, and what a real API server needs to serve it cheaply.
/// At start: one list per kind, answered from the watch cache (`resourceVersion=0`, no
/// `limit`), pods of this node only (`fieldSelector`), then one watch per kind with
/// bookmarks from the list's version. In steady state, while this node's pods change:
/// nothing more (no GET per pod or per record). After the history it watches from was
/// compacted (410): one list and one watch per kind again, the list from the watch cache
/// too. The figures for a 5,000-node rollout are in the README (Kubernetes metadata).
#[test]
fn one_agents_api_requests_at_start_in_steady_state_and_after_a_410() {
    let api = FakeApi::start();
    let node = Node::new();
    for n in 0..20 {
        api.apply(namespace(
            &format!("ns-{n}"),
            &format!("ns-uid-{n}"),
            json!({"team": "a"}),
        ));
    }
    let pod_on = |i: usize, host: &str| {
        pod(
            &format!("ns-{}", i % 20),
            &format!("app{i}-5d78c9869d-{host}"),
            &format!("uid-{host}-{i}"),
            host,
            &[
                ("app", &format!("c-{host}-{i}")),
                ("istio-proxy", &format!("s-{host}-{i}")),
            ],
            json!({"app": format!("app{i}"), "app.kubernetes.io/name": format!("app{i}"), "pod-template-hash": "5d78c9869d"}),
            json!({"kubectl.kubernetes.io/restartedAt": "2024-07-08T03:40:00Z"}),
        )
    };
    for i in 0..30 {
        api.apply(pod_on(i, NODE));
    }
    for i in 0..300 {
        api.apply(pod_on(i, "node-2"));
    }
    let cache = Arc::new(KubeCache::new(Duration::from_secs(300)));
    let watch = spawn_watch(
        &ApiSource::Kubeconfig(api.kubeconfig(node.path())),
        WatchOptions {
            node_name: Some(NODE.into()),
            snapshot_dir: None,
            snapshot_interval: Duration::from_secs(1),
            start_delay: Duration::ZERO,
        },
        cache.clone(),
        Arc::new(Stats::default()),
    )
    .unwrap();
    assert!(cache.wait_synced(WAIT));
    wait_until("both watches", WAIT, || watches_open(&api));
    let start = api.requests();
    let start_bytes = api.list_bytes();
    let lists: Vec<_> = start.iter().filter(|r| !r.watch).collect();
    let watches: Vec<_> = start.iter().filter(|r| r.watch).collect();
    assert_eq!((lists.len(), watches.len()), (2, 2), "{start:?}");
    for r in &lists {
        assert_eq!(
            r.query.get("resourceVersion").map(String::as_str),
            Some("0"),
            "{r:?}"
        );
        assert!(
            !r.query.contains_key("limit"),
            "the watch cache answers whole: {r:?}"
        );
    }
    for r in &watches {
        assert_eq!(
            r.query.get("allowWatchBookmarks").map(String::as_str),
            Some("true"),
            "{r:?}"
        );
        assert!(
            r.query.get("resourceVersion").is_some_and(|v| v != "0"),
            "{r:?}"
        );
    }
    for r in start.iter().filter(|r| r.kind == Kind::Pod) {
        assert_eq!(r.query["fieldSelector"], "spec.nodeName=node-1", "{r:?}");
    }
    assert_eq!(cache.len().0, 30, "this node's pods only");

    // Steady state: this node's pods come and go, others' too.
    for i in 30..60 {
        api.apply(pod_on(i, NODE));
        api.apply(pod_on(i, "node-2"));
    }
    for i in 0..10 {
        api.delete(
            Kind::Pod,
            &format!("ns-{}", i % 20),
            &format!("app{i}-5d78c9869d-{NODE}"),
        );
    }
    wait_until("the changes in the cache", WAIT, || cache.len().0 == 60);
    assert_eq!(
        api.requests().len(),
        start.len(),
        "no request in steady state"
    );

    // The history is compacted while the watches are cut: 410, a list, a watch.
    api.compact();
    api.drop_watches(true);
    wait_until("relists after 410", WAIT, || {
        api.count(Kind::Pod).0 == 2 && api.count(Kind::Namespace).0 == 2
    });
    wait_until("both watches again", WAIT, || {
        api.count(Kind::Pod).1 >= 3 && api.count(Kind::Namespace).1 >= 3
    });
    let after: Vec<_> = api.requests().into_iter().skip(start.len()).collect();
    for r in after.iter().filter(|r| !r.watch) {
        assert_eq!(
            r.query.get("resourceVersion").map(String::as_str),
            Some("0"),
            "{r:?}"
        );
    }
    eprintln!(
        "api audit: start {} requests ({} lists, {} list bytes for 30 of 330 pods and 20 namespaces); steady 0; after a 410 {} requests",
        start.len(),
        lists.len(),
        start_bytes,
        after.len()
    );
    watch.stop();
}
