//! Turning counts into a sentence an SRE can act on.

use super::{Flow, Losses, NodeTrace, Segment};
use crate::identity::NodeIdentity;

fn first_ip(n: &NodeIdentity) -> String {
    n.underlay_ips()
        .next()
        .map_or_else(|| "?".into(), |ip| ip.to_string())
}

/// `10.25.1.55→10.25.1.51 udp/8475`
pub fn outer_of(s: &NodeIdentity, r: &NodeIdentity) -> Option<String> {
    Some(format!(
        "{}→{} udp/{}",
        s.underlay_ips().next()?,
        r.underlay_ips().next()?,
        s.port
    ))
}

/// Mismatches visible from the two nodes' configuration alone.
pub fn config_findings(a: &NodeIdentity, b: &NodeIdentity) -> Vec<String> {
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

/// The drop reason seen most often on `node` for this direction, summed
/// over every flow, with its (first) location.
fn main_drop<'f>(flows: &'f [Flow], node: &str) -> Option<(&'f str, Option<&'f str>, u64)> {
    let mut by_reason: Vec<(&str, Option<&str>, u64)> = Vec::new();
    for d in flows
        .iter()
        .flat_map(|f| &f.drops)
        .filter(|d| d.node == node && !d.after_delivery)
    {
        let reason = d
            .reason
            .as_deref()
            .or(d.location.as_deref())
            .unwrap_or("unknown");
        match by_reason.iter_mut().find(|(r, _, _)| *r == reason) {
            Some(entry) => entry.2 += d.count,
            None => by_reason.push((reason, d.location.as_deref(), d.count)),
        }
    }
    by_reason.into_iter().max_by_key(|(_, _, n)| *n)
}

