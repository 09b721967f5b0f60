//! The two sides `check` compares: what the cluster says about each node
//! (its flannel annotations) and what this node's kernel holds for its
//! vxlan device, plus the findings. Plain data, so that the comparison is
//! pure and testable without root.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::Serialize;

use crate::netdev::FdbEntry;

/// An address prefix such as `10.244.2.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let m = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(a) & m == u32::from(b) & m
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(a) & m == u128::from(b) & m
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a prefix such as 10.244.1.0/24"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` in `{s}` is not an IP address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("`{len}` in `{s}` is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("prefix length {len} in `{s}` exceeds {max}"));
        }
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    /// None for an entry that resolved to nothing (incomplete, failed).
    pub mac: Option<[u8; 6]>,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    /// The node the finding is about.
    pub node: String,
    pub message: String,
    pub fix: String,
}

pub fn mac_text(mac: &[u8; 6]) -> String {
    crate::identity::mac_string(mac)
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
    fn prefixes_contain_their_addresses_only() {
        let c: Cidr = "10.244.2.0/24".parse().unwrap();
        assert!(c.contains("10.244.2.0".parse().unwrap()));
        assert!(c.contains("10.244.2.255".parse().unwrap()));
        assert!(!c.contains("10.244.3.0".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6: Cidr = "fd00:10:244:2::/64".parse().unwrap();
        assert!(v6.contains("fd00:10:244:2::5".parse().unwrap()));
        assert!(!v6.contains("fd00:10:244:3::5".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
    }

    #[test]
    fn macs_parse_in_either_notation() {
        let m = [0x0e, 0xa1, 0x00, 0x00, 0x00, 0x02];
        assert_eq!(parse_mac("0e:a1:00:00:00:02"), Some(m));
        assert_eq!(parse_mac("0E-A1-00-00-00-02"), Some(m));
        assert_eq!(parse_mac("0e:a1:00:00:00"), None);
        assert_eq!(parse_mac("0e:a1:00:00:00:0g"), None);
    }
}
