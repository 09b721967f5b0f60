//! TC-only mode on a kernel booted with `lockdown=confidentiality`: the
//! kernel refuses the vxlan-rcv and drop programs, and flannel-trace goes on
//! with its TC hops, says which hops it cannot see and why, and its verdict
//! accounts for them.
//!
//! Ignored in ordinary runs: lockdown is set on the kernel command line and
//! cannot be lifted once raised, so the host never runs under it. `cargo
//! xtask vm-test` boots one kernel of the matrix with it and runs this file
//! with `--include-ignored` (see xtask/src/vm/).

use anyhow::{Result, ensure};
use flannel_trace::{MissingCause, Segment};
use flannel_trace_common::Hop;
use flannel_trace_tests::{
    fixtures::TC_HOPS,
    preflight,
    records::{HopName as _, Output, is_hop},
    report::{direction, show, verdict},
    scenario::{Fault, Live, run_live},
    serial, with_lab,
};

const WHY: &str = "kernel lockdown (confidentiality) forbids reading kernel memory";

fn lockdown() -> String {
    std::fs::read_to_string("/sys/kernel/security/lockdown").unwrap_or_default()
}

#[test]
#[ignore = "needs a kernel booted with lockdown=confidentiality (cargo xtask vm-test boots one)"]
fn under_confidentiality_lockdown_the_tracers_run_tc_only_and_the_verdict_says_what_they_miss()
-> Result<()> {
    preflight()?;
    let _g = serial();
    ensure!(
        lockdown().contains("[confidentiality]"),
        "this kernel is not in confidentiality lockdown: /sys/kernel/security/lockdown reads {:?}",
        lockdown()
    );
    // Node B's firewall drops the VXLAN frames from A: they reach B's NIC
    // (a TC hop) and never its vxlan device, which is exactly the stretch
    // a TC-only tracer cannot split.
    let fault = Fault::ReceiverFirewall;
    let mut checked = false;
    with_lab(fault.lab(), |lab| {
        fault.apply(lab)?;
        let run = run_live(lab, &Live::default())?;
        for (node, r) in [("node-a", &run.a), ("node-b", &run.b)] {
            ensure!(
                r.status.success(),
                "{node}: exit {}\n{}",
                r.status,
                r.stderr
            );
            for hop in ["vxlan-rcv", "drop"] {
                let line = format!("flannel-trace: {hop} hop unavailable: {WHY}");
                ensure!(
                    r.stderr.matches(&line).count() == 1
                        && r.stderr.contains("tracing TC hops only"),
                    "{node}: expected `{line}…; tracing TC hops only` once on stderr:\n{}",
                    r.stderr
                );
            }
        }
        let out = Output::parse(&run.a.stdout)?;
        let start = out.start()?;
        let missing: Vec<(String, MissingCause)> = start
            .missing_hops
            .iter()
            .map(|m| (m.hop.hop_name().to_owned(), m.cause))
            .collect();
        ensure!(
            missing
                == [
                    ("vxlan-rcv".to_owned(), MissingCause::Lockdown),
                    ("drop".to_owned(), MissingCause::Lockdown)
                ],
            "{}",
            show(&start.missing_hops)
        );
        let hooked: Vec<&str> = start.hooks.iter().map(|h| h.hop.hop_name()).collect();
        for hop in TC_HOPS {
            ensure!(
                start.hooks.iter().any(|h| is_hop(&h.hop, hop)),
                "{} not attached: {hooked:?}",
                hop.name()
            );
        }
        ensure!(
            !start
                .hooks
                .iter()
                .any(|h| is_hop(&h.hop, Hop::VxlanRcv) || is_hop(&h.hop, Hop::Drop)),
            "{hooked:?}"
        );

        let v = verdict(&run.a.stdout)?;
        ensure!(v.untraced.len() == 4, "{}", show(&v.untraced));
        let ab = direction(&v, "node-a")?;
        let (ul, vx) = v.nodes.get(1).map_or(("?", "?"), |n| {
            (n.underlay_dev.as_str(), n.vxlan_dev.as_str())
        });
        let text = &ab.verdict;
        ensure!(
            ab.segment == Segment::ReceiverHost
                && text.contains(&format!(
                    "lost inside node-b, between {ul} and {vx} (vxlan-rcv not traced: {WHY}"
                ))
                && text.contains(&format!("(drop reasons unavailable on node-b: {WHY}")),
            "{}",
            show(ab)
        );
        // The TC hops saw every frame; the hops that were not traced are
        // unknown (null), never 0.
        ensure!(!ab.flows.is_empty(), "{}", show(ab));
        for f in &ab.flows {
            let h = &f.hops;
            ensure!(
                h.underlay_ingress == h.underlay_egress
                    && h.underlay_egress > 0
                    && h.overlay_ingress == 0
                    && h.vxlan_rcv.is_none()
                    && h.receiver_drops.is_none()
                    && h.sender_drops.is_none(),
                "{}",
                show(f)
            );
        }
        let ba = direction(&v, "node-b")?;
        ensure!(ba.segment == Segment::Delivered, "{}", show(ba));
        checked = true;
        Ok(())
    })?;
    ensure!(checked, "the lab body did not run");
    Ok(())
}
