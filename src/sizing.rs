//! `shipper sizing`: an Elasticsearch plan for a cluster's log volume (data nodes, memory
//! and heap, disk per volume, primary shards and replicas) by Elastic's guidance for 8.x,
//! and the agent's requests from its own measured costs. `shipper manifests` takes the
//! same flags and deploys the plan.
//!
//! The rules, each a constant below:
//! - A primary shard holds at most [`SHARD_TARGET_GB`] at the end of its day and fewer
//!   than 200 million documents: Elastic advises 10 to 50 GB a shard and under 200
//!   million documents ("Size your shards", 8.x). The 7.x rule of 20 shards per GB of
//!   heap was withdrawn in 8.3; what bounds shards now is
//!   `cluster.max_shards_per_node` (1000).
//! - Disk holds the kept days (retention, plus today's index) of every copy, on disk
//!   about the raw size ([`ON_DISK_PER_RAW`]), plus 25 %: Elastic's sizing formula
//!   (15 % for the low disk watermark at 85 %, 10 % margin).
//! - The cluster keeps working with one data node lost: the others hold all the disk and
//!   all the shards (under the 1000 limit). At least three nodes: the manifests make
//!   every node master-eligible, and three is the smallest quorum that survives a loss.
//! - One replica: every shard survives a lost node.
//! - Memory is a power of two from 4 to 64 GiB, at least 1/[`DISK_PER_MEMORY`] of the
//!   disk; heap is half of it (the rest is Lucene's page cache), at most 31 GiB (the JVM
//!   keeps compressed pointers below 32 GiB; 8.x's own automatic heap has the same cap).

use std::fmt::Write as _;

/// A primary shard's size at the end of its day, at most: inside Elastic's 10–50 GB,
/// with room for a busier day than the average.
pub const SHARD_TARGET_GB: f64 = 40.0;
/// Documents a shard may hold (Elastic: "below 200 million").
pub const SHARD_MAX_DOCS: f64 = 200e6;
/// Raw bytes a log line takes, on average, to count documents from bytes.
pub const LINE_BYTES: f64 = 250.0;
/// Size on disk of one copy over the raw log size: Elastic's sizing formula counts them
/// equal (the Kubernetes metadata on every document compresses well). Measure yours:
/// `GET _cat/indices?v&h=index,pri.store.size` over a day's raw volume.
pub const ON_DISK_PER_RAW: f64 = 1.0;
/// Disk over stored data: the low watermark's 15 % and a 10 % margin.
pub const DISK_OVERHEAD: f64 = 1.25;
/// Shards a node may hold (`cluster.max_shards_per_node`).
pub const MAX_SHARDS_PER_NODE: u64 = 1000;
/// Largest volume per data node, GiB: a lost node's copies are rebuilt from the others
/// in hours, not days.
pub const MAX_DISK_GIB: u64 = 2048;
/// GiB of disk per GiB of memory at most (a logging hot node: searches mostly hit the
/// last days, which stay in the page cache).
pub const DISK_PER_MEMORY: u64 = 32;
/// The agent's CPU per GiB of logs shipped, in CPU seconds (benches/e2e-ship.sh, the
/// 1 GiB corpus with default settings: 6.36 to 6.56).
pub const AGENT_CPU_S_PER_GIB: f64 = 6.6;
/// The agent's peak resident memory while shipping as fast as it can (the same runs:
/// 40 to 45 MiB), and the memory limit the DaemonSet gives it.
pub const AGENT_PEAK_RSS_MIB: u32 = 45;
pub const AGENT_MEMORY_MIB: u32 = 256;
/// The agent's CPU request, at least; it rises to cover four times a node's average
/// (bursts, and catching up after an outage).
pub const AGENT_CPU_MIN_MILLIS: u32 = 100;
/// ...and at most two cores (a node writing 6.5 TiB a day).
pub const AGENT_CPU_MAX_MILLIS: u32 = 2000;

/// Print an Elasticsearch plan for a cluster's logs: data nodes, memory and heap, disk
/// per volume, primary shards per daily index and replicas, and the agent's requests.
///
/// `shipper manifests` takes the same flags and deploys the plan.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub volume: Volume,
    /// Days the daily indices are kept.
    #[arg(long, value_name = "DAYS", default_value_t = 7)]
    pub retention_days: u32,
}

