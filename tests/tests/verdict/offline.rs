//! Recordings joined offline: a tracer's own loss is not blamed on the
//! network, and damaged recordings are clear errors.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, Result, ensure};
use flannel_trace::Segment;
use flannel_trace_tests::{
    fixtures::recording,
    preflight,
    report::show,
    scenario::{Fault, Proc},
    serial, tracer_bin, with_lab,
};

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
