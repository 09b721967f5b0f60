//! The verdict on synthetic traces of known shape.

use std::net::IpAddr;

use flannel_trace_common::Hop;

use super::*;
use crate::{
    schema::event::{Endpoints, Icmp, Inner, KernelDrop, Tcp},
    schema::identity::FdbPeer,
    schema::values::{Fingerprint, KernelAddr, Proto, TcpFlags, hop_name},
};

const MAC_A: &str = "76:21:69:41:de:fe";
const MAC_B: &str = "b6:61:5c:8d:d9:eb";

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ident(
    name: &str,
    underlay: &str,
    vtep: &str,
    mac: &str,
    peer_mac: &str,
    peer_ip: &str,
) -> NodeIdentity {
    NodeIdentity {
        version: "test".into(),
        node: name.into(),
        kernel: "6.18".into(),
        netns_inode: 1,
        vxlan_dev: "flannel.1".into(),
        vxlan_ifindex: 3,
        vxlan_mac: Some(mac.into()),
        vtep_addrs: vec![ip(vtep)],
        underlay_dev: "eth1".into(),
        underlay_ifindex: 2,
        underlay_addrs: vec![ip(underlay)],
        local: Some(ip(underlay)),
        port: 8475,
        ports: vec![8475],
        port_source: "--port".into(),
        device_port: Some(8475),
        vni: Some(1),
        fdb: vec![FdbPeer {
            mac: peer_mac.into(),
            dst: Some(ip(peer_ip)),
        }],
        hooks: vec![],
        clock_offset_ns: 0,
        ring_size: 4096,
        attached_wall_ns: 0,
        ..Default::default()
    }
}

/// A node of the two-node test cluster, by name.
pub fn identity(name: &str) -> NodeIdentity {
    if name == "node-b" {
        b()
    } else {
        NodeIdentity {
            node: name.into(),
            ..a()
        }
    }
}

pub(super) fn a() -> NodeIdentity {
    ident(
        "node-a",
        "10.25.1.51",
        "10.244.1.0",
        MAC_A,
        MAC_B,
        "10.25.1.55",
    )
}
pub(super) fn b() -> NodeIdentity {
    ident(
        "node-b",
        "10.25.1.55",
        "10.244.2.0",
        MAC_B,
        MAC_A,
        "10.25.1.51",
    )
}

pub(super) struct Pkt {
    pub src: &'static str,
    pub dst: &'static str,
    pub outer: Option<(&'static str, &'static str)>,
    pub seq: u16,
    pub tcp: Option<(u32, u32)>,
    pub len: u32,
}

/// A fingerprint per packet: equal for the same source, sequence and TCP
/// segment, as the kernel's is for the same inner packet.
fn fingerprint_of(p: &Pkt) -> Fingerprint {
    use std::hash::{DefaultHasher, Hash as _, Hasher as _};
    let mut h = DefaultHasher::new();
    (p.src, p.seq, p.tcp).hash(&mut h);
    Fingerprint(h.finish())
}

pub(super) fn ev(hop: &str, t_ms: u64, p: &Pkt) -> Event {
    let outer = p.outer.filter(|_| {
        matches!(
            hop,
            "underlay-egress" | "underlay-ingress" | "vxlan-rcv" | "drop"
        )
    });
    let (proto, sport, dport) = if p.tcp.is_some() {
        (Proto::Tcp, Some(40000), Some(8080))
    } else {
        (Proto::Icmp, None, None)
    };
    Event {
        time: 0,
        ts_mono_ns: t_ms * 1_000_000,
        hop: hop_name::parse(hop).unwrap(),
        ifindex: 2,
        iface: Some("eth1".into()),
        len: p.len,
        outer: outer.map(|(s, d)| Endpoints {
            src: ip(s),
            dst: ip(d),
            proto: Proto::Udp,
            sport: Some(50000),
            dport: Some(8475),
        }),
        vni: outer.map(|_| 1),
        vlan: None,
        vlan_inner: None,
        undecodable: false,
        outer_recovered: false,
        inner: Some(Inner {
            endpoints: Endpoints {
                src: ip(p.src),
                dst: ip(p.dst),
                proto,
                sport,
                dport,
            },
            ip_id: p.seq as u32,
            ip_len: 84,
            tcp: p.tcp.map(|(seq, payload_len)| Tcp {
                seq,
                ack: 1,
                flags: TcpFlags(0x10),
                payload_len,
            }),
            icmp: p.tcp.is_none().then_some(Icmp {
                ty: 8,
                code: 0,
                id: 7,
                seq: p.seq,
            }),
            arp: None,
            dst_mac: None,
            fragment: false,
            truncated: false,
        }),
        fingerprint: Some(fingerprint_of(p)),
        drop: None,
    }
}

