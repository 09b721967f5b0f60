//! Smoke tests of the lab itself against the real kernel: the overlay
//! carries traffic when healthy, and each injected fault drops exactly what
//! it should. They need root (`sudo -E cargo xtask test`).
//!
//! Every test goes through `with_lab`, which asserts afterwards that none
//! of the lab's namespaces remain, whether the test passed or not.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use flannel_trace_tests::{
    DEFAULT_VXLAN_PORT, FABRIC_DROP_CHAIN, FT_TABLE, INPUT_DROP_CHAIN, Lab, Node, NodeSpec,
    PingResult, VXLAN_IFACE, fabric_drop_udp, input_drop_udp, list_netns, parse_ping_summary,
    preflight, remove_stale_namespaces, root_veths, wait_for_line, with_lab,
};

use flannel_trace_tests::fixtures::{PING_INTERVAL as INTERVAL, PINGS};
const TCP_TIMEOUT: Duration = Duration::from_secs(2);
const ECHO_PORT: u16 = 8080;

fn ping(from: &Node, to: impl Into<IpAddr>) -> Result<PingResult> {
    from.ping(to.into(), PINGS, INTERVAL)
}

fn ensure_all_received(result: PingResult, what: &str) -> Result<()> {
    ensure!(result.all_received(), "{what}: {result:?}");
    Ok(())
}

#[test]
fn ping_crosses_the_overlay() -> Result<()> {
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        ensure_all_received(ping(a, b.vtep_ip())?, "a -> b flannel.1")?;
        let pods = a.ping_from(a.cni_ip().into(), b.cni_ip().into(), PINGS, INTERVAL)?;
        ensure_all_received(pods, "a cni0 -> b cni0")?;
        ensure_all_received(ping(b, a.cni_ip())?, "b -> a cni0")
    })
}

#[test]
fn pod_to_pod_crosses_both_nodes_and_the_overlay() -> Result<()> {
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let there = a.pod().ping(b.pod_ip().into(), PINGS, INTERVAL)?;
        ensure_all_received(there, "pod a -> pod b")?;
        let back = b.pod().ping(a.pod_ip().into(), PINGS, INTERVAL)?;
        ensure_all_received(back, "pod b -> pod a")?;
        // Routed by the nodes, not switched: the pod's packets went through
        // cni0 into a's stack and out of flannel.1.
        let tx = a.link_stats("flannel.1")?.tx_packets;
        ensure!(
            tx >= u64::from(PINGS),
            "flannel.1 on a sent only {tx} packets"
        );
        Ok(())
    })
}

#[test]
fn tcp_crosses_the_overlay() -> Result<()> {
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let listener = b.tcp_listen(ECHO_PORT)?;
        let server = SocketAddr::from((b.cni_ip(), ECHO_PORT));
        a.tcp_connect(server, TCP_TIMEOUT)?;
        let reply = a.tcp_echo(server, b"hello over vxlan", TCP_TIMEOUT)?;
        ensure!(reply == b"hello over vxlan", "echo came back as {reply:?}");
        let served = listener.wait_for_connections(2, TCP_TIMEOUT);
        ensure!(
            served == 2,
            "listener served {served} connections, expected 2"
        );
        ensure!(listener.received()[1] == b"hello over vxlan");
        Ok(())
    })
}

#[test]
fn udp_crosses_the_overlay() -> Result<()> {
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        // A socket keeps the namespace it was created in, so b's socket can
        // be read from this thread.
        let server = SocketAddr::from((b.cni_ip(), 9999));
        let socket = b.in_thread(|| UdpSocket::bind(server))?;
        socket.set_read_timeout(Some(TCP_TIMEOUT))?;
        let from = SocketAddr::from((a.cni_ip(), 7777));
        a.udp_send_from(from, server, b"datagram")?;
        let mut buf = [0u8; 64];
        let (n, peer) = socket.recv_from(&mut buf)?;
        ensure!(
            &buf[..n] == b"datagram" && peer == from,
            "got {n} bytes from {peer}"
        );
        a.udp_send(server, b"again")?;
        let (n, _) = socket.recv_from(&mut buf)?;
        ensure!(&buf[..n] == b"again");
        Ok(())
    })
}

