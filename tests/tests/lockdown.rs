//! TC-only mode on a kernel booted with `lockdown=confidentiality`: the
//! kernel refuses the vxlan-rcv and drop programs, and flannel-trace goes on
//! with its TC hops, says which hops it cannot see and why, and its verdict
//! accounts for them.
//!
//! Ignored in ordinary runs: lockdown is set on the kernel command line and
//! cannot be lifted once raised, so the host never runs under it. `cargo
//! xtask vm-test` boots one kernel of the matrix with it and runs this file
//! with `--include-ignored` (see xtask/src/vm/).

use anyhow::{Context as _, Result, ensure};
use flannel_trace_tests::{
    preflight,
    report::{direction, segment, show, verdict},
    scenario::{Fault, Live, run_live},
    serial, with_lab,
};
use serde_json::Value;

const WHY: &str = "kernel lockdown (confidentiality) forbids reading kernel memory";

fn lockdown() -> String {
    std::fs::read_to_string("/sys/kernel/security/lockdown").unwrap_or_default()
}

/// The `start` record in a `--json` stdout.
fn start_record(stdout: &str) -> Result<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "start")
        .context("no start record")
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
        let start = start_record(&run.a.stdout)?;
        let missing: Vec<(&str, &str)> = start["missing_hops"]
            .as_array()
            .context("start record without missing_hops")?
            .iter()
            .filter_map(|m| Some((m["hop"].as_str()?, m["cause"].as_str()?)))
            .collect();
        ensure!(
            missing == [("vxlan-rcv", "lockdown"), ("drop", "lockdown")],
            "{}",
            start["missing_hops"]
        );
        let hooked: Vec<&str> = start["hooks"]
            .as_array()
            .context("hooks")?
            .iter()
            .filter_map(|h| h["hop"].as_str())
            .collect();
        for hop in [
            "overlay-egress",
            "overlay-ingress",
            "underlay-egress",
            "underlay-ingress",
        ] {
            ensure!(hooked.contains(&hop), "{hop} not attached: {hooked:?}");
        }
        ensure!(
            !hooked.iter().any(|h| *h == "vxlan-rcv" || *h == "drop"),
            "{hooked:?}"
        );

        let v = verdict(&run.a.stdout)?;
        let untraced = v["untraced"].as_array().context("no untraced")?;
        ensure!(untraced.len() == 4, "{}", show(&v["untraced"]));
        let ab = direction(&v, "node-a")?;
        let (ul, vx) = (
            v["nodes"][1]["underlay_dev"].as_str().unwrap_or("?"),
            v["nodes"][1]["vxlan_dev"].as_str().unwrap_or("?"),
        );
        let text = ab["verdict"].as_str().unwrap_or_default();
        ensure!(
            segment(ab) == "receiver-host"
                && text.contains(&format!(
                    "lost inside node-b, between {ul} and {vx} (vxlan-rcv not traced: {WHY}"
                ))
                && text.contains(&format!("(drop reasons unavailable on node-b: {WHY}")),
            "{}",
            show(ab)
        );
        // The TC hops saw every frame; the hops that were not traced are
        // unknown (null), never 0.
        let flows = ab["flows"].as_array().context("flows")?;
        ensure!(!flows.is_empty(), "{}", show(ab));
        for f in flows {
            let h = &f["hops"];
            ensure!(
                h["underlay_ingress"] == h["underlay_egress"]
                    && h["underlay_egress"].as_u64() > Some(0)
                    && h["overlay_ingress"] == 0
                    && h["vxlan_rcv"].is_null()
                    && h["receiver_drops"].is_null()
                    && h["sender_drops"].is_null(),
                "{}",
                show(f)
            );
        }
        let ba = direction(&v, "node-b")?;
        ensure!(segment(ba) == "delivered", "{}", show(ba));
        checked = true;
        Ok(())
    })?;
    ensure!(checked, "the lab body did not run");
    Ok(())
}
