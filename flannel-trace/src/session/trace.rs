//! The trace session: resolve the node's devices, attach, stream events,
//! summarise, detach.

use std::net::IpAddr;

use crate::{
    net::{self, Cidr},
    schema::identity::PeerRoute,
};

use anyhow::{Context as _, anyhow};
use flannel_trace_common::{
    Config, Ports,
    config::ANY_VNI,
    event::{AF_INET, AF_INET6},
};

use crate::{
    cli::{self, DropBackendChoice, TraceArgs, VxlanBackendChoice},
    datapath::degraded::MissingHop,
    datapath::{self, Devices, Plan, Probes},
    exit::{Fatal, OrFatal as _, Status},
    kernel::clock::Clock,
    kernel::{self, btf::Btf, kallsyms::Kallsyms, tracefs},
    schema::event::Decoder,
    schema::identity::{FdbPeer, NeighbourEntry, NodeIdentity, PodRoute, mac_string},
    session,
};

const DEFAULT_PORT: u16 = 8472;

/// The node's overlay as flannel-trace will trace it.
struct Node {
    vxlan: net::LinkInfo,
    underlay: net::LinkInfo,
    /// Other NICs the underlay hops watch too.
    other_nics: Vec<net::LinkInfo>,
    port: u16,
    port_source: &'static str,
    pods: PodSide,
}

/// Where the node's pods are.
struct PodSide {
    devs: Vec<net::LinkInfo>,
    subnets: Vec<Cidr>,
    networks: Vec<Cidr>,
    local_addrs: Vec<IpAddr>,
    /// Where `networks` came from, for the start banner.
    source: &'static str,
}

/// At most this many other NICs get underlay hooks (each costs two TC
/// programs); a node with more names its NICs with --iface/--only-iface.
const MAX_OTHER_NICS: usize = 8;

fn pod_side(args: &TraceArgs, vxlan: &net::LinkInfo) -> Result<PodSide, Fatal> {
    let routes = net::routes().unwrap_or_else(|e| {
        log::warn!("cannot read the routing table ({e}): pod network from --pod-cidr only");
        Vec::new()
    });
    let env = std::fs::read_to_string(net::SUBNET_ENV)
        .map(|t| net::parse_subnet_env(&t))
        .unwrap_or_default();
    let none = args.pod_dev.iter().any(|d| d == "none");
    if none && args.pod_dev.len() > 1 {
        return Err(Fatal::new(
            Status::Usage,
            anyhow!("--pod-dev none cannot be combined with device names"),
        ));
    }
    let mut devs = Vec::new();
    if none {
    } else if !args.pod_dev.is_empty() {
        for name in &args.pod_dev {
            let l = net::link_by_name(name).fatal(Status::Device)?;
            if l.index == vxlan.index {
                return Err(Fatal::new(
                    Status::Usage,
                    anyhow!("--pod-dev {name} is the vxlan device; name the pods' bridge (cni0)"),
                ));
            }
            devs.push(l);
        }
    } else if let Ok(l) = net::link_by_name("cni0") {
        devs.push(l);
    } else {
        // flannel's own subnet for this node, and the device its route uses.
        let dev = env.subnets.iter().find_map(|s| {
            routes
                .iter()
                .find(|r| s.contains(r.dst) && r.oif.is_some_and(|o| o != vxlan.index))
                .and_then(|r| net::link_by_index(r.oif?).ok())
        });
        devs.extend(dev);
    }
    let mut subnets: Vec<Cidr> = env.subnets.clone();
    for r in &routes {
        if r.oif.is_some_and(|o| devs.iter().any(|d| d.index == o))
            && !net::link_scope(r.dst)
            && let Some(c) = Cidr::new(r.dst, r.prefix_len)
            && c.len() > 0
            && !subnets.contains(&c)
        {
            subnets.push(c);
        }
    }
    let mut local_addrs = Vec::new();
    for d in &devs {
        local_addrs.extend(
            net::addresses(d.index)
                .unwrap_or_default()
                .into_iter()
                .filter(|a| !net::link_scope(*a)),
        );
    }
    let (networks, source) = if !args.pod_cidr.is_empty() {
        (args.pod_cidr.clone(), "--pod-cidr")
    } else if !env.networks.is_empty() {
        (env.networks.clone(), "subnet.env")
    } else {
        let mut known: Vec<Cidr> = subnets.clone();
        for r in &routes {
            if r.oif == Some(vxlan.index)
                && !net::link_scope(r.dst)
                && let Some(c) = Cidr::new(r.dst, r.prefix_len)
                && c.len() > 0
            {
                known.push(c);
            }
        }
        for a in net::addresses(vxlan.index)
            .unwrap_or_default()
            .into_iter()
            .filter(|a| !net::link_scope(*a))
        {
            known.extend(Cidr::new(a, if a.is_ipv4() { 32 } else { 128 }));
        }
        (net::covering(&known), "routes")
    };
    let mut seen = [false; 2];
    for n in &networks {
        let f = usize::from(!n.addr().is_ipv4());
        if std::mem::replace(&mut seen[f], true) {
            return Err(Fatal::new(
                Status::Usage,
                anyhow!("one pod network per address family: {n} is a second one"),
            ));
        }
    }
    Ok(PodSide {
        devs,
        subnets,
        networks,
        local_addrs,
        source,
    })
}

