//! A fault in one node's FDB, neighbour or route table (or in the node
//! list's annotations), the finding it produces, and the printed fix
//! making it go away.

use anyhow::{Result, ensure};
use flannel_trace::FindingKind;
use flannel_trace_tests::{
    Lab, VXLAN_IFACE,
    kube::{kubectl_get_nodes, set_vtep_mac},
    preflight, serial, with_lab,
};

use super::{OLD_MAC, apply_fix, expect_clean, expect_findings, first_message, stale_neighbour};

#[test]
fn a_stale_fdb_entry_is_found_and_its_fix_works() -> Result<()> {
    let _g = serial();
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let doc = kubectl_get_nodes(lab)?;
        // What a node keeps after its peer's VtepMAC changed: the old MAC
        // still mapped to the peer's underlay address.
        let dst = b.underlay_ip().to_string();
        a.run(&[
            "bridge",
            "fdb",
            "del",
            &b.vtep_mac(),
            "dev",
            VXLAN_IFACE,
            "dst",
            &dst,
        ])?;
        a.run(&[
            "bridge",
            "fdb",
            "append",
            OLD_MAC,
            "dev",
            VXLAN_IFACE,
            "dst",
            &dst,
        ])?;
        let report = expect_findings(a, &doc, &[], &[(FindingKind::FdbMac, "node-b")])?;
        let msg = first_message(&report);
        ensure!(
            msg.contains(OLD_MAC) && msg.contains(&b.vtep_mac()) && msg.contains(&dst),
            "{msg}"
        );
        apply_fix(a, &report)?;
        expect_clean(a, &doc, &[])?;
        // node-b's own tables were never touched.
        expect_clean(b, &doc, &[])
    })
}

#[test]
fn a_missing_fdb_entry_is_found() -> Result<()> {
    let _g = serial();
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let doc = kubectl_get_nodes(lab)?;
        let dst = b.underlay_ip().to_string();
        a.run(&[
            "bridge",
            "fdb",
            "del",
            &b.vtep_mac(),
            "dev",
            VXLAN_IFACE,
            "dst",
            &dst,
        ])?;
        let report = expect_findings(a, &doc, &[], &[(FindingKind::MissingFdb, "node-b")])?;
        apply_fix(a, &report)?;
        expect_clean(a, &doc, &[])
    })
}

#[test]
fn a_wrong_vtep_mac_annotation_is_found_on_both_nodes() -> Result<()> {
    let _g = serial();
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let mut doc = kubectl_get_nodes(lab)?;
        set_vtep_mac(&mut doc, "node-b", OLD_MAC)?;
        // node-a's entries carry node-b's real MAC, which the list denies…
        expect_findings(
            a,
            &doc,
            &[],
            &[
                (FindingKind::FdbMac, "node-b"),
                (FindingKind::StaleNeighbour, "node-b"),
            ],
        )?;
        // …and node-b's own annotation disagrees with its device.
        let report = expect_findings(b, &doc, &[], &[(FindingKind::SelfVtepMac, "node-b")])?;
        let msg = first_message(&report);
        ensure!(
            msg.contains(OLD_MAC) && msg.contains(&b.vtep_mac()),
            "{msg}"
        );
        Ok(())
    })
}

#[test]
fn a_stale_neighbour_entry_is_found_and_its_fix_works() -> Result<()> {
    let _g = serial();
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let doc = kubectl_get_nodes(lab)?;
        let vtep = b.vtep_ip().to_string();
        stale_neighbour(a, &vtep)?;
        let report = expect_findings(a, &doc, &[], &[(FindingKind::StaleNeighbour, "node-b")])?;
        apply_fix(a, &report)?;
        expect_clean(a, &doc, &[])
    })
}

#[test]
fn a_missing_route_is_found_and_its_fix_works() -> Result<()> {
    let _g = serial();
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let doc = kubectl_get_nodes(lab)?;
        let subnet = format!("{}/24", b.pod_subnet());
        a.run(&["ip", "route", "del", &subnet])?;
        let report = expect_findings(a, &doc, &[], &[(FindingKind::MissingRoute, "node-b")])?;
        let fix = report.findings.first().map_or("", |f| f.fix.as_str());
        ensure!(fix.contains(&subnet), "{fix}");
        apply_fix(a, &report)?;
        expect_clean(a, &doc, &[])
    })
}
