//! Joining two nodes' traces into a verdict: for each direction and inner
//! flow, how far packets got, and the segment where they were lost.
//!
//! The same inner packet is recognised on both nodes by its fingerprint;
//! TCP data is matched by sequence ranges instead, because GSO and GRO turn
//! one skb on one side into several on the other. A loss is only ever
//! blamed on the network when both tracers saw everything they should
//! have; otherwise the verdict says it is uncertain, and why.

mod classify;
mod engine;
mod explain;
mod fixes;
pub mod live;
mod measures;
pub mod offline;
mod tally;
mod window;

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{schema::event::Event, schema::identity::NodeIdentity};

pub use self::engine::Join;

/// Version of the `join --json` / `verdict` document. 2: the pod hops
/// (`pod_ingress`, `pod_egress`), a flow's path (`path_start`, `path_end`),
/// `end_to_end_ms` measured over that path, and where frames left and what
/// MAC they carried.
pub const SCHEMA: u32 = 2;

/// The offset between the two nodes' wall clocks, measured NTP-style over
/// the peer channel: `peer_wall ≈ local_wall + offset_ns`, within `error_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockEstimate {
    pub offset_ns: i64,
    pub error_ns: i64,
    pub samples: u32,
}

/// One node's side of the story.
pub struct NodeTrace<'a> {
    pub identity: &'a NodeIdentity,
    pub events: &'a [Event],
    /// Events this node's tracer lost (ring buffer full).
    pub lost: u64,
    /// Wall-clock end of this node's observation, if known.
    pub end_wall_ns: Option<i64>,
    /// Why this node's view may be partial (peer went away, recording cut
    /// short, ...).
    pub gaps: Vec<String>,
    /// When its live stream was thinned, on its own clock (see `thin`).
    pub thinned: Vec<crate::peer::thin::ThinStep>,
}

/// Tunables of the join.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// A packet sent less than this before the receiver stopped observing
    /// may still have been in flight: it is not counted as lost.
    pub grace_ns: i64,
    /// How far apart in time (after clock correction) a packet's
    /// observations may be and still be matched; the join holds this much
    /// of both traces, no more.
    pub window_ns: i64,
}

/// Default of `join --window`.
pub const DEFAULT_WINDOW_NS: i64 = 5_000_000_000;

impl Default for Options {
    fn default() -> Self {
        Options {
            grace_ns: 500_000_000,
            window_ns: DEFAULT_WINDOW_NS,
        }
    }
}

fn one() -> u32 {
    1
}

/// Where a frame was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Segment {
    /// Left the sender's pod (or entered its tunnel), never left its
    /// underlay NIC.
    SenderHost,
    /// Left the sender's NIC, never reached the receiver's NIC.
    Underlay,
    /// Reached the receiver's NIC, never reached its pod (or, for
    /// host-network traffic, never came out of its vxlan device).
    ReceiverHost,
    /// Every frame arrived.
    Delivered,
    /// Nothing was sent in this direction while tracing.
    NoTraffic,
}

impl Segment {
    pub fn name(self) -> &'static str {
        match self {
            Segment::SenderHost => "sender-host",
            Segment::Underlay => "underlay",
            Segment::ReceiverHost => "receiver-host",
            Segment::Delivered => "delivered",
            Segment::NoTraffic => "no-traffic",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Losses {
    pub sender_host: u64,
    pub underlay: u64,
    pub receiver_host: u64,
}

impl Losses {
    pub fn total(&self) -> u64 {
        self.sender_host + self.underlay + self.receiver_host
    }

    fn add(&mut self, o: &Losses) {
        self.sender_host += o.sender_host;
        self.underlay += o.underlay;
        self.receiver_host += o.receiver_host;
    }

    /// The segment that lost the most (ties: the earliest on the path).
    fn worst(&self) -> Option<Segment> {
        let c = [
            (self.sender_host, Segment::SenderHost),
            (self.underlay, Segment::Underlay),
            (self.receiver_host, Segment::ReceiverHost),
        ];
        c.iter()
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, s)| (*n, std::cmp::Reverse(*s)))
            .map(|(_, s)| *s)
    }
}