#[test]
fn fabric_rule_drops_vxlan_from_b_to_a_only() -> Result<()> {
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        ensure_all_received(ping(a, b.vtep_ip())?, "baseline a -> b")?;

        let rule = fabric_drop_udp(b.underlay_ip(), a.underlay_ip(), DEFAULT_VXLAN_PORT);
        lab.fabric().nft(&rule)?;

        // Requests still reach b and b answers; the encapsulated replies
        // die in the fabric, so nothing comes out of a's VTEP.
        let (a_before, b_before) = (a.link_stats(VXLAN_IFACE)?, b.link_stats(VXLAN_IFACE)?);
        let lost = ping(a, b.vtep_ip())?;
        ensure!(
            lost.sent == PINGS && lost.received == 0,
            "replies got through: {lost:?}"
        );
        let (a_after, b_after) = (a.link_stats(VXLAN_IFACE)?, b.link_stats(VXLAN_IFACE)?);
        let pings = u64::from(PINGS);
        ensure!(
            b_after.rx_packets - b_before.rx_packets >= pings,
            "b got no requests"
        );
        ensure!(
            b_after.tx_packets - b_before.tx_packets >= pings,
            "b sent no replies"
        );
        ensure!(
            a_after.rx_packets == a_before.rx_packets,
            "a's VTEP received something"
        );
        let dropped = lab
            .fabric()
            .nft_packets("bridge", FT_TABLE, FABRIC_DROP_CHAIN)?;
        ensure!(
            dropped >= u64::from(PINGS),
            "bridge rule counted {dropped} drops"
        );
        // The underlay itself (ICMP, not VXLAN) is untouched.
        ensure_all_received(ping(b, a.underlay_ip())?, "b -> a underlay")
    })
}

#[test]
fn receiver_firewall_drops_vxlan() -> Result<()> {
    preflight()?;
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        // One-line form on purpose: nft 1.0.6 needs the lab's normalization.
        b.nft(
            "table inet ft { chain input { type filter hook input priority 0; udp dport 8475 drop; } }",
        )?;
        let lost = ping(a, b.vtep_ip())?;
        ensure!(
            lost.received == 0,
            "a -> b got through b's firewall: {lost:?}"
        );
        // Same drop with a counter, to show the rule is what ate the frames.
        b.nft(&format!(
            "flush ruleset\n{}",
            input_drop_udp(DEFAULT_VXLAN_PORT)
        ))?;
        ping(a, b.vtep_ip())?;
        let dropped = b.nft_packets("inet", FT_TABLE, INPUT_DROP_CHAIN)?;
        ensure!(
            dropped >= u64::from(PINGS),
            "input rule counted {dropped} drops"
        );
        ensure_all_received(ping(a, b.underlay_ip())?, "a -> b underlay")
    })
}

#[test]
fn vxlan_port_mismatch_breaks_the_overlay() -> Result<()> {
    preflight()?;
    let lab = Lab::builder()
        .node(NodeSpec::new())
        .node(NodeSpec::new().vxlan_port(4789));
    with_lab(lab, |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        ensure!(b.vxlan_port() == 4789);
        let lost = ping(a, b.vtep_ip())?;
        ensure!(lost.received == 0, "mismatched ports still talk: {lost:?}");
        Ok(())
    })
}

#[test]
fn vni_mismatch_breaks_the_overlay() -> Result<()> {
    preflight()?;
    let lab = Lab::builder()
        .node(NodeSpec::new().vni(2))
        .node(NodeSpec::new());
    with_lab(lab, |lab| {
        let lost = ping(lab.node('a'), lab.node('b').vtep_ip())?;
        ensure!(lost.received == 0, "mismatched VNIs still talk: {lost:?}");
        Ok(())
    })
}

#[test]
fn missing_fdb_entry_breaks_one_path() -> Result<()> {
    preflight()?;
    let lab = Lab::builder()
        .node(NodeSpec::new().skip_fdb_to('b'))
        .node(NodeSpec::new())
        .node(NodeSpec::new());
    with_lab(lab, |lab| {
        let (a, b, c) = (lab.node('a'), lab.node('b'), lab.node('c'));
        let lost = ping(a, b.vtep_ip())?;
        ensure!(
            lost.received == 0,
            "a reached b without an FDB entry: {lost:?}"
        );
        ensure_all_received(ping(a, c.vtep_ip())?, "a -> c")
    })
}

#[test]
fn small_fabric_mtu_black_holes_full_size_frames() -> Result<()> {
    preflight()?;
    let lab = Lab::builder()
        .node(NodeSpec::new())
        .node(NodeSpec::new().fabric_mtu(1400));
    with_lab(lab, |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        ensure_all_received(ping(a, b.vtep_ip())?, "small pings")?;
        // 1400 bytes of ICMP payload fit flannel.1's 1450 MTU but, once
        // encapsulated, not b's 1400-byte fabric port.
        let dst = b.vtep_ip().to_string();
        let big = a.exec(&[
            "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", "-s", "1400", "-M", "do", &dst,
        ])?;
        let big = parse_ping_summary(&String::from_utf8_lossy(&big.stdout))
            .context("no summary from the large ping")?;
        ensure!(
            big.received == 0,
            "large frames crossed a 1400 MTU port: {big:?}"
        );
        Ok(())
    })
}

