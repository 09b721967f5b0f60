//! Freed skbs (`kfree_skb`, with the kernel's drop reason where it has
//! one): tp_btf where allowed, else the tracepoint.

use aya_ebpf::{
    EbpfContext,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use flannel_trace_common::parse::{Layer, prefilter};

use super::{config, load_skb, local_ifindex, skb_arg};
use crate::emit::{ports, submit_drop};

/// `kfree_skb(skb, location[, reason[, rx_sk]])`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn ft_drop_tpbtf(ctx: BtfTracePointContext) -> i32 {
    let skb = skb_arg(&ctx);
    let location: u64 = ctx.arg(1);
    let reason: u32 = if config().has_drop_reason != 0 {
        ctx.arg(2)
    } else {
        0
    };
    let _ = try_drop(&ctx, skb, location, reason);
    0
}

/// `kfree_skb(skb, location)` before 5.17: no reason argument, and the
/// verifier rejects any access to one, even on a branch never taken.
#[btf_tracepoint(function = "kfree_skb")]
pub fn ft_drop_tpbtf_noreason(ctx: BtfTracePointContext) -> i32 {
    let skb = skb_arg(&ctx);
    let location: u64 = ctx.arg(1);
    let _ = try_drop(&ctx, skb, location, 0);
    0
}

#[tracepoint]
pub fn ft_drop_tp(ctx: TracePointContext) -> u32 {
    let _ = try_drop_tracepoint(&ctx);
    0
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
fn try_drop<C: EbpfContext>(ctx: &C, addr: u64, location: u64, reason: u32) -> Result<(), ()> {
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
fn try_drop_tracepoint(ctx: &TracePointContext) -> Result<(), ()> {
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
