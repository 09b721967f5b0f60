//! `check` for a live join (`--listen`/`--peer`) and `join`: the peer's
//! identity stands in for its node-list entry (its vxlan MAC for VtepMAC,
//! its vxlan `local` for public-ip, its VTEP address for the pod subnet),
//! and this node's identity for its device. The neighbour and route tables
//! are read from the kernel for the node this process runs on (fresher than
//! the identity's copy), and taken from the identity for the other node; an
//! identity from a version that did not carry them leaves them unjudged.
//! Only the findings the verdict does not already make itself are returned.

use std::net::IpAddr;

use super::{
    compare,
    model::{ClusterNode, Device, Kind, Neighbour, Route, parse_mac},
    tables,
};
use crate::{net::FdbEntry, schema::identity::NodeIdentity};

/// Whether `x` is the node this process runs on (same network namespace
/// and the vxlan device is there): then its neighbour and route tables can
/// be read from the kernel, which an identity does not carry.
fn is_here(x: &NodeIdentity) -> bool {
    crate::kernel::netns_inode().ok() == Some(x.netns_inode)
        && crate::net::link_by_index(x.vxlan_ifindex).is_ok_and(|l| l.name == x.vxlan_dev)
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
    let mut dev = Device {
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
        neighbours: None,
        routes: None,
    };
    if is_here(x) {
        dev.neighbours = crate::net::neighbours(x.vxlan_ifindex).ok();
        dev.routes = tables::routes().ok();
    } else {
        dev.neighbours = x.vxlan_neighbours.as_ref().map(|n| {
            n.iter()
                .map(|e| Neighbour {
                    ip: e.ip,
                    mac: e.mac.as_deref().and_then(parse_mac),
                })
                .collect()
        });
        dev.routes = x.pod_routes.as_ref().map(|r| {
            r.iter()
                .map(|r| Route {
                    dst: r.dst,
                    gateway: r.via,
                    oif: r.oif,
                })
                .collect()
        });
    }
    dev
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
