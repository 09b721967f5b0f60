//! One direction's join window: a packet's observations on both nodes are
//! gathered while they arrive, and the packet is judged (carried on from
//! each hop or not) once the window has passed over it; what stays are
//! the flow's tallies. Memory is the packets of one window, not of the
//! recordings.
//!
//! A packet is its fingerprint within a flow, from its first observation
//! on for `window_ns`: observations of the same fingerprint later than
//! that are another packet, so a counterpart outside the window is
//! unmatched. TCP data is matched by sequence ranges instead (GSO and GRO
//! split and merge it): a range is judged `window_ns` after it was seen,
//! against every range the later hops saw until then.

use std::{
    collections::{HashMap, VecDeque, hash_map},
    hash::{BuildHasherDefault, Hasher},
};

use flannel_trace_common::Hop;

use super::tally::{
    self, Bounds, DropKey, FlowKey, FlowTally, OVERLAY_EGRESS, OVERLAY_INGRESS, UNDERLAY_EGRESS,
    UNDERLAY_INGRESS,
};
use crate::{
    peer::thin::Counting, schema::event::Event, schema::identity::NodeIdentity,
    schema::values::Fingerprint as Fp,
};

/// Hashing for keys that are mostly fingerprints, which are hashes of the
/// packet already: a multiply-xorshift of the words is enough, and the
/// default SipHash is a fifth of a join's time.
#[derive(Default)]
struct FpHasher(u64);

impl Hasher for FpHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

type FpMap<K, V> = HashMap<K, V, BuildHasherDefault<FpHasher>>;

#[derive(Debug, Clone, Copy)]
struct Seen {
    stage: u8,
    /// Judged by its sequence range, not by its fingerprint.
    ranged: bool,
    wall: i64,
    len: u32,
}

#[derive(Debug)]
struct PendingDrop {
    key: DropKey,
    undelivered: bool,
}

/// The observations of one packet, in order of arrival.
#[derive(Debug, Default)]
struct Packet {
    seen: Vec<Seen>,
    drops: Vec<PendingDrop>,
    /// How many packets it stands for (a thinned live stream, see
    /// [`Counting`]); 1 otherwise.
    weight: u64,
}

#[derive(Debug, Clone, Copy)]
struct Range {
    wall: i64,
    flow: u32,
    stage: u8,
    range: (i64, i64),
    len: u32,
    weight: u64,
}

pub(super) struct DirectionWindow {
    window_ns: i64,
    bounds: Bounds,
    flow_of: HashMap<FlowKey, u32>,
    last_flow: Option<u32>,
    flows: Vec<FlowTally>,
    packets: FpMap<(u32, Fp), Packet>,
    /// Packets in order of their first observation, with when they are due.
    due: VecDeque<(i64, u32, Fp)>,
    ranges: VecDeque<Range>,
    /// Which packets of a thinned live stream count, and for how many.
    counting: Option<Counting>,
}

impl DirectionWindow {
    pub fn new(window_ns: i64, bounds: Bounds, counting: Counting) -> DirectionWindow {
        DirectionWindow {
            counting: counting.active().then_some(counting),
            window_ns: window_ns.max(0),
            bounds,
            flow_of: HashMap::new(),
            last_flow: None,
            flows: Vec::new(),
            packets: FpMap::default(),
            due: VecDeque::new(),
            ranges: VecDeque::new(),
        }
    }

    /// Packets (fingerprints and TCP ranges) held in the window now.
    pub fn held(&self) -> usize {
        self.packets.len() + self.ranges.len()
    }

