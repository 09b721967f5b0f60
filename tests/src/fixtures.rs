//! The fixtures the integration tests share, in one place: the names the
//! live runs give their nodes, the ping every test sends, the shared
//! token, and unique paths for the recordings a test writes (two tests
//! running at once never share a file).

use std::{
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use flannel_trace_common::Hop;

/// `--name` of the tracer on lab node a in live runs (the listener).
pub const NODE_A: &str = "node-a";
/// `--name` of the tracer on lab node b in live runs (the peer).
pub const NODE_B: &str = "node-b";

/// The hops a TC program serves on the vxlan device and the underlay NIC.
pub const TC_HOPS: [Hop; 4] = [
    Hop::OverlayEgress,
    Hop::OverlayIngress,
    Hop::UnderlayEgress,
    Hop::UnderlayIngress,
];

/// Echo requests of one test ping, and their spacing.
pub const PINGS: u32 = 3;
pub const PING_INTERVAL: Duration = Duration::from_millis(200);

/// The live channel's pre-shared token of both nodes.
pub const TOKEN: &str = "lab-shared-secret";

/// A fresh path for a recording named after `name`, in the recordings
/// directory of the run ([`crate::recording_dir`]): unique per process and
/// per call.
pub fn recording(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    crate::recording_dir().join(format!("{name}-{}-{n}.rec", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_recordings_of_one_name_never_share_a_file() {
        assert_ne!(recording("a"), recording("a"));
    }
}
