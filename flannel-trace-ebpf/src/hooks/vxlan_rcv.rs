//! The vxlan receive path: `vxlan_rcv` itself where kprobes or fentry are
//! allowed (outer headers still in place), else the decapsulated frame as
//! the vxlan device hands it to the stack (tp_btf or tracepoint
//! `netif_receive_skb`, outer headers recovered from the headroom).

use aya_ebpf::{
    EbpfContext,
    macros::{btf_tracepoint, fentry, kprobe, tracepoint},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, TracePointContext},
};
use flannel_trace_common::{
    Config, Hop, PacketInfo,
    parse::{Layer, parse_inner, parse_underlay, recover_outer},
};

use super::{config, in_traced_netns, keep, load_skb, local_ifindex, report, skb_arg};
use crate::{
    emit::{Learnt, Meta, Slot, learn, learnt, ports, scratch},
    skb::{Skb, dev_of, ifindex_of},
};

/// `vxlan_rcv(struct sock *sk, struct sk_buff *skb)`, entry: the skb still
/// carries its outer headers.
#[kprobe]
pub fn ft_vxlan_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(skb) = ctx.arg::<u64>(1) {
        let _ = try_vxlan_rcv_encapsulated(&ctx, skb);
    }
    0
}

#[fentry(function = "vxlan_rcv")]
pub fn ft_vxlan_fentry(ctx: FEntryContext) -> u32 {
    let skb: u64 = ctx.arg(1);
    let _ = try_vxlan_rcv_encapsulated(&ctx, skb);
    0
}

/// Fallback where neither kprobes nor fentry are allowed: the decapsulated
/// frame as the vxlan device hands it to the stack.
#[btf_tracepoint(function = "netif_receive_skb")]
pub fn ft_vxlan_tpbtf(ctx: BtfTracePointContext) -> i32 {
    let skb = skb_arg(&ctx);
    let _ = try_vxlan_rcv_decapsulated(&ctx, skb);
    0
}

#[tracepoint]
pub fn ft_vxlan_tp(ctx: TracePointContext) -> u32 {
    let _ = try_vxlan_rcv_tracepoint(&ctx);
    0
}

/// `vxlan_rcv` entry (kprobe/fentry): outer headers still in place. Only
/// vxlan packets get here; the namespace is the one test left.
#[inline(always)]
fn try_vxlan_rcv_encapsulated<C: EbpfContext>(ctx: &C, addr: u64) -> Result<(), ()> {
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
fn try_vxlan_rcv_decapsulated<C: EbpfContext>(ctx: &C, addr: u64) -> Result<(), ()> {
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
fn try_vxlan_rcv_tracepoint(ctx: &TracePointContext) -> Result<(), ()> {
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
