//! Counting one direction's packets per flow and hop, and deciding where
//! each missing one was lost.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use flannel_trace_common::Hop;

use super::{DropCount, Flow, HopCounts, Latency, Losses, NodeTrace, Options, Segment, classify};
use crate::event::Event;

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
const POD_INGRESS: usize = 0;
const OVERLAY_EGRESS: usize = 1;
const UNDERLAY_EGRESS: usize = 2;
const UNDERLAY_INGRESS: usize = 3;
const VXLAN_RCV: usize = 4;
const OVERLAY_INGRESS: usize = 5;
const POD_EGRESS: usize = 6;
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

fn undelivered(ev: &Event) -> bool {
    ev.drop
        .as_ref()
        .and_then(|d| d.reason.as_deref())
        .is_some_and(|r| UNDELIVERED.contains(&r))
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FlowKey {
    proto: String,
    src: IpAddr,
    dst: IpAddr,
    sport: Option<u16>,
    dport: Option<u16>,
    icmp_id: Option<u16>,
}

impl FlowKey {
    fn of(ev: &Event) -> Option<FlowKey> {
        let i = ev.inner.as_ref()?;
        let e = &i.endpoints;
        Some(FlowKey {
            proto: e.proto.clone(),
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

/// One observation of a packet at a stage.
#[derive(Debug, Clone)]
struct Item {
    fp: Option<String>,
    iface: Option<String>,
    dmac: Option<String>,
    /// Wall-clock time on the sender's clock.
    wall: i64,
    len: u32,
    /// TCP payload as a sequence range relative to the flow's first
    /// sequence number: matched by coverage, since GSO/GRO split and merge.
    range: Option<(i64, i64)>,
}

#[derive(Default)]
struct FlowObs<'a> {
    stages: [Vec<Item>; 7],
    sender_drops: Vec<&'a Event>,
    receiver_drops: Vec<&'a Event>,
    seq_base: Option<u32>,
}

fn wall(ev: &Event, node: &NodeTrace<'_>) -> i64 {
    ev.ts_mono_ns as i64 + node.identity.clock_offset_ns
}

/// Whether `node` had the hook of `hop` (`vxlan-rcv`, `drop`).
fn traced(node: &NodeTrace<'_>, hop: &str) -> bool {
    node.identity.missing(hop).is_none()
}

fn stage_of(hop: Hop) -> Option<usize> {
    STAGES.iter().position(|h| *h == hop)
}

pub fn flows(
    s: &NodeTrace<'_>,
    r: &NodeTrace<'_>,
    offset: Option<(i64, i64)>,
    opts: Options,
) -> Vec<Flow> {
    use classify::Role;
    let shift = offset.map_or(0, |(o, _)| o);
    let mut obs: BTreeMap<FlowKey, FlowObs<'_>> = BTreeMap::new();
    for (node, want, is_receiver) in [(s, Role::Sent, false), (r, Role::Received, true)] {
        let peer = if is_receiver { s.identity } else { r.identity };
        for ev in node.events {
            if classify::role(ev, node.identity, peer) != Some(want) {
                continue;
            }
            let Some(key) = FlowKey::of(ev) else { continue };
            let Some(hop) = ev.hop() else { continue };
            let t = if is_receiver {
                wall(ev, node) - shift
            } else {
                wall(ev, node)
            };
            let f = obs.entry(key).or_default();
            if hop == Hop::Drop {
                if is_receiver {
                    f.receiver_drops.push(ev)
                } else {
                    f.sender_drops.push(ev)
                }
                continue;
            }
            let Some(stage) = stage_of(hop) else { continue };
            let range = ev
                .inner
                .as_ref()
                .and_then(|i| i.tcp.as_ref())
                .filter(|t| t.payload_len > 0)
                .map(|tcp| {
                    let base = *f.seq_base.get_or_insert(tcp.seq);
                    let start = i64::from(tcp.seq.wrapping_sub(base) as i32);
                    (start, start + i64::from(tcp.payload_len))
                });
            f.stages[stage].push(Item {
                fp: ev.fingerprint.clone(),
                iface: ev.iface.clone(),
                dmac: ev.inner.as_ref().and_then(|i| i.dst_mac.clone()),
                wall: t,
                len: ev.len,
                range,
            });
        }
    }
    let window = Window {
        s_end: s.end_wall_ns,
        r_start: (r.identity.attached_wall_ns > 0).then(|| r.identity.attached_wall_ns - shift),
        r_end: r.end_wall_ns.map(|e| e - shift),
    };
    obs.into_iter()
        .map(|(key, f)| judge_flow(key, f, s, r, window, offset, opts))
        .collect()
}

/// Whether `item` is carried on by the observations of the next stage.
fn carried(
    item: &Item,
    next: &[Item],
    fp_budget: &mut HashMap<String, u64>,
    next_ranges: &[(i64, i64)],
) -> bool {
    match (item.range, &item.fp) {
        (Some(r), _) => covered(r, next_ranges),
        (None, Some(fp)) => match fp_budget.get_mut(fp) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        },
        (None, None) => !next.is_empty(),
    }
}

/// Merged, sorted ranges.
fn union(items: &[Item]) -> Vec<(i64, i64)> {
    let mut v: Vec<(i64, i64)> = items.iter().filter_map(|i| i.range).collect();
    v.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn covered(r: (i64, i64), set: &[(i64, i64)]) -> bool {
    set.iter().any(|&(a, b)| a <= r.0 && r.1 <= b)
}

fn ranges_len(set: &[(i64, i64)]) -> u64 {
    set.iter().map(|(a, b)| (b - a) as u64).sum()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// Median delay of packets (by fingerprint) from stage `a` to stage `b`, ns.
fn delays(from: &[Item], to: &[Item]) -> Vec<f64> {
    let mut first: HashMap<&str, i64> = HashMap::new();
    for i in to {
        if let Some(fp) = &i.fp {
            first.entry(fp.as_str()).or_insert(i.wall);
        }
    }
    let mut seen = std::collections::HashSet::new();
    from.iter()
        .filter_map(|i| {
            let fp = i.fp.as_deref()?;
            if !seen.insert(fp) {
                return None;
            }
            first.get(fp).map(|t| (t - i.wall) as f64)
        })
        .collect()
}

/// When each side was watching, on the sender's clock.
#[derive(Clone, Copy)]
struct Window {
    s_end: Option<i64>,
    r_start: Option<i64>,
    r_end: Option<i64>,
}

fn judge_flow(
    key: FlowKey,
    f: FlowObs<'_>,
    s: &NodeTrace<'_>,
    r: &NodeTrace<'_>,
    w: Window,
    offset: Option<(i64, i64)>,
    opts: Options,
) -> Flow {
    let st = &f.stages;
    let hops = HopCounts {
        pod_ingress: st[POD_INGRESS].len() as u64,
        overlay_egress: st[OVERLAY_EGRESS].len() as u64,
        underlay_egress: st[UNDERLAY_EGRESS].len() as u64,
        underlay_ingress: st[UNDERLAY_INGRESS].len() as u64,
        vxlan_rcv: traced(r, "vxlan-rcv").then_some(st[VXLAN_RCV].len() as u64),
        overlay_ingress: st[OVERLAY_INGRESS].len() as u64,
        pod_egress: st[POD_EGRESS].len() as u64,
        sender_drops: traced(s, "drop").then_some(f.sender_drops.len() as u64),
        receiver_drops: traced(r, "drop").then_some(f.receiver_drops.len() as u64),
    };
    // This flow's path.
    let path_first = if s.identity.is_pod(key.src) {
        POD_INGRESS
    } else {
        OVERLAY_EGRESS
    };
    let path_last = if r.identity.is_pod(key.dst) {
        POD_EGRESS
    } else {
        OVERLAY_INGRESS
    };
    // A stage with no observation at all while a later one has some is a
    // hook that did not see this flow (e.g. a missing backend), not a loss.
    // A hop the receiver could not trace at all is no stage of the path:
    // its loss goes to the segment around it, never to "0 reached" there.
    let active: Vec<usize> = (path_first..=path_last)
        .filter(|&k| k != VXLAN_RCV || traced(r, "vxlan-rcv"))
        .filter(|&k| !st[k].is_empty() || (k + 1..=path_last).all(|j| st[j].is_empty()))
        .collect();
    let mut lost = Losses::default();
    let mut in_flight = 0;
    let mut lost_in_underlay: Vec<u32> = Vec::new();
    let mut delivered_lens: Vec<u32> = Vec::new();
    for pair in active.windows(2) {
        let (k, next) = (pair[0], pair[1]);
        // Seen at any later stage means not lost here: a hook that missed a
        // packet (or a backend that cannot see it) must not invent a loss.
        let later: Vec<Item> = active
            .iter()
            .filter(|&&j| j > k)
            .flat_map(|&j| st[j].iter().cloned())
            .collect();
        let mut budget: HashMap<String, u64> = HashMap::new();
        for &j in active.iter().filter(|&&j| j > k) {
            let mut here: HashMap<&str, u64> = HashMap::new();
            for i in &st[j] {
                if let Some(fp) = &i.fp {
                    *here.entry(fp).or_default() += 1;
                }
            }
            for (fp, n) in here {
                let slot = budget.entry(fp.to_owned()).or_default();
                *slot = (*slot).max(n);
            }
        }
        let later_ranges = union(&later);
        // The next stage's observer must have been watching: from its
        // attachment until its end, less the time a frame may be in flight.
        let (start, end) = if next >= UNDERLAY_INGRESS {
            (w.r_start, w.r_end)
        } else {
            (None, w.s_end)
        };
        for item in &st[k] {
            let ok = carried(item, &later, &mut budget, &later_ranges);
            if k == UNDERLAY_EGRESS && ok {
                delivered_lens.push(item.len);
            }
            if ok {
                continue;
            }
            if end.is_some_and(|e| item.wall > e - opts.grace_ns)
                || start.is_some_and(|b| item.wall < b)
            {
                in_flight += 1;
                continue;
            }
            match SEGMENT_AFTER[k] {
                Segment::SenderHost => lost.sender_host += 1,
                Segment::Underlay => {
                    lost.underlay += 1;
                    lost_in_underlay.push(item.len);
                }
                _ => lost.receiver_host += 1,
            }
        }
    }
    let first = active.first().copied().unwrap_or(path_first);
    let sent = if active.iter().any(|&k| k <= UNDERLAY_EGRESS) {
        st[first].len() as u64
    } else {
        0
    };
    let mut delivered = st[path_last].len() as u64;
    // Seen at the last hop, then thrown away before the stack took it: not
    // delivered (a frame for another MAC, a reverse-path filter drop...).
    let mut undelivered_fps: HashMap<&str, u64> = HashMap::new();
    for ev in f.receiver_drops.iter().filter(|ev| undelivered(ev)) {
        if let Some(fp) = ev.fingerprint.as_deref() {
            *undelivered_fps.entry(fp).or_default() += 1;
        }
    }
    for item in &st[path_last] {
        if let Some(n) = item
            .fp
            .as_deref()
            .and_then(|fp| undelivered_fps.get_mut(fp))
            && *n > 0
        {
            *n -= 1;
            delivered -= 1;
            lost.receiver_host += 1;
        }
    }
    let segment = lost.worst().unwrap_or(if sent == 0 && delivered == 0 {
        Segment::NoTraffic
    } else {
        Segment::Delivered
    });

    let end_fps: std::collections::HashSet<&str> = st[path_last]
        .iter()
        .filter_map(|i| i.fp.as_deref())
        .collect();
    type DropKey = (
        String,
        Option<String>,
        Option<String>,
        bool,
        bool,
        Option<String>,
    );
    let mut drops: BTreeMap<DropKey, u64> = BTreeMap::new();
    for (node, evs) in [(s, &f.sender_drops), (r, &f.receiver_drops)] {
        for ev in evs.iter() {
            let d = ev.drop.as_ref();
            let loc = d
                .and_then(|d| d.location.as_deref())
                .map(|l| l.split('+').next().unwrap_or(l).to_owned());
            let after = std::ptr::eq(node, r)
                && !undelivered(ev)
                && ev
                    .fingerprint
                    .as_deref()
                    .is_some_and(|fp| end_fps.contains(fp));
            *drops
                .entry((
                    node.identity.node.clone(),
                    d.and_then(|d| d.reason.clone()),
                    loc,
                    after,
                    ev.outer.is_some(),
                    ev.iface.clone(),
                ))
                .or_default() += 1;
        }
    }
    let drops: Vec<DropCount> = drops
        .into_iter()
        .map(
            |((node, reason, location, after_delivery, encapsulated, iface), count)| DropCount {
                node,
                reason,
                location,
                count,
                after_delivery,
                encapsulated,
                iface,
            },
        )
        .collect();
    let mut egress_devs: BTreeMap<String, u64> = BTreeMap::new();
    for i in &st[UNDERLAY_EGRESS] {
        *egress_devs
            .entry(i.iface.clone().unwrap_or_else(|| "?".into()))
            .or_default() += 1;
    }
    let own_mac = r.identity.vxlan_mac.as_deref().unwrap_or("");
    let mut foreign_dst_macs: Vec<String> = Vec::new();
    for i in st[UNDERLAY_INGRESS..=OVERLAY_INGRESS].iter().flatten() {
        if let Some(m) = &i.dmac
            && !own_mac.is_empty()
            && !m.eq_ignore_ascii_case(own_mac)
            && !foreign_dst_macs.contains(m)
        {
            foreign_dst_macs.push(m.clone());
        }
    }

    let tcp_bytes = (f.seq_base.is_some()).then(|| {
        (
            ranges_len(&union(&st[first])),
            ranges_len(&union(&st[path_last])),
        )
    });
    let ms = |v: Vec<f64>| median(v).map(|ns| ns / 1e6);
    let us = |v: Vec<f64>| median(v).map(|ns| ns / 1e3);
    let underlay = delays(&st[UNDERLAY_EGRESS], &st[UNDERLAY_INGRESS]);
    let samples = underlay.len() as u64;
    let latency = Latency {
        underlay_ms: ms(underlay),
        end_to_end_ms: ms(delays(&st[first], &st[path_last])),
        error_ms: offset.map(|(_, e)| e as f64 / 1e6),
        encap_us: us(delays(&st[OVERLAY_EGRESS], &st[UNDERLAY_EGRESS])),
        decap_us: us(delays(&st[UNDERLAY_INGRESS], &st[OVERLAY_INGRESS])),
        samples,
    };
    // Sampled flows stand for N times as many packets; the tool's own
    // probes are never sampled out, so they count as they are.
    let probe = key
        .icmp_id
        .is_some_and(|id| id & 0xff00 == flannel_trace_common::fingerprint::PROBE_ID_TAG);
    let scale = if probe {
        1
    } else {
        u64::from(s.identity.sample_rate().max(r.identity.sample_rate()))
    };
    let hops = HopCounts {
        pod_ingress: hops.pod_ingress * scale,
        overlay_egress: hops.overlay_egress * scale,
        underlay_egress: hops.underlay_egress * scale,
        underlay_ingress: hops.underlay_ingress * scale,
        vxlan_rcv: hops.vxlan_rcv.map(|n| n * scale),
        overlay_ingress: hops.overlay_ingress * scale,
        pod_egress: hops.pod_egress * scale,
        sender_drops: hops.sender_drops.map(|n| n * scale),
        receiver_drops: hops.receiver_drops.map(|n| n * scale),
    };
    let lost = Losses {
        sender_host: lost.sender_host * scale,
        underlay: lost.underlay * scale,
        receiver_host: lost.receiver_host * scale,
    };
    let drops: Vec<DropCount> = drops
        .into_iter()
        .map(|d| DropCount {
            count: d.count * scale,
            ..d
        })
        .collect();
    let (sent, delivered, in_flight) = (sent * scale, delivered * scale, in_flight * scale);
    let tcp_bytes = tcp_bytes.map(|(a, b)| (a * scale, b * scale));
    Flow {
        sample: scale as u32,
        key: key.label(),
        proto: key.proto.clone(),
        src: key.src,
        dst: key.dst,
        sport: key.sport,
        dport: key.dport,
        icmp_id: key.icmp_id,
        path_start: STAGES[path_first].name().into(),
        path_end: STAGES[path_last].name().into(),
        hops,
        egress_devs,
        foreign_dst_macs,
        sent,
        delivered,
        lost,
        in_flight,
        segment,
        drops,
        max_delivered_len: delivered_lens.into_iter().max(),
        min_lost_len: lost_in_underlay.into_iter().min(),
        tcp_bytes,
        latency,
    }
}
