//! Cheapest first: what a hook can tell from a few fixed-offset bytes of
//! an Ethernet frame before it spends anything on parsing. `false` only
//! when the full parser would certainly not report the frame; every shape
//! the fixed offsets cannot judge (VLAN tags, IPv4 options, IPv6 extension
//! headers, bytes out of reach) is `true`, and left to the parser.

use super::Bytes;
use super::ETH_HLEN;
use super::ETH_P_8021AD;
use super::ETH_P_8021Q;
use super::ETH_P_IP;
use super::ETH_P_IPV6;
use super::EXT_AUTH;
use super::EXT_DEST_OPTS;
use super::EXT_FRAGMENT;
use super::EXT_HIP;
use super::EXT_HOP_BY_HOP;
use super::EXT_MOBILITY;
use super::EXT_ROUTING;
use super::EXT_SHIM6;
use super::IPPROTO_ICMPV6;
use super::IPPROTO_TCP;
use super::IPPROTO_UDP;
use super::IPV4_HLEN;
use super::IPV6_HLEN;
use super::Layer;
use super::be16;
use crate::config::Overlay;
use crate::config::Ports;
use crate::config::words16;

/// Could this be VXLAN on one of `ports`?
#[inline(always)]
pub fn underlay<B: Bytes + ?Sized>(b: &B, ports: &Ports) -> bool {
    let Some(et) = b.read::<2>(12) else {
        return true;
    };
    match be16(et) {
        ETH_P_IP => {
            // Version/IHL .. destination port of an option-less header.
            let Some(h) = b.read::<24>(ETH_HLEN) else {
                return true;
            };
            if h[0] != 0x45 {
                return true;
            }
            let later_fragment = be16([h[6], h[7]]) & 0x1fff != 0;
            h[9] == IPPROTO_UDP && !later_fragment && ports.contains(be16([h[22], h[23]]))
        }
        ETH_P_IPV6 => {
            let Some(h) = b.read::<2>(ETH_HLEN + 6) else {
                return true;
            };
            match h[0] {
                IPPROTO_UDP => match b.read::<2>(ETH_HLEN + IPV6_HLEN + 2) {
                    Some(p) => ports.contains(be16(p)),
                    None => true,
                },
                IPPROTO_TCP | IPPROTO_ICMPV6 => false,
                _ => true,
            }
        }
        ETH_P_8021Q | ETH_P_8021AD => true,
        _ => false,
    }
}

/// Could [`parse_dropped`] off the vxlan device, with the pod-network
/// test after it, report this skb (IP from `off`, at `layer`)? The drop
/// hook copies the bytes only then. `false` only where the parser
/// certainly reports nothing: a header it would fail to read (the copy
/// holds no more than the kernel could read), addresses outside the pod
/// network and neither UDP to one of `ports` in a first fragment nor an
/// IPv6 extension header in front of the transport. Everything else,
/// undecodable frames to our port included, is left to the parser.
#[inline(always)]
pub fn dropped<B: Bytes + ?Sized>(
    b: &B,
    layer: Layer,
    off: usize,
    ports: &Ports,
    o: &Overlay,
) -> bool {
    let v4 = |a: &[u8]| u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
    let (proto, l4) = match layer {
        Layer::Ipv4 => {
            let Some(h) = b.read::<IPV4_HLEN>(off) else {
                return false;
            };
            if o.contains_v4(v4(&h[12..16])) && o.contains_v4(v4(&h[16..20])) {
                return true;
            }
            if be16([h[6], h[7]]) & 0x1fff != 0 {
                // A later fragment is parsed as a plain packet.
                return false;
            }
            (h[9], off + ((h[0] & 0x0f) as usize) * 4)
        }
        Layer::Ipv6 => {
            let Some(h) = b.read::<IPV6_HLEN>(off) else {
                return false;
            };
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&h[8..24]);
            dst.copy_from_slice(&h[24..40]);
            if o.contains_v6(words16(&src)) && o.contains_v6(words16(&dst)) {
                return true;
            }
            match h[6] {
                EXT_HOP_BY_HOP | EXT_ROUTING | EXT_FRAGMENT | EXT_AUTH | EXT_DEST_OPTS
                | EXT_MOBILITY | EXT_HIP | EXT_SHIM6 => return true,
                next => (next, off + IPV6_HLEN),
            }
        }
        Layer::Ethernet => return true,
    };
    // Unreadable ports send the parser down the plain path, which the
    // addresses above already ruled out.
    proto == IPPROTO_UDP
        && b.read::<4>(l4)
            .is_some_and(|p| ports.contains(be16([p[2], p[3]])))
}

/// Could this be a packet between two pod-network addresses?
#[inline(always)]
pub fn pod<B: Bytes + ?Sized>(b: &B, o: &Overlay) -> bool {
    let Some(et) = b.read::<2>(12) else {
        return true;
    };
    match be16(et) {
        ETH_P_IP => match b.read::<8>(ETH_HLEN + 12) {
            Some(a) => {
                o.contains_v4(u32::from_ne_bytes([a[0], a[1], a[2], a[3]]))
                    && o.contains_v4(u32::from_ne_bytes([a[4], a[5], a[6], a[7]]))
            }
            None => true,
        },
        ETH_P_IPV6 => match b.read::<32>(ETH_HLEN + 8) {
            Some(a) => {
                let mut src = [0u8; 16];
                let mut dst = [0u8; 16];
                src.copy_from_slice(&a[..16]);
                dst.copy_from_slice(&a[16..]);
                o.contains_v6(words16(&src)) && o.contains_v6(words16(&dst))
            }
            None => true,
        },
        ETH_P_8021Q | ETH_P_8021AD => true,
        _ => false,
    }
}
