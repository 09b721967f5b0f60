//! flannel-trace against the real kernel: real namespaces, real vxlan, real
//! eBPF. Each test builds a flannel-style lab (port 8475, VNI 1), runs the
//! release binary inside one node, sends real traffic and checks what the
//! tracer reported — and that it left nothing behind.
//!
//! The tests are serialised: they check the kernel's global list of loaded
//! programs for leftovers, which a concurrent tracer would disturb.

use std::{
    collections::HashSet,
    ffi::CString,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use aya::programs::{SchedClassifier, TcAttachType, loaded_programs};
use flannel_trace_tests::{
    Kernel, Lab, POD_IFACE, Session, Tracer, VXLAN_IFACE, input_drop_udp, patience, preflight,
    run_tracer, serial, tracer_bin, with_lab,
};
use serde_json::Value;

const PORT: u16 = 8475;
const PINGS: u32 = 3;
const INTERVAL: Duration = Duration::from_millis(200);

/// Programs of ours still loaded anywhere in the kernel. Freeing is
/// asynchronous (RCU), so give the kernel a moment.
fn leftover_programs() -> Vec<String> {
    let deadline = Instant::now() + patience(Duration::from_secs(5));
    loop {
        let names: Vec<String> = loaded_programs()
            .filter_map(|p| p.ok())
            .filter_map(|p| p.name_as_str().map(str::to_owned))
            .filter(|n| n.starts_with("ft_"))
            .collect();
        if names.is_empty() || Instant::now() > deadline {
            return names;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// TCX programs and clsact qdiscs on a node's interfaces. Before 6.6 there
/// is no TCX (nor its query), so no TCX program either.
fn tc_state(node: &flannel_trace_tests::Netns, iface: &str) -> Result<(usize, bool)> {
    let name = CString::new(iface)?;
    if !Kernel::running().has_tcx() {
        let qdiscs = node.run(&["tc", "qdisc", "show", "dev", iface])?;
        return Ok((0, qdiscs.contains("clsact")));
    }
    let tcx = node.in_thread(|| {
        let mut n = 0;
        for dir in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, progs) =
                SchedClassifier::query_tcx(name.as_c_str(), dir).map_err(std::io::Error::other)?;
            n += progs.len();
        }
        Ok(n)
    })?;
    let qdiscs = node.run(&["tc", "qdisc", "show", "dev", iface])?;
    Ok((tcx, qdiscs.contains("clsact")))
}

/// The devices the tracer hooks on a lab node: the underlay NIC, the vxlan
/// device and the pods' bridge.
const HOOKED: [&str; 3] = ["eth1", VXLAN_IFACE, POD_IFACE];

/// Our netlink TC filters (`ft_*` programs) on a node's hooked devices.
fn our_filters(node: &flannel_trace_tests::Netns) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for iface in HOOKED {
        for dir in ["ingress", "egress"] {
            let out = node.exec(&["tc", "filter", "show", "dev", iface, dir])?;
            let text = String::from_utf8_lossy(&out.stdout);
            found.extend(
                text.split_whitespace()
                    .filter(|w| w.starts_with("ft_"))
                    .map(|w| format!("{iface} {dir} {w}")),
            );
        }
    }
    // tc may print a filter's program name twice (filter name and prog info).
    found.sort();
    found.dedup();
    Ok(found)
}

fn assert_clean(lab: &Lab) -> Result<()> {
    for node in lab.nodes() {
        for iface in HOOKED {
            let (tcx, clsact) = tc_state(node, iface)?;
            ensure!(
                tcx == 0,
                "{} {iface}: {tcx} TCX program(s) left attached",
                node.name()
            );
            ensure!(
                !clsact,
                "{} {iface}: a clsact qdisc was left behind",
                node.name()
            );
        }
    }
    let left = leftover_programs();
    ensure!(
        left.is_empty(),
        "programs still loaded after the tracer exited: {left:?}"
    );
    Ok(())
}

fn ip(v: &Value) -> Option<Ipv4Addr> {
    v.as_str()?.parse().ok()
}

fn fingerprints<'a>(events: impl Iterator<Item = &'a Value>) -> Vec<String> {
    events
        .filter_map(|e| e["fingerprint"].as_str().map(str::to_owned))
        .collect()
}

