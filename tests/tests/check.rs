//! `flannel-trace check` against real lab nodes: a `kubectl get nodes -o
//! json` document built from the lab, each fault injected into a node's real
//! FDB, neighbour or route table (or into the annotations), the finding it
//! must produce, and — where the fix is a command — that running the printed
//! fix makes the finding go away. Needs root (`cargo xtask test`). By topic:
//! the tables of a node (`tables`), the user's input (`input`), the live
//! join (`live`).

#[path = "check/input.rs"]
mod input;
#[path = "check/live.rs"]
mod live;
#[path = "check/tables.rs"]
mod tables;

use std::{path::PathBuf, process::Output};

use anyhow::{Context as _, Result, ensure};
use flannel_trace::{CheckReport, FindingKind};
use flannel_trace_tests::{
    Lab, Node, VXLAN_IFACE,
    kube::{kubectl_get_nodes, node_name},
    preflight,
    records::line,
    report::verdict,
    scenario::{Live, run_live},
    serial, tracer_bin, with_lab,
};
// The node list given to `check` is Kubernetes' document, not the tool's.
use serde_json::Value;

/// A MAC no lab node has.
const OLD_MAC: &str = "0e:a1:00:00:00:99";

fn write_doc(doc: &Value) -> Result<PathBuf> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "ft-check-{}-{}.json",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, serde_json::to_vec_pretty(doc)?)?;
    Ok(path)
}

/// `flannel-trace check FILE --name node-X --json ARGS` inside the node.
fn check(node: &Node, doc: &Value, args: &[&str]) -> Result<(Output, CheckReport)> {
    let file = write_doc(doc)?;
    let bin = tracer_bin();
    let name = node_name(node);
    let mut argv = vec![bin.to_str().context("binary path")?, "check"];
    let file_s = file.to_string_lossy().into_owned();
    argv.extend([file_s.as_str(), "--name", &name, "--json"]);
    argv.extend(args);
    let out = node.exec(&argv)?;
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: CheckReport = serde_json::from_str(stdout.trim()).with_context(|| {
        format!(
            "check printed no JSON (status {}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out, report))
}

fn kinds(report: &CheckReport) -> Vec<(FindingKind, String)> {
    report
        .findings
        .iter()
        .map(|f| (f.kind, f.node.clone()))
        .collect()
}

/// Asserts exactly these findings and exit status 1; returns the report.
fn expect_findings(
    node: &Node,
    doc: &Value,
    args: &[&str],
    want: &[(FindingKind, &str)],
) -> Result<CheckReport> {
    let (out, report) = check(node, doc, args)?;
    let got = kinds(&report);
    let want: Vec<_> = want.iter().map(|(k, n)| (*k, n.to_string())).collect();
    ensure!(
        got == want,
        "findings {got:?}, expected {want:?}: {}",
        line(&report)
    );
    ensure!(
        out.status.code() == Some(1),
        "exit status {} with findings",
        out.status
    );
    ensure!(!report.ok, "{}", line(&report));
    Ok(report)
}

fn expect_clean(node: &Node, doc: &Value, args: &[&str]) -> Result<()> {
    let (out, report) = check(node, doc, args)?;
    ensure!(
        kinds(&report).is_empty() && report.ok,
        "{} has findings: {}",
        node_name(node),
        line(&report)
    );
    ensure!(out.status.success(), "exit status {}", out.status);
    Ok(())
}

/// The message of the report's first finding ("" without one).
fn first_message(report: &CheckReport) -> &str {
    report.findings.first().map_or("", |f| f.message.as_str())
}

/// Runs a finding's fix (one or more `;`-separated iproute2 commands,
/// before any parenthesised remark) inside the node.
fn apply_fix(node: &Node, report: &CheckReport) -> Result<()> {
    let fix = report
        .findings
        .first()
        .context("no finding")?
        .fix
        .split(" (")
        .next()
        .unwrap_or_default()
        .to_owned();
    for cmd in fix.split(';') {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        ensure!(
            matches!(words.first(), Some(&"ip" | &"bridge")),
            "fix `{fix}` is not a command"
        );
        node.run(&words)
            .with_context(|| format!("running the fix `{cmd}`"))?;
    }
    Ok(())
}

/// What a node keeps after its peer's VtepMAC changed: the peer's VTEP
/// address still resolved to an old MAC on the vxlan device.
fn stale_neighbour(node: &Node, vtep: &str) -> Result<()> {
    node.run(&[
        "ip",
        "neigh",
        "replace",
        vtep,
        "lladdr",
        OLD_MAC,
        "dev",
        VXLAN_IFACE,
        "nud",
        "permanent",
    ])
    .map(drop)
}

/// The `config` lines of the listener's verdict after a live join.
fn live_config(lab: &Lab) -> Result<Vec<String>> {
    let run = run_live(lab, &Live::default())?;
    ensure!(run.a.status.success(), "listener: {}", run.a.stderr);
    let verdict =
        verdict(&run.a.stdout).with_context(|| format!("listener stderr: {}", run.a.stderr))?;
    Ok(verdict.config)
}

#[test]
fn a_healthy_lab_has_no_finding_on_any_node() -> Result<()> {
    let _g = serial();
    preflight()?;
    with_lab(Lab::builder().nodes(3), |lab| {
        let doc = kubectl_get_nodes(lab)?;
        for node in lab.nodes() {
            expect_clean(node, &doc, &[])?;
            let port = node.vxlan_port().to_string();
            let vni = node.vni().to_string();
            expect_clean(node, &doc, &["--port", &port, "--vni", &vni])?;
        }
        // The text form says so too.
        let a = lab.node('a');
        let file = write_doc(&doc)?;
        let bin = tracer_bin();
        let out = a.exec(&[
            bin.to_str().unwrap_or_default(),
            "check",
            &file.to_string_lossy(),
            "--name",
            "node-a",
        ])?;
        let _ = std::fs::remove_file(&file);
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && text.contains("3 nodes in the list: all agree"),
            "{text}"
        );
        Ok(())
    })
}
