//! The logic behind each entry point. Every hook decides "not ours" with
//! the fewest reads it can (device and namespace first, a few fixed-offset
//! packet bytes next) before it zeroes scratch space or parses.

use aya_ebpf::{
    EbpfContext,
    bindings::__sk_buff,
    programs::{TcContext, TracePointContext},
};
use aya_log_ebpf::error;
use flannel_trace_common::{
    Config, Counter, Hop, PacketInfo,
    config::{ANY_VNI, MODE_STATS},
    event::{AF_INET, flags},
    parse::{
        Bytes, Layer, ParseError, in_overlay, parse_inner, parse_underlay, prefilter,
        recover_outer, wanted,
    },
    stats::{StatKey, masked_v4, packet_key, towards_peer},
};

use crate::{
    emit::{Learnt, Meta, Slot, bump, count, learn, learnt, ports, scratch, submit, submit_drop},
    skb::{self, Skb, dev_of, ifindex_of},
};

/// Set by userspace before load. `static mut` (in `.data`) rather than a
/// `static`, so the compiler cannot fold the compile-time defaults into the
/// code: the values that count are the ones written at load time.
#[unsafe(no_mangle)]
static mut CONFIG: Config = Config::zeroed();

#[inline(always)]
// A direct `&CONFIG` on a `static mut` is refused in edition 2024; the raw
// pointer is the sanctioned route, which this lint mistakes for a detour.
#[allow(clippy::deref_addrof)]
pub fn config() -> &'static Config {
    // SAFETY: written only by the loader, before any program runs.
    unsafe { &*(&raw const CONFIG) }
}

/// Packet bytes through `bpf_skb_load_bytes`: also reaches the paged
/// (non-linear) part of an skb.
struct TcBytes<'a>(&'a TcContext);

impl Bytes for TcBytes<'_> {
    #[inline(always)]
    fn read<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.0.load::<[u8; N]>(off).ok()
    }
}

/// The linear head of the packet, read directly: no helper call. Only used
/// with constant offsets (the prefilters), where the verifier can check the
/// bound; bytes beyond the linear head read as absent, and the prefilters
/// then leave the frame to the full parser.
struct DirectBytes {
    data: usize,
    end: usize,
}

impl Bytes for DirectBytes {
    #[inline(always)]
    fn read<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if self.data + off + N > self.end {
            return None;
        }
        // SAFETY: [data + off, data + off + N) was just checked to lie within
        // the packet's linear data, which the verifier also enforces.
        Some(unsafe { core::ptr::read_unaligned((self.data + off) as *const [u8; N]) })
    }
}

/// Whether a parsed packet is reported. A frame of the overlay that could
/// not be decoded is counted (`unparsed`) where `count` says so: at the
/// hooks a frame passes once per node (underlay ingress or egress, and the
/// tunnel's entry), not again at every later hop.
#[inline(always)]
fn keep(cfg: &Config, r: Result<(), ParseError>, pkt: &PacketInfo, count_failure: bool) -> bool {
    match r {
        Ok(()) => wanted(cfg, pkt),
        Err(e) => {
            if count_failure && e.is_overlay_failure() {
                count(Counter::Unparsed);
            }
            false
        }
    }
}

/// Where a TC program sits decides what it parses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TcSide {
    /// flannel.1: every frame is an inner frame of the overlay.
    Overlay,
    /// A NIC: only VXLAN on our ports.
    Underlay,
    /// cni0: only packets between pod-network addresses.
    Pod,
}

