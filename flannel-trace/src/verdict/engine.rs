//! The join engine: two nodes' events in, roughly in time order, through
//! one window per direction; the report out at the end. Used alike by
//! `join` (recordings streamed), the live joiner and the tests.

use super::{
    ClockEstimate, Direction, Flow, Losses, NodeSummary, NodeTrace, Options, Report, SCHEMA,
    Segment, classify, explain,
    tally::{Bounds, Traced},
    window::DirectionWindow,
};
use crate::{
    peer::thin::{Counting, ThinStep},
    schema::event::Event,
    schema::identity::NodeIdentity,
};

/// What is known of a node besides its events.
struct Side {
    identity: NodeIdentity,
    lost: u64,
    end_wall_ns: Option<i64>,
    gaps: Vec<String>,
    thinned: Vec<ThinStep>,
    events: u64,
}

impl Side {
    fn trace(&self) -> NodeTrace<'_> {
        NodeTrace {
            identity: &self.identity,
            events: &[],
            lost: self.lost,
            end_wall_ns: self.end_wall_ns,
            gaps: self.gaps.clone(),
            thinned: self.thinned.clone(),
        }
    }
}

/// The join of two nodes' event streams: events go in (roughly in time
/// order, see [`Join::time`]), the report comes out at the end. It holds
/// one window of packets per direction and each flow's tallies.
pub struct Join {
    sides: [Side; 2],
    clock: Option<ClockEstimate>,
    /// Direction 0 is a → b on a's clock, 1 is b → a on b's clock.
    pub(super) dirs: [DirectionWindow; 2],
    /// The latest time seen, on a's clock.
    now: i64,
    /// Largest number of packets held in the windows at once.
    peak_held: usize,
}

impl Join {
    /// `a` and `b` give the identities and what is known of the nodes'
    /// observation (losses, end, gaps); their `events` are not read.
    pub fn new(
        a: &NodeTrace<'_>,
        b: &NodeTrace<'_>,
        clock: Option<ClockEstimate>,
        opts: Options,
    ) -> Join {
        let side = |n: &NodeTrace<'_>| Side {
            identity: n.identity.clone(),
            lost: n.lost,
            end_wall_ns: n.end_wall_ns,
            gaps: n.gaps.clone(),
            thinned: n.thinned.clone(),
            events: 0,
        };
        let mut sides = [side(a), side(b)];
        // Two nodes with one hostname (e.g. namespaces of one machine) are
        // told apart by their underlay address.
        if a.identity.node == b.identity.node {
            for s in &mut sides {
                let ip = s
                    .identity
                    .underlay_ips()
                    .next()
                    .map_or_else(|| "?".into(), |ip| ip.to_string());
                s.identity.node = format!("{}@{ip}", s.identity.node);
            }
        }
        // A thinned live stream is counted with a guard of two windows (a
        // packet's observations, then what a TCP range is judged against)
        // and the clock bound, and a margin for ring-buffer reordering.
        let guard = 2 * opts.window_ns.max(0) + clock.map_or(0, |c| c.error_ns) + 100_000_000;
        let dirs = [0usize, 1].map(|d| {
            let (s, r) = (&sides[d], &sides[1 - d]);
            let shift = Join::shift(clock, d);
            let base = s.identity.sample_rate().max(r.identity.sample_rate()) - 1;
            let counting = Counting::new([(&s.thinned, 0), (&r.thinned, -shift)], base, guard);
            DirectionWindow::new(
                opts.window_ns,
                Bounds {
                    s_end: s.end_wall_ns,
                    r_start: (r.identity.attached_wall_ns > 0)
                        .then(|| r.identity.attached_wall_ns - shift),
                    r_end: r.end_wall_ns.map(|e| e - shift),
                    grace_ns: opts.grace_ns,
                },
                counting,
            )
        });
        Join {
            sides,
            clock,
            dirs,
            now: i64::MIN,
            peak_held: 0,
        }
    }

    /// Receiver times of direction `d` move onto its sender's clock by
    /// this much: `peer_wall ≈ local_wall + offset`.
    fn shift(clock: Option<ClockEstimate>, d: usize) -> i64 {
        match (clock, d) {
            (Some(c), 0) => c.offset_ns,
            (Some(c), _) => -c.offset_ns,
            (None, _) => 0,
        }
    }

    /// An event's time on node a's clock: the order in which to push.
    pub fn time(&self, node: usize, ev: &Event) -> i64 {
        let wall = ev.ts_mono_ns as i64 + self.sides[node].identity.clock_offset_ns;
        if node == 1 {
            wall - Join::shift(self.clock, 0)
        } else {
            wall
        }
    }

    /// One event of node `node` (0: a, 1: b).
    pub fn push(&mut self, node: usize, ev: &Event) {
        let t = self.time(node, ev);
        self.now = self.now.max(t);
        self.sides[node].events += 1;
        let (me, peer) = (&self.sides[node].identity, &self.sides[1 - node].identity);
        let d = match classify::role(ev, me, peer) {
            Some(classify::Role::Sent) => node,
            Some(classify::Role::Received) => 1 - node,
            None => return,
        };
        // Direction 1 runs on b's clock: a's clock plus the offset.
        let on_dir = |t: i64| {
            if d == 1 {
                t + Join::shift(self.clock, 0)
            } else {
                t
            }
        };
        // What the window has passed over is judged before this event can
        // join it.
        self.dirs[d].advance(on_dir(self.now));
        let (s, r) = (&self.sides[d].identity, &self.sides[1 - d].identity);
        self.dirs[d].push(ev, on_dir(t), node != d, s, r);
        let held = self.dirs[0].held() + self.dirs[1].held();
        self.peak_held = self.peak_held.max(held);
    }

    /// Adds a reason why node `node`'s view may be partial.
    pub fn add_gap(&mut self, node: usize, gap: String) {
        self.sides[node].gaps.push(gap);
    }

    /// Most packets the windows held at once.
    pub fn peak_held(&self) -> usize {
        self.peak_held
    }

    pub fn report(self) -> Report {
        let Join {
            sides, clock, dirs, ..
        } = self;
        let [a, b] = [sides[0].trace(), sides[1].trace()];
        let nodes = [&a, &b];
        let mut uncertain = Vec::new();
        for n in nodes {
            if n.lost > 0 {
                uncertain.push(format!(
                    "the tracer on {} lost {} events (ring buffer full): packets it missed may be counted as lost",
                    n.identity.node, n.lost
                ));
            }
            uncertain.extend(n.gaps.iter().map(|g| format!("{}: {g}", n.identity.node)));
        }
        let untraced = nodes
            .iter()
            .flat_map(|n| {
                n.identity
                    .missing_hops
                    .iter()
                    .map(|m| format!("{}: {} not traced: {}", n.identity.node, m.hop, m.reason))
            })
            .collect();
        let mut config = super::fixes::config_findings(a.identity, b.identity);
        let (ra, rb) = (a.identity.sample_rate(), b.identity.sample_rate());
        if ra != rb {
            config.push(format!(
                "sampling differs: {} keeps 1 in {ra} packets, {} 1 in {rb}; run both with the same --sample",
                a.identity.node, b.identity.node
            ));
            uncertain.push(format!(
                "the nodes sample differently (1 in {ra} and 1 in {rb}): packets kept by one may be missing from the other"
            ));
        }
        let mut thinned: Vec<super::Thinned> = nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| {
                // On a's clock, the report's common timeline.
                let shift = if i == 1 { -Join::shift(clock, 0) } else { 0 };
                n.thinned.iter().map(move |t| super::Thinned {
                    node: n.identity.node.clone(),
                    from: crate::kernel::clock::rfc3339(t.from_wall_ns.saturating_add(shift)),
                    from_wall_ns: t.from_wall_ns.saturating_add(shift),
                    rate: t.rate(),
                })
            })
            .collect();
        thinned.sort_by_key(|t| (t.from_wall_ns, t.rate));
        let error_ms = clock.map(|c| c.error_ns as f64 / 1e6);
        let directions = dirs
            .into_iter()
            .enumerate()
            .map(|(d, w)| direction(nodes[d], nodes[1 - d], w, error_ms))
            .collect();
        Report {
            schema: SCHEMA,
            nodes: nodes
                .iter()
                .zip(&sides)
                .map(|(n, side)| NodeSummary {
                    name: n.identity.node.clone(),
                    underlay: n.identity.underlay_ips().collect(),
                    underlay_dev: n.identity.underlay_dev.clone(),
                    vxlan_dev: n.identity.vxlan_dev.clone(),
                    port: n.identity.port,
                    device_port: n.identity.device_port,
                    vni: n.identity.vni,
                    events: side.events,
                    lost: n.lost,
                })
                .collect(),
            clock,
            config,
            directions,
            uncertain,
            untraced,
            thinned,
        }
    }
}

