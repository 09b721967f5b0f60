//! Turning counts into a sentence an SRE can act on.

use std::net::IpAddr;

use super::{
    Flow, Losses, NodeTrace, Segment,
    fixes::{checksum_fix, inner_drop_fix, stale_mac_fix, stray_route_fix},
};
use crate::schema::identity::NodeIdentity;

pub(super) fn first_ip(n: &NodeIdentity) -> String {
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

/// The drop seen most often on `node` for this direction (by reason),
/// summed over every flow, with what the first of its kind says about
/// where it happened.
pub(super) struct MainDrop<'f> {
    pub(super) reason: &'f str,
    pub(super) location: Option<&'f str>,
    pub(super) count: u64,
    /// The freed skb was an encapsulated frame (on the UDP port), not the
    /// inner packet.
    pub(super) encapsulated: bool,
    pub(super) iface: Option<&'f str>,
    /// The inner source of the first flow that lost packets this way.
    pub(super) src: IpAddr,
}

fn main_drop<'f>(flows: &'f [Flow], node: &str) -> Option<MainDrop<'f>> {
    let mut by_reason: Vec<MainDrop<'f>> = Vec::new();
    for (src, d) in flows
        .iter()
        .flat_map(|f| f.drops.iter().map(|d| (f.src, d)))
        .filter(|(_, d)| d.node == node && !d.after_delivery)
    {
        let reason = d
            .reason
            .as_deref()
            .or(d.location.as_deref())
            .unwrap_or("unknown");
        match by_reason.iter_mut().find(|m| m.reason == reason) {
            Some(m) => m.count += d.count,
            None => by_reason.push(MainDrop {
                reason,
                location: d.location.as_deref(),
                count: d.count,
                encapsulated: d.encapsulated,
                iface: d.iface.as_deref(),
                src,
            }),
        }
    }
    by_reason.into_iter().max_by_key(|m| m.count)
}

