//! Parser, fingerprint and decoding tests on hand-built frames.
extern crate std;

use std::vec::Vec;

use crate::event::{AF_INET, AF_INET6, DecodeError, EventKind, Hop, PacketInfo, RawEvent, flags};
use crate::fingerprint::fingerprint;
use crate::parse::{
    Dropped, Layer, ParseError, filter_matches, parse_dropped, parse_inner, parse_underlay,
    recover_outer,
};
use crate::{Config, Ports};

pub(crate) const PORT: u16 = 8475;
pub(crate) const PORTS: Ports = Ports {
    ports: [8475, 0, 0, 0],
};
const OTHER: Ports = Ports {
    ports: [8472, 0, 0, 0],
};

pub(crate) fn eth(ethertype: u16, vlans: &[u16]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x76, 0x21, 0x69, 0x41, 0xde, 0xfe]);
    f.extend_from_slice(&[0xb6, 0x61, 0x5c, 0x8d, 0xd9, 0xeb]);
    for v in vlans {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

pub(crate) fn ipv4(
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    id: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = 5 + options.len() / 4;
    let total = (ihl * 4 + payload.len()) as u16;
    let mut h = std::vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(options);
    h.extend_from_slice(payload);
    h
}

pub(crate) fn ipv6(next: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut h = std::vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

pub(crate) fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, fl: u8) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&ack.to_be_bytes());
    h.extend_from_slice(&[0x50, fl, 0xff, 0xff, 0, 0, 0, 0]);
    h
}

pub(crate) fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

pub(crate) fn icmp_echo(id: u16, seq: u16) -> Vec<u8> {
    let mut h = std::vec![8, 0, 0, 0];
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(b"payload!");
    h
}

pub(crate) fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut h = std::vec![0x08, 0, 0, 0];
    h.extend_from_slice(&(vni << 8).to_be_bytes());
    h.extend_from_slice(inner);
    h
}

pub(crate) const POD_A: [u8; 4] = [10, 244, 0, 5];
pub(crate) const POD_B: [u8; 4] = [10, 244, 1, 7];
pub(crate) const NODE_A: [u8; 4] = [10, 25, 1, 51];
pub(crate) const NODE_B: [u8; 4] = [10, 25, 1, 55];

pub(crate) fn inner_tcp_frame() -> Vec<u8> {
    let mut f = eth(0x0800, &[]);
    f.extend(ipv4(
        6,
        POD_A,
        POD_B,
        4242,
        &[],
        &tcp(40000, 80, 1000, 0, 0x02),
    ));
    f
}

pub(crate) fn encapsulate(inner: &[u8], vlans: &[u16]) -> Vec<u8> {
    let mut f = eth(0x0800, vlans);
    f.extend(ipv4(
        17,
        NODE_B,
        NODE_A,
        7,
        &[],
        &udp(51000, PORT, &vxlan(1, inner)),
    ));
    f
}

pub(crate) fn v4(p: &[u8; 16]) -> [u8; 4] {
    [p[0], p[1], p[2], p[3]]
}

#[test]
fn underlay_ipv4_vxlan_tcp() {
    let frame = encapsulate(&inner_tcp_frame(), &[]);
    let mut p = PacketInfo::default();
    parse_underlay(&frame[..], Layer::Ethernet, 0, &PORTS, &mut p).unwrap();
    assert_eq!(
        p.flags & (flags::HAS_OUTER | flags::HAS_INNER | flags::HAS_L4),
        flags::HAS_OUTER | flags::HAS_INNER | flags::HAS_L4
    );
    assert_eq!(p.outer.family, AF_INET);
    assert_eq!(v4(&p.outer.src), NODE_B);
    assert_eq!(v4(&p.outer.dst), NODE_A);
    assert_eq!(
        (p.outer.sport, p.outer.dport, p.outer.proto),
        (51000, PORT, 17)
    );
    assert_eq!(p.vni, 1);
    assert_eq!(v4(&p.inner.src), POD_A);
    assert_eq!(v4(&p.inner.dst), POD_B);
    assert_eq!(
        (p.inner.sport, p.inner.dport, p.inner.proto),
        (40000, 80, 6)
    );
    assert_eq!((p.tcp_seq, p.tcp_flags, p.ip_id), (1000, 0x02, 4242));
    assert_eq!((p.ip_hlen, p.tcp_hlen, p.inner_len), (20, 20, 40));
}

