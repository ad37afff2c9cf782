//! What a fleet run is judged by, from a per-second timeline of what reached
//! Elasticsearch: throughput against capacity, each agent's share, the request rate
//! before, during and after an outage, and the drain. The real-process harness and the
//! simulation both record a [`Timeline`] and compute these [`Figures`] the same way.

/// One second of what arrived at Elasticsearch.
#[derive(Debug, Default, Clone)]
pub struct Second {
    /// Bulk requests that arrived.
    pub requests: u64,
    /// Of them: refused whole (429), answered 503 (down).
    pub refused: u64,
    pub down: u64,
    /// Documents offered (in every bulk request that arrived), and of them refused item
    /// by item (429).
    pub docs: u64,
    pub items_refused: u64,
    /// Documents created, per agent.
    pub created: Vec<u64>,
}

#[derive(Debug, Default, Clone)]
pub struct Timeline {
    pub agents: usize,
    pub seconds: Vec<Second>,
}

impl Timeline {
    pub fn new(agents: usize) -> Timeline {
        Timeline {
            agents,
            seconds: Vec::new(),
        }
    }

    /// The second holding `at` (seconds since the start).
    pub fn at(&mut self, at: f64) -> &mut Second {
        let i = at.max(0.0) as usize;
        while self.seconds.len() <= i {
            self.seconds.push(Second {
                created: vec![0; self.agents],
                ..Second::default()
            });
        }
        &mut self.seconds[i]
    }
}

/// When the phases were, in the timeline's seconds.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// Normal operation (every agent caught up, writing its steady rate), from `normal.0`
    /// to `normal.1`; then every agent gets a backlog.
    pub normal: (f64, f64),
    /// Measuring the saturated cluster starts (the backlog arrived, warm-up over).
    pub measured: f64,
    /// Elasticsearch goes away, and comes back.
    pub down: f64,
    pub back: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Documents created a second between `measured` and `down`, and over capacity.
    pub throughput: f64,
    pub utilisation: f64,
    /// Each agent's documents in that window over the mean: the lowest and the highest.
    pub share_min: f64,
    pub share_max: f64,
    /// The 5th and 95th percentiles of the shares.
    pub share_p5: f64,
    pub share_p95: f64,
    /// Bulk requests a second in normal operation, in the saturated window, during the
    /// outage, and the highest 5-second average in the minute after it.
    pub normal_rps: f64,
    pub steady_rps: f64,
    pub outage_rps: f64,
    pub herd_rps: f64,
    /// Requests refused whole, and documents refused item by item, a second, in the
    /// measured window.
    pub refused_rps: f64,
    pub items_refused_ps: f64,
}

impl Figures {
    pub fn of(t: &Timeline, p: Phases, capacity: f64) -> Figures {
        let secs = &t.seconds;
        let window = |from: f64, to: f64| {
            let b = (to.floor().max(0.0) as usize).min(secs.len());
            let a = (from.ceil().max(0.0) as usize).min(b);
            &secs[a..b]
        };
        let per_s = |s: &[Second], f: fn(&Second) -> u64| {
            s.iter().map(f).sum::<u64>() as f64 / s.len().max(1) as f64
        };
        let steady = window(p.measured, p.down);
        let mut per_agent = vec![0u64; t.agents];
        for s in steady {
            for (a, n) in per_agent.iter_mut().zip(&s.created) {
                *a += n;
            }
        }
        let total: u64 = per_agent.iter().sum();
        let mut sorted = per_agent.clone();
        sorted.sort_unstable();
        let pct = |p: f64| {
            sorted
                .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
                .copied()
                .unwrap_or(0) as f64
        };
        let mean = (total as f64 / t.agents.max(1) as f64).max(1e-9);
        let throughput = total as f64 / steady.len().max(1) as f64;
        let after = window(p.back, p.back + 60.0);
        let herd_rps = after
            .windows(5.min(after.len()).max(1))
            .map(|w| w.iter().map(|s| s.requests).sum::<u64>() as f64 / w.len() as f64)
            .fold(0.0, f64::max);
        Figures {
            throughput,
            utilisation: throughput / capacity,
            share_min: per_agent.iter().copied().min().unwrap_or(0) as f64 / mean,
            share_max: per_agent.iter().copied().max().unwrap_or(0) as f64 / mean,
            share_p5: pct(0.05) / mean,
            share_p95: pct(0.95) / mean,
            normal_rps: per_s(window(p.normal.0, p.normal.1), |s| s.requests),
            steady_rps: per_s(steady, |s| s.requests),
            outage_rps: per_s(window(p.down, p.back), |s| s.requests),
            herd_rps,
            refused_rps: per_s(steady, |s| s.refused),
            items_refused_ps: per_s(steady, |s| s.items_refused),
        }
    }

    /// The retry herd: the minute after the outage over normal operation, and over the
    /// saturated cluster before the outage.
    pub fn herd(&self) -> (f64, f64) {
        (
            self.herd_rps / self.normal_rps.max(1e-9),
            self.herd_rps / self.steady_rps.max(1e-9),
        )
    }

    /// One line of the benchmark's table.
    pub fn row(&self, agents: usize, capacity: f64, drain: Option<f64>) -> String {
        format!(
            "| {agents} | {capacity:.0} | {:.0} ({:.1} %) | {:.2}–{:.2} ({:.2}–{:.2}) | {:.1} | {:.1} ({:.1} refused, {:.0} items refused/s) | {:.1} | {:.1} ({:.2}× normal, {:.2}× saturated) | {} |",
            self.throughput,
            100.0 * self.utilisation,
            self.share_min,
            self.share_max,
            self.share_p5,
            self.share_p95,
            self.normal_rps,
            self.steady_rps,
            self.refused_rps,
            self.items_refused_ps,
            self.outage_rps,
            self.herd_rps,
            self.herd().0,
            self.herd().1,
            drain.map_or("–".into(), |d| format!("{d:.1} s")),
        )
    }
}

impl Timeline {
    /// One line a second: requests, refused, down, docs, items refused, created.
    pub fn csv(&self) -> String {
        let mut out = String::from("second,requests,refused,down,docs,items_refused,created\n");
        for (i, s) in self.seconds.iter().enumerate() {
            out += &format!(
                "{i},{},{},{},{},{},{}\n",
                s.requests,
                s.refused,
                s.down,
                s.docs,
                s.items_refused,
                s.created.iter().sum::<u64>()
            );
        }
        out
    }
}

/// The table's header, for [`Figures::row`].
pub const HEADER: &str = "| agents | capacity docs/s | throughput docs/s | shares of the mean: min–max (5th–95th percentile) | requests/s normal | requests/s saturated | requests/s in the outage | requests/s after (peak 5 s) | drain after the outage |\n|---|---|---|---|---|---|---|---|---|";
