//! A live join that goes wrong: a peer without the token, a peer killed
//! mid-session.

use std::{net::IpAddr, time::Duration};

use anyhow::{Result, ensure};
use flannel_trace_tests::{
    Node, preflight,
    report::{show, verdict},
    scenario::{Fault, Proc, TOKEN},
    serial, with_lab,
};

#[test]
fn a_peer_without_the_token_is_refused_and_the_right_one_still_joins() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Fault::None.lab(), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let (pa, listen) = listener(a)?;
        let bad = Proc::spawn(
            b,
            &[
                "--name",
                "node-b",
                "--peer",
                &listen,
                "--token",
                "wrong",
                "--duration",
                "3s",
                "--peer-wait",
                "2s",
            ],
        )?
        .wait(Duration::from_secs(20))?;
        ensure!(
            bad.stderr.contains("refused"),
            "the wrong token must be refused:\n{}",
            bad.stderr
        );
        let good = Proc::spawn(
            b,
            &[
                "--name",
                "node-b",
                "--peer",
                &listen,
                "--token",
                TOKEN,
                "--duration",
                "2s",
            ],
        )?
        .wait(Duration::from_secs(20))?;
        ensure!(good.status.success(), "{}", good.stderr);
        let ra = pa.wait(Duration::from_secs(20))?;
        ensure!(
            ra.stderr.contains("refused peer"),
            "the listener must log the refusal:\n{}",
            ra.stderr
        );
        let v = verdict(&ra.stdout)?;
        ensure!(
            v.nodes.get(1).is_some_and(|n| n.name == "node-b"),
            "the right peer joined: {}",
            show(&v.nodes)
        );
        Ok(())
    })
}

#[test]
fn a_peer_killed_mid_session_gives_a_partial_clearly_marked_verdict() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Fault::None.lab(), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let (mut pa, listen) = listener(a)?;
        let pb = Proc::spawn(
            b,
            &[
                "--name",
                "node-b",
                "--peer",
                &listen,
                "--token",
                TOKEN,
                "--duration",
                "60s",
            ],
        )?;
        pa.wait_stderr("joined with", Duration::from_secs(30))?;
        a.ping(IpAddr::V4(b.vtep_ip()), 3, Duration::from_millis(100))?;
        pb.signal(libc::SIGKILL);
        let _ = pb.wait(Duration::from_secs(10));
        let ra = pa.wait(Duration::from_secs(20))?;
        ensure!(ra.status.success(), "{}", ra.stderr);
        let v = verdict(&ra.stdout)?;
        let marked = v.uncertain.iter().any(|u| {
            u.contains("node-b") && (u.contains("went away") || u.contains("closed the connection"))
        });
        ensure!(
            marked,
            "the verdict must say the peer went away: {:?}",
            v.uncertain
        );
        Ok(())
    })
}

/// flannel-trace listening on node A (JSON), once it waits for a peer.
fn listener(a: &Node) -> Result<(Proc, String)> {
    let listen = format!("{}:7800", a.underlay_ip());
    let args = [
        "--name",
        "node-a",
        "--listen",
        &listen,
        "--token",
        TOKEN,
        "--json",
        "--duration",
        "60s",
    ];
    let mut pa = Proc::spawn(a, &args)?;
    pa.wait_stderr("waiting for a peer", Duration::from_secs(30))?;
    Ok((pa, listen))
}
