//! Fleet simulation: thousands of agents against one Elasticsearch, deterministic and in
//! virtual time, with the agent's own delivery control (`shipper::control`: the AIMD
//! concurrency limit and the jittered backoff) and the harness's own capacity model
//! (`capacity.rs`) and figures (`report.rs`). It plays the harness's scenario (every
//! agent starts with a backlog, keeps writing, Elasticsearch answers 503 for a while,
//! then the drain) at sizes this machine cannot run as processes.
//!
//!   cargo bench --bench fleet_sim           # N = 20, 50, 100, 200, 1000, 5000
//!   SIM_AGENTS="20 50" SIM_SEED=2 FLEET_CAPACITY=5000 cargo bench --bench fleet_sim
//!
//! The FLEET_* settings are the harness's (benches/fleet/main.rs), with the same
//! defaults; above 200 agents FLEET_CAPACITY is per 20 agents, so a batch stays one
//! second of an agent's share. SIM_SPREAD=1 gives the agents log rates spread like real
//! nodes (log-normal, σ = 1, the same mean) instead of all the same rate.
//! SIM_TIMELINE_DIR=DIR writes each run's per-second timeline there.
//!
//! What it models, as `ship::Shipper::deliver` does: a frame holds its concurrency
//! permit through its retries; a 429 (whole, or any item) halves the limit; a clean
//! answer counts toward growing it, and one slower than `SLOW_RESPONSE` halves it; a
//! whole failure (429, 503) waits `backoff(attempt)` and sends the frame again; refused
//! items are sent again alone after `backoff(attempt)`. Batches are cut at `batch_docs`
//! or once the oldest line is `linger` (1 s) old. The network adds 1 ms a request.

mod capacity;
mod report;

use capacity::WritePool;
use report::{Figures, Phases, Timeline};
use shipper::config;
use shipper::control::{backoff, Concurrency};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

const RTT: f64 = 0.001;
/// Time osmem-server takes per document once the pool let a request through (the
/// harness forwards it then; osmem indexes about 6,000 documents a second): part of the
/// latency the agents see, not of the capacity.
const SERVICE_PER_DOC: f64 = 1.0 / 6000.0;
/// The agent's defaults: `elasticsearch.linger_ms`, `max_concurrency`, `max_backoff_ms`.
const LINGER: f64 = config::DEFAULT_LINGER_MS as f64 / 1000.0;
const MAX_CONCURRENCY: usize = config::DEFAULT_MAX_CONCURRENCY as usize;
const MAX_BACKOFF: Duration = Duration::from_millis(config::DEFAULT_MAX_BACKOFF_MS);
/// The harness appends to the files every 100 ms.
const TICK: f64 = 0.1;

#[derive(Debug, Clone)]
struct Plan {
    agents: usize,
    capacity: f64,
    queue_docs: u64,
    normal: f64,
    backlog: u64,
    rate: f64,
    spread: bool,
    saturated: f64,
    warmup: f64,
    outage: f64,
    after: f64,
    batch_docs: u64,
    seed: u64,
}

/// A frame being delivered: its first line not created yet, the documents still to go,
/// and its attempt count.
#[derive(Debug, Clone, Copy)]
struct Frame {
    start: u64,
    docs: u64,
    attempt: u32,
    sent_at: f64,
}

struct Agent {
    rate: f64,
    /// Lines written by `t`: rate × t until writing stops, and `backlog` from `normal`.
    backlog: u64,
    normal: f64,
    cut: u64,
    last_cut: f64,
    /// Frames cut and waiting for a permit: first line, documents.
    queued: VecDeque<(u64, u64)>,
    /// Frames holding a permit (sending, or waiting to retry), by slot.
    frames: Vec<Option<Frame>>,
    limit: Concurrency,
    rng: fastrand::Rng,
    /// When the pending pump is due (one at a time; a stale one is ignored).
    pump_at: Option<u64>,
}

