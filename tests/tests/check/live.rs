//! The same comparison in a live join: the listener's and the peer's
//! tables in the verdict's config.

use anyhow::{Result, ensure};
use flannel_trace_tests::{Lab, preflight, serial, with_lab};

use super::{OLD_MAC, live_config, stale_neighbour};

#[test]
fn a_live_join_reports_the_listeners_stale_neighbour_in_the_verdict_config() -> Result<()> {
    let _g = serial();
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let vtep = b.vtep_ip().to_string();
        stale_neighbour(a, &vtep)?;
        let config = live_config(lab)?;
        let want = format!(
            "node-a: the neighbour entry on flannel.1 for node-b's VTEP address {vtep} has MAC {OLD_MAC}"
        );
        ensure!(
            config.iter().any(|c| c.starts_with(&want)),
            "config {config:?} lacks `{want}`"
        );
        Ok(())
    })
}

/// The peer's tables travel in its identity: a stale neighbour entry and a
/// missing route on node-b (the peer, not the node the verdict is printed
/// on) appear in the listener's verdict config with their fixes.
#[test]
fn a_live_join_reports_the_peers_stale_neighbour_and_missing_route() -> Result<()> {
    let _g = serial();
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let vtep = a.vtep_ip().to_string();
        let subnet = format!("{}/24", a.pod_subnet());
        stale_neighbour(b, &vtep)?;
        b.run(&["ip", "route", "del", &subnet])?;
        let config = live_config(lab)?;
        for want in [
            format!(
                "node-b: the neighbour entry on flannel.1 for node-a's VTEP address {vtep} has MAC {OLD_MAC}, node-a's VtepMAC is {}",
                a.vtep_mac()
            ),
            format!("node-b: no route to node-a's VTEP address {vtep} on this node"),
        ] {
            ensure!(
                config.iter().any(|c| c.starts_with(&want)),
                "config {config:?} lacks `{want}`"
            );
        }
        // What the listener's own tables hold is fine: nothing is said of it.
        ensure!(
            !config
                .iter()
                .any(|c| c.starts_with("node-a: the neighbour entry")
                    || c.starts_with("node-a: no route")),
            "config {config:?} blames node-a's tables"
        );
        Ok(())
    })
}