/// Devices, besides the main underlay NIC, that could carry the overlay's
/// frames: anything with an address that is not loopback, a vxlan device or
/// a pod device.
fn other_nics(
    underlay: &net::LinkInfo,
    vxlan: &net::LinkInfo,
    pods: &[net::LinkInfo],
) -> Vec<net::LinkInfo> {
    let Ok(all) = net::links() else {
        return Vec::new();
    };
    let mut out: Vec<net::LinkInfo> = all
        .into_iter()
        .filter(|l| {
            l.index != underlay.index
                && l.index != vxlan.index
                && l.name != "lo"
                && l.kind.as_deref() != Some("vxlan")
                && !pods.iter().any(|p| p.index == l.index)
                // Every device has an IPv6 link-local address; only a
                // routable one makes it a NIC the overlay could leave by.
                && net::addresses(l.index)
                    .is_ok_and(|a| a.iter().any(|a| !net::link_scope(*a)))
        })
        .collect();
    if out.len() > MAX_OTHER_NICS {
        log::warn!(
            "{} other devices have addresses; watching the first {MAX_OTHER_NICS} (use --iface/--only-iface to choose)",
            out.len()
        );
        out.truncate(MAX_OTHER_NICS);
    }
    out
}

fn resolve(args: &TraceArgs) -> Result<Node, Fatal> {
    let vxlan = net::link_by_name(&args.vxlan_dev).fatal(Status::Device)?;
    let Some(info) = vxlan.vxlan.as_ref() else {
        return Err(Fatal::new(
            Status::Device,
            anyhow!(
                "{} is not a vxlan device (kind: {}); name the overlay device with --vxlan-dev",
                vxlan.name,
                vxlan.kind.as_deref().unwrap_or("unknown")
            ),
        ));
    };
    if args.port.len() > 4 {
        return Err(Fatal::new(
            Status::Usage,
            anyhow!("at most four --port values"),
        ));
    }
    let (port, port_source) = match (args.port.first(), info.port) {
        (Some(p), _) => (*p, "--port"),
        (None, Some(p)) => (p, "device"),
        (None, None) => (DEFAULT_PORT, "default"),
    };
    let underlay = match &args.iface {
        Some(name) => net::link_by_name(name).fatal(Status::Device)?,
        None => {
            let index = match info.link {
                Some(i) => i,
                None => net::default_route_ifindex().fatal(Status::Device)?.ok_or_else(|| {
                    Fatal::new(
                        Status::Device,
                        anyhow!("{} has no link device and there is no default route: name the underlay NIC with --iface", vxlan.name),
                    )
                })?,
            };
            net::link_by_index(index).fatal(Status::Device)?
        }
    };
    if underlay.index == vxlan.index {
        return Err(Fatal::new(
            Status::Device,
            anyhow!(
                "--iface must be the underlay NIC, not the vxlan device {}",
                vxlan.name
            ),
        ));
    }
    plausible_underlay(&underlay, &vxlan)?;
    let pods = pod_side(args, &vxlan)?;
    let other_nics = if args.only_iface {
        Vec::new()
    } else {
        other_nics(&underlay, &vxlan, &pods.devs)
    };
    Ok(Node {
        vxlan,
        underlay,
        other_nics,
        port,
        port_source,
        pods,
    })
}

