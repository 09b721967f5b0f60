//! Frames built byte by byte: Ethernet (with 802.1Q/802.1ad tags), IPv4
//! (options, fragments, any length field), IPv6 (extension headers), UDP,
//! VXLAN, ICMP, ARP. Every length and checksum is computed unless a test
//! overrides it on purpose, so a crafted corpus case differs from a correct
//! frame in exactly the field it means to break.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const EXT_HOP_BY_HOP: u8 = 0;
pub const EXT_ROUTING: u8 = 43;
pub const EXT_FRAGMENT: u8 = 44;
pub const EXT_DEST_OPTS: u8 = 60;

/// A MAC address from its `aa:bb:..` text (as `ip -j link` prints it).
pub fn mac(text: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (i, part) in text.split(':').enumerate().take(6) {
        out[i] = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    out
}

/// An Ethernet header, then one tag per `(tpid, vid)`, then `payload`.
pub fn ethernet(
    dst: [u8; 6],
    src: [u8; 6],
    tags: &[(u16, u16)],
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + 4 * tags.len() + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The Internet checksum (RFC 1071) of `data`, starting from `sum`.
pub fn checksum(sum: u32, data: &[u8]) -> u16 {
    let mut s = sum;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        s += u32::from(word);
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An IPv4 header's fields; `build` fills length and checksum.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub id: u16,
    /// Flags and fragment offset (in 8-byte units): `MF` is 0x2000.
    pub frag: u16,
    /// Options, padded to a multiple of 4 by the caller.
    pub options: Vec<u8>,
    /// The total-length field when not the true length.
    pub total_len: Option<u16>,
}

pub const IP_MF: u16 = 0x2000;

impl Ipv4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Ipv4 {
        Ipv4 {
            src,
            dst,
            proto,
            id: 0,
            frag: 0,
            options: Vec::new(),
            total_len: None,
        }
    }

    pub fn id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }

    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        assert!(self.options.len().is_multiple_of(4) && self.options.len() <= 40);
        let hlen = 20 + self.options.len();
        let len = self.total_len.unwrap_or((hlen + payload.len()) as u16);
        let mut h = Vec::with_capacity(hlen + payload.len());
        h.push(0x40 | (hlen / 4) as u8);
        h.push(0);
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&self.id.to_be_bytes());
        h.extend_from_slice(&self.frag.to_be_bytes());
        h.extend_from_slice(&[64, self.proto, 0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&self.options);
        let sum = checksum(0, &h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }
}

/// An IPv6 packet: fixed header, then `ext` as `(type, body)` in order
/// (the body without its next-header byte; length bytes are computed),
/// then `payload` of protocol `proto`.
pub fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ext: &[(u8, Vec<u8>)],
    proto: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, (kind, body)) in ext.iter().enumerate() {
        let next = ext.get(i + 1).map_or(proto, |e| e.0);
        chain.push(next);
        match *kind {
            // Fixed 8 bytes: next header, reserved, offset/flags, id.
            EXT_FRAGMENT => {
                assert_eq!(body.len(), 7, "a fragment header body is 7 bytes");
                chain.extend_from_slice(body);
            }
            _ => {
                assert!(
                    (body.len() + 2).is_multiple_of(8),
                    "extension header not 8-aligned"
                );
                chain.push(((body.len() + 2) / 8 - 1) as u8);
                chain.extend_from_slice(body);
            }
        }
    }
    let first = ext.first().map_or(proto, |e| e.0);
    let plen = (chain.len() + payload.len()) as u16;
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&plen.to_be_bytes());
    p.extend_from_slice(&[first, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&chain);
    p.extend_from_slice(payload);
    p
}

/// The 7-byte body of an IPv6 fragment header.
pub fn ipv6_fragment(offset_units: u16, more: bool, id: u32) -> Vec<u8> {
    let mut b = vec![0];
    b.extend_from_slice(&((offset_units << 3) | u16::from(more)).to_be_bytes());
    b.extend_from_slice(&id.to_be_bytes());
    b
}