/// Echo requests/replies of one ping run at one hop, in order.
fn icmp_at<'a>(
    s: &'a Session,
    hop: &'a str,
    ty: u64,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> Vec<&'a Value> {
    s.at(hop)
        .filter(|e| {
            e["inner"]["proto"] == "icmp"
                && e["inner"]["icmp"]["type"] == ty
                && ip(&e["inner"]["src"]) == Some(src)
                && ip(&e["inner"]["dst"]) == Some(dst)
        })
        .collect()
}

#[test]
fn every_hop_reports_ping_and_tcp_with_inner_and_outer_tuples() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let listener = b.tcp_listen(8080)?;
        let tracer = Tracer::start(a, &[])?;
        let ping = a.ping(IpAddr::V4(b.vtep_ip()), PINGS, INTERVAL)?;
        ensure!(ping.all_received(), "overlay ping failed: {ping:?}");
        let dst = SocketAddr::new(IpAddr::V4(b.cni_ip()), 8080);
        a.tcp_connect(dst, Duration::from_secs(2))
            .context("TCP across the overlay")?;
        ensure!(
            listener.wait_for_connections(1, Duration::from_secs(2)) == 1,
            "listener saw no connection"
        );
        thread::sleep(Duration::from_millis(300));
        let s = tracer.stop()?;
        ensure!(s.status.success(), "tracer failed:\n{}", s.dump());

        // Start record: what was attached, with which backend.
        ensure!(
            s.start["port"] == PORT && s.start["port_source"] == "device",
            "{}",
            s.start
        );
        ensure!(s.start["vni"] == 1, "{}", s.start);
        // The best backend this kernel offers, found out independently.
        let k = Kernel::running();
        for hop in [
            "overlay-egress",
            "overlay-ingress",
            "underlay-egress",
            "underlay-ingress",
        ] {
            let be = s.backend(hop).unwrap_or_default();
            ensure!(
                be == k.expected_tc_backend(),
                "{hop}: expected {} on {}, got {be}",
                k.expected_tc_backend(),
                k.release
            );
        }
        let vx = s.backend("vxlan-rcv").unwrap_or_default();
        let want = k.expected_vxlan_rcv_backend();
        ensure!(
            vx == want,
            "vxlan-rcv: expected {want} on {} ({:?}), got {vx}",
            k.release,
            k.vxlan_rcv_offer()
        );
        let want = k.expected_drop_backend();
        ensure!(
            s.backend("drop").as_deref() == Some(want),
            "drop: expected {want}, got {:?}",
            s.backend("drop")
        );

        // A -> B echo requests leave through the tunnel: inner, then outer.
        let (va, vb) = (a.vtep_ip(), b.vtep_ip());
        let req_in = icmp_at(&s, "overlay-egress", 8, va, vb);
        let req_out = icmp_at(&s, "underlay-egress", 8, va, vb);
        ensure!(
            req_in.len() == PINGS as usize,
            "overlay-egress requests: {}\n{}",
            req_in.len(),
            s.dump()
        );
        ensure!(
            req_out.len() == PINGS as usize,
            "underlay-egress requests: {}\n{}",
            req_out.len(),
            s.dump()
        );
        for e in &req_out {
            ensure!(
                ip(&e["outer"]["src"]) == Some(a.underlay_ip())
                    && ip(&e["outer"]["dst"]) == Some(b.underlay_ip()),
                "{e}"
            );
            ensure!(
                e["outer"]["proto"] == "udp" && e["outer"]["dport"] == PORT && e["vni"] == 1,
                "{e}"
            );
            ensure!(e["iface"] == "eth1", "{e}");
        }
        for e in &req_in {
            ensure!(e["iface"] == VXLAN_IFACE && e.get("outer").is_none(), "{e}");
        }
        ensure!(
            fingerprints(req_in.iter().copied()) == fingerprints(req_out.iter().copied()),
            "fingerprints differ across encapsulation"
        );

        // B -> A echo replies arrive: underlay, decap, overlay; same packet.
        let rep_u = icmp_at(&s, "underlay-ingress", 0, vb, va);
        let rep_v = icmp_at(&s, "vxlan-rcv", 0, vb, va);
        let rep_o = icmp_at(&s, "overlay-ingress", 0, vb, va);
        for (hop, got) in [
            ("underlay-ingress", &rep_u),
            ("vxlan-rcv", &rep_v),
            ("overlay-ingress", &rep_o),
        ] {
            ensure!(
                got.len() == PINGS as usize,
                "{hop} replies: {}\n{}",
                got.len(),
                s.dump()
            );
        }
        for e in rep_u.iter().chain(&rep_v) {
            ensure!(
                ip(&e["outer"]["src"]) == Some(b.underlay_ip())
                    && e["outer"]["dport"] == PORT
                    && e["vni"] == 1,
                "{e}"
            );
        }
        let fp = fingerprints(rep_u.iter().copied());
        ensure!(
            fp == fingerprints(rep_v.iter().copied()) && fp == fingerprints(rep_o.iter().copied()),
            "reply fingerprints differ between hops"
        );
        ensure!(
            fp.iter().collect::<HashSet<_>>().len() == PINGS as usize,
            "distinct packets must hash apart"
        );

        // TCP: the SYN leaves with its ports and flags, the SYN-ACK comes back.
        let tcp = |hop: &'static str, flags: &'static str| {
            s.at(hop)
                .filter(|e| e["inner"]["proto"] == "tcp" && e["inner"]["tcp"]["flags"] == flags)
                .cloned()
                .collect::<Vec<_>>()
        };
        let syn = tcp("underlay-egress", "SYN");
        ensure!(
            syn.len() == 1,
            "SYN at underlay-egress: {}\n{}",
            syn.len(),
            s.dump()
        );
        ensure!(
            syn[0]["inner"]["dport"] == 8080 && ip(&syn[0]["inner"]["dst"]) == Some(b.cni_ip()),
            "{}",
            syn[0]
        );
        ensure!(
            tcp("overlay-ingress", "SYN|ACK").len() == 1,
            "SYN-ACK at overlay-ingress\n{}",
            s.dump()
        );

        // Only this namespace: B's own receive path (requests A->B) and
        // anything in the fabric must not appear.
        for e in s.at("vxlan-rcv").chain(s.at("underlay-ingress")) {
            ensure!(
                ip(&e["inner"]["src"]) != Some(va),
                "event from another namespace: {e}"
            );
        }
        let summary = s.summary.as_ref().context("no summary")?;
        ensure!(
            summary["complete"] == true && summary["lost"] == 0,
            "{summary}"
        );
        assert_clean(lab)
    })
}

