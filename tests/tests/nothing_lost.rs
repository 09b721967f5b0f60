//! Nothing lost: a live join that does not happen still leaves this node's
//! session in a recording, exits with status 6, and prints the exact
//! `flannel-trace join` command; that command then gives the verdict.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context as _, Result, ensure};
use flannel_trace_tests::{
    preflight,
    records::{report, show},
    scenario::{Fault, PORT, Proc, TOKEN},
    serial, tracer_bin, with_lab,
};

/// The recording named in "flannel-trace join PATH <the other node's …>".
fn join_command_path(stderr: &str) -> Result<PathBuf> {
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("flannel-trace join "))
        .with_context(|| format!("no `flannel-trace join` command printed:\n{stderr}"))?;
    let path = line
        .trim_start()
        .trim_start_matches("flannel-trace join ")
        .split(" <")
        .next()
        .context("no path")?;
    Ok(PathBuf::from(path))
}

#[test]
fn a_peer_that_cannot_join_records_exits_6_and_says_how_to_join_later() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Fault::None.lab(), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let port = PORT.to_string();
        // Node A only records; nothing listens on its port 7800.
        let a_rec = flannel_trace_tests::fixtures::recording("nothing-lost-a");
        let a_rec_s = a_rec.display().to_string();
        let pa = Proc::spawn(
            a,
            &[
                "--name",
                "node-a",
                "--port",
                &port,
                "--record",
                &a_rec_s,
                "--duration",
                "6s",
            ],
        )?;
        let nowhere = format!("{}:7800", a.underlay_ip());
        let rb = Proc::spawn(
            b,
            &[
                "--name",
                "node-b",
                "--port",
                &port,
                "--peer",
                &nowhere,
                "--token",
                TOKEN,
                "--peer-wait",
                "1s",
                "--duration",
                "4s",
                "--probe",
                "--probe-to",
                &a.vtep_ip().to_string(),
            ],
        )?
        .wait(Duration::from_secs(60))?;
        let ra = pa.wait(Duration::from_secs(60))?;
        ensure!(ra.status.success(), "{}", ra.stderr);
        ensure!(
            rb.status.code() == Some(6),
            "a live join that did not happen exits 6, got {:?}:\n{}",
            rb.status,
            rb.stderr
        );
        ensure!(
            rb.stderr.contains("recording this session to "),
            "the default recording is announced at start:\n{}",
            rb.stderr
        );
        ensure!(
            rb.stderr.contains("the live join did not happen"),
            "{}",
            rb.stderr
        );
        let b_rec = join_command_path(&rb.stderr)?;
        ensure!(b_rec.is_file(), "{} was not written", b_rec.display());

        // The command it printed, with the other node's recording, works.
        let out = Command::new(tracer_bin())
            .args(["join", "--json"])
            .arg(&b_rec)
            .arg(&a_rec)
            .output()?;
        ensure!(
            out.status.success(),
            "join failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = report(&out.stdout)?;
        let names: Vec<&str> = v.nodes.iter().map(|n| n.name.as_str()).collect();
        ensure!(names == ["node-b", "node-a"], "{names:?}");
        let probes_delivered = v
            .directions
            .iter()
            .any(|d| d.from == "node-b" && d.delivered > 0);
        ensure!(
            probes_delivered,
            "B's probes must show up in the offline join: {}",
            show(&v)
        );

        // The same node twice, as the same file or as a copy: refused.
        let copy = b_rec.with_extension("copy.rec");
        std::fs::copy(&b_rec, &copy)?;
        for other in [&b_rec, &copy] {
            let out = Command::new(tracer_bin())
                .arg("join")
                .arg(&b_rec)
                .arg(other)
                .output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure!(
                out.status.code() == Some(2),
                "join of node-b with itself must exit 2: {:?} {stderr}",
                out.status
            );
            ensure!(stderr.contains("same recording"), "{stderr}");
            ensure!(out.stdout.is_empty(), "no verdict for a node with itself");
        }
        let _ = std::fs::remove_file(&copy);
        let _ = std::fs::remove_file(&a_rec);
        let _ = std::fs::remove_file(&b_rec);
        Ok(())
    })
}

#[test]
fn a_listener_without_a_peer_and_a_peer_with_the_wrong_token_exit_6() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Fault::None.lab(), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let listen = format!("{}:7800", a.underlay_ip());
        let pa = Proc::spawn(
            a,
            &[
                "--name",
                "node-a",
                "--listen",
                &listen,
                "--token",
                TOKEN,
                "--duration",
                "5s",
            ],
        )?;
        let rb = Proc::spawn(
            b,
            &[
                "--name",
                "node-b",
                "--peer",
                &listen,
                "--token",
                "not-the-token",
                "--peer-wait",
                "4s",
                "--duration",
                "2s",
            ],
        )?
        .wait(Duration::from_secs(60))?;
        let ra = pa.wait(Duration::from_secs(60))?;
        for (who, r) in [("listener", &ra), ("peer", &rb)] {
            ensure!(
                r.status.code() == Some(6),
                "{who}: exit {:?}, want 6:\n{}",
                r.status,
                r.stderr
            );
            let path = join_command_path(&r.stderr)?;
            ensure!(path.is_file(), "{who}: {} missing", path.display());
            let _ = std::fs::remove_file(&path);
        }
        ensure!(rb.stderr.contains("bad token"), "{}", rb.stderr);
        ensure!(ra.stderr.contains("no peer joined"), "{}", ra.stderr);
        Ok(())
    })
}
