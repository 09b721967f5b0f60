//! What each hop reports: a ping and a TCP connection seen at every hop
//! with their inner and outer tuples, and a firewall's drop with the
//! kernel's reason and location.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use flannel_trace_common::Hop;
use flannel_trace_tests::{
    Kernel, Lab, Tracer, VXLAN_IFACE,
    fixtures::TC_HOPS,
    input_drop_udp, preflight,
    records::{
        drop_reason, inner_dst, inner_proto_is, inner_src, line, named, outer_dport, outer_dst,
        outer_src,
    },
    serial, with_lab,
};

use super::{INTERVAL, PINGS, PORT, assert_clean, fingerprints, icmp_at, v4};

#[test]
fn every_hop_reports_ping_and_tcp_with_inner_and_outer_tuples() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let listener = b.tcp_listen(8080)?;
        let tracer = Tracer::start(a, &[])?;
        let ping = a.ping(IpAddr::V4(b.vtep_ip()), PINGS, INTERVAL)?;
        ensure!(ping.all_received(), "overlay ping failed: {ping:?}");
        let dst = SocketAddr::new(IpAddr::V4(b.cni_ip()), 8080);
        a.tcp_connect(dst, Duration::from_secs(2))
            .context("TCP across the overlay")?;
        ensure!(
            listener.wait_for_connections(1, Duration::from_secs(2)) == 1,
            "listener saw no connection"
        );
        thread::sleep(Duration::from_millis(300));
        let s = tracer.stop()?;
        ensure!(s.status.success(), "tracer failed:\n{}", s.dump());

        // Start record: what was attached, with which backend.
        ensure!(
            s.start.port == PORT && named(&s.start.port_source, "device"),
            "{}",
            line(&s.start)
        );
        ensure!(s.start.vni == Some(1), "{}", line(&s.start));
        // The best backend this kernel offers, found out independently.
        let k = Kernel::running();
        for hop in TC_HOPS {
            let be = s.backend(hop).unwrap_or_default();
            ensure!(
                be == k.expected_tc_backend(),
                "{}: expected {} on {}, got {be}",
                hop.name(),
                k.expected_tc_backend(),
                k.release
            );
        }
        let vx = s.backend(Hop::VxlanRcv).unwrap_or_default();
        let want = k.expected_vxlan_rcv_backend();
        ensure!(
            vx == want,
            "vxlan-rcv: expected {want} on {} ({:?}), got {vx}",
            k.release,
            k.vxlan_rcv_offer()
        );
        let want = k.expected_drop_backend();
        ensure!(
            s.backend(Hop::Drop).as_deref() == Some(want),
            "drop: expected {want}, got {:?}",
            s.backend(Hop::Drop)
        );

        // A -> B echo requests leave through the tunnel: inner, then outer.
        let (va, vb) = (a.vtep_ip(), b.vtep_ip());
        let req_in = icmp_at(&s, Hop::OverlayEgress, 8, va, vb);
        let req_out = icmp_at(&s, Hop::UnderlayEgress, 8, va, vb);
        ensure!(
            req_in.len() == PINGS as usize,
            "overlay-egress requests: {}\n{}",
            req_in.len(),
            s.dump()
        );
        ensure!(
            req_out.len() == PINGS as usize,
            "underlay-egress requests: {}\n{}",
            req_out.len(),
            s.dump()
        );
        for e in &req_out {
            ensure!(
                outer_src(e) == v4(a.underlay_ip()) && outer_dst(e) == v4(b.underlay_ip()),
                "{}",
                line(e)
            );
            ensure!(
                e.outer.as_ref().is_some_and(|o| named(&o.proto, "udp"))
                    && outer_dport(e) == Some(PORT)
                    && e.vni == Some(1),
                "{}",
                line(e)
            );
            ensure!(e.iface.as_deref() == Some("eth1"), "{}", line(e));
        }
        // Before encapsulation there is no outer header, hence no VNI.
        for e in &req_in {
            ensure!(
                e.iface.as_deref() == Some(VXLAN_IFACE) && e.outer.is_none() && e.vni.is_none(),
                "{}",
                line(e)
            );
        }
        ensure!(
            fingerprints(req_in.iter().copied()) == fingerprints(req_out.iter().copied()),
            "fingerprints differ across encapsulation"
        );

        // B -> A echo replies arrive: underlay, decap, overlay; same packet.
        let rep_u = icmp_at(&s, Hop::UnderlayIngress, 0, vb, va);
        let rep_v = icmp_at(&s, Hop::VxlanRcv, 0, vb, va);
        let rep_o = icmp_at(&s, Hop::OverlayIngress, 0, vb, va);
        for (hop, got) in [
            ("underlay-ingress", &rep_u),
            ("vxlan-rcv", &rep_v),
            ("overlay-ingress", &rep_o),
        ] {
            ensure!(
                got.len() == PINGS as usize,
                "{hop} replies: {}\n{}",
                got.len(),
                s.dump()
            );
        }
        for e in rep_u.iter().chain(&rep_v) {
            ensure!(
                outer_src(e) == v4(b.underlay_ip())
                    && outer_dport(e) == Some(PORT)
                    && e.vni == Some(1),
                "{}",
                line(e)
            );
        }
        let fp = fingerprints(rep_u.iter().copied());
        ensure!(
            fp == fingerprints(rep_v.iter().copied()) && fp == fingerprints(rep_o.iter().copied()),
            "reply fingerprints differ between hops"
        );
        ensure!(
            fp.iter().collect::<HashSet<_>>().len() == PINGS as usize,
            "distinct packets must hash apart"
        );

        // TCP: the SYN leaves with its ports and flags, the SYN-ACK comes back.
        let tcp = |hop: Hop, flags: &'static str| {
            s.at(hop)
                .filter(|e| {
                    inner_proto_is(e, "tcp")
                        && e.inner
                            .as_ref()
                            .and_then(|i| i.tcp.as_ref())
                            .is_some_and(|t| named(&t.flags, flags))
                })
                .collect::<Vec<_>>()
        };
        let syn = tcp(Hop::UnderlayEgress, "SYN");
        ensure!(
            syn.len() == 1,
            "SYN at underlay-egress: {}\n{}",
            syn.len(),
            s.dump()
        );
        let syn_inner = syn[0].inner.as_ref().context("SYN without inner")?;
        ensure!(
            syn_inner.endpoints.dport == Some(8080) && inner_dst(syn[0]) == v4(b.cni_ip()),
            "{}",
            line(syn[0])
        );
        ensure!(
            tcp(Hop::OverlayIngress, "SYN|ACK").len() == 1,
            "SYN-ACK at overlay-ingress\n{}",
            s.dump()
        );

        // Only this namespace: B's own receive path (requests A->B) and
        // anything in the fabric must not appear.
        for e in s.at(Hop::VxlanRcv).chain(s.at(Hop::UnderlayIngress)) {
            ensure!(
                inner_src(e) != v4(va),
                "event from another namespace: {}",
                line(e)
            );
        }
        let summary = s.summary.as_ref().context("no summary")?;
        ensure!(summary.complete && summary.lost == 0, "{}", line(summary));
        assert_clean(lab)
    })
}

