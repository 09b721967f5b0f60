//! Two nodes' counters joined into one verdict per direction: how many
//! packets passed each hop between the sender's pods and the receiver's,
//! and the first segment where the count falls short.

use std::net::IpAddr;

use flannel_trace_common::Hop;
use serde::{Deserialize, Serialize};

use super::Snapshot;
use crate::{schema::identity::NodeIdentity, verdict::Segment};

/// Packets along one direction, as the counters saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Path {
    /// Sender pod-ingress, to the receiver's pods.
    pub from_pods: u64,
    /// Sender overlay-egress, to the receiver's pods only.
    pub tunnel_pods: u64,
    /// Sender overlay-egress, to any of the receiver's overlay addresses.
    pub tunnel: u64,
    /// Sender underlay-egress to the receiver's underlay address (any NIC).
    pub left: u64,
    /// Receiver underlay-ingress from the sender's underlay address.
    pub reached: u64,
    /// Receiver vxlan-rcv; `None` (null) when the receiver could not trace
    /// that hop: unknown, never zero.
    pub decapsulated: Option<u64>,
    /// Receiver overlay-ingress from any of the sender's overlay addresses.
    pub out_of_tunnel: u64,
    /// Receiver overlay-ingress from the sender's pods only.
    pub out_of_tunnel_pods: u64,
    /// Receiver pod-egress, from the sender's pods.
    pub to_pods: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CounterVerdict {
    pub from: String,
    pub to: String,
    pub path: Path,
    pub segment: Segment,
    pub verdict: String,
    pub fix: Option<String>,
}

/// A shortfall this small is packets in flight between two snapshots
/// taken at slightly different moments, not a loss.
fn short(up: u64, down: u64) -> bool {
    up > down && up - down > 3.max(up / 100)
}

fn ip_in(ips: &[IpAddr]) -> impl Fn(Option<IpAddr>) -> bool + '_ {
    move |a| a.is_some_and(|a| ips.contains(&a))
}

/// The drops on `node`'s side in `d`, as "N × REASON on DEV" (largest
/// first); on a node without a drop hook, that drop reasons are
/// unavailable, never that there were none.
fn drops(node: &NodeIdentity, d: &Snapshot) -> Option<String> {
    if let Some(m) = node.missing("drop") {
        return Some(format!("drop reasons unavailable: {}", m.reason));
    }
    d.rows
        .iter()
        .filter(|r| r.hop == Hop::Drop.name() && r.packets > 0)
        .max_by_key(|r| r.packets)
        .map(|r| {
            format!(
                "{} × {} on {}",
                r.packets,
                r.reason.as_deref().unwrap_or("?"),
                r.iface.as_deref().unwrap_or("?")
            )
        })
}

