//! Attach time: read what the programs need from the kernel (BTF offsets,
//! drop reasons, tracefs), configure them for this node and the options,
//! and load them.

use std::{collections::HashMap, net::IpAddr};

use flannel_trace_common::{
    Config, Ports,
    config::ANY_VNI,
    event::{AF_INET, AF_INET6},
};

use super::node::Node;
use crate::{
    datapath::{
        self, Devices, DropBackendChoice, Plan, ProbeError, Probes, VxlanBackendChoice,
        degraded::MissingHop,
    },
    exit::Status,
    kernel::{
        self, KernelError,
        btf::{Btf, BtfError},
        kallsyms::Kallsyms,
        tracefs,
    },
    options::TraceOptions,
};

/// Why the programs could not be attached; [`AttachError::status`] tells
/// a kernel that cannot (exit status 5) from a failure (1).
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("reading kernel struct offsets from BTF")]
    Offsets(#[source] KernelError),
    #[error(transparent)]
    Netns(KernelError),
    #[error(transparent)]
    Load(#[from] ProbeError),
}

impl AttachError {
    pub fn status(&self) -> Status {
        match self {
            AttachError::Btf(_) | AttachError::Offsets(_) => Status::Unsupported,
            AttachError::Load(e) if e.is_unsupported() => Status::Unsupported,
            AttachError::Netns(_) | AttachError::Load(_) => Status::Failure,
        }
    }
}

/// The loaded programs and what the session needs to read their output.
pub struct Attached {
    pub probes: Probes,
    /// What the programs were configured with.
    pub cfg: Config,
    pub ports: Ports,
    /// The kernel's drop reasons, by value (from BTF).
    pub reasons: HashMap<u32, String>,
    /// Hops that could not be attached, with why.
    pub missing: Vec<MissingHop>,
    pub kallsyms: std::io::Result<Kallsyms>,
}

/// Loads and attaches the programs for `node`.
pub fn attach(opts: &TraceOptions, node: &Node) -> Result<Attached, AttachError> {
    let dp = &opts.datapath;
    // Classic tracepoints are a fallback; find (or privately mount) tracefs
    // now, while the process is single-threaded, in case one is needed.
    let may_need_tracefs = matches!(
        dp.vxlan_rcv,
        VxlanBackendChoice::Auto | VxlanBackendChoice::Tracepoint
    ) || matches!(
        dp.drop,
        Some(DropBackendChoice::Auto | DropBackendChoice::Tracepoint)
    );
    let tracefs = if may_need_tracefs {
        tracefs::ensure()
            .inspect_err(|e| log::info!("classic tracepoints unavailable: {e}"))
            .ok()
    } else {
        None
    };
    // What only the kernel makes slow runs side by side with the rest of
    // the set-up — aya's parse of vmlinux BTF (the loader and the
    // BTF-typed programs need it) and /proc/kallsyms (the kernel takes tens
    // of milliseconds to produce it). Both threads are joined before
    // anything needs a single-threaded process again.
    let aya_btf = std::thread::spawn(|| aya::Btf::from_sys_fs().map_err(|e| e.to_string()));
    let kallsyms = std::thread::spawn(Kallsyms::load);

    let btf = Btf::vmlinux()?;
    let mut offsets = kernel::offsets(&btf).map_err(AttachError::Offsets)?;
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
    cfg.netns_ino = kernel::netns_inode().map_err(AttachError::Netns)?;
    datapath::leftovers::sweep_at_start(cfg.netns_ino);
    cfg.vxlan_ifindex = node.vxlan.index;
    cfg.underlay_ifindex = node.underlay.index;
    cfg.has_drop_reason = u8::from(has_reason);
    cfg.offsets = offsets;
    configure(&mut cfg, opts, node, &reasons);

    let plan = Plan {
        tc_mode: dp.tc_mode,
        vxlan_rcv: dp.vxlan_rcv,
        drop: dp.drop,
        ring_size: dp.ring_size,
        verifier_log: dp.verifier_log.clone(),
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
    for p in std::iter::once(node.port).chain(opts.ports.iter().copied()) {
        ports.add(p);
    }
    let aya_btf = aya_btf
        .join()
        .expect("the BTF thread does not panic")
        .inspect_err(|e| log::warn!("aya cannot read kernel BTF: {e}"))
        .ok();
    let loaded = Probes::load(&cfg, ports, &plan, &devices, aya_btf);
    let kallsyms = kallsyms.join().expect("the kallsyms thread does not panic");
    let mut probes = loaded?;
    // Explained only now: the process is single-threaded again (the
    // loader's and the set-up threads are joined), which a private
    // securityfs mount for the lockdown level needs.
    let missing: Vec<MissingHop> = if probes.unserved.is_empty() {
        Vec::new()
    } else {
        let lockdown = datapath::degraded::lockdown_level();
        std::mem::take(&mut probes.unserved)
            .into_iter()
            .map(|(hop, tried)| MissingHop::explained(hop, tried, lockdown.as_deref()))
            .collect()
    };
    Ok(Attached {
        probes,
        cfg,
        ports,
        reasons,
        missing,
        kallsyms,
    })
}

/// The programs' filters, sampling, mode and the pod network.
fn configure(cfg: &mut Config, opts: &TraceOptions, node: &Node, reasons: &HashMap<u32, String>) {
    cfg.vni = opts.filter.vni.unwrap_or(ANY_VNI);
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
    cfg.wakeup_bytes = opts.datapath.ring_size / 8;
    if opts.stats() {
        cfg.mode = flannel_trace_common::config::MODE_STATS;
    }
    cfg.sample_mask = opts.sample - 1;
    for n in &node.pods.networks {
        match n.addr() {
            IpAddr::V4(a) => cfg.overlay.set_v4(a.octets(), n.len()),
            IpAddr::V6(a) => cfg.overlay.set_v6(a.octets(), n.len()),
        }
    }
    if let Some(p) = opts.filter.proto {
        cfg.filter_proto = p;
    }
    match opts.filter.host {
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
}

/// The kernel's symbols, or none (drop locations then print as addresses).
pub fn kallsyms_or_none(loaded: std::io::Result<Kallsyms>) -> Kallsyms {
    let kallsyms = loaded.unwrap_or_else(|e| {
        log::warn!("cannot read /proc/kallsyms ({e}): drop locations are shown as addresses");
        Kallsyms::parse("")
    });
    if kallsyms.is_restricted() {
        log::warn!(
            "/proc/kallsyms hides addresses (kernel.kptr_restrict): drop locations are shown as addresses"
        );
    }
    kallsyms
}