    /// The index of `key`'s flow, made on its first event.
    fn flow(&mut self, key: FlowKey, s: &NodeIdentity, r: &NodeIdentity) -> u32 {
        match self.flow_of.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.flows.len() as u32;
                // This flow's path.
                let first = if s.is_pod(key.src) {
                    tally::POD_INGRESS
                } else {
                    OVERLAY_EGRESS
                };
                let last = if r.is_pod(key.dst) {
                    tally::POD_EGRESS
                } else {
                    OVERLAY_INGRESS
                };
                self.flows.push(FlowTally::new(key.clone(), first, last));
                self.flow_of.insert(key, i);
                i
            }
        }
    }

    /// One event of this direction, at `wall` on the sender's clock.
    /// Events come roughly in time order (see [`Self::advance`]).
    pub fn push(
        &mut self,
        ev: &Event,
        wall: i64,
        on_receiver: bool,
        s: &NodeIdentity,
        r: &NodeIdentity,
    ) {
        let hop = ev.hop;
        // Consecutive events are mostly of one flow: no key built for them.
        let flow = match self.last_flow {
            Some(i) if self.flows[i as usize].key.is_of(ev) => i,
            _ => {
                let Some(key) = FlowKey::of(ev) else { return };
                let i = self.flow(key, s, r);
                self.last_flow = Some(i);
                i
            }
        };
        // A packet's weight is decided at its first observation (see
        // `Counting` for why that keeps every counted packet whole).
        let w = match &self.counting {
            None => 1,
            Some(c) => match ev.fingerprint {
                Some(fp) => match self.packets.get(&(flow, fp)) {
                    Some(p) => p.weight,
                    None => c.weight(ev, wall),
                },
                None => c.weight(ev, wall),
            },
        };
        let f = &mut self.flows[flow as usize];
        f.thinned |= w != 1;
        if w == 0 {
            // Not counted; a TCP range it saw still shows that what
            // earlier hops sent got this far.
            if let Some(stage) = tally::stage_of(hop)
                && let Some(rg) = f.range_of(ev)
            {
                f.ranges[stage].insert(rg);
            }
            return;
        }
        if hop == Hop::Drop {
            if on_receiver {
                f.receiver_drops += w;
            } else {
                f.sender_drops += w;
            }
            let d = ev.drop.as_ref();
            let location = d
                .and_then(|d| d.location.as_deref())
                .map(|l| l.split('+').next().unwrap_or(l).to_owned());
            let key = (
                on_receiver,
                d.and_then(|d| d.reason.clone()),
                location,
                false,
                ev.outer.is_some(),
                ev.iface.clone(),
            );
            match ev.fingerprint {
                // Whether it came after delivery is known when the packet
                // leaves the window.
                Some(fp) => {
                    let undelivered = on_receiver && tally::undelivered(ev);
                    self.packet(flow, fp, wall, w)
                        .drops
                        .push(PendingDrop { key, undelivered });
                }
                None => *f.drops.entry(key).or_default() += w,
            }
            return;
        }
        let Some(stage) = tally::stage_of(hop) else {
            return;
        };
        f.count[stage] += w;
        let range = f.range_of(ev);
        if stage == UNDERLAY_EGRESS {
            *f.egress_devs
                .entry(ev.iface.clone().unwrap_or_else(|| "?".into()))
                .or_default() += w;
        }
        if (UNDERLAY_INGRESS..=OVERLAY_INGRESS).contains(&stage) {
            let own = r.vxlan_mac.as_deref().unwrap_or("");
            let macs = &mut f.foreign_macs[stage - UNDERLAY_INGRESS];
            if let Some(m) = ev.inner.as_ref().and_then(|i| i.dst_mac)
                && !own.is_empty()
                && !m.is_text(own)
                && !macs.contains(&m)
            {
                macs.push(m);
            }
        }
        let judged = (f.path_first..f.path_last).contains(&stage);
        if let Some(rg) = range {
            f.ranges[stage].insert(rg);
            if judged {
                self.ranges.push_back(Range {
                    wall,
                    flow,
                    stage: stage as u8,
                    range: rg,
                    len: ev.len,
                    weight: w,
                });
            }
        }
        match ev.fingerprint {
            Some(fp) => self.packet(flow, fp, wall, w).seen.push(Seen {
                stage: stage as u8,
                ranged: range.is_some(),
                wall,
                len: ev.len,
            }),
            None if range.is_none() && judged => {
                f.unmarked[stage].add(wall, ev.len, &self.bounds, w);
                if stage == UNDERLAY_EGRESS {
                    f.unmarked_max_len = Some(f.unmarked_max_len.map_or(ev.len, |m| m.max(ev.len)));
                }
            }
            None => {}
        }
    }

    fn packet(&mut self, flow: u32, fp: Fp, wall: i64, weight: u64) -> &mut Packet {
        match self.packets.entry((flow, fp)) {
            hash_map::Entry::Occupied(p) => p.into_mut(),
            hash_map::Entry::Vacant(v) => {
                self.due
                    .push_back((wall.saturating_add(self.window_ns), flow, v.key().1));
                v.insert(Packet {
                    // Seven stages: one allocation for most packets.
                    seen: Vec::with_capacity(7),
                    drops: Vec::new(),
                    weight,
                })
            }
        }
    }

    /// Judges what the window has passed over: packets first seen, and
    /// ranges seen, more than the window before `now` (the latest time
    /// seen, on this direction's sender clock).
    pub fn advance(&mut self, now: i64) {
        while let Some(&(due, _, _)) = self.due.front()
            && due < now
        {
            let (_, flow, fp) = self.due.pop_front().expect("front exists");
            if let Some(p) = self.packets.remove(&(flow, fp)) {
                fold(&mut self.flows[flow as usize], p, &self.bounds);
            }
        }
        while let Some(r) = self.ranges.front()
            && r.wall.saturating_add(self.window_ns) < now
        {
            let r = self.ranges.pop_front().expect("front exists");
            judge_range(&mut self.flows[r.flow as usize], r, &self.bounds);
        }
    }

    /// Everything judged; the flows in key order.
    pub fn finish(mut self) -> Vec<FlowTally> {
        self.advance(i64::MAX);
        let mut flows = self.flows;
        flows.sort_by(|a, b| a.key.cmp(&b.key));
        flows
    }
}

