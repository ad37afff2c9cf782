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
    let episodes = metric(&addr, "shipper_disk_full_episodes_total");
    assert!(episodes >= 1.0);
    assert_eq!(metric(&addr, "shipper_buffer_records_lost_total"), 0.0);
    eprintln!(
        "disk full: {} lines delivered, {episodes} pause episodes after the restart",
        node.written.len()
    );
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
    eprintln!("floor: {free} bytes free of {size} at the pause, floor {floor}");
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

/// Stopped, the node goes on: known files grow and rotate twice (Docker shifts `.1` to
/// `.2`; kubelet renames to `0.log.<timestamp>` and gzips the older one), new containers
/// are born and rotated twice. At start every line is read: the rotated files the
/// checkpoints know resume where they were (inside a `.gz` too), the others from the
/// start.
#[test]
fn stop_write_and_rotate_twice_then_start_reads_every_line() {
    let Some(es) = es() else { return };
    let mut node = Node::new();
    node.write(0, 50, 8);
    node.cri_write(0, 50, 8);
    let mut agent = node.agent(&es.url, "away", &[]);
    node.assert_all_indexed(&es.url, "away");
    assert!(sigterm(&mut agent).success());

    for _ in 0..2 {
        node.write(0, 30, 8);
        node.rotate(0);
        node.write(1, 30, 8);
        node.rotate(1);
        node.cri_write(0, 30, 8);
        node.cri_rotate(0);
        node.cri_write(1, 30, 8);
        node.cri_rotate(1);
    }
    for c in 0..2 {
        node.write(c, 5, 8);
        node.cri_write(c, 5, 8);
    }
    let gz: Vec<_> = std::fs::read_dir(node.cri_log(0).parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".gz"))
        .collect();
    assert_eq!(gz.len(), 1, "kubelet gzipped the older rotation: {gz:?}");

    let mut agent = node.agent(&es.url, "away", &[]);
    node.assert_all_indexed(&es.url, "away");
    let addr = node.metrics_addr();
    // Born while stopped and rotated: Docker c0's second file, both of c1's; the same
    // for the CRI containers.
    assert_eq!(metric(&addr, "shipper_files_unseen_rotated_total"), 6.0);
    eprintln!(
        "away: {} lines, 6 unseen rotated files read",
        node.written.len()
    );
    assert!(sigterm(&mut agent).success());
}

/// `input.start_at = "end"` on a first start skips what the files already hold; a file
/// that appears later is read from its start.
#[test]
fn start_at_end_skips_what_is_there_on_the_first_start() {
    let Some(es) = es() else { return };
    let mut node = Node::new();
    node.write(0, 200, 8);
    node.written.clear();
    let mut agent = node.agent(&es.url, "end", &[("SHIPPER_INPUT_START_AT", "end")]);
    wait_until("the file to be checkpointed", LONG, || node.seen(0));
    node.write(0, 10, 8);
    node.write(1, 10, 8);
    node.assert_all_indexed(&es.url, "end");
    assert!(sigterm(&mut agent).success());
}