// Inlined: as a BPF subprogram whose result the caller ignores, LLVM may
// leave a stack pointer in R0, which the verifier rejects.
#[inline(always)]
pub fn try_tc(ctx: &TcContext, hop: Hop, side: TcSide) -> Result<(), ()> {
    let cfg = config();
    let head = DirectBytes {
        data: ctx.data(),
        end: ctx.data_end(),
    };
    let ports = ports().ok_or(())?;
    let maybe = match side {
        TcSide::Overlay => true,
        TcSide::Underlay => prefilter::underlay(&head, ports),
        TcSide::Pod => prefilter::pod(&head, &cfg.overlay),
    };
    if !maybe {
        return Ok(());
    }
    // SAFETY: the context pointer is valid for the program's lifetime.
    let ifindex = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ifindex };
    if cfg.mode == MODE_STATS
        && let Some(key) = fast_key(cfg, &head, side, hop, ifindex)
    {
        bump(&key, ctx.len());
        return Ok(());
    }
    let bytes = TcBytes(ctx);
    let pkt = scratch(Slot::Tc).ok_or(())?;
    let r = match side {
        TcSide::Underlay => parse_underlay(&bytes, Layer::Ethernet, 0, ports, pkt),
        _ => parse_inner(&bytes, Layer::Ethernet, 0, pkt),
    };
    let once = side == TcSide::Underlay || hop == Hop::OverlayEgress;
    if !keep(cfg, r, pkt, once) || (side == TcSide::Pod && !in_overlay(&cfg.overlay, pkt)) {
        return Ok(());
    }
    if side == TcSide::Underlay {
        outer_vlan_from_metadata(ctx, pkt);
    }
    let meta = Meta {
        hop,
        ifindex,
        skb_len: ctx.len(),
        skb_addr: 0,
    };
    report(cfg, &meta, pkt);
    Ok(())
}

/// The kernel moves a frame's (outer) VLAN tag into skb metadata before TC
/// runs, so the parser only sees what is left in the bytes: the inner tag
/// of QinQ, or nothing.
#[inline(always)]
fn outer_vlan_from_metadata(ctx: &TcContext, pkt: &mut PacketInfo) {
    // SAFETY: the context pointer is valid for the program's lifetime.
    let (present, tci) = unsafe {
        let skb = ctx.as_ptr() as *const __sk_buff;
        ((*skb).vlan_present, (*skb).vlan_tci)
    };
    if present == 0 {
        return;
    }
    if pkt.flags & flags::OUTER_VLAN != 0 {
        pkt.inner_vlan = pkt.vlan;
        pkt.flags |= flags::QINQ;
    }
    pkt.vlan = (tci & 0x0fff) as u16;
    pkt.flags |= flags::OUTER_VLAN;
}

/// An event, or in counters mode a count.
#[inline(always)]
fn report(cfg: &Config, meta: &Meta, pkt: &PacketInfo) {
    if cfg.mode != MODE_STATS {
        submit(cfg, meta, pkt);
        return;
    }
    let key = packet_key(
        pkt,
        meta.hop,
        meta.ifindex,
        cfg.peer_prefix_v4,
        cfg.peer_prefix_v6,
    );
    bump(&key, meta.skb_len);
}

/// Counters mode without parsing: an option-less IPv4 frame whose headers
/// lie in the linear head gives its counter key from a few direct reads.
/// Anything else (IPv6, IP options, VLAN, filters set) takes the parser.
#[inline(always)]
fn fast_key(
    cfg: &Config,
    head: &DirectBytes,
    side: TcSide,
    hop: Hop,
    ifindex: u32,
) -> Option<StatKey> {
    if cfg.filter_proto != 0 || cfg.filter_family != 0 || cfg.vni != ANY_VNI {
        return None;
    }
    if head.read::<2>(12)? != [0x08, 0x00] {
        return None;
    }
    let out = towards_peer(hop);
    let addr: [u8; 4] = match side {
        TcSide::Underlay => {
            // IPv4 without options (the prefilter checked UDP and the
            // port), then the VXLAN flags byte.
            let h: [u8; 20] = head.read(14)?;
            let vx: [u8; 1] = head.read(14 + 20 + 8)?;
            if h[0] != 0x45 || vx[0] & 0x08 == 0 {
                return None;
            }
            let o = if out { 16 } else { 12 };
            [h[o], h[o + 1], h[o + 2], h[o + 3]]
        }
        _ => head.read(if out { 30 } else { 26 })?,
    };
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&addr);
    if side != TcSide::Underlay {
        a = masked_v4(a, cfg.peer_prefix_v4);
    }
    Some(StatKey {
        addr: a,
        reason: 0,
        ifindex,
        hop: hop as u8,
        family: AF_INET,
        _pad: [0; 2],
    })
}

