//! How the agent stops: signals, a second signal while draining, SIGHUP, and a worker
//! that panics. The real binary against osmem-server; nothing lost across any of it.

use crate::agent::{sigterm, Node};
use crate::util::*;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "the agent kept running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// SIGHUP is logged and changes nothing; SIGTERM starts the drain; a second SIGTERM
/// during the drain (Elasticsearch down, so it would last until the deadline) exits at
/// once. The next start delivers everything, once.
#[test]
fn sighup_never_kills_and_a_second_sigterm_exits_at_once() {
    let Some(es) = es() else { return };
    let mut node = Node::new();
    node.write(0, 200, 8);
    node.write(1, 100, 8);
    let env = [("SHIPPER_AGENT_SHUTDOWN_DEADLINE_MS", "60000")];
    let mut agent = node.agent(&closed_port_url(), "sig", &env);
    wait_until("the batches in the buffer", LONG, || {
        node.agent_log().contains("Elasticsearch not reachable yet")
            && std::fs::read(node.data().join("checkpoints"))
                .is_ok_and(|b| b.windows(6).any(|w| w == b"offset"))
    });
    signal(&agent, "HUP");
    wait_until("the SIGHUP log line", LONG, || {
        node.agent_log().contains("SIGHUP received")
    });
    assert!(
        agent.try_wait().unwrap().is_none(),
        "SIGHUP killed the agent"
    );
    signal(&agent, "TERM");
    wait_until("the drain", LONG, || {
        node.agent_log().contains("stopping: no more reading")
    });
    let started = Instant::now();
    signal(&agent, "TERM");
    let status = wait_exit(&mut agent, Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the second SIGTERM did not cut the 60 s drain short"
    );
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert!(node
        .agent_log()
        .contains("second stop signal while draining"));
    let mut again = node.agent(&es.url, "sig", &[]);
    node.assert_all_indexed(&es.url, "sig");
    assert!(sigterm(&mut again).success());
}

/// A panic in a worker thread starts the ordered stop and the agent exits non-zero, with
/// the panic in its log.
#[test]
fn a_panicking_reader_stops_the_agent_with_an_error() {
    let mut node = Node::new();
    node.write(0, 10, 8);
    let env = [("SHIPPER_TEST_WEDGE", "reader-panic")];
    let mut agent = node.agent(&closed_port_url(), "panic", &env);
    let status = wait_exit(&mut agent, LONG);
    assert!(!status.success(), "{status:?}");
    let log = node.agent_log();
    assert!(log.contains("the reader failed; stopping"), "{log}");
    assert!(log.contains("the read thread panicked"), "{log}");
    assert!(log.contains("stopping: no more reading"), "{log}");
}
