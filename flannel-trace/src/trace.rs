//! The trace session: resolve the node's devices, attach, stream events,
//! summarise, detach.

use std::{
    collections::HashMap,
    io::{self, Write as _},
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use flannel_trace_common::{
    Config, Counter, RawEvent,
    config::ANY_VNI,
    event::{AF_INET, AF_INET6},
};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    btf::Btf,
    cli::{DropBackendChoice, TraceArgs, VxlanBackendChoice},
    clock::Clock,
    event::{Decoder, is_real_drop},
    exit::{Fatal, OrFatal as _, Status},
    kallsyms::Kallsyms,
    kernel, netdev,
    output::{self, Start, Summary},
    probes::{Devices, Plan, Probes},
    tracefs,
};

const DEFAULT_PORT: u16 = 8472;

/// The node's overlay as flannel-trace will trace it.
struct Node {
    vxlan: netdev::LinkInfo,
    underlay: netdev::LinkInfo,
    port: u16,
    port_source: &'static str,
}

fn resolve(args: &TraceArgs) -> Result<Node, Fatal> {
    let vxlan = netdev::link_by_name(&args.vxlan_dev).fatal(Status::Device)?;
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
    let (port, port_source) = match (args.port, info.port) {
        (Some(p), _) => (p, "--port"),
        (None, Some(p)) => (p, "device"),
        (None, None) => (DEFAULT_PORT, "default"),
    };
    let underlay = match &args.iface {
        Some(name) => netdev::link_by_name(name).fatal(Status::Device)?,
        None => {
            let index = match info.link {
                Some(i) => i,
                None => netdev::default_route_ifindex().fatal(Status::Device)?.ok_or_else(|| {
                    Fatal::new(
                        Status::Device,
                        anyhow!("{} has no link device and there is no default route: name the underlay NIC with --iface", vxlan.name),
                    )
                })?,
            };
            netdev::link_by_index(index).fatal(Status::Device)?
        }
    };
    if underlay.index == vxlan.index {
        return Err(Fatal::new(Status::Device, anyhow!("--iface must be the underlay NIC, not the vxlan device {}", vxlan.name)));
    }
    Ok(Node { vxlan, underlay, port, port_source })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
}

pub fn run(args: TraceArgs) -> Result<(), Fatal> {
    kernel::check_privileges().fatal(Status::Privilege)?;
    let node = resolve(&args)?;
    let btf = Btf::vmlinux().fatal(Status::Unsupported)?;
    let mut offsets = kernel::offsets(&btf).context("reading kernel struct offsets from BTF").fatal(Status::Unsupported)?;
    let reasons = kernel::drop_reasons(&btf);
    let has_reason = btf.tracepoint_params("kfree_skb").is_some_and(|n| n >= 3);

    // Classic tracepoints are a fallback; find (or privately mount) tracefs
    // now, while the process is single-threaded, in case one is needed.
    let may_need_tracefs = matches!(args.vxlan_rcv_backend, VxlanBackendChoice::Auto | VxlanBackendChoice::Tracepoint)
        || (!args.no_drops && matches!(args.drop_backend, DropBackendChoice::Auto | DropBackendChoice::Tracepoint));
    let tracefs = if may_need_tracefs {
        match tracefs::ensure() {
            Ok(p) => {
                let off = |cat, tp, field| tracefs::field_offset(&p, cat, tp, field).ok();
                offsets.tp_kfree_skbaddr = off("skb", "kfree_skb", "skbaddr").unwrap_or(0);
                offsets.tp_kfree_location = off("skb", "kfree_skb", "location").unwrap_or(0);
                offsets.tp_kfree_reason = off("skb", "kfree_skb", "reason").unwrap_or(0);
                offsets.tp_netif_skbaddr = off("net", "netif_receive_skb", "skbaddr").unwrap_or(0);
                Some(p)
            }
            Err(e) => {
                log::info!("classic tracepoints unavailable: {e}");
                None
            }
        }
    } else {
        None
    };

    let mut cfg = Config::zeroed();
    cfg.vxlan_port = node.port;
    cfg.vni = node.vxlan.vxlan.as_ref().and_then(|v| v.vni).unwrap_or(ANY_VNI);
    cfg.netns_ino = kernel::netns_inode().fatal(Status::Failure)?;
    cfg.vxlan_ifindex = node.vxlan.index;
    cfg.underlay_ifindex = node.underlay.index;
    cfg.has_drop_reason = u8::from(has_reason);
    cfg.offsets = offsets;
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
        tc_mode: args.tc_mode,
        vxlan_rcv: args.vxlan_rcv_backend,
        drop: (!args.no_drops).then_some(args.drop_backend),
        ring_size: args.ring_size,
        verifier_log: args.verifier_log.clone(),
        tracefs,
    };
    let devices = Devices { vxlan: (node.vxlan.index, &node.vxlan.name), underlay: (node.underlay.index, &node.underlay.name) };
    let mut probes = Probes::load(&cfg, &plan, &devices).map_err(|e| {
        let status = if e.is_unsupported() { Status::Unsupported } else { Status::Failure };
        Fatal::new(status, e)
    })?;

    let clock = Clock::sample();
    let start = Start {
        ty: "start",
        version: env!("CARGO_PKG_VERSION"),
        node: hostname(),
        kernel: kernel::release(),
        netns_inode: cfg.netns_ino,
        vxlan_dev: node.vxlan.name.clone(),
        vxlan_ifindex: node.vxlan.index,
        underlay_dev: node.underlay.name.clone(),
        underlay_ifindex: node.underlay.index,
        port: node.port,
        port_source: node.port_source,
        vni: (cfg.vni != ANY_VNI).then_some(cfg.vni),
        local: node.vxlan.vxlan.as_ref().and_then(|v| v.local),
        hooks: probes.hooks.clone(),
        clock_offset_ns: clock.offset_ns(),
        ring_size: args.ring_size,
    };
    let kallsyms = Kallsyms::load().unwrap_or_else(|e| {
        log::warn!("cannot read /proc/kallsyms ({e}): drop locations are shown as addresses");
        Kallsyms::parse("")
    });
    let mut session = Session {
        json: args.json,
        decoder: Decoder::new(clock, reasons, kallsyms),
        summary: Summary { ty: "summary", complete: true, ..Summary::default() },
        out: io::stdout().lock(),
    };
    session.emit_start(&start)?;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the event loop")?;
    let began = Instant::now();
    rt.block_on(session.stream(&mut probes, args.duration))?;
    session.summary.duration_s = began.elapsed().as_secs_f64();
    session.finish(&mut probes)?;
    drop(probes);
    Ok(())
}