pub(super) fn ping(from: &str, to: &str, outer: (&'static str, &'static str), seq: u16) -> Pkt {
    let (src, dst) = (
        Box::leak(from.to_owned().into_boxed_str()),
        Box::leak(to.to_owned().into_boxed_str()),
    );
    Pkt {
        src,
        dst,
        outer: Some(outer),
        seq,
        tcp: None,
        len: 148,
    }
}

pub(super) const AB: (&str, &str) = ("10.25.1.51", "10.25.1.55");
pub(super) const BA: (&str, &str) = ("10.25.1.55", "10.25.1.51");

pub(super) fn trace<'a>(id: &'a NodeIdentity, events: &'a [Event]) -> NodeTrace<'a> {
    NodeTrace {
        identity: id,
        events,
        lost: 0,
        end_wall_ns: Some(100_000_000_000),
        gaps: vec![],
        thinned: vec![],
    }
}

pub(super) fn delivered_a_to_b(ea: &mut Vec<Event>, eb: &mut Vec<Event>, n: u16) {
    for seq in 0..n {
        let p = ping("10.244.1.0", "10.244.2.0", AB, seq);
        let t = 1000 + seq as u64 * 100;
        ea.push(ev("overlay-egress", t, &p));
        ea.push(ev("underlay-egress", t, &p));
        eb.push(ev("underlay-ingress", t + 1, &p));
        eb.push(ev("vxlan-rcv", t + 1, &p));
        eb.push(ev("overlay-ingress", t + 1, &p));
    }
}

#[test]
fn the_incident_underlay_drops_one_direction() {
    let (ia, ib) = (a(), b());
    let (mut ea, mut eb) = (vec![], vec![]);
    delivered_a_to_b(&mut ea, &mut eb, 12);
    for seq in 0..12 {
        let p = ping("10.244.2.0", "10.244.1.0", BA, seq);
        eb.push(ev("overlay-egress", 2000 + seq as u64, &p));
        eb.push(ev("underlay-egress", 2000 + seq as u64, &p));
    }
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, Options::default());
    let ab = &r.directions[0];
    assert_eq!(
        (ab.from.as_str(), ab.segment, ab.sent, ab.delivered),
        ("node-a", Segment::Delivered, 12, 12)
    );
    let ba = &r.directions[1];
    assert_eq!(ba.segment, Segment::Underlay);
    assert!(ba.certain);
    assert_eq!(ba.lost.underlay, 12);
    assert_eq!(
        ba.verdict,
        "node-b→node-a: 12/12 frames left node-b's eth1 (outer 10.25.1.55→10.25.1.51 udp/8475), 0 reached node-a's eth1: lost in the underlay between the nodes"
    );
    assert_eq!(
        ba.fix.as_deref(),
        Some("check firewall/security group for UDP 8475 from 10.25.1.55 to 10.25.1.51")
    );
    assert!(r.config.is_empty(), "{:?}", r.config);
}

#[test]
fn tracer_loss_makes_the_verdict_uncertain_instead_of_blaming_the_network() {
    let (ia, ib) = (a(), b());
    let (mut ea, mut eb) = (vec![], vec![]);
    delivered_a_to_b(&mut ea, &mut eb, 3);
    eb.retain(|e| e.hop != Hop::OverlayIngress);
    let mut tb = trace(&ib, &eb);
    tb.lost = 3;
    let r = judge(&trace(&ia, &ea), &tb, None, Options::default());
    let ab = &r.directions[0];
    assert!(!ab.certain);
    assert!(ab.verdict.starts_with("UNCERTAIN"), "{}", ab.verdict);
    assert!(
        r.uncertain[0].contains("lost 3 events"),
        "{:?}",
        r.uncertain
    );
}

#[test]
fn receiver_firewall_names_the_reason_and_the_fix() {
    let (ia, ib) = (a(), b());
    let (mut ea, mut eb) = (vec![], vec![]);
    for seq in 0..4 {
        let p = ping("10.244.1.0", "10.244.2.0", AB, seq);
        ea.push(ev("overlay-egress", 1000, &p));
        ea.push(ev("underlay-egress", 1000, &p));
        eb.push(ev("underlay-ingress", 1001, &p));
        let mut d = ev("drop", 1001, &p);
        d.drop = Some(KernelDrop {
            reason: Some("NETFILTER_DROP".into()),
            reason_code: Some(12),
            location: Some("nft_do_chain+0x3e8".into()),
            location_addr: KernelAddr(0x1),
        });
        eb.push(d);
    }
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, Options::default());
    let ab = &r.directions[0];
    assert_eq!(ab.segment, Segment::ReceiverHost);
    assert_eq!(ab.lost.receiver_host, 4);
    assert!(
        ab.verdict
            .contains("4 dropped: NETFILTER_DROP in nft_do_chain"),
        "{}",
        ab.verdict
    );
    assert!(
        ab.fix
            .as_deref()
            .unwrap()
            .starts_with("a firewall rule on node-b drops UDP 8475"),
        "{:?}",
        ab.fix
    );
    assert_eq!(r.directions[1].segment, Segment::NoTraffic);
}