#[test]
fn receiver_firewall_drop_is_reported_with_reason_and_location() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        b.nft(&input_drop_udp(PORT))?;
        let tracer = Tracer::start(b, &[])?;
        let ping = a.ping(IpAddr::V4(b.vtep_ip()), PINGS, INTERVAL)?;
        ensure!(
            ping.received == 0,
            "the firewall should drop everything: {ping:?}"
        );
        thread::sleep(Duration::from_millis(300));
        let s = tracer.stop()?;
        ensure!(s.status.success(), "{}", s.dump());
        let arrived = icmp_at(&s, "underlay-ingress", 8, a.vtep_ip(), b.vtep_ip());
        let drops = icmp_at(&s, "drop", 8, a.vtep_ip(), b.vtep_ip());
        ensure!(
            arrived.len() == PINGS as usize,
            "arrivals: {}\n{}",
            arrived.len(),
            s.dump()
        );
        ensure!(
            drops.len() == PINGS as usize,
            "drops: {}\n{}",
            drops.len(),
            s.dump()
        );
        // Before 5.17 kfree_skb has no reason: the location alone must name
        // the netfilter hook that applied the nft verdict (nf_hook_slow
        // frees the packet itself there, measured on 5.10).
        let k = Kernel::running();
        let (reason, site) = if k.has_drop_reason() {
            (serde_json::json!("NETFILTER_DROP"), "nft_do_chain")
        } else {
            (Value::Null, "nf_hook_slow")
        };
        for d in &drops {
            ensure!(d["drop"]["reason"] == reason, "{}: {d}", k.release);
            let loc = d["drop"]["location"].as_str().unwrap_or_default();
            ensure!(
                loc.starts_with(site),
                "{}: location {loc}, expected {site}",
                k.release
            );
            ensure!(
                d["outer"]["dport"] == PORT && ip(&d["outer"]["dst"]) == Some(b.underlay_ip()),
                "{d}"
            );
        }
        ensure!(
            fingerprints(arrived.iter().copied()) == fingerprints(drops.iter().copied()),
            "drop events must name the arrived packets"
        );
        ensure!(
            s.at("vxlan-rcv").count() == 0 && s.at("overlay-ingress").count() == 0,
            "nothing may pass the firewall\n{}",
            s.dump()
        );
        let summary = s.summary.as_ref().context("no summary")?;
        // Without reasons the summary counts drops by location.
        let by_site: u64 = summary["drops_by_reason"]
            .as_object()
            .context("no drops_by_reason")?
            .iter()
            .filter(|(key, _)| {
                if k.has_drop_reason() {
                    *key == "NETFILTER_DROP"
                } else {
                    key.starts_with(site)
                }
            })
            .filter_map(|(_, n)| n.as_u64())
            .sum();
        ensure!(by_site == u64::from(PINGS), "{summary}");
        assert_clean(lab)
    })
}