#[test]
fn other_port_is_not_overlay() {
    let frame = encapsulate(&inner_tcp_frame(), &[]);
    let mut p = PacketInfo::default();
    assert_eq!(
        parse_underlay(&frame[..], Layer::Ethernet, 0, &OTHER, &mut p),
        Err(ParseError::NotOverlay)
    );
    assert_eq!(p.flags, 0, "nothing may be reported for foreign traffic");
}

#[test]
fn arp_is_not_ip() {
    let mut frame = eth(0x0806, &[]);
    frame.extend_from_slice(&[0; 28]);
    let mut p = PacketInfo::default();
    assert_eq!(
        parse_underlay(&frame[..], Layer::Ethernet, 0, &PORTS, &mut p),
        Err(ParseError::NotIp)
    );
    assert!(!ParseError::NotIp.is_overlay_failure());
}

#[test]
fn vlan_tagged_underlay() {
    let frame = encapsulate(&inner_tcp_frame(), &[100, 200]);
    let mut p = PacketInfo::default();
    parse_underlay(&frame[..], Layer::Ethernet, 0, &PORTS, &mut p).unwrap();
    assert_ne!(p.flags & flags::OUTER_VLAN, 0);
    assert_eq!(p.vlan, 100, "outermost tag is reported");
    assert_ne!(p.flags & flags::QINQ, 0, "and the second one");
    assert_eq!(p.inner_vlan, 200);
    assert_eq!(v4(&p.inner.dst), POD_B);
    let frame = encapsulate(&inner_tcp_frame(), &[100]);
    let mut p = PacketInfo::default();
    parse_underlay(&frame[..], Layer::Ethernet, 0, &PORTS, &mut p).unwrap();
    assert_eq!((p.vlan, p.flags & flags::QINQ), (100, 0));
}

#[test]
fn ipv4_options_honour_ihl() {
    // 8 bytes of options (NOP NOP NOP NOP + a 4-byte router alert).
    let options = [1, 1, 1, 1, 0x94, 4, 0, 0];
    let mut frame = eth(0x0800, &[]);
    frame.extend(ipv4(
        6,
        POD_A,
        POD_B,
        9,
        &options,
        &tcp(1234, 5678, 77, 88, 0x18),
    ));
    let mut p = PacketInfo::default();
    parse_inner(&frame[..], Layer::Ethernet, 0, &mut p).unwrap();
    assert_eq!((p.inner.sport, p.inner.dport), (1234, 5678));
    assert_eq!((p.tcp_seq, p.tcp_ack, p.tcp_flags), (77, 88, 0x18));
    assert_eq!(p.ip_hlen, 28);
}

#[test]
fn outer_ipv4_options_honour_ihl() {
    let inner = inner_tcp_frame();
    let mut frame = eth(0x0800, &[]);
    frame.extend(ipv4(
        17,
        NODE_B,
        NODE_A,
        7,
        &[1, 1, 1, 0],
        &udp(51000, PORT, &vxlan(1, &inner)),
    ));
    let mut p = PacketInfo::default();
    parse_underlay(&frame[..], Layer::Ethernet, 0, &PORTS, &mut p).unwrap();
    assert_eq!(p.inner.dport, 80);
}

