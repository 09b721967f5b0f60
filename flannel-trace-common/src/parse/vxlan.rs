//! Frames as the hooks see them: an inner frame on the overlay side, VXLAN
//! on the underlay, a dropped skb from its network header, and the outer
//! headers left in front of a decapsulated frame.

use super::ARP_LEN;
use super::Bytes;
use super::ETH_HLEN;
use super::ETH_P_ARP;
use super::ETH_P_IP;
use super::IPPROTO_UDP;
use super::Layer;
use super::ParseError;
use super::UDP_HLEN;
use super::VXLAN_HLEN;
use super::be16;
use super::ip::Ip;
use super::ip::parse_ipv4;
use super::ip::parse_ipv6;
use super::ip::parse_l3;
use super::ip::parse_l4;
use super::ip::tuple;
use super::link::NO_TAG;
use super::link::Tags;
use super::link::parse_eth;
use crate::config::Ports;
use crate::event::AF_INET;
use crate::event::PacketInfo;
use crate::event::Tuple;
use crate::event::flags;

/// Parse a frame seen on the overlay side (the vxlan device), where the
/// bytes are the inner frame itself.
#[inline(always)]
pub fn parse_inner<B: Bytes + ?Sized>(
    b: &B,
    layer: Layer,
    off: usize,
    out: &mut PacketInfo,
) -> Result<(), ParseError> {
    if layer == Layer::Ethernet {
        let l2 = parse_eth(b, off)?;
        if l2.ethertype == ETH_P_ARP {
            return parse_arp(b, l2.l3, l2.dmac, out);
        }
    }
    let (ip, _, dmac) = parse_l3(b, layer, off)?;
    // A total length shorter than the header is a broken packet; 0 is left
    // alone (IPv4 BIG TCP super-packets carry 0 and the skb's length).
    if ip.family == AF_INET && ip.total_len != 0 && (ip.total_len as usize) < ip.l4 - ip.l3 {
        return Err(ParseError::BadIp);
    }
    fill_inner(b, &ip, dmac, out);
    Ok(())
}

/// An inner ARP packet (IPv4 over Ethernet only; anything else is not
/// this overlay's business): a missing neighbour answer is exactly what an
/// SRE looks for on an overlay.
#[inline(always)]
fn parse_arp<B: Bytes + ?Sized>(
    b: &B,
    off: usize,
    dmac: [u8; 6],
    out: &mut PacketInfo,
) -> Result<(), ParseError> {
    let a: [u8; ARP_LEN] = b.read(off).ok_or(ParseError::Short)?;
    if be16([a[0], a[1]]) != 1 || be16([a[2], a[3]]) != ETH_P_IP || a[4] != 6 || a[5] != 4 {
        return Err(ParseError::NotIp);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[..4].copy_from_slice(&a[14..18]);
    dst[..4].copy_from_slice(&a[24..28]);
    out.inner = Tuple {
        src,
        dst,
        sport: 0,
        dport: 0,
        family: AF_INET,
        proto: 0,
        _pad: [0; 2],
    };
    out.icmp_type = be16([a[6], a[7]]) as u8;
    out.inner_dmac = dmac;
    out.flags |= flags::HAS_INNER | flags::INNER_ARP | flags::HAS_INNER_MAC | flags::HAS_L4;
    Ok(())
}

/// Record `ip` (already parsed) as the inner packet, with its L4 header.
#[inline(always)]
fn fill_inner<B: Bytes + ?Sized>(b: &B, ip: &Ip, dmac: Option<[u8; 6]>, out: &mut PacketInfo) {
    if let Some(mac) = dmac {
        out.inner_dmac = mac;
        out.flags |= flags::HAS_INNER_MAC;
    }
    out.inner = tuple(ip);
    out.inner_len = ip.total_len;
    out.ip_hlen = (ip.l4 - ip.l3) as u16;
    out.ip_id = ip.id;
    out.flags |= flags::HAS_INNER;
    if ip.later_fragment {
        out.flags |= flags::INNER_FRAGMENT;
        return;
    }
    // A missing L4 header is reported with what was read, and flagged.
    if parse_l4(b, ip.proto, ip.l4, out).is_none() {
        out.flags |= flags::TRUNCATED;
    } else {
        out.flags |= flags::HAS_L4;
    }
}

/// What a dropped skb turned out to be (see [`parse_dropped`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// VXLAN on one of the overlay's ports: outer and inner headers read.
    Encapsulated,
    /// Not encapsulated: the packet itself was read as the inner packet
    /// (on the vxlan device that is what it is; elsewhere the caller
    /// decides whether it belongs to the pod network).
    Plain,
    /// To one of the overlay's ports, but not decodable as VXLAN: only the
    /// outer addresses and ports are valid ([`flags::UNDECODABLE`]).
    Undecodable,
}