#[test]
fn fallback_backends_report_the_same_packets() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let args = [
            "--tc-mode",
            "netlink",
            "--vxlan-rcv-backend",
            "tracepoint",
            "--drop-backend",
            "tracepoint",
        ];
        let tracer = Tracer::start(a, &args)?;
        for iface in ["eth1", VXLAN_IFACE] {
            ensure!(
                tc_state(a, iface)?.1,
                "netlink mode must add a clsact qdisc on {iface}"
            );
        }
        let ping = a.ping(IpAddr::V4(b.vtep_ip()), PINGS, INTERVAL)?;
        ensure!(ping.all_received(), "{ping:?}");
        thread::sleep(Duration::from_millis(300));
        let s = tracer.stop()?;
        ensure!(s.status.success(), "{}", s.dump());
        ensure!(
            s.backend("overlay-egress").as_deref() == Some("netlink-clsact"),
            "{}",
            s.start
        );
        ensure!(
            s.backend("vxlan-rcv").as_deref() == Some("tracepoint"),
            "{}",
            s.start
        );
        ensure!(
            s.backend("drop").as_deref() == Some("tracepoint"),
            "{}",
            s.start
        );
        let (va, vb) = (a.vtep_ip(), b.vtep_ip());
        ensure!(
            icmp_at(&s, "underlay-egress", 8, va, vb).len() == PINGS as usize,
            "{}",
            s.dump()
        );
        let rcv = icmp_at(&s, "vxlan-rcv", 0, vb, va);
        ensure!(rcv.len() == PINGS as usize, "{}", s.dump());
        for e in rcv {
            // The tracepoint sees the frame after decapsulation; the outer
            // headers are recovered from the buffer and flagged as such.
            ensure!(
                e["outer_recovered"] == true && ip(&e["outer"]["src"]) == Some(b.underlay_ip()),
                "{e}"
            );
        }
        assert_clean(lab)
    })
}

