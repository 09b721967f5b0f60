//! The whole pod-to-pod path on the real kernel: a pod behind cni0 on each
//! lab node, flannel-trace live on both, and the faults that only show
//! beyond flannel.1 — a FORWARD policy of DROP on either node, a stale
//! VtepMAC, a second NIC that the route prefers. Each verdict must name the
//! node and segment where the pod's packets died, with the kernel's reason
//! and the fix; host-network traffic keeps its verdict as before.

use anyhow::{Result, ensure};
use flannel_trace::{Direction, Segment};
use flannel_trace_tests::{
    preflight,
    records::named,
    report::{direction, drop_reasons, fix_of, host_flows, pod_flows, scenario, show},
    scenario::Fault,
    serial,
};

/// Every pod flow of the direction lost all it sent in `seg`.
fn pod_flows_lost_in(d: &Direction, seg: Segment) -> Result<()> {
    let flows = pod_flows(d);
    ensure!(!flows.is_empty(), "no pod-to-pod flow: {}", show(d));
    for f in flows {
        ensure!(
            f.segment == seg && f.delivered == 0 && f.sent > 0,
            "pod flow not lost in {}: {}",
            seg.name(),
            show(f)
        );
    }
    Ok(())
}

#[test]
fn healthy_pods_are_delivered_with_equal_counts_at_all_seven_hops() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::None)?;
    for from in ["node-a", "node-b"] {
        let d = direction(&v, from)?;
        ensure!(d.segment == Segment::Delivered, "{from}: {}", show(d));
        let pods = pod_flows(d);
        ensure!(!pods.is_empty(), "{from}: no pod flow: {}", show(d));
        for f in pods {
            let h = &f.hops;
            let n = h.pod_ingress;
            ensure!(n >= 1, "{from}: {}", show(f));
            for (hop, seen) in [
                ("overlay_egress", Some(h.overlay_egress)),
                ("underlay_egress", Some(h.underlay_egress)),
                ("underlay_ingress", Some(h.underlay_ingress)),
                ("vxlan_rcv", h.vxlan_rcv),
                ("overlay_ingress", Some(h.overlay_ingress)),
                ("pod_egress", Some(h.pod_egress)),
            ] {
                ensure!(seen == Some(n), "{from}: {hop}: {}", show(f));
            }
            ensure!(f.delivered == n, "{}", show(f));
        }
        // The TCP exchange between the pods, both ways, by sequence ranges.
        let tcp: Vec<_> = pod_flows(d)
            .into_iter()
            .filter(|f| named(&f.proto, "tcp"))
            .collect();
        ensure!(
            !tcp.is_empty(),
            "{from}: no pod-to-pod TCP flow: {}",
            show(d)
        );
        for f in tcp {
            ensure!(
                f.segment == Segment::Delivered && f.sent == f.delivered,
                "{}",
                show(f)
            );
        }
        // Host-network traffic (the probes) is judged as before: its path
        // ends at flannel.1 and it is delivered there.
        let host = host_flows(d);
        ensure!(!host.is_empty(), "{from}: no host-network flow");
        for f in host {
            ensure!(
                f.segment == Segment::Delivered && f.hops.pod_egress == 0,
                "{}",
                show(f)
            );
        }
    }
    Ok(())
}

#[test]
fn forward_drop_on_the_receiver_is_a_receiver_host_loss_with_the_fix() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::ForwardDropReceiver)?;
    let ab = direction(&v, "node-a")?;
    ensure!(ab.segment == Segment::ReceiverHost, "{}", show(ab));
    pod_flows_lost_in(ab, Segment::ReceiverHost)?;
    for f in pod_flows(ab) {
        // Decapsulated, out of flannel.1, never to the pod.
        ensure!(
            f.hops.overlay_ingress == f.sent && f.hops.pod_egress == 0,
            "{}",
            show(f)
        );
    }
    ensure!(
        drop_reasons(ab).iter().any(|r| r == "NETFILTER_DROP"),
        "{}",
        show(ab)
    );
    let verdict = &ab.verdict;
    ensure!(
        verdict.contains("0 reached its pods (cni0): lost inside node-b"),
        "{verdict}"
    );
    let fix = fix_of(ab);
    ensure!(
        fix.contains("FORWARD") && fix.contains("iptables -P FORWARD ACCEPT"),
        "{fix}"
    );
    // The probes between the nodes themselves are not forwarded: delivered.
    for f in host_flows(ab) {
        ensure!(f.segment == Segment::Delivered, "{}", show(f));
    }
    Ok(())
}

#[test]
fn forward_drop_on_the_sender_is_a_sender_host_loss_on_cni0() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::ForwardDropSender)?;
    let ab = direction(&v, "node-a")?;
    ensure!(ab.segment == Segment::SenderHost, "{}", show(ab));
    pod_flows_lost_in(ab, Segment::SenderHost)?;
    for f in pod_flows(ab) {
        ensure!(
            f.hops.pod_ingress > 0 && f.hops.overlay_egress == 0,
            "{}",
            show(f)
        );
        let on_cni0 = f.drops.iter().any(|d| {
            d.node == "node-a"
                && d.reason
                    .as_ref()
                    .is_some_and(|r| named(r, "NETFILTER_DROP"))
                && d.iface.as_deref() == Some("cni0")
        });
        ensure!(on_cni0, "the drop on cni0 must be reported: {}", show(f));
    }
    let verdict = &ab.verdict;
    ensure!(
        verdict.contains(
            "packets from node-a's pods entered node-a (cni0) but 0 entered its flannel.1"
        ),
        "{verdict}"
    );
    ensure!(fix_of(ab).contains("FORWARD"), "{}", fix_of(ab));
    Ok(())
}

