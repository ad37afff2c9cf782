//! The fleet harness, short: ten real agents share one write pool through a backlog, an
//! outage and the drain, and every line of every agent is created exactly once. The
//! throughput, fairness and retry-herd figures are the benchmark's (`benches/fleet`),
//! not asserted here.

use crate::fleet_bench::capacity::WritePool;
use crate::fleet_bench::harness::{run, Plan};
use std::time::Duration;

#[test]
fn ten_agents_through_saturation_and_an_outage_lose_and_repeat_nothing() {
    let Some(es) = crate::util::es() else { return };
    let work = tempfile::tempdir().unwrap();
    let plan = Plan {
        agents: 10,
        capacity: 2000.0,
        queue_docs: 2000,
        normal: 10,
        backlog: 3000,
        rate: 20.0,
        saturated: 20,
        warmup: 5,
        outage: 20,
        after: 20,
        batch_docs: 200,
        drain_timeout: Duration::from_secs(180),
    };
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_shipper"));
    let r = run(&bin, &es.url, work.path(), &plan, false).unwrap();
    assert_eq!(r.lost, 0, "{r:#?}");
    assert_eq!(r.duplicates, 0, "{r:#?}");
    assert_eq!(r.created, r.written, "{r:#?}");
    assert_eq!(r.in_elasticsearch, r.written, "{r:#?}");
    assert!(
        r.figures.refused_rps + r.figures.items_refused_ps > 0.0,
        "the pool pushed back: {r:#?}"
    );
    assert!(
        r.figures.outage_rps > 0.0,
        "the agents met the outage: {r:#?}"
    );
    assert_eq!(r.odd, 0, "{r:#?}");
}

#[test]
fn takes_in_order_queues_and_refuses_beyond_the_queue() {
    let mut p = WritePool::new(1000.0, 500);
    let a = p.offer(0.0, 300);
    assert_eq!(a.admitted, 300);
    assert!((a.done_at - 0.3).abs() < 1e-9);
    let b = p.offer(0.0, 300);
    assert_eq!(b.admitted, 200, "the queue holds 500 documents");
    assert!((b.done_at - 0.5).abs() < 1e-9);
    assert_eq!(p.offer(0.0, 10).admitted, 0, "full: refused whole");
    // 0.2 s later 200 documents were indexed: room for 200 again.
    assert_eq!(p.offer(0.2, 1000).admitted, 200);
    // Idle pools start from now.
    let c = p.offer(10.0, 100);
    assert!((c.done_at - 10.1).abs() < 1e-9);
}
