//! The two sides `check` compares: what the cluster says about each node
//! (its flannel annotations) and what this node's kernel holds for its
//! vxlan device, plus the findings. Plain data, so that the comparison is
//! pure and testable without root.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::net::FdbEntry;

// The one prefix type of the crate; `check` compares the kernel's routes
// with the node list's podCIDRs in it.
pub use crate::net::Cidr;

/// One node of `kubectl get nodes -o json`, as flannel annotates it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: String,
    /// Whether any `flannel.alpha.coreos.com/` annotation is present.
    pub flannel: bool,
    /// `flannel.alpha.coreos.com/public-ip`: where peers send its VXLAN frames.
    pub public_ip: Option<IpAddr>,
    /// `flannel.alpha.coreos.com/backend-type`.
    pub backend_type: Option<String>,
    /// `VtepMAC` of `flannel.alpha.coreos.com/backend-data`.
    pub vtep_mac: Option<[u8; 6]>,
    /// `VNI` of the backend data.
    pub vni: Option<u32>,
    /// Why the backend data could not be read, if it could not.
    pub backend_data_error: Option<String>,
    /// `spec.podCIDR`.
    pub pod_cidr: Option<Cidr>,
    /// The node's VTEP address: flannel's vxlan backend gives flannel.1 the
    /// network address of the pod subnet, and peers route and resolve via it.
    pub vtep_ip: Option<IpAddr>,
}

/// A neighbour entry on the vxlan device: peers' VTEP address → VTEP MAC.
pub use crate::net::Neighbour;

/// A route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: Cidr,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

/// This node's vxlan device and the tables flannel programs for it. A table
/// that is `None` is not known (an older peer's identity) and not judged.
#[derive(Debug, Clone, Default)]
pub struct Device {
    pub name: String,
    pub ifindex: u32,
    pub mac: Option<[u8; 6]>,
    pub vni: Option<u32>,
    /// UDP destination port, None when the kernel default (8472) applies.
    pub port: Option<u16>,
    pub local: Option<IpAddr>,
    /// Every address of this host (network namespace).
    pub host_addrs: Vec<IpAddr>,
    pub fdb: Vec<FdbEntry>,
    pub neighbours: Option<Vec<Neighbour>>,
    pub routes: Option<Vec<Route>>,
}

/// The kernel's vxlan port when a device has none set.
pub const KERNEL_DEFAULT_PORT: u16 = 8472;

/// What the user said the cluster uses (`--port`, `--vni`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect {
    pub port: Option<u16>,
    pub vni: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// No FDB entry sends frames to a node's public-ip.
    MissingFdb,
    /// The FDB entry for a node's public-ip has another MAC than its VtepMAC.
    FdbMac,
    /// The node's VtepMAC is sent to an address that is not its public-ip.
    FdbDst,
    /// An FDB entry points at an address that is no node's public-ip.
    StrayFdb,
    /// The neighbour entry of a node's VTEP address has another MAC.
    StaleNeighbour,
    /// No neighbour entry for a node's VTEP address.
    MissingNeighbour,
    /// No route to a node's pod subnet.
    MissingRoute,
    /// The route to a node's pod subnet leaves through another device.
    RouteDevice,
    /// A node's backend-type is not vxlan.
    BackendType,
    /// A node carries no flannel annotations, or no public-ip.
    NotFlannel,
    /// A node's backend-data annotation cannot be read.
    BadBackendData,
    /// This node's VtepMAC annotation is not its device's MAC.
    SelfVtepMac,
    /// This node's public-ip annotation is not its device's local address.
    SelfPublicIp,
    /// This node is not in the node list.
    SelfMissing,
    /// The device's VXLAN port differs from --port.
    Port,
    /// A VNI differs: device vs --port, or device vs a node's backend data.
    Vni,
}

/// One disagreement and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: Kind,
    /// The node the finding is about.
    pub node: String,
    pub message: String,
    pub fix: String,
}

pub fn mac_text(mac: &[u8; 6]) -> String {
    crate::schema::values::Mac(*mac).to_string()
}

/// `0e:a1:…` (any case, `:` or `-`) → bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split([':', '-'])
        .map(|p| {
            if p.len() == 2 {
                u8::from_str_radix(p, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<_>>()?;
    parts.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_in_either_notation() {
        let m = [0x0e, 0xa1, 0x00, 0x00, 0x00, 0x02];
        assert_eq!(parse_mac("0e:a1:00:00:00:02"), Some(m));
        assert_eq!(parse_mac("0E-A1-00-00-00-02"), Some(m));
        assert_eq!(parse_mac("0e:a1:00:00:00"), None);
        assert_eq!(parse_mac("0e:a1:00:00:00:0g"), None);
    }
}
