//! What a flow's verdict is made of, bounded by the flow, not by its
//! packets: counts per hop, the packets judged lost or in flight as they
//! left the join window (`window`), medians of delays, and the TCP
//! sequence ranges each hop saw. [`FlowTally::finish`] turns them into a
//! [`Flow`].

use std::{collections::BTreeMap, net::IpAddr};

use flannel_trace_common::Hop;

use super::{DropCount, Flow, HopCounts, Latency, Losses, NodeTrace, Segment};
use crate::{
    schema::event::Event,
    schema::values::{Mac, Proto},
};

/// Hops along the path, sender then receiver. A flow's own path is a
/// range of them: it starts at `pod-ingress` only when its source is a pod
/// behind the sender's traced pod device, and ends at `pod-egress` only
/// when its destination is a pod behind the receiver's.
const STAGES: [Hop; 7] = [
    Hop::PodIngress,
    Hop::OverlayEgress,
    Hop::UnderlayEgress,
    Hop::UnderlayIngress,
    Hop::VxlanRcv,
    Hop::OverlayIngress,
    Hop::PodEgress,
];
pub(super) const POD_INGRESS: usize = 0;
pub(super) const OVERLAY_EGRESS: usize = 1;
pub(super) const UNDERLAY_EGRESS: usize = 2;
pub(super) const UNDERLAY_INGRESS: usize = 3;
pub(super) const VXLAN_RCV: usize = 4;
pub(super) const OVERLAY_INGRESS: usize = 5;
pub(super) const POD_EGRESS: usize = 6;
/// The stage a transition leaves from decides the segment of a loss.
const SEGMENT_AFTER: [Segment; 6] = [
    Segment::SenderHost,
    Segment::SenderHost,
    Segment::Underlay,
    Segment::ReceiverHost,
    Segment::ReceiverHost,
    Segment::ReceiverHost,
];

/// Drop reasons that mean the packet never got into the receiving host's
/// stack proper even when it was seen at the last hop of a host-network
/// path: thrown away as addressed to another host, by reverse-path
/// filtering, for want of a route, or as a bad header. Such a drop is a
/// loss, never "after delivery".
const UNDELIVERED: [&str; 6] = [
    "OTHERHOST",
    "IP_RPFILTER",
    "IP_NOROUTE",
    "IP_INNOROUTES",
    "IP_INADDRERRORS",
    "IP_INHDR",
];

pub(super) fn undelivered(ev: &Event) -> bool {
    ev.drop
        .as_ref()
        .and_then(|d| d.reason.as_deref())
        .is_some_and(|r| UNDELIVERED.contains(&r))
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct FlowKey {
    /// First, and ordered by its name: flows sort as they always did.
    pub proto: Proto,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_id: Option<u16>,
}

impl FlowKey {
    /// Whether `ev` belongs to this flow, without building its key.
    pub(super) fn is_of(&self, ev: &Event) -> bool {
        ev.inner.as_ref().is_some_and(|i| {
            let e = &i.endpoints;
            self.src == e.src
                && self.dst == e.dst
                && self.sport == e.sport
                && self.dport == e.dport
                && self.icmp_id == i.icmp.as_ref().map(|c| c.id)
                && self.proto == e.proto
        })
    }

    pub(super) fn of(ev: &Event) -> Option<FlowKey> {
        let i = ev.inner.as_ref()?;
        let e = &i.endpoints;
        Some(FlowKey {
            proto: e.proto,
            src: e.src,
            dst: e.dst,
            sport: e.sport,
            dport: e.dport,
            icmp_id: i.icmp.as_ref().map(|c| c.id),
        })
    }

    fn label(&self) -> String {
        match (self.sport, self.dport, self.icmp_id) {
            (Some(sp), Some(dp), _) => {
                format!("{} {}:{sp} > {}:{dp}", self.proto, self.src, self.dst)
            }
            (_, _, Some(id)) => format!("{} {} > {} id {id}", self.proto, self.src, self.dst),
            _ => format!("{} {} > {}", self.proto, self.src, self.dst),
        }
    }
}

/// Which of the hooks that can be missing (see `degraded`) each side had.
#[derive(Debug, Clone, Copy)]
pub(super) struct Traced {
    pub vxlan_rcv: bool,
    pub sender_drops: bool,
    pub receiver_drops: bool,
}

impl Traced {
    pub fn of(s: &NodeTrace<'_>, r: &NodeTrace<'_>) -> Traced {
        Traced {
            vxlan_rcv: r.identity.missing("vxlan-rcv").is_none(),
            sender_drops: s.identity.missing("drop").is_none(),
            receiver_drops: r.identity.missing("drop").is_none(),
        }
    }
}

pub(super) fn stage_of(hop: Hop) -> Option<usize> {
    STAGES.iter().position(|h| *h == hop)
}

/// When each side was watching, on the sender's clock, and how long a
/// frame may still be in flight at the end.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub s_end: Option<i64>,
    pub r_start: Option<i64>,
    pub r_end: Option<i64>,
    pub grace_ns: i64,
}

