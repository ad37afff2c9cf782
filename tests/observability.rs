//! The agent's self-observability end to end: the real binary's `/metrics`, `/healthz`
//! and `/readyz`, a real Prometheus scraping it, and the dashboard and alert rules in
//! `deploy/monitoring/` checked against what a real agent exports.

use crate::agent::{sigterm, Node};
use crate::util::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(40);

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

fn client() -> reqwest::blocking::Client {
    install_tls_provider();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn request(method: reqwest::Method, addr: &str, path: &str) -> Answer {
    let r = client()
        .request(method, format!("http://{addr}{path}"))
        .send()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    Answer {
        status: r.status().as_u16(),
        content_type: r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        body: r.text().unwrap_or_default(),
    }
}

fn get(addr: &str, path: &str) -> Answer {
    request(reqwest::Method::GET, addr, path)
}

/// `/metrics` as series (`name{labels}`) → value.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    get(addr, "/metrics")
        .body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// Metric family names in `/metrics` (from its `# TYPE` lines).
fn families(addr: &str) -> BTreeSet<String> {
    get(addr, "/metrics")
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no series {series} in /metrics"))
}

/// A port nobody listens on.
fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// Every `shipper_*` name a monitoring file refers to, histogram suffixes removed.
fn referenced_metrics(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(i) = text[at..].find("shipper_") {
        let start = at + i;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        if boundary {
            let name = &text[start..end];
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|n| n.ends_with("_seconds")))
                .unwrap_or(name);
            out.insert(name.to_owned());
        }
        at = end;
    }
    out
}

fn monitoring_file(name: &str) -> PathBuf {
    repo().join("deploy/monitoring").join(name)
}