impl Agent {
    fn written(&self, t: f64, stop: f64) -> u64 {
        let backlog = if t >= self.normal { self.backlog } else { 0 };
        let ticks = (t.min(stop) / TICK + 1e-9).floor() * TICK;
        backlog + (self.rate * ticks).floor() as u64
    }

    /// The first line not created yet: every line before it was.
    fn shipped(&self) -> u64 {
        self.frames
            .iter()
            .flatten()
            .map(|f| f.start)
            .chain(self.queued.front().map(|q| q.0))
            .fold(self.cut, u64::min)
    }

    /// Nothing in flight and nothing cut: the agent's batch goes out at once.
    fn idle(&self) -> bool {
        self.in_flight() == 0 && self.queued.is_empty()
    }

    fn in_flight(&self) -> usize {
        self.frames.iter().filter(|f| f.is_some()).count()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// Cut batches and start frames the limit allows.
    Pump { agent: usize },
    /// The answer to a frame's request arrives.
    Answer {
        agent: usize,
        slot: usize,
        kind: Kind,
    },
    /// A frame's backoff is over: send it again.
    Retry { agent: usize, slot: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Down,
    Refused,
    /// Documents taken (the rest refused item by item).
    Taken(u64),
}

struct Sim {
    plan: Plan,
    now: f64,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    pool: WritePool,
    agents: Vec<Agent>,
    timeline: Timeline,
    down: (f64, f64),
    stop: f64,
    /// How many agents have not yet shipped what they had written when Elasticsearch
    /// came back, and that per agent (0: shipped).
    behind: Option<(usize, Vec<u64>)>,
    drain: Option<f64>,
}

fn nanos(t: f64) -> u64 {
    (t * 1e9).round() as u64
}

impl Sim {
    fn new(plan: Plan) -> Sim {
        let mut rng = fastrand::Rng::with_seed(plan.seed);
        let agents = (0..plan.agents)
            .map(|i| {
                let rate = if plan.spread {
                    // Log-normal with σ = 1 and the plan's mean (Box–Muller).
                    let (u1, u2) = (rng.f64().max(1e-12), rng.f64());
                    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                    plan.rate * (z - 0.5).exp()
                } else {
                    plan.rate
                };
                Agent {
                    rate,
                    backlog: plan.backlog,
                    normal: plan.normal,
                    cut: 0,
                    last_cut: 0.0,
                    queued: VecDeque::new(),
                    frames: Vec::new(),
                    limit: Concurrency::new(MAX_CONCURRENCY),
                    rng: fastrand::Rng::with_seed(
                        plan.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    ),
                    pump_at: None,
                }
            })
            .collect();
        let down = plan.normal + plan.saturated;
        let back = down + plan.outage;
        Sim {
            pool: WritePool::new(plan.capacity, plan.queue_docs),
            timeline: Timeline::new(plan.agents),
            down: (down, back),
            stop: back + plan.after,
            agents,
            now: 0.0,
            queue: BinaryHeap::new(),
            seq: 0,
            behind: None,
            drain: None,
            plan,
        }
    }

    fn at(&mut self, t: f64, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse((nanos(t), self.seq, e)));
    }

    fn run(&mut self) -> (Figures, Option<f64>) {
        for i in 0..self.plan.agents {
            // Agents start over the first 100 ms, not in one instant.
            let t = self.agents[i].rng.f64() * 0.1;
            self.agents[i].pump_at = Some(nanos(t));
            self.at(t, Event::Pump { agent: i });
        }
        let deadline = self.stop + 3600.0;
        while let Some(Reverse((t, _, e))) = self.queue.pop() {
            self.now = t as f64 / 1e9;
            if self.now > deadline || (self.now >= self.stop && self.all_shipped()) {
                break;
            }
            if self.behind.is_none() && self.now >= self.down.1 {
                // What each agent had written when Elasticsearch came back (0 once shipped).
                let want: Vec<u64> = self
                    .agents
                    .iter()
                    .map(|a| {
                        Some(a.written(self.down.1, self.stop))
                            .filter(|&w| a.shipped() < w)
                            .unwrap_or(0)
                    })
                    .collect();
                let n = want.iter().filter(|&&w| w > 0).count();
                if n == 0 {
                    self.drain = Some(0.0);
                }
                self.behind = Some((n, want));
            }
            match e {
                Event::Pump { agent } => {
                    if self.agents[agent].pump_at == Some(t) {
                        self.agents[agent].pump_at = None;
                        self.pump(agent);
                    }
                }
                Event::Answer { agent, slot, kind } => self.answer(agent, slot, kind),
                Event::Retry { agent, slot } => self.send(agent, slot),
            }
        }
        let phases = Phases {
            normal: (5.0, self.plan.normal),
            measured: self.plan.normal + self.plan.warmup,
            down: self.down.0,
            back: self.down.1,
        };
        (
            Figures::of(&self.timeline, phases, self.plan.capacity),
            self.drain,
        )
    }

    fn all_shipped(&self) -> bool {
        self.agents
            .iter()
            .all(|a| a.shipped() >= a.written(self.stop, self.stop))
    }

    /// Cuts what is due into frames and starts as many as the limit allows; comes back
    /// when the next partial batch is due.
    fn pump(&mut self, i: usize) {
        let (now, stop, batch) = (self.now, self.stop, self.plan.batch_docs);
        let a = &mut self.agents[i];
        let written = a.written(now, stop);
        while written - a.cut >= batch {
            a.queued.push_back((a.cut, batch));
            a.cut += batch;
            a.last_cut = now;
        }
        if written > a.cut && (a.idle() || now - a.last_cut >= LINGER - 1e-9) {
            a.queued.push_back((a.cut, written - a.cut));
            a.cut = written;
            a.last_cut = now;
        }
        loop {
            let a = &mut self.agents[i];
            if a.in_flight() >= a.limit.limit() {
                break;
            }
            let Some((start, docs)) = a.queued.pop_front() else {
                break;
            };
            let slot = match a.frames.iter().position(Option::is_none) {
                Some(s) => s,
                None => {
                    a.frames.push(None);
                    a.frames.len() - 1
                }
            };
            a.frames[slot] = Some(Frame {
                start,
                docs,
                attempt: 0,
                sent_at: now,
            });
            self.send(i, slot);
        }
        self.pump_later(i);
    }

    fn pump_later(&mut self, i: usize) {
        let a = &self.agents[i];
        if a.queued.is_empty() || a.in_flight() < a.limit.limit() {
            // The next batch fills, or the linger runs out.
            let fill = if a.rate > 0.0 && self.now < self.stop {
                let need =
                    (a.cut + self.plan.batch_docs).saturating_sub(a.written(self.now, self.stop));
                self.now + need as f64 / a.rate
            } else {
                f64::INFINITY
            };
            let backlog = if self.now < a.normal {
                a.normal
            } else {
                f64::INFINITY
            };
            // Idle, the next write goes out as it comes.
            let tick = if a.idle() {
                ((self.now / TICK + 1e-9).floor() + 1.0) * TICK
            } else {
                f64::INFINITY
            };
            let next = fill
                .min(a.last_cut + LINGER)
                .min(backlog)
                .min(tick)
                .max(self.now + 1e-3);
            let due = (self.now < self.stop || a.cut < a.written(self.stop, self.stop))
                && next.is_finite()
                && a.pump_at.is_none_or(|t| t > nanos(next));
            if due {
                self.agents[i].pump_at = Some(nanos(next));
                self.at(next, Event::Pump { agent: i });
            }
        }
        // Otherwise an answer frees a permit and pumps.
    }

    fn send(&mut self, i: usize, slot: usize) {
        let now = self.now;
        let Some(frame) = self.agents[i].frames[slot].as_mut() else {
            return;
        };
        frame.sent_at = now;
        let docs = frame.docs as usize;
        let sec = self.timeline.at(now);
        sec.requests += 1;
        sec.docs += docs as u64;
        let (kind, at) = if now >= self.down.0 && now < self.down.1 {
            sec.down += 1;
            (Kind::Down, now + RTT)
        } else {
            let adm = self.pool.offer(now, docs);
            if adm.admitted == 0 {
                sec.refused += 1;
                (Kind::Refused, now + RTT)
            } else {
                sec.items_refused += (docs - adm.admitted) as u64;
                let service = adm.admitted as f64 * SERVICE_PER_DOC;
                (
                    Kind::Taken(adm.admitted as u64),
                    adm.done_at + service + RTT,
                )
            }
        };
        self.at(
            at,
            Event::Answer {
                agent: i,
                slot,
                kind,
            },
        );
    }

    fn answer(&mut self, i: usize, slot: usize, kind: Kind) {
        let now = self.now;
        let a = &mut self.agents[i];
        let Some(mut frame) = a.frames[slot] else {
            return;
        };
        let retry = match kind {
            Kind::Taken(n) => {
                self.timeline.at(now).created[i] += n;
                frame.start += n;
                if n == frame.docs {
                    a.limit
                        .success(Duration::from_secs_f64(now - frame.sent_at));
                    a.frames[slot] = None;
                    None
                } else {
                    a.limit.throttled();
                    frame.docs -= n;
                    frame.attempt += 1;
                    Some(backoff(frame.attempt - 1, MAX_BACKOFF, a.rng.f64()))
                }
            }
            Kind::Refused | Kind::Down => {
                if kind == Kind::Refused {
                    a.limit.throttled();
                }
                let d = backoff(frame.attempt, MAX_BACKOFF, a.rng.f64());
                frame.attempt += 1;
                Some(d)
            }
        };
        if let Some(d) = retry {
            self.agents[i].frames[slot] = Some(frame);
            self.at(now + d.as_secs_f64(), Event::Retry { agent: i, slot });
        }
        let shipped = self.agents[i].shipped();
        if let Some((behind, want)) = self.behind.as_mut() {
            if want[i] > 0 && shipped >= want[i] {
                want[i] = 0;
                *behind -= 1;
                if *behind == 0 {
                    self.drain = Some(now - self.down.1);
                }
            }
        }
        if retry.is_none() {
            self.pump(i);
        }
    }
}

fn env(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("SIM_AGENTS")
        .unwrap_or_else(|_| "20 50 100 200 1000 5000".into())
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    println!("{}", report::HEADER);
    for agents in sizes {
        // Up to 200 agents, the harness's capacity; beyond, the capacity a 20-agent run
        // gives each agent (125 documents a second), so a batch stays a second's share.
        let capacity = if agents <= 200 {
            env("FLEET_CAPACITY", 2500.0)
        } else {
            env("FLEET_CAPACITY", 2500.0) / 20.0 * agents as f64
        };
        let saturated = env("FLEET_SATURATED", 120.0);
        let plan = Plan {
            agents,
            capacity,
            queue_docs: env("FLEET_QUEUE", capacity) as u64,
            backlog: env("FLEET_BACKLOG", capacity * saturated * 1.5 / agents as f64) as u64,
            normal: env("FLEET_NORMAL", 30.0),
            rate: env("FLEET_RATE", 0.2 * capacity / agents as f64),
            spread: env("SIM_SPREAD", 0.0) == 1.0,
            saturated,
            warmup: env("FLEET_WARMUP", 15.0),
            outage: env("FLEET_OUTAGE", 60.0),
            after: env("FLEET_AFTER", 60.0),
            batch_docs: env(
                "FLEET_BATCH_DOCS",
                (capacity / agents as f64).floor().max(10.0),
            ) as u64,
            seed: env("SIM_SEED", 1.0) as u64,
        };
        let started = std::time::Instant::now();
        let mut sim = Sim::new(plan.clone());
        let (figures, drain) = sim.run();
        println!("{}", figures.row(agents, capacity, drain));
        if let Ok(dir) = std::env::var("SIM_TIMELINE_DIR") {
            let _ = std::fs::write(format!("{dir}/sim-{agents}.csv"), sim.timeline.csv());
        }
        eprintln!(
            "fleet_sim: {agents} agents simulated in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}
