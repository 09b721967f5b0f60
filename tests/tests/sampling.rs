//! `--sample N` on both nodes: the kernel keeps the same packets on both
//! sides (a hash of invariant inner fields), so the join still matches
//! them; the verdict scales counts, says it was sampled, and the incident
//! comes out the same.

use anyhow::{Result, ensure};
use flannel_trace::Segment;
use flannel_trace_tests::{
    preflight,
    report::{direction, pod_flows, scenario_with, show},
    scenario::{Fault, Live},
};

fn sampled(n: u32, pings: u32) -> Live {
    Live {
        extra: vec!["--sample".into(), n.to_string()],
        pod_pings: pings,
        ..Live::default()
    }
}

#[test]
fn the_incident_verdict_is_the_same_when_both_nodes_sample_1_in_16() -> Result<()> {
    preflight()?;
    let v = scenario_with(Fault::UnderlayDrop, &sampled(16, 64))?;
    let ba = direction(&v, "node-b")?;
    ensure!(
        ba.segment == Segment::Underlay && ba.certain,
        "{}",
        show(ba)
    );
    ensure!(ba.sample == 16, "{}", show(ba));
    let verdict = &ba.verdict;
    ensure!(
        verdict.contains("lost in the underlay") && verdict.contains("sampled 1 in 16"),
        "{verdict}"
    );
    ensure!(
        direction(&v, "node-a")?.segment == Segment::Delivered,
        "A→B must stay healthy"
    );
    Ok(())
}

#[test]
fn both_nodes_keep_the_same_packets_so_nothing_is_invented_lost() -> Result<()> {
    preflight()?;
    let pings = 400;
    let v = scenario_with(Fault::None, &sampled(4, pings))?;
    for from in ["node-a", "node-b"] {
        let d = direction(&v, from)?;
        ensure!(d.segment == Segment::Delivered, "{from}: {}", show(d));
        let pods = pod_flows(d);
        ensure!(!pods.is_empty(), "{from}: no pod flow");
        for f in pods {
            ensure!(f.sample == 4, "{}", show(f));
            // About a quarter kept, scaled back: within a wide band around
            // the pings sent (400 ± 50 %), and every kept packet delivered.
            let sent = f.sent;
            ensure!(
                (u64::from(pings) / 2..=u64::from(pings) * 3 / 2).contains(&sent),
                "{from}: sent {sent}: {}",
                show(f)
            );
            ensure!(f.delivered == f.sent, "{}", show(f));
            ensure!(f.hops.pod_ingress == f.hops.pod_egress, "{}", show(f));
        }
    }
    Ok(())
}