/// Every backend of the vxlan-rcv and drop hops that this kernel offers
/// (found out independently of the tracer, see `Kernel`) attaches when
/// forced and reports the right packets; every one it does not offer is
/// refused with exit 5 rather than silently replaced. On a 3-node lab, A's
/// firewall drops C's tunnel traffic only, so that one tracer run on A sees
/// B's replies pass vxlan-rcv and C's requests dropped.
#[test]
fn every_backend_the_kernel_offers_reports_the_packets() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(3), |lab| {
        let (a, b, c) = (lab.node('a'), lab.node('b'), lab.node('c'));
        a.nft(&format!(
            "table inet ft {{\n\tchain input {{\n\t\ttype filter hook input priority 0; policy accept;\n\t\tip saddr {} udp dport {PORT} counter drop\n\t}}\n}}\n",
            c.underlay_ip()
        ))?;
        let k = Kernel::running();
        let drop_offer = k.drop_offer();
        let mut drops = drop_offer
            .iter()
            .filter(|(_, ok)| ok.is_ok())
            .map(|(d, _)| *d)
            .cycle();
        let mut drops_seen = HashSet::new();
        let (va, vb, vc) = (a.vtep_ip(), b.vtep_ip(), c.vtep_ip());
        for (backend, offered) in k.vxlan_rcv_offer() {
            let flag = backend.replace('_', "-");
            if let Err(why) = offered {
                let (st, _, err) = run_tracer(
                    a,
                    &[
                        "--json",
                        "--vxlan-rcv-backend",
                        &flag,
                        "--no-drops",
                        "--duration",
                        "1s",
                    ],
                )?;
                ensure!(
                    st.code() == Some(5) && err.contains("vxlan-rcv") && err.contains(backend),
                    "{backend} is not offered by {} ({why}): the tracer must refuse it with exit 5, got {st:?}: {err}",
                    k.release
                );
                continue;
            }
            let d = drops.next().context("no drop backend offered")?;
            drops_seen.insert(d);
            let tracer = Tracer::start(
                a,
                &[
                    "--vxlan-rcv-backend",
                    &flag,
                    "--drop-backend",
                    &d.replace('_', "-"),
                ],
            )?;
            let ok = a.ping(IpAddr::V4(vb), PINGS, INTERVAL)?;
            let lost = c.ping(IpAddr::V4(va), PINGS, INTERVAL)?;
            thread::sleep(Duration::from_millis(300));
            let s = tracer.stop()?;
            ensure!(
                ok.all_received() && lost.received == 0,
                "a->b {ok:?}, c->a {lost:?}"
            );
            ensure!(s.status.success(), "{backend}/{d}:\n{}", s.dump());
            ensure!(
                s.backend("vxlan-rcv").as_deref() == Some(backend)
                    && s.backend("drop").as_deref() == Some(d),
                "{}",
                s.start
            );
            let rcv = icmp_at(&s, "vxlan-rcv", 0, vb, va);
            ensure!(
                rcv.len() == PINGS as usize,
                "vxlan-rcv {backend}: {} replies\n{}",
                rcv.len(),
                s.dump()
            );
            for e in &rcv {
                ensure!(
                    ip(&e["outer"]["src"]) == Some(b.underlay_ip())
                        && e["outer"]["dport"] == PORT
                        && e["vni"] == 1,
                    "{backend}: {e}"
                );
            }
            let dropped = icmp_at(&s, "drop", 8, vc, va);
            ensure!(
                dropped.len() == PINGS as usize,
                "drop {d}: {} drops\n{}",
                dropped.len(),
                s.dump()
            );
            for e in &dropped {
                ensure!(
                    ip(&e["outer"]["src"]) == Some(c.underlay_ip()) && e["outer"]["dport"] == PORT,
                    "{d}: {e}"
                );
                if k.has_drop_reason() {
                    ensure!(e["drop"]["reason"] == "NETFILTER_DROP", "{d}: {e}");
                } else {
                    ensure!(
                        e["drop"]["reason"].is_null(),
                        "{} has no drop reasons: {e}",
                        k.release
                    );
                }
            }
        }
        for (d, offered) in &drop_offer {
            ensure!(
                offered.is_err() || drops_seen.contains(d),
                "drop backend {d} was offered but never exercised"
            );
        }
        // TC: a forced TCX is used where the kernel has it, and refused as
        // a missing kernel feature (exit 5) where it has not.
        let (st, out, err) = run_tracer(
            a,
            &[
                "--json",
                "--tc-mode",
                "tcx",
                "--no-drops",
                "--duration",
                "1s",
            ],
        )?;
        if k.has_tcx() {
            ensure!(
                st.success() && out.contains(r#""backend":"tcx""#),
                "--tc-mode tcx on {}: {st:?}: {err}\n{out}",
                k.release
            );
        } else {
            ensure!(
                st.code() == Some(5) && err.contains("TCX"),
                "{} has no TCX: a forced --tc-mode tcx must exit 5, got {st:?}: {err}",
                k.release
            );
        }
        assert_clean(lab)
    })
}

