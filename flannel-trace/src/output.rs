//! Text and JSON renderings of the session: start banner, events, summary.

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{
    clock,
    event::{Endpoints, Event},
    identity::NodeIdentity,
};

/// Last record of a session.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub duration_s: f64,
    /// Wall-clock start and end of the observation, ns since the epoch.
    pub start_wall_ns: i64,
    pub end_wall_ns: i64,
    pub events: u64,
    pub per_hop: BTreeMap<String, u64>,
    pub drops_by_reason: BTreeMap<String, u64>,
    /// Events the tracer itself lost because its ring buffer was full.
    pub lost: u64,
    /// Frames of this overlay that could not be decoded.
    pub unparsed: u64,
    /// Records userspace could not decode (object and binary out of step).
    pub decode_errors: u64,
    /// Probe reads of `struct sk_buff` that failed (kernel layout not as
    /// its BTF says); such packets are missing from the probe hooks.
    #[serde(default)]
    pub probe_read_errors: u64,
    /// Events the tracer saw but could not send to the listener in time
    /// (the peer link was slower than the node's event rate). Not counted
    /// in `lost`: the ring buffer did not lose them, the link did.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub peer_unsent: u64,
    /// Events seen before the peer joined that did not fit the bounded
    /// hold-back queue (memory bound), so never reached the listener.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pending_dropped: u64,
    /// How far the wall clock stepped during the session (CLOCK_REALTIME −
    /// CLOCK_MONOTONIC at the end minus at the start), when more than
    /// [`CLOCK_STEP_NOTED`]: wall times of events are then off by up to that.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub clock_step_ns: i64,
    /// False when the tracer lost events: counts are then lower bounds.
    pub complete: bool,
}

/// A wall-clock step smaller than this (NTP slews, not steps) is not noted.
pub const CLOCK_STEP_NOTED: i64 = 50_000_000;

impl Summary {
    /// Why this node's view may be partial or misplaced in time, beyond
    /// ring-buffer loss (which the verdict reports itself).
    pub fn gaps(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.clock_step_ns != 0 {
            out.push(format!(
                "the wall clock stepped by {:+.3} s during the session: event times, the time window and cross-node latencies may be off by that much",
                self.clock_step_ns as f64 / 1e9
            ));
        }
        if self.peer_unsent > 0 {
            out.push(format!(
                "{} events could not be sent over the peer link in time (the link was slower than the node's event rate): packets it saw may be counted as lost",
                self.peer_unsent
            ));
        }
        if self.pending_dropped > 0 {
            out.push(format!(
                "{} events from before the join did not fit the hold-back queue (memory bound) and were not sent",
                self.pending_dropped
            ));
        }
        out
    }
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

pub fn start_text(s: &NodeIdentity) -> String {
    let mut out = String::new();
    let vni = s.vni.map_or("any".into(), |v| v.to_string());
    let _ = writeln!(
        out,
        "flannel-trace {} on {} (kernel {}, netns {}): VXLAN udp/{} ({}), device vni {}",
        s.version, s.node, s.kernel, s.netns_inode, s.port, s.port_source, vni
    );
    let _ = writeln!(
        out,
        "  overlay {} (ifindex {}), underlay {} (ifindex {}{})",
        s.vxlan_dev,
        s.vxlan_ifindex,
        s.underlay_dev,
        s.underlay_ifindex,
        s.local.map_or(String::new(), |ip| format!(", local {ip}"))
    );
    for h in &s.hooks {
        let _ = write!(out, "  {:<17} {:<15} {}", h.hop, h.backend, h.target);
        for (b, why) in &h.fallbacks {
            let _ = write!(out, "\n  {:<17}   ({b} unavailable: {why})", "");
        }
        out.push('\n');
    }
    out
}

fn endpoints_text(e: &Endpoints) -> String {
    match (e.sport, e.dport) {
        (Some(sp), Some(dp)) => format!(
            "{} {}:{sp} > {}:{dp}",
            e.proto,
            bracket(e.src),
            bracket(e.dst)
        ),
        _ => format!("{} {} > {}", e.proto, e.src, e.dst),
    }
}

fn bracket(ip: IpAddr) -> String {
    if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

pub fn event_text(e: &Event, clock_offset_ns: i64) -> String {
    let mut s = format!(
        "{} {:<16} {:<10}",
        clock::time_of_day(e.ts_mono_ns as i64 + clock_offset_ns),
        e.hop,
        e.iface.as_deref().unwrap_or("?")
    );
    if let Some(o) = &e.outer {
        let _ = write!(s, " {} vni {}", endpoints_text(o), e.vni.unwrap_or(0));
        if let Some(v) = e.vlan {
            let _ = write!(s, " vlan {v}");
        }
        s.push_str(" |");
    }
    match &e.inner {
        Some(i) => {
            let _ = write!(s, " {}", endpoints_text(&i.endpoints));
            if let Some(t) = &i.tcp {
                let _ = write!(s, " [{}] seq {} ack {}", t.flags, t.seq, t.ack);
            }
            if let Some(c) = &i.icmp {
                let _ = write!(
                    s,
                    " type {} code {} id {} seq {}",
                    c.ty, c.code, c.id, c.seq
                );
            }
            if i.fragment {
                s.push_str(" fragment");
            }
            if i.truncated {
                s.push_str(" (truncated)");
            }
        }
        None => s.push_str(" (inner frame not decoded)"),
    }
    let _ = write!(s, " len {}", e.len);
    if let Some(d) = &e.drop {
        let _ = write!(
            s,
            " | DROP {} at {}",
            d.reason.as_deref().unwrap_or("(no reason on this kernel)"),
            d.location.as_deref().unwrap_or(&d.location_addr)
        );
    }
    if let Some(fp) = &e.fingerprint {
        let _ = write!(s, " fp {fp}");
    }
    s
}

pub fn summary_text(s: &Summary) -> String {
    let mut out = format!("\n{} events in {:.1}s\n", s.events, s.duration_s);
    for (hop, n) in &s.per_hop {
        let _ = writeln!(out, "  {hop:<17} {n}");
    }
    for (reason, n) in &s.drops_by_reason {
        let _ = writeln!(out, "  drop reason {reason}: {n}");
    }
    if s.lost > 0 {
        let _ = writeln!(
            out,
            "WARNING: the tracer itself lost {} events (ring buffer full; raise --ring-size or narrow with --host/--proto): counts above are lower bounds",
            s.lost
        );
    }
    if s.unparsed > 0 {
        let _ = writeln!(
            out,
            "  {} frames on the overlay port could not be decoded",
            s.unparsed
        );
    }
    if s.probe_read_errors > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} reads of struct sk_buff failed in the probe hooks (kernel layout not as its BTF says): vxlan-rcv/drop counts are incomplete",
            s.probe_read_errors
        );
    }
    if s.decode_errors > 0 {
        let _ = writeln!(
            out,
            "  {} records could not be decoded (binary and eBPF object out of step)",
            s.decode_errors
        );
    }
    out
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