#[test]
fn metrics_health_and_readiness_of_a_running_agent() {
    let Some(es) = es() else { return };
    let mut node = Node::new();
    node.write(0, 120, 8);
    node.write(1, 80, 8);
    // The default log format off a terminal: JSON lines.
    let mut agent = node.agent(&es.url, "obs", &[("SHIPPER_LOG_FORMAT", "json")]);
    let addr = node.metrics_addr();
    wait_until("/readyz", LONG, || get(&addr, "/readyz").status == 200);
    let h = get(&addr, "/healthz");
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));
    assert_eq!(get(&addr, "/nope").status, 404);
    assert_eq!(
        request(reqwest::Method::POST, &addr, "/metrics").status,
        405
    );
    let m = get(&addr, "/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        m.content_type
    );
    node.assert_all_indexed(&es.url, "obs");
    let mut m = BTreeMap::new();
    wait_until("every record counted as delivered", LONG, || {
        m = scrape(&addr);
        value(&m, "shipper_records_total{outcome=\"indexed\"}") == 200.0
            && value(&m, "shipper_buffer_records") == 0.0
    });
    for (series, want) in [
        ("shipper_lines_read_total", 200.0),
        ("shipper_records_read_total", 200.0),
        ("shipper_files_opened_total", 2.0),
        ("shipper_files_watched", 2.0),
        ("shipper_records_total{outcome=\"duplicate\"}", 0.0),
        ("shipper_records_total{outcome=\"dead_letter\"}", 0.0),
        ("shipper_records_total{outcome=\"excluded\"}", 0.0),
        ("shipper_metadata_total{status=\"complete\"}", 0.0),
        ("shipper_read_errors_total", 0.0),
        ("shipper_bulk_requests_total{result=\"network\"}", 0.0),
        ("shipper_es_endpoints", 1.0),
        ("shipper_es_endpoints_healthy", 1.0),
        ("shipper_buffer_max_bytes", 2147483648.0),
        ("shipper_buffer_oldest_record_age_seconds", 0.0),
        ("shipper_bulk_in_flight", 0.0),
    ] {
        assert_eq!(value(&m, series), want, "{series}");
    }
    // No API and no pod list: what the log path and Docker's directory tell.
    assert_eq!(
        value(&m, "shipper_metadata_total{status=\"partial\"}")
            + value(&m, "shipper_metadata_total{status=\"none\"}"),
        200.0
    );
    let success = value(&m, "shipper_bulk_requests_total{result=\"success\"}");
    assert!(success >= 1.0, "{success}");
    assert_eq!(
        value(&m, "shipper_bulk_request_duration_seconds_count"),
        success,
        "every request timed"
    );
    // Everything read was delivered and nothing new came: caught up, whatever the age of
    // the last batch (its lines are dated July 2024).
    wait_until("lag back to 0 once caught up", LONG, || {
        value(&scrape(&addr), "shipper_lag_seconds") == 0.0
    });
    assert_eq!(
        value(
            &m,
            &format!(
                "shipper_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert!(sigterm(&mut agent).success());
    let log = node.agent_log();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert!(log.contains("\"message\":\"metrics listening\""), "{log}");
}

#[test]
fn healthz_stays_up_while_elasticsearch_is_down_and_the_buffer_is_full() {
    let mut node = Node::new();
    for _ in 0..4 {
        node.write(0, 1000, 8);
    }
    let env = [
        ("SHIPPER_METRICS_LIVENESS_TIMEOUT_MS", "1500"),
        ("SHIPPER_BUFFER_MAX_BYTES", "65536"),
        ("SHIPPER_BUFFER_SEGMENT_BYTES", "16384"),
        ("SHIPPER_ELASTICSEARCH_BATCH_BYTES", "8192"),
        ("SHIPPER_ELASTICSEARCH_COMPRESSION", "false"),
        // Small reads, so one batch cannot swallow the whole file.
        ("SHIPPER_INPUT_READ_BYTES", "4096"),
        ("SHIPPER_INPUT_TURN_BUDGET_BYTES", "4096"),
    ];
    let mut agent = node.agent(&closed_port_url(), "down", &env);
    let addr = node.metrics_addr();
    wait_until("a full buffer with reading paused", LONG, || {
        let m = scrape(&addr);
        value(&m, "shipper_buffer_bytes") > 40_000.0
            && value(&m, "shipper_es_request_failures_total") > 0.0
    });
    // Several liveness periods with Elasticsearch unreachable and the reader waiting for
    // room: never unhealthy, always ready.
    let until = Instant::now() + Duration::from_millis(4_500);
    while Instant::now() < until {
        let h = get(&addr, "/healthz");
        assert_eq!(h.status, 200, "{}", h.body);
        assert_eq!(get(&addr, "/readyz").status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = scrape(&addr);
    assert!(
        value(&m, "shipper_lines_read_total") < 4000.0,
        "reading paused while the buffer is full"
    );
    assert_eq!(value(&m, "shipper_records_total{outcome=\"indexed\"}"), 0.0);
    // SIGTERM with the buffer full and Elasticsearch unreachable: the reader and the
    // buffer writer give up waiting for room, shipping gets its deadline (5 s here), and
    // the agent exits 0 well within a Pod's grace period.
    let asked = Instant::now();
    assert!(sigterm(&mut agent).success(), "{}", node.agent_log());
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "stopping took {:?}",
        asked.elapsed()
    );
    assert!(node.agent_log().contains("stopping with the buffer full"));
}

fn wedged(hook: &str, want: &str) {
    let mut node = Node::new();
    node.write(0, 10, 8);
    let env = [
        ("SHIPPER_METRICS_LIVENESS_TIMEOUT_MS", "1000"),
        ("SHIPPER_TEST_WEDGE", hook),
    ];
    let mut agent = node.agent(&closed_port_url(), "wedge", &env);
    let addr = node.metrics_addr();
    let mut last = String::new();
    wait_until("/healthz to fail", LONG, || {
        let h = get(&addr, "/healthz");
        last = h.body;
        h.status == 503
    });
    assert!(last.contains(want), "{last}");
    assert!(
        !last.contains("shipper:"),
        "the shipper waiting is fine: {last}"
    );
    assert!(node.agent_log().contains("SHIPPER_TEST_WEDGE is set"));
    let _ = sigterm(&mut agent);
}

#[test]
fn healthz_fails_when_the_reader_is_stuck() {
    wedged("reader", "reader: no heartbeat");
}

/// A worker that ends on its own does not leave a process with a dead pipeline behind:
/// the agent stops as on SIGTERM and exits non-zero (so it is restarted), with the cause
/// in its log.
#[test]
fn a_reader_that_dies_stops_the_agent_with_an_error() {
    let mut node = Node::new();
    node.write(0, 10, 8);
    let env = [("SHIPPER_TEST_WEDGE", "reader-exit")];
    let mut agent = node.agent(&closed_port_url(), "wedge", &env);
    let deadline = Instant::now() + LONG;
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the agent kept running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{status:?}");
    let log = node.agent_log();
    assert!(log.contains("the reader failed; stopping"), "{log}");
    assert!(log.contains("reader-exit: the reader ends here"), "{log}");
}

#[test]
fn a_metrics_address_in_use_fails_the_start_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let o = run(shipper()
        .args([
            "--docker-root",
            "/nonexistent",
            "--pods-root",
            "/nonexistent",
        ])
        .args(["--no-kubernetes", "--metrics-addr", &addr, "--data-dir"])
        .arg(data.path())
        .args(["--es-url", &closed_port_url()]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("metrics.addr") && e.contains(&addr), "{e}");
    let o = run(shipper()
        .args(["--metrics-addr", "localhost", "--data-dir"])
        .arg(data.path()));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`localhost` is not an address"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn metrics_listener_can_be_disabled() {
    let mut node = Node::new();
    node.write(0, 5, 8);
    let mut agent = node.agent(
        &closed_port_url(),
        "off",
        &[("SHIPPER_METRICS_ENABLED", "false")],
    );
    wait_until("the agent to start", LONG, || {
        node.agent_log().contains("metrics listener disabled")
    });
    assert!(!node.agent_log().contains("metrics listening"));
    assert!(sigterm(&mut agent).success());
}

/// Where Prometheus is, or why the test cannot run.
fn prometheus_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("prometheus"))
            .find(|b| b.is_file())
    });
    if found.is_none() {
        if std::env::var_os("SHIPPER_SKIP_PROMETHEUS").is_some() {
            eprintln!("skipping: prometheus is not installed and SHIPPER_SKIP_PROMETHEUS is set");
            return None;
        }
        panic!(
            "prometheus is not installed: run .ci/setup-deps (or set SHIPPER_SKIP_PROMETHEUS=1 to skip this test)"
        );
    }
    found
}

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second. Its port is picked by binding
    /// port 0 and releasing it; should another process take it first, Prometheus exits
    /// and the next port is tried.
    fn start(bin: &PathBuf, target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: shipper\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        for _ in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let mut child = Command::new(bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
                .spawn()
                .expect("starting prometheus");
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + LONG;
            loop {
                if child.try_wait().unwrap().is_some() {
                    break; // port taken (or another start failure): try again
                }
                let ready = client()
                    .get(format!("{url}/-/ready"))
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    return Prometheus {
                        child,
                        url,
                        _dir: dir,
                    };
                }
                assert!(Instant::now() < deadline, "prometheus did not become ready");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
        panic!("prometheus did not start:\n{log}");
    }

    /// The single value of an instant query, if there is one.
    fn query(&self, q: &str) -> Option<f64> {
        let url =
            reqwest::Url::parse_with_params(&format!("{}/api/v1/query", self.url), [("query", q)])
                .ok()?;
        let r: serde_json::Value = client().get(url).send().ok()?.json().ok()?;
        let v = r["data"]["result"].as_array()?.first()?["value"][1].as_str()?;
        v.parse().ok()
    }
}