/// A file deleted while the agent was stopped, before it was read to its end: the
/// bytes its checkpoint knew it held past the read position are counted
/// (`deleted_while_down`), its checkpoint goes, and everything read before is delivered.
#[test]
fn a_file_deleted_while_stopped_is_counted() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    p.set(|f| f.down = true);
    let mut node = Node::new();
    node.write(0, 3000, 8);
    let env = [
        ("SHIPPER_BUFFER_MAX_BYTES", "65536"),
        ("SHIPPER_BUFFER_SEGMENT_BYTES", "16384"),
        ("SHIPPER_ELASTICSEARCH_BATCH_BYTES", "8192"),
        ("SHIPPER_ELASTICSEARCH_COMPRESSION", "false"),
    ];
    let mut agent = node.agent(&p.url, "gone", &env);
    let position = || -> Option<(u64, u64)> {
        let text = std::fs::read_to_string(node.data().join("checkpoints")).ok()?;
        let body: serde_json::Value = serde_json::from_str(text.split_once('\n')?.1).ok()?;
        let e = &body["files"][0];
        let offset = e["offset"].as_u64()?;
        Some((offset, e["len"].as_u64().unwrap_or(offset)))
    };
    wait_until("reading to pause mid-file", LONG, || {
        position().is_some_and(|(offset, len)| offset > 0 && len > offset)
    });
    assert!(sigterm(&mut agent).success());
    let (offset, len) = position().unwrap();
    let bytes = std::fs::read(node.log(0)).unwrap();
    std::fs::remove_dir_all(node.log(0).parent().unwrap()).unwrap();
    // What stays: the lines that start before the checkpoint (they are in the buffer).
    node.written = bytes[..offset as usize]
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .map(|v| v["log"].as_str().unwrap().trim_end_matches('\n').to_owned())
        .collect();
    p.set(|f| f.down = false);
    let mut agent = node.agent(&p.url, "gone", &env);
    node.assert_all_indexed(&es.url, "gone");
    let addr = node.metrics_addr();
    let series = "shipper_rotated_unread_bytes_total{reason=\"deleted_while_down\"}";
    assert_eq!(metric(&addr, series), (len - offset) as f64);
    eprintln!(
        "deleted while down: {} bytes counted, {} lines delivered",
        len - offset,
        node.written.len()
    );
    assert!(node
        .agent_log()
        .contains("file deleted while the agent was stopped"));
    assert!(sigterm(&mut agent).success());
}

/// 50 `kill -9` at random moments while five Docker and five CRI containers write and
/// rotate, some rotations (of files no agent saw) while the agent is dead: every line
/// once.
#[test]
fn kill_9_fifty_times_while_writing_and_rotating() {
    let Some(es) = es() else { return };
    let mut node = Node::new();
    let mut rng = fastrand::Rng::with_seed(15);
    let mut agent = node.agent(&es.url, "k50", &[]);
    for round in 0..50 {
        for _ in 0..rng.usize(1..4) {
            let c = rng.usize(0..5);
            node.write(c, rng.usize(5..40), 8);
            node.cri_write(c, rng.usize(5..40), 8);
            // A running agent is promised files it had the time to see.
            if rng.u8(0..4) == 0 && node.seen(c) {
                node.rotate(c);
                node.write(c, rng.usize(1..10), 8);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.u64(20..300)));
        kill9(&mut agent);
        if round % 3 == 2 {
            // While it is dead, anything goes.
            let c = rng.usize(0..5);
            node.write(c, 20, 8);
            node.rotate(c);
            node.write(c, 5, 8);
            node.cri_write(c, 20, 8);
            node.cri_rotate(c);
            node.cri_write(c, 5, 8);
        }
        agent = node.agent(&es.url, "k50", &[]);
    }
    node.write(0, 10, 8);
    node.assert_all_indexed(&es.url, "k50");
    eprintln!("kill -9 x50: {} lines, each once", node.written.len());
    assert!(sigterm(&mut agent).success());
}

/// A clean stop remembers what Elasticsearch acknowledged: the next start sends none of
/// it again (only the line written after it reaches the proxy).
#[test]
fn a_clean_restart_sends_nothing_again() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    let mut node = Node::new();
    for c in 0..3 {
        node.write(c, 300, 8);
    }
    let mut agent = node.agent(&p.url, "again", &[]);
    node.assert_all_indexed(&es.url, "again");
    assert!(sigterm(&mut agent).success());
    let bulks = || p.seen.bulk.load(std::sync::atomic::Ordering::Relaxed);
    let before = bulks();

    let mut agent = node.agent(&p.url, "again", &[]);
    node.write(0, 1, 8);
    node.assert_all_indexed(&es.url, "again");
    assert_eq!(bulks(), before + 1, "requests after the restart");
    let addr = node.metrics_addr();
    assert_eq!(
        metric(&addr, "shipper_records_total{outcome=\"duplicate\"}"),
        0.0
    );
    assert!(sigterm(&mut agent).success());
}

