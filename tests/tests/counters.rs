//! Counters mode (`--stats`) on the real kernel: per-peer, per-hop counts
//! from the programs' maps, the joined verdict of two nodes' counters for
//! the incident and a FORWARD drop, and the Prometheus endpoint.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use flannel_trace_tests::{
    Lab, preflight,
    scenario::{Fault, PORT, Proc, TOKEN, pod_ping},
    serial, with_lab,
};
use serde_json::Value;

fn records<'a>(stdout: &'a str, ty: &'a str) -> impl Iterator<Item = Value> + 'a {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(move |v| v["type"] == ty)
}

/// Packets at `hop` from/to `remote` in a `stats` record.
fn count(stats: &Value, hop: &str, remote: &str) -> u64 {
    stats["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["hop"] == hop && r["remote"] == remote)
        .filter_map(|r| r["packets"].as_u64())
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
        ensure!(
            records(&run.stdout, "event").next().is_none(),
            "counters mode must not stream events"
        );
        let last = records(&run.stdout, "stats")
            .last()
            .context("no stats record")?;
        let (pb, ub) = (b.pod_ip().to_string(), b.underlay_ip().to_string());
        for (hop, remote) in [
            ("pod-ingress", &pb),
            ("overlay-egress", &pb),
            ("underlay-egress", &ub),
            ("underlay-ingress", &ub),
            ("vxlan-rcv", &ub),
            ("overlay-ingress", &pb),
            ("pod-egress", &pb),
        ] {
            let n = count(&last, hop, remote);
            ensure!(n >= 20, "{hop} {remote}: {n} packets: {last}");
        }
        Ok(())
    })
}

/// Listener on A, peer on B, both in counters mode; pings pod A → pod B.
fn live_counters(fault: Fault) -> Result<Value> {
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
        verdict = records(&ra.stdout, "stats_verdict").last();
        Ok(())
    })?;
    verdict.context("no joined counters verdict")
}

fn dir<'a>(v: &'a Value, from: &str) -> Result<&'a Value> {
    v["directions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["from"] == from))
        .with_context(|| format!("no direction from {from}: {v}"))
}

#[test]
fn joined_counters_blame_the_underlay_in_the_incident() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = live_counters(Fault::UnderlayDrop)?;
    let ba = dir(&v, "node-b")?;
    ensure!(ba["segment"] == "underlay", "{ba}");
    ensure!(
        ba["path"]["left"].as_u64() >= Some(30) && ba["path"]["reached"] == 0,
        "{ba}"
    );
    ensure!(
        ba["fix"].as_str().unwrap_or_default().contains("UDP 8475"),
        "{ba}"
    );
    let ab = dir(&v, "node-a")?;
    ensure!(ab["segment"] == "delivered", "{ab}");
    Ok(())
}

#[test]
fn joined_counters_find_a_forward_drop_on_the_receiver() -> Result<()> {
    preflight()?;
    let _g = serial();
    let v = live_counters(Fault::ForwardDropReceiver)?;
    let ab = dir(&v, "node-a")?;
    ensure!(ab["segment"] == "receiver-host", "{ab}");
    ensure!(
        ab["path"]["out_of_tunnel_pods"].as_u64() >= Some(30) && ab["path"]["to_pods"] == 0,
        "{ab}"
    );
    // The receiver's drops, counted from the drop hook's records, are named.
    ensure!(
        ab["verdict"].as_str().is_some_and(|v| v.contains(" × ")),
        "no drop counted on the receiver: {ab}"
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