/// A padding-only options body of `len` + 2 bytes (PadN).
pub fn ipv6_padn(len: usize) -> Vec<u8> {
    let mut b = vec![1, (len - 2) as u8];
    b.resize(len, 0);
    b
}

/// A UDP datagram with checksum 0 ("none", what Linux VXLAN sends over
/// IPv4) and the true length unless `len` overrides it.
pub fn udp(sport: u16, dport: u16, len: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&len.unwrap_or(8 + payload.len() as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

/// A UDP datagram over IPv4 with its true checksum, plus `skew` (nonzero:
/// a wrong checksum the receiver must reject).
pub fn udp4_checksummed(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
    skew: u16,
) -> Vec<u8> {
    let mut d = udp(sport, dport, None, payload);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, PROTO_UDP]);
    pseudo.extend_from_slice(&(d.len() as u16).to_be_bytes());
    let sum: u32 = pseudo
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let mut c = checksum(sum, &d).wrapping_add(skew);
    if c == 0 {
        // 0 means "no checksum" over IPv4; the true 0 is sent as 0xffff.
        c = 0xffff;
    }
    d[6..8].copy_from_slice(&c.to_be_bytes());
    d
}

/// A VXLAN header (flags byte first; 0x08 is the I flag) and the inner frame.
pub fn vxlan(flags: u8, reserved: [u8; 3], vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, reserved[0], reserved[1], reserved[2]];
    v.extend_from_slice(&(vni << 8).to_be_bytes());
    v.extend_from_slice(inner);
    v
}

/// An ICMP (or ICMPv6 with `ty` 128; its checksum is left 0, receivers
/// of these corpus frames never validate it) echo message with `data`.
pub fn icmp_echo(ty: u8, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    if ty == 8 {
        let c = checksum(0, &m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    m
}

/// A TCP header without options or payload.
pub fn tcp(sport: u16, dport: u16, seq: u32, flags: u8) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

/// ARP for IPv4 over Ethernet: `op` 1 request, 2 reply.
pub fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    a
}

/// Deterministic pseudo-random bytes (xorshift64*): the same corpus on
/// every run, so a failure can be replayed.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies_to_zero() {
        let h = Ipv4::new(
            Ipv4Addr::new(10, 25, 1, 51),
            Ipv4Addr::new(10, 25, 1, 55),
            17,
        )
        .id(7)
        .build(&[]);
        assert_eq!(checksum(0, &h), 0);
        assert_eq!(h[0], 0x45);
    }

    #[test]
    fn udp_checksum_verifies_and_a_skew_breaks_it() {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let verify = |u: &[u8]| {
            let mut sum = 0u32;
            for w in s.octets().chunks(2).chain(d.octets().chunks(2)) {
                sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
            }
            sum += u32::from(PROTO_UDP) + u.len() as u32;
            checksum(sum, u)
        };
        assert_eq!(verify(&udp4_checksummed(s, d, 1, 2, b"abc", 0)), 0);
        assert_ne!(verify(&udp4_checksummed(s, d, 1, 2, b"abc", 1)), 0);
    }

    #[test]
    fn ipv6_extension_chain_links_next_headers() {
        let p = ipv6(
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::LOCALHOST,
            &[
                (EXT_HOP_BY_HOP, ipv6_padn(6)),
                (EXT_FRAGMENT, ipv6_fragment(0, true, 9)),
            ],
            PROTO_UDP,
            &[0; 8],
        );
        assert_eq!(p[6], EXT_HOP_BY_HOP);
        assert_eq!(p[40], EXT_FRAGMENT);
        assert_eq!(p[41], 0, "8 bytes: length 0");
        assert_eq!(p[48], PROTO_UDP);
        assert_eq!(u16::from_be_bytes([p[4], p[5]]), 24);
    }
}
