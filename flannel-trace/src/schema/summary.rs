//! The last record of a session: what one node saw in total, and why its
//! view may be partial.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

fn is_zero(n: &u64) -> bool {
    *n == 0
}