/// The drop of a segment in words; on a node without a drop hook, that
/// its drop reasons are unavailable (never that it dropped nothing).
fn why(d: &Option<MainDrop<'_>>, at: &str, n: &NodeIdentity) -> String {
    if let Some(m) = n.missing("drop") {
        return format!(" (drop reasons unavailable on {}: {})", n.node, m.reason);
    }
    d.as_ref()
        .map(|m| {
            format!(
                " ({} dropped: {}{})",
                m.count,
                m.reason,
                m.location.map(|l| format!(" {at} {l}")).unwrap_or_default()
            )
        })
        .unwrap_or_default()
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
    // A loss is told with the numbers of the flows that lost in that
    // segment: the other flows' packets (probes, host traffic that
    // passed) would only blur where these ones stopped.
    let told: Vec<&Flow> = match segment {
        Segment::Delivered | Segment::NoTraffic => flows.iter().collect(),
        seg => flows.iter().filter(|f| f.segment == seg).collect(),
    };
    let sum = |f: fn(&Flow) -> u64| told.iter().map(|x| f(x)).sum::<u64>();
    let left = sum(|f| f.hops.underlay_egress);
    let reached = sum(|f| f.hops.underlay_ingress);
    let out_of = sum(|f| f.hops.overlay_ingress);
    let entered = sum(|f| f.hops.overlay_egress);
    let from_pods = sum(|f| f.hops.pod_ingress);
    let to_pods = sum(|f| f.hops.pod_egress);
    let pod_start = told.iter().any(|f| f.path_start == "pod-ingress");
    let pod_end = told.iter().any(|f| f.path_end == "pod-egress");
    let outer = outer_of(si, ri).unwrap_or_default();
    let pod_dev = |n: &NodeIdentity| n.pod_devs.first().cloned().unwrap_or_else(|| "?".into());
    // The sender's NICs other than its main one that frames left by.
    let other_nic = flows
        .iter()
        .flat_map(|f| &f.egress_devs)
        .filter(|(d, n)| **n > 0 && d.as_str() != si.underlay_dev)
        .map(|(d, _)| d.clone())
        .next();
    let route_note = |dev: &str| {
        let dst = ri.underlay_ips().next()?;
        let r = si.route_to(dst)?;
        (r.dev.as_deref() == Some(dev)).then(|| {
            format!(
                "the route to {dst} goes through {dev}{}",
                r.via.map(|v| format!(" via {v}")).unwrap_or_default()
            )
        })
    };
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
            let to = if pod_end && told.iter().all(|f| f.path_end == "pod-egress") {
                format!(" to {rn}'s pods ({})", pod_dev(ri))
            } else if !pod_end {
                format!(
                    " out of {rn}'s {} (host-network traffic{}: the path ends there)",
                    ri.vxlan_dev,
                    if ri.pod_devs.is_empty() {
                        ", no pod device traced"
                    } else {
                        ""
                    }
                )
            } else {
                String::new()
            };
            let via = other_nic
                .as_ref()
                .map(|d| format!(" by {d}"))
                .unwrap_or_else(|| format!("'s {}", si.underlay_dev));
            (
                format!(
                    "{sn}→{rn}: {delivered}/{sent} delivered{to} ({left} frames left {sn}{via}, {reached} reached {rn}'s {}){lat}",
                    ri.underlay_dev
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
            let left_by = match &other_nic {
                Some(d) => {
                    let route = route_note(d).map(|n| format!(": {n}")).unwrap_or_default();
                    fix = format!(
                        "{sn} sends its VXLAN frames for {} out of {d}, not {} (`ip route get {}` on {sn}): fix that route, or the network behind {d}; flanneld's --iface names the NIC flannel expects",
                        first_ip(ri),
                        si.underlay_dev,
                        first_ip(ri)
                    );
                    format!("left {sn} by {d}, not {}{route}", si.underlay_dev)
                }
                None => format!("left {sn}'s {}", si.underlay_dev),
            };
            (
                format!(
                    "{sn}→{rn}: {}/{left} frames {left_by} (outer {outer}), {reached} reached {rn}'s {}: lost in the underlay between the nodes",
                    lost.underlay, ri.underlay_dev
                ),
                Some(fix),
            )
        }
        Segment::SenderHost => {
            let drop = main_drop(flows, sn);
            let why = why(&drop, "at", si);
            let fix = if let Some(f) = drop.as_ref().and_then(|m| inner_drop_fix(m, si, ri)) {
                f
            } else if let Some(mac) = &ri.vxlan_mac
                && !si.fdb.iter().any(|e| e.mac.eq_ignore_ascii_case(mac))
            {
                format!(
                    "{sn} has no FDB entry for {rn}'s VTEP MAC {mac}: check flanneld on {sn} (`bridge fdb show dev {}`)",
                    si.vxlan_dev
                )
            } else if let Some(f) = stray_route_fix(flows, si) {
                f
            } else {
                format!(
                    "look at {sn}'s routes, neighbour and FDB entries for {rn} and at its {} MTU",
                    si.vxlan_dev
                )
            };
            let sentence = if pod_start && entered < from_pods {
                format!(
                    "{sn}→{rn}: {}/{from_pods} packets from {sn}'s pods entered {sn} ({}) but {entered} entered its {}: lost inside {sn}{why}",
                    lost.sender_host,
                    pod_dev(si),
                    si.vxlan_dev
                )
            } else {
                format!(
                    "{sn}→{rn}: {}/{entered} packets entered {sn}'s {} but {left} frames left {sn}'s {}: lost inside {sn}{why}",
                    lost.sender_host, si.vxlan_dev, si.underlay_dev
                )
            };
            (sentence, Some(fix))
        }
        Segment::ReceiverHost => {
            let drop = main_drop(flows, rn);
            let why = why(&drop, "in", ri);
            let stale = stale_mac_fix(flows, si, ri);
            let fix = match drop.as_ref() {
                Some(m) if m.reason == "OTHERHOST" => match &stale {
                    Some((_, fix)) => fix.clone(),
                    None => format!(
                        "{rn} drops the decapsulated frames as addressed to another host: check that {sn}'s neighbour and FDB entries for {rn} hold {rn}'s current VtepMAC"
                    ),
                },
                Some(m) if inner_drop_fix(m, ri, si).is_some() => {
                    inner_drop_fix(m, ri, si).unwrap_or_default()
                }
                Some(m) => match m.reason {
                    "NETFILTER_DROP" => format!(
                        "a firewall rule on {rn} drops UDP {port}: allow it from {} (`nft list ruleset`, `iptables-save`)",
                        first_ip(si)
                    ),
                    "NO_SOCKET" => match ri.device_port {
                        Some(dp) if dp != port => format!(
                            "nothing listens on UDP {port} on {rn}: its {} uses udp/{dp}; make both nodes use the same VXLAN port",
                            ri.vxlan_dev
                        ),
                        _ => format!(
                            "nothing listens on UDP {port} on {rn}: is its {} up and on that port?",
                            ri.vxlan_dev
                        ),
                    },
                    "UDP_CSUM" if m.encapsulated => checksum_fix(si, ri),
                    "VXLAN_VNI_NOT_FOUND" => format!(
                        "VNI mismatch: {rn}'s {} has VNI {} while {sn} sends another",
                        ri.vxlan_dev,
                        ri.vni.map_or("?".into(), |v| v.to_string())
                    ),
                    other => format!("{rn} drops them with {other}"),
                },
                None if si.vni.is_some() && ri.vni.is_some() && si.vni != ri.vni => {
                    format!(
                        "VNI mismatch: {sn} uses VNI {}, {rn}'s {} has VNI {}",
                        si.vni.unwrap_or(0),
                        ri.vxlan_dev,
                        ri.vni.unwrap_or(0)
                    )
                }
                None if stale.is_some() => stale.as_ref().map(|s| s.1.clone()).unwrap_or_default(),
                None if ri.missing("drop").is_some() => format!(
                    "drop reasons are unavailable on {rn}: check its firewall for UDP {port}, its VXLAN port and VNI, and its routes to the pods"
                ),
                None if pod_end && out_of > to_pods => format!(
                    "no kernel drop was reported on {rn}: check its routes to its pods ({}) and its FORWARD rules",
                    pod_dev(ri)
                ),
                None => format!(
                    "no kernel drop was reported on {rn}: check its {} device and its routes back to the pods",
                    ri.vxlan_dev
                ),
            };
            let mac_note = match (&stale, drop.as_ref().map(|m| m.reason)) {
                (Some((note, _)), Some("OTHERHOST") | None) => format!("; {note}"),
                _ => String::new(),
            };
            // Lost after decapsulation: on the way from the vxlan device to
            // the pod, or thrown away by the stack at the end of the path.
            let taken = sum(|f| f.delivered);
            let after_decap = out_of > 0
                && if pod_end {
                    to_pods < out_of
                } else {
                    taken < out_of
                };
            let sentence = if after_decap {
                let reached_end = if pod_end {
                    format!("{to_pods} reached its pods ({})", pod_dev(ri))
                } else {
                    format!("{taken} were taken by its stack")
                };
                format!(
                    "{sn}→{rn}: {reached} frames reached {rn}'s {} (outer {outer}), {out_of} came out of its {}, {reached_end}: lost inside {rn}{why}{mac_note}",
                    ri.underlay_dev, ri.vxlan_dev
                )
            } else if let Some(m) = ri.missing("vxlan-rcv") {
                // Without the vxlan receive hop nothing tells the UDP
                // socket, the VNI lookup and the device apart.
                format!(
                    "{sn}→{rn}: {reached} frames reached {rn}'s {} (outer {outer}), {out_of} came out of {rn}'s {}: lost inside {rn}, between {} and {} (vxlan-rcv not traced: {}){why}{mac_note}",
                    ri.underlay_dev, ri.vxlan_dev, ri.underlay_dev, ri.vxlan_dev, m.reason
                )
            } else {
                format!(
                    "{sn}→{rn}: {reached} frames reached {rn}'s {} (outer {outer}), {out_of} came out of {rn}'s {}: lost inside {rn}{why}{mac_note}",
                    ri.underlay_dev, ri.vxlan_dev
                )
            };
            (sentence, Some(fix))
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