fn judge_range(f: &mut FlowTally, r: Range, b: &Bounds) {
    let k = usize::from(r.stage);
    // Seen at any later stage means not lost here: a hook that missed a
    // packet must not invent a loss.
    if tally::covered(r.range, f.ranges[k + 1..=f.path_last].iter()) {
        if k == UNDERLAY_EGRESS {
            f.delivered_len(r.len);
        }
    } else {
        f.missing[k].add(r.wall, r.len, b, r.weight);
    }
}

/// A packet leaves the window: at each stage of its path, as many of its
/// observations are carried on as the busiest later stage saw of it.
fn fold(f: &mut FlowTally, p: Packet, b: &Bounds) {
    let (first, last) = (f.path_first, f.path_last);
    let w = p.weight;
    let mut count = [0u64; 7];
    let mut at: [Option<i64>; 7] = [None; 7];
    for s in &p.seen {
        let k = usize::from(s.stage);
        count[k] += 1;
        at[k].get_or_insert(s.wall);
    }
    for k in first..last {
        let mut budget = count[k + 1..=last].iter().copied().max().unwrap_or(0);
        for s in p
            .seen
            .iter()
            .filter(|s| usize::from(s.stage) == k && !s.ranged)
        {
            if budget > 0 {
                budget -= 1;
                if k == UNDERLAY_EGRESS {
                    f.delivered_len(s.len);
                }
            } else {
                f.missing[k].add(s.wall, s.len, b, w);
            }
        }
    }
    let delay = |from: usize, to: usize| Some((at[to]? - at[from]?) as f64);
    if let Some(d) = delay(UNDERLAY_EGRESS, UNDERLAY_INGRESS) {
        f.underlay.push(d);
    }
    if let Some(d) = delay(OVERLAY_EGRESS, UNDERLAY_EGRESS) {
        f.encap.push(d);
    }
    if let Some(d) = delay(UNDERLAY_INGRESS, OVERLAY_INGRESS) {
        f.decap.push(d);
    }
    for k in first..=last {
        if let Some(d) = delay(k, last) {
            f.end_to_end[k].push(d);
        }
    }
    let reached_end = count[last] > 0;
    let mut undelivered = 0;
    for d in p.drops {
        let mut key = d.key;
        // A drop by the receiving host's stack after the packet reached
        // the end of its path is not a network loss.
        key.3 = key.0 && !d.undelivered && reached_end;
        undelivered += u64::from(d.undelivered);
        *f.drops.entry(key).or_default() += w;
    }
    // Seen at the last hop, then thrown away before the stack took it.
    f.undelivered += undelivered.min(count[last]) * w;
}
