//! Fixtures of the verdict tests: a two-node cluster, its identities,
//! and events of packets of known shape. The cases are in `tests_*.rs`.

use std::net::IpAddr;

use super::*;
use crate::{
    schema::event::{Endpoints, Icmp, Inner, Tcp},
    schema::identity::FdbPeer,
    schema::values::{Fingerprint, Proto, TcpFlags, hop_name},
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

#[path = "window_tests.rs"]
mod window_tests;
