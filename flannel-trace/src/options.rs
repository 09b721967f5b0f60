//! The options of a trace run (`flannel-trace` without a subcommand), typed
//! and checked once, before anything touches the kernel (and of `join`). The session, the
//! counters mode and the loader take these, never the command line: a
//! newcomer changing a flag edits `cli.rs` and `args.rs`, nothing below.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use crate::{
    datapath::{DropBackendChoice, TcMode, VxlanBackendChoice},
    net::Cidr,
};

/// The kernel programs match at most this many VXLAN ports.
pub const MAX_PORTS: usize = 4;

/// Everything a trace run was asked to do.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    pub node: NodeOptions,
    /// `--port`, in the order given (at most [`MAX_PORTS`]); empty: the
    /// vxlan device's port, else flannel's default.
    pub ports: Vec<u16>,
    pub filter: Filter,
    /// Keep 1 in this many packets (a power of two; 1 keeps all).
    pub sample: u32,
    pub output: Output,
    pub mode: Mode,
    /// `--record FILE`.
    pub record: Option<PathBuf>,
    /// `--listen`/`--peer`: a live join with another node.
    pub live: Option<LiveJoin>,
    /// `--probe`: ICMP echoes across the overlay.
    pub probe: Option<Probe>,
    /// Stop after this long; `None`: until a signal.
    pub duration: Option<Duration>,
    /// Interim verdicts (`--listen`) and counter reports (`--stats`).
    pub report_every: Duration,
    /// Events kept per node for the live join.
    pub max_events: usize,
    pub datapath: DatapathOptions,
    /// This node's name in verdicts and recordings; `None`: the hostname.
    pub name: Option<String>,
}

/// Which devices make up the node's overlay, as named by the user.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub vxlan_dev: String,
    /// The underlay NIC; `None`: the vxlan device's link, else the
    /// default-route device.
    pub iface: Option<String>,
    pub pod_devs: PodDevs,
    /// The pod network, at most one per address family; empty: found.
    pub pod_cidrs: Vec<Cidr>,
    /// Watch `iface` only, not every other NIC with an address.
    pub only_iface: bool,
}

/// The pod-side devices (the pod-ingress and pod-egress hops).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodDevs {
    /// cni0, else the device of the route to this node's pod subnet.
    Found,
    /// `--pod-dev none`: host-network traffic only.
    HostNetworkOnly,
    Named(Vec<String>),
}

/// Which packets the programs keep.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter {
    /// Only this VNI; `None`: every VNI on the port.
    pub vni: Option<u32>,
    /// Only packets whose inner source or destination is this address.
    pub host: Option<IpAddr>,
    /// Only this inner IP protocol (its IANA number).
    pub proto: Option<u8>,
}

/// What is printed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    /// JSON lines instead of text.
    pub json: bool,
    /// With `--listen`, every event too (otherwise only verdicts).
    pub events: bool,
}

/// Per-packet events, or in-kernel counters only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Events,
    /// `--stats`, with `--metrics ADDR` for Prometheus.
    Stats {
        metrics: Option<SocketAddr>,
    },
}

/// A live join: this node's side of it and the shared secret.
#[derive(Debug, Clone)]
pub struct LiveJoin {
    pub role: Role,
    /// Never empty.
    pub token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Wait for the peer here and print the verdicts.
    Listen(SocketAddr),
    /// Stream to the listener, trying to reach it for `wait`.
    Peer { addr: SocketAddr, wait: Duration },
}

/// `--probe`.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// `None`: the peer's VTEP address, once joined (then a live join is
    /// requested: see [`OptionsError::ProbeWithoutTarget`]).
    pub to: Option<IpAddr>,
    pub count: u32,
    pub interval: Duration,
}

/// The loader's choices.
#[derive(Debug, Clone)]
pub struct DatapathOptions {
    pub tc_mode: TcMode,
    pub vxlan_rcv: VxlanBackendChoice,
    /// `None`: kernel drops are not traced (`--no-drops`).
    pub drop: Option<DropBackendChoice>,
    /// The ring buffer's size in bytes (a power of two, at least a page).
    pub ring_size: u32,
    pub verifier_log: Option<PathBuf>,
}

impl TraceOptions {
    pub fn listening(&self) -> bool {
        matches!(self.role(), Some(Role::Listen(_)))
    }

    pub fn role(&self) -> Option<Role> {
        self.live.as_ref().map(|l| l.role)
    }

    pub fn stats(&self) -> bool {
        matches!(self.mode, Mode::Stats { .. })
    }
}

/// `flannel-trace join A.rec B.rec`.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The two recordings, one per node.
    pub files: [PathBuf; 2],
    /// One JSON document instead of text.
    pub json: bool,
    /// Packets sent less than this before a node stopped recording are in
    /// flight, not lost.
    pub grace: Duration,
    /// How far apart in time a packet's two observations may be.
    pub window: Duration,
}

/// A combination of flags that cannot run. Each is a usage error (exit
/// status 2); the messages are the user's, keep them stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("--listen and --peer need a shared secret: pass --token or set FLANNEL_TRACE_TOKEN")]
    NoToken,
    #[error("--probe needs a peer (--listen/--peer) or an address (--probe-to)")]
    ProbeWithoutTarget,
    #[error("at most four --port values")]
    TooManyPorts,
    #[error("--pod-dev none cannot be combined with device names")]
    PodDevNoneWithNames,
    #[error("one pod network per address family: {0} is a second one")]
    SecondPodNetwork(Cidr),
}

/// The pod-side devices named with `--pod-dev` (`none` alone: none).
pub fn pod_devs(names: &[String]) -> Result<PodDevs, OptionsError> {
    let none = names.iter().any(|d| d == "none");
    match (none, names.len()) {
        (_, 0) => Ok(PodDevs::Found),
        (true, 1) => Ok(PodDevs::HostNetworkOnly),
        (true, _) => Err(OptionsError::PodDevNoneWithNames),
        (false, _) => Ok(PodDevs::Named(names.to_vec())),
    }
}

/// Refuses a second pod network of one address family: the programs hold
/// one prefix per family.
pub fn one_network_per_family(networks: &[Cidr]) -> Result<(), OptionsError> {
    let mut seen = [false; 2];
    for n in networks {
        let f = usize::from(!n.addr().is_ipv4());
        if std::mem::replace(&mut seen[f], true) {
            return Err(OptionsError::SecondPodNetwork(*n));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pod_devs_none_stands_alone() {
        assert_eq!(pod_devs(&[]), Ok(PodDevs::Found));
        assert_eq!(pod_devs(&names(&["none"])), Ok(PodDevs::HostNetworkOnly));
        assert_eq!(
            pod_devs(&names(&["cni0", "none"])),
            Err(OptionsError::PodDevNoneWithNames)
        );
        assert_eq!(
            pod_devs(&names(&["cni0", "br1"])),
            Ok(PodDevs::Named(names(&["cni0", "br1"])))
        );
    }

    #[test]
    fn one_pod_network_per_family() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        assert!(one_network_per_family(&[c("10.244.0.0/16"), c("fd00::/64")]).is_ok());
        let err = one_network_per_family(&[c("10.244.0.0/16"), c("10.245.0.0/16")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "one pod network per address family: 10.245.0.0/16 is a second one"
        );
    }
}
