//! `check` for a live join (`--listen`/`--peer`) and `join`: the peer's
//! identity stands in for its node-list entry (its vxlan MAC for VtepMAC,
//! its vxlan `local` for public-ip, its VTEP address for the pod subnet),
//! and this node's identity for its device. Only the findings the verdict
//! does not already make itself are returned.

use std::net::IpAddr;

use super::{
    compare,
    model::{ClusterNode, Device, Kind, Neighbour, Route, mac_text, parse_mac},
    tables,
};
use crate::{
    identity::{NeighbourPeer, NodeIdentity},
    netdev::FdbEntry,
};

/// Neighbour entries of the vxlan device, for this node's identity; None
/// when they cannot be read (then nothing is judged from them).
pub fn neighbours_of(ifindex: u32) -> Option<Vec<NeighbourPeer>> {
    let n = tables::neighbours(ifindex).ok()?;
    Some(
        n.into_iter()
            .map(|e| NeighbourPeer {
                ip: e.ip,
                mac: e.mac.as_ref().map(mac_text),
            })
            .collect(),
    )
}

/// Prefixes of the main table routed through the vxlan device.
pub fn routes_via(ifindex: u32) -> Option<Vec<String>> {
    let r = tables::routes().ok()?;
    Some(
        r.into_iter()
            .filter(|r| r.oif == Some(ifindex))
            .map(|r| r.dst.to_string())
            .collect(),
    )
}

fn as_node(y: &NodeIdentity) -> ClusterNode {
    ClusterNode {
        name: y.node.clone(),
        flannel: true,
        public_ip: y.underlay_ips().next(),
        backend_type: Some("vxlan".into()),
        vtep_mac: y.vxlan_mac.as_deref().and_then(parse_mac),
        vni: y.vni,
        backend_data_error: None,
        pod_cidr: None,
        vtep_ip: y
            .vtep_addrs
            .iter()
            .copied()
            .find(IpAddr::is_ipv4)
            .or_else(|| y.vtep_addrs.first().copied()),
    }
}

fn as_device(x: &NodeIdentity) -> Device {
    Device {
        name: x.vxlan_dev.clone(),
        ifindex: x.vxlan_ifindex,
        mac: x.vxlan_mac.as_deref().and_then(parse_mac),
        vni: x.vni,
        port: x.device_port,
        local: x.local,
        host_addrs: x.underlay_ips().collect(),
        fdb: x
            .fdb
            .iter()
            .filter_map(|e| {
                Some(FdbEntry {
                    mac: parse_mac(&e.mac)?,
                    dst: e.dst,
                })
            })
            .collect(),
        neighbours: x.neighbours.as_ref().map(|n| {
            n.iter()
                .map(|e| Neighbour {
                    ip: e.ip,
                    mac: e.mac.as_deref().and_then(parse_mac),
                })
                .collect()
        }),
        routes: x.overlay_routes.as_ref().map(|r| {
            r.iter()
                .filter_map(|s| s.parse().ok())
                .map(|dst| Route {
                    dst,
                    gateway: None,
                    oif: Some(x.vxlan_ifindex),
                })
                .collect()
        }),
    }
}

/// Findings about `x`'s entries for peer `y`, as config lines of a verdict.
pub fn peer_findings(x: &NodeIdentity, y: &NodeIdentity) -> Vec<String> {
    compare::remote(&as_node(y), &as_device(x))
        .into_iter()
        // No FDB entry, an FDB entry to the wrong address, and VNI
        // mismatches are already config findings of the verdict.
        .filter(|f| {
            matches!(
                f.kind,
                Kind::FdbMac | Kind::StaleNeighbour | Kind::MissingNeighbour | Kind::MissingRoute
            )
        })
        .map(|f| format!("{}: {} (fix: {})", x.node, f.message, f.fix))
        .collect()
}
