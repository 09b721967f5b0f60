//! What the user gives `check`: `--port`/`--vni` and annotations that
//! disagree with the device, bad input, the node list on stdin.

use std::{
    io::Write as _,
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, Result, bail, ensure};
use flannel_trace::FindingKind;
use flannel_trace_tests::{Lab, kube::kubectl_get_nodes, preflight, serial, tracer_bin, with_lab};

use super::{expect_findings, first_message};

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
