//! Ring-buffer records turned into events a person or a program can read.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use flannel_trace_common::{
    EventKind, Hop, RawEvent, Tuple,
    event::{AF_INET, AF_INET6, DecodeError, flags},
    fingerprint::fingerprint,
};
use serde::{Deserialize, Serialize};

use crate::{
    kernel::clock::Clock,
    kernel::kallsyms::Kallsyms,
    net,
    schema::values::{ArpOp, Fingerprint, KernelAddr, Mac, Proto, TcpFlags},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock nanoseconds since the epoch; RFC 3339 text in JSON.
    #[serde(with = "crate::schema::values::rfc3339_text")]
    pub time: i64,
    pub ts_mono_ns: u64,
    #[serde(with = "crate::schema::values::hop_name")]
    pub hop: Hop,
    pub ifindex: u32,
    pub iface: Option<String>,
    pub len: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outer: Option<Endpoints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The second tag of a QinQ underlay frame (`vlan` is the outer one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_inner: Option<u16>,
    /// A frame to the overlay's UDP port that could not be decoded: `outer`
    /// holds what could be read; there is no `vni` nor `inner`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undecodable: bool,
    /// Outer headers recovered from the buffer after decapsulation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outer_recovered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner: Option<Inner>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<KernelDrop>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inner {
    #[serde(flatten)]
    pub endpoints: Endpoints,
    pub ip_id: u32,
    pub ip_len: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Tcp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<Icmp>,
    /// ARP (IPv4 over Ethernet): `src`/`dst` are the sender and target
    /// protocol addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arp: Option<Arp>,
    /// Destination MAC of the inner Ethernet frame, where the hook saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_mac: Option<Mac>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fragment: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tcp {
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// Payload bytes by the IP header's length: sequence space covered is
    /// `[seq, seq + payload_len)`. A GSO/GRO skb covers several wire segments.
    pub payload_len: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Icmp {
    #[serde(rename = "type")]
    pub ty: u8,
    pub code: u8,
    pub id: u16,
    pub seq: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Arp {
    pub op: ArpOp,
}

/// The kernel freed the packet (`drop` in JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelDrop {
    /// Name from the running kernel's `enum skb_drop_reason`; absent on
    /// kernels without reasons (before 5.17).
    pub reason: Option<String>,
    pub reason_code: Option<u32>,
    /// Kernel function that freed the packet, e.g. `nft_do_chain+0x3a4`.
    pub location: Option<String>,
    pub location_addr: KernelAddr,
}

impl KernelDrop {
    /// What the summary counts the drop under: its reason, else where it
    /// happened.
    pub fn summary_key(&self) -> std::borrow::Cow<'_, str> {
        match self.reason.as_deref().or(self.location.as_deref()) {
            Some(k) => k.into(),
            None => self.location_addr.to_string().into(),
        }
    }
}

/// Everything needed to turn raw records into [`Event`]s.
pub struct Decoder {
    pub clock: Clock,
    pub reasons: HashMap<u32, String>,
    pub kallsyms: Kallsyms,
    ifnames: HashMap<u32, Option<String>>,
}

impl Decoder {
    pub fn new(clock: Clock, reasons: HashMap<u32, String>, kallsyms: Kallsyms) -> Decoder {
        Decoder {
            clock,
            reasons,
            kallsyms,
            ifnames: HashMap::new(),
        }
    }

    fn ifname(&mut self, ifindex: u32) -> Option<String> {
        self.ifnames
            .entry(ifindex)
            .or_insert_with(|| net::ifname(ifindex))
            .clone()
    }

    pub fn decode(&mut self, raw: &RawEvent) -> Result<Event, DecodeError> {
        let kind = raw.kind()?;
        let hop = raw.hop()?;
        let p = &raw.pkt;
        let has_outer = p.flags & flags::HAS_OUTER != 0;
        let undecodable = p.flags & flags::UNDECODABLE != 0;
        let is_arp = p.flags & flags::INNER_ARP != 0;
        let inner = (p.flags & flags::HAS_INNER != 0).then(|| Inner {
            endpoints: if is_arp {
                Endpoints {
                    proto: Proto::Arp,
                    ..endpoints(&p.inner, false)
                }
            } else {
                endpoints(&p.inner, p.flags & flags::HAS_L4 != 0)
            },
            ip_id: p.ip_id,
            ip_len: p.inner_len,
            tcp: (!is_arp && p.inner.proto == 6 && p.flags & flags::HAS_L4 != 0).then(|| Tcp {
                seq: p.tcp_seq,
                ack: p.tcp_ack,
                flags: TcpFlags(p.tcp_flags),
                payload_len: u32::from(p.inner_len)
                    .saturating_sub(u32::from(p.ip_hlen) + u32::from(p.tcp_hlen)),
            }),
            arp: is_arp.then(|| Arp {
                op: ArpOp::from_code(p.icmp_type),
            }),
            icmp: (!is_arp && matches!(p.inner.proto, 1 | 58) && p.flags & flags::HAS_L4 != 0)
                .then_some(Icmp {
                    ty: p.icmp_type,
                    code: p.icmp_code,
                    id: p.icmp_id,
                    seq: p.icmp_seq,
                }),
            dst_mac: (p.flags & flags::HAS_INNER_MAC != 0).then_some(Mac(p.inner_dmac)),
            fragment: p.flags & flags::INNER_FRAGMENT != 0,
            truncated: p.flags & flags::TRUNCATED != 0,
        });
        let drop = (kind == EventKind::Drop).then(|| KernelDrop {
            reason: (p.flags & flags::HAS_REASON != 0).then(|| {
                self.reasons
                    .get(&raw.drop_reason)
                    .cloned()
                    .unwrap_or_else(|| format!("reason#{}", raw.drop_reason))
            }),
            reason_code: (p.flags & flags::HAS_REASON != 0).then_some(raw.drop_reason),
            location: self
                .kallsyms
                .symbolize(raw.drop_location)
                .map(|s| s.to_string()),
            location_addr: KernelAddr(raw.drop_location),
        });
        Ok(Event {
            time: self.clock.wall_ns(raw.ts_ns),
            ts_mono_ns: raw.ts_ns,
            hop,
            ifindex: raw.ifindex,
            iface: self.ifname(raw.ifindex),
            len: raw.skb_len,
            outer: (has_outer || undecodable).then(|| endpoints(&p.outer, true)),
            vni: has_outer.then_some(p.vni),
            vlan: (p.flags & flags::OUTER_VLAN != 0).then_some(p.vlan),
            vlan_inner: (p.flags & flags::QINQ != 0).then_some(p.inner_vlan),
            undecodable,
            outer_recovered: p.flags & flags::OUTER_FROM_HEADROOM != 0,
            inner,
            fingerprint: fingerprint(p).map(Fingerprint),
            drop,
        })
    }
}

/// Whether the kernel freed this packet as a real drop. Recent kernels
/// report consumed packets through a separate tracepoint, older ones may
/// still pass `SKB_CONSUMED` here.
pub fn is_real_drop(ev: &Event) -> bool {
    !matches!(
        ev.drop.as_ref().and_then(|d| d.reason.as_deref()),
        Some("SKB_CONSUMED" | "NOT_DROPPED_YET")
    )
}

pub fn addr(family: u8, b: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    } else {
        debug_assert_eq!(family, AF_INET6);
        IpAddr::V6(Ipv6Addr::from(*b))
    }
}