/// Refuses what cannot be an underlay (loopback: VXLAN frames between nodes
/// never pass it; another vxlan device), and warns about what probably is
/// not one (no address, down): the verdict would otherwise blame "0 reached
/// node-b's lo" on the network.
fn plausible_underlay(u: &net::LinkInfo, vxlan: &net::LinkInfo) -> Result<(), Fatal> {
    let refuse = |why: String| {
        Err(Fatal::new(
            Status::Device,
            anyhow!(
                "{} cannot be the underlay of {}: {why}; name the NIC that carries the VXLAN traffic between the nodes with --iface (default: the vxlan device's link device, else the default-route device)",
                u.name,
                vxlan.name
            ),
        ))
    };
    if u.loopback {
        return refuse("it is a loopback device".into());
    }
    if u.vxlan.is_some() {
        return refuse("it is itself a vxlan device".into());
    }
    if !u.up {
        eprintln!(
            "flannel-trace: warning: the underlay {} is down: no VXLAN frame can pass it",
            u.name
        );
    }
    if net::addresses(u.index).is_ok_and(|a| a.is_empty()) {
        eprintln!(
            "flannel-trace: warning: the underlay {} has no address: unless it is a bridge port carrying the node's traffic, VXLAN frames do not pass it (check --iface)",
            u.name
        );
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

pub fn run(args: TraceArgs) -> Result<(), Fatal> {
    if (args.listen.is_some() || args.peer.is_some())
        && args.token.as_deref().unwrap_or("").is_empty()
    {
        return Err(Fatal::new(
            Status::Usage,
            anyhow!(
                "--listen and --peer need a shared secret: pass --token or set FLANNEL_TRACE_TOKEN"
            ),
        ));
    }
    if args.probe && args.probe_to.is_none() && args.listen.is_none() && args.peer.is_none() {
        return Err(Fatal::new(
            Status::Usage,
            anyhow!("--probe needs a peer (--listen/--peer) or an address (--probe-to)"),
        ));
    }
    kernel::check_privileges(args.probe).fatal(Status::Privilege)?;
    let node = resolve(&args)?;

    // Classic tracepoints are a fallback; find (or privately mount) tracefs
    // now, while the process is single-threaded, in case one is needed.
    let may_need_tracefs = matches!(
        args.vxlan_rcv_backend,
        VxlanBackendChoice::Auto | VxlanBackendChoice::Tracepoint
    ) || (!args.no_drops
        && matches!(
            args.drop_backend,
            DropBackendChoice::Auto | DropBackendChoice::Tracepoint
        ));
    let tracefs = if may_need_tracefs {
        tracefs::ensure()
            .inspect_err(|e| log::info!("classic tracepoints unavailable: {e}"))
            .ok()
    } else {
        None
    };
    // Attach time: what only the kernel makes slow runs side by side with
    // the rest of the set-up — aya's parse of vmlinux BTF (the loader and
    // the BTF-typed programs need it) and /proc/kallsyms (the kernel takes
    // tens of milliseconds to produce it). Both threads are joined before
    // anything needs a single-threaded process again.
    let aya_btf = std::thread::spawn(|| aya::Btf::from_sys_fs().map_err(|e| e.to_string()));
    let kallsyms = std::thread::spawn(Kallsyms::load);

    let btf = Btf::vmlinux().fatal(Status::Unsupported)?;
    let mut offsets = kernel::offsets(&btf)
        .context("reading kernel struct offsets from BTF")
        .fatal(Status::Unsupported)?;
    let reasons = kernel::drop_reasons(&btf);
    let has_reason = btf.tracepoint_params("kfree_skb").is_some_and(|n| n >= 3);
    if let Some(p) = &tracefs {
        let off = |cat, tp, field| tracefs::field_offset(p, cat, tp, field).ok();
        offsets.tp_kfree_skbaddr = off("skb", "kfree_skb", "skbaddr").unwrap_or(0);
        offsets.tp_kfree_location = off("skb", "kfree_skb", "location").unwrap_or(0);
        offsets.tp_kfree_reason = off("skb", "kfree_skb", "reason").unwrap_or(0);
        offsets.tp_netif_skbaddr = off("net", "netif_receive_skb", "skbaddr").unwrap_or(0);
    }

    let mut cfg = Config::zeroed();
    cfg.vni = args.vni.unwrap_or(ANY_VNI);
    cfg.netns_ino = kernel::netns_inode().fatal(Status::Failure)?;
    crate::datapath::leftovers::sweep_at_start(cfg.netns_ino);
    cfg.vxlan_ifindex = node.vxlan.index;
    cfg.underlay_ifindex = node.underlay.index;
    cfg.has_drop_reason = u8::from(has_reason);
    cfg.offsets = offsets;
    let reason_value = |name: &str| {
        reasons
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(v, _)| *v)
    };
    if let Some(v) = reason_value("SKB_CONSUMED") {
        cfg.reason_consumed = v;
    }
    if let Some(v) = reason_value("NOT_DROPPED_YET") {
        cfg.reason_not_dropped = v;
    }
    cfg.wakeup_bytes = args.ring_size / 8;
    if args.stats {
        cfg.mode = flannel_trace_common::config::MODE_STATS;
    }
    cfg.sample_mask = args.sample.unwrap_or(1) - 1;
    for n in &node.pods.networks {
        match n.addr() {
            IpAddr::V4(a) => cfg.overlay.set_v4(a.octets(), n.len()),
            IpAddr::V6(a) => cfg.overlay.set_v6(a.octets(), n.len()),
        }
    }
    if let Some(p) = args.proto {
        cfg.filter_proto = p.number();
    }
    match args.host {
        Some(IpAddr::V4(a)) => {
            cfg.filter_family = AF_INET;
            cfg.filter_addr[..4].copy_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            cfg.filter_family = AF_INET6;
            cfg.filter_addr = a.octets();
        }
        None => {}
    }

    let plan = Plan {
        tc_mode: args.tc_mode.into(),
        vxlan_rcv: args.vxlan_rcv_backend.into(),
        drop: (!args.no_drops).then_some(args.drop_backend.into()),
        ring_size: args.ring_size,
        verifier_log: args.verifier_log.clone(),
        tracefs,
        vxlan_rcv_in_vmlinux: btf.has_func("vxlan_rcv"),
    };
    let devices = Devices {
        vxlan: (node.vxlan.index, &node.vxlan.name),
        underlay: std::iter::once(&node.underlay)
            .chain(&node.other_nics)
            .map(|l| (l.index, l.name.as_str()))
            .collect(),
        pods: node
            .pods
            .devs
            .iter()
            .map(|l| (l.index, l.name.as_str()))
            .collect(),
    };
    let mut ports = Ports::default();
    for p in std::iter::once(node.port).chain(args.port.iter().copied()) {
        ports.add(p);
    }
    let aya_btf = aya_btf
        .join()
        .expect("the BTF thread does not panic")
        .inspect_err(|e| log::warn!("aya cannot read kernel BTF: {e}"))
        .ok();
    let loaded = Probes::load(&cfg, ports, &plan, &devices, aya_btf);
    let kallsyms = kallsyms.join().expect("the kallsyms thread does not panic");
    let mut probes = loaded.map_err(|e| {
        let status = if e.is_unsupported() {
            Status::Unsupported
        } else {
            Status::Failure
        };
        Fatal::new(status, e)
    })?;
    // Explained only now: the process is single-threaded again (the
    // loader's and the set-up threads are joined), which a private
    // securityfs mount for the lockdown level needs.
    let missing: Vec<MissingHop> = if probes.unserved.is_empty() {
        Vec::new()
    } else {
        let lockdown = crate::datapath::degraded::lockdown_level();
        std::mem::take(&mut probes.unserved)
            .into_iter()
            .map(|(hop, tried)| MissingHop::explained(hop, tried, lockdown.as_deref()))
            .collect()
    };

    // Said once, before anything else is printed: the verdict accounts
    // for these hops too.
    for m in &missing {
        eprintln!("{}", m.banner(&node.underlay.name, &node.vxlan.name));
    }
    let clock = Clock::sample();
    let identity = identity(&node, &cfg, &probes, missing, &args, clock);
    let kallsyms = kallsyms.unwrap_or_else(|e| {
        log::warn!("cannot read /proc/kallsyms ({e}): drop locations are shown as addresses");
        Kallsyms::parse("")
    });
    if kallsyms.is_restricted() {
        log::warn!(
            "/proc/kallsyms hides addresses (kernel.kptr_restrict): drop locations are shown as addresses"
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let result = if args.stats {
        rt.block_on(crate::counters::run(
            &args,
            identity,
            reasons,
            &mut probes,
            &cfg,
            ports,
        ))
    } else {
        let decoder = Decoder::new(clock, reasons, kallsyms);
        rt.block_on(session::run(
            &args,
            identity,
            decoder,
            &mut probes,
            &cfg,
            ports,
        ))
    };
    drop(probes);
    result
}

fn identity(
    node: &Node,
    cfg: &Config,
    probes: &Probes,
    missing_hops: Vec<MissingHop>,
    args: &TraceArgs,
    clock: Clock,
) -> NodeIdentity {
    let vx = node.vxlan.vxlan.as_ref();
    NodeIdentity {
        version: env!("CARGO_PKG_VERSION").into(),
        node: args.name.clone().unwrap_or_else(hostname),
        kernel: kernel::release(),
        netns_inode: cfg.netns_ino,
        vxlan_dev: node.vxlan.name.clone(),
        vxlan_ifindex: node.vxlan.index,
        vxlan_mac: node.vxlan.mac.as_ref().map(mac_string),
        vtep_addrs: net::addresses(node.vxlan.index).unwrap_or_default(),
        underlay_dev: node.underlay.name.clone(),
        underlay_ifindex: node.underlay.index,
        underlay_addrs: net::addresses(node.underlay.index).unwrap_or_default(),
        local: vx.and_then(|v| v.local),
        port: node.port,
        ports: std::iter::once(node.port)
            .chain(args.port.iter().copied())
            .fold(Vec::new(), |mut v, p| {
                if !v.contains(&p) {
                    v.push(p);
                }
                v
            }),
        port_source: node.port_source.into(),
        device_port: vx.and_then(|v| v.port),
        vni: vx.and_then(|v| v.vni),
        fdb: net::vxlan_fdb(node.vxlan.index)
            .unwrap_or_default()
            .into_iter()
            .map(|e| FdbPeer {
                mac: mac_string(&e.mac),
                dst: e.dst,
            })
            .collect(),
        hooks: probes.hooks.clone(),
        missing_hops,
        clock_offset_ns: clock.offset_ns(),
        ring_size: args.ring_size,
        attached_wall_ns: Clock::now_wall_ns(),
        pod_devs: node.pods.devs.iter().map(|l| l.name.clone()).collect(),
        pod_subnets: node.pods.subnets.clone(),
        pod_networks: node.pods.networks.clone(),
        pod_network_source: node.pods.source.into(),
        overlay_local_addrs: node.pods.local_addrs.clone(),
        underlay_devs: std::iter::once(&node.underlay)
            .chain(&node.other_nics)
            .map(|l| l.name.clone())
            .collect(),
        peer_routes: peer_routes(node.vxlan.index),
        sample: args.sample.unwrap_or(1),
        stats_mode: args.stats,
        vxlan_neighbours: crate::check::tables::neighbours(node.vxlan.index)
            .ok()
            .filter(|n| n.len() <= crate::schema::identity::MAX_TABLE)
            .map(|n| {
                n.into_iter()
                    .map(|e| NeighbourEntry {
                        ip: e.ip,
                        mac: e.mac.as_ref().map(mac_string),
                    })
                    .collect()
            }),
        pod_routes: pod_routes(&node.pods.networks),
    }
}

/// The main table's routes that lie inside or around a pod network (the
/// per-node subnet routes flannel adds), without default routes.
fn pod_routes(networks: &[Cidr]) -> Option<Vec<PodRoute>> {
    if networks.is_empty() {
        return None;
    }
    let overlaps = |r: Cidr| {
        networks
            .iter()
            .any(|n| n.contains(r.addr()) || r.contains(n.addr()))
    };
    let routes: Vec<PodRoute> = crate::check::tables::routes()
        .ok()?
        .into_iter()
        .filter(|r| r.dst.len() > 0 && overlaps(r.dst))
        .map(|r| PodRoute {
            dst: r.dst,
            via: r.gateway,
            oif: r.oif,
            dev: r.oif.and_then(net::ifname),
        })
        .collect();
    (routes.len() <= crate::schema::identity::MAX_TABLE).then_some(routes)
}

/// The route to every peer underlay address in the vxlan device's FDB.
fn peer_routes(vxlan: u32) -> Vec<PeerRoute> {
    let mut out: Vec<PeerRoute> = Vec::new();
    for e in net::vxlan_fdb(vxlan).unwrap_or_default() {
        let Some(dst) = e.dst else { continue };
        if dst.is_unspecified() || out.iter().any(|r| r.dst == dst) {
            continue;
        }
        if let Ok(Some(r)) = net::route_to(dst) {
            out.push(PeerRoute {
                dst,
                dev: r.oif.and_then(net::ifname),
                via: r.gateway,
            });
        }
    }
    out
}

// The command line's choices, mapped to the loader's own values (the
// loader never sees a clap type).
impl From<cli::TcMode> for datapath::TcMode {
    fn from(m: cli::TcMode) -> Self {
        match m {
            cli::TcMode::Auto => Self::Auto,
            cli::TcMode::Tcx => Self::Tcx,
            cli::TcMode::Netlink => Self::Netlink,
        }
    }
}

impl From<VxlanBackendChoice> for datapath::VxlanBackendChoice {
    fn from(b: VxlanBackendChoice) -> Self {
        match b {
            VxlanBackendChoice::Auto => Self::Auto,
            VxlanBackendChoice::Fentry => Self::Fentry,
            VxlanBackendChoice::Kprobe => Self::Kprobe,
            VxlanBackendChoice::TpBtf => Self::TpBtf,
            VxlanBackendChoice::Tracepoint => Self::Tracepoint,
        }
    }
}

impl From<DropBackendChoice> for datapath::DropBackendChoice {
    fn from(b: DropBackendChoice) -> Self {
        match b {
            DropBackendChoice::Auto => Self::Auto,
            DropBackendChoice::TpBtf => Self::TpBtf,
            DropBackendChoice::Tracepoint => Self::Tracepoint,
        }
    }
}
