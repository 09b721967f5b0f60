//! flannel-trace against the real kernel: real namespaces, real vxlan, real
//! eBPF. Each test builds a flannel-style lab (port 8475, VNI 1), runs the
//! release binary inside one node, sends real traffic and checks what the
//! tracer reported — and that it left nothing behind.
//!
//! The tests are serialised: they check the kernel's global list of loaded
//! programs for leftovers, which a concurrent tracer would disturb. They are
//! grouped by topic: what each hop reports (`hops`), the kernel's backends
//! (`backends`), what is left in the kernel (`cleanup`), options and user
//! errors (`options`).

#[path = "tracer/backends.rs"]
mod backends;
#[path = "tracer/cleanup.rs"]
mod cleanup;
#[path = "tracer/hops.rs"]
mod hops;
#[path = "tracer/options.rs"]
mod options;

use std::{
    ffi::CString,
    net::{IpAddr, Ipv4Addr},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use aya::programs::{SchedClassifier, TcAttachType, loaded_programs};
use flannel_trace::schema::event::Event;
use flannel_trace_common::Hop;
use flannel_trace_tests::{
    Kernel, Lab, POD_IFACE, Session, VXLAN_IFACE, patience,
    records::{fingerprint, inner_dst, inner_proto_is, inner_src},
};

use flannel_trace_tests::fixtures::{PING_INTERVAL as INTERVAL, PINGS};

const PORT: u16 = flannel_trace_tests::DEFAULT_VXLAN_PORT;

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

fn v4(ip: Ipv4Addr) -> Option<IpAddr> {
    Some(IpAddr::V4(ip))
}

fn fingerprints<'a>(events: impl Iterator<Item = &'a Event>) -> Vec<String> {
    events.filter_map(fingerprint).collect()
}

/// Echo requests/replies of one ping run at one hop, in order.
fn icmp_at(s: &Session, hop: Hop, ty: u8, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<&Event> {
    s.at(hop)
        .filter(|e| {
            inner_proto_is(e, "icmp")
                && e.inner
                    .as_ref()
                    .and_then(|i| i.icmp.as_ref())
                    .is_some_and(|icmp| icmp.ty == ty)
                && inner_src(e) == v4(src)
                && inner_dst(e) == v4(dst)
        })
        .collect()
}
