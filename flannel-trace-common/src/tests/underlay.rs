//! Underlay and inner headers: VXLAN on our port, VLANs, IPv4 options, IPv6 extension headers, truncation.

use crate::event::{AF_INET, AF_INET6, PacketInfo, flags};
use crate::parse::{Layer, ParseError, parse_inner, parse_underlay};

use super::*;

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