#[test]
fn a_bad_outer_udp_checksum_names_the_senders_offload_and_its_fix() {
    let (ia, ib) = (a(), b());
    let (mut ea, mut eb) = (vec![], vec![]);
    for seq in 0..3 {
        let p = ping("10.244.1.0", "10.244.2.0", AB, seq);
        ea.push(ev("underlay-egress", 1000, &p));
        eb.push(ev("underlay-ingress", 1001, &p));
        let mut d = ev("drop", 1001, &p);
        d.drop = Some(KernelDrop {
            reason: Some("UDP_CSUM".into()),
            reason_code: Some(9),
            location: Some("udp_queue_rcv_one_skb+0x1a0".into()),
            location_addr: KernelAddr(0x1),
        });
        eb.push(d);
    }
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, Options::default());
    let ab = &r.directions[0];
    assert_eq!(ab.segment, Segment::ReceiverHost);
    assert!(ab.verdict.contains("3 dropped: UDP_CSUM"), "{}", ab.verdict);
    let fix = ab.fix.as_deref().unwrap();
    assert!(fix.contains("bad outer UDP checksum"), "{fix}");
    assert!(
        fix.ends_with("on node-a: `ethtool -K flannel.1 tx-checksum-ip-generic off`"),
        "{fix}"
    );
}

#[test]
fn port_mismatch_is_named_from_no_socket_and_the_device_port() {
    let (ia, mut ib) = (a(), b());
    ib.device_port = Some(8472);
    let (mut ea, mut eb) = (vec![], vec![]);
    let p = ping("10.244.1.0", "10.244.2.0", AB, 1);
    ea.push(ev("overlay-egress", 1000, &p));
    ea.push(ev("underlay-egress", 1000, &p));
    eb.push(ev("underlay-ingress", 1001, &p));
    let mut d = ev("drop", 1001, &p);
    d.drop = Some(KernelDrop {
        reason: Some("NO_SOCKET".into()),
        reason_code: Some(3),
        location: None,
        location_addr: KernelAddr(0x1),
    });
    eb.push(d);
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, Options::default());
    assert!(
        r.directions[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("uses udp/8472"),
        "{:?}",
        r.directions[0].fix
    );
    assert!(
        r.config.iter().any(|c| c.starts_with("port mismatch")),
        "{:?}",
        r.config
    );
}

#[test]
fn missing_fdb_entry_is_a_sender_host_loss() {
    let (mut ia, ib) = (a(), b());
    ia.fdb.clear();
    ia.fdb.push(FdbPeer {
        mac: "02:00:00:00:00:99".into(),
        dst: Some(ip("10.25.1.52")),
    });
    let mut ea = vec![];
    for seq in 0..2 {
        ea.push(ev(
            "overlay-egress",
            1000,
            &ping("10.244.1.0", "10.244.2.0", AB, seq),
        ));
    }
    let r = judge(&trace(&ia, &ea), &trace(&ib, &[]), None, Options::default());
    let ab = &r.directions[0];
    assert_eq!((ab.segment, ab.lost.sender_host), (Segment::SenderHost, 2));
    assert!(
        ab.fix
            .as_deref()
            .unwrap()
            .contains("no FDB entry for node-b's VTEP MAC b6:61:5c:8d:d9:eb"),
        "{:?}",
        ab.fix
    );
}

#[test]
fn gso_and_gro_are_matched_by_sequence_ranges() {
    let (ia, ib) = (a(), b());
    let tcp = |seq, len, n: u16| Pkt {
        src: "10.244.1.1",
        dst: "10.244.2.1",
        outer: Some(AB),
        seq: n,
        tcp: Some((seq, len)),
        len: 1500,
    };
    // One 3000-byte GSO skb becomes three wire segments; GRO merges them again.
    let ea = vec![
        ev("overlay-egress", 1000, &tcp(5000, 3000, 0)),
        ev("underlay-egress", 1000, &tcp(5000, 1000, 0)),
        ev("underlay-egress", 1000, &tcp(6000, 1000, 1)),
        ev("underlay-egress", 1000, &tcp(7000, 1000, 2)),
    ];
    let mut eb = vec![];
    for (s, n) in [(5000, 0), (6000, 1), (7000, 2)] {
        eb.push(ev("underlay-ingress", 1001, &tcp(s, 1000, n)));
        eb.push(ev("vxlan-rcv", 1001, &tcp(s, 1000, n)));
    }
    eb.push(ev("overlay-ingress", 1001, &tcp(5000, 3000, 0)));
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, Options::default());
    let ab = &r.directions[0];
    assert_eq!(ab.segment, Segment::Delivered, "{:?}", ab.flows[0]);
    assert_eq!(ab.flows[0].tcp_bytes, Some((3000, 3000)));
    // Now the underlay loses the middle segment.
    // GRO cannot merge across the hole: two skbs come out of the tunnel.
    let mut eb2: Vec<Event> = eb
        .iter()
        .filter(|e| {
            e.hop != Hop::OverlayIngress
                && e.inner.as_ref().unwrap().tcp.as_ref().unwrap().seq != 6000
        })
        .cloned()
        .collect();
    eb2.push(ev("overlay-ingress", 1001, &tcp(5000, 1000, 0)));
    eb2.push(ev("overlay-ingress", 1001, &tcp(7000, 1000, 2)));
    let r = judge(
        &trace(&ia, &ea),
        &trace(&ib, &eb2),
        None,
        Options::default(),
    );
    assert_eq!(r.directions[0].lost.underlay, 1);
}