/// Which observer a missing packet is held against: the sender's own
/// (the next hop is on the sender) or the receiver's. Which one applies
/// depends on the next hop of the flow's path that saw anything at all,
/// known only at the end, so both are counted.
const AGAINST_SENDER: usize = 0;
const AGAINST_RECEIVER: usize = 1;

/// Packets of one stage not carried on to a later one.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Missing {
    in_flight: [u64; 2],
    lost: [u64; 2],
    min_lost_len: [Option<u32>; 2],
}

impl Missing {
    /// One packet of `wall` standing for `n` (a thinned live stream).
    pub fn add(&mut self, wall: i64, len: u32, b: &Bounds, n: u64) {
        for w in [AGAINST_SENDER, AGAINST_RECEIVER] {
            let (start, end) = if w == AGAINST_RECEIVER {
                (b.r_start, b.r_end)
            } else {
                (None, b.s_end)
            };
            if end.is_some_and(|e| wall > e - b.grace_ns) || start.is_some_and(|s| wall < s) {
                self.in_flight[w] += n;
            } else {
                self.lost[w] += n;
                self.min_lost_len[w] = Some(self.min_lost_len[w].map_or(len, |m| m.min(len)));
            }
        }
    }
}

/// Samples kept for a median: all of them up to this many, then every
/// other one of those and of what comes (and so on): exact for the flows
/// of a diagnosis, a close estimate within a fixed size for long ones.
const MEDIAN_KEPT: usize = 1 << 16;

#[derive(Debug)]
pub(super) struct Median {
    kept: Vec<f64>,
    seen: u64,
    stride: u64,
}

impl Default for Median {
    fn default() -> Self {
        Median {
            kept: Vec::new(),
            seen: 0,
            stride: 1,
        }
    }
}

impl Median {
    pub fn push(&mut self, v: f64) {
        if self.seen.is_multiple_of(self.stride) {
            self.kept.push(v);
            if self.kept.len() >= MEDIAN_KEPT {
                let mut i = 0;
                self.kept.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride *= 2;
            }
        }
        self.seen += 1;
    }

    fn get(&self) -> Option<f64> {
        let mut v = self.kept.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Some(v[v.len() / 2])
    }
}

/// Merged TCP sequence ranges (start → end): one interval for a stream
/// without holes, one more per hole.
#[derive(Debug, Default)]
pub(super) struct Ranges(BTreeMap<i64, i64>);

impl Ranges {
    pub fn insert(&mut self, (mut a, mut b): (i64, i64)) {
        if let Some((&s, &e)) = self.0.range(..=a).next_back()
            && e >= a
        {
            a = s;
            b = b.max(e);
        }
        let over: Vec<(i64, i64)> = self.0.range(a..=b).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in over {
            self.0.remove(&s);
            b = b.max(e);
        }
        self.0.insert(a, b);
    }

    fn len(&self) -> u64 {
        self.0.iter().map(|(a, b)| (b - a) as u64).sum()
    }

    /// How far from `at` these ranges reach without a gap, if they hold it.
    fn reach(&self, at: i64) -> Option<i64> {
        self.0
            .range(..=at)
            .next_back()
            .map(|(_, &e)| e)
            .filter(|&e| e > at)
    }
}

/// Whether the union of `sets` covers `r`.
pub(super) fn covered<'a>(r: (i64, i64), sets: impl Iterator<Item = &'a Ranges> + Clone) -> bool {
    let mut at = r.0;
    while at < r.1 {
        match sets.clone().filter_map(|s| s.reach(at)).max() {
            Some(e) => at = e,
            None => return false,
        }
    }
    true
}

/// Drop counts before the node names are known: (on the receiver, reason,
/// location, after delivery, encapsulated, interface).
pub(super) type DropKey = (
    bool,
    Option<String>,
    Option<String>,
    bool,
    bool,
    Option<String>,
);

