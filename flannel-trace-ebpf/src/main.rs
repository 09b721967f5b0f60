//! flannel-trace's eBPF programs.
//!
//! Every entry point is a thin wrapper around a `try_*` function; whatever
//! happens inside, TC programs hand the packet on unchanged (a tracer never
//! drops traffic) and probes return 0.
#![no_std]
#![no_main]
// The `#[classifier]` macro generates the extern entry taking the kernel's
// raw context pointer; that entry is what this lint flags.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod emit;
mod hooks;
mod skb;

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{btf_tracepoint, classifier, fentry, kprobe, tracepoint},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, TcContext, TracePointContext},
};
use flannel_trace_common::Hop;
use hooks::TcSide;

// TC_ACT_UNSPEC (-1) is "continue with the next program/filter" for both
// TCX (TCX_NEXT) and cls_bpf direct-action, so the tracer never decides the
// packet's fate, even when other programs sit behind it.
const TC_NEXT: i32 = TC_ACT_UNSPEC;

#[classifier]
pub fn ft_ovl_egress(ctx: TcContext) -> i32 {
    let _ = hooks::try_tc(&ctx, Hop::OverlayEgress, TcSide::Overlay);
    TC_NEXT
}

#[classifier]
pub fn ft_ovl_ingress(ctx: TcContext) -> i32 {
    let _ = hooks::try_tc(&ctx, Hop::OverlayIngress, TcSide::Overlay);
    TC_NEXT
}

#[classifier]
pub fn ft_und_egress(ctx: TcContext) -> i32 {
    let _ = hooks::try_tc(&ctx, Hop::UnderlayEgress, TcSide::Underlay);
    TC_NEXT
}

#[classifier]
pub fn ft_und_ingress(ctx: TcContext) -> i32 {
    let _ = hooks::try_tc(&ctx, Hop::UnderlayIngress, TcSide::Underlay);
    TC_NEXT
}

#[classifier]
pub fn ft_pod_ingress(ctx: TcContext) -> i32 {
    let _ = hooks::try_tc(&ctx, Hop::PodIngress, TcSide::Pod);
    TC_NEXT
}

#[classifier]
pub fn ft_pod_egress(ctx: TcContext) -> i32 {
    let _ = hooks::try_tc(&ctx, Hop::PodEgress, TcSide::Pod);
    TC_NEXT
}

/// `vxlan_rcv(struct sock *sk, struct sk_buff *skb)`, entry: the skb still
/// carries its outer headers.
#[kprobe]
pub fn ft_vxlan_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(skb) = ctx.arg::<u64>(1) {
        let _ = hooks::try_vxlan_rcv_encapsulated(&ctx, skb);
    }
    0
}

#[fentry(function = "vxlan_rcv")]
pub fn ft_vxlan_fentry(ctx: FEntryContext) -> u32 {
    let skb: u64 = ctx.arg(1);
    let _ = hooks::try_vxlan_rcv_encapsulated(&ctx, skb);
    0
}

/// Fallback where neither kprobes nor fentry are allowed: the decapsulated
/// frame as the vxlan device hands it to the stack.
#[btf_tracepoint(function = "netif_receive_skb")]
pub fn ft_vxlan_tpbtf(ctx: BtfTracePointContext) -> i32 {
    let skb = skb_arg(&ctx);
    let _ = hooks::try_vxlan_rcv_decapsulated(&ctx, skb);
    0
}

#[tracepoint]
pub fn ft_vxlan_tp(ctx: TracePointContext) -> u32 {
    let _ = hooks::try_vxlan_rcv_tracepoint(&ctx);
    0
}

/// `kfree_skb(skb, location[, reason[, rx_sk]])`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn ft_drop_tpbtf(ctx: BtfTracePointContext) -> i32 {
    let skb = skb_arg(&ctx);
    let location: u64 = ctx.arg(1);
    let reason: u32 = if hooks::config().has_drop_reason != 0 {
        ctx.arg(2)
    } else {
        0
    };
    let _ = hooks::try_drop(&ctx, skb, location, reason);
    0
}

/// `kfree_skb(skb, location)` before 5.17: no reason argument, and the
/// verifier rejects any access to one, even on a branch never taken.
#[btf_tracepoint(function = "kfree_skb")]
pub fn ft_drop_tpbtf_noreason(ctx: BtfTracePointContext) -> i32 {
    let skb = skb_arg(&ctx);
    let location: u64 = ctx.arg(1);
    let _ = hooks::try_drop(&ctx, skb, location, 0);
    0
}

/// The `struct sk_buff *` first argument of a tp_btf program, as a plain
/// number. Loaded straight from the context the verifier types it as a
/// BTF pointer, and kernels before 6.x (5.10 measured) then refuse the
/// shifts of the byte-wise copy of `skb_addr` into the event ("pointer
/// arithmetic with >>= operator prohibited"). Read through the helper it
/// is a scalar; the programs only ever pass it to bpf_probe_read_kernel.
#[inline(always)]
fn skb_arg(ctx: &BtfTracePointContext) -> u64 {
    use aya_ebpf::{EbpfContext as _, helpers::bpf_probe_read_kernel};
    // SAFETY: a tp_btf context is the array of the tracepoint's u64 arguments.
    unsafe { bpf_probe_read_kernel(ctx.as_ptr() as *const u64) }.unwrap_or(0)
}

#[tracepoint]
pub fn ft_drop_tp(ctx: TracePointContext) -> u32 {
    let _ = hooks::try_drop_tracepoint(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