/// Parse a dropped skb from its network header, reading the IP header
/// once: either it is VXLAN on one of `ports` (and `on_vxlan` is false:
/// on the vxlan device every skb is an inner frame), or the packet is
/// taken as an inner one. Runs in userspace, over the bytes the drop hook
/// copied (see [`crate::dropped`]); [`prefilter::dropped`] is what the hook
/// checks before it copies them.
#[inline(always)]
pub fn parse_dropped<B: Bytes + ?Sized>(
    b: &B,
    layer: Layer,
    off: usize,
    ports: &Ports,
    on_vxlan: bool,
    out: &mut PacketInfo,
) -> Result<Dropped, ParseError> {
    let (ip, vlans, dmac) = parse_l3(b, layer, off)?;
    if !on_vxlan
        && ip.proto == IPPROTO_UDP
        && !ip.later_fragment
        && let Some(p) = b.read::<4>(ip.l4)
        && ports.contains(be16([p[2], p[3]]))
    {
        // The kernel drops what it cannot decode either: report it with
        // what could be read, rather than not at all.
        return Ok(match encapsulated(b, &ip, vlans, p, out) {
            Ok(()) => Dropped::Encapsulated,
            Err(_) => {
                out.flags &= !(flags::HAS_OUTER | flags::HAS_INNER | flags::HAS_L4);
                out.flags |= flags::UNDECODABLE;
                Dropped::Undecodable
            }
        });
    }
    fill_inner(b, &ip, dmac, out);
    Ok(Dropped::Plain)
}

/// The outer headers of a VXLAN frame whose IP header is `ip` and whose
/// UDP ports are `ports` (the header's first four bytes), then its inner
/// frame. The outer tuple is filled first, so that a caller that reports
/// an undecodable frame still has its addresses and ports.
#[inline(always)]
fn encapsulated<B: Bytes + ?Sized>(
    b: &B,
    ip: &Ip,
    vlans: Tags,
    ports: [u8; 4],
    out: &mut PacketInfo,
) -> Result<(), ParseError> {
    out.outer = tuple(ip);
    out.outer.sport = be16([ports[0], ports[1]]);
    out.outer.dport = be16([ports[2], ports[3]]);
    out.outer_len = ip.total_len;
    if vlans.outer != NO_TAG {
        out.vlan = vlans.outer;
        out.flags |= flags::OUTER_VLAN;
    }
    if vlans.inner != NO_TAG {
        out.inner_vlan = vlans.inner;
        out.flags |= flags::QINQ;
    }
    // Our port, so every failure from here on is the overlay's and counted.
    let udp: [u8; UDP_HLEN] = b.read(ip.l4).ok_or(ParseError::Short)?;
    let udp_len = be16([udp[4], udp[5]]) as usize;
    let need = UDP_HLEN + VXLAN_HLEN + ETH_HLEN;
    // Lengths must hold a VXLAN frame: the UDP length, and the IP length
    // when it is set (0: a super-packet, whose length is the skb's).
    let ip_room = ip.total_len as usize;
    if udp_len < need || (ip_room != 0 && ip.l3 + ip_room < ip.l4 + udp_len) {
        return Err(ParseError::Short);
    }
    let vx_off = ip.l4 + UDP_HLEN;
    out.vni = parse_vxlan(b, vx_off)?;
    out.flags |= flags::HAS_OUTER;
    parse_inner(b, Layer::Ethernet, vx_off + VXLAN_HLEN, out)
}
/// Parse a frame seen on the underlay side. Succeeds only for VXLAN on one
/// of `ports`; the inner frame is parsed too.
#[inline(always)]
pub fn parse_underlay<B: Bytes + ?Sized>(
    b: &B,
    layer: Layer,
    off: usize,
    ports: &Ports,
    out: &mut PacketInfo,
) -> Result<(), ParseError> {
    // Until the UDP port is read a frame is nobody's: a runt, a cut IP
    // header or a bad version on the underlay NIC is not the overlay's to
    // count (other protocols have their own counters for that).
    let (ip, vlans, _) = parse_l3(b, layer, off).map_err(|e| match e {
        ParseError::NotIp => e,
        _ => ParseError::NotOverlay,
    })?;
    if ip.proto != IPPROTO_UDP || ip.later_fragment {
        return Err(ParseError::NotOverlay);
    }
    let p: [u8; 4] = b.read(ip.l4).ok_or(ParseError::NotOverlay)?;
    if !ports.contains(be16([p[2], p[3]])) {
        return Err(ParseError::NotOverlay);
    }
    encapsulated(b, &ip, vlans, p, out)
}

