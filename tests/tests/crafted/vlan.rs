//! The outer VLAN tags of real traffic: an underlay that runs over an
//! 802.1Q device (and over QinQ), traced on the tagged NIC below it, where
//! the kernel keeps the outer tag in skb metadata rather than in the bytes.

use std::{net::IpAddr, thread, time::Duration};

use anyhow::{Result, ensure};
use flannel_trace_common::Hop;
use flannel_trace_tests::{
    Lab, NodeSpec, Tracer, UNDERLAY_IFACE, preflight,
    records::{inner_proto_is, line, outer_dport},
    serial, with_lab,
};

fn vlan_underlay(tags: &[(&'static str, u16)], want: (u16, Option<u16>)) -> Result<()> {
    let spec = tags.iter().fold(NodeSpec::new(), |s, &(proto, vid)| {
        s.underlay_vlan(proto, vid)
    });
    let lab = Lab::builder().node(spec.clone()).node(spec);
    with_lab(lab, |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let tracer = Tracer::start(b, &["--iface", UNDERLAY_IFACE, "--only-iface"])?;
        let ping = a.ping(IpAddr::V4(b.vtep_ip()), 3, Duration::from_millis(100))?;
        ensure!(ping.all_received(), "ping over the VLAN underlay: {ping:?}");
        thread::sleep(Duration::from_millis(200));
        let s = tracer.stop()?;
        ensure!(s.status.success(), "{}", s.dump());
        for hop in [Hop::UnderlayIngress, Hop::UnderlayEgress] {
            let evs: Vec<_> = s
                .at(hop)
                .filter(|e| inner_proto_is(e, "icmp") && e.iface.as_deref() == Some(UNDERLAY_IFACE))
                .collect();
            let hop = hop.name();
            ensure!(
                evs.len() >= 3,
                "{hop}: {} icmp events\n{}",
                evs.len(),
                s.dump()
            );
            for e in evs {
                ensure!(e.vlan == Some(want.0), "{hop} vlan {}: {}", want.0, line(e));
                ensure!(
                    e.vlan_inner == want.1,
                    "{hop} vlan_inner {:?}: {}",
                    want.1,
                    line(e)
                );
                ensure!(
                    e.vni == Some(1) && outer_dport(e) == Some(b.vxlan_port()),
                    "{}",
                    line(e)
                );
            }
        }
        Ok(())
    })
    .map_err(|e| {
        if format!("{e:#}").contains("Unknown device type") {
            e.context(format!(
                "this kernel has no VLAN devices: the test {NEEDS_VLAN}"
            ))
        } else {
            e
        }
    })
}

/// Why the VLAN labs are left out of a plain `cargo test`: the development
/// host's kernel may be built without 802.1Q devices. The kernel matrix
/// (`cargo xtask vm-test`) runs them on every Debian kernel.
const NEEDS_VLAN: &str = "needs 802.1Q devices (CONFIG_VLAN_8021Q); the kernel matrix runs it";

#[test]
#[ignore = "needs 802.1Q devices (CONFIG_VLAN_8021Q); the kernel matrix runs it"]
fn an_8021q_underlay_reports_its_tag() -> Result<()> {
    preflight()?;
    let _g = serial();
    vlan_underlay(&[("802.1Q", 100)], (100, None))
}

#[test]
#[ignore = "needs 802.1Q devices (CONFIG_VLAN_8021Q); the kernel matrix runs it"]
fn a_qinq_underlay_reports_both_tags() -> Result<()> {
    preflight()?;
    let _g = serial();
    vlan_underlay(&[("802.1ad", 200), ("802.1Q", 100)], (200, Some(100)))
}