#[test]
fn receiver_firewall_drop_is_reported_with_reason_and_location() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        b.nft(&input_drop_udp(PORT))?;
        let tracer = Tracer::start(b, &[])?;
        let ping = a.ping(IpAddr::V4(b.vtep_ip()), PINGS, INTERVAL)?;
        ensure!(
            ping.received == 0,
            "the firewall should drop everything: {ping:?}"
        );
        thread::sleep(Duration::from_millis(300));
        let s = tracer.stop()?;
        ensure!(s.status.success(), "{}", s.dump());
        let arrived = icmp_at(&s, Hop::UnderlayIngress, 8, a.vtep_ip(), b.vtep_ip());
        let drops = icmp_at(&s, Hop::Drop, 8, a.vtep_ip(), b.vtep_ip());
        ensure!(
            arrived.len() == PINGS as usize,
            "arrivals: {}\n{}",
            arrived.len(),
            s.dump()
        );
        ensure!(
            drops.len() == PINGS as usize,
            "drops: {}\n{}",
            drops.len(),
            s.dump()
        );
        // Before 5.17 kfree_skb has no reason: the location alone must name
        // the netfilter hook that applied the nft verdict (nf_hook_slow
        // frees the packet itself there, measured on 5.10).
        let k = Kernel::running();
        let (reason, site) = if k.has_drop_reason() {
            (Some("NETFILTER_DROP".to_owned()), "nft_do_chain")
        } else {
            (None, "nf_hook_slow")
        };
        for d in &drops {
            ensure!(drop_reason(d) == reason, "{}: {}", k.release, line(d));
            let loc = d
                .drop
                .as_ref()
                .and_then(|x| x.location.as_ref())
                .map(|l| l.to_string())
                .unwrap_or_default();
            ensure!(
                loc.starts_with(site),
                "{}: location {loc}, expected {site}",
                k.release
            );
            ensure!(
                outer_dport(d) == Some(PORT) && outer_dst(d) == v4(b.underlay_ip()),
                "{}",
                line(d)
            );
        }
        ensure!(
            fingerprints(arrived.iter().copied()) == fingerprints(drops.iter().copied()),
            "drop events must name the arrived packets"
        );
        ensure!(
            s.at(Hop::VxlanRcv).count() == 0 && s.at(Hop::OverlayIngress).count() == 0,
            "nothing may pass the firewall\n{}",
            s.dump()
        );
        let summary = s.summary.as_ref().context("no summary")?;
        // Without reasons the summary counts drops by location.
        let by_site: u64 = summary
            .drops_by_reason
            .iter()
            .filter(|(key, _)| {
                let key = key.to_string();
                if k.has_drop_reason() {
                    key == "NETFILTER_DROP"
                } else {
                    key.starts_with(site)
                }
            })
            .map(|(_, n)| *n)
            .sum();
        ensure!(by_site == u64::from(PINGS), "{}", line(summary));
        assert_clean(lab)
    })
}
