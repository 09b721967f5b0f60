//! Counters mode (`--stats`) on the real kernel: per-peer, per-hop counts
//! from the programs' maps, the joined verdict of two nodes' counters for
//! the incident and a FORWARD drop, and the Prometheus endpoint.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use flannel_trace::{CounterSnapshot, CounterVerdict, Segment};
use flannel_trace_common::Hop;
use flannel_trace_tests::{
    Lab, preflight,
    records::{Output, is_hop, line},
    scenario::{Fault, PORT, Proc, TOKEN, pod_ping},
    serial, with_lab,
};

/// Packets at `hop` from/to `remote` in a `stats` record.
fn count(stats: &CounterSnapshot, hop: Hop, remote: IpAddr) -> u64 {
    stats
        .rows
        .iter()
        .filter(|r| is_hop(&r.hop, hop) && r.remote == Some(remote))
        .map(|r| r.packets)
        .sum()
}

#[test]
fn counters_count_every_hop_per_peer_without_events() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let port = PORT.to_string();
        let mut p = Proc::spawn(
            a,
            &[
                "--port",
                &port,
                "--stats",
                "--json",
                "--report-every",
                "500ms",
                "--duration",
                "4s",
            ],
        )?;
        p.wait_stderr("counting (counters mode)", Duration::from_secs(60))?;
        pod_ping(a, b, 20);
        let run = p.wait(Duration::from_secs(30))?;
        ensure!(run.status.success(), "{}\n{}", run.status, run.stderr);
        let out = Output::parse(&run.stdout)?;
        ensure!(
            out.events().next().is_none(),
            "counters mode must not stream events"
        );
        let last = out.stats().last().context("no stats record")?;
        let (pb, ub) = (IpAddr::V4(b.pod_ip()), IpAddr::V4(b.underlay_ip()));
        for (hop, remote) in [
            (Hop::PodIngress, pb),
            (Hop::OverlayEgress, pb),
            (Hop::UnderlayEgress, ub),
            (Hop::UnderlayIngress, ub),
            (Hop::VxlanRcv, ub),
            (Hop::OverlayIngress, pb),
            (Hop::PodEgress, pb),
        ] {
            let n = count(last, hop, remote);
            ensure!(
                n >= 20,
                "{} {remote}: {n} packets: {}",
                hop.name(),
                line(last)
            );
        }
        Ok(())
    })
}

/// Listener on A, peer on B, both in counters mode; pings pod A → pod B.
fn live_counters(fault: Fault) -> Result<Vec<CounterVerdict>> {
    let mut verdict = None;
    with_lab(fault.lab(), |lab| {
        fault.apply(lab)?;
        let (a, b) = (lab.node('a'), lab.node('b'));
        let listen = format!("{}:7800", a.underlay_ip());
        let port = PORT.to_string();
        let common = [
            "--port",
            &port,
            "--stats",
            "--json",
            "--token",
            TOKEN,
            "--report-every",
            "1s",
        ];
        let mut pa = Proc::spawn(
            a,
            &[
                &common[..],
                &["--name", "node-a", "--listen", &listen, "--duration", "60s"],
            ]
            .concat(),
        )?;
        pa.wait_stderr("waiting for a peer", Duration::from_secs(30))?;
        let pb = Proc::spawn(
            b,
            &[
                &common[..],
                &["--name", "node-b", "--peer", &listen, "--duration", "5s"],
            ]
            .concat(),
        )?;
        pa.wait_stderr("joined with", Duration::from_secs(30))?;
        std::thread::sleep(Duration::from_millis(300));
        pod_ping(a, b, 30);
        pod_ping(b, a, 30);
        let rb = pb.wait(Duration::from_secs(40))?;
        ensure!(rb.status.success(), "peer: {}\n{}", rb.status, rb.stderr);
        let ra = pa.wait(Duration::from_secs(40))?;
        ensure!(
            ra.status.success(),
            "listener: {}\n{}",
            ra.status,
            ra.stderr
        );
        verdict = Output::parse(&ra.stdout)?
            .stats_verdict()
            .map(<[_]>::to_vec);
        Ok(())
    })?;
    verdict.context("no joined counters verdict")
}

fn dir<'a>(v: &'a [CounterVerdict], from: &str) -> Result<&'a CounterVerdict> {
    v.iter()
        .find(|d| d.from == from)
        .with_context(|| format!("no direction from {from}: {}", line(&v)))
}

#[test]
fn joined_counters_blame_the_underlay_in_the_incident() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = live_counters(Fault::UnderlayDrop)?;
    let ba = dir(&v, "node-b")?;
    ensure!(ba.segment == Segment::Underlay, "{}", line(ba));
    ensure!(ba.path.left >= 30 && ba.path.reached == 0, "{}", line(ba));
    ensure!(
        ba.fix.as_deref().unwrap_or_default().contains("UDP 8475"),
        "{}",
        line(ba)
    );
    let ab = dir(&v, "node-a")?;
    ensure!(ab.segment == Segment::Delivered, "{}", line(ab));
    Ok(())
}

#[test]
fn joined_counters_find_a_forward_drop_on_the_receiver() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = live_counters(Fault::ForwardDropReceiver)?;
    let ab = dir(&v, "node-a")?;
    ensure!(ab.segment == Segment::ReceiverHost, "{}", line(ab));
    ensure!(
        ab.path.out_of_tunnel_pods >= 30 && ab.path.to_pods == 0,
        "{}",
        line(ab)
    );
    // The receiver's drops, counted from the drop hook's records, are named.
    ensure!(
        ab.verdict.contains(" × "),
        "no drop counted on the receiver: {}",
        line(ab)
    );
    Ok(())
}

#[test]
fn prometheus_endpoint_serves_the_counters() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let port = PORT.to_string();
        let addr: SocketAddr = "127.0.0.1:9475".parse()?;
        let mut p = Proc::spawn(
            a,
            &[
                "--port",
                &port,
                "--stats",
                "--metrics",
                "127.0.0.1:9475",
                "--report-every",
                "300ms",
                "--duration",
                "5s",
                "--name",
                "node-a",
            ],
        )?;
        p.wait_stderr("Prometheus metrics on", Duration::from_secs(30))?;
        pod_ping(a, b, 10);
        std::thread::sleep(Duration::from_millis(800));
        let body = a.in_thread(|| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })?;
        let _ = p.wait(Duration::from_secs(30))?;
        ensure!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        let want = format!(
            "flannel_trace_packets_total{{node=\"node-a\",hop=\"underlay-egress\",iface=\"eth1\",remote=\"{}\",reason=\"\"}}",
            b.underlay_ip()
        );
        let line = body
            .lines()
            .find(|l| l.starts_with(&want))
            .with_context(|| format!("{want} missing:\n{body}"))?;
        let n: u64 = line.rsplit(' ').next().unwrap_or("0").parse()?;
        ensure!(n >= 10, "{line}");
        Ok(())
    })
}