/// What the plan is for.
#[derive(Debug, Clone, clap::Args)]
pub struct Volume {
    /// Kubernetes nodes (one agent each).
    #[arg(long, value_name = "N")]
    pub nodes: u32,
    /// Raw logs of all nodes together, in GB a day (what containers and nodes write).
    #[arg(long, value_name = "GB")]
    pub gb_per_day: f64,
    /// Routed index prefixes the container logs spread over, evenly (an index_route like
    /// logs-{namespace} makes one daily index per namespace).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub prefixes: u32,
}

/// The plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Sizing {
    pub data_nodes: u32,
    /// Memory the node needs (a power of two), and its heap: half of it, at most 31 GiB.
    /// The container's limit is twice the heap.
    pub memory_gib: u32,
    pub heap_gib: u32,
    /// Volume per data node.
    pub disk_gib: u64,
    /// Primary shards of each daily index (each prefix's and the node logs').
    pub shards: u32,
    pub replicas: u32,
    /// A primary shard's size at the end of its day, GB.
    pub shard_gb: f64,
    /// Daily indices kept (every prefix and the node logs', retention + today).
    pub indices: u64,
    /// Shards in the cluster, and per data node.
    pub total_shards: u64,
    pub shards_per_node: u64,
    /// Data stored, GB (every copy), and the disk that asks for.
    pub stored_gb: f64,
    /// The agent: CPU request (millicores), its average use per node, memory limit.
    pub agent_cpu_millis: u32,
    pub agent_cpu_avg_millis: f64,
    pub agent_memory_mib: u32,
}

/// Bad input: the flag, and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{option} {reason}")]
pub struct SizingError {
    pub option: &'static str,
    pub reason: String,
}

/// The plan for `volume` kept `retention_days` days.
pub fn plan(volume: &Volume, retention_days: u32) -> Result<Sizing, SizingError> {
    let invalid = |option, reason: &str| {
        Err(SizingError {
            option,
            reason: reason.to_owned(),
        })
    };
    if volume.nodes == 0 {
        return invalid("--nodes", "must be at least 1");
    }
    if !(volume.gb_per_day.is_finite() && volume.gb_per_day > 0.0 && volume.gb_per_day <= 1e7) {
        return invalid(
            "--gb-per-day",
            "must be a number above 0 (and at most 10,000,000)",
        );
    }
    if volume.prefixes == 0 || volume.prefixes > 10_000 {
        return invalid("--prefixes", "must be between 1 and 10000");
    }
    if retention_days > 3650 {
        return invalid("--retention-days", "must be at most 3650");
    }
    let daily_gb = volume.gb_per_day * ON_DISK_PER_RAW;
    let prefixes = f64::from(volume.prefixes);
    let per_prefix_gb = daily_gb / prefixes;
    let per_prefix_docs = volume.gb_per_day * 1e9 / LINE_BYTES / prefixes;
    let shards = (per_prefix_gb / SHARD_TARGET_GB)
        .ceil()
        .max((per_prefix_docs / SHARD_MAX_DOCS).ceil())
        .max(1.0) as u32;
    if shards > crate::config::MAX_NUMBER_OF_SHARDS {
        return Err(SizingError {
            option: "--gb-per-day",
            reason: format!(
                "makes daily indices of {shards} primary shards, over Elasticsearch's {}: spread the volume over more prefixes (--prefixes, with an index_route)",
                crate::config::MAX_NUMBER_OF_SHARDS
            ),
        });
    }
    let replicas = 1u32;
    let copies = u64::from(replicas) + 1;
    // Today's index and the kept days; the node logs' index has the same shards (one
    // template covers every index of the agent's).
    let live_days = u64::from(retention_days) + 1;
    let indices = (u64::from(volume.prefixes) + 1) * live_days;
    let total_shards = u64::from(shards) * indices * copies;
    let stored_gb = daily_gb * live_days as f64 * copies as f64;
    let disk_gb = stored_gb * DISK_OVERHEAD;
    let disk_gib_total = disk_gb * 1e9 / f64::from(1u32 << 30);
    // With one node lost, the rest hold the disk and the shards.
    let by_disk = (disk_gib_total / MAX_DISK_GIB as f64).ceil() as u64 + 1;
    let by_shards = total_shards.div_ceil(MAX_SHARDS_PER_NODE) + 1;
    let data_nodes = by_disk.max(by_shards).max(3);
    let disk_gib = ((disk_gib_total / (data_nodes - 1) as f64 / 10.0).ceil() as u64 * 10).max(10);
    let memory_gib = disk_gib
        .div_ceil(DISK_PER_MEMORY)
        .max(4)
        .next_power_of_two()
        .min(64) as u32;
    let heap_gib = (memory_gib / 2).min(31);
    let per_node_gib_per_day =
        volume.gb_per_day * 1e9 / f64::from(1u32 << 30) / f64::from(volume.nodes);
    let agent_cpu_avg_millis = per_node_gib_per_day * AGENT_CPU_S_PER_GIB / 86_400.0 * 1000.0;
    let agent_cpu_millis = ((agent_cpu_avg_millis * 4.0).ceil() as u32)
        .clamp(AGENT_CPU_MIN_MILLIS, AGENT_CPU_MAX_MILLIS);
    Ok(Sizing {
        data_nodes: u32::try_from(data_nodes).unwrap_or(u32::MAX),
        memory_gib,
        heap_gib,
        disk_gib,
        shards,
        replicas,
        shard_gb: per_prefix_gb / f64::from(shards),
        indices,
        total_shards,
        shards_per_node: total_shards.div_ceil(data_nodes),
        stored_gb,
        agent_cpu_millis,
        agent_cpu_avg_millis,
        agent_memory_mib: AGENT_MEMORY_MIB,
    })
}

