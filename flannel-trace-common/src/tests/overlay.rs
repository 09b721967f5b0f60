//! What counts as the overlay's failure, drops read once, inner ARP, consistent sampling.

use std::vec::Vec;

use crate::event::{PacketInfo, flags};
use crate::fingerprint::fingerprint;
use crate::parse::{Dropped, Layer, ParseError, parse_dropped, parse_inner, parse_underlay};

use super::*;

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