/// The one-line verdict of a direction and the likely fix.
#[allow(clippy::too_many_arguments)]
pub fn direction_sentence(
    s: &NodeTrace<'_>,
    r: &NodeTrace<'_>,
    segment: Segment,
    flows: &[Flow],
    lost: &Losses,
    sent: u64,
    delivered: u64,
    certain: bool,
) -> (String, Option<String>) {
    let (si, ri) = (s.identity, r.identity);
    let (sn, rn) = (&si.node, &ri.node);
    let port = si.port;
    let sum = |f: fn(&Flow) -> u64| flows.iter().map(f).sum::<u64>();
    let left = sum(|f| f.hops.underlay_egress);
    let reached = sum(|f| f.hops.underlay_ingress);
    let out_of = sum(|f| f.hops.overlay_ingress);
    let entered = sum(|f| f.hops.overlay_egress);
    let outer = outer_of(si, ri).unwrap_or_default();
    let (sentence, fix) = match segment {
        Segment::NoTraffic => (
            format!("{sn}→{rn}: no traffic from {sn} to {rn} while tracing"),
            None,
        ),
        Segment::Delivered => {
            let lat = flows
                .iter()
                .find_map(|f| f.latency.underlay_ms.map(|ms| (ms, f.latency.error_ms)))
                .map(|(ms, err)| match err {
                    Some(e) => format!("; underlay one-way {ms:.3} ms ± {e:.3} ms"),
                    None => {
                        format!("; underlay one-way {ms:.3} ms (recorded clocks, not compared)")
                    }
                })
                .unwrap_or_default();
            (
                format!(
                    "{sn}→{rn}: {delivered}/{sent} delivered ({left} frames left {sn}'s {}, {reached} reached {rn}'s {}){lat}",
                    si.underlay_dev, ri.underlay_dev
                ),
                None,
            )
        }
        Segment::Underlay => {
            let mut fix = format!(
                "check firewall/security group for UDP {port} from {} to {}",
                first_ip(si),
                first_ip(ri)
            );
            // Across flows: probes and small packets pass, big ones vanish.
            let lost_min = flows.iter().filter_map(|f| f.min_lost_len).min();
            let ok_max = flows.iter().filter_map(|f| f.max_delivered_len).max();
            if let (Some(lost_min), Some(ok_max)) = (lost_min, ok_max)
                && lost_min > ok_max
                && flows
                    .iter()
                    .all(|f| f.max_delivered_len.is_none_or(|d| d < lost_min))
            {
                fix = format!(
                    "frames of {lost_min}+ bytes are lost while frames up to {ok_max} bytes pass: the underlay path MTU is below {lost_min}; lower {}'s MTU or raise the underlay's",
                    si.vxlan_dev
                );
            }
            (
                format!(
                    "{sn}→{rn}: {}/{left} frames left {sn}'s {} (outer {outer}), {reached} reached {rn}'s {}: lost in the underlay between the nodes",
                    lost.underlay, si.underlay_dev, ri.underlay_dev
                ),
                Some(fix),
            )
        }
        Segment::SenderHost => {
            let why = main_drop(flows, sn)
                .map(|(reason, loc, n)| {
                    format!(
                        " ({n} dropped: {reason}{})",
                        loc.map(|l| format!(" at {l}")).unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            let fix = if let Some(mac) = &ri.vxlan_mac
                && !si.fdb.iter().any(|e| e.mac.eq_ignore_ascii_case(mac))
            {
                format!(
                    "{sn} has no FDB entry for {rn}'s VTEP MAC {mac}: check flanneld on {sn} (`bridge fdb show dev {}`)",
                    si.vxlan_dev
                )
            } else {
                format!(
                    "look at {sn}'s routes, neighbour and FDB entries for {rn} and at its {} MTU",
                    si.vxlan_dev
                )
            };
            (
                format!(
                    "{sn}→{rn}: {}/{entered} packets entered {sn}'s {} but {left} frames left {sn}'s {}: lost inside {sn}{why}",
                    lost.sender_host, si.vxlan_dev, si.underlay_dev
                ),
                Some(fix),
            )
        }
        Segment::ReceiverHost => {
            let drop = main_drop(flows, rn);
            let why = drop
                .map(|(reason, loc, n)| {
                    format!(
                        " ({n} dropped: {reason}{})",
                        loc.map(|l| format!(" in {l}")).unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            let fix = match drop.map(|d| d.0) {
                Some("NETFILTER_DROP") => format!(
                    "a firewall rule on {rn} drops UDP {port}: allow it from {} (`nft list ruleset`, `iptables-save`)",
                    first_ip(si)
                ),
                Some("NO_SOCKET") => match ri.device_port {
                    Some(dp) if dp != port => format!(
                        "nothing listens on UDP {port} on {rn}: its {} uses udp/{dp}; make both nodes use the same VXLAN port",
                        ri.vxlan_dev
                    ),
                    _ => format!(
                        "nothing listens on UDP {port} on {rn}: is its {} up and on that port?",
                        ri.vxlan_dev
                    ),
                },
                Some("VXLAN_VNI_NOT_FOUND") => format!(
                    "VNI mismatch: {rn}'s {} has VNI {} while {sn} sends another",
                    ri.vxlan_dev,
                    ri.vni.map_or("?".into(), |v| v.to_string())
                ),
                Some("IP_RPFILTER") => format!(
                    "reverse-path filtering on {rn} drops the frames: check rp_filter on {}",
                    ri.underlay_dev
                ),
                Some(other) => format!("{rn} drops them with {other}"),
                None if si.vni.is_some() && ri.vni.is_some() && si.vni != ri.vni => {
                    format!(
                        "VNI mismatch: {sn} uses VNI {}, {rn}'s {} has VNI {}",
                        si.vni.unwrap_or(0),
                        ri.vxlan_dev,
                        ri.vni.unwrap_or(0)
                    )
                }
                None => format!(
                    "no kernel drop was reported on {rn}: check its {} device and its routes back to the pods",
                    ri.vxlan_dev
                ),
            };
            (
                format!(
                    "{sn}→{rn}: {reached} frames reached {rn}'s {} (outer {outer}), {out_of} came out of {rn}'s {}: lost inside {rn}{why}",
                    ri.underlay_dev, ri.vxlan_dev
                ),
                Some(fix),
            )
        }
    };
    if certain || matches!(segment, Segment::Delivered | Segment::NoTraffic) {
        (sentence, fix)
    } else {
        (
            format!("UNCERTAIN (a tracer lost events or a node's view is partial) — {sentence}"),
            fix,
        )
    }
}
