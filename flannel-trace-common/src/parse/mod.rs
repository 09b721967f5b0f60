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

mod ip;
mod keep;
mod link;
pub mod prefilter;
mod vxlan;

use network_types::{
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};

pub use self::keep::{filter_matches, in_overlay, wanted};
pub use self::vxlan::{Dropped, parse_dropped, parse_inner, parse_underlay, recover_outer};

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

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}
