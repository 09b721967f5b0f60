//! Every fault scenario of the lab, live on both nodes: the segment,
//! direction, drop reason and fix of the verdict.

use anyhow::{Result, ensure};
use flannel_trace::Segment;
use flannel_trace_tests::{
    preflight,
    report::{direction, drop_reasons, fix_of, has_config, kernel_has_reason, scenario, show},
    scenario::Fault,
    serial, skip_check,
};

#[test]
fn healthy_overlay_is_delivered_both_ways_with_equal_counts() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::None)?;
    for from in ["node-a", "node-b"] {
        let d = direction(&v, from)?;
        ensure!(
            d.segment == Segment::Delivered && d.certain,
            "{from}: {}",
            show(d)
        );
        ensure!(
            d.sent > 0 && d.sent == d.delivered,
            "{from}: counts differ: {}",
            show(d)
        );
        ensure!(!d.flows.is_empty(), "{from}: no flows: {}", show(d));
        for f in &d.flows {
            let h = &f.hops;
            ensure!(
                h.overlay_egress == h.underlay_egress && h.underlay_egress == h.underlay_ingress,
                "{}",
                show(f)
            );
            ensure!(h.underlay_ingress == h.overlay_ingress, "{}", show(f));
        }
    }
    ensure!(
        v.clock.is_some_and(|c| c.error_ns < 5_000_000),
        "clock offset bound: {:?}",
        v.clock
    );
    ensure!(v.uncertain.is_empty(), "{:?}", v.uncertain);
    Ok(())
}

#[test]
fn the_incident_underlay_drop_is_blamed_on_the_underlay_one_way() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::UnderlayDrop)?;
    let ba = direction(&v, "node-b")?;
    ensure!(
        ba.segment == Segment::Underlay && ba.certain,
        "{}",
        show(ba)
    );
    ensure!(ba.delivered == 0 && ba.lost.underlay > 0, "{}", show(ba));
    let verdict = &ba.verdict;
    ensure!(verdict.contains("left node-b's eth1 (outer 10.25.1.55→10.25.1.51 udp/8475), 0 reached node-a's eth1: lost in the underlay"), "{verdict}");
    ensure!(fix_of(ba).contains("UDP 8475"), "{:?}", ba.fix);
    // The other direction is healthy.
    let ab = direction(&v, "node-a")?;
    ensure!(
        ab.segment == Segment::Delivered,
        "A→B must be healthy: {}",
        show(ab)
    );
    Ok(())
}

#[test]
fn receiver_firewall_is_a_receiver_host_drop_with_its_reason() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::ReceiverFirewall)?;
    let ab = direction(&v, "node-a")?;
    ensure!(ab.segment == Segment::ReceiverHost, "{}", show(ab));
    ensure!(
        drop_reasons(ab).iter().any(|r| r == "NETFILTER_DROP"),
        "{}",
        show(ab)
    );
    ensure!(
        fix_of(ab).contains("firewall rule on node-b"),
        "{:?}",
        ab.fix
    );
    ensure!(
        direction(&v, "node-b")?.segment == Segment::Delivered,
        "B→A must be healthy"
    );
    Ok(())
}

#[test]
fn port_mismatch_is_found_from_both_sides() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::PortMismatch)?;
    ensure!(has_config(&v, "port mismatch"), "{:?}", v.config);
    for from in ["node-a", "node-b"] {
        let d = direction(&v, from)?;
        ensure!(d.segment == Segment::ReceiverHost, "{from}: {}", show(d));
        ensure!(
            drop_reasons(d).iter().any(|r| r == "NO_SOCKET"),
            "{from}: {}",
            show(d)
        );
    }
    let fix = fix_of(direction(&v, "node-a")?);
    ensure!(fix.contains("udp/8472"), "{fix}");
    Ok(())
}

#[test]
fn vni_mismatch_is_a_receiver_host_loss() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::VniMismatch)?;
    ensure!(has_config(&v, "VNI mismatch"), "{:?}", v.config);
    for from in ["node-a", "node-b"] {
        let d = direction(&v, from)?;
        ensure!(d.segment == Segment::ReceiverHost, "{from}: {}", show(d));
        if kernel_has_reason("VXLAN_VNI_NOT_FOUND") {
            ensure!(
                drop_reasons(d).iter().any(|r| r == "VXLAN_VNI_NOT_FOUND"),
                "{from}: {}",
                show(d)
            );
        } else {
            skip_check(format!(
                "{from}: the kernel has no drop reason VXLAN_VNI_NOT_FOUND to name"
            ));
        }
        ensure!(fix_of(d).contains("VNI mismatch"), "{from}: {:?}", d.fix);
    }
    Ok(())
}

#[test]
fn missing_fdb_entry_is_a_sender_host_loss() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::MissingFdb)?;
    let ab = direction(&v, "node-a")?;
    ensure!(ab.segment == Segment::SenderHost, "{}", show(ab));
    ensure!(
        !ab.flows.is_empty() && ab.flows.iter().all(|f| f.hops.underlay_egress == 0),
        "{}",
        show(ab)
    );
    ensure!(fix_of(ab).contains("no FDB entry"), "{:?}", ab.fix);
    ensure!(
        direction(&v, "node-b")?.segment == Segment::Delivered,
        "B→A must be healthy"
    );
    Ok(())
}

#[test]
fn mtu_black_hole_loses_only_full_size_frames_in_the_underlay() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::Mtu)?;
    let ab = direction(&v, "node-a")?;
    ensure!(ab.segment == Segment::Underlay, "{}", show(ab));
    ensure!(ab.delivered > 0, "small frames must pass: {}", show(ab));
    ensure!(fix_of(ab).contains("MTU"), "{:?}", ab.fix);
    Ok(())
}
