//! The fleet run: N real agent processes, each with its own small pod log tree and data
//! directory, writing through the capacity-limiting [`Proxy`] into one osmem-server.
//! Every agent writes a steady trickle; then every agent gets a backlog at once (the
//! cluster saturates); Elasticsearch goes away for a while and comes back; at the end
//! every line of every agent must have been created exactly once. What the proxy recorded becomes the [`Report`].

use super::capacity::WritePool;
use super::proxy::{Proxy, Record};
use super::report::{Figures, Phases};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub agents: usize,
    /// The write pool: documents a second, and documents it queues.
    pub capacity: f64,
    pub queue_docs: u64,
    /// Seconds of normal operation (each agent writing `rate`) before every agent's file
    /// gets `backlog` lines at once.
    pub normal: u64,
    pub backlog: u64,
    /// Lines a second appended to every agent's file while the run lasts.
    pub rate: f64,
    /// Seconds from the backlog to the outage (the first `warmup` are not measured).
    pub saturated: u64,
    pub warmup: u64,
    /// Seconds Elasticsearch answers 503 to everything (0: no outage).
    pub outage: u64,
    /// Seconds of writing after the outage.
    pub after: u64,
    /// The agents' `elasticsearch.batch_docs`.
    pub batch_docs: u64,
    /// How long the final drain may take before the run fails.
    pub drain_timeout: Duration,
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub figures: Figures,
    /// The timeline as CSV (see `Timeline::csv`).
    pub timeline: String,
    /// Seconds from the end of the outage until every agent had shipped every line it
    /// had written by then.
    pub drain: Option<f64>,
    /// Lines written, documents created (distinct), created more than once, never
    /// created, and found in osmem-server at the end.
    pub written: u64,
    pub created: u64,
    pub duplicates: u64,
    pub lost: u64,
    pub in_elasticsearch: u64,
    /// Items osmem answered 409 (a retried document already there) and anything odd.
    pub already: u64,
    pub odd: u64,
}

/// A running osmem-server (an in-memory OpenSearch-compatible server), killed on drop.
pub struct Osmem {
    child: Child,
    pub url: String,
}

impl Drop for Osmem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Osmem {
    /// Where osmem-server is installed (by `.ci/setup-deps`): `OSMEM_SERVER`, or the
    /// Python package's bundled binary.
    pub fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("OSMEM_SERVER") {
            return Some(PathBuf::from(p));
        }
        let out = Command::new("python3")
            .args([
                "-c",
                "import osmem_server, os; print(os.path.dirname(osmem_server.__file__))",
            ])
            .output()
            .ok()?;
        let dir = String::from_utf8(out.stdout).ok()?;
        let bin = PathBuf::from(dir.trim()).join("bin/osmem-server");
        bin.exists().then_some(bin)
    }

    /// Starts it on a free loopback port; it announces its URL on its first line.
    pub fn start(bin: &Path) -> std::io::Result<Osmem> {
        let mut child = Command::new(bin)
            .args(["--addr", "127.0.0.1:0", "--no-stdin-watch"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            std::io::BufReader::new(out).read_line(&mut line)?;
        }
        let url = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["url"].as_str().map(str::to_owned));
        match url {
            Some(url) => Ok(Osmem { child, url }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::io::Error::other(format!(
                    "osmem-server did not announce its URL: {line:?}"
                )))
            }
        }
    }
}

/// One agent's files and process.
struct Agent {
    log: std::fs::File,
    written: u64,
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const STAMP: &str = "2026-12-01T00:00:00.000000000Z";

fn lines(agent: usize, from: u64, to: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity((to - from) as usize * 48);
    for seq in from..to {
        let _ = writeln!(out, "{STAMP} stdout F fleet a{agent} {seq:09}");
    }
    out
}

impl Agent {
    fn start(bin: &Path, work: &Path, i: usize, url: &str, plan: &Plan) -> std::io::Result<Agent> {
        let dir = work.join(format!("a{i}"));
        let pod = dir.join(format!(
            "pods/fleet_a{i}_00000000-0000-0000-0000-{i:012}/app"
        ));
        std::fs::create_dir_all(&pod)?;
        std::fs::create_dir_all(dir.join("no-docker"))?;
        let log = std::fs::File::create(pod.join("0.log"))?;
        let config = format!(
            r#"[input]
docker_root = "{d}/no-docker"
pods_root = "{d}/pods"
[agent]
data_dir = "{d}/data"
[elasticsearch]
urls = ["{url}"]
index_prefix = "fleet"
batch_docs = {batch}
[kubernetes]
enabled = false
[node]
files = []
journal = false
[metrics]
addr = "127.0.0.1:0"
"#,
            d = dir.display(),
            batch = plan.batch_docs,
        );
        std::fs::write(dir.join("shipper.toml"), config)?;
        let stderr = std::fs::File::create(dir.join("shipper.stderr"))?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(dir.join("shipper.toml"))
            .args(["--log-level", "warn"])
            .env("NODE_NAME", format!("fleet-a{i}"))
            .env_remove("SHIPPER_BIN")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()?;
        Ok(Agent {
            log,
            written: 0,
            child,
        })
    }

