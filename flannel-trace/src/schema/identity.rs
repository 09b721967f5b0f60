//! Who is tracing: the node, its overlay and underlay, and its hooks. Sent
//! first on every stream so the other side (or `join`) can tell which
//! packets travel between the two nodes and in which direction.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{datapath::degraded::MissingHop, net::Cidr};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub version: String,
    pub node: String,
    pub kernel: String,
    pub netns_inode: u32,
    pub vxlan_dev: String,
    pub vxlan_ifindex: u32,
    /// The VTEP MAC: what peers' FDB entries point at.
    pub vxlan_mac: Option<String>,
    /// Addresses of the vxlan device (flannel: the network address of the
    /// node's pod subnet).
    pub vtep_addrs: Vec<IpAddr>,
    pub underlay_dev: String,
    pub underlay_ifindex: u32,
    pub underlay_addrs: Vec<IpAddr>,
    /// The vxlan device's `local` address, if set.
    pub local: Option<IpAddr>,
    /// The first port traced (`--port`, else the device's).
    pub port: u16,
    /// Every port traced.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Where `port` came from: `--port`, `device` or `default`.
    pub port_source: String,
    /// The port the vxlan device itself listens on.
    pub device_port: Option<u16>,
    /// The vxlan device's VNI.
    pub vni: Option<u32>,
    /// FDB of the vxlan device: peer VTEP MAC → peer underlay address.
    pub fdb: Vec<FdbPeer>,
    pub hooks: Vec<HookReport>,
    /// Hooks no backend could serve (kernel lockdown, no CAP_PERFMON...):
    /// the node traced its TC hops only, and saw nothing at these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_hops: Vec<MissingHop>,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC at start, in ns: converts event
    /// `ts_mono_ns` to wall-clock time on this node.
    pub clock_offset_ns: i64,
    pub ring_size: u32,
    /// Wall-clock time when every hook was attached: packets sent to this
    /// node before then cannot have been seen by it.
    #[serde(default)]
    pub attached_wall_ns: i64,
    /// Pod-side devices traced by the pod hops (cni0); empty when the node
    /// has none, and its paths start and end at the vxlan device.
    #[serde(default)]
    pub pod_devs: Vec<String>,
    /// This node's pod subnets (the routes on its pod devices).
    #[serde(default)]
    pub pod_subnets: Vec<Cidr>,
    /// The overlay's pod networks the kernel filters compare with.
    #[serde(default)]
    pub pod_networks: Vec<Cidr>,
    /// Where `pod_networks` came from: `--pod-cidr`, `subnet.env` or
    /// `routes`.
    #[serde(default)]
    pub pod_network_source: String,
    /// Addresses of the node itself inside the pod network (on the pod
    /// devices and the vxlan device): traffic to them is the host's own.
    #[serde(default)]
    pub overlay_local_addrs: Vec<IpAddr>,
    /// Every NIC the underlay hops are attached to, the main one first.
    #[serde(default)]
    pub underlay_devs: Vec<String>,
    /// The route this node takes to each peer underlay address of its FDB.
    #[serde(default)]
    pub peer_routes: Vec<PeerRoute>,
    /// `--sample N` (1: every packet; 0 in recordings from before it
    /// existed, which means the same).
    #[serde(default)]
    pub sample: u32,
    /// Counters mode (`--stats`): no events are streamed.
    #[serde(default)]
    pub stats_mode: bool,
    /// The vxlan device's neighbour entries at start (peer VTEP address →
    /// VtepMAC), so the other side of a join can check them as `check`
    /// would. `None`: not read, or from a version that did not carry them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_neighbours: Option<Vec<NeighbourEntry>>,
    /// The main table's routes into the pod networks at start, for the same
    /// check. `None` as above, or when there were more than [`MAX_TABLE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_routes: Option<Vec<PodRoute>>,
}

/// Which backend serves a hook, and why others were passed over.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct HookReport {
    pub hop: String,
    pub backend: String,
    pub target: String,
    /// Backends tried before the one chosen, with the error each gave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<(String, String)>,
}

/// More entries than this in a table and it is not carried: a verdict must
/// not judge a partial table ("no route") on a node it cannot read.
pub const MAX_TABLE: usize = 4096;

