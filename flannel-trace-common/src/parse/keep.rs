//! The keep rules every hook applies to a parsed packet.

use crate::config::Overlay;
use crate::config::words16;
use crate::event::AF_INET;
use crate::event::PacketInfo;
use crate::event::flags;

/// The keep rules every hook applies to a parsed packet: the VNI (of an
/// encapsulated frame), the user's filter, and outside counters mode the
/// sample.
#[inline(always)]
pub fn wanted(cfg: &crate::Config, p: &PacketInfo) -> bool {
    let vni_ok =
        cfg.vni == crate::config::ANY_VNI || p.flags & flags::HAS_OUTER == 0 || p.vni == cfg.vni;
    vni_ok
        && filter_matches(cfg, p)
        && (cfg.mode == crate::config::MODE_STATS
            || crate::fingerprint::sampled_in(p, cfg.sample_mask))
}

/// Whether a parsed packet passes the user's inner protocol/address filter.
///
/// Addresses are compared as two 64-bit words rather than byte by byte: every
/// comparison is a branch the eBPF verifier must explore.
#[inline(always)]
pub fn filter_matches(cfg: &crate::Config, p: &PacketInfo) -> bool {
    if cfg.filter_proto == 0 && cfg.filter_family == 0 {
        return true;
    }
    if p.flags & flags::HAS_INNER == 0 {
        // Nothing to filter on.
        return false;
    }
    if cfg.filter_proto != 0 && p.inner.proto != cfg.filter_proto {
        return false;
    }
    if cfg.filter_family == 0 {
        return true;
    }
    if p.inner.family != cfg.filter_family {
        return false;
    }
    let want = words(&cfg.filter_addr, cfg.filter_family);
    words(&p.inner.src, cfg.filter_family) == want || words(&p.inner.dst, cfg.filter_family) == want
}

#[inline(always)]
fn words(a: &[u8; 16], family: u8) -> (u64, u64) {
    let hi = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let lo = u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    if family == AF_INET {
        (
            hi & u64::from_ne_bytes([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
            0,
        )
    } else {
        (hi, lo)
    }
}

/// Whether both inner addresses of a parsed packet lie in the overlay's pod
/// networks: pod-to-pod (or pod-to-node) traffic of this overlay, as
/// opposed to a pod talking to the world.
#[inline(always)]
pub fn in_overlay(o: &Overlay, p: &PacketInfo) -> bool {
    if p.flags & flags::HAS_INNER == 0 {
        return false;
    }
    let t = &p.inner;
    if t.family == AF_INET {
        let v4 = |a: &[u8; 16]| u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
        o.contains_v4(v4(&t.src)) && o.contains_v4(v4(&t.dst))
    } else {
        o.contains_v6(words16(&t.src)) && o.contains_v6(words16(&t.dst))
    }
}