#[test]
fn mtu_shows_as_large_frames_lost_and_small_ones_delivered() {
    let (ia, ib) = (a(), b());
    let (mut ea, mut eb) = (vec![], vec![]);
    for seq in 0..3 {
        let small = Pkt {
            len: 148,
            ..ping("10.244.1.0", "10.244.2.0", AB, seq)
        };
        ea.push(ev("overlay-egress", 1000, &small));
        ea.push(ev("underlay-egress", 1000, &small));
        eb.push(ev("underlay-ingress", 1001, &small));
        eb.push(ev("overlay-ingress", 1001, &small));
        let big = Pkt {
            len: 1464,
            ..ping("10.244.1.0", "10.244.2.0", AB, 100 + seq)
        };
        ea.push(ev("overlay-egress", 1000, &big));
        ea.push(ev("underlay-egress", 1000, &big));
    }
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, Options::default());
    let ab = &r.directions[0];
    assert_eq!(
        (ab.segment, ab.lost.underlay, ab.delivered),
        (Segment::Underlay, 3, 3)
    );
    assert!(ab.fix.as_deref().unwrap().contains("MTU"), "{:?}", ab.fix);
}

#[test]
fn late_packets_are_in_flight_and_drops_after_delivery_are_not_losses() {
    let (ia, ib) = (a(), b());
    let (mut ea, mut eb) = (vec![], vec![]);
    delivered_a_to_b(&mut ea, &mut eb, 2);
    let p = ping("10.244.1.0", "10.244.2.0", AB, 1);
    let mut d = ev("drop", 1200, &p);
    d.drop = Some(KernelDrop {
        reason: Some("NO_SOCKET".into()),
        reason_code: Some(3),
        location: Some("ping_rcv+0xab".into()),
        location_addr: KernelAddr(0x1),
    });
    eb.push(d);
    let late = ping("10.244.1.0", "10.244.2.0", AB, 9);
    ea.push(ev("overlay-egress", 99_800, &late));
    ea.push(ev("underlay-egress", 99_800, &late));
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, Options::default());
    let ab = &r.directions[0];
    assert_eq!(
        (ab.segment, ab.in_flight, ab.lost.total()),
        (Segment::Delivered, 1, 0)
    );
    assert!(ab.flows[0].drops[0].after_delivery);
}

#[test]
fn the_clock_offset_moves_receiver_times_onto_the_senders_clock() {
    let (ia, mut ib) = (a(), b());
    // node-b's wall clock runs 5 s ahead; the packet takes 1 ms.
    ib.clock_offset_ns = 5_000_000_000;
    let (mut ea, mut eb) = (vec![], vec![]);
    delivered_a_to_b(&mut ea, &mut eb, 1);
    let clock = ClockEstimate {
        offset_ns: 5_000_000_000,
        error_ns: 50_000,
        samples: 8,
    };
    let r = judge(
        &trace(&ia, &ea),
        &trace(&ib, &eb),
        Some(clock),
        Options::default(),
    );
    let lat = &r.directions[0].flows[0].latency;
    assert_eq!(lat.underlay_ms, Some(1.0));
    assert_eq!(lat.error_ms, Some(0.05));
}

#[test]
fn a_hop_that_missed_a_packet_does_not_invent_a_loss() {
    let (ia, ib) = (a(), b());
    let (mut ea, mut eb) = (vec![], vec![]);
    delivered_a_to_b(&mut ea, &mut eb, 3);
    // vxlan-rcv missed one packet that overlay-ingress saw.
    let idx = eb.iter().position(|e| e.hop == Hop::VxlanRcv).unwrap();
    eb.remove(idx);
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, Options::default());
    assert_eq!(
        (r.directions[0].segment, r.directions[0].lost.total()),
        (Segment::Delivered, 0)
    );
}

#[path = "window_tests.rs"]
mod window_tests;