/// Read the skb, reporting a failure: it means the offsets taken from BTF
/// do not match the kernel. Logged at the 1st, 2nd, 4th, 8th... failure on
/// a CPU, so a broken layout is visible without flooding the log.
#[inline(always)]
fn load_skb<C: EbpfContext>(ctx: &C, addr: u64, cfg: &Config) -> Option<Skb> {
    let skb = Skb::load(addr, &cfg.offsets);
    if skb.is_none() {
        let n = count(Counter::ProbeRead);
        if n.is_power_of_two() {
            // Not the address: in BTF-typed programs it is a pointer, which
            // the verifier refuses to format.
            error!(
                ctx,
                "cannot read a struct sk_buff ({} failures on this CPU): kernel layout differs from its BTF?",
                n
            );
        }
    }
    skb
}

/// Whether `dev` lives in the traced network namespace. Once the
/// namespace's `struct net` is known, one read (the device's) decides.
#[inline(always)]
fn in_traced_netns(cfg: &Config, dev: u64) -> Option<bool> {
    let net: u64 = skb::read(dev, cfg.offsets.dev_nd_net)?;
    let known = learnt(Learnt::Netns);
    if known != 0 {
        return Some(net == known);
    }
    let ours = skb::read::<u32>(net, cfg.offsets.net_ns_inum)? == cfg.netns_ino;
    if ours {
        learn(Learnt::Netns, net);
    }
    Some(ours)
}

/// The ifindex of the skb's device, if the device lives in the traced
/// network namespace.
#[inline(always)]
fn local_ifindex(cfg: &Config, addr: u64) -> Option<u32> {
    let dev = dev_of(addr, &cfg.offsets)?;
    if !in_traced_netns(cfg, dev)? {
        return None;
    }
    ifindex_of(dev, &cfg.offsets)
}

/// `vxlan_rcv` entry (kprobe/fentry): outer headers still in place. Only
/// vxlan packets get here; the namespace is the one test left.
#[inline(always)]
pub fn try_vxlan_rcv_encapsulated<C: EbpfContext>(ctx: &C, addr: u64) -> Result<(), ()> {
    let cfg = config();
    local_ifindex(cfg, addr).ok_or(())?;
    let skb = load_skb(ctx, addr, cfg).ok_or(())?;
    let layer = Layer::from_ethertype(skb.protocol).ok_or(())?;
    let net = skb.network_header.ok_or(())?;
    let pkt = scratch(Slot::VxlanRcv).ok_or(())?;
    let r = parse_underlay(&skb.bytes, layer, net, ports().ok_or(())?, pkt);
    if !keep(cfg, r, pkt, false) {
        return Ok(());
    }
    vxlan_event(cfg, &skb, pkt);
    Ok(())
}

/// The decapsulated frame entering the stack on the vxlan device
/// (`netif_receive_skb`): outer headers are recovered from the headroom.
/// This hook sees every received packet of every device in every namespace,
/// so the device is compared first: once the vxlan device's address is
/// learnt, a foreign packet costs one read (`skb->dev`) after the argument.
#[inline(always)]
pub fn try_vxlan_rcv_decapsulated<C: EbpfContext>(ctx: &C, addr: u64) -> Result<(), ()> {
    let cfg = config();
    let o = &cfg.offsets;
    let dev = dev_of(addr, o).ok_or(())?;
    let known = learnt(Learnt::VxlanDev);
    if known != 0 && dev != known {
        return Ok(());
    }
    if ifindex_of(dev, o).ok_or(())? != cfg.vxlan_ifindex || !in_traced_netns(cfg, dev).ok_or(())? {
        return Ok(());
    }
    if known == 0 {
        learn(Learnt::VxlanDev, dev);
    }
    let skb = load_skb(ctx, addr, cfg).ok_or(())?;
    let mac = skb.mac_header.ok_or(())?;
    let pkt = scratch(Slot::VxlanRcv).ok_or(())?;
    let r = parse_inner(&skb.bytes, Layer::Ethernet, mac, pkt);
    recover_outer(&skb.bytes, mac, ports().ok_or(())?, pkt);
    if !keep(cfg, r, pkt, false) {
        return Ok(());
    }
    vxlan_event(cfg, &skb, pkt);
    Ok(())
}

