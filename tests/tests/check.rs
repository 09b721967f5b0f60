//! `flannel-trace check` against real lab nodes: a `kubectl get nodes -o
//! json` document built from the lab, each fault injected into a node's real
//! FDB, neighbour or route table (or into the annotations), the finding it
//! must produce, and — where the fix is a command — that running the printed
//! fix makes the finding go away. Needs root (`cargo xtask test`).

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, Result, bail, ensure};
use flannel_trace::{CheckReport, FindingKind};
use flannel_trace_tests::{
    Lab, Node, VXLAN_IFACE,
    kube::{kubectl_get_nodes, node_name, set_vtep_mac},
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

#[test]
fn port_vni_and_backend_disagreements_are_found() -> Result<()> {
    let _g = serial();
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let a = lab.node('a');
        let mut doc = kubectl_get_nodes(lab)?;
        let other_port = (a.vxlan_port() + 1).to_string();
        let other_vni = (a.vni() + 1).to_string();
        let r = expect_findings(
            a,
            &doc,
            &["--port", &other_port, "--vni", &other_vni],
            &[(FindingKind::Port, ""), (FindingKind::Vni, "")],
        )?;
        let msg = first_message(&r);
        ensure!(msg.contains(&a.vxlan_port().to_string()), "{msg}");
        doc["items"][1]["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-type"] =
            "host-gw".into();
        expect_findings(a, &doc, &[], &[(FindingKind::BackendType, "node-b")])?;
        Ok(())
    })
}

#[test]
fn bad_input_exits_2_with_a_clear_message() -> Result<()> {
    let _g = serial();
    let bin = tracer_bin();
    let run = |args: &[&str], stdin: &str| -> Result<Output> {
        let mut child = Command::new(&bin)
            .arg("check")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(stdin.as_bytes())?;
        Ok(child.wait_with_output()?)
    };
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &["/nonexistent/nodes.json"],
            "",
            "cannot read the node list",
        ),
        (&["-"], "{\"kind\": ", "stdin is not JSON"),
        (
            &["-"],
            r#"{"kind":"PodList","items":[]}"#,
            "its kind is PodList",
        ),
        (
            &["-"],
            r#"{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"p"}}]}"#,
            "item 0 is a Pod",
        ),
    ];
    for (args, stdin, want) in cases {
        let out = run(args, stdin)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(2) && err.contains(want),
            "{args:?} with {stdin:?}: status {}, stderr {err}",
            out.status
        );
    }
    Ok(())
}

#[test]
fn the_node_list_on_stdin_works_like_a_file() -> Result<()> {
    let _g = serial();
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let doc = kubectl_get_nodes(lab)?;
        let subnet = format!("{}/24", b.pod_subnet());
        a.run(&["ip", "route", "del", &subnet])?;
        let bin = tracer_bin();
        let mut child = Command::new("ip")
            .args(["netns", "exec", a.name()])
            .arg(&bin)
            .args(["check", "-", "--name", "node-a"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(&serde_json::to_vec(&doc)?)?;
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.code() == Some(1),
            "status {}: {text}",
            out.status
        );
        let lines: Vec<&str> = text.lines().collect();
        ensure!(lines.len() == 2, "a header and one finding line: {text}");
        if !(lines[1].starts_with("node-b: no route to node-b's pod subnet")
            && lines[1].contains("fix: ip route replace"))
        {
            bail!("unexpected finding line: {}", lines[1]);
        }
        Ok(())
    })
}

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
