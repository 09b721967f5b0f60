//! The one bounds-checked packet parser, shared by every hook.
//!
//! Every read goes through [`Bytes::read`], which either returns the whole
//! header or nothing: there is no pointer arithmetic past a checked bound. In
//! TC programs the source is `bpf_skb_load_bytes` (which also reaches into
//! the non-linear part of an skb); in kernel probes it is a bounded
//! `bpf_probe_read_kernel` of the linear buffer; for drops, in userspace, the
//! bytes the drop hook copied; in unit tests a byte slice.
//!
//! The parser honours the IPv4 IHL, walks IPv6 extension headers, skips up to
//! two VLAN tags, and never guesses: a frame it cannot decode is an error the
//! caller counts, not a half-filled event.

use network_types::{
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};

use crate::{
    config::{Overlay, Ports, words16},
    event::{AF_INET, AF_INET6, PacketInfo, Tuple, flags},
};

/// A source of packet bytes.
pub trait Bytes {
    /// The `N` bytes at `off`, or `None` if any of them lies outside the
    /// readable packet.
    fn read<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
}

impl Bytes for [u8] {
    #[inline(always)]
    fn read<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let end = off.checked_add(N)?;
        let s = self.get(off..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Some(out)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A required header lies beyond the readable bytes.
    Short,
    /// Not IPv4/IPv6 (ARP, LLDP, ...): nothing to report, not an error of
    /// the overlay.
    NotIp,
    /// IP, but not VXLAN on the traced port: not this overlay's traffic.
    NotOverlay,
    /// The IP header is invalid (bad version or IHL).
    BadIp,
    /// UDP to the VXLAN port but without a valid VXLAN header (I flag unset).
    BadVxlan,
}

impl ParseError {
    /// Whether this frame belongs to the overlay yet could not be decoded:
    /// such frames are counted as unparsed rather than silently ignored.
    pub const fn is_overlay_failure(self) -> bool {
        matches!(
            self,
            ParseError::BadVxlan | ParseError::Short | ParseError::BadIp
        )
    }
}

pub const ETH_HLEN: usize = EthHdr::LEN;
pub const VXLAN_HLEN: usize = 8;
const UDP_HLEN: usize = UdpHdr::LEN;
// network-types keeps ethertypes in network byte order; the parser compares
// host-order values read with `be16`.
const ETH_P_IP: u16 = u16::from_be(EtherType::Ipv4 as u16);
const ETH_P_IPV6: u16 = u16::from_be(EtherType::Ipv6 as u16);
const ETH_P_8021Q: u16 = u16::from_be(EtherType::Ieee8021q as u16);
const ETH_P_8021AD: u16 = u16::from_be(EtherType::Ieee8021ad as u16);
const ETH_P_ARP: u16 = u16::from_be(EtherType::Arp as u16);
/// ARP for IPv4 over Ethernet: header, two MACs, two IPv4 addresses.
const ARP_LEN: usize = 28;
pub const IPPROTO_ICMP: u8 = IpProto::Icmp as u8;
pub const IPPROTO_TCP: u8 = IpProto::Tcp as u8;
pub const IPPROTO_UDP: u8 = IpProto::Udp as u8;
pub const IPPROTO_ICMPV6: u8 = IpProto::Ipv6Icmp as u8;
const IPV4_HLEN: usize = Ipv4Hdr::LEN;
const IPV6_HLEN: usize = Ipv6Hdr::LEN;
// IPv6 extension headers the parser walks.
const EXT_HOP_BY_HOP: u8 = IpProto::HopOpt as u8;
const EXT_ROUTING: u8 = IpProto::Ipv6Route as u8;
const EXT_FRAGMENT: u8 = IpProto::Ipv6Frag as u8;
const EXT_AUTH: u8 = IpProto::Ah as u8;
const EXT_DEST_OPTS: u8 = IpProto::Ipv6Opts as u8;
const EXT_MOBILITY: u8 = 135;
const EXT_HIP: u8 = 139;
const EXT_SHIM6: u8 = 140;
const MAX_VLAN_TAGS: usize = 2;
const MAX_IPV6_EXT: usize = 6;

/// Where the bytes of a frame start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Ethernet,
    Ipv4,
    Ipv6,
}