fn endpoints(t: &Tuple, l4: bool) -> Endpoints {
    let ports = l4 && matches!(t.proto, 6 | 17 | 132);
    Endpoints {
        src: addr(t.family, &t.src),
        dst: addr(t.family, &t.dst),
        proto: Proto::from_number(t.proto),
        sport: ports.then_some(t.sport),
        dport: ports.then_some(t.dport),
    }
}

#[cfg(test)]
mod tests {
    use flannel_trace_common::{
        PacketInfo,
        parse::{Layer, parse_inner},
    };

    use super::*;

    fn raw_drop(reason: u32) -> RawEvent {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[
            0x45, 0, 0, 28, 0x12, 0x34, 0, 0, 64, 1, 0, 0, 10, 244, 0, 0, 10, 244, 1, 0,
        ]);
        frame.extend_from_slice(&[8, 0, 0, 0, 0, 7, 0, 1]);
        let mut pkt = PacketInfo::default();
        parse_inner(&frame[..], Layer::Ethernet, 0, &mut pkt).unwrap();
        pkt.flags |= flags::HAS_REASON;
        RawEvent {
            ts_ns: 1_000,
            kind: EventKind::Drop as u8,
            hop: Hop::Drop as u8,
            ifindex: 1,
            drop_reason: reason,
            drop_location: 0xffff_ffff_8100_0010,
            pkt,
            ..Default::default()
        }
    }

    #[test]
    fn decodes_a_drop_with_the_kernels_reason_name() {
        let reasons = HashMap::from([(12, "NETFILTER_DROP".to_owned())]);
        let syms = Kallsyms::parse("ffffffff81000000 T nft_do_chain\nffffffff81000100 T other\n");
        let mut d = Decoder::new(Clock::sample(), reasons, syms);
        let ev = d.decode(&raw_drop(12)).unwrap();
        assert_eq!(ev.hop, Hop::Drop);
        let drop = ev.drop.as_ref().unwrap();
        assert_eq!(drop.reason.as_deref(), Some("NETFILTER_DROP"));
        assert_eq!(drop.location.as_deref(), Some("nft_do_chain+0x10"));
        let inner = ev.inner.as_ref().unwrap();
        assert_eq!(inner.endpoints.src.to_string(), "10.244.0.0");
        assert_eq!(inner.icmp.as_ref().unwrap().seq, 1);
        assert!(is_real_drop(&ev));
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["drop"]["reason"], "NETFILTER_DROP");
        assert_eq!(json["inner"]["proto"], "icmp");
        assert!(json.get("outer").is_none());
        // An unknown number is shown as such, never as a wrong name.
        let ev = d.decode(&raw_drop(999)).unwrap();
        assert_eq!(ev.drop.unwrap().reason.as_deref(), Some("reason#999"));
    }
}
