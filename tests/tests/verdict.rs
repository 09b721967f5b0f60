//! Two nodes, one verdict, on the real kernel: every fault scenario of the
//! lab, with flannel-trace live on both nodes (`--listen` on A, `--peer` on
//! B, both probing), asserting the segment, direction and (where the kernel
//! reports one) drop reason of the verdict. Plus the ways a join can go
//! wrong: a tracer that loses events, a peer without the token, a peer
//! killed mid-session, and damaged recordings.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, Result, ensure};
use flannel_trace::Segment;
use flannel_trace_tests::{
    Node,
    fixtures::recording,
    preflight,
    report::{
        direction, drop_reasons, fix_of, has_config, kernel_has_reason, scenario, show, verdict,
    },
    scenario::{Fault, Proc, TOKEN},
    serial, skip_check, tracer_bin, with_lab,
};

#[test]
fn healthy_overlay_is_delivered_both_ways_with_equal_counts() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::None)?;
    for from in ["node-a", "node-b"] {
        let d = direction(&v, from)?;
        ensure!(
            d.segment == Segment::Delivered && d.certain,
            "{from}: {}",
            show(d)
        );
        ensure!(
            d.sent > 0 && d.sent == d.delivered,
            "{from}: counts differ: {}",
            show(d)
        );
        ensure!(!d.flows.is_empty(), "{from}: no flows: {}", show(d));
        for f in &d.flows {
            let h = &f.hops;
            ensure!(
                h.overlay_egress == h.underlay_egress && h.underlay_egress == h.underlay_ingress,
                "{}",
                show(f)
            );
            ensure!(h.underlay_ingress == h.overlay_ingress, "{}", show(f));
        }
    }
    ensure!(
        v.clock.is_some_and(|c| c.error_ns < 5_000_000),
        "clock offset bound: {:?}",
        v.clock
    );
    ensure!(v.uncertain.is_empty(), "{:?}", v.uncertain);
    Ok(())
}

#[test]
fn the_incident_underlay_drop_is_blamed_on_the_underlay_one_way() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::UnderlayDrop)?;
    let ba = direction(&v, "node-b")?;
    ensure!(
        ba.segment == Segment::Underlay && ba.certain,
        "{}",
        show(ba)
    );
    ensure!(ba.delivered == 0 && ba.lost.underlay > 0, "{}", show(ba));
    let verdict = &ba.verdict;
    ensure!(verdict.contains("left node-b's eth1 (outer 10.25.1.55→10.25.1.51 udp/8475), 0 reached node-a's eth1: lost in the underlay"), "{verdict}");
    ensure!(fix_of(ba).contains("UDP 8475"), "{:?}", ba.fix);
    // The other direction is healthy.
    let ab = direction(&v, "node-a")?;
    ensure!(
        ab.segment == Segment::Delivered,
        "A→B must be healthy: {}",
        show(ab)
    );
    Ok(())
}

#[test]
fn receiver_firewall_is_a_receiver_host_drop_with_its_reason() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::ReceiverFirewall)?;
    let ab = direction(&v, "node-a")?;
    ensure!(ab.segment == Segment::ReceiverHost, "{}", show(ab));
    ensure!(
        drop_reasons(ab).iter().any(|r| r == "NETFILTER_DROP"),
        "{}",
        show(ab)
    );
    ensure!(
        fix_of(ab).contains("firewall rule on node-b"),
        "{:?}",
        ab.fix
    );
    ensure!(
        direction(&v, "node-b")?.segment == Segment::Delivered,
        "B→A must be healthy"
    );
    Ok(())
}

#[test]
fn port_mismatch_is_found_from_both_sides() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::PortMismatch)?;
    ensure!(has_config(&v, "port mismatch"), "{:?}", v.config);
    for from in ["node-a", "node-b"] {
        let d = direction(&v, from)?;
        ensure!(d.segment == Segment::ReceiverHost, "{from}: {}", show(d));
        ensure!(
            drop_reasons(d).iter().any(|r| r == "NO_SOCKET"),
            "{from}: {}",
            show(d)
        );
    }
    let fix = fix_of(direction(&v, "node-a")?);
    ensure!(fix.contains("udp/8472"), "{fix}");
    Ok(())
}

#[test]
fn vni_mismatch_is_a_receiver_host_loss() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::VniMismatch)?;
    ensure!(has_config(&v, "VNI mismatch"), "{:?}", v.config);
    for from in ["node-a", "node-b"] {
        let d = direction(&v, from)?;
        ensure!(d.segment == Segment::ReceiverHost, "{from}: {}", show(d));
        if kernel_has_reason("VXLAN_VNI_NOT_FOUND") {
            ensure!(
                drop_reasons(d).iter().any(|r| r == "VXLAN_VNI_NOT_FOUND"),
                "{from}: {}",
                show(d)
            );
        } else {
            skip_check(format!(
                "{from}: the kernel has no drop reason VXLAN_VNI_NOT_FOUND to name"
            ));
        }
        ensure!(fix_of(d).contains("VNI mismatch"), "{from}: {:?}", d.fix);
    }
    Ok(())
}