/// Packets seen at each hop of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopCounts {
    #[serde(default)]
    pub pod_ingress: u64,
    pub overlay_egress: u64,
    pub underlay_egress: u64,
    pub underlay_ingress: u64,
    /// `None` (null) when the receiver could not trace the hop (see
    /// `NodeIdentity::missing_hops`): unknown, never zero.
    pub vxlan_rcv: Option<u64>,
    pub overlay_ingress: u64,
    #[serde(default)]
    pub pod_egress: u64,
    /// `None` when that node had no drop hook.
    pub sender_drops: Option<u64>,
    pub receiver_drops: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCount {
    pub node: String,
    pub reason: Option<String>,
    pub location: Option<String>,
    pub count: u64,
    /// The packet had already reached the end of its path: a drop by the
    /// receiving host's stack (e.g. no listening socket), not a network loss.
    pub after_delivery: bool,
    /// The dropped skb was the encapsulated frame (an underlay drop on our
    /// UDP port), not the inner packet.
    #[serde(default)]
    pub encapsulated: bool,
    /// Device the skb was on when it was freed.
    #[serde(default)]
    pub iface: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median sender `underlay-egress` → receiver `underlay-ingress`, ms.
    pub underlay_ms: Option<f64>,
    /// Median from the first to the last hop of the flow's path (pod to
    /// pod where both are traced), ms.
    pub end_to_end_ms: Option<f64>,
    /// Bound on the error of the two cross-node figures above, ms; `None`
    /// when the clocks were not compared (recordings: wall clocks as is).
    pub error_ms: Option<f64>,
    /// Median `overlay-egress` → `underlay-egress` on the sender, µs (exact).
    pub encap_us: Option<f64>,
    /// Median `underlay-ingress` → `overlay-ingress` on the receiver, µs (exact).
    pub decap_us: Option<f64>,
    pub samples: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flow {
    /// Counts of this flow are its kept packets times this (`--sample`);
    /// 1 when not sampled.
    #[serde(default = "one")]
    pub sample: u32,
    /// e.g. `tcp 10.244.1.1:40000 > 10.244.2.1:8080`, `icmp 10.244.1.0 > 10.244.2.0 id 7`.
    pub key: String,
    pub proto: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_id: Option<u16>,
    /// First and last hop of this flow's path: `pod-ingress`/`pod-egress`
    /// where the address is a pod behind a traced pod device, else
    /// `overlay-egress`/`overlay-ingress` (host-network traffic).
    pub path_start: String,
    pub path_end: String,
    pub hops: HopCounts,
    /// Sender NICs the frames left by (underlay-egress), with counts.
    #[serde(default)]
    pub egress_devs: BTreeMap<String, u64>,
    /// Inner destination MACs that arrived at the receiver but are not its
    /// VTEP MAC (a peer's stale neighbour/FDB entry).
    #[serde(default)]
    pub foreign_dst_macs: Vec<String>,
    /// Distinct packets the sender put into the tunnel.
    pub sent: u64,
    pub delivered: u64,
    pub lost: Losses,
    /// Packets not judged: sent before the receiver's tracer was attached,
    /// or too close to the end of its observation.
    pub in_flight: u64,
    pub segment: Segment,
    pub drops: Vec<DropCount>,
    /// Largest outer length delivered and smallest lost in the underlay:
    /// an MTU problem shows as lost ≥ delivered.
    pub max_delivered_len: Option<u32>,
    pub min_lost_len: Option<u32>,
    /// TCP payload bytes sent into the tunnel and delivered out of it.
    pub tcp_bytes: Option<(u64, u64)>,
    pub latency: Latency,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Direction {
    /// `--sample N` of the two nodes (1: every packet): the counts are
    /// estimates, N times the packets kept.
    #[serde(default = "one")]
    pub sample: u32,
    pub from: String,
    pub to: String,
    /// Outer addresses and port, e.g. `10.25.1.55→10.25.1.51 udp/8475`.
    pub outer: Option<String>,
    pub segment: Segment,
    /// False when a tracer lost events or a node's view is partial: the
    /// losses may be the tracer's, not the network's.
    pub certain: bool,
    pub sent: u64,
    pub delivered: u64,
    pub lost: Losses,
    pub in_flight: u64,
    /// The verdict in one sentence, with the evidence in numbers.
    pub verdict: String,
    /// The likely fix, in one line.
    pub fix: Option<String>,
    pub flows: Vec<Flow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSummary {
    pub name: String,
    pub underlay: Vec<IpAddr>,
    pub underlay_dev: String,
    pub vxlan_dev: String,
    pub port: u16,
    pub device_port: Option<u16>,
    pub vni: Option<u32>,
    pub events: u64,
    pub lost: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub nodes: Vec<NodeSummary>,
    /// `nodes[1]` wall clock ≈ `nodes[0]` wall clock + offset.
    pub clock: Option<ClockEstimate>,
    /// Configuration mismatches found by comparing the two nodes.
    pub config: Vec<String>,
    pub directions: Vec<Direction>,
    /// Reasons the verdict may be incomplete.
    pub uncertain: Vec<String>,
    /// Hops a node could not trace, and why: e.g. `node-b: vxlan-rcv not
    /// traced: kernel lockdown (confidentiality) …`.
    #[serde(default)]
    pub untraced: Vec<String>,
    /// Steps by which a node's live stream was thinned, when its link to
    /// the listener could not keep up: counts after each are estimates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thinned: Vec<Thinned>,
}

/// One step of a thinned live stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thinned {
    /// The node whose live stream was thinned.
    pub node: String,
    /// From when (RFC 3339, on the first node's clock) ...
    pub from: String,
    pub from_wall_ns: i64,
    /// ... it carried 1 in `rate` packets, chosen by hash on both nodes.
    pub rate: u32,
}

/// Join two nodes' traces held in memory (the live join, tests): their
/// events go through the same window as a streamed `join`, in time order.
pub fn judge(
    a: &NodeTrace<'_>,
    b: &NodeTrace<'_>,
    clock: Option<ClockEstimate>,
    opts: Options,
) -> Report {
    let mut j = Join::new(a, b, clock, opts);
    let mut order: Vec<(i64, u8, u32)> = Vec::with_capacity(a.events.len() + b.events.len());
    for (node, n) in [a, b].into_iter().enumerate() {
        order.extend(
            n.events
                .iter()
                .enumerate()
                .map(|(i, ev)| (j.time(node, ev), node as u8, i as u32)),
        );
    }
    order.sort_by_key(|&(t, _, _)| t);
    for (_, node, i) in order {
        let n = if node == 0 { a } else { b };
        j.push(usize::from(node), &n.events[i as usize]);
    }
    j.report()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_degraded;
#[cfg(test)]
mod tests_thinned;
#[cfg(test)]
pub use tests::identity as test_identity;
