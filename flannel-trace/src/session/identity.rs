//! This node's identity ([`NodeIdentity`]): what the start banner prints,
//! the recording begins with and the peer is sent, with the routing facts
//! the verdict explains losses by.

use flannel_trace_common::Config;

use super::node::Node;
use crate::{
    datapath::{Probes, degraded::MissingHop},
    kernel::{self, clock::Clock},
    net::{self, Cidr},
    options::TraceOptions,
    schema::identity::{FdbPeer, NeighbourEntry, NodeIdentity, PeerRoute, PodRoute},
    schema::values::Mac,
};

/// This node as the start banner, the recording and the peer see it.
pub fn identity(
    node: &Node,
    cfg: &Config,
    probes: &Probes,
    missing_hops: Vec<MissingHop>,
    opts: &TraceOptions,
    clock: Clock,
) -> NodeIdentity {
    let vx = node.vxlan.vxlan.as_ref();
    NodeIdentity {
        version: env!("CARGO_PKG_VERSION").into(),
        node: opts.name.clone().unwrap_or_else(hostname),
        kernel: kernel::release(),
        netns_inode: cfg.netns_ino,
        vxlan_dev: node.vxlan.name.clone(),
        vxlan_ifindex: node.vxlan.index,
        vxlan_mac: node.vxlan.mac.map(|m| Mac(m).to_string()),
        vtep_addrs: net::addresses(node.vxlan.index).unwrap_or_default(),
        underlay_dev: node.underlay.name.clone(),
        underlay_ifindex: node.underlay.index,
        underlay_addrs: net::addresses(node.underlay.index).unwrap_or_default(),
        local: vx.and_then(|v| v.local),
        port: node.port,
        ports: std::iter::once(node.port)
            .chain(opts.ports.iter().copied())
            .fold(Vec::new(), |mut v, p| {
                if !v.contains(&p) {
                    v.push(p);
                }
                v
            }),
        port_source: node.port_source.into(),
        device_port: vx.and_then(|v| v.port),
        vni: vx.and_then(|v| v.vni),
        fdb: net::vxlan_fdb(node.vxlan.index)
            .unwrap_or_default()
            .into_iter()
            .map(|e| FdbPeer {
                mac: Mac(e.mac).to_string(),
                dst: e.dst,
            })
            .collect(),
        hooks: probes.hooks.clone(),
        missing_hops,
        clock_offset_ns: clock.offset_ns(),
        ring_size: opts.datapath.ring_size,
        attached_wall_ns: Clock::now_wall_ns(),
        pod_devs: node.pods.devs.iter().map(|l| l.name.clone()).collect(),
        pod_subnets: node.pods.subnets.clone(),
        pod_networks: node.pods.networks.clone(),
        pod_network_source: node.pods.source.into(),
        overlay_local_addrs: node.pods.local_addrs.clone(),
        underlay_devs: std::iter::once(&node.underlay)
            .chain(&node.other_nics)
            .map(|l| l.name.clone())
            .collect(),
        peer_routes: peer_routes(node.vxlan.index),
        sample: opts.sample,
        stats_mode: opts.stats(),
        vxlan_neighbours: net::neighbours(node.vxlan.index)
            .ok()
            .filter(|n| n.len() <= crate::schema::identity::MAX_TABLE)
            .map(|n| {
                n.into_iter()
                    .map(|e| NeighbourEntry {
                        ip: e.ip,
                        mac: e.mac.map(|m| Mac(m).to_string()),
                    })
                    .collect()
            }),
        pod_routes: pod_routes(&node.pods.networks),
    }
}

/// The main table's routes that lie inside or around a pod network (the
/// per-node subnet routes flannel adds), without default routes.
fn pod_routes(networks: &[Cidr]) -> Option<Vec<PodRoute>> {
    if networks.is_empty() {
        return None;
    }
    let overlaps = |r: Cidr| {
        networks
            .iter()
            .any(|n| n.contains(r.addr()) || r.contains(n.addr()))
    };
    let routes: Vec<PodRoute> = net::routes()
        .ok()?
        .into_iter()
        .filter_map(|r| Some((r.prefix()?, r)))
        .filter(|(dst, _)| dst.len() > 0 && overlaps(*dst))
        .map(|(dst, r)| PodRoute {
            dst,
            via: r.gateway,
            oif: r.oif,
            dev: r.oif.and_then(net::ifname),
        })
        .collect();
    (routes.len() <= crate::schema::identity::MAX_TABLE).then_some(routes)
}

/// The route to every peer underlay address in the vxlan device's FDB.
fn peer_routes(vxlan: u32) -> Vec<PeerRoute> {
    let mut out: Vec<PeerRoute> = Vec::new();
    for e in net::vxlan_fdb(vxlan).unwrap_or_default() {
        let Some(dst) = e.dst else { continue };
        if dst.is_unspecified() || out.iter().any(|r| r.dst == dst) {
            continue;
        }
        if let Ok(Some(r)) = net::route_to(dst) {
            out.push(PeerRoute {
                dst,
                dev: r.oif.and_then(net::ifname),
                via: r.gateway,
            });
        }
    }
    out
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