impl Layer {
    /// The layer implied by an ethertype (e.g. `skb->protocol`), if IP.
    #[inline(always)]
    pub fn from_ethertype(proto: u16) -> Option<Layer> {
        match proto {
            ETH_P_IP => Some(Layer::Ipv4),
            ETH_P_IPV6 => Some(Layer::Ipv6),
            _ => None,
        }
    }
}

struct L2 {
    ethertype: u16,
    l3: usize,
    vlans: Tags,
    dmac: [u8; 6],
}

/// The VLAN IDs found in a frame's bytes, outermost first, [`NO_TAG`] where
/// there is none. Plain numbers rather than `Option`s: an `Option` leaves
/// bytes of the struct unwritten when `None`, and the 5.10 verifier refuses
/// a program that copies such a struct through the stack.
#[derive(Clone, Copy)]
struct Tags {
    outer: u16,
    /// The second tag (QinQ).
    inner: u16,
}

/// Not a VLAN ID (those are 12 bits).
const NO_TAG: u16 = u16::MAX;

impl Tags {
    const NONE: Tags = Tags {
        outer: NO_TAG,
        inner: NO_TAG,
    };
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn parse_eth<B: Bytes + ?Sized>(b: &B, off: usize) -> Result<L2, ParseError> {
    let eth: [u8; ETH_HLEN] = b.read(off).ok_or(ParseError::Short)?;
    let mut ethertype = be16([eth[12], eth[13]]);
    let mut l3 = off + ETH_HLEN;
    let mut vlans = Tags::NONE;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag: [u8; 4] = b.read(l3).ok_or(ParseError::Short)?;
        let vid = be16([tag[0], tag[1]]) & 0x0fff;
        // Both tags are in the bytes when no device moved one into skb
        // metadata (e.g. a QinQ frame sent through a packet socket).
        if vlans.outer == NO_TAG {
            vlans.outer = vid;
        } else {
            vlans.inner = vid;
        }
        ethertype = be16([tag[2], tag[3]]);
        l3 += 4;
    }
    Ok(L2 {
        ethertype,
        l3,
        vlans,
        dmac: [eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]],
    })
}

/// The parts of an IP header the tracer reports.
struct Ip {
    /// Offset of the IP header.
    l3: usize,
    family: u8,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    l4: usize,
    total_len: u16,
    id: u32,
    /// A non-first fragment: the L4 header is not in this packet.
    later_fragment: bool,
}

#[inline(always)]
fn parse_ipv4<B: Bytes + ?Sized>(b: &B, off: usize) -> Result<Ip, ParseError> {
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
fn parse_ipv6<B: Bytes + ?Sized>(b: &B, off: usize) -> Result<Ip, ParseError> {
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
type L3 = (Ip, Tags, Option<[u8; 6]>);

#[inline(always)]
fn parse_l3<B: Bytes + ?Sized>(b: &B, layer: Layer, off: usize) -> Result<L3, ParseError> {
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
fn tuple(ip: &Ip) -> Tuple {
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

#[inline(always)]
fn parse_l4<B: Bytes + ?Sized>(b: &B, proto: u8, off: usize, out: &mut PacketInfo) -> Option<()> {
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

/// Cheapest first: what a hook can tell from a few fixed-offset bytes of
/// an Ethernet frame before it spends anything on parsing. `false` only
/// when the full parser would certainly not report the frame; every shape
/// the fixed offsets cannot judge (VLAN tags, IPv4 options, IPv6 extension
/// headers, bytes out of reach) is `true`, and left to the parser.
pub mod prefilter {
    use super::*;

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
}
