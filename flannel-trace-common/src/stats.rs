//! Counters mode: per-CPU packet and byte counts in the kernel instead of
//! one event per packet, keyed by what an SRE compares between two nodes —
//! which peer, at which hop, on which device (and, for drops, why). Drops
//! are counted by userspace under [`drop_key`], from the drop records it
//! parses (see [`crate::dropped`]).

use crate::{
    Hop, PacketInfo,
    event::{AF_INET, AF_INET6, flags},
};

/// Key of one counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StatKey {
    /// The remote side: the peer's underlay address on the underlay hops,
    /// the remote pod subnet (address masked to the peer prefix) on the
    /// overlay and pod hops; for drops, the outer source of an
    /// encapsulated frame, else zero. IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// Raw `enum skb_drop_reason` of a drop; 0 for packets.
    pub reason: u32,
    pub ifindex: u32,
    /// [`Hop`] tag.
    pub hop: u8,
    /// [`AF_INET`], [`AF_INET6`], or 0 when `addr` is unset.
    pub family: u8,
    pub _pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatValue {
    pub packets: u64,
    pub bytes: u64,
}

/// Most distinct keys the kernel keeps; beyond it packets are counted as
/// `Counter::StatsFull`, not silently lost.
pub const STAT_KEYS: u32 = 4096;

const _: () = assert!(core::mem::size_of::<StatKey>() == 28);
const _: () = assert!(core::mem::size_of::<StatValue>() == 16);

/// Whether a hop carries a packet towards the peer (the remote side is the
/// destination) rather than from it.
#[inline(always)]
pub const fn towards_peer(hop: Hop) -> bool {
    matches!(
        hop,
        Hop::PodIngress | Hop::OverlayEgress | Hop::UnderlayEgress
    )
}

/// An IPv4 address (first four bytes of `addr`) with all but its first
/// `len` bits cleared; the rest of the array zero.
#[inline(always)]
pub fn masked_v4(addr: [u8; 16], len: u8) -> [u8; 16] {
    let v = u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]]);
    let m = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32) as u32)
    };
    let b = (v & m).to_be_bytes();
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&b);
    out
}

/// An IPv6 address with all but its first `len` bits cleared.
#[inline(always)]
pub fn masked_v6(addr: [u8; 16], len: u8) -> [u8; 16] {
    // Two u64 halves: 128-bit shifts become library calls the BPF target
    // does not have.
    let mask = |l: u8| {
        if l == 0 {
            0
        } else {
            u64::MAX << (64 - l.min(64) as u32)
        }
    };
    let hi = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]) & mask(len.min(64));
    let lo = u64::from_be_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]) & mask(len.saturating_sub(64));
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hi.to_be_bytes());
    out[8..].copy_from_slice(&lo.to_be_bytes());
    out
}

/// The key of a parsed packet at `hop` (not for drops).
#[inline(always)]
pub fn packet_key(p: &PacketInfo, hop: Hop, ifindex: u32, v4_len: u8, v6_len: u8) -> StatKey {
    let out = towards_peer(hop);
    let (addr, family) = if p.flags & flags::HAS_OUTER != 0 && hop != Hop::OverlayIngress {
        let t = &p.outer;
        (if out { t.dst } else { t.src }, t.family)
    } else if p.flags & flags::HAS_INNER != 0 {
        let t = &p.inner;
        let a = if out { t.dst } else { t.src };
        let a = if t.family == AF_INET6 {
            masked_v6(a, v6_len)
        } else {
            masked_v4(a, v4_len)
        };
        (a, t.family)
    } else {
        ([0; 16], 0)
    };
    StatKey {
        addr,
        reason: 0,
        ifindex,
        hop: hop as u8,
        family: if family == AF_INET || family == AF_INET6 {
            family
        } else {
            0
        },
        _pad: [0; 2],
    }
}

/// The key of a drop.
#[inline(always)]
pub fn drop_key(p: &PacketInfo, ifindex: u32, reason: u32) -> StatKey {
    let (addr, family) = if p.flags & flags::HAS_OUTER != 0 {
        (p.outer.src, p.outer.family)
    } else {
        ([0; 16], 0)
    };
    StatKey {
        addr,
        reason,
        ifindex,
        hop: Hop::Drop as u8,
        family,
        _pad: [0; 2],
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, every bit pattern valid, explicit padding.
    unsafe impl aya::Pod for super::StatKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StatValue {}
}
