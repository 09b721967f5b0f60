//! Tests against the kernel, as root, each in a network namespace of its
//! own that it builds: a flannel-like node (veth underlay, vxlan device, FDB
//! entry, default route), then the layer's calls made from inside it.
//! Ignored by plain `cargo test` (which needs no root); `cargo xtask test`
//! runs them in its root stage.

use std::{
    fs::File,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

use super::{
    FdbEntry, NetError, addresses, captured::flannel_vxlan, clsact_filter_count,
    default_route_ifindex, delete_clsact, has_clsact, ifname, link_by_index, link_by_name, links,
    links::VxlanInfo, vxlan_fdb,
};

static NETNS_COUNT: AtomicUsize = AtomicUsize::new(0);

/// A throwaway network namespace `ndw-<pid>-<n>`, deleted on drop so that
/// a failing test still cleans up.
struct Netns(String);

impl Netns {
    /// Fails the test, saying why, when it cannot have one: an ignored test
    /// that is asked to run must not pass without having run.
    fn create() -> Self {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "creating network namespaces needs root");
        let count = NETNS_COUNT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ndw-{}-{count}", std::process::id());
        let status = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "`ip netns add {name}` failed: {status:?}"
        );
        Self(name)
    }

    /// Runs a shell command line in the namespace; false if it fails.
    fn try_sh(&self, line: &str) -> bool {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.0, "sh", "-c", line])
            .output()
            .expect("run ip netns exec");
        if !output.status.success() {
            eprintln!(
                "`{line}` failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output.status.success()
    }

    fn sh(&self, line: &str) {
        assert!(self.try_sh(line), "`{line}` failed in {}", self.0);
    }

    /// Runs `f` on a thread that has entered the namespace: setns moves
    /// only the calling thread.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                let netns = File::open(format!("/run/netns/{}", self.0)).unwrap();
                // SAFETY: a valid namespace fd; affects this thread only.
                let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                f()
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A namespace set up like a flannel node: underlay veth eth1 holding
/// 10.25.1.51 and the default route, flannel.1 on top of it, and the FDB
/// entry of one peer node.
fn flannel_node() -> Netns {
    let netns = Netns::create();
    for line in [
        "ip link add eth1 type veth peer name eth1-peer",
        "ip addr add 10.25.1.51/24 dev eth1",
        "ip link set eth1 up",
        "ip link set eth1-peer up",
        "ip link add flannel.1 type vxlan id 1 local 10.25.1.51 dev eth1 dstport 8475 nolearning",
        "ip addr add 10.244.0.0/32 dev flannel.1",
        "ip link set flannel.1 up",
        "bridge fdb append 76:21:69:41:de:fe dev flannel.1 dst 10.25.1.55",
        "ip route add default via 10.25.1.1 dev eth1",
    ] {
        netns.sh(line);
    }
    netns
}

#[test]
#[ignore = "needs root: creates network namespaces (`cargo xtask test` runs it as root)"]
fn root_flannel_node() {
    let netns = flannel_node();
    netns.enter(|| {
        let eth1 = link_by_name("eth1").unwrap();
        assert_eq!((eth1.kind.as_deref(), eth1.up), (Some("veth"), true));
        let flannel = link_by_name("flannel.1").unwrap();
        assert_eq!(
            (flannel.kind.as_deref(), flannel.mtu),
            (Some("vxlan"), 1450)
        );
        assert!(flannel.up && flannel.mac.is_some());
        let vxlan = VxlanInfo {
            link: Some(eth1.index),
            ..flannel_vxlan()
        };
        assert_eq!(flannel.vxlan, Some(vxlan));
        assert_eq!(link_by_index(flannel.index).unwrap(), flannel);
        assert_eq!(ifname(flannel.index).as_deref(), Some("flannel.1"));

        let names: Vec<_> = links().unwrap().into_iter().map(|link| link.name).collect();
        for name in ["lo", "eth1", "eth1-peer", "flannel.1"] {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }

        let peer = FdbEntry {
            mac: [0x76, 0x21, 0x69, 0x41, 0xde, 0xfe],
            dst: Some(Ipv4Addr::new(10, 25, 1, 55).into()),
        };
        assert_eq!(vxlan_fdb(flannel.index).unwrap(), [peer]);

        let local = IpAddr::from(Ipv4Addr::new(10, 25, 1, 51));
        assert!(addresses(eth1.index).unwrap().contains(&local));
        let overlay = IpAddr::from(Ipv4Addr::new(10, 244, 0, 0));
        assert!(addresses(flannel.index).unwrap().contains(&overlay));
        assert!(!addresses(flannel.index).unwrap().contains(&local));

        assert_eq!(default_route_ifindex().unwrap(), Some(eth1.index));

        let missing = link_by_name("flannel.9").unwrap_err();
        assert!(matches!(&missing, NetError::NoSuchName(name) if name == "flannel.9"));
        assert!(matches!(
            link_by_index(999_999),
            Err(NetError::NoSuchIndex(999_999))
        ));
        assert_eq!(ifname(999_999), None);
    });
}

#[test]
#[ignore = "needs root: creates network namespaces (`cargo xtask test` runs it as root)"]
fn root_clsact_lifecycle() {
    let netns = flannel_node();
    let eth1 = netns.enter(|| link_by_name("eth1").unwrap().index);
    netns.enter(|| {
        assert!(!has_clsact(eth1).unwrap());
        assert_eq!(clsact_filter_count(eth1, false).unwrap(), 0);
    });

    netns.sh("tc qdisc add dev eth1 clsact");
    if !netns.try_sh("tc filter add dev eth1 ingress matchall action pass") {
        // No cls_matchall or act_gact: a classic-BPF filter matching all.
        netns.sh("tc filter add dev eth1 ingress bpf bytecode '1,6 0 0 4294967295,' flowid ffff:1");
    }
    netns.enter(|| {
        assert!(has_clsact(eth1).unwrap());
        assert_eq!(clsact_filter_count(eth1, false).unwrap(), 1);
        assert_eq!(clsact_filter_count(eth1, true).unwrap(), 0);
    });

    netns.sh("tc filter del dev eth1 ingress");
    netns.enter(|| {
        assert_eq!(clsact_filter_count(eth1, false).unwrap(), 0);
        delete_clsact(eth1).unwrap();
        assert!(!has_clsact(eth1).unwrap());
        let error = delete_clsact(eth1).unwrap_err();
        assert!(matches!(error, NetError::NoClsact { .. }), "{error:?}");
    });

    // An ingress qdisc lives where clsact does but is somebody else's.
    netns.sh("tc qdisc add dev eth1 ingress");
    netns.enter(|| {
        assert!(!has_clsact(eth1).unwrap());
        assert!(matches!(
            delete_clsact(eth1),
            Err(NetError::NoClsact { .. })
        ));
    });
    netns.sh("tc qdisc show dev eth1 ingress | grep -q '^qdisc ingress'");
}

#[test]
#[ignore = "needs root: creates network namespaces (`cargo xtask test` runs it as root)"]
fn root_default_route_prefers_ipv4_then_lowest_metric() {
    let netns = Netns::create();
    netns.sh("ip link add veth-a type veth peer name veth-b && ip link set veth-a up && ip link set veth-b up");
    let (a, b) = netns.enter(|| {
        assert_eq!(default_route_ifindex().unwrap(), None);
        (
            link_by_name("veth-a").unwrap().index,
            link_by_name("veth-b").unwrap().index,
        )
    });

    netns.sh(
        "ip -6 addr add fd00::2/64 dev veth-a nodad && ip -6 route add default via fd00::1 dev veth-a",
    );
    assert_eq!(netns.enter(default_route_ifindex).unwrap(), Some(a));
    let v6 = IpAddr::from(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
    assert!(netns.enter(|| addresses(a)).unwrap().contains(&v6));

    netns
        .sh("ip addr add 192.0.2.2/24 dev veth-b && ip route add default via 192.0.2.1 metric 200");
    assert_eq!(netns.enter(default_route_ifindex).unwrap(), Some(b));

    netns.sh(
        "ip addr add 198.51.100.2/24 dev veth-a && ip route add default via 198.51.100.1 metric 100",
    );
    netns.sh("ip route add default via 192.0.2.1 table 100 metric 1");
    assert_eq!(netns.enter(default_route_ifindex).unwrap(), Some(a));
}
