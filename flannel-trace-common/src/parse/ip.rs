//! IPv4 (honouring the IHL), IPv6 (walking its extension headers) and the
//! L4 header after them.

use super::Bytes;
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
use super::IPPROTO_ICMP;
use super::IPPROTO_ICMPV6;
use super::IPPROTO_TCP;
use super::IPPROTO_UDP;
use super::IPV4_HLEN;
use super::IPV6_HLEN;
use super::Layer;
use super::MAX_IPV6_EXT;
use super::ParseError;
use super::be16;
use super::link::Tags;
use super::link::parse_eth;
use crate::event::AF_INET;
use crate::event::AF_INET6;
use crate::event::PacketInfo;
use crate::event::Tuple;

/// The parts of an IP header the tracer reports.
pub(super) struct Ip {
    /// Offset of the IP header.
    pub(super) l3: usize,
    pub(super) family: u8,
    pub(super) proto: u8,
    pub(super) src: [u8; 16],
    pub(super) dst: [u8; 16],
    pub(super) l4: usize,
    pub(super) total_len: u16,
    pub(super) id: u32,
    /// A non-first fragment: the L4 header is not in this packet.
    pub(super) later_fragment: bool,
}

#[inline(always)]
pub(super) fn parse_ipv4<B: Bytes + ?Sized>(b: &B, off: usize) -> Result<Ip, ParseError> {
    let h: [u8; IPV4_HLEN] = b.read(off).ok_or(ParseError::Short)?;
    if h[0] >> 4 != 4 {
        return Err(ParseError::BadIp);
    }
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(ParseError::BadIp);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[..4].copy_from_slice(&h[12..16]);
    dst[..4].copy_from_slice(&h[16..20]);
    let frag = be16([h[6], h[7]]);
    // The total length is not judged here: an outer header whose length
    // cannot hold its UDP datagram is still a frame to our port (whose
    // kernel drop is worth reporting), which `encapsulated` tells; an
    // inner one is judged by `parse_inner`.
    let total_len = be16([h[2], h[3]]);
    Ok(Ip {
        l3: off,
        family: AF_INET,
        proto: h[9],
        src,
        dst,
        l4: off + ihl,
        total_len,
        id: be16([h[4], h[5]]) as u32,
        later_fragment: frag & 0x1fff != 0,
    })
}

#[inline(always)]
pub(super) fn parse_ipv6<B: Bytes + ?Sized>(b: &B, off: usize) -> Result<Ip, ParseError> {
    let h: [u8; IPV6_HLEN] = b.read(off).ok_or(ParseError::Short)?;
    if h[0] >> 4 != 6 {
        return Err(ParseError::BadIp);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    let payload = be16([h[4], h[5]]);
    let mut next = h[6];
    let mut l4 = off + 40;
    let mut id = 0u32;
    let mut later_fragment = false;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6:
            // length in 8-octet units, not counting the first 8.
            EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS | EXT_MOBILITY | EXT_HIP | EXT_SHIM6 => {
                let e: [u8; 2] = b.read(l4).ok_or(ParseError::Short)?;
                next = e[0];
                l4 += (e[1] as usize + 1) * 8;
            }
            // Fragment header: fixed 8 bytes.
            EXT_FRAGMENT => {
                let e: [u8; 8] = b.read(l4).ok_or(ParseError::Short)?;
                next = e[0];
                later_fragment = be16([e[2], e[3]]) >> 3 != 0;
                id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
                l4 += 8;
            }
            // Authentication header: length in 4-octet units, minus 2.
            EXT_AUTH => {
                let e: [u8; 2] = b.read(l4).ok_or(ParseError::Short)?;
                next = e[0];
                l4 += (e[1] as usize + 2) * 4;
            }
            _ => break,
        }
    }
    Ok(Ip {
        l3: off,
        family: AF_INET6,
        proto: next,
        src,
        dst,
        l4,
        total_len: payload.saturating_add(40),
        id,
        later_fragment,
    })
}

/// An IP header with what came before it: the VLAN tags and the
/// destination MAC, when the frame started at Ethernet.
pub(super) type L3 = (Ip, Tags, Option<[u8; 6]>);

#[inline(always)]
pub(super) fn parse_l3<B: Bytes + ?Sized>(
    b: &B,
    layer: Layer,
    off: usize,
) -> Result<L3, ParseError> {
    let (ethertype, l3, vlans, dmac) = match layer {
        Layer::Ethernet => {
            let l2 = parse_eth(b, off)?;
            (l2.ethertype, l2.l3, l2.vlans, Some(l2.dmac))
        }
        Layer::Ipv4 => (ETH_P_IP, off, Tags::NONE, None),
        Layer::Ipv6 => (ETH_P_IPV6, off, Tags::NONE, None),
    };
    let ip = match ethertype {
        ETH_P_IP => parse_ipv4(b, l3)?,
        ETH_P_IPV6 => parse_ipv6(b, l3)?,
        _ => return Err(ParseError::NotIp),
    };
    Ok((ip, vlans, dmac))
}

#[inline(always)]
pub(super) fn tuple(ip: &Ip) -> Tuple {
    Tuple {
        src: ip.src,
        dst: ip.dst,
        sport: 0,
        dport: 0,
        family: ip.family,
        proto: ip.proto,
        _pad: [0; 2],
    }
}

#[inline(always)]
pub(super) fn parse_l4<B: Bytes + ?Sized>(
    b: &B,
    proto: u8,
    off: usize,
    out: &mut PacketInfo,
) -> Option<()> {
    match proto {
        IPPROTO_TCP => {
            let h: [u8; 14] = b.read(off)?;
            out.inner.sport = be16([h[0], h[1]]);
            out.inner.dport = be16([h[2], h[3]]);
            out.tcp_seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            out.tcp_ack = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            out.tcp_flags = h[13];
            out.tcp_hlen = (h[12] >> 4) * 4;
        }
        IPPROTO_UDP => {
            let h: [u8; 4] = b.read(off)?;
            out.inner.sport = be16([h[0], h[1]]);
            out.inner.dport = be16([h[2], h[3]]);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let h: [u8; 8] = b.read(off)?;
            out.icmp_type = h[0];
            out.icmp_code = h[1];
            out.icmp_id = be16([h[4], h[5]]);
            out.icmp_seq = be16([h[6], h[7]]);
        }
        // Other protocols are reported with addresses only.
        _ => {}
    }
    Some(())
}