struct Session<'a> {
    json: bool,
    decoder: Decoder,
    summary: Summary,
    out: io::StdoutLock<'a>,
}

impl Session<'_> {
    fn emit_start(&mut self, start: &Start) -> Result<(), Fatal> {
        if self.json {
            self.line(&serde_json::to_string(start).context("encoding start")?)?;
        } else {
            eprint!("{}", output::start_text(start));
            eprintln!("  (Ctrl-C to stop)");
        }
        self.out.flush().context("writing to stdout")?;
        Ok(())
    }

    fn line(&mut self, s: &str) -> Result<(), Fatal> {
        writeln!(self.out, "{s}").context("writing to stdout")?;
        Ok(())
    }

    fn handle(&mut self, bytes: &[u8]) -> Result<(), Fatal> {
        let ev = match RawEvent::from_bytes(bytes).and_then(|raw| self.decoder.decode(&raw)) {
            Ok(ev) => ev,
            Err(e) => {
                self.summary.decode_errors += 1;
                log::debug!("undecodable record: {e}");
                return Ok(());
            }
        };
        if ev.drop.is_some() && !is_real_drop(&ev) {
            return Ok(());
        }
        self.summary.events += 1;
        *self.summary.per_hop.entry(ev.hop).or_default() += 1;
        if let Some(d) = &ev.drop {
            let key = d.reason.clone().or_else(|| d.location.clone()).unwrap_or_else(|| d.location_addr.clone());
            *self.summary.drops_by_reason.entry(key).or_default() += 1;
        }
        let text = if self.json {
            serde_json::to_string(&ev).context("encoding event")?
        } else {
            output::event_text(&ev, self.decoder.clock.offset_ns())
        };
        self.line(&text)
    }

    async fn stream(&mut self, probes: &mut Probes, duration: Option<Duration>) -> Result<(), Fatal> {
        let map = probes.ebpf_mut().take_map("EVENTS").ok_or_else(|| anyhow!("map EVENTS missing from the eBPF object"))?;
        let ring = RingBuf::try_from(map).context("opening the EVENTS ring buffer")?;
        let mut ring = AsyncFd::new(ring).context("polling the ring buffer")?;
        let mut term = tokio::signal::unix::signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        let mut int = tokio::signal::unix::signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
        let deadline = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(365 * 24 * 3600)));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard.context("waiting for events")?;
                    self.drain(guard.get_inner_mut())?;
                    guard.clear_ready();
                    self.out.flush().context("writing to stdout")?;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = &mut deadline => break,
            }
        }
        // What arrived between the last wake-up and the stop.
        self.drain(ring.get_mut())?;
        self.out.flush().context("writing to stdout")?;
        Ok(())
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<(), Fatal> {
        while let Some(item) = ring.next() {
            let bytes: &[u8] = &item;
            let bytes = bytes.to_vec();
            drop(item);
            self.handle(&bytes)?;
        }
        Ok(())
    }

    fn finish(&mut self, probes: &mut Probes) -> Result<(), Fatal> {
        let counters = counters(probes).context("reading the programs' counters")?;
        self.summary.lost = counters.get(&Counter::RingbufFull).copied().unwrap_or(0);
        self.summary.unparsed = counters.get(&Counter::Unparsed).copied().unwrap_or(0);
        self.summary.complete = self.summary.lost == 0 && self.summary.decode_errors == 0;
        if self.json {
            let s = serde_json::to_string(&self.summary).context("encoding summary")?;
            self.line(&s)?;
        } else {
            eprint!("{}", output::summary_text(&self.summary));
        }
        self.out.flush().context("writing to stdout")?;
        Ok(())
    }
}

fn counters(probes: &mut Probes) -> anyhow::Result<HashMap<Counter, u64>> {
    let map = probes.ebpf_mut().map("COUNTERS").ok_or_else(|| anyhow!("map COUNTERS missing"))?;
    let arr = PerCpuArray::<_, u64>::try_from(map)?;
    let mut out = HashMap::new();
    for c in [Counter::RingbufFull, Counter::Unparsed] {
        let per_cpu = arr.get(&(c as u32), 0)?;
        out.insert(c, per_cpu.iter().sum());
    }
    Ok(out)
}
