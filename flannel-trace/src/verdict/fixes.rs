//! The fixes a verdict proposes: configuration mismatches between the two
//! nodes, and the command for the cause a drop or a stray route points to.

use super::{
    Flow,
    explain::{MainDrop, first_ip},
};
use crate::schema::identity::NodeIdentity;

/// Mismatches visible from the two nodes' configuration alone.
pub(super) fn config_findings(a: &NodeIdentity, b: &NodeIdentity) -> Vec<String> {
    let mut out = Vec::new();
    for (x, y) in [(a, b), (b, a)] {
        if let Some(dp) = y.device_port
            && dp != x.device_port.unwrap_or(dp)
        {
            out.push(format!(
                "port mismatch: {}'s {} sends to udp/{}, {}'s {} listens on udp/{}",
                x.node,
                x.vxlan_dev,
                x.device_port.unwrap_or(x.port),
                y.node,
                y.vxlan_dev,
                dp
            ));
        }
        if let Some(mac) = &y.vxlan_mac
            && !x.fdb.is_empty()
        {
            match x.fdb.iter().find(|e| e.mac.eq_ignore_ascii_case(mac)) {
                None => out.push(format!(
                    "{} has no FDB entry for {}'s VTEP MAC {mac} on {} (bridge fdb show dev {})",
                    x.node, y.node, x.vxlan_dev, x.vxlan_dev
                )),
                Some(e) => {
                    if let Some(dst) = e.dst
                        && !y.owns_underlay(dst)
                    {
                        out.push(format!(
                            "{}'s FDB sends {}'s VTEP MAC {mac} to {dst}, which is not an address of {}",
                            x.node, y.node, y.node
                        ));
                    }
                }
            }
        }
        // What `flannel-trace check` finds from the node list, checked here
        // against the peer's own identity.
        out.extend(crate::check::live::peer_findings(x, y));
    }
    if let (Some(va), Some(vb)) = (a.vni, b.vni)
        && va != vb
    {
        out.push(format!(
            "VNI mismatch: {}'s {} has VNI {va}, {}'s {} has VNI {vb}",
            a.node, a.vxlan_dev, b.node, b.vxlan_dev
        ));
    }
    out.dedup();
    out
}

pub(super) fn pod_networks(n: &NodeIdentity) -> String {
    if n.pod_networks.is_empty() {
        "the pod network".into()
    } else {
        n.pod_networks
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The fix for a drop of the inner packet inside a node, when the kernel's
/// reason names one; `who` is the node that dropped.
pub(super) fn inner_drop_fix(
    m: &MainDrop<'_>,
    who: &NodeIdentity,
    other: &NodeIdentity,
) -> Option<String> {
    let node = &who.node;
    let dev = m.iface.unwrap_or("the receiving device");
    Some(match m.reason {
        "NETFILTER_DROP" if !m.encapsulated => format!(
            "a FORWARD rule or policy on {node} drops pod traffic (installing Docker sets `iptables -P FORWARD DROP`): run `iptables -P FORWARD ACCEPT` on {node}, or accept the pod network in FORWARD (`iptables -I FORWARD -s {net} -j ACCEPT; iptables -I FORWARD -d {net} -j ACCEPT`), as flannel's documentation advises; a conntrack INVALID rule drops with the same reason (`iptables-save | grep -i invalid`)",
            net = pod_networks(who)
        ),
        "IP_RPFILTER" => format!(
            "reverse-path filtering on {node} drops the packets arriving on {dev}, because {node}'s route back to their source leaves by another device: check `ip route get {src}` on {node} (it must go via {vx}; a stray more specific route is the usual cause), or set `sysctl -w net.ipv4.conf.{dev}.rp_filter=2` (loose) or 0, and the same for `all`",
            src = m.src,
            vx = who.vxlan_dev
        ),
        "IP_NOROUTE" | "IP_INNOROUTES" | "IP_OUTNOROUTES" => format!(
            "{node} has no route for these packets: check `ip route` on {node} for {}'s pod subnet (via {} onlink) and that flanneld runs",
            other.node, who.vxlan_dev
        ),
        _ => return None,
    })
}

/// A sender whose route to a lost flow's destination leaves by another
/// device than the vxlan device (a stray, more specific route): the packets
/// never enter the overlay, and no drop says so.
pub(super) fn stray_route_fix(flows: &[Flow], si: &NodeIdentity) -> Option<String> {
    let lost = flows
        .iter()
        .filter(|f| f.hops.overlay_egress < f.hops.pod_ingress);
    let (dst, r) = lost
        .filter_map(|f| Some((f.dst, si.pod_route_to(f.dst)?)))
        .find(|(_, r)| r.oif.is_some_and(|o| o != si.vxlan_ifindex))?;
    let dev = r.dev.as_deref().unwrap_or("another device");
    let via = r.via.map(|v| format!(" via {v}")).unwrap_or_default();
    Some(format!(
        "{node} routes {dst} by {dev}, not {vx}: its route {dst_net}{via} dev {dev} is more specific than flannel's; remove it (`ip route del {dst_net}{via} dev {dev}` on {node}) unless something else needs it",
        node = si.node,
        vx = si.vxlan_dev,
        dst_net = r.dst,
    ))
}

/// The receiver rejects the outer UDP checksum of the sender's frames:
/// what a sender whose vxlan device leaves the checksum to an offload that
/// gets it wrong sends (the kernel verifies a nonzero VXLAN checksum).
pub(super) fn checksum_fix(si: &NodeIdentity, ri: &NodeIdentity) -> String {
    let (sn, rn, dev) = (&si.node, &ri.node, &si.vxlan_dev);
    format!(
        "{rn} drops {sn}'s VXLAN frames for a bad outer UDP checksum (UDP_CSUM): {sn}'s {dev} hands the checksum to a TX offload that gets it wrong; turn it off on {sn}: `ethtool -K {dev} tx-checksum-ip-generic off`"
    )
}

/// What the receiver says about frames addressed to a MAC that is not its
/// VTEP's: a peer still holds an old VtepMAC.
pub(super) fn stale_mac_fix(
    flows: &[Flow],
    si: &NodeIdentity,
    ri: &NodeIdentity,
) -> Option<(String, String)> {
    let stale = flows.iter().flat_map(|f| &f.foreign_dst_macs).next()?;
    let actual = ri.vxlan_mac.as_deref()?;
    let vtep = ri
        .vtep_addrs
        .first()
        .map_or_else(|| "<its VTEP address>".into(), |a| a.to_string());
    let underlay = first_ip(ri);
    let (sn, rn, dev) = (&si.node, &ri.node, &si.vxlan_dev);
    Some((
        format!(
            "the decapsulated frames are addressed to MAC {stale}, but {rn}'s {} has VtepMAC {actual}: {sn}'s neighbour/FDB entries for {rn} carry a stale VtepMAC",
            ri.vxlan_dev
        ),
        format!(
            "on {sn}: `ip neigh replace {vtep} lladdr {actual} dev {dev} nud permanent`, `bridge fdb replace {actual} dev {dev} dst {underlay}` and `bridge fdb del {stale} dev {dev}` (or restart flanneld on {sn}, which rewrites them from {rn}'s VtepMAC annotation)"
        ),
    ))
}