    fn write(&mut self, i: usize, n: u64) -> std::io::Result<()> {
        self.log
            .write_all(&lines(i, self.written, self.written + n))?;
        self.written += n;
        Ok(())
    }
}

/// Runs the plan with the agent binary `bin` against osmem-server at `es`, in `work`
/// (which it fills). Progress goes to stderr when `verbose`.
pub fn run(
    bin: &Path,
    es: &str,
    work: &Path,
    plan: &Plan,
    verbose: bool,
) -> anyhow::Result<Report> {
    let proxy = Proxy::start(
        es,
        plan.agents,
        WritePool::new(plan.capacity, plan.queue_docs),
    );
    let mut agents = Vec::with_capacity(plan.agents);
    for (i, url) in proxy.urls.iter().enumerate() {
        agents.push(Agent::start(bin, work, i, url, plan)?);
    }
    let t0 = proxy.now();
    let backlog_at = t0 + plan.normal as f64;
    let mut backlog_written = false;
    let outage_at = backlog_at + plan.saturated as f64;
    let back_at = outage_at + plan.outage as f64;
    let stop_writing = back_at + plan.after as f64;
    let tick = Duration::from_millis(100);
    let mut next = Instant::now();
    let mut carry = 0.0f64;
    let mut down = false;
    let mut at_back: Option<Vec<u64>> = None;
    let mut drain = None;
    let mut last_note = 0u64;
    loop {
        let now = proxy.now();
        if now >= stop_writing && drain.is_some() {
            break;
        }
        if now >= stop_writing && now > back_at + plan.drain_timeout.as_secs_f64() {
            break;
        }
        if now < stop_writing {
            carry += plan.rate * tick.as_secs_f64();
            let n = carry.floor() as u64;
            carry -= n as f64;
            if n > 0 {
                for (i, a) in agents.iter_mut().enumerate() {
                    a.write(i, n)?;
                }
            }
        }
        if !backlog_written && now >= backlog_at {
            for (i, a) in agents.iter_mut().enumerate() {
                a.write(i, plan.backlog)?;
            }
            backlog_written = true;
        }
        if !down && plan.outage > 0 && now >= outage_at && now < back_at {
            proxy.set_down(true);
            down = true;
        }
        if down && now >= back_at {
            proxy.set_down(false);
            down = false;
        }
        if now >= back_at && at_back.is_none() && !down {
            at_back = Some(agents.iter().map(|a| a.written).collect());
        }
        if let (Some(want), None) = (&at_back, drain) {
            if (0..agents.len()).all(|i| proxy.shipped(i) >= want[i]) {
                drain = Some(proxy.now() - back_at);
            }
        }
        if verbose && now as u64 >= last_note + 10 {
            last_note = now as u64;
            let created: u64 = (0..agents.len()).map(|i| proxy.shipped(i)).sum();
            let written: u64 = agents.iter().map(|a| a.written).sum();
            eprintln!(
                "fleet: t={:.0}s written {written} created {created}{}",
                now - t0,
                if down { " (down)" } else { "" }
            );
        }
        for (i, a) in agents.iter_mut().enumerate() {
            if let Some(status) = a.child.try_wait()? {
                anyhow::bail!(
                    "agent {i} exited ({status}): see {}",
                    work.join(format!("a{i}/shipper.stderr")).display()
                );
            }
        }
        next += tick;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    // Every line of every agent, created: wait for the rest (bounded).
    let deadline = Instant::now() + plan.drain_timeout;
    while (0..agents.len()).any(|i| proxy.shipped(i) < agents[i].written)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let written: Vec<u64> = agents.iter().map(|a| a.written).collect();
    drop(agents);
    let in_elasticsearch = count(es, "fleet-*")?;
    let record = proxy.record.lock().unwrap_or_else(|p| p.into_inner());
    Ok(report(plan, &record, t0, &written, drain, in_elasticsearch))
}

/// Documents in indices matching `pattern`, after a refresh.
fn count(es: &str, pattern: &str) -> anyhow::Result<u64> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let _ = http.post(format!("{es}/{pattern}/_refresh")).send();
    let v: serde_json::Value = http.get(format!("{es}/{pattern}/_count")).send()?.json()?;
    v["count"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no count in {v}"))
}

fn report(
    plan: &Plan,
    r: &Record,
    t0: f64,
    written: &[u64],
    drain: Option<f64>,
    in_elasticsearch: u64,
) -> Report {
    let backlog_at = t0 + plan.normal as f64;
    let down = backlog_at + plan.saturated as f64;
    let phases = Phases {
        // The agents' first seconds (template, first scan) are not normal operation.
        normal: (t0 + 5.0, backlog_at),
        measured: backlog_at + plan.warmup as f64,
        down,
        back: down + plan.outage as f64,
    };
    let (mut created, mut duplicates, mut lost) = (0, 0, 0);
    for (seqs, &w) in r.seqs.iter().zip(written) {
        for seq in 0..w.max(seqs.len() as u64) {
            match seqs.get(seq as usize).copied().unwrap_or(0) {
                0 => lost += 1,
                n => {
                    created += 1;
                    duplicates += u64::from(n - 1);
                }
            }
        }
    }
    Report {
        figures: Figures::of(&r.timeline, phases, plan.capacity),
        timeline: r.timeline.csv(),
        drain,
        written: written.iter().sum(),
        created,
        duplicates,
        lost,
        in_elasticsearch,
        already: r.already,
        odd: r.odd,
    }
}