/// [`DropKey`] with the node's name in place of its side.
type NamedDropKey = (
    String,
    Option<String>,
    Option<String>,
    bool,
    bool,
    Option<String>,
);

/// Everything one flow's verdict needs, folded as its packets leave the
/// window.
#[derive(Debug)]
pub(super) struct FlowTally {
    pub key: FlowKey,
    pub path_first: usize,
    pub path_last: usize,
    pub count: [u64; 7],
    pub sender_drops: u64,
    pub receiver_drops: u64,
    pub seq_base: Option<u32>,
    /// Sequence ranges each stage saw (coverage and TCP bytes).
    pub ranges: [Ranges; 7],
    /// Packets (by fingerprint or range) a stage did not pass on.
    pub missing: [Missing; 7],
    /// Packets with neither fingerprint nor range: carried on when any
    /// later stage saw anything, known only at the end.
    pub unmarked: [Missing; 7],
    pub unmarked_max_len: Option<u32>,
    pub max_delivered_len: Option<u32>,
    /// Seen at the last hop, then dropped before the stack took them.
    pub undelivered: u64,
    /// Some of its packets were not counted, or counted for several (a
    /// thinned live stream): its byte counts would be neither.
    pub thinned: bool,
    pub drops: BTreeMap<DropKey, u64>,
    pub egress_devs: BTreeMap<String, u64>,
    /// Foreign destination MACs per receiver stage, in order of arrival.
    pub foreign_macs: [Vec<Mac>; 3],
    pub underlay: Median,
    pub encap: Median,
    pub decap: Median,
    /// From each possible first stage of the path to its last.
    pub end_to_end: [Median; 7],
}

impl FlowTally {
    pub fn new(key: FlowKey, path_first: usize, path_last: usize) -> FlowTally {
        FlowTally {
            key,
            path_first,
            path_last,
            count: [0; 7],
            sender_drops: 0,
            receiver_drops: 0,
            seq_base: None,
            ranges: Default::default(),
            missing: Default::default(),
            unmarked: Default::default(),
            unmarked_max_len: None,
            max_delivered_len: None,
            undelivered: 0,
            thinned: false,
            drops: BTreeMap::new(),
            egress_devs: BTreeMap::new(),
            foreign_macs: Default::default(),
            underlay: Median::default(),
            encap: Median::default(),
            decap: Median::default(),
            end_to_end: Default::default(),
        }
    }

    /// The TCP sequence range `ev` carries, relative to the flow's first.
    pub fn range_of(&mut self, ev: &Event) -> Option<(i64, i64)> {
        let tcp = ev
            .inner
            .as_ref()?
            .tcp
            .as_ref()
            .filter(|t| t.payload_len > 0)?;
        let base = *self.seq_base.get_or_insert(tcp.seq);
        let start = i64::from(tcp.seq.wrapping_sub(base) as i32);
        Some((start, start + i64::from(tcp.payload_len)))
    }

    pub fn delivered_len(&mut self, len: u32) {
        self.max_delivered_len = Some(self.max_delivered_len.map_or(len, |m| m.max(len)));
    }