fn direction(
    s: &NodeTrace<'_>,
    r: &NodeTrace<'_>,
    window: DirectionWindow,
    error_ms: Option<f64>,
) -> Direction {
    let sample = s.identity.sample_rate().max(r.identity.sample_rate());
    let names = [s.identity.node.as_str(), r.identity.node.as_str()];
    let flows: Vec<Flow> = window
        .finish()
        .into_iter()
        .map(|f| {
            // Sampled flows stand for N times as many packets; the tool's
            // own probes are never sampled out, so they count as they are.
            let probe = f
                .key
                .icmp_id
                .is_some_and(|id| id & 0xff00 == flannel_trace_common::fingerprint::PROBE_ID_TAG);
            let scale = if probe { 1 } else { u64::from(sample) };
            f.finish(names, Traced::of(s, r), scale, error_ms)
        })
        .collect();
    let mut lost = Losses::default();
    let (mut sent, mut delivered, mut in_flight) = (0, 0, 0);
    for f in &flows {
        lost.add(&f.lost);
        sent += f.sent;
        delivered += f.delivered;
        in_flight += f.in_flight;
    }
    let segment = match lost.worst() {
        Some(seg) => seg,
        None if sent == 0 && delivered == 0 => Segment::NoTraffic,
        None => Segment::Delivered,
    };
    // Losses are only the network's when both tracers saw everything.
    let certain = s.lost == 0
        && r.lost == 0
        && s.gaps.is_empty()
        && r.gaps.is_empty()
        && s.identity.sample_rate() == r.identity.sample_rate();
    let (mut verdict, fix) =
        explain::direction_sentence(s, r, segment, &flows, &lost, sent, delivered, certain);
    if sample > 1 {
        verdict.push_str(&format!(
            " [sampled 1 in {sample}: counts are estimates, {sample} × the packets kept; probes counted as sent]"
        ));
    }
    Direction {
        sample,
        from: s.identity.node.clone(),
        to: r.identity.node.clone(),
        outer: explain::outer_of(s.identity, r.identity),
        segment,
        certain,
        sent,
        delivered,
        lost,
        in_flight,
        verdict,
        fix,
        flows,
    }
}