#[test]
fn missing_fdb_entry_is_a_sender_host_loss() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::MissingFdb)?;
    let ab = direction(&v, "node-a")?;
    ensure!(ab.segment == Segment::SenderHost, "{}", show(ab));
    ensure!(
        !ab.flows.is_empty() && ab.flows.iter().all(|f| f.hops.underlay_egress == 0),
        "{}",
        show(ab)
    );
    ensure!(fix_of(ab).contains("no FDB entry"), "{:?}", ab.fix);
    ensure!(
        direction(&v, "node-b")?.segment == Segment::Delivered,
        "B→A must be healthy"
    );
    Ok(())
}

#[test]
fn mtu_black_hole_loses_only_full_size_frames_in_the_underlay() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = scenario(Fault::Mtu)?;
    let ab = direction(&v, "node-a")?;
    ensure!(ab.segment == Segment::Underlay, "{}", show(ab));
    ensure!(ab.delivered > 0, "small frames must pass: {}", show(ab));
    ensure!(fix_of(ab).contains("MTU"), "{:?}", ab.fix);
    Ok(())
}

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

#[test]
fn offline_recordings_join_to_the_same_verdict_and_tracer_loss_is_not_blamed_on_the_network()
-> Result<()> {
    preflight()?;
    let _g = serial();
    let (ra, rb) = (recording("verdict-a"), recording("verdict-b"));
    with_lab(Fault::UnderlayDrop.lab(), |lab| {
        Fault::UnderlayDrop.apply(lab)?;
        let (a, b) = (lab.node('a'), lab.node('b'));
        let (pa_, pb_) = (ra.to_str().context("path")?, rb.to_str().context("path")?);
        // A's tracer has a one-page ring buffer and is frozen during the
        // traffic: it must lose events, and say so.
        let mut pa = Proc::spawn(
            a,
            &[
                "--name",
                "node-a",
                "--port",
                "8475",
                "--record",
                pa_,
                "--ring-size",
                "4096",
                "--duration",
                "8s",
            ],
        )?;
        let mut pb = Proc::spawn(
            b,
            &[
                "--name",
                "node-b",
                "--port",
                "8475",
                "--record",
                pb_,
                "--duration",
                "8s",
            ],
        )?;
        pa.wait_stderr("Ctrl-C to stop", Duration::from_secs(30))?;
        pb.wait_stderr("Ctrl-C to stop", Duration::from_secs(30))?;
        pa.signal(libc::SIGSTOP);
        let _ = a.ping(IpAddr::V4(b.vtep_ip()), 30, Duration::from_millis(10));
        let _ = b.ping(IpAddr::V4(a.vtep_ip()), 5, Duration::from_millis(50));
        pa.signal(libc::SIGCONT);
        Proc::wait_both_ok(pa, pb)
    })?;
    let v = flannel_trace_tests::report::join(&ra, &rb)?;
    ensure!(
        v.nodes.first().is_some_and(|n| n.lost > 0),
        "A's tracer must have lost events: {}",
        show(&v.nodes)
    );
    ensure!(
        v.uncertain.iter().any(|u| u.contains("lost")),
        "{:?}",
        v.uncertain
    );
    for d in &v.directions {
        if d.segment != Segment::Delivered && d.segment != Segment::NoTraffic {
            ensure!(
                !d.certain,
                "a loss seen while a tracer lost events must be uncertain: {}",
                show(d)
            );
            ensure!(d.verdict.starts_with("UNCERTAIN"), "{}", d.verdict);
        }
    }
    // Damaged recordings: a clear error, no panic.
    let data = std::fs::read(&rb)?;
    let cut = recording("verdict-cut");
    std::fs::write(&cut, &data[..data.len() - 5])?;
    let out = std::process::Command::new(tracer_bin())
        .arg("join")
        .arg(&ra)
        .arg(&cut)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && err.contains("truncated"),
        "{:?} {err}",
        out.status
    );
    let mut bad = data.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&cut, &bad)?;
    let out = std::process::Command::new(tracer_bin())
        .arg("join")
        .arg(&ra)
        .arg(&cut)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && (err.contains("corrupt") || err.contains("truncated")),
        "{:?} {err}",
        out.status
    );
    ensure!(!err.contains("panicked"), "{err}");
    for p in [&ra, &rb, &cut] {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
