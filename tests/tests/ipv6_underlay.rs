//! An IPv6 underlay (flannel's `flannel-v6.1` style), real kernel: the TC
//! hooks and vxlan-rcv must decode IPv6 outer headers, and the outer tuple
//! must carry the IPv6 node addresses.

use std::{net::IpAddr, thread, time::Duration};

use anyhow::{Result, ensure};
use flannel_trace_common::Hop;
use flannel_trace_tests::{
    Lab, Node, Tracer,
    records::{line, outer_dport, outer_dst, outer_src},
    require_root, require_tools, with_lab,
};

const PORT: u16 = 8476;

fn v6(i: u8) -> String {
    format!("fd00:25::{}", 50 + i)
}

/// A second, IPv6-underlay vxlan device `fl6` (VNI 6, udp/8476) next to
/// the lab's flannel.1, configured the way flannel configures one.
fn add_v6_overlay(n: &Node, i: u8, peer: u8) -> Result<()> {
    for key in [
        "net/ipv6/conf/all/disable_ipv6",
        "net/ipv6/conf/default/disable_ipv6",
        "net/ipv6/conf/eth1/disable_ipv6",
    ] {
        n.set_sysctl(key, "0")?;
    }
    let (mac, peer_mac) = (
        format!("02:00:00:00:06:{i:02x}"),
        format!("02:00:00:00:06:{peer:02x}"),
    );
    let port = PORT.to_string();
    n.run(&[
        "ip",
        "addr",
        "add",
        &format!("{}/64", v6(i)),
        "dev",
        "eth1",
        "nodad",
    ])?;
    n.run(&[
        "ip",
        "link",
        "add",
        "fl6",
        "address",
        &mac,
        "type",
        "vxlan",
        "id",
        "6",
        "local",
        &v6(i),
        "dev",
        "eth1",
        "dstport",
        &port,
        "nolearning",
    ])?;
    n.run(&["ip", "link", "set", "fl6", "mtu", "1430", "up"])?;
    n.run(&[
        "ip",
        "addr",
        "add",
        &format!("10.246.{i}.0/32"),
        "dev",
        "fl6",
    ])?;
    let gw = format!("10.246.{peer}.0");
    n.run(&[
        "ip",
        "route",
        "add",
        &format!("10.246.{peer}.0/24"),
        "via",
        &gw,
        "dev",
        "fl6",
        "onlink",
    ])?;
    n.run(&[
        "ip",
        "neigh",
        "replace",
        &gw,
        "lladdr",
        &peer_mac,
        "dev",
        "fl6",
        "nud",
        "permanent",
    ])?;
    n.run(&[
        "bridge",
        "fdb",
        "append",
        &peer_mac,
        "dev",
        "fl6",
        "dst",
        &v6(peer),
    ])?;
    Ok(())
}

#[test]
fn ipv6_underlay_frames_are_decoded_at_every_hop() -> Result<()> {
    require_root()?;
    require_tools()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        add_v6_overlay(a, 1, 2)?;
        add_v6_overlay(b, 2, 1)?;
        let tracer = Tracer::start(a, &["--vxlan-dev", "fl6", "--proto", "icmp"])?;
        ensure!(
            tracer.start.port == PORT && tracer.start.underlay_dev == "eth1",
            "{}",
            line(&tracer.start)
        );
        let ping = a.ping(
            IpAddr::V4("10.246.2.0".parse()?),
            3,
            Duration::from_millis(200),
        )?;
        ensure!(
            ping.all_received(),
            "IPv6-underlay overlay must work: {ping:?}"
        );
        thread::sleep(Duration::from_millis(300));
        let s = tracer.stop()?;
        ensure!(s.status.success(), "{}", s.dump());
        let outer = |hop: Hop, src: &str, dst: &str| {
            let (src, dst) = (src.parse::<IpAddr>().ok(), dst.parse::<IpAddr>().ok());
            s.at(hop)
                .filter(|e| {
                    outer_src(e) == src
                        && outer_dst(e) == dst
                        && outer_dport(e) == Some(PORT)
                        && e.vni == Some(6)
                })
                .count()
        };
        ensure!(
            outer(Hop::UnderlayEgress, &v6(1), &v6(2)) == 3,
            "{}",
            s.dump()
        );
        ensure!(
            outer(Hop::UnderlayIngress, &v6(2), &v6(1)) == 3,
            "{}",
            s.dump()
        );
        ensure!(
            outer(Hop::VxlanRcv, &v6(2), &v6(1)) == 3,
            "vxlan-rcv must recover/parse the IPv6 outer header\n{}",
            s.dump()
        );
        ensure!(
            s.at(Hop::OverlayIngress).count() == 3 && s.at(Hop::OverlayEgress).count() == 3,
            "{}",
            s.dump()
        );
        Ok(())
    })
}
