//! The kernel's backends: every one this kernel offers attaches when
//! forced and reports the same packets; every one it lacks is refused.

use std::{collections::HashSet, net::IpAddr, thread, time::Duration};

use anyhow::{Context as _, Result, ensure};
use flannel_trace_common::Hop;
use flannel_trace_tests::{
    Kernel, Lab, Tracer, VXLAN_IFACE, backend,
    fixtures::TC_HOPS,
    preflight,
    records::{Output, drop_reason, line, outer_dport, outer_src},
    run_tracer, serial, with_lab,
};

use super::{INTERVAL, PINGS, PORT, assert_clean, icmp_at, tc_state, v4};

#[test]
fn fallback_backends_report_the_same_packets() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let args = [
            "--tc-mode",
            "netlink",
            "--vxlan-rcv-backend",
            "tracepoint",
            "--drop-backend",
            "tracepoint",
        ];
        let tracer = Tracer::start(a, &args)?;
        for iface in ["eth1", VXLAN_IFACE] {
            ensure!(
                tc_state(a, iface)?.1,
                "netlink mode must add a clsact qdisc on {iface}"
            );
        }
        let ping = a.ping(IpAddr::V4(b.vtep_ip()), PINGS, INTERVAL)?;
        ensure!(ping.all_received(), "{ping:?}");
        thread::sleep(Duration::from_millis(300));
        let s = tracer.stop()?;
        ensure!(s.status.success(), "{}", s.dump());
        ensure!(
            s.backend(Hop::OverlayEgress).as_deref() == Some("netlink-clsact"),
            "{}",
            line(&s.start)
        );
        ensure!(
            s.backend(Hop::VxlanRcv).as_deref() == Some("tracepoint"),
            "{}",
            line(&s.start)
        );
        ensure!(
            s.backend(Hop::Drop).as_deref() == Some("tracepoint"),
            "{}",
            line(&s.start)
        );
        let (va, vb) = (a.vtep_ip(), b.vtep_ip());
        ensure!(
            icmp_at(&s, Hop::UnderlayEgress, 8, va, vb).len() == PINGS as usize,
            "{}",
            s.dump()
        );
        let rcv = icmp_at(&s, Hop::VxlanRcv, 0, vb, va);
        ensure!(rcv.len() == PINGS as usize, "{}", s.dump());
        for e in rcv {
            // The tracepoint sees the frame after decapsulation; the outer
            // headers are recovered from the buffer and flagged as such.
            ensure!(
                e.outer_recovered && outer_src(e) == v4(b.underlay_ip()),
                "{}",
                line(e)
            );
        }
        assert_clean(lab)
    })
}