/// `s_delta` and `r_delta` are the sender's and receiver's counters over
/// the same stretch of time.
pub fn direction(
    si: &NodeIdentity,
    s_delta: &Snapshot,
    ri: &NodeIdentity,
    r_delta: &Snapshot,
) -> CounterVerdict {
    let s_ips: Vec<IpAddr> = si.underlay_ips().collect();
    let r_ips: Vec<IpAddr> = ri.underlay_ips().collect();
    let r_pod = |a: Option<IpAddr>| a.is_some_and(|a| ri.is_pod(a));
    let s_pod = |a: Option<IpAddr>| a.is_some_and(|a| si.is_pod(a));
    let r_ovl = |a: Option<IpAddr>| a.is_some_and(|a| ri.owns_overlay(a));
    let s_ovl = |a: Option<IpAddr>| a.is_some_and(|a| si.owns_overlay(a));
    let p = Path {
        from_pods: s_delta.packets(Hop::PodIngress, r_pod),
        tunnel_pods: s_delta.packets(Hop::OverlayEgress, r_pod),
        tunnel: s_delta.packets(Hop::OverlayEgress, r_ovl),
        left: s_delta.packets(Hop::UnderlayEgress, ip_in(&r_ips)),
        reached: r_delta.packets(Hop::UnderlayIngress, ip_in(&s_ips)),
        decapsulated: ri
            .missing("vxlan-rcv")
            .is_none()
            .then(|| r_delta.packets(Hop::VxlanRcv, |a| ip_in(&s_ips)(a) || s_ovl(a))),
        out_of_tunnel: r_delta.packets(Hop::OverlayIngress, s_ovl),
        out_of_tunnel_pods: r_delta.packets(Hop::OverlayIngress, s_pod),
        to_pods: r_delta.packets(Hop::PodEgress, s_pod),
    };
    let (sn, rn) = (&si.node, &ri.node);
    let pods_s = !si.pod_devs.is_empty();
    let pods_r = !ri.pod_devs.is_empty();
    let port = si.port;
    let (first_ip, peer_ip) = (
        s_ips.first().map_or("?".into(), |i| i.to_string()),
        r_ips.first().map_or("?".into(), |i| i.to_string()),
    );
    let s_drops = drops(si, s_delta)
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    let r_drops = drops(ri, r_delta)
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    let (segment, verdict, fix) = if pods_s && short(p.from_pods, p.tunnel_pods) {
        (
            Segment::SenderHost,
            format!(
                "{sn}→{rn}: {} packets from {sn}'s pods, {} entered its {}: lost inside {sn}{s_drops}",
                p.from_pods, p.tunnel_pods, si.vxlan_dev
            ),
            Some(format!(
                "look at {sn}'s FORWARD rules and policy (`iptables -P FORWARD ACCEPT`) and its routes to {rn}'s pods"
            )),
        )
    } else if short(p.tunnel, p.left) {
        (
            Segment::SenderHost,
            format!(
                "{sn}→{rn}: {} packets entered {sn}'s {}, {} frames left {sn} for {peer_ip}: lost inside {sn}{s_drops}",
                p.tunnel, si.vxlan_dev, p.left
            ),
            Some(format!(
                "look at {sn}'s FDB and neighbour entries for {rn} (`bridge fdb show dev {}`)",
                si.vxlan_dev
            )),
        )
    } else if short(p.left, p.reached) {
        (
            Segment::Underlay,
            format!(
                "{sn}→{rn}: {} frames left {sn} for {peer_ip}, {} reached {rn}'s NIC: lost in the underlay between the nodes",
                p.left, p.reached
            ),
            Some(format!(
                "check firewall/security group for UDP {port} from {first_ip} to {peer_ip}"
            )),
        )
    } else if match p.decapsulated {
        Some(d) if d > 0 => short(p.reached, d),
        _ => short(p.reached, p.out_of_tunnel),
    } {
        let between = ri
            .missing("vxlan-rcv")
            .map(|m| {
                format!(
                    ", between {} and {} (vxlan-rcv not traced: {})",
                    ri.underlay_dev, ri.vxlan_dev, m.reason
                )
            })
            .unwrap_or_default();
        (
            Segment::ReceiverHost,
            format!(
                "{sn}→{rn}: {} frames reached {rn}'s NIC, {} came out of its {}: lost inside {rn}{between}{r_drops}",
                p.reached, p.out_of_tunnel, ri.vxlan_dev
            ),
            Some(format!(
                "look at {rn}'s firewall for UDP {port}, its VXLAN port and VNI"
            )),
        )
    } else if pods_r && short(p.out_of_tunnel_pods, p.to_pods) {
        (
            Segment::ReceiverHost,
            format!(
                "{sn}→{rn}: {} packets for {rn}'s pods came out of its {}, {} reached its pods: lost inside {rn}{r_drops}",
                p.out_of_tunnel_pods, ri.vxlan_dev, p.to_pods
            ),
            Some(format!(
                "look at {rn}'s FORWARD rules and policy (`iptables -P FORWARD ACCEPT`), rp_filter and the VtepMAC {sn} holds for {rn}"
            )),
        )
    } else if p.left == 0 && p.tunnel == 0 && p.from_pods == 0 {
        (
            Segment::NoTraffic,
            format!("{sn}→{rn}: no traffic counted"),
            None,
        )
    } else {
        let end = if pods_r && p.to_pods > 0 {
            format!("{} reached {rn}'s pods", p.to_pods)
        } else {
            format!("{} came out of {rn}'s {}", p.out_of_tunnel, ri.vxlan_dev)
        };
        (
            Segment::Delivered,
            format!(
                "{sn}→{rn}: delivered — {} frames left {sn}, {} reached {rn}, {end}",
                p.left, p.reached
            ),
            None,
        )
    };
    CounterVerdict {
        from: sn.clone(),
        to: rn.clone(),
        path: p,
        segment,
        verdict,
        fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{counters::Row, net::Cidr};

    fn node(name: &str, ip: &str, subnet: &str, pod_gw: &str) -> NodeIdentity {
        NodeIdentity {
            node: name.into(),
            underlay_dev: "eth1".into(),
            underlay_addrs: vec![ip.parse().unwrap()],
            vxlan_dev: "flannel.1".into(),
            vtep_addrs: vec![subnet.split('/').next().unwrap().parse().unwrap()],
            pod_devs: vec!["cni0".into()],
            pod_subnets: vec![subnet.parse::<Cidr>().unwrap()],
            overlay_local_addrs: vec![pod_gw.parse().unwrap()],
            port: 8475,
            ..Default::default()
        }
    }

    fn snap(rows: &[(Hop, &str, u64)]) -> Snapshot {
        Snapshot {
            node: String::new(),
            wall_ns: 0,
            rows: rows
                .iter()
                .map(|(h, r, n)| Row {
                    hop: h.name().into(),
                    iface: Some("eth1".into()),
                    remote: Some(r.parse().unwrap()),
                    reason: None,
                    packets: *n,
                    bytes: n * 100,
                })
                .collect(),
            uncounted: 0,
        }
    }

    fn pair() -> (NodeIdentity, NodeIdentity) {
        (
            node("node-b", "10.25.1.55", "10.244.2.0/24", "10.244.2.1"),
            node("node-a", "10.25.1.51", "10.244.1.0/24", "10.244.1.1"),
        )
    }

    #[test]
    fn the_incident_from_counters_is_the_underlay() {
        let (b, a) = pair();
        let sb = snap(&[
            (Hop::PodIngress, "10.244.1.2", 1000),
            (Hop::OverlayEgress, "10.244.1.2", 1000),
            (Hop::UnderlayEgress, "10.25.1.51", 1000),
        ]);
        let sa = snap(&[]);
        let v = direction(&b, &sb, &a, &sa);
        assert_eq!(v.segment, Segment::Underlay, "{}", v.verdict);
        assert!(
            v.fix
                .unwrap()
                .contains("UDP 8475 from 10.25.1.55 to 10.25.1.51")
        );
    }

    #[test]
    fn forward_drop_on_the_receiver_from_counters() {
        let (b, a) = pair();
        let sb = snap(&[
            (Hop::PodIngress, "10.244.1.2", 500),
            (Hop::OverlayEgress, "10.244.1.2", 500),
            (Hop::UnderlayEgress, "10.25.1.51", 500),
        ]);
        let sa = snap(&[
            (Hop::UnderlayIngress, "10.25.1.55", 498),
            (Hop::VxlanRcv, "10.25.1.55", 498),
            (Hop::OverlayIngress, "10.244.2.2", 498),
        ]);
        let v = direction(&b, &sb, &a, &sa);
        assert_eq!(v.segment, Segment::ReceiverHost, "{}", v.verdict);
        assert!(v.verdict.contains("0 reached its pods"), "{}", v.verdict);
    }

    #[test]
    fn in_flight_differences_are_not_losses() {
        let (b, a) = pair();
        let sb = snap(&[
            (Hop::PodIngress, "10.244.1.2", 10_000),
            (Hop::OverlayEgress, "10.244.1.2", 10_000),
            (Hop::UnderlayEgress, "10.25.1.51", 10_000),
        ]);
        let sa = snap(&[
            (Hop::UnderlayIngress, "10.25.1.55", 9_950),
            (Hop::VxlanRcv, "10.25.1.55", 9_950),
            (Hop::OverlayIngress, "10.244.2.2", 9_950),
            (Hop::PodEgress, "10.244.2.2", 9_950),
        ]);
        let v = direction(&b, &sb, &a, &sa);
        assert_eq!(v.segment, Segment::Delivered, "{}", v.verdict);
        // Host-network traffic to the peer's cni0 address is not a pod's.
        let sb = snap(&[
            (Hop::OverlayEgress, "10.244.1.1", 100),
            (Hop::UnderlayEgress, "10.25.1.51", 100),
        ]);
        let sa = snap(&[
            (Hop::UnderlayIngress, "10.25.1.55", 100),
            (Hop::OverlayIngress, "10.244.2.0", 100),
        ]);
        let v = direction(&b, &sb, &a, &sa);
        assert_eq!(v.segment, Segment::Delivered, "{}", v.verdict);
    }

    #[test]
    fn a_receiver_without_its_probe_hops_is_not_split_and_has_no_drop_claim() {
        use crate::datapath::degraded::{MissingCause, MissingHop};
        let (b, mut a) = pair();
        a.missing_hops = ["vxlan-rcv", "drop"]
            .iter()
            .map(|h| MissingHop {
                hop: (*h).into(),
                cause: MissingCause::Lockdown,
                reason: "kernel lockdown (confidentiality)".into(),
                tried: vec![],
            })
            .collect();
        let sb = snap(&[
            (Hop::PodIngress, "10.244.1.2", 500),
            (Hop::OverlayEgress, "10.244.1.2", 500),
            (Hop::UnderlayEgress, "10.25.1.51", 500),
        ]);
        let sa = snap(&[
            (Hop::UnderlayIngress, "10.25.1.55", 500),
            (Hop::OverlayIngress, "10.244.2.2", 100),
        ]);
        let v = direction(&b, &sb, &a, &sa);
        assert_eq!(v.segment, Segment::ReceiverHost, "{}", v.verdict);
        assert_eq!(v.path.decapsulated, None, "unknown, not zero");
        assert_eq!(
            v.verdict,
            "node-b→node-a: 500 frames reached node-a's NIC, 100 came out of its flannel.1: lost inside node-a, between eth1 and flannel.1 (vxlan-rcv not traced: kernel lockdown (confidentiality)) (drop reasons unavailable: kernel lockdown (confidentiality))"
        );
        // Traced, the same counters name no untraced hop.
        let (_, a) = pair();
        let v = direction(&b, &sb, &a, &sa);
        assert_eq!(v.path.decapsulated, Some(0));
        assert!(!v.verdict.contains("not traced"), "{}", v.verdict);
    }
}