/// The VNI of the VXLAN header at `off`, if the header is valid.
#[inline(always)]
fn parse_vxlan<B: Bytes + ?Sized>(b: &B, off: usize) -> Result<u32, ParseError> {
    let vx: [u8; VXLAN_HLEN] = b.read(off).ok_or(ParseError::Short)?;
    // RFC 7348: the I flag says the VNI is valid.
    if vx[0] & 0x08 == 0 {
        return Err(ParseError::BadVxlan);
    }
    Ok(u32::from_be_bytes([0, vx[4], vx[5], vx[6]]))
}

/// After decapsulation the outer headers still sit in the buffer just in
/// front of the inner Ethernet header at `inner_mac`: VXLAN, UDP, then IP.
/// Recover them when every check agrees (UDP port, IP version, header length
/// and protocol); otherwise leave `out` untouched.
#[inline(always)]
pub fn recover_outer<B: Bytes + ?Sized>(
    b: &B,
    inner_mac: usize,
    ports: &Ports,
    out: &mut PacketInfo,
) -> bool {
    let Some(vx_off) = inner_mac.checked_sub(VXLAN_HLEN) else {
        return false;
    };
    let Some(udp_off) = vx_off.checked_sub(UDP_HLEN) else {
        return false;
    };
    let Some(udp) = b.read::<UDP_HLEN>(udp_off) else {
        return false;
    };
    let port = be16([udp[2], udp[3]]);
    if !ports.contains(port) {
        return false;
    }
    let Ok(vni) = parse_vxlan(b, vx_off) else {
        return false;
    };
    let ip = if let Some(ip) = udp_off
        .checked_sub(20)
        .and_then(|o| parse_ipv4(b, o).ok())
        .filter(|ip| ip.l4 == udp_off && ip.proto == IPPROTO_UDP)
    {
        ip
    } else if let Some(ip) = udp_off
        .checked_sub(40)
        .and_then(|o| parse_ipv6(b, o).ok())
        .filter(|ip| ip.l4 == udp_off && ip.proto == IPPROTO_UDP)
    {
        ip
    } else {
        return false;
    };
    out.outer = tuple(&ip);
    out.outer.sport = be16([udp[0], udp[1]]);
    out.outer.dport = port;
    out.outer_len = ip.total_len;
    out.vni = vni;
    out.flags |= flags::HAS_OUTER | flags::OUTER_FROM_HEADROOM;
    true
}
