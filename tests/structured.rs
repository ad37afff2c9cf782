//! Structured records end to end: multiline traces and parsed JSON fields through the
//! real agent into osmem-server. Nothing is lost to a mapping conflict, and a `kill -9`
//! at any moment of multiline traffic leaves neither a split trace nor a duplicate.

use crate::agent::{kill9, sigterm, Node};
use crate::util::*;
use std::io::Write;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

/// Docker json-file lines for one event, stamped now (so a trace still being written
/// is never closed by the clock), appended in one write.
fn append_event(node: &Node, c: usize, stream: &str, lines: &[String]) {
    let path = node.log(c);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let now = chrono::Utc::now();
    let mut s = String::new();
    for (i, l) in lines.iter().enumerate() {
        let t = now + chrono::Duration::microseconds(i as i64);
        let time = t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string();
        s += &docker_line(&format!("{l}\n"), stream, &time);
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(s.as_bytes())
        .unwrap();
}

fn java_trace(n: u64) -> Vec<String> {
    let mut v = vec![
        format!("2024-07-08 03:42:57.123 ERROR 1 --- [exec-{n}] c.a.Orders : order {n} failed"),
        format!("java.lang.IllegalStateException: order {n} is not PENDING"),
    ];
    for f in 0..(n % 7 + 2) {
        v.push(format!(
            "\tat com.acme.Orders.step{f}(Orders.java:{})",
            10 + f
        ));
    }
    if n.is_multiple_of(2) {
        v.push(format!("Caused by: java.sql.SQLException: dup {n}"));
        v.push("\tat org.h2.Db.run(Db.java:1)".into());
        v.push("\t... 12 more".into());
    }
    v
}

/// Two pods' JSON logs disagree on the shape of `user`: the second's documents are
/// refused for their fields, sent again without them, and indexed. Nothing goes to the
/// dead-letter file; `status` (a number, then a string) is absorbed by the template.
#[test]
fn a_mapping_conflict_between_two_pods_costs_no_document() {
    let Some(es) = es() else { return };
    let mut node = Node::new();
    let first: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"msg":"first {i}","user":{{"id":{i}}},"status":200}}"#))
        .collect();
    for l in &first {
        append_event(&node, 0, "stdout", std::slice::from_ref(l));
        node.written.insert(l.clone());
    }
    let mut agent = node.agent(&es.url, "fields", &[]);
    wait_until("the first pod's documents", LONG, || {
        es_count(&es.url, "fields-*") >= 20
    });
    let second: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"msg":"second {i}","user":"bob{i}","status":"ok"}}"#))
        .collect();
    for l in &second {
        append_event(&node, 1, "stdout", std::slice::from_ref(l));
        node.written.insert(l.clone());
    }
    node.assert_all_indexed(&es.url, "fields");
    let addr = node.metrics_addr();
    let metrics = http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(sigterm(&mut agent).success());
    assert!(
        !node.data().join("dead-letter.ndjson").exists(),
        "nothing in the dead-letter file"
    );
    let body = serde_json::json!({"size": 100, "query": {"match_all": {}}});
    let hits: serde_json::Value = http()
        .post(format!("{}/fields-*/_search", es.url))
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let docs: Vec<&serde_json::Value> = hits["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["_source"])
        .collect();
    assert_eq!(docs.len(), 40);
    for d in docs {
        let log = d["log"].as_str().unwrap();
        if log.contains("first") {
            assert!(d["fields"]["user"]["id"].is_number(), "{d}");
            assert_eq!(d["shipper"]["fields"], serde_json::json!(["fields"]));
        } else {
            assert!(d.get("fields").is_none(), "{d}");
            let why = d["shipper"]["fields_rejected"].as_str().unwrap();
            assert!(why.contains("mapper_parsing_exception"), "{why}");
        }
    }
    assert!(
        metrics.contains("shipper_fields_rejected_total{reason=\"mapper_parsing\"} 20"),
        "{metrics}"
    );
    assert!(metrics.contains("shipper_fields_total{outcome=\"parsed\"} 40"));
}

/// Traces and single lines from three containers, `kill -9` twenty times at random
/// moments (some rotations, some writes while the agent is down): every trace is one
/// document, every line one document, none twice.
#[test]
fn kill_9_twenty_times_during_multiline_traffic() {
    let Some(es) = es() else { return };
    let mut node = Node::new();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut n = 0u64;
    let mut write = |node: &mut Node, rng: &mut fastrand::Rng| {
        let c = rng.usize(0..3);
        for _ in 0..rng.usize(5..40) {
            n += 1;
            if rng.u8(0..5) == 0 {
                let trace = java_trace(n);
                append_event(node, c, "stderr", &trace);
                node.written.insert(trace.join("\n"));
            } else {
                let line = format!("GET /orders/{n} 200 {}", "x".repeat((n % 50) as usize));
                append_event(node, c, "stdout", std::slice::from_ref(&line));
                node.written.insert(line);
            }
        }
        c
    };
    let mut agent = node.agent(&es.url, "trace", &[]);
    for round in 0..20 {
        for _ in 0..rng.usize(1..4) {
            let c = write(&mut node, &mut rng);
            if rng.u8(0..5) == 0 && node.seen(c) {
                node.rotate(c);
                write(&mut node, &mut rng);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.u64(20..400)));
        kill9(&mut agent);
        if round % 5 == 4 {
            write(&mut node, &mut rng);
        }
        agent = node.agent(&es.url, "trace", &[]);
    }
    write(&mut node, &mut rng);
    node.assert_all_indexed(&es.url, "trace");
    assert!(sigterm(&mut agent).success());
}
