//! The verdict as text.

use std::fmt::Write as _;

use crate::verdict::{Flow, Report, Segment};

pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let names: Vec<String> = r
        .nodes
        .iter()
        .map(|n| {
            format!(
                "{} ({})",
                n.name,
                n.underlay
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    let port = r.nodes.first().map_or(0, |n| n.port);
    let _ = writeln!(
        out,
        "flannel-trace verdict: {} <-> {}, VXLAN udp/{port}",
        names[0],
        names.get(1).map_or("?", |s| s.as_str())
    );
    match (&r.clock, r.nodes.get(1)) {
        (Some(c), Some(b)) => {
            let _ = writeln!(
                out,
                "clock: {} = {} {:+.3} ms ± {:.3} ms (measured over the peer channel)",
                b.name,
                r.nodes[0].name,
                c.offset_ns as f64 / 1e6,
                c.error_ns as f64 / 1e6
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "clock: the nodes' own wall clocks, not compared (cross-node latencies are indicative)"
            );
        }
    }
    for c in &r.config {
        let _ = writeln!(out, "config: {c}");
    }
    for u in &r.uncertain {
        let _ = writeln!(out, "UNCERTAIN: {u}");
    }
    for u in &r.untraced {
        let _ = writeln!(out, "NOT TRACED: {u}");
    }
    // Steps of one moment (a switch escalated at once) read as the last.
    for (i, t) in r.thinned.iter().enumerate() {
        let superseded = r.thinned[i + 1..]
            .iter()
            .any(|n| n.node == t.node && n.from_wall_ns == t.from_wall_ns);
        if !superseded {
            let _ = writeln!(out, "THINNED: {}", thinned_sentence(t));
        }
    }
    for d in &r.directions {
        let _ = writeln!(out, "\n{}", d.verdict);
        if let Some(fix) = &d.fix {
            let _ = writeln!(out, "  fix: {fix}");
        }
        for f in &d.flows {
            flow(&mut out, f, &d.from, &d.to);
        }
    }
    out
}

/// What a thinned live stream means for the counts.
pub fn thinned_sentence(t: &crate::verdict::Thinned) -> String {
    let hms = t.from.get(11..19).unwrap_or(&t.from);
    format!(
        "{}'s live stream thinned to 1 in {} from {hms}: counts after that are estimates ({} × the packets kept); `flannel-trace join` of the recordings gives exact counts",
        t.node, t.rate, t.rate
    )
}

/// A hop's count, or `untraced` for a hop the node could not trace.
fn count(n: Option<u64>) -> String {
    n.map_or_else(|| "untraced".into(), |n| n.to_string())
}

fn flow(out: &mut String, f: &Flow, from: &str, to: &str) {
    let h = &f.hops;
    let state = match f.segment {
        Segment::Delivered => "delivered".to_owned(),
        Segment::NoTraffic => "no traffic".to_owned(),
        seg => format!("LOST {} in {}", f.lost.total(), seg.name()),
    };
    let _ = writeln!(
        out,
        "  flow {}: sent {}, delivered {} — {state}",
        f.key, f.sent, f.delivered
    );
    let pod_in = if f.path_start == "pod-ingress" {
        format!("pod-ingress {} ", h.pod_ingress)
    } else {
        String::new()
    };
    let pod_out = if f.path_end == "pod-egress" {
        format!(" pod-egress {}", h.pod_egress)
    } else {
        String::new()
    };
    let nics = if f.egress_devs.len() > 1 || f.egress_devs.keys().any(|d| d.as_str() == "?") {
        format!(
            " (by {})",
            f.egress_devs
                .iter()
                .map(|(d, n)| format!("{d} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        f.egress_devs
            .keys()
            .next()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    };
    let _ = writeln!(
        out,
        "    {from}: {pod_in}overlay-egress {} underlay-egress {}{nics} drop {} | {to}: underlay-ingress {} vxlan-rcv {} overlay-ingress {}{pod_out} drop {}",
        h.overlay_egress,
        h.underlay_egress,
        count(h.sender_drops),
        h.underlay_ingress,
        count(h.vxlan_rcv),
        h.overlay_ingress,
        count(h.receiver_drops)
    );
    for d in &f.drops {
        let _ = writeln!(
            out,
            "    drop on {}: {} × {}{}{}{}",
            d.node,
            d.count,
            d.reason.as_deref().unwrap_or("(no reason on this kernel)"),
            d.location
                .as_deref()
                .map(|l| format!(" in {l}"))
                .unwrap_or_default(),
            d.iface
                .as_deref()
                .map(|i| format!(" on {i}"))
                .unwrap_or_default(),
            if d.after_delivery {
                " (after delivery: the receiving host's stack, not the network)"
            } else {
                ""
            }
        );
    }
    let l = &f.latency;
    let mut lat = Vec::new();
    if let Some(ms) = l.underlay_ms {
        lat.push(format!(
            "underlay {ms:.3} ms{}",
            l.error_ms.map(|e| format!(" ± {e:.3}")).unwrap_or_default()
        ));
    }
    if let Some(us) = l.encap_us {
        lat.push(format!("encap on {from} {us:.1} µs"));
    }
    if let Some(us) = l.decap_us {
        lat.push(format!("decap on {to} {us:.1} µs"));
    }
    if !lat.is_empty() {
        let _ = writeln!(out, "    latency (median): {}", lat.join(", "));
    }
    if f.in_flight > 0 {
        let _ = writeln!(
            out,
            "    {} not judged (sent before the receiver was traced, or just before the end)",
            f.in_flight
        );
    }
}
