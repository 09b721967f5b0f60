//! The drop record: what the hook copies, what userspace makes of it, and
//! that the hook's prefilter never loses what the parser would report.
extern crate std;

use std::vec::Vec;

use super::*;
use crate::{
    config::MODE_STATS,
    event::AF_INET6,
    parse::prefilter,
    tests::{
        NODE_A, NODE_B, POD_A, POD_B, PORT, PORTS, encapsulate, eth, icmp_echo, inner_tcp_frame,
        ipv4, ipv6, tcp, udp, v4, vxlan,
    },
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// The overlay of the tests: 10.244.0.0/16 and fd44::/16.
fn cfg() -> Config {
    let mut c = Config::zeroed();
    c.overlay.set_v4([10, 244, 0, 0], 16);
    let mut v6 = [0u8; 16];
    v6[0] = 0xfd;
    v6[1] = 0x44;
    c.overlay.set_v6(v6, 16);
    c.has_drop_reason = 1;
    c
}

/// What the hook writes for an skb whose linear bytes from the network
/// header are `net`: at most RAW_CAP of them.
fn record(net: &[u8], protocol: u16, on_vxlan: bool) -> RawDrop {
    let mut r = RawDrop::zeroed();
    let n = net.len().min(RAW_CAP);
    r.bytes[..n].copy_from_slice(&net[..n]);
    r.captured = n as u16;
    r.protocol = protocol;
    r.on_vxlan = u8::from(on_vxlan);
    r.ifindex = 2;
    r.skb_len = net.len() as u32;
    r.drop_reason = 7;
    r.drop_location = 0xffff_ffff_8100_0010;
    r.ts_ns = 1_000;
    r
}

/// The IP packet of an Ethernet frame built by the helpers.
fn ip_of(frame: &[u8]) -> &[u8] {
    &frame[14..]
}

#[test]
fn an_encapsulated_drop_decodes_to_the_event_the_kernel_made() {
    let frame = encapsulate(&inner_tcp_frame(), &[]);
    let r = record(ip_of(&frame), ETH_P_IP, false);
    let ev = r.parse(&cfg(), &PORTS).expect("ours");
    assert_eq!((ev.kind, ev.hop), (EventKind::Drop as u8, Hop::Drop as u8));
    assert_eq!(
        (ev.ts_ns, ev.drop_location, ev.drop_reason),
        (r.ts_ns, r.drop_location, 7)
    );
    assert_eq!((ev.ifindex, ev.skb_len), (2, r.skb_len));
    // The very packet the hook's own parse gave, with the reason flag.
    let mut want = PacketInfo::default();
    assert_eq!(
        parse_dropped(ip_of(&frame), Layer::Ipv4, 0, &PORTS, false, &mut want),
        Ok(Dropped::Encapsulated)
    );
    want.flags |= flags::HAS_REASON;
    assert_eq!(ev.pkt, want);
    assert_eq!(ev.pkt.vni, 1);
    assert_eq!(
        (v4(&ev.pkt.outer.src), v4(&ev.pkt.inner.dst)),
        (NODE_B, POD_B)
    );
    assert_ne!(ev.pkt.flags & flags::HAS_L4, 0);
    // Without drop reasons (before 5.17) the event says so.
    let mut c = cfg();
    c.has_drop_reason = 0;
    assert_eq!(
        r.parse(&c, &PORTS).unwrap().pkt.flags & flags::HAS_REASON,
        0
    );
}

#[test]
fn an_undecodable_frame_to_our_port_is_reported_with_its_outer_tuple() {
    let frame = encapsulate(&inner_tcp_frame(), &[]);
    // UDP cut to its ports; an IP total length below the header.
    let cut = &ip_of(&frame)[..24];
    let mut short = ip_of(&frame).to_vec();
    short[2..4].copy_from_slice(&12u16.to_be_bytes());
    for bytes in [cut, &short[..]] {
        let ev = record(bytes, ETH_P_IP, false)
            .parse(&cfg(), &PORTS)
            .expect("reported");
        let p = &ev.pkt;
        assert_ne!(p.flags & flags::UNDECODABLE, 0);
        assert_eq!(p.flags & (flags::HAS_OUTER | flags::HAS_INNER), 0);
        assert_eq!((v4(&p.outer.src), v4(&p.outer.dst)), (NODE_B, NODE_A));
        assert_eq!((p.outer.sport, p.outer.dport), (51000, PORT));
    }
    // Another port: nobody's.
    let mut other = Ports::default();
    other.add(4789);
    assert!(record(cut, ETH_P_IP, false).parse(&cfg(), &other).is_none());
}

#[test]
fn plain_packets_are_ours_between_pod_addresses_or_on_the_vxlan_device() {
    let mut pods = ipv4(1, POD_A, POD_B, 9, &[], &icmp_echo(3, 4));
    let ev = record(&pods, ETH_P_IP, false)
        .parse(&cfg(), &PORTS)
        .unwrap();
    assert_ne!(ev.pkt.flags & flags::POD_NETWORK, 0);
    assert_eq!(ev.pkt.icmp_seq, 4);
    // A pod talking to the world is not the overlay's.
    pods[16..20].copy_from_slice(&[8, 8, 8, 8]);
    assert!(
        record(&pods, ETH_P_IP, false)
            .parse(&cfg(), &PORTS)
            .is_none()
    );
    // On the vxlan device every packet is an inner one.
    let ev = record(&pods, ETH_P_IP, true).parse(&cfg(), &PORTS).unwrap();
    assert_eq!(ev.pkt.flags & flags::POD_NETWORK, 0);
    assert_eq!(v4(&ev.pkt.inner.dst), [8, 8, 8, 8]);
    // Not IP, or nothing copied: nothing to say.
    assert!(record(&pods, 0x0806, true).parse(&cfg(), &PORTS).is_none());
    assert!(record(&[], ETH_P_IP, true).parse(&cfg(), &PORTS).is_none());
}

#[test]
fn the_keep_rules_are_the_hooks() {
    let frame = encapsulate(&inner_tcp_frame(), &[]);
    let r = record(ip_of(&frame), ETH_P_IP, false);
    let mut c = cfg();
    c.vni = 2;
    assert!(r.parse(&c, &PORTS).is_none(), "another VNI");
    c.vni = 1;
    assert!(r.parse(&c, &PORTS).is_some());
    c.filter_proto = 17;
    assert!(r.parse(&c, &PORTS).is_none(), "inner TCP, UDP wanted");
    c.filter_proto = 6;
    c.filter_family = 4;
    c.filter_addr[..4].copy_from_slice(&POD_A);
    assert!(r.parse(&c, &PORTS).is_some());
    c.filter_addr[..4].copy_from_slice(&[10, 244, 9, 9]);
    assert!(r.parse(&c, &PORTS).is_none(), "another host");
    // Sampling: events mode keeps about 1 in 16, counters mode all.
    let mut c = cfg();
    c.sample_mask = 15;
    let kept = |c: &Config| {
        (0..512u16)
            .filter(|seq| {
                let p = ipv4(1, POD_A, POD_B, *seq, &[], &icmp_echo(3, *seq));
                record(&p, ETH_P_IP, false).parse(c, &PORTS).is_some()
            })
            .count()
    };
    let sampled = kept(&c);
    assert!((8..=80).contains(&sampled), "{sampled} of 512");
    c.mode = MODE_STATS;
    assert_eq!(kept(&c), 512);
}

#[test]
fn a_header_chain_beyond_the_capture_is_truncated_undecodable_or_unseen() {
    let a6 = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let b6 = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    // Outer IPv6 with a 200-byte hop-by-hop header: UDP at 240, VXLAN at
    // 248, the inner frame from 256, the first byte not copied.
    let mut ext = std::vec![17, 24];
    ext.resize(200, 0);
    ext.extend(udp(40000, PORT, &vxlan(7, &inner_tcp_frame())));
    let net = ipv6(0, a6, b6, &ext);
    let mut whole = PacketInfo::default();
    assert_eq!(
        parse_dropped(&net[..], Layer::Ipv6, 0, &PORTS, false, &mut whole),
        Ok(Dropped::Encapsulated),
        "decodable from all its bytes"
    );
    let ev = record(&net, ETH_P_IPV6, false)
        .parse(&cfg(), &PORTS)
        .unwrap();
    assert_ne!(ev.pkt.flags & flags::UNDECODABLE, 0);
    assert_eq!(ev.pkt.outer.family, AF_INET6);
    assert_eq!((ev.pkt.outer.src, ev.pkt.outer.dport), (a6, PORT));
    // Only the inner TCP header beyond: decoded, flagged truncated.
    let mut ext = std::vec![17, 19];
    ext.resize(160, 0);
    ext.extend(udp(40000, PORT, &vxlan(7, &inner_tcp_frame())));
    let net = ipv6(0, a6, b6, &ext);
    let ev = record(&net, ETH_P_IPV6, false)
        .parse(&cfg(), &PORTS)
        .unwrap();
    assert_eq!(ev.pkt.vni, 7);
    assert_eq!(v4(&ev.pkt.inner.src), POD_A);
    assert_ne!(ev.pkt.flags & flags::TRUNCATED, 0);
    assert_eq!(ev.pkt.flags & flags::HAS_L4, 0);
    // Ports beyond the capture: nothing ties the frame to the overlay.
    let mut ext = std::vec![17, 27];
    ext.resize(224, 0);
    ext.extend(udp(40000, PORT, &vxlan(7, &inner_tcp_frame())));
    let net = ipv6(0, a6, b6, &ext);
    assert!(
        record(&net, ETH_P_IPV6, false)
            .parse(&cfg(), &PORTS)
            .is_none()
    );
}

/// Frames of every shape the parser knows, ours and not.
fn shapes() -> Vec<(Vec<u8>, u16)> {
    let a6 = [0xfd, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let b6 = [0xfd, 0x44, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let n6 = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    let inner = inner_tcp_frame();
    let mut inner6 = eth(ETH_P_IPV6, &[]);
    inner6.extend(ipv6(6, a6, b6, &tcp(1, 2, 3, 4, 0x10)));
    let vx = |i: &[u8]| udp(51000, PORT, &vxlan(1, i));
    let mut v: Vec<(Vec<u8>, u16)> = std::vec![
        (ip_of(&encapsulate(&inner, &[])).to_vec(), ETH_P_IP),
        (ipv4(17, NODE_B, NODE_A, 1, &[1; 8], &vx(&inner6)), ETH_P_IP),
        (
            ipv4(17, NODE_B, NODE_A, 1, &[], &udp(5, 53, b"dns")),
            ETH_P_IP
        ),
        (
            ipv4(6, NODE_B, NODE_A, 1, &[], &tcp(5, 22, 1, 2, 0x18)),
            ETH_P_IP
        ),
        (ipv4(1, POD_A, POD_B, 1, &[], &icmp_echo(1, 1)), ETH_P_IP),
        (
            ipv4(6, POD_A, NODE_A, 1, &[], &tcp(5, 22, 1, 2, 0x18)),
            ETH_P_IP
        ),
        (ipv6(17, n6, n6, &vx(&inner)), ETH_P_IPV6),
        (ipv6(17, n6, n6, &udp(5, 53, b"dns")), ETH_P_IPV6),
        (ipv6(58, n6, a6, &icmp_echo(1, 1)), ETH_P_IPV6),
        (ipv6(6, a6, b6, &tcp(1, 2, 3, 4, 0x10)), ETH_P_IPV6),
    ];
    // IPv6 extension headers in front of UDP to our port, and of TCP.
    let mut hop = std::vec![17, 0, 0, 0, 0, 0, 0, 0];
    hop.extend(vx(&inner));
    v.push((ipv6(0, n6, n6, &hop), ETH_P_IPV6));
    let mut frag = std::vec![6, 0, 0, 0, 0, 0, 0, 1];
    frag.extend(tcp(1, 2, 3, 4, 0x10));
    v.push((ipv6(44, n6, n6, &frag), ETH_P_IPV6));
    v
}

/// xorshift64: reproducible mutations without a dependency.
fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn the_hooks_prefilter_keeps_every_drop_the_parser_reports() {
    let c = cfg();
    let (mut reported, mut filtered) = (0, 0);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for (frame, proto) in shapes() {
        let layer = Layer::from_ethertype(proto).unwrap();
        for round in 0..3000 {
            let mut f = frame.clone();
            // Some rounds cut the frame, most flip a few bytes of the
            // headers (lengths, versions, ports, fragment offsets...).
            if round > 0 {
                for _ in 0..1 + next(&mut seed) % 3 {
                    let at = (next(&mut seed) as usize) % f.len().min(96);
                    f[at] = next(&mut seed) as u8;
                }
                if next(&mut seed).is_multiple_of(4) {
                    f.truncate((next(&mut seed) as usize) % (f.len() + 1));
                }
            }
            // The kernel reads all linear bytes, userspace the copy.
            let maybe = prefilter::dropped(&f[..], layer, 0, &PORTS, &c.overlay);
            let got = record(&f, proto, false).parse(&c, &PORTS);
            assert!(
                maybe || got.is_none(),
                "prefilter dropped a reported frame: {f:02x?}"
            );
            reported += usize::from(got.is_some());
            filtered += usize::from(!maybe);
        }
    }
    // Both sides of the test ran.
    assert!(reported > 1000 && filtered > 1000, "{reported} {filtered}");
}

#[test]
fn the_prefilter_passes_over_foreign_traffic() {
    let c = cfg();
    let n6 = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    let dns = ipv4(17, NODE_B, NODE_A, 1, &[], &udp(5, 53, b"dns"));
    let ssh = ipv4(6, NODE_B, NODE_A, 1, &[], &tcp(5, 22, 1, 2, 0x18));
    let world = ipv4(6, POD_A, [1, 1, 1, 1], 1, &[], &tcp(5, 443, 1, 2, 0x18));
    let ping6 = ipv6(58, n6, n6, &icmp_echo(1, 1));
    for (f, layer) in [
        (&dns, Layer::Ipv4),
        (&ssh, Layer::Ipv4),
        (&world, Layer::Ipv4),
        (&ping6, Layer::Ipv6),
    ] {
        assert!(!prefilter::dropped(&f[..], layer, 0, &PORTS, &c.overlay));
    }
    let ours = ip_of(&encapsulate(&inner_tcp_frame(), &[])).to_vec();
    assert!(prefilter::dropped(
        &ours[..],
        Layer::Ipv4,
        0,
        &PORTS,
        &c.overlay
    ));
}

#[test]
fn records_are_told_apart_by_their_kind_byte() {
    let r = record(&[0x45; 40], ETH_P_IP, true);
    // SAFETY: repr(C) with explicit padding: no uninitialised bytes.
    let bytes =
        unsafe { core::slice::from_raw_parts((&r as *const RawDrop).cast::<u8>(), RawDrop::SIZE) };
    assert_eq!(Record::from_bytes(bytes), Ok(Record::Drop(r)));
    assert_eq!(
        Record::from_bytes(&bytes[..RawEvent::SIZE]),
        Err(DecodeError::Size {
            got: RawEvent::SIZE,
            want: RawDrop::SIZE
        })
    );
    let e = RawEvent {
        kind: EventKind::Packet as u8,
        hop: Hop::VxlanRcv as u8,
        ..RawEvent::default()
    };
    // SAFETY: as above.
    let bytes = unsafe {
        core::slice::from_raw_parts((&e as *const RawEvent).cast::<u8>(), RawEvent::SIZE)
    };
    assert_eq!(Record::from_bytes(bytes), Ok(Record::Event(e)));
    assert!(Record::from_bytes(&[]).is_err());
}
