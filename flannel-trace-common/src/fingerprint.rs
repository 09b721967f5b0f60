//! A fingerprint of the inner packet that survives the trip between nodes.
//!
//! Only fields that neither encapsulation nor the underlay changes go in:
//! addresses, protocol, IP identification, ports, TCP sequence/ack/flags,
//! ICMP type/code/id/sequence. TTL, checksums and lengths stay out (TTL and
//! checksums change at forwarding hops; GSO changes lengths), so the same
//! inner packet hashes alike at `overlay-egress` on the sender and at
//! `overlay-ingress` on the receiver.

use crate::event::{AF_INET, PacketInfo, flags};
use crate::parse::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

struct Fnv(u64);

impl Fnv {
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }
}

/// The fingerprint of `p`'s inner packet, or `None` when the inner packet
/// was not decoded.
pub fn fingerprint(p: &PacketInfo) -> Option<u64> {
    if p.flags & flags::HAS_INNER == 0 {
        return None;
    }
    let t = &p.inner;
    let alen = if t.family == AF_INET { 4 } else { 16 };
    let mut h = Fnv(FNV_OFFSET);
    h.bytes(&[t.family, t.proto]);
    h.bytes(&t.src[..alen]);
    h.bytes(&t.dst[..alen]);
    h.bytes(&p.ip_id.to_be_bytes());
    if p.flags & flags::INNER_ARP != 0 {
        h.bytes(b"arp");
        h.bytes(&[p.icmp_type]);
        return Some(h.0);
    }
    if p.flags & flags::INNER_FRAGMENT != 0 {
        h.bytes(b"frag");
        return Some(h.0);
    }
    if p.flags & flags::HAS_L4 != 0 {
        match t.proto {
            IPPROTO_TCP => {
                h.bytes(&t.sport.to_be_bytes());
                h.bytes(&t.dport.to_be_bytes());
                h.bytes(&p.tcp_seq.to_be_bytes());
                h.bytes(&p.tcp_ack.to_be_bytes());
                h.bytes(&[p.tcp_flags]);
            }
            IPPROTO_UDP => {
                h.bytes(&t.sport.to_be_bytes());
                h.bytes(&t.dport.to_be_bytes());
            }
            IPPROTO_ICMP | IPPROTO_ICMPV6 => {
                h.bytes(&[p.icmp_type, p.icmp_code]);
                h.bytes(&p.icmp_id.to_be_bytes());
                h.bytes(&p.icmp_seq.to_be_bytes());
            }
            _ => {}
        }
    }
    Some(h.0)
}

/// High byte of the ICMP echo identifier of flannel-trace's own probes
/// (`--probe`): the programs keep probes whatever `--sample` says, so that
/// a sampled session still has its probes to judge by.
pub const PROBE_ID_TAG: u16 = 0xf700;

/// Whether the packet is one of flannel-trace's own probes (or a reply).
#[inline(always)]
pub fn is_probe(p: &PacketInfo) -> bool {
    p.flags & flags::HAS_L4 != 0
        && matches!(p.inner.proto, IPPROTO_ICMP | IPPROTO_ICMPV6)
        && matches!(p.icmp_type, 0 | 8 | 128 | 129)
        && p.icmp_id & 0xff00 == PROBE_ID_TAG
}

/// The hash `--sample` decides by, from fields the underlay never
/// changes, so that both nodes keep the same packets. TCP is sampled by
/// flow (ports, not sequence numbers): GSO and GRO cut a stream into
/// different skbs on the two nodes, and only whole flows stay comparable.
/// A cheap multiplicative mix of a few words: it runs in the kernel for
/// every packet.
#[inline(always)]
pub fn sample_hash(p: &PacketInfo) -> u32 {
    #[inline(always)]
    fn mix(h: u32, w: u32) -> u32 {
        (h ^ w).wrapping_mul(0x9e37_79b1)
    }
    #[inline(always)]
    fn fold(a: &[u8; 16]) -> u32 {
        let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        w(0) ^ w(4) ^ w(8) ^ w(12)
    }
    let t = &p.inner;
    let mut h = mix(0x811c_9dc5, fold(&t.src));
    h = mix(h, fold(&t.dst));
    h = mix(h, t.proto as u32);
    let l4 = p.flags & flags::HAS_L4 != 0 && p.flags & flags::INNER_FRAGMENT == 0;
    let ports = ((t.sport as u32) << 16) | t.dport as u32;
    h = match t.proto {
        IPPROTO_TCP if l4 => mix(h, ports),
        IPPROTO_UDP if l4 => mix(mix(h, ports), p.ip_id),
        IPPROTO_ICMP | IPPROTO_ICMPV6 if l4 => {
            mix(h, ((p.icmp_id as u32) << 16) | p.icmp_seq as u32)
        }
        _ => mix(h, p.ip_id),
    };
    h ^ (h >> 16)
}

/// Whether `--sample` (as `mask`, N - 1) keeps the packet.
#[inline(always)]
pub fn sampled_in(p: &PacketInfo, mask: u32) -> bool {
    mask == 0 || is_probe(p) || sample_hash(p) & mask == 0
}
