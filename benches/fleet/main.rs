//! Fleet benchmark: N real agents against one Elasticsearch whose write capacity is
//! limited (see `harness.rs`), through a steady backlog, an outage and the drain.
//!
//!   cargo build --release && cargo bench --bench fleet
//!   FLEET_AGENTS=20 FLEET_CAPACITY=2500 FLEET_QUEUE=2500 FLEET_NORMAL=30 \
//!   FLEET_BACKLOG=... FLEET_RATE=25 FLEET_SATURATED=120 FLEET_WARMUP=15 \
//!   FLEET_OUTAGE=60 FLEET_AFTER=60 FLEET_BATCH_DOCS=125 cargo bench --bench fleet
//!
//! The agents are `SHIPPER_BIN` (default target/release/shipper, which this does not
//! build); osmem-server as `.ci/setup-deps` installs it. The defaults: a queue of one
//! second of capacity (the agents' requests in flight are more: the pool refuses, as a
//! real cluster under a fleet does); a backlog the capacity takes 1.5 saturated phases
//! to ship, so every agent has backlog throughout; batches of capacity / agents
//! documents; agents writing a fifth of the capacity in all.

mod capacity;
mod harness;
mod proxy;
mod report;

use std::time::Duration;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("SHIPPER_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo.join("target/release/shipper"));
    anyhow::ensure!(
        bin.exists(),
        "no agent at {} (cargo build --release)",
        bin.display()
    );
    let agents = env("FLEET_AGENTS", 20) as usize;
    // osmem-server itself indexes about 5,000-7,000 documents a second on this kind of
    // machine: the pool's capacity stays well under it, so the pool is what limits.
    let capacity = env("FLEET_CAPACITY", 2500);
    let saturated = env("FLEET_SATURATED", 120);
    let plan = harness::Plan {
        agents,
        capacity: capacity as f64,
        queue_docs: env("FLEET_QUEUE", capacity),
        backlog: env(
            "FLEET_BACKLOG",
            capacity * saturated * 3 / 2 / agents.max(1) as u64,
        ),
        normal: env("FLEET_NORMAL", 30),
        // Normal operation uses a fifth of the capacity.
        rate: std::env::var("FLEET_RATE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.2 * capacity as f64 / agents.max(1) as f64),
        saturated,
        warmup: env("FLEET_WARMUP", 15),
        outage: env("FLEET_OUTAGE", 60),
        after: env("FLEET_AFTER", 60),
        // One accepted batch a second per agent at its fair share, so shares are
        // measured in many requests, not a few.
        batch_docs: env(
            "FLEET_BATCH_DOCS",
            (capacity / agents.max(1) as u64).max(10),
        ),
        drain_timeout: Duration::from_secs(env("FLEET_DRAIN_TIMEOUT", 900)),
    };
    let osmem = harness::Osmem::binary()
        .ok_or_else(|| anyhow::anyhow!("osmem-server is not installed: run .ci/setup-deps"))?;
    let es = harness::Osmem::start(&osmem)?;
    let work = repo.join(format!("target/bench-fleet/n{agents}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    eprintln!("fleet: {plan:?}");
    let r = harness::run(&bin, &es.url, &work, &plan, true)?;
    println!("{}", report::HEADER);
    println!("{}", r.figures.row(plan.agents, plan.capacity, r.drain));
    println!(
        "written {} created {} duplicates {} lost {} in osmem-server {} (409 answers {}, odd {})",
        r.written, r.created, r.duplicates, r.lost, r.in_elasticsearch, r.already, r.odd
    );
    std::fs::write(work.join("timeline.csv"), &r.timeline)?;
    eprintln!(
        "fleet: the timeline is in {}",
        work.join("timeline.csv").display()
    );
    anyhow::ensure!(
        r.lost == 0 && r.duplicates == 0 && r.in_elasticsearch == r.written,
        "lines lost or duplicated"
    );
    Ok(())
}