#[test]
fn prometheus_scrapes_the_agent() {
    let Some(bin) = prometheus_binary() else {
        return;
    };
    let Some(es) = es() else { return };
    let mut node = Node::new();
    node.write(0, 150, 8);
    node.write(2, 100, 9);
    let mut agent = node.agent(&es.url, "prom", &[]);
    let addr = node.metrics_addr();
    let prom = Prometheus::start(&bin, &addr);
    let records = r#"sum(shipper_records_total{outcome=~"indexed|duplicate"})"#;
    wait_until("Prometheus to see every record delivered", LONG, || {
        prom.query(r#"up{job="shipper"}"#) == Some(1.0) && prom.query(records) == Some(250.0)
    });
    assert_eq!(
        prom.query(r#"sum(shipper_bulk_requests_total{result!="success"})"#),
        Some(0.0)
    );
    node.assert_all_indexed(&es.url, "prom");
    assert!(sigterm(&mut agent).success());
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let mut node = Node::new();
    node.write(0, 3, 8);
    let mut agent = node.agent(&closed_port_url(), "names", &[]);
    let addr = node.metrics_addr();
    let exported = families(&addr);
    assert!(sigterm(&mut agent).success());
    let dashboard = std::fs::read_to_string(monitoring_file("shipper-dashboard.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    assert!(!parsed["panels"].as_array().unwrap().is_empty());
    // The PodMonitor selects the DaemonSet's Pods by labels they carry, on a port they name.
    let pm: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(monitoring_file("shipper-podmonitor.yaml")).unwrap(),
    )
    .unwrap();
    let ds = std::fs::read_to_string(repo().join("deploy/31-shipper.yaml")).unwrap();
    let ds: serde_yaml_ng::Value = serde_yaml_ng::Deserializer::from_str(&ds)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|d: &serde_yaml_ng::Value| d["kind"] == "DaemonSet")
        .expect("the DaemonSet");
    let pod = &ds["spec"]["template"];
    let selector = pm["spec"]["selector"]["matchLabels"].as_mapping().unwrap();
    for (k, v) in selector {
        assert_eq!(&pod["metadata"]["labels"][k], v, "label {k:?}");
    }
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    // The alternative ServiceMonitor: its Service selects the same Pods, and the
    // ServiceMonitor selects that Service, on the port it names.
    let sm_file = std::fs::read_to_string(monitoring_file("shipper-servicemonitor.yaml")).unwrap();
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&sm_file)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let svc = docs.iter().find(|d| d["kind"] == "Service").unwrap();
    let sm = docs.iter().find(|d| d["kind"] == "ServiceMonitor").unwrap();
    for (k, v) in svc["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&pod["metadata"]["labels"][k], v, "Service selector {k:?}");
    }
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selector {k:?}"
        );
    }
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(pod["spec"]["containers"][0]["ports"][0]["name"], "metrics");
    assert_eq!(
        pod["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"],
        "/healthz"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/readyz"
    );
    let rules = std::fs::read_to_string(monitoring_file("shipper.rules.yaml")).unwrap();
    for (file, text) in [("dashboard", &dashboard), ("rules", &rules)] {
        let used = referenced_metrics(text);
        assert!(used.len() > 5, "{file} refers to {used:?}");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} refers to metrics the agent does not export: {unknown:?}"
        );
    }
}

#[test]
fn alert_rules_pass_promtool() {
    if prometheus_binary().is_none() {
        return;
    }
    let o = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(monitoring_file("shipper.rules.yaml"))
        .output()
        .expect("running promtool (from the prometheus package)");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The alerts fire (and stay quiet) on the series they are written for.
    let o = Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg(monitoring_file("shipper.rules.test.yaml"))
        .output()
        .expect("running promtool");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn referenced_metric_names() {
    let got = referenced_metrics(
        r#"rate(shipper_bulk_request_duration_seconds_bucket[5m]) + shipper_lag_seconds{x="my_shipper_y"} / xshipper_no"#,
    );
    let want: BTreeSet<String> = [
        "shipper_bulk_request_duration_seconds",
        "shipper_lag_seconds",
    ]
    .map(String::from)
    .into();
    assert_eq!(got, want);
}