/// Every backend of the vxlan-rcv and drop hops that this kernel offers
/// (found out independently of the tracer, see `Kernel`) attaches when
/// forced and reports the right packets; every one it does not offer is
/// refused with exit 5 rather than silently replaced. On a 3-node lab, A's
/// firewall drops C's tunnel traffic only, so that one tracer run on A sees
/// B's replies pass vxlan-rcv and C's requests dropped.
#[test]
fn every_backend_the_kernel_offers_reports_the_packets() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(3), |lab| {
        let (a, b, c) = (lab.node('a'), lab.node('b'), lab.node('c'));
        a.nft(&format!(
            "table inet ft {{\n\tchain input {{\n\t\ttype filter hook input priority 0; policy accept;\n\t\tip saddr {} udp dport {PORT} counter drop\n\t}}\n}}\n",
            c.underlay_ip()
        ))?;
        let k = Kernel::running();
        let drop_offer = k.drop_offer();
        let mut drops = drop_offer
            .iter()
            .filter(|(_, ok)| ok.is_ok())
            .map(|(d, _)| *d)
            .cycle();
        let mut drops_seen = HashSet::new();
        let (va, vb, vc) = (a.vtep_ip(), b.vtep_ip(), c.vtep_ip());
        for (backend, offered) in k.vxlan_rcv_offer() {
            let flag = backend.replace('_', "-");
            if let Err(why) = offered {
                let (st, _, err) = run_tracer(
                    a,
                    &[
                        "--json",
                        "--vxlan-rcv-backend",
                        &flag,
                        "--no-drops",
                        "--duration",
                        "1s",
                    ],
                )?;
                ensure!(
                    st.code() == Some(5) && err.contains("vxlan-rcv") && err.contains(backend),
                    "{backend} is not offered by {} ({why}): the tracer must refuse it with exit 5, got {st:?}: {err}",
                    k.release
                );
                continue;
            }
            let d = drops.next().context("no drop backend offered")?;
            drops_seen.insert(d);
            let tracer = Tracer::start(
                a,
                &[
                    "--vxlan-rcv-backend",
                    &flag,
                    "--drop-backend",
                    &d.replace('_', "-"),
                ],
            )?;
            let ok = a.ping(IpAddr::V4(vb), PINGS, INTERVAL)?;
            let lost = c.ping(IpAddr::V4(va), PINGS, INTERVAL)?;
            thread::sleep(Duration::from_millis(300));
            let s = tracer.stop()?;
            ensure!(
                ok.all_received() && lost.received == 0,
                "a->b {ok:?}, c->a {lost:?}"
            );
            ensure!(s.status.success(), "{backend}/{d}:\n{}", s.dump());
            ensure!(
                s.backend(Hop::VxlanRcv).as_deref() == Some(backend)
                    && s.backend(Hop::Drop).as_deref() == Some(d),
                "{}",
                line(&s.start)
            );
            let rcv = icmp_at(&s, Hop::VxlanRcv, 0, vb, va);
            ensure!(
                rcv.len() == PINGS as usize,
                "vxlan-rcv {backend}: {} replies\n{}",
                rcv.len(),
                s.dump()
            );
            for e in &rcv {
                ensure!(
                    outer_src(e) == v4(b.underlay_ip())
                        && outer_dport(e) == Some(PORT)
                        && e.vni == Some(1),
                    "{backend}: {}",
                    line(e)
                );
            }
            let dropped = icmp_at(&s, Hop::Drop, 8, vc, va);
            ensure!(
                dropped.len() == PINGS as usize,
                "drop {d}: {} drops\n{}",
                dropped.len(),
                s.dump()
            );
            for e in &dropped {
                ensure!(
                    outer_src(e) == v4(c.underlay_ip()) && outer_dport(e) == Some(PORT),
                    "{d}: {}",
                    line(e)
                );
                if k.has_drop_reason() {
                    ensure!(
                        drop_reason(e).as_deref() == Some("NETFILTER_DROP"),
                        "{d}: {}",
                        line(e)
                    );
                } else {
                    ensure!(
                        drop_reason(e).is_none(),
                        "{} has no drop reasons: {}",
                        k.release,
                        line(e)
                    );
                }
            }
        }
        for (d, offered) in &drop_offer {
            ensure!(
                offered.is_err() || drops_seen.contains(d),
                "drop backend {d} was offered but never exercised"
            );
        }
        // TC: a forced TCX is used where the kernel has it, and refused as
        // a missing kernel feature (exit 5) where it has not.
        let (st, out, err) = run_tracer(
            a,
            &[
                "--json",
                "--tc-mode",
                "tcx",
                "--no-drops",
                "--duration",
                "1s",
            ],
        )?;
        if k.has_tcx() {
            ensure!(
                st.success(),
                "--tc-mode tcx on {}: {st:?}: {err}\n{out}",
                k.release
            );
            let start = Output::parse(&out)?;
            let start = start.start()?;
            for hop in TC_HOPS {
                ensure!(
                    backend(start, hop).as_deref() == Some("tcx"),
                    "--tc-mode tcx on {}: {} is not on TCX: {}",
                    k.release,
                    hop.name(),
                    line(start)
                );
            }
        } else {
            ensure!(
                st.code() == Some(5) && err.contains("TCX"),
                "{} has no TCX: a forced --tc-mode tcx must exit 5, got {st:?}: {err}",
                k.release
            );
        }
        assert_clean(lab)
    })
}
