//! The TC hops: overlay (flannel.1), underlay NIC and pod side (cni0),
//! each direction. A TC program hands every packet on unchanged.

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, TC_ACT_UNSPEC},
    macros::classifier,
    programs::TcContext,
};
use flannel_trace_common::{
    Config, Hop, PacketInfo,
    config::{ANY_VNI, MODE_STATS},
    event::{AF_INET, flags},
    parse::{Bytes, Layer, in_overlay, parse_inner, parse_underlay, prefilter},
    stats::{StatKey, masked_v4, towards_peer},
};

use super::{config, keep, report};
use crate::emit::{Meta, Slot, bump, ports, scratch};

// TC_ACT_UNSPEC (-1) is "continue with the next program/filter" for both
// TCX (TCX_NEXT) and cls_bpf direct-action, so the tracer never decides the
// packet's fate, even when other programs sit behind it.
const TC_NEXT: i32 = TC_ACT_UNSPEC;

#[classifier]
pub fn ft_ovl_egress(ctx: TcContext) -> i32 {
    let _ = try_tc(&ctx, Hop::OverlayEgress, TcSide::Overlay);
    TC_NEXT
}

#[classifier]
pub fn ft_ovl_ingress(ctx: TcContext) -> i32 {
    let _ = try_tc(&ctx, Hop::OverlayIngress, TcSide::Overlay);
    TC_NEXT
}

#[classifier]
pub fn ft_und_egress(ctx: TcContext) -> i32 {
    let _ = try_tc(&ctx, Hop::UnderlayEgress, TcSide::Underlay);
    TC_NEXT
}

#[classifier]
pub fn ft_und_ingress(ctx: TcContext) -> i32 {
    let _ = try_tc(&ctx, Hop::UnderlayIngress, TcSide::Underlay);
    TC_NEXT
}

#[classifier]
pub fn ft_pod_ingress(ctx: TcContext) -> i32 {
    let _ = try_tc(&ctx, Hop::PodIngress, TcSide::Pod);
    TC_NEXT
}

#[classifier]
pub fn ft_pod_egress(ctx: TcContext) -> i32 {
    let _ = try_tc(&ctx, Hop::PodEgress, TcSide::Pod);
    TC_NEXT
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

/// Where a TC program sits decides what it parses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TcSide {
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
fn try_tc(ctx: &TcContext, hop: Hop, side: TcSide) -> Result<(), ()> {
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
