//! Fingerprints, outer headers recovered from headroom, filters, ring-buffer records and several ports.

use crate::event::{DecodeError, EventKind, Hop, PacketInfo, RawEvent, flags};
use crate::fingerprint::fingerprint;
use crate::parse::{Layer, filter_matches, parse_inner, parse_underlay, recover_outer};
use crate::{Config, Ports};

use super::*;

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
