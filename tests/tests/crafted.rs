//! Hostile packets: a corpus of crafted frames (cut, inconsistent, odd but
//! valid) put on the lab's wire with an AF_PACKET socket while the real
//! tracer runs on node b and real traffic crosses the overlay. For every
//! case: the traffic is unaffected, each reported field equals what was
//! sent, each undecodable frame to our port moves the tracer's own
//! `unparsed` counter by exactly one (read live from its map, and summed in
//! its summary), and the kernel's drop of such a frame is still reported,
//! flagged `undecodable`, with the outer tuple.

#[path = "crafted/cases.rs"]
mod cases;
#[path = "crafted/inner_cases.rs"]
mod inner_cases;
#[path = "crafted/odd_cases.rs"]
mod odd_cases;
#[path = "crafted/vlan.rs"]
mod vlan;

use std::{
    net::{IpAddr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use cases::{Case, Ends, Env, JUMBO_MTU, Outcome, Via, Want};
use flannel_trace::schema::event::{Endpoints, Event};
use flannel_trace_common::Hop;
use flannel_trace_tests::{
    Injector, Lab, Tracer, UNDERLAY_IFACE, VXLAN_IFACE, mac_of, parse_ping_summary, patience,
    preflight,
    records::{inner_dst, inner_src, is_hop, line, named},
    serial, unparsed_of, with_lab,
};

/// CLOCK_MONOTONIC, the clock of the events' `ts_mono_ns`.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Waits until the tracer's counter has moved by `want` (or time is up),
/// then a little longer, so that a second count would be seen too.
fn unparsed_delta(pid: i32, before: u64, want: u64) -> Result<u64> {
    let deadline = Instant::now() + patience(Duration::from_secs(3));
    while unparsed_of(pid)? < before + want && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    // Not scaled for slow guests: a frame sent on a veth or vxlan device is
    // processed before the send returns (the softirq runs on the sender's
    // way out), so a late second count would show within this, and the
    // next case would see it as its own and fail.
    thread::sleep(Duration::from_millis(150));
    Ok(unparsed_of(pid)? - before)
}

fn check_ends(v: &Endpoints, e: &Ends, what: &str) -> Result<()> {
    let v_ = line(v);
    ensure!(v.src == e.src, "{what} src: {v_}");
    ensure!(v.dst == e.dst, "{what} dst: {v_}");
    ensure!(named(&v.proto, e.proto), "{what} proto: {v_}");
    match e.sport {
        None => ensure!(v.sport.is_none(), "{what}: no sport expected: {v_}"),
        Some(None) => ensure!(v.sport.is_some(), "{what}: a sport expected: {v_}"),
        Some(Some(p)) => ensure!(v.sport == Some(p), "{what} sport {p}: {v_}"),
    }
    match e.dport {
        None => ensure!(v.dport.is_none(), "{what}: no dport expected: {v_}"),
        Some(p) => ensure!(v.dport == Some(p), "{what} dport {p}: {v_}"),
    }
    Ok(())
}

fn opt_eq<T: PartialEq + std::fmt::Debug>(
    ev: &Event,
    key: &str,
    got: Option<T>,
    want: Option<T>,
) -> Result<()> {
    ensure!(got == want, "{key} {want:?} expected: {}", line(ev));
    Ok(())
}

fn check_want(ev: &Event, w: &Want) -> Result<()> {
    let ev_ = line(ev);
    match (&w.outer, &ev.outer) {
        (None, None) => {}
        (None, Some(_)) => bail!("no outer expected: {ev_}"),
        (Some(_), None) => bail!("an outer header expected: {ev_}"),
        (Some(o), Some(got)) => check_ends(got, o, "outer")?,
    }
    opt_eq(ev, "vni", ev.vni, w.vni)?;
    opt_eq(ev, "vlan", ev.vlan, w.vlan)?;
    opt_eq(ev, "vlan_inner", ev.vlan_inner, w.vlan_inner)?;
    if let Some(len) = w.len {
        ensure!(ev.len == len, "len {len}: {ev_}");
    }
    ensure!(!ev.undecodable, "not undecodable: {ev_}");
    let inner = ev.inner.as_ref();
    if let Some(i) = &w.inner {
        let got = inner.with_context(|| format!("an inner packet expected: {ev_}"))?;
        check_ends(&got.endpoints, i, "inner")?;
    }
    if let Some(id) = w.ip_id {
        ensure!(inner.map(|i| i.ip_id) == Some(id), "ip_id {id}: {ev_}");
    }
    ensure!(
        inner.is_some_and(|i| i.fragment) == w.fragment,
        "fragment {}: {ev_}",
        w.fragment
    );
    let arp = inner.and_then(|i| i.arp.as_ref());
    match w.arp {
        None => ensure!(arp.is_none(), "no arp expected: {ev_}"),
        Some(op) => ensure!(arp.is_some_and(|a| named(&a.op, op)), "arp {op}: {ev_}"),
    }
    Ok(())
}

/// A kernel drop seen while a case ran must be of that case's frame.
fn check_drop(ev: &Event, outcome: &Outcome) -> Result<()> {
    let ev_ = line(ev);
    match outcome {
        Outcome::Reported(w) => {
            if let (Some(got), Some(o)) = (&ev.outer, &w.outer) {
                check_ends(got, o, "dropped outer")?;
            }
            if let Some(i) = &w.inner {
                let got = ev
                    .inner
                    .as_ref()
                    .with_context(|| format!("dropped: an inner packet expected: {ev_}"))?;
                check_ends(&got.endpoints, i, "dropped inner")?;
            }
            Ok(())
        }
        Outcome::Undecodable { outer, .. } => {
            ensure!(ev.undecodable, "drop not flagged undecodable: {ev_}");
            ensure!(ev.inner.is_none() && ev.vni.is_none(), "{ev_}");
            let got = ev
                .outer
                .as_ref()
                .with_context(|| format!("undecodable drop without its outer tuple: {ev_}"))?;
            check_ends(got, outer, "undecodable outer")
        }
        Outcome::Ignored => bail!("a drop was reported for a frame that is not ours: {ev_}"),
    }
}

/// The background ping and the lab's TCP check are pod-a/pod-b and
/// node traffic; the corpus uses other inner addresses.
fn background(ev: &Event, lab: &Lab) -> bool {
    let pods = [lab.node('a').pod_ip(), lab.node('b').pod_ip()].map(|p| Some(IpAddr::V4(p)));
    pods.contains(&inner_src(ev)) && pods.contains(&inner_dst(ev))
}

fn expected_count(o: &Outcome) -> u64 {
    u64::from(matches!(o, Outcome::Undecodable { .. }))
}

fn judge(case: &Case, window: (u64, u64), events: &[Event], lab: &Lab) -> Result<()> {
    let seen: Vec<&Event> = events
        .iter()
        .filter(|e| e.ts_mono_ns >= window.0 && e.ts_mono_ns <= window.1)
        .filter(|e| !background(e, lab))
        .collect();
    let ingress: Vec<&Event> = seen
        .iter()
        .copied()
        .filter(|e| is_hop(&e.hop, Hop::UnderlayIngress))
        .collect();
    let drops: Vec<&Event> = seen
        .iter()
        .copied()
        .filter(|e| is_hop(&e.hop, Hop::Drop))
        .collect();
    match &case.outcome {
        Outcome::Reported(w) => {
            ensure!(
                ingress.len() == 1,
                "one underlay-ingress event expected, got {ingress:?}"
            );
            check_want(ingress[0], w)?;
        }
        Outcome::Undecodable { dropped, .. } => {
            ensure!(
                ingress.is_empty(),
                "an undecodable frame has no event: {ingress:?}"
            );
            if *dropped {
                ensure!(
                    drops.len() == 1,
                    "one undecodable drop expected, got {drops:?}"
                );
            }
        }
        Outcome::Ignored => ensure!(ingress.is_empty(), "not ours, yet reported: {ingress:?}"),
    }
    for d in drops {
        check_drop(d, &case.outcome)?;
    }
    Ok(())
}

#[test]
fn crafted_frames_are_reported_as_sent_counted_once_and_harm_no_traffic() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let fabric_port = b.fabric_port();
        // The jumbo case needs the path to node b to carry 9000 bytes.
        let mtu = JUMBO_MTU.to_string();
        lab.fabric()
            .run(&["ip", "link", "set", &fabric_port, "mtu", &mtu])?;
        b.run(&["ip", "link", "set", UNDERLAY_IFACE, "mtu", &mtu])?;
        let env = Env {
            a_eth1: mac_of(a, UNDERLAY_IFACE)?,
            b_eth1: mac_of(b, UNDERLAY_IFACE)?,
            a_vtep: flannel_trace_tests::frames::mac(&a.vtep_mac()),
            b_vtep: flannel_trace_tests::frames::mac(&b.vtep_mac()),
            port: b.vxlan_port(),
        };
        let corpus = cases::all(&env);
        ensure!(corpus.len() >= 25, "{} cases", corpus.len());
        let wire = Injector::open(lab.fabric(), &fabric_port)?;
        let tunnel = Injector::open(a, VXLAN_IFACE)?;
        let listener = b.tcp_listen(8080)?;

        let tracer = Tracer::start(b, &[])?;
        let pid = tracer.pid();
        let pod_b = lab.node('b').pod_ip().to_string();
        let ping = a
            .pod()
            .spawn(&["ping", "-n", "-q", "-i", "0.05", "-W", "1", &pod_b])?;
        thread::sleep(Duration::from_millis(300));
        let mut windows = Vec::new();
        let mut failures = Vec::new();
        for case in &corpus {
            let t0 = mono_ns();
            let before = unparsed_of(pid)?;
            match case.via {
                Via::Underlay => wire.send(&case.frame)?,
                Via::Vxlan => tunnel.send(&case.frame)?,
            }
            let want = expected_count(&case.outcome);
            let got = unparsed_delta(pid, before, want)?;
            if got != want {
                failures.push(format!(
                    "{}: unparsed moved by {got}, not {want}",
                    case.name
                ));
            }
            windows.push((t0, mono_ns()));
        }
        // SAFETY: kill(2) on our own child; SIGINT makes ping print its summary.
        unsafe { libc::kill(ping.id() as i32, libc::SIGINT) };
        let out = ping.wait_with_output()?;
        let summary = parse_ping_summary(&String::from_utf8_lossy(&out.stdout))
            .context("background ping printed no summary")?;
        // One request may still be in flight when ping is interrupted.
        ensure!(
            summary.sent >= 20 && summary.received + 1 >= summary.sent,
            "the overlay lost traffic during the corpus: {summary:?}"
        );
        let dst = SocketAddr::new(IpAddr::V4(b.cni_ip()), 8080);
        a.tcp_connect(dst, Duration::from_secs(2))
            .context("TCP across the overlay after the corpus")?;
        ensure!(listener.wait_for_connections(1, Duration::from_secs(2)) == 1);
        let s = tracer.stop()?;
        ensure!(s.status.success(), "tracer failed:\n{}", s.dump());

        for (case, w) in corpus.iter().zip(&windows) {
            if let Err(e) = judge(case, *w, &s.events, lab) {
                failures.push(format!("{}: {e:#}", case.name));
            }
        }
        let total: u64 = corpus.iter().map(|c| expected_count(&c.outcome)).sum();
        let summary = s.summary.as_ref().context("no summary")?;
        if summary.unparsed != total {
            failures.push(format!(
                "summary unparsed {} , not {total}",
                summary.unparsed
            ));
        }
        ensure!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            corpus.len(),
            failures.join("\n")
        );
        eprintln!(
            "crafted corpus: {} cases, {total} undecodable",
            corpus.len()
        );
        Ok(())
    })
}