impl Sizing {
    /// The plan as `shipper sizing` prints it.
    pub fn render(&self, volume: &Volume, retention_days: u32) -> String {
        let mut out = String::new();
        let per_node = volume.gb_per_day / f64::from(volume.nodes);
        let _ = writeln!(
            out,
            "Elasticsearch 8.x for {} nodes writing {} GB of logs a day ({per_node:.2} GB a node), kept {retention_days} days\n",
            volume.nodes, volume.gb_per_day
        );
        let _ = writeln!(
            out,
            "data nodes        {} (every one master-eligible)",
            self.data_nodes
        );
        let _ = writeln!(
            out,
            "memory per node   {} GiB (the container's limit: twice the heap), heap {} GiB (ES_JAVA_OPTS -Xms{h}g -Xmx{h}g)",
            2 * self.heap_gib,
            self.heap_gib,
            h = self.heap_gib
        );
        let _ = writeln!(
            out,
            "disk per node     {} Gi (one PersistentVolumeClaim each)",
            self.disk_gib
        );
        let _ = writeln!(
            out,
            "primary shards    {} per daily index{}, {:.1} GB each at the end of the day (the node logs' index too: one template covers every index)",
            self.shards,
            if volume.prefixes > 1 {
                format!(" of each of the {} prefixes", volume.prefixes)
            } else {
                String::new()
            },
            self.shard_gb
        );
        let _ = writeln!(out, "replicas          {}", self.replicas);
        let _ = writeln!(
            out,
            "indices kept      {} ({} shards, {} a node; the limit is {MAX_SHARDS_PER_NODE} a node)",
            self.indices, self.total_shards, self.shards_per_node
        );
        let _ = writeln!(
            out,
            "data stored       {:.0} GB with replicas, disk {:.0} GB with 25 % headroom",
            self.stored_gb,
            self.stored_gb * DISK_OVERHEAD
        );
        let _ = writeln!(
            out,
            "agent (per node)  requests cpu {}m (average use {:.2}m), memory limit {} MiB (peak measured {AGENT_PEAK_RSS_MIB} MiB)",
            self.agent_cpu_millis, self.agent_cpu_avg_millis, self.agent_memory_mib
        );
        let _ = writeln!(out);
        if self.shard_gb < 10.0 {
            let _ = writeln!(
                out,
                "note: shards of {:.1} GB are under Elastic's 10 GB floor: fine at this volume, though a weekly index (elasticsearch.index_date_format = \"%G.%V\") would make fewer, fuller shards.",
                self.shard_gb
            );
        }
        if self.data_nodes > 10 {
            let _ = writeln!(
                out,
                "note: at this size, three dedicated master nodes keep the cluster state's work off the data nodes; the generated StatefulSet makes every node master-eligible (add a master StatefulSet yourself)."
            );
        }
        let _ = writeln!(
            out,
            "assumed: on disk a copy takes {ON_DISK_PER_RAW}× the raw size, a line is {LINE_BYTES} bytes; the cluster keeps working with a data node lost (N-1 hold every shard and byte)."
        );
        let _ = writeln!(
            out,
            "deploy it: shipper manifests --nodes {} --gb-per-day {} --retention-days {retention_days}{}",
            volume.nodes,
            volume.gb_per_day,
            if volume.prefixes > 1 {
                format!(" --prefixes {}", volume.prefixes)
            } else {
                String::new()
            }
        );
        out
    }
}