#[test]
fn three_node_full_mesh() -> Result<()> {
    preflight()?;
    with_lab(Lab::builder().nodes(3), |lab| {
        let hosts: Vec<u8> = lab
            .nodes()
            .iter()
            .map(|n| n.underlay_ip().octets()[3])
            .collect();
        ensure!(hosts == [51, 55, 52], "underlay addresses {hosts:?}");
        for from in lab.nodes() {
            for to in lab.nodes().iter().filter(|to| to.role() != from.role()) {
                let what = format!("{} -> {}", from.role(), to.role());
                ensure_all_received(ping(from, to.cni_ip())?, &what)?;
            }
        }
        Ok(())
    })
}

#[test]
fn spawned_program_runs_in_the_node_and_dies_with_the_lab() -> Result<()> {
    preflight()?;
    let lab = Lab::two_nodes()?;
    let a = lab.node('a');
    let vtep = a.vtep_ip().to_string();
    let mut child = a.spawn(&[
        "sh",
        "-c",
        "ip -o -4 addr show dev flannel.1; exec sleep 600",
    ])?;
    let stdout = child.stdout.take().context("stdout was not piped")?;
    let (line, _reader) = wait_for_line(stdout, |l| l.contains(&vtep), Duration::from_secs(5))?;
    ensure!(line.contains("flannel.1"), "{line}");

    let names = lab.netns_names();
    lab.cleanup()?;
    // Teardown SIGKILLs what still runs in the lab, so this returns at once.
    let status = child.wait()?;
    ensure!(!status.success(), "sleep 600 ended by itself: {status}");
    let left: Vec<String> = list_netns()?
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    ensure!(left.is_empty(), "namespaces left: {left:?}");
    Ok(())
}

#[test]
fn namespaces_are_removed_when_a_test_panics() -> Result<()> {
    preflight()?;
    let names = Mutex::new(Vec::new());
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        with_lab(Lab::builder().nodes(2), |lab| {
            *names.lock().unwrap() = lab.netns_names();
            panic!("deliberate failure inside a lab test");
        })
    }));
    ensure!(outcome.is_err(), "the panic was swallowed");
    let names = names.into_inner().unwrap();
    ensure!(names.len() == 5, "lab had namespaces {names:?}");
    let left: Vec<String> = list_netns()?
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    ensure!(left.is_empty(), "namespaces left after a panic: {left:?}");

    // Without with_lab, unwinding drops the Lab, and Drop cleans up.
    let names = Mutex::new(Vec::new());
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::two_nodes().expect("building the lab");
        *names.lock().unwrap() = lab.netns_names();
        panic!("deliberate failure holding a lab");
    }));
    ensure!(outcome.is_err(), "the panic was swallowed");
    let names = names.into_inner().unwrap();
    let left: Vec<String> = list_netns()?
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    ensure!(left.is_empty(), "namespaces left after unwinding: {left:?}");
    Ok(())
}

#[test]
fn dropping_a_lab_removes_it_and_reports_timings() -> Result<()> {
    preflight()?;
    let start = Instant::now();
    let lab = Lab::two_nodes()?;
    let built = start.elapsed();
    let names = lab.netns_names();
    let start = Instant::now();
    drop(lab);
    let dropped = start.elapsed();
    eprintln!("2-node lab: built in {built:?}, torn down in {dropped:?}");
    let left: Vec<String> = list_netns()?
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    ensure!(left.is_empty(), "namespaces left after drop: {left:?}");
    let veths: Vec<String> = root_veths()?
        .into_iter()
        .filter(|n| n.starts_with("ftv-"))
        .collect();
    ensure!(veths.is_empty(), "veths in the root namespace: {veths:?}");
    Ok(())
}

#[test]
fn stale_namespaces_of_dead_processes_are_removed() -> Result<()> {
    preflight()?;
    // No process can have pid `pid_max`, so this imitates a killed run.
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")?;
    let name = format!("ft-{}-{}-stale", pid_max.trim(), std::process::id());
    let added = Command::new("ip").args(["netns", "add", &name]).status()?;
    ensure!(added.success(), "ip netns add {name}: {added}");
    remove_stale_namespaces()?;
    let left = list_netns()?.contains(&name);
    if left {
        // Do not leak it even though the test failed.
        Command::new("ip").args(["netns", "del", &name]).status()?;
    }
    ensure!(!left, "{name} survived remove_stale_namespaces");
    Ok(())
}
