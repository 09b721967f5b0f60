//! The `--listen` side's join: both nodes' events, bounded, turned into
//! verdicts as they change and once more at the end.

use crate::{
    peer::thin::ThinStep,
    schema::event::Event,
    schema::identity::NodeIdentity,
    schema::summary::Summary,
    verdict::{self, ClockEstimate, NodeTrace, Options, Report},
};

pub struct Joiner {
    pub local: NodeIdentity,
    pub remote: Option<NodeIdentity>,
    pub clock: Option<ClockEstimate>,
    local_events: Vec<Event>,
    remote_events: Vec<Event>,
    pub remote_summary: Option<Summary>,
    /// How the peer thinned its live stream (its `thin` messages).
    pub remote_thinned: Vec<ThinStep>,
    pub remote_gaps: Vec<String>,
    pub local_gaps: Vec<String>,
    cap: usize,
    printed: Vec<String>,
}

impl Joiner {
    pub fn new(local: NodeIdentity, cap: usize) -> Joiner {
        Joiner {
            local,
            remote: None,
            clock: None,
            local_events: Vec::new(),
            remote_events: Vec::new(),
            remote_summary: None,
            remote_thinned: Vec::new(),
            remote_gaps: Vec::new(),
            local_gaps: Vec::new(),
            cap,
            printed: Vec::new(),
        }
    }

    fn push(events: &mut Vec<Event>, gaps: &mut Vec<String>, cap: usize, ev: Event) {
        if events.len() < cap {
            events.push(ev);
        } else if gaps.iter().all(|g| !g.starts_with("event cap")) {
            gaps.push(format!(
                "event cap of {cap} reached (--max-events): later events were not joined"
            ));
        }
    }

    pub fn push_local(&mut self, ev: Event) {
        Self::push(&mut self.local_events, &mut self.local_gaps, self.cap, ev);
    }

    pub fn push_remote(&mut self, ev: Event) {
        Self::push(&mut self.remote_events, &mut self.remote_gaps, self.cap, ev);
    }

    /// The verdict so far; `None` until a peer has joined.
    pub fn report(&self, local_lost: u64, local_end: Option<i64>, final_: bool) -> Option<Report> {
        let remote = self.remote.as_ref()?;
        let mut remote_gaps = self.remote_gaps.clone();
        if final_ && self.remote_summary.is_none() && remote_gaps.is_empty() {
            remote_gaps.push("the peer sent no summary".into());
        }
        if let Some(s) = self.remote_summary.as_ref() {
            remote_gaps.extend(s.gaps());
        }
        if let Some(n) = self
            .remote_summary
            .as_ref()
            .map(|s| s.probe_read_errors)
            .filter(|n| *n > 0)
        {
            remote_gaps.push(format!(
                "{n} probe reads of struct sk_buff failed: vxlan-rcv/drop events are missing"
            ));
        }
        // Mid-session, "now" is the end of observation on both sides, and
        // packets of the last seconds count as in flight.
        let now = crate::kernel::clock::Clock::now_wall_ns();
        let a = NodeTrace {
            identity: &self.local,
            events: &self.local_events,
            lost: local_lost,
            end_wall_ns: if final_ { local_end } else { Some(now) },
            gaps: self.local_gaps.clone(),
            thinned: Vec::new(),
        };
        // The peer's end on its own clock; without a summary, its last event.
        let remote_end = self
            .remote_summary
            .as_ref()
            .map(|s| s.end_wall_ns)
            .or_else(|| {
                self.remote_events
                    .last()
                    .map(|e| e.ts_mono_ns as i64 + remote.clock_offset_ns)
            });
        let b = NodeTrace {
            identity: remote,
            events: &self.remote_events,
            lost: self.remote_summary.as_ref().map_or(0, |s| s.lost),
            end_wall_ns: if final_ {
                remote_end
            } else {
                // Mid-session: no later than the peer's last event received,
                // since a thinned peer holds seconds of events on purpose.
                let now_there = now + self.clock.map_or(0, |c| c.offset_ns);
                Some(remote_end.map_or(now_there, |e| e.min(now_there)))
            },
            gaps: remote_gaps,
            thinned: self.remote_thinned.clone(),
        };
        let mut opts = Options::default();
        if !final_ {
            // Mid-session, recent packets may still be on their way.
            opts.grace_ns = 2_000_000_000;
        }
        Some(verdict::judge(&a, &b, self.clock, opts))
    }

    /// Direction and flow verdicts that changed since last asked.
    pub fn changed(&mut self, r: &Report) -> Vec<String> {
        let mut now: Vec<String> = Vec::new();
        for d in &r.directions {
            now.push(d.verdict.clone());
            for f in &d.flows {
                let state = match f.segment {
                    verdict::Segment::Delivered | verdict::Segment::NoTraffic => {
                        f.segment.name().to_owned()
                    }
                    seg => format!("{} lost in {}", f.lost.total(), seg.name()),
                };
                now.push(format!(
                    "  {}→{} flow {}: {state} ({} sent, {} delivered)",
                    d.from, d.to, f.key, f.sent, f.delivered
                ));
            }
        }
        let out = now
            .iter()
            .filter(|v| !self.printed.contains(v))
            .cloned()
            .collect();
        self.printed = now;
        out
    }
}
