//! Reading the verdict documents flannel-trace prints (`--json`), and
//! running a fault scenario of the lab to get one.

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use crate::{
    scenario::{Fault, Live, run_live},
    with_lab,
};

/// `flannel-trace join --json` of two recordings: the verdict document.
pub fn join(a: &std::path::Path, b: &std::path::Path) -> Result<Value> {
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
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The `verdict` record the listener printed.
pub fn verdict(stdout: &str) -> Result<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "verdict")
        .with_context(|| format!("no verdict in the listener's output:\n{stdout}"))
}

pub fn direction<'a>(v: &'a Value, from: &str) -> Result<&'a Value> {
    v["directions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["from"] == from))
        .with_context(|| format!("no direction from {from}: {v}"))
}

pub fn drop_reasons(d: &Value) -> Vec<String> {
    d["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["drops"].as_array().into_iter().flatten())
        .filter(|x| x["after_delivery"] == false)
        .filter_map(|x| x["reason"].as_str().map(str::to_owned))
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

pub fn scenario(fault: Fault) -> Result<Value> {
    scenario_with(fault, &Live::default())
}

/// [`scenario`] with other options of the live run.
pub fn scenario_with(fault: Fault, live: &Live) -> Result<Value> {
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
        ensure!(v["schema"] == 2, "{v}");
        out = Some(v);
        Ok(())
    })?;
    out.context("no verdict")
}

/// Whether the verdict lists a configuration finding starting with `prefix`.
pub fn has_config(v: &Value, prefix: &str) -> bool {
    v["config"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c.as_str().unwrap_or_default().starts_with(prefix))
}

pub fn segment(d: &Value) -> &str {
    d["segment"].as_str().unwrap_or_default()
}

pub fn show(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// The flows of a direction whose path starts at `pod-ingress`: pod to pod.
pub fn pod_flows(d: &Value) -> Vec<&Value> {
    d["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["path_start"] == "pod-ingress" && f["path_end"] == "pod-egress")
        .collect()
}

/// The flows of a direction that are host-network traffic (the path starts
/// and ends at the vxlan device).
pub fn host_flows(d: &Value) -> Vec<&Value> {
    d["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["path_start"] == "overlay-egress" && f["path_end"] == "overlay-ingress")
        .collect()
}