#[inline(always)]
pub fn try_vxlan_rcv_tracepoint(ctx: &TracePointContext) -> Result<(), ()> {
    let off = config().offsets.tp_netif_skbaddr as usize;
    // SAFETY: read_at goes through bpf_probe_read; the offset is the
    // field's, from the tracepoint's format file.
    let addr: u64 = unsafe { ctx.read_at(off) }.map_err(|_| ())?;
    try_vxlan_rcv_decapsulated(ctx, addr)
}

#[inline(always)]
fn vxlan_event(cfg: &Config, skb: &Skb, pkt: &PacketInfo) {
    let meta = Meta {
        hop: Hop::VxlanRcv,
        ifindex: cfg.vxlan_ifindex,
        skb_len: skb.len,
        skb_addr: skb.addr,
    };
    report(cfg, &meta, pkt);
}

/// A freed-as-dropped skb that may be this overlay's traffic in the
/// traced namespace: its first bytes go to userspace, which parses them
/// (see `flannel_trace_common::dropped`). Parsing here, from a variable
/// offset through `bpf_probe_read_kernel`, cost the verifier most of the
/// attach time; the checks left are the cheap ones. On the vxlan device
/// every skb is an inner frame of the overlay; elsewhere the prefilter
/// keeps what could be VXLAN on our port or a packet between pod-network
/// addresses, a superset of what the parser reports.
#[inline(always)]
pub fn try_drop<C: EbpfContext>(ctx: &C, addr: u64, location: u64, reason: u32) -> Result<(), ()> {
    let cfg = config();
    // Not a drop at all: nothing to read.
    if cfg.has_drop_reason != 0
        && (reason == cfg.reason_consumed || reason == cfg.reason_not_dropped)
    {
        return Ok(());
    }
    let ifindex = local_ifindex(cfg, addr).ok_or(())?;
    let skb = load_skb(ctx, addr, cfg).ok_or(())?;
    let layer = Layer::from_ethertype(skb.protocol).ok_or(())?;
    let net = skb.network_header.ok_or(())?;
    let on_vxlan = ifindex == cfg.vxlan_ifindex;
    if !on_vxlan && !prefilter::dropped(&skb.bytes, layer, net, ports().ok_or(())?, &cfg.overlay) {
        return Ok(());
    }
    submit_drop(cfg, &skb, net, ifindex, on_vxlan, location, reason);
    Ok(())
}

#[inline(always)]
pub fn try_drop_tracepoint(ctx: &TracePointContext) -> Result<(), ()> {
    let o = &config().offsets;
    let reason: u32 = if config().has_drop_reason != 0 {
        // SAFETY: read_at goes through (here and in the two reads below)
        // bpf_probe_read; the offsets are the fields', from the
        // tracepoint's format file.
        unsafe { ctx.read_at(o.tp_kfree_reason as usize) }.map_err(|_| ())?
    } else {
        0
    };
    // SAFETY: as above.
    let addr: u64 = unsafe { ctx.read_at(o.tp_kfree_skbaddr as usize) }.map_err(|_| ())?;
    // SAFETY: as above.
    let location: u64 = unsafe { ctx.read_at(o.tp_kfree_location as usize) }.map_err(|_| ())?;
    try_drop(ctx, addr, location, reason)
}