#[test]
fn bad_ihl_is_rejected() {
    let mut frame = eth(0x0800, &[]);
    let mut ip = ipv4(6, POD_A, POD_B, 1, &[], &tcp(1, 2, 3, 4, 0));
    ip[0] = 0x44; // IHL 4 (16 bytes) is impossible
    frame.extend(ip);
    let mut p = PacketInfo::default();
    assert_eq!(
        parse_inner(&frame[..], Layer::Ethernet, 0, &mut p),
        Err(ParseError::BadIp)
    );
}

#[test]
fn ipv6_underlay_and_inner_with_extension_headers() {
    let a6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let b6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    // Inner: hop-by-hop (8 bytes) then destination options (16 bytes) then TCP.
    let mut ext = std::vec![60, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(&[6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ext.extend(tcp(443, 50000, 5, 6, 0x10));
    let mut inner = eth(0x86dd, &[]);
    inner.extend(ipv6(0, b6, a6, &ext));
    let mut frame = eth(0x86dd, &[]);
    frame.extend(ipv6(17, b6, a6, &udp(40000, PORT, &vxlan(7, &inner))));
    let mut p = PacketInfo::default();
    parse_underlay(&frame[..], Layer::Ethernet, 0, &PORTS, &mut p).unwrap();
    assert_eq!(p.outer.family, AF_INET6);
    assert_eq!(p.outer.src, b6);
    assert_eq!(p.vni, 7);
    assert_eq!(p.inner.family, AF_INET6);
    assert_eq!(p.inner.proto, 6);
    assert_eq!((p.inner.sport, p.inner.dport, p.tcp_seq), (443, 50000, 5));
    assert_eq!(
        p.ip_hlen,
        40 + 8 + 16,
        "extension headers count as IP header"
    );
}

#[test]
fn ipv6_later_fragment_has_no_l4() {
    let a6 = [0xfd; 16];
    let b6 = [0xfe; 16];
    // Fragment header: next = UDP, offset 185 (x8 bytes), id 0xdeadbeef.
    let mut payload = std::vec![17, 0];
    payload.extend_from_slice(&(185u16 << 3).to_be_bytes());
    payload.extend_from_slice(&0xdead_beefu32.to_be_bytes());
    payload.extend_from_slice(&[0xaa; 32]);
    let mut frame = eth(0x86dd, &[]);
    frame.extend(ipv6(44, a6, b6, &payload));
    let mut p = PacketInfo::default();
    parse_inner(&frame[..], Layer::Ethernet, 0, &mut p).unwrap();
    assert_ne!(p.flags & flags::INNER_FRAGMENT, 0);
    assert_eq!(p.flags & flags::HAS_L4, 0);
    assert_eq!(p.ip_id, 0xdead_beef);
    assert_eq!(p.inner.proto, 17);
}

#[test]
fn truncated_frames() {
    let frame = encapsulate(&inner_tcp_frame(), &[]);
    // Cut inside the inner TCP header: reported with addresses, flagged.
    let cut = frame.len() - 10;
    let mut p = PacketInfo::default();
    parse_underlay(&frame[..cut], Layer::Ethernet, 0, &PORTS, &mut p).unwrap();
    assert_ne!(p.flags & flags::TRUNCATED, 0);
    assert_eq!(p.flags & flags::HAS_L4, 0);
    assert_eq!(v4(&p.inner.dst), POD_B);
    // Cut inside the VXLAN header: an overlay frame that cannot be decoded.
    let cut = 14 + 20 + 8 + 4;
    let mut p = PacketInfo::default();
    let err = parse_underlay(&frame[..cut], Layer::Ethernet, 0, &PORTS, &mut p).unwrap_err();
    assert_eq!(err, ParseError::Short);
    assert!(err.is_overlay_failure());
    // Cut inside the Ethernet header: not known to be ours.
    for cut in 0..14 {
        let mut p = PacketInfo::default();
        assert_eq!(
            parse_underlay(&frame[..cut], Layer::Ethernet, 0, &PORTS, &mut p),
            Err(ParseError::NotOverlay)
        );
    }
    // Every prefix parses or errs; none panics.
    for cut in 0..frame.len() {
        let mut p = PacketInfo::default();
        let _ = parse_underlay(&frame[..cut], Layer::Ethernet, 0, &PORTS, &mut p);
    }
}

#[test]
fn vxlan_without_i_flag_is_bad() {
    let inner = inner_tcp_frame();
    let mut vx = vxlan(1, &inner);
    vx[0] = 0;
    let mut frame = eth(0x0800, &[]);
    frame.extend(ipv4(17, NODE_B, NODE_A, 7, &[], &udp(51000, PORT, &vx)));
    let mut p = PacketInfo::default();
    assert_eq!(
        parse_underlay(&frame[..], Layer::Ethernet, 0, &PORTS, &mut p),
        Err(ParseError::BadVxlan)
    );
}

#[test]
fn fingerprint_same_before_and_after_encapsulation() {
    let mut icmp = eth(0x0800, &[]);
    icmp.extend(ipv4(1, POD_A, POD_B, 99, &[], &icmp_echo(0x1234, 3)));
    for inner in [inner_tcp_frame(), icmp] {
        let mut sender = PacketInfo::default();
        parse_inner(&inner[..], Layer::Ethernet, 0, &mut sender).unwrap();
        let wire = encapsulate(&inner, &[42]);
        let mut underlay = PacketInfo::default();
        parse_underlay(&wire[..], Layer::Ethernet, 0, &PORTS, &mut underlay).unwrap();
        // The receiver sees the same inner frame with a decremented TTL.
        let mut decapped = inner.clone();
        decapped[14 + 8] -= 1;
        let mut receiver = PacketInfo::default();
        parse_inner(&decapped[..], Layer::Ethernet, 0, &mut receiver).unwrap();
        let f = fingerprint(&sender).unwrap();
        assert_eq!(Some(f), fingerprint(&underlay));
        assert_eq!(Some(f), fingerprint(&receiver));
    }
}

#[test]
fn fingerprint_differs_for_different_packets() {
    let mut a = PacketInfo::default();
    parse_inner(&inner_tcp_frame()[..], Layer::Ethernet, 0, &mut a).unwrap();
    let mut b = a;
    b.tcp_seq += 1;
    let mut c = a;
    c.ip_id += 1;
    let mut d = a;
    d.inner.dst[3] ^= 1;
    let fa = fingerprint(&a);
    for other in [b, c, d] {
        assert_ne!(fa, fingerprint(&other));
    }
    assert_eq!(fingerprint(&PacketInfo::default()), None);
}

#[test]
fn outer_recovered_from_headroom() {
    let wire = encapsulate(&inner_tcp_frame(), &[]);
    let inner_mac = 14 + 20 + 8 + 8;
    let mut p = PacketInfo::default();
    assert!(recover_outer(&wire[..], inner_mac, &PORTS, &mut p));
    assert_eq!(v4(&p.outer.src), NODE_B);
    assert_eq!(p.vni, 1);
    assert_ne!(p.flags & flags::OUTER_FROM_HEADROOM, 0);
    let mut q = PacketInfo::default();
    assert!(
        !recover_outer(&wire[..], inner_mac, &OTHER, &mut q),
        "wrong port must not match"
    );
    assert!(
        !recover_outer(&wire[..], 10, &PORTS, &mut q),
        "too close to the start"
    );
    assert_eq!(q, PacketInfo::default());
}

#[test]
fn filters() {
    let mut p = PacketInfo::default();
    parse_inner(&inner_tcp_frame()[..], Layer::Ethernet, 0, &mut p).unwrap();
    let mut cfg = Config::zeroed();
    assert!(filter_matches(&cfg, &p));
    cfg.filter_proto = 1;
    assert!(!filter_matches(&cfg, &p));
    cfg.filter_proto = 6;
    cfg.filter_family = 4;
    cfg.filter_addr[..4].copy_from_slice(&POD_B);
    assert!(filter_matches(&cfg, &p), "destination matches");
    cfg.filter_addr[..4].copy_from_slice(&[10, 244, 9, 9]);
    assert!(!filter_matches(&cfg, &p));
}

#[test]
fn decode_event() {
    let ev = RawEvent {
        kind: EventKind::Drop as u8,
        hop: Hop::Drop as u8,
        drop_reason: 7,
        ..Default::default()
    };
    // SAFETY: `ev` is a live repr(C) value of exactly RawEvent::SIZE bytes
    // with explicit padding, borrowed for the slice's lifetime.
    let bytes: &[u8] = unsafe {
        core::slice::from_raw_parts((&ev as *const RawEvent).cast::<u8>(), RawEvent::SIZE)
    };
    let back = RawEvent::from_bytes(bytes).unwrap();
    assert_eq!(back.kind(), Ok(EventKind::Drop));
    assert_eq!(back.hop(), Ok(Hop::Drop));
    assert_eq!(back.drop_reason, 7);
    assert_eq!(
        RawEvent::from_bytes(&bytes[1..]),
        Err(DecodeError::Size {
            got: RawEvent::SIZE - 1,
            want: RawEvent::SIZE
        })
    );
    let mut bad = ev;
    bad.hop = 99;
    bad.kind = 0;
    assert_eq!(bad.hop(), Err(DecodeError::UnknownHop(99)));
    assert_eq!(bad.kind(), Err(DecodeError::UnknownKind(0)));
    for h in Hop::ALL {
        assert_eq!(Hop::try_from(h as u8), Ok(h));
    }
}

#[test]
fn several_ports() {
    let mut ports = Ports::default();
    assert!(!ports.contains(0) && !ports.contains(8475));
    assert!(ports.add(8475) && ports.add(8472) && ports.add(8475));
    assert_eq!(ports.ports, [8475, 8472, 0, 0]);
    let frame = encapsulate(&inner_tcp_frame(), &[]);
    let mut p = PacketInfo::default();
    parse_underlay(&frame[..], Layer::Ethernet, 0, &ports, &mut p).unwrap();
    assert!(ports.add(1) && ports.add(2));
    assert!(!ports.add(3), "four slots");
}

/// Offset of the outer IPv4 header in [`encapsulate`]'s frame.
const OUTER_IP: usize = 14;

#[test]
fn an_outer_ip_length_that_cannot_hold_the_vxlan_frame_is_a_failure_of_ours() {
    // The IP header says 24 bytes, a full VXLAN frame follows anyway.
    let mut frame = encapsulate(&inner_tcp_frame(), &[]);
    frame[OUTER_IP + 2..OUTER_IP + 4].copy_from_slice(&24u16.to_be_bytes());
    let mut p = PacketInfo::default();
    let r = parse_underlay(&frame[..], Layer::Ethernet, 0, &PORTS, &mut p);
    assert_eq!(r, Err(ParseError::Short));
    assert!(r.unwrap_err().is_overlay_failure());
    // Shorter than the header itself: still a frame to our port, counted,
    // and its kernel drop (IP_INHDR) reported with the outer tuple.
    frame[OUTER_IP + 2..OUTER_IP + 4].copy_from_slice(&12u16.to_be_bytes());
    let mut p = PacketInfo::default();
    assert_eq!(
        parse_underlay(&frame[..], Layer::Ethernet, 0, &PORTS, &mut p),
        Err(ParseError::Short)
    );
    let mut p = PacketInfo::default();
    let r = parse_dropped(&frame[..], Layer::Ipv4, OUTER_IP, &PORTS, false, &mut p);
    assert_eq!(r, Ok(Dropped::Undecodable));
    assert_eq!(p.outer.dport, PORT);
    assert_eq!(v4(&p.outer.dst), NODE_A);
    // The same length in an inner packet: broken, so the frame is.
    let mut inner = inner_tcp_frame();
    inner[14 + 2..14 + 4].copy_from_slice(&12u16.to_be_bytes());
    let mut p = PacketInfo::default();
    assert_eq!(
        parse_inner(&inner[..], Layer::Ethernet, 0, &mut p),
        Err(ParseError::BadIp)
    );
}

#[test]
fn what_the_underlay_cannot_tie_to_our_port_is_not_counted() {
    // A bad IP version, a header cut before the UDP ports: nobody's frame.
    let mut frame = encapsulate(&inner_tcp_frame(), &[]);
    frame[OUTER_IP] = 0x05;
    let mut p = PacketInfo::default();
    let r = parse_underlay(&frame[..], Layer::Ethernet, 0, &PORTS, &mut p);
    assert_eq!(r, Err(ParseError::NotOverlay));
    assert!(!r.unwrap_err().is_overlay_failure());
    let frame = encapsulate(&inner_tcp_frame(), &[]);
    for cut in [10, OUTER_IP + 12, OUTER_IP + 20 + 2] {
        let mut p = PacketInfo::default();
        let r = parse_underlay(&frame[..cut], Layer::Ethernet, 0, &PORTS, &mut p);
        assert!(!r.unwrap_err().is_overlay_failure(), "cut at {cut}");
    }
}

#[test]
fn a_udp_header_cut_to_four_bytes_on_our_port_is_counted_and_reported_when_dropped() {
    let frame = encapsulate(&inner_tcp_frame(), &[]);
    let cut = &frame[..OUTER_IP + 20 + 4];
    let mut p = PacketInfo::default();
    let r = parse_underlay(cut, Layer::Ethernet, 0, &PORTS, &mut p);
    assert_eq!(r, Err(ParseError::Short), "ours, but cut: counted");
    // The drop hook reports it with what could be read.
    let mut p = PacketInfo::default();
    let r = parse_dropped(cut, Layer::Ipv4, OUTER_IP, &PORTS, false, &mut p);
    assert_eq!(r, Ok(Dropped::Undecodable));
    assert_eq!(p.flags & flags::UNDECODABLE, flags::UNDECODABLE);
    assert_eq!(p.flags & (flags::HAS_OUTER | flags::HAS_INNER), 0);
    assert_eq!(v4(&p.outer.src), NODE_B);
    assert_eq!(p.outer.dport, PORT);
    // Another port: not ours, nothing to count or report as the overlay's.
    let mut p = PacketInfo::default();
    assert_eq!(
        parse_underlay(cut, Layer::Ethernet, 0, &OTHER, &mut p),
        Err(ParseError::NotOverlay)
    );
    let mut p = PacketInfo::default();
    assert_eq!(
        parse_dropped(cut, Layer::Ipv4, OUTER_IP, &OTHER, false, &mut p),
        Ok(Dropped::Plain)
    );
}

#[test]
fn a_udp_length_too_short_for_vxlan_is_ours_and_undecodable() {
    let mut frame = encapsulate(&inner_tcp_frame(), &[]);
    let udp_len = OUTER_IP + 20 + 4;
    frame[udp_len..udp_len + 2].copy_from_slice(&12u16.to_be_bytes());
    let mut p = PacketInfo::default();
    assert_eq!(
        parse_underlay(&frame[..], Layer::Ethernet, 0, &PORTS, &mut p),
        Err(ParseError::Short)
    );
}

#[test]
fn dropped_packets_are_read_once_as_encapsulated_or_plain() {
    let frame = encapsulate(&inner_tcp_frame(), &[]);
    let mut p = PacketInfo::default();
    let r = parse_dropped(&frame[..], Layer::Ipv4, OUTER_IP, &PORTS, false, &mut p);
    assert_eq!(r, Ok(Dropped::Encapsulated));
    assert_eq!(v4(&p.inner.src), POD_A);
    assert_eq!(p.vni, 1);
    // On the vxlan device the same bytes are the packet itself.
    let mut p = PacketInfo::default();
    let r = parse_dropped(&frame[..], Layer::Ipv4, OUTER_IP, &PORTS, true, &mut p);
    assert_eq!(r, Ok(Dropped::Plain));
    assert_eq!(v4(&p.inner.src), NODE_B);
    assert_eq!(p.inner.proto, 17);
}

fn arp(op: u16, sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = eth(0x0806, &[]);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&[0x0e, 0xf7, 0, 0, 0, 1]);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

#[test]
fn inner_arp_is_reported_with_its_addresses_and_fingerprinted() {
    let frame = encapsulate(&arp(1, POD_A, POD_B), &[]);
    let mut p = PacketInfo::default();
    parse_underlay(&frame[..], Layer::Ethernet, 0, &PORTS, &mut p).unwrap();
    assert_eq!(
        p.flags & (flags::HAS_INNER | flags::INNER_ARP),
        flags::HAS_INNER | flags::INNER_ARP
    );
    assert_eq!((v4(&p.inner.src), v4(&p.inner.dst)), (POD_A, POD_B));
    assert_eq!(p.icmp_type, 1);
    let request = fingerprint(&p).unwrap();
    let frame = encapsulate(&arp(2, POD_B, POD_A), &[]);
    let mut q = PacketInfo::default();
    parse_underlay(&frame[..], Layer::Ethernet, 0, &PORTS, &mut q).unwrap();
    assert_eq!(q.icmp_type, 2);
    assert_ne!(fingerprint(&q).unwrap(), request);
    // Not IPv4-over-Ethernet ARP: not ours to report.
    let mut other = arp(1, POD_A, POD_B);
    other[14 + 2..14 + 4].copy_from_slice(&0x86ddu16.to_be_bytes());
    let mut r = PacketInfo::default();
    assert_eq!(
        parse_inner(&other[..], Layer::Ethernet, 0, &mut r),
        Err(ParseError::NotIp)
    );
}

#[test]
fn consistent_sampling_keeps_the_same_packets_and_every_probe() {
    use crate::fingerprint::{PROBE_ID_TAG, sampled_in};
    let mut kept = 0;
    for seq in 0..1000u16 {
        let mut f = eth(0x0800, &[]);
        f.extend(ipv4(1, POD_A, POD_B, seq, &[], &icmp_echo(0x1234, seq)));
        let mut p = PacketInfo::default();
        parse_inner(&f[..], Layer::Ethernet, 0, &mut p).unwrap();
        // The same inner packet seen encapsulated decides the same way.
        let mut q = PacketInfo::default();
        parse_underlay(
            &encapsulate(&f, &[])[..],
            Layer::Ethernet,
            0,
            &PORTS,
            &mut q,
        )
        .unwrap();
        assert_eq!(sampled_in(&p, 15), sampled_in(&q, 15));
        kept += u32::from(sampled_in(&p, 15));
        let mut probe = eth(0x0800, &[]);
        probe.extend(ipv4(
            1,
            POD_A,
            POD_B,
            seq,
            &[],
            &icmp_echo(PROBE_ID_TAG | 7, seq),
        ));
        let mut r = PacketInfo::default();
        parse_inner(&probe[..], Layer::Ethernet, 0, &mut r).unwrap();
        assert!(sampled_in(&r, 15), "probes are always kept");
    }
    assert!(
        (30..=100).contains(&kept),
        "about 1 in 16 of 1000 kept: {kept}"
    );
    // TCP by flow: every segment of one flow decides alike.
    let decide = |seq: u32| {
        let mut f = eth(0x0800, &[]);
        f.extend(ipv4(
            6,
            POD_A,
            POD_B,
            seq as u16,
            &[],
            &tcp(40000, 80, seq, 1, 0x10),
        ));
        let mut p = PacketInfo::default();
        parse_inner(&f[..], Layer::Ethernet, 0, &mut p).unwrap();
        sampled_in(&p, 15)
    };
    let first = decide(1);
    assert!((2..200).all(|s| decide(s * 1448) == first));
}
