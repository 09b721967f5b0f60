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
