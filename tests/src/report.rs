//! Reading the verdict documents flannel-trace prints (`--json`), and
//! running a fault scenario of the lab to get one.

use anyhow::{Context as _, Result, ensure};
use flannel_trace::{Direction, Flow, Report};
use flannel_trace_common::Hop;

pub use crate::records::{direction, show};
use crate::{
    records::{Output, is_hop, report},
    scenario::{Fault, Live, run_live},
    with_lab,
};

/// `flannel-trace join --json` of two recordings: the verdict document.
pub fn join(a: &std::path::Path, b: &std::path::Path) -> Result<Report> {
    let out = std::process::Command::new(crate::tracer_bin())
        .args(["join", "--json"])
        .arg(a)
        .arg(b)
        .output()?;
    ensure!(
        out.status.success(),
        "join failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    report(&out.stdout)
}

/// The `verdict` record the listener printed.
pub fn verdict(stdout: &str) -> Result<Report> {
    let out = Output::parse(stdout).context("the listener's output")?;
    out.verdict()
        .cloned()
        .with_context(|| format!("in the listener's output:\n{stdout}"))
}

/// The kernel's drop reasons of a direction's drops before delivery.
pub fn drop_reasons(d: &Direction) -> Vec<String> {
    d.flows
        .iter()
        .flat_map(|f| &f.drops)
        .filter(|x| !x.after_delivery)
        .filter_map(|x| x.reason.as_ref().map(|r| r.to_string()))
        .collect()
}

/// Does the running kernel have this drop reason? (Names come from BTF.)
pub fn kernel_has_reason(name: &str) -> bool {
    std::fs::read("/sys/kernel/btf/vmlinux")
        .map(|b| {
            b.windows(name.len() + 16)
                .any(|w| w.starts_with(b"SKB_DROP_REASON_") && &w[16..] == name.as_bytes())
        })
        .unwrap_or(false)
}

pub fn scenario(fault: Fault) -> Result<Report> {
    scenario_with(fault, &Live::default())
}

/// [`scenario`] with other options of the live run.
pub fn scenario_with(fault: Fault, live: &Live) -> Result<Report> {
    let mut out = None;
    with_lab(fault.lab(), |lab| {
        fault.apply(lab)?;
        let run = run_live(lab, live)?;
        ensure!(
            run.a.status.success(),
            "listener failed: {}\n{}",
            run.a.status,
            run.a.stderr
        );
        ensure!(
            run.b.status.success(),
            "peer failed: {}\n{}",
            run.b.status,
            run.b.stderr
        );
        let v = verdict(&run.a.stdout)?;
        ensure!(v.schema == 2, "{}", show(&v));
        out = Some(v);
        Ok(())
    })?;
    out.context("no verdict")
}

/// Whether the verdict lists a configuration finding starting with `prefix`.
pub fn has_config(v: &Report, prefix: &str) -> bool {
    v.config.iter().any(|c| c.starts_with(prefix))
}

/// The direction's likely fix, empty when it has none.
pub fn fix_of(d: &Direction) -> &str {
    d.fix.as_deref().unwrap_or_default()
}

/// The flows of a direction whose path starts at `pod-ingress`: pod to pod.
pub fn pod_flows(d: &Direction) -> Vec<&Flow> {
    d.flows
        .iter()
        .filter(|f| is_hop(&f.path_start, Hop::PodIngress) && is_hop(&f.path_end, Hop::PodEgress))
        .collect()
}

/// The flows of a direction that are host-network traffic (the path starts
/// and ends at the vxlan device).
pub fn host_flows(d: &Direction) -> Vec<&Flow> {
    d.flows
        .iter()
        .filter(|f| {
            is_hop(&f.path_start, Hop::OverlayEgress) && is_hop(&f.path_end, Hop::OverlayIngress)
        })
        .collect()
}
