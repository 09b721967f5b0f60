//! The live channel under a link slower than the peer's event rate, on the
//! real kernel: the fabric's port towards the listener is throttled with a
//! token bucket (`tc … tbf rate 1mbit`), so the peer's stream backs up
//! under a UDP flood through the overlay, while the incident's underlay
//! drop (UDP 8475 from B to A) is in place. The peer must thin its live
//! stream by hash, say so, and the listener's verdict must still name the
//! underlay for B→A, report the thinning and not be uncertain for it.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use flannel_trace::Segment;
use flannel_trace_tests::{
    Lab, preflight,
    report::{direction, show, verdict},
    scenario::{Fault, Live, run_live},
    serial, with_lab,
};

const FLOOD_PORT: u16 = 9200;
/// Packets a second of the flood, and for how long: the peer sees four
/// events a packet (underlay-ingress to pod-egress), several times what a
/// 1 Mbit/s link carries, and far below what the tracer itself keeps up
/// with (so that its ring buffer loses nothing and only the link is slow).
const FLOOD_PPS: u64 = 6_000;
const FLOOD_FOR: Duration = Duration::from_secs(4);

#[test]
fn a_slow_peer_link_thins_the_live_stream_and_the_verdict_stays_decisive() -> Result<()> {
    preflight()?;
    let _g = serial();
    let fault = Fault::UnderlayDrop;
    with_lab(fault.lab(), |lab| {
        fault.apply(lab)?;
        let a = lab.node('a');
        // B → A leaves the fabric by A's port: the peer channel (B's
        // overlay frames to A are dropped before, by the fault).
        let port_a = a.fabric_port();
        let tbf = [
            "tc", "qdisc", "add", "dev", &port_a, "root", "tbf", "rate", "1mbit", "burst", "4kb",
            "latency", "400ms",
        ];
        lab.fabric()
            .run(&tbf)
            .context("a token-bucket qdisc (sch_tbf) is needed to slow the peer link")?;

        let live = Live {
            duration: Duration::from_secs(12),
            pod_pings: 5,
            traffic: Some(flood),
            ..Live::default()
        };
        let run = run_live(lab, &live)?;
        lab.fabric()
            .run(&["tc", "qdisc", "del", "dev", &port_a, "root"])?;
        let (ra, rb, sent) = (run.a, run.b, run.traffic);
        ensure!(rb.status.success(), "peer: {}\n{}", rb.status, rb.stderr);
        ensure!(
            ra.status.success(),
            "listener: {}\n{}",
            ra.status,
            ra.stderr
        );

        // Said, once per step, on both sides.
        ensure!(
            rb.stderr.contains("the peer link cannot keep up (")
                && rb.stderr.contains("the live stream now carries 1 in ")
                && rb
                    .stderr
                    .contains("chosen by hash on both nodes; the recording keeps every event"),
            "the peer must say it thins its stream:\n{}",
            rb.stderr
        );
        ensure!(
            !rb.stderr.contains("could not be sent"),
            "thinning must leave nothing unsent:\n{}",
            rb.stderr
        );
        ensure!(
            ra.stderr.contains("its live stream carries 1 in"),
            "the listener must say the peer thinned:\n{}",
            ra.stderr
        );

        let v = verdict(&ra.stdout)?;
        let rate = v
            .thinned
            .iter()
            .filter(|s| s.node == "node-b")
            .map(|s| s.rate)
            .max()
            .unwrap_or(0);
        ensure!(rate > 1, "thinning steps: {:?}", v.thinned);
        ensure!(
            v.uncertain.is_empty(),
            "thinning must not make the verdict uncertain: {:?}",
            v.uncertain
        );

        // The fault, found and placed as without thinning.
        let ba = direction(&v, "node-b")?;
        ensure!(
            ba.segment == Segment::Underlay && ba.certain && ba.delivered == 0,
            "{}",
            show(ba)
        );
        let ab = direction(&v, "node-a")?;
        ensure!(
            ab.segment == Segment::Delivered && ab.certain,
            "{}",
            show(ab)
        );
        // The flood's count is an estimate now (N × the packets kept, by
        // hash of the IP identification): close to what was sent.
        let flow = ab
            .flows
            .iter()
            .find(|f| f.dport == Some(FLOOD_PORT))
            .with_context(|| format!("no flood flow: {}", show(ab)))?;
        let est = flow.sent;
        eprintln!(
            "thinning steps {:?}; flood: {sent} sent, {est} estimated; peer said:\n{}",
            v.thinned,
            rb.stderr
                .lines()
                .filter(|l| l.contains("keep up") || l.contains("thinned"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        ensure!(
            est.abs_diff(sent) * 4 < sent,
            "estimated {est} flood packets, {sent} were sent: {}",
            show(flow)
        );
        Ok(())
    })
}

/// 64-byte UDP, pod A → pod B, paced at [`FLOOD_PPS`] for [`FLOOD_FOR`];
/// returns how many were sent.
fn flood(lab: &Lab) -> Result<u64> {
    let (a, b) = (lab.node('a'), lab.node('b'));
    let dst = SocketAddr::from((b.pod_ip(), FLOOD_PORT));
    let sink = b.pod().in_thread(|| UdpSocket::bind(dst))?;
    sink.set_read_timeout(Some(Duration::from_millis(100)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let _ = sink.recv(&mut buf);
            }
        })
    };
    let src = a.pod().in_thread(|| UdpSocket::bind("0.0.0.0:0"))?;
    let payload = [0x5au8; 64];
    let began = Instant::now();
    let mut sent = 0u64;
    while began.elapsed() < FLOOD_FOR {
        let due = (began.elapsed().as_secs_f64() * FLOOD_PPS as f64) as u64;
        while sent < due {
            if src.send_to(&payload, dst).is_ok() {
                sent += 1;
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    // Let the last ones arrive before the sink goes.
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    Ok(sent)
}