#[test]
fn netlink_mode_leaves_a_foreign_clsact_and_its_filter_alone() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let a = lab.node('a');
        a.run(&["tc", "qdisc", "add", "dev", "eth1", "clsact"])?;
        // Another tool's filter: a classic BPF program that accepts everything.
        a.run(&[
            "tc",
            "filter",
            "add",
            "dev",
            "eth1",
            "ingress",
            "pref",
            "7",
            "bpf",
            "bytecode",
            "1,6 0 0 4294967295,",
        ])?;
        let tracer = Tracer::start(a, &["--tc-mode", "netlink"])?;
        let during = a.run(&["tc", "filter", "show", "dev", "eth1", "ingress"])?;
        ensure!(
            during.contains("ft_und_ingress"),
            "our filter should be attached:\n{during}"
        );
        let s = tracer.stop()?;
        ensure!(s.status.success(), "{}", s.dump());
        let after = a.run(&["tc", "filter", "show", "dev", "eth1", "ingress"])?;
        ensure!(!after.contains("ft_"), "our filter must be gone:\n{after}");
        ensure!(
            after.contains("pref 7"),
            "the foreign filter must stay:\n{after}"
        );
        ensure!(tc_state(a, "eth1")?.1, "the foreign clsact qdisc must stay");
        ensure!(
            !tc_state(a, VXLAN_IFACE)?.1,
            "the clsact we created on flannel.1 must go"
        );
        Ok(())
    })
}

#[test]
fn nothing_is_left_after_sigterm_or_sigkill() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let a = lab.node('a');
        let k = Kernel::running();
        let t = Tracer::start(a, &[])?;
        if k.has_tcx() {
            ensure!(
                tc_state(a, "eth1")?.0 == 2,
                "expected 2 TCX programs on eth1 while tracing"
            );
        } else {
            ensure!(
                our_filters(a)?.len() == 6,
                "expected our 6 netlink filters while tracing: {:?}",
                our_filters(a)?
            );
        }
        t.signal(libc::SIGTERM);
        let s = t.finish()?;
        ensure!(
            s.status.success() && s.summary.is_some(),
            "SIGTERM must end cleanly with a summary\n{}",
            s.dump()
        );
        assert_clean(lab)?;
        // SIGKILL: no userspace clean-up runs; TCX links die with the process.
        let t = Tracer::start(a, &[])?;
        t.kill()?;
        if k.has_tcx() {
            return assert_clean(lab);
        }
        // Before 6.6 (netlink TC) nothing ties a filter to the process: a
        // SIGKILLed tracer leaves exactly its own filters and the clsact
        // qdiscs it created, and nothing else, until the next run or
        // `flannel-trace cleanup` removes them, saying so.
        let left = our_filters(a)?;
        ensure!(
            left.len() == 6,
            "after SIGKILL on {} expected our 6 filters left behind, found {left:?}",
            k.release
        );
        let said = a.run(&[&tracer_bin().display().to_string(), "cleanup"])?;
        ensure!(
            said.matches("removed tc filter ft_").count() == 6
                && said.matches("removed the empty clsact").count() == 3,
            "cleanup must say what it removed:\n{said}"
        );
        assert_clean(lab)
    })
}

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
        let cv = Some(c.vtep_ip());
        ensure!(
            s.at("underlay-egress").count() == 2,
            "C's own requests must be seen\n{}",
            s.dump()
        );
        for e in &s.events {
            let mine = ip(&e["inner"]["src"]) == cv || ip(&e["inner"]["dst"]) == cv;
            ensure!(mine, "C must see none of A's and B's packets or drops: {e}");
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
            ensure!(e["inner"]["proto"] == "tcp", "filtered out by --proto: {e}");
            let pod = Some(b.cni_ip());
            ensure!(
                ip(&e["inner"]["src"]) == pod || ip(&e["inner"]["dst"]) == pod,
                "filtered out by --host: {e}"
            );
        }
        // --port overrides the device: on 8472 the underlay shows nothing of
        // this overlay, while the overlay hops still see the inner frames.
        let tracer = Tracer::start(a, &["--port", "8472"])?;
        ensure!(
            tracer.start["port"] == 8472 && tracer.start["port_source"] == "--port",
            "{}",
            tracer.start
        );
        a.ping(IpAddr::V4(b.vtep_ip()), 2, INTERVAL)?;
        thread::sleep(Duration::from_millis(300));
        let s = tracer.stop()?;
        ensure!(
            s.at("underlay-egress").count() == 0 && s.at("underlay-ingress").count() == 0,
            "{}",
            s.dump()
        );
        ensure!(s.at("overlay-egress").count() >= 2, "{}", s.dump());
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
        let lost = summary["lost"].as_u64().unwrap_or(0);
        ensure!(lost > 0, "the overflow must be counted: {summary}");
        ensure!(
            summary["complete"] == false,
            "counts must be marked incomplete: {summary}"
        );
        let reported = summary["events"].as_u64().unwrap_or(0);
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