/// The buffer cap is hard: with Elasticsearch down and more logs than the cap, the peak
/// the agent reports stays within `max_bytes` plus one frame, here within `max_bytes`
/// itself (no batch is larger than the cap: a batch is past `batch_bytes` by less than
/// one read, here 16 KiB); the segments on disk agree.
#[test]
fn the_buffer_cap_holds() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    p.set(|f| f.down = true);
    let mut node = Node::new();
    for c in 0..3 {
        node.write(c, 2000, 8);
    }
    let cap: u64 = 200_000;
    let env = [
        ("SHIPPER_BUFFER_MAX_BYTES", "200000"),
        ("SHIPPER_BUFFER_SEGMENT_BYTES", "65536"),
        ("SHIPPER_ELASTICSEARCH_BATCH_BYTES", "20000"),
        ("SHIPPER_ELASTICSEARCH_COMPRESSION", "false"),
        ("SHIPPER_INPUT_READ_BYTES", "16384"),
    ];
    let mut agent = node.agent(&p.url, "cap", &env);
    let addr = node.metrics_addr();
    // Full: the next batch does not fit (reading paused, the log says so at debug).
    wait_until("the buffer to fill", LONG, || {
        node.agent_log().contains("buffer full; reading paused")
    });
    let peak = metric(&addr, "shipper_buffer_bytes_peak") as u64;
    let mut on_disk = 0;
    let mut largest = 0;
    for e in std::fs::read_dir(node.data().join("buffer")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "seg") {
            let bytes = std::fs::read(&path).unwrap();
            on_disk += bytes.len() as u64;
            let (frames, _) = shipper::frame::scan(&bytes);
            largest = frames
                .iter()
                .map(|f| f.header.frame_len())
                .fold(largest, u64::max);
        }
    }
    assert!(largest > 0 && largest < cap, "largest frame {largest}");
    assert!(
        peak >= on_disk && peak > cap / 2,
        "peak {peak}, on disk {on_disk}"
    );
    assert!(peak <= cap, "peak {peak} over the cap {cap}");
    eprintln!("cap {cap}: peak {peak}, largest frame {largest}, on disk {on_disk}");
    p.set(|f| f.down = false);
    node.assert_all_indexed(&es.url, "cap");
    assert!(metric(&addr, "shipper_buffer_bytes_peak") as u64 <= cap);
    assert!(sigterm(&mut agent).success());
}