/// One neighbour entry of the vxlan device; `mac` is `None` for an entry
/// that resolved to nothing (incomplete, failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourEntry {
    pub ip: IpAddr,
    pub mac: Option<String>,
}

/// One route of the main table into the pod network; `oif` is the
/// ifindex on the node that recorded it, `dev` its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRoute {
    pub dst: Cidr,
    pub via: Option<IpAddr>,
    pub oif: Option<u32>,
    #[serde(default)]
    pub dev: Option<String>,
}

/// Where this node's kernel sends frames for one peer's underlay address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRoute {
    pub dst: IpAddr,
    pub dev: Option<String>,
    pub via: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbPeer {
    pub mac: String,
    pub dst: Option<IpAddr>,
}

impl NodeIdentity {
    /// Underlay addresses this node sends from and receives on: the vxlan
    /// device's `local` first, then the NIC's, without link-local ones.
    pub fn underlay_ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let link_local = |ip: &IpAddr| match ip {
            IpAddr::V4(a) => a.is_link_local(),
            IpAddr::V6(a) => a.is_unicast_link_local(),
        };
        let mut seen = Vec::new();
        self.local
            .into_iter()
            .chain(self.underlay_addrs.iter().copied())
            .filter(move |ip| {
                let new = !link_local(ip) && !seen.contains(ip);
                seen.push(*ip);
                new
            })
    }

    pub fn owns_underlay(&self, ip: IpAddr) -> bool {
        // `underlay_ips` without its de-duplication: asked for every event.
        let link_local = match ip {
            IpAddr::V4(a) => a.is_link_local(),
            IpAddr::V6(a) => a.is_unicast_link_local(),
        };
        !link_local && (self.local == Some(ip) || self.underlay_addrs.contains(&ip))
    }

    /// Whether an inner address belongs to this node's pod subnet: the
    /// routes on its pod device when it has one; otherwise (flannel gives
    /// each node a subnet whose network address is on the vxlan device) a
    /// /24 (IPv4) or /64 (IPv6) around the vxlan device's addresses.
    pub fn owns_overlay(&self, ip: IpAddr) -> bool {
        if !routable(ip) {
            return false;
        }
        if self.pod_subnets.iter().any(|c| c.contains(ip)) {
            return true;
        }
        self.vtep_addrs
            .iter()
            .any(|v| routable(*v) && same_prefix(*v, ip))
    }

    /// Whether `ip` is a pod behind this node's pod device (not the node's
    /// own address): its packets start or end at the pod hops.
    pub fn is_pod(&self, ip: IpAddr) -> bool {
        !self.pod_devs.is_empty()
            && self.pod_subnets.iter().any(|c| c.contains(ip))
            && !self.overlay_local_addrs.contains(&ip)
            && !self.vtep_addrs.contains(&ip)
    }

    /// Why `hop` (`vxlan-rcv`, `drop`) was not traced on this node, if it
    /// was not.
    pub fn missing(&self, hop: &str) -> Option<&MissingHop> {
        self.missing_hops.iter().find(|m| m.hop == hop)
    }

    /// The sampling rate N (1 in N packets kept).
    pub fn sample_rate(&self) -> u32 {
        self.sample.max(1)
    }

    /// The most specific route into the pod network covering `ip`, as
    /// recorded at start; `None` when none does or the table is unknown.
    pub fn pod_route_to(&self, ip: IpAddr) -> Option<&PodRoute> {
        self.pod_routes
            .as_ref()?
            .iter()
            .filter(|r| r.dst.contains(ip))
            .max_by_key(|r| r.dst.len())
    }

    /// The route to `dst` recorded at start, if any.
    pub fn route_to(&self, dst: IpAddr) -> Option<&PeerRoute> {
        self.peer_routes.iter().find(|r| r.dst == dst)
    }
}

/// Link-local and multicast addresses say nothing about which node's pod
/// subnet a packet belongs to.
fn routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_link_local() && !a.is_multicast() && !a.is_broadcast(),
        IpAddr::V6(a) => !a.is_unicast_link_local() && !a.is_multicast(),
    }
}

fn same_prefix(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.octets()[..8] == b.octets()[..8],
        _ => false,
    }
}