    /// The flow's verdict. `names` are the sender's and receiver's node
    /// names, `scale` the sampling factor, `error_ms` the clock bound.
    pub fn finish(
        self,
        names: [&str; 2],
        traced: Traced,
        scale: u64,
        error_ms: Option<f64>,
    ) -> Flow {
        let (path_first, path_last) = (self.path_first, self.path_last);
        let count = self.count;
        // A stage with no observation at all while a later one has some is a
        // hook that did not see this flow (e.g. a missing backend), not a loss.
        // A hop the receiver could not trace at all is no stage of the path:
        // its loss goes to the segment around it, never to "0 reached" there.
        let active: Vec<usize> = (path_first..=path_last)
            .filter(|&k| k != VXLAN_RCV || traced.vxlan_rcv)
            .filter(|&k| count[k] > 0 || (k + 1..=path_last).all(|j| count[j] == 0))
            .collect();
        let mut lost = Losses::default();
        let mut in_flight = 0;
        let mut min_lost_len: Option<u32> = None;
        let mut max_delivered_len = self.max_delivered_len;
        for pair in active.windows(2) {
            let (k, next) = (pair[0], pair[1]);
            // The next stage's observer must have been watching.
            let w = if next >= UNDERLAY_INGRESS {
                AGAINST_RECEIVER
            } else {
                AGAINST_SENDER
            };
            let later_saw = active.iter().any(|&j| j > k && count[j] > 0);
            let mut add = |m: &Missing| {
                in_flight += m.in_flight[w];
                match SEGMENT_AFTER[k] {
                    Segment::SenderHost => lost.sender_host += m.lost[w],
                    Segment::Underlay => {
                        lost.underlay += m.lost[w];
                        if let Some(l) = m.min_lost_len[w] {
                            min_lost_len = Some(min_lost_len.map_or(l, |x| x.min(l)));
                        }
                    }
                    _ => lost.receiver_host += m.lost[w],
                }
            };
            add(&self.missing[k]);
            if !later_saw {
                add(&self.unmarked[k]);
            } else if k == UNDERLAY_EGRESS
                && let Some(l) = self.unmarked_max_len
            {
                max_delivered_len = Some(max_delivered_len.map_or(l, |m| m.max(l)));
            }
        }
        let first = active.first().copied().unwrap_or(path_first);
        let sent = if active.iter().any(|&k| k <= UNDERLAY_EGRESS) {
            count[first]
        } else {
            0
        };
        let delivered = count[path_last] - self.undelivered;
        lost.receiver_host += self.undelivered;
        let segment = lost.worst().unwrap_or(if sent == 0 && delivered == 0 {
            Segment::NoTraffic
        } else {
            Segment::Delivered
        });
        let mut drops: BTreeMap<NamedDropKey, u64> = BTreeMap::new();
        for ((on_receiver, reason, location, after, encapsulated, iface), n) in self.drops {
            let node = names[usize::from(on_receiver)].to_owned();
            *drops
                .entry((node, reason, location, after, encapsulated, iface))
                .or_default() += n;
        }
        let drops: Vec<DropCount> = drops
            .into_iter()
            .map(
                |((node, reason, location, after_delivery, encapsulated, iface), count)| {
                    DropCount {
                        node,
                        reason,
                        location,
                        count: count * scale,
                        after_delivery,
                        encapsulated,
                        iface,
                    }
                },
            )
            .collect();
        let mut foreign_dst_macs: Vec<String> = Vec::new();
        for m in self
            .foreign_macs
            .into_iter()
            .flatten()
            .map(|m| m.to_string())
        {
            if !foreign_dst_macs.contains(&m) {
                foreign_dst_macs.push(m);
            }
        }
        let tcp_bytes = self
            .seq_base
            .filter(|_| !self.thinned)
            .is_some()
            .then(|| (self.ranges[first].len(), self.ranges[path_last].len()));
        let ms = |m: &Median| m.get().map(|ns| ns / 1e6);
        let us = |m: &Median| m.get().map(|ns| ns / 1e3);
        let latency = Latency {
            underlay_ms: ms(&self.underlay),
            end_to_end_ms: ms(&self.end_to_end[first]),
            error_ms,
            encap_us: us(&self.encap),
            decap_us: us(&self.decap),
            samples: self.underlay.seen,
        };
        let c = |k: usize| count[k] * scale;
        let key = self.key;
        Flow {
            sample: scale as u32,
            key: key.label(),
            proto: key.proto.to_string(),
            src: key.src,
            dst: key.dst,
            sport: key.sport,
            dport: key.dport,
            icmp_id: key.icmp_id,
            path_start: STAGES[path_first].name().into(),
            path_end: STAGES[path_last].name().into(),
            hops: HopCounts {
                pod_ingress: c(POD_INGRESS),
                overlay_egress: c(OVERLAY_EGRESS),
                underlay_egress: c(UNDERLAY_EGRESS),
                underlay_ingress: c(UNDERLAY_INGRESS),
                vxlan_rcv: traced.vxlan_rcv.then(|| c(VXLAN_RCV)),
                overlay_ingress: c(OVERLAY_INGRESS),
                pod_egress: c(POD_EGRESS),
                sender_drops: traced.sender_drops.then_some(self.sender_drops * scale),
                receiver_drops: traced.receiver_drops.then_some(self.receiver_drops * scale),
            },
            egress_devs: self.egress_devs,
            foreign_dst_macs,
            sent: sent * scale,
            delivered: delivered * scale,
            lost: Losses {
                sender_host: lost.sender_host * scale,
                underlay: lost.underlay * scale,
                receiver_host: lost.receiver_host * scale,
            },
            in_flight: in_flight * scale,
            segment,
            drops,
            max_delivered_len,
            min_lost_len,
            tcp_bytes: tcp_bytes.map(|(a, b)| (a * scale, b * scale)),
            latency,
        }
    }
}