/// The index template deleted while the agent runs (an operator, a snapshot restore) is
/// installed again before the next daily index is created: that index gets the agent's
/// mappings (`stream` a keyword), not dynamic ones (`stream` text).
#[test]
fn a_deleted_template_is_installed_again() {
    let Some(es) = es() else { return };
    let mut node = Node::new();
    node.write(0, 20, 8);
    let env = [("SHIPPER_ELASTICSEARCH_TEMPLATE_CHECK_INTERVAL_MS", "200")];
    let mut agent = node.agent(&es.url, "heal", &env);
    node.assert_all_indexed(&es.url, "heal");
    let template = format!("{}/_index_template/shipper-heal", es.url);
    let status = |r: reqwest::blocking::Response| r.status().as_u16();
    assert_eq!(http().get(&template).send().map(status).unwrap(), 200);
    assert_eq!(http().delete(&template).send().map(status).unwrap(), 200);
    let addr = node.metrics_addr();
    wait_until("the template to be installed again", LONG, || {
        http().get(&template).send().map(status).unwrap_or(0) == 200
    });
    assert_eq!(metric(&addr, "shipper_template_reinstalls_total"), 1.0);
    assert!(node
        .agent_log()
        .contains("the index template was missing: installed again"));
    // The next day's index is created with the template's mappings.
    node.write(0, 5, 9);
    node.assert_all_indexed(&es.url, "heal");
    let mapping: serde_json::Value = http()
        .get(format!("{}/heal-2024.07.09/_mapping", es.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let props = &mapping["heal-2024.07.09"]["mappings"]["properties"];
    assert_eq!(props["stream"]["type"], "keyword", "{mapping}");
    assert_eq!(props["@timestamp"]["type"], "date_nanos", "{mapping}");
    assert!(sigterm(&mut agent).success());
}

/// 200 files each holding an unfinished 512 KiB record (Docker's 16 KiB chunks, the
/// last one not written yet): with a 4 MiB budget the agent's memory stays far below the
/// 100 MiB pending; once the records are finished every one is delivered whole.
#[test]
fn unfinished_records_stay_within_the_memory_budget() {
    let Some(es) = es() else { return };
    let node = Node::new();
    let chunk = "y".repeat(16 * 1024);
    let line = |log: &str, n: usize| {
        let t = format!("2024-07-08T03:42:57.{n:09}Z");
        serde_json::json!({"log": log, "stream": "stdout", "time": t}).to_string() + "\n"
    };
    let mut total = 0;
    for c in 0..200 {
        let mut s = line(&format!("first {c}\n"), 0);
        for i in 0..32 {
            s += &line(&chunk, i + 1);
        }
        total += s.len();
        append(&node.log(c), s.as_bytes());
    }
    let env = [("SHIPPER_INPUT_PENDING_MEMORY_BYTES", "4194304")];
    let mut agent = node.agent(&es.url, "budget", &env);
    let addr = node.metrics_addr();
    wait_until("every byte read", LONG, || {
        metric(&addr, "shipper_read_bytes_total") as usize >= total
    });
    let rss = crate::agent::rss_kib(agent.id());
    assert!(
        rss < 64 * 1024,
        "RSS {rss} KiB with 100 MiB of records pending"
    );
    for c in 0..200 {
        append(&node.log(c), line("end\n", 40).as_bytes());
    }
    wait_until("every record delivered", LONG, || {
        es_count(&es.url, "budget-*") == 400
    });
    assert!(metric(&addr, "shipper_records_reread_total") >= 1.0);
    assert_eq!(metric(&addr, "shipper_records_truncated_total"), 0.0);
    eprintln!("budget: RSS {} MiB with 200 x 512 KiB pending", rss / 1024);
    assert!(sigterm(&mut agent).success());
}

/// The dead-letter file on a full disk: the batch whose rejections cannot be written is
/// not acknowledged (nothing rejected is lost) and goes again once there is room; the
/// file never holds a torn line, and what it holds is what was counted.
#[test]
fn a_full_disk_under_the_dead_letter_file_loses_no_rejection() {
    let Some(es) = es() else { return };
    let p = proxy::start(&es.url);
    p.set(|f| f.down = true);
    let mut node = Node::new();
    let Some(_fs) = small_fs(&node.data(), 2 << 20) else {
        return;
    };
    node.write(0, 100, 8);
    let mut agent = start(&node, &p.url, "dlq", &env("0"));
    let addr = node.metrics_addr();
    wait_until("every line buffered", LONG, || {
        metric(&addr, "shipper_buffer_records") >= 100.0
    });
    // Fill the volume, then let Elasticsearch answer, rejecting every 5th document.
    let filler = node.data().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 2 << 20]);
    p.set(|f| {
        f.down = false;
        f.item_status_every = Some((5, 400));
    });
    wait_until("the dead-letter file to wait for room", LONG, || {
        metric(&addr, "shipper_disk_full_paused") >= 1.0
    });
    assert_eq!(
        metric(&addr, "shipper_records_total{outcome=\"dead_letter\"}"),
        0.0
    );
    assert!(agent.try_wait().unwrap().is_none(), "the agent exited");
    std::fs::remove_file(&filler).unwrap();
    wait_until("the batch to be accounted for", LONG, || {
        metric(&addr, "shipper_buffer_records") == 0.0
    });
    let dead = metric(&addr, "shipper_records_total{outcome=\"dead_letter\"}");
    let text = std::fs::read_to_string(node.data().join("dead-letter.ndjson")).unwrap_or_default();
    for l in text.lines() {
        serde_json::from_str::<serde_json::Value>(l).expect("whole lines only");
    }
    assert!(dead >= 1.0);
    assert_eq!(
        text.lines().count() as f64,
        dead,
        "what is counted is in the file"
    );
    eprintln!("dead letter on a full disk: {dead} rejections written once there was room");
    assert!(sigterm(&mut agent).success());
}