#[test]
fn a_stale_vtep_mac_is_a_receiver_host_otherhost_loss_naming_both_macs() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::StaleVtepMac)?;
    let ab = direction(&v, "node-a")?;
    ensure!(ab.segment == Segment::ReceiverHost, "{}", show(ab));
    pod_flows_lost_in(ab, Segment::ReceiverHost)?;
    // Host-network frames to B's VTEP address die the same way: not
    // "delivered" with a drop after delivery.
    for f in host_flows(ab) {
        ensure!(f.segment == Segment::ReceiverHost, "{}", show(f));
    }
    ensure!(
        drop_reasons(ab).iter().any(|r| r == "OTHERHOST"),
        "{}",
        show(ab)
    );
    let (stale, actual) = ("0e:f7:00:00:99:02", "0e:f7:00:00:00:02");
    let verdict = &ab.verdict;
    ensure!(
        verdict.contains(stale) && verdict.contains(actual),
        "{verdict}"
    );
    let fix = fix_of(ab);
    ensure!(
        fix.starts_with("on node-a:") && fix.contains(&format!("lladdr {actual}")),
        "{fix}"
    );
    ensure!(
        direction(&v, "node-b")?.segment == Segment::Delivered,
        "B→A must be healthy"
    );
    Ok(())
}

#[test]
fn frames_sent_out_of_a_second_nic_are_reported_with_the_route() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::SecondNicRoute)?;
    let ba = direction(&v, "node-b")?;
    ensure!(ba.segment == Segment::Underlay, "{}", show(ba));
    ensure!(!ba.flows.is_empty(), "no flows: {}", show(ba));
    for f in &ba.flows {
        let devs = &f.egress_devs;
        ensure!(
            devs.get("eth2").is_some_and(|n| *n > 0) && !devs.contains_key("eth1"),
            "frames must be seen leaving by eth2: {}",
            show(f)
        );
    }
    let verdict = &ba.verdict;
    ensure!(
        verdict
            .contains("left node-b by eth2, not eth1: the route to 10.25.1.51 goes through eth2"),
        "{verdict}"
    );
    ensure!(
        fix_of(ba).contains("ip route get 10.25.1.51"),
        "{}",
        fix_of(ba)
    );
    ensure!(
        direction(&v, "node-a")?.segment == Segment::Delivered,
        "A→B must be healthy"
    );
    Ok(())
}

#[test]
fn the_incident_with_pods_is_still_the_underlay() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::UnderlayDrop)?;
    let ba = direction(&v, "node-b")?;
    ensure!(ba.segment == Segment::Underlay, "{}", show(ba));
    pod_flows_lost_in(ba, Segment::Underlay)?;
    let ab = direction(&v, "node-a")?;
    ensure!(ab.segment == Segment::Delivered, "{}", show(ab));
    Ok(())
}

#[test]
fn strict_rp_filter_on_the_receiver_is_a_receiver_host_loss_with_the_route_to_check() -> Result<()>
{
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::RpFilterReceiver)?;
    let ab = direction(&v, "node-a")?;
    ensure!(ab.segment == Segment::ReceiverHost, "{}", show(ab));
    pod_flows_lost_in(ab, Segment::ReceiverHost)?;
    for f in pod_flows(ab) {
        // Decapsulated on B's flannel.1 and dropped there, before routing.
        ensure!(
            f.hops.vxlan_rcv == Some(f.sent) && f.hops.overlay_ingress == f.sent,
            "{}",
            show(f)
        );
    }
    ensure!(
        drop_reasons(ab).iter().any(|r| r == "IP_RPFILTER"),
        "{}",
        show(ab)
    );
    let fix = fix_of(ab);
    ensure!(
        fix.contains("reverse-path filtering on node-b")
            && fix.contains("ip route get 10.244.1.2")
            && fix.contains("rp_filter=2"),
        "{fix}"
    );
    // Only the pod behind the stray route is cut off: the nodes' own
    // traffic between their VTEP addresses is delivered.
    for f in host_flows(ab) {
        ensure!(f.segment == Segment::Delivered, "{}", show(f));
    }
    // B's pod's packets to A's pod follow the stray route out of eth1
    // unencapsulated: lost inside B, and B's recorded routes say why.
    let ba = direction(&v, "node-b")?;
    ensure!(ba.segment == Segment::SenderHost, "{}", show(ba));
    pod_flows_lost_in(ba, Segment::SenderHost)?;
    let fix = fix_of(ba);
    ensure!(
        fix.contains("node-b routes 10.244.1.2 by eth1, not flannel.1")
            && fix.contains("ip route del 10.244.1.2/32 via 10.25.1.1 dev eth1"),
        "{fix}"
    );
    Ok(())
}
