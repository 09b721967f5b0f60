//! Underlay corpus cases beyond plain IPv4: an IPv6 underlay and its
//! extension headers, cut IPv6, a jumbo frame, random bytes, another port.

use flannel_trace_tests::frames::*;

use super::cases::{Builder, Case, Ends, Env, JUMBO_MTU, Outcome, Want, ip6 as v6, outer4};

const A6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0x25, 0, 0, 0, 0, 0, 0x51);
const B6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0x25, 0, 0, 0, 0, 0, 0x55);

pub fn all(env: &Env, cases: &mut Vec<Case>) {
    let port = env.port;
    let mut b = Builder::new(cases, 100);
    let undecodable = |sport| super::cases::undecodable(sport, port);
    let (sp, id) = b.next();
    let vx = vxlan(0x08, [0; 3], 1, &env.inner_ping(id, 32));
    let f = env.outer_eth(
        &[],
        ETH_P_IPV6,
        &ipv6(A6, B6, &[], PROTO_UDP, &udp(sp, port, None, &vx)),
    );
    let want = Want {
        outer: Some(Ends {
            src: v6(A6),
            dst: v6(B6),
            ..outer4(sp, port)
        }),
        ..env.ping_want(sp, id)
    };
    b.add("outer IPv6", f, Outcome::Reported(want.clone()));

    let (sp, id) = b.next();
    let vx = vxlan(0x08, [0; 3], 1, &env.inner_ping(id, 32));
    let chain = [
        (EXT_HOP_BY_HOP, ipv6_padn(6)),
        (EXT_DEST_OPTS, ipv6_padn(14)),
        // Routing type 0 with no segments left: skipped by length alone.
        (EXT_ROUTING, vec![0, 0, 0, 0, 0, 0]),
        (EXT_FRAGMENT, ipv6_fragment(0, true, 0x77)),
    ];
    let f = env.outer_eth(
        &[],
        ETH_P_IPV6,
        &ipv6(A6, B6, &chain, PROTO_UDP, &udp(sp, port, None, &vx)),
    );
    let mut w = want.clone();
    w.outer.as_mut().expect("outer").sport = Some(Some(sp));
    w.ip_id = Some(u32::from(id));
    b.add(
        "outer IPv6 hop-by-hop, dest-opts, routing, first fragment",
        f,
        Outcome::Reported(w),
    );

    let (sp, _) = b.next();
    let f = env.outer_eth(
        &[],
        ETH_P_IPV6,
        &ipv6(A6, B6, &[], PROTO_UDP, &udp(sp, port, None, &[]))[..30],
    );
    b.add(
        "outer IPv6 header cut at 30 bytes",
        f.to_vec(),
        Outcome::Ignored,
    );

    let (sp, _) = b.next();
    let vx = vxlan(0x08, [0; 3], 1, &[]);
    let f = env.outer_eth(
        &[],
        ETH_P_IPV6,
        &ipv6(A6, B6, &[], PROTO_UDP, &udp(sp, port, None, &vx[..4])),
    );
    let outer = Ends {
        src: v6(A6),
        dst: v6(B6),
        ..outer4(sp, port)
    };
    b.add(
        "outer IPv6 cut inside the VXLAN header",
        f,
        Outcome::Undecodable {
            outer,
            dropped: true,
        },
    );

    let (sp, id) = b.next();
    let data = JUMBO_MTU as usize - 20 - 8 - 8 - 14 - 20 - 8;
    let f = env.vxlan4(sp, &env.outer_ip(), &[], &env.inner_ping(id, data));
    let want = Want {
        len: Some(14 + JUMBO_MTU),
        ..env.ping_want(sp, id)
    };
    b.add("jumbo frame (MTU 9000)", f, Outcome::Reported(want));

    let (sp, _) = b.next();
    let f = env.outer_eth(&[], 0x88b5, &random_bytes(u64::from(sp), 200));
    b.add("random bytes, experimental ethertype", f, Outcome::Ignored);

    let (sp, _) = b.next();
    let mut junk = random_bytes(u64::from(sp), 200);
    junk[0] = 0x00; // IP version 0
    let f = env.outer_eth(&[], ETH_P_IP, &junk);
    b.add("random bytes behind an IPv4 ethertype", f, Outcome::Ignored);

    let (sp, _) = b.next();
    let mut junk = random_bytes(u64::from(sp), 120);
    junk[0] &= !0x08; // whatever else, not a valid VXLAN header
    let f = env.outer_eth(
        &[],
        ETH_P_IP,
        &env.outer_ip().build(&udp(sp, port, None, &junk)),
    );
    b.add(
        "random bytes after a UDP header on our port",
        f,
        undecodable(sp),
    );

    let (sp, id) = b.next();
    let payload = vxlan(0x08, [0; 3], 1, &env.inner_ping(id, 32));
    let f = env.outer_eth(
        &[],
        ETH_P_IP,
        &env.outer_ip().build(&udp(sp, 4789, None, &payload)),
    );
    b.add("well-formed VXLAN to another port", f, Outcome::Ignored);
}