/// `shipper sizing`.
pub fn run(opts: &Options, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let sizing = plan(&opts.volume, opts.retention_days)?;
    out.write_all(sizing.render(&opts.volume, opts.retention_days).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan for input the test knows is valid (a refusal is the test's failure).
    fn ok(v: &Volume, days: u32) -> Sizing {
        plan(v, days).unwrap_or_else(|e| panic!("{v:?}, {days} days: {e}"))
    }

    fn volume(nodes: u32, gb_per_day: f64) -> Volume {
        Volume {
            nodes,
            gb_per_day,
            prefixes: 1,
        }
    }

    #[test]
    fn a_small_cluster_gets_three_nodes_and_one_shard_a_day() {
        let s = ok(&volume(10, 10.0), 7);
        assert_eq!(s.data_nodes, 3);
        assert_eq!((s.shards, s.replicas), (1, 1));
        // 10 GB × 8 days × 2 copies × 1.25 = 200 GB = 186.3 GiB, over two nodes (one
        // may be lost): 93.1 → 100 Gi.
        assert_eq!(s.disk_gib, 100);
        assert_eq!((s.memory_gib, s.heap_gib), (4, 2));
        assert_eq!(s.indices, 16);
        assert_eq!(s.total_shards, 32);
        assert_eq!(s.agent_cpu_millis, AGENT_CPU_MIN_MILLIS);
    }

    #[test]
    fn a_large_cluster_is_bounded_by_disk_and_keeps_shards_in_the_window() {
        let s = ok(&volume(5000, 5000.0), 7);
        assert_eq!(s.shards, 125, "40 GB shards");
        assert!((10.0..=50.0).contains(&s.shard_gb));
        // 100 TB of disk = 93,132 GiB over 2 TiB volumes: 46 + 1 nodes.
        assert_eq!(s.data_nodes, 47);
        assert!(s.disk_gib <= MAX_DISK_GIB + 10);
        assert_eq!((s.memory_gib, s.heap_gib), (64, 31));
        assert!(s.shards_per_node * (u64::from(s.data_nodes)) >= s.total_shards);
        assert!(s.total_shards / u64::from(s.data_nodes - 1) <= MAX_SHARDS_PER_NODE);
    }

    #[test]
    fn many_prefixes_are_bounded_by_the_shard_limit() {
        // 2,000 namespaces routed to their own daily indices, kept 30 days: 124,062
        // shards need 125 nodes + 1 at 1000 a node, whatever the disk.
        let v = Volume {
            nodes: 100,
            gb_per_day: 100.0,
            prefixes: 2000,
        };
        let s = ok(&v, 30);
        assert_eq!(s.shards, 1);
        assert_eq!(s.total_shards, (2000 + 1) * 31 * 2);
        // 50 TB a day in one prefix would need 1,250 shards a daily index: refused.
        let e = plan(&volume(1000, 50_000.0), 7).unwrap_err();
        assert_eq!(e.option, "--gb-per-day");
        assert!(e.reason.contains("--prefixes"), "{e}");
        let v = Volume {
            prefixes: 2,
            ..volume(1000, 50_000.0)
        };
        assert_eq!(ok(&v, 7).shards, 625);
        assert_eq!(s.data_nodes as u64, s.total_shards.div_ceil(1000) + 1);
    }

    #[test]
    fn a_busy_node_raises_the_agents_cpu_request() {
        // 2 TB a day on one node: 1862 GiB × 6.6 s / 86400 s = 142m on average.
        let s = ok(&volume(1, 2000.0), 1);
        assert!(
            (s.agent_cpu_avg_millis - 142.3).abs() < 0.5,
            "{}",
            s.agent_cpu_avg_millis
        );
        assert_eq!(s.agent_cpu_millis, 570);
        let v = Volume {
            prefixes: 4,
            ..volume(1, 100_000.0)
        };
        let s = ok(&v, 1);
        assert_eq!(
            s.agent_cpu_millis, AGENT_CPU_MAX_MILLIS,
            "two cores at most"
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_flag() {
        for (v, days, flag) in [
            (volume(0, 1.0), 7, "--nodes"),
            (volume(1, 0.0), 7, "--gb-per-day"),
            (volume(1, f64::NAN), 7, "--gb-per-day"),
            (volume(1, -3.0), 7, "--gb-per-day"),
            (
                Volume {
                    prefixes: 0,
                    ..volume(1, 1.0)
                },
                7,
                "--prefixes",
            ),
            (volume(1, 1.0), 100_000, "--retention-days"),
        ] {
            let e = plan(&v, days).unwrap_err();
            assert!(e.to_string().starts_with(flag), "{e}");
        }
    }
}
