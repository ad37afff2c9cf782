//! The node's bad days: a full data disk, the free-space floor, files rotated while the
//! agent is away. Real agent, real osmem-server, a small tmpfs as the data directory.
//! Each test asserts the exact set of documents in Elasticsearch, no duplicate, and the
//! metrics an operator would look at.

use crate::agent::{kill9, sigterm, Node};
use crate::proxy;
use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

/// A tmpfs mounted at a directory, unmounted on drop.
struct SmallFs(PathBuf);

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `bytes` at `dir`. Where mounting is impossible (not root, no
/// mount namespace) the test is skipped with a message, except under `CI`.
fn small_fs(dir: &Path, bytes: u64) -> Option<SmallFs> {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(SmallFs(dir.to_owned())),
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            assert!(
                std::env::var_os("CI").is_none(),
                "cannot mount a tmpfs under CI: {why}"
            );
            eprintln!("skipping: cannot mount a tmpfs (needs root): {why}");
            None
        }
    }
}

/// The value of one series in the agent's `/metrics` (0 when absent or unreachable).
fn metric(addr: &str, series: &str) -> f64 {
    let Ok(r) = http().get(format!("http://{addr}/metrics")).send() else {
        return 0.0;
    };
    r.text()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn healthz(addr: &str) -> u16 {
    http()
        .get(format!("http://{addr}/healthz"))
        .send()
        .map_or(0, |r| r.status().as_u16())
}

/// Settings that make a small volume fill fast: no compression, small segments and
/// batches; the floor as given.
fn env(min_free_bytes: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SHIPPER_BUFFER_MIN_FREE_PERCENT", "0".into()),
        ("SHIPPER_BUFFER_MIN_FREE_BYTES", min_free_bytes.into()),
        ("SHIPPER_BUFFER_SEGMENT_BYTES", "65536".into()),
        ("SHIPPER_ELASTICSEARCH_BATCH_BYTES", "32768".into()),
        ("SHIPPER_ELASTICSEARCH_COMPRESSION", "false".into()),
    ]
}

fn start(
    node: &Node,
    url: &str,
    prefix: &str,
    env: &[(&'static str, String)],
) -> std::process::Child {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    node.agent(url, prefix, &env)
}

/// The data volume fills while Elasticsearch is down and the logs keep coming and
/// rotating: the agent pauses (no exit, `/healthz` 200), survives a restart on the full
/// disk, and delivers every line once Elasticsearch is back and frees the space.
#[test]
fn a_full_disk_pauses_reading_and_loses_nothing() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    p.set(|f| f.down = true);
    let mut node = Node::new();
    let Some(_fs) = small_fs(&node.data(), 1 << 20) else {
        return;
    };
    for c in 0..3 {
        node.write(c, 2500, 8);
    }
    let env = env("0");
    let mut agent = start(&node, &p.url, "full", &env);
    let addr = node.metrics_addr();
    wait_until("the agent to pause for disk space", LONG, || {
        metric(&addr, "shipper_disk_full_paused") >= 1.0
    });
    assert!(agent.try_wait().unwrap().is_none(), "the agent exited");
    assert_eq!(healthz(&addr), 200, "/healthz while paused");
    assert!(node.agent_log().contains("disk full: reading paused"));

    // Logs go on and rotate (the agent holds the rotated files open).
    for c in 0..3 {
        node.write(c, 300, 8);
        if node.seen(c) {
            node.rotate(c);
        }
        node.write(c, 200, 8);
    }
    // A restart on the full disk starts and pauses again: no crash loop.
    kill9(&mut agent);
    let mut agent = start(&node, &p.url, "full", &env);
    let addr = node.metrics_addr();
    wait_until("the restarted agent to pause for disk space", LONG, || {
        metric(&addr, "shipper_disk_full_paused") >= 1.0
    });
    assert!(agent.try_wait().unwrap().is_none(), "the agent exited");
    assert_eq!(healthz(&addr), 200);

    p.set(|f| f.down = false);
    node.assert_all_indexed(&es.url, "full");
    wait_until("the pause to end", LONG, || {
        metric(&addr, "shipper_disk_full_paused") == 0.0
    });
    assert!(metric(&addr, "shipper_disk_full_episodes_total") >= 1.0);
    assert_eq!(metric(&addr, "shipper_buffer_records_lost_total"), 0.0);
    assert!(sigterm(&mut agent).success());
}

/// With a floor, the agent stops writing before the volume is full: the free space
/// never goes under it (less one checkpoint file), and everything is delivered later.
#[test]
fn the_free_space_floor_is_kept() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    p.set(|f| f.down = true);
    let mut node = Node::new();
    let size: u64 = 4 << 20;
    let floor: u64 = 3 << 20;
    let Some(_fs) = small_fs(&node.data(), size) else {
        return;
    };
    for c in 0..3 {
        node.write(c, 3000, 8);
    }
    let env = env(&floor.to_string());
    let mut agent = start(&node, &p.url, "floor", &env);
    let addr = node.metrics_addr();
    wait_until("the agent to stop at the floor", LONG, || {
        metric(&addr, "shipper_disk_full_paused") >= 1.0
    });
    assert!(node.agent_log().contains("free-space floor reached"));
    let free = available(&node.data());
    assert!(
        free + 64 * 1024 >= floor,
        "the volume went under the floor: {free} bytes free"
    );
    assert!(agent.try_wait().unwrap().is_none(), "the agent exited");
    p.set(|f| f.down = false);
    node.assert_all_indexed(&es.url, "floor");
    assert!(sigterm(&mut agent).success());
}

/// Free bytes of the volume at `dir`, from `df`.
fn available(dir: &Path) -> u64 {
    let o = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}
