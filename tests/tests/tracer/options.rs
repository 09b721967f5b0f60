//! Options and user errors: only this namespace's traffic, the inner
//! filters, `--port`, a full ring buffer, and bad arguments.

use std::{
    net::{IpAddr, SocketAddr},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use flannel_trace_common::Hop;
use flannel_trace_tests::{
    Lab, Tracer, input_drop_udp, preflight,
    records::{inner_dst, inner_proto_is, inner_src, line, named},
    run_tracer, serial, with_lab,
};

use super::{INTERVAL, PORT, assert_clean, v4};

#[test]
fn traffic_of_other_namespaces_is_not_reported() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(3), |lab| {
        let (a, b, c) = (lab.node('a'), lab.node('b'), lab.node('c'));
        // The tracer runs on C; only A and B talk, through their own overlay.
        let tracer = Tracer::start(c, &[])?;
        b.nft(&input_drop_udp(PORT))?;
        let ok = a.ping(IpAddr::V4(b.vtep_ip()), 2, INTERVAL)?;
        ensure!(ok.received == 0, "{ok:?}");
        // C's own traffic proves the tracer is alive: it must be reported.
        let own = c.ping(IpAddr::V4(a.vtep_ip()), 2, INTERVAL)?;
        ensure!(own.all_received(), "{own:?}");
        thread::sleep(Duration::from_millis(300));
        let s = tracer.stop()?;
        let cv = v4(c.vtep_ip());
        ensure!(
            s.at(Hop::UnderlayEgress).count() == 2,
            "C's own requests must be seen\n{}",
            s.dump()
        );
        for e in &s.events {
            let mine = inner_src(e) == cv || inner_dst(e) == cv;
            ensure!(
                mine,
                "C must see none of A's and B's packets or drops: {}",
                line(e)
            );
        }
        Ok(())
    })
}

#[test]
fn inner_filters_and_port_override() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let listener = b.tcp_listen(8080)?;
        let tracer = Tracer::start(a, &["--proto", "tcp", "--host", &b.cni_ip().to_string()])?;
        a.ping(IpAddr::V4(b.vtep_ip()), 2, INTERVAL)?;
        a.tcp_connect(
            SocketAddr::new(IpAddr::V4(b.cni_ip()), 8080),
            Duration::from_secs(2),
        )?;
        listener.wait_for_connections(1, Duration::from_secs(2));
        thread::sleep(Duration::from_millis(300));
        let s = tracer.stop()?;
        ensure!(
            !s.events.is_empty(),
            "the TCP connection must be reported\n{}",
            s.dump()
        );
        for e in &s.events {
            ensure!(
                inner_proto_is(e, "tcp"),
                "filtered out by --proto: {}",
                line(e)
            );
            let pod = v4(b.cni_ip());
            ensure!(
                inner_src(e) == pod || inner_dst(e) == pod,
                "filtered out by --host: {}",
                line(e)
            );
        }
        // --port overrides the device: on 8472 the underlay shows nothing of
        // this overlay, while the overlay hops still see the inner frames.
        let tracer = Tracer::start(a, &["--port", "8472"])?;
        ensure!(
            tracer.start.port == 8472 && named(&tracer.start.port_source, "--port"),
            "{}",
            line(&tracer.start)
        );
        a.ping(IpAddr::V4(b.vtep_ip()), 2, INTERVAL)?;
        thread::sleep(Duration::from_millis(300));
        let s = tracer.stop()?;
        ensure!(
            s.at(Hop::UnderlayEgress).count() == 0 && s.at(Hop::UnderlayIngress).count() == 0,
            "{}",
            s.dump()
        );
        ensure!(s.at(Hop::OverlayEgress).count() >= 2, "{}", s.dump());
        Ok(())
    })
}

#[test]
fn a_full_ring_buffer_is_reported_as_the_tracers_own_loss() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        // One page holds about 24 records. Freeze the reader while 40 pings
        // (about 200 events) go by, so the buffer must overflow.
        let tracer = Tracer::start(a, &["--ring-size", "4096"])?;
        tracer.signal(libc::SIGSTOP);
        let ping = a.ping(IpAddr::V4(b.vtep_ip()), 40, Duration::from_millis(10));
        tracer.signal(libc::SIGCONT);
        ensure!(ping?.all_received(), "the overlay itself must be healthy");
        thread::sleep(Duration::from_millis(300));
        let s = tracer.stop()?;
        let summary = s.summary.as_ref().context("no summary")?;
        let lost = summary.lost;
        ensure!(lost > 0, "the overflow must be counted: {}", line(summary));
        ensure!(
            !summary.complete,
            "counts must be marked incomplete: {}",
            line(summary)
        );
        let reported = summary.events;
        ensure!(
            reported + lost >= 40 * 5,
            "events {reported} + lost {lost} must cover all 200 hop passes"
        );
        Ok(())
    })
}

#[test]
fn user_errors_have_clear_messages_and_exit_codes() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let a = lab.node('a');
        let (st, _, err) = run_tracer(a, &["--vxlan-dev", "flannel.9"])?;
        ensure!(
            st.code() == Some(4) && err.contains("no network interface named flannel.9"),
            "{st:?} {err}"
        );
        let (st, _, err) = run_tracer(a, &["--vxlan-dev", "eth1"])?;
        ensure!(
            st.code() == Some(4) && err.contains("not a vxlan device"),
            "{st:?} {err}"
        );
        let (st, _, err) = run_tracer(a, &["--port", "0"])?;
        ensure!(
            st.code() == Some(2) && err.contains("--port"),
            "{st:?} {err}"
        );
        let (st, _, err) = run_tracer(a, &["--iface", "nope0"])?;
        ensure!(
            st.code() == Some(4) && err.contains("nope0"),
            "{st:?} {err}"
        );
        // Without privileges: refused up front, before touching the kernel.
        let bin = flannel_trace_tests::tracer_bin();
        let bin = bin.to_str().context("path")?;
        let out = a.exec(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            bin,
        ])?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(3) && err.contains("needs root"),
            "{:?} {err}",
            out.status
        );
        assert_clean(lab)
    })
}
