//! Corpus cases put on node a's vxlan device: inner frames that node a's
//! kernel encapsulates as it would a pod's, so only the inner headers are
//! crafted. Each is marked by its IP id (IPv4), flow label ports (IPv6) or
//! ARP target.

use std::net::Ipv4Addr;

use flannel_trace_tests::frames::*;

use super::cases::{
    Case, Ends, Env, INNER_DST, INNER_SRC, Outcome, POD6, Via, Want, icmp, ip4, ip6, udp4_ends,
};

pub fn all(env: &Env) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name, frame, outcome| {
        cases.push(Case {
            name,
            via: Via::Vxlan,
            frame,
            outcome,
        })
    };
    let eth = |ethertype, payload: &[u8]| ethernet(env.b_vtep, env.a_vtep, &[], ethertype, payload);
    let with_id = |mut w: Want, id: u16| {
        w.ip_id = Some(u32::from(id));
        w
    };
    let ping_ends = icmp(ip4(INNER_SRC), ip4(INNER_DST), "icmp");

    for (op, name, target) in [
        (1, "inner ARP request", Ipv4Addr::new(10, 244, 2, 201)),
        (2, "inner ARP reply", Ipv4Addr::new(10, 244, 2, 202)),
    ] {
        let a = arp(op, env.a_vtep, INNER_SRC, env.b_vtep, target);
        let mut w = env_encapsulated(env, icmp(ip4(INNER_SRC), ip4(target), "arp"));
        w.arp = Some(if op == 1 { "request" } else { "reply" });
        w.ip_id = Some(0);
        add(name, eth(ETH_P_ARP, &a), Outcome::Reported(w));
    }

    let id = 2001;
    let ip = Ipv4 {
        // Router alert (4 bytes), then NOPs to a multiple of 4.
        options: vec![148, 4, 0, 0, 1, 1, 1, 0],
        ..Ipv4::new(INNER_SRC, INNER_DST, PROTO_ICMP).id(id)
    };
    let f = eth(ETH_P_IP, &ip.build(&icmp_echo(8, id, 1, &[7; 16])));
    add(
        "inner IPv4 options (IHL 7)",
        f,
        Outcome::Reported(with_id(env_encapsulated(env, ping_ends.clone()), id)),
    );

    let id = 2002;
    let ip = Ipv4 {
        frag: IP_MF,
        ..Ipv4::new(INNER_SRC, INNER_DST, PROTO_UDP).id(id)
    };
    let f = eth(ETH_P_IP, &ip.build(&udp(5001, 6001, Some(1000), &[1; 64])));
    let w = env_encapsulated(env, udp4_ends(ip4(INNER_SRC), ip4(INNER_DST), 5001, 6001));
    add(
        "inner IPv4 first fragment",
        f,
        Outcome::Reported(with_id(w, id)),
    );

    let id = 2003;
    let ip = Ipv4 {
        frag: 100,
        ..Ipv4::new(INNER_SRC, INNER_DST, PROTO_UDP).id(id)
    };
    let f = eth(ETH_P_IP, &ip.build(&[2; 64]));
    let mut w = env_encapsulated(env, icmp(ip4(INNER_SRC), ip4(INNER_DST), "udp"));
    w.fragment = true;
    add(
        "inner IPv4 later fragment",
        f,
        Outcome::Reported(with_id(w, id)),
    );

    let id = 2004;
    let ip = Ipv4::new(INNER_SRC, INNER_DST, PROTO_UDP).id(id);
    let f = eth(ETH_P_IP, &ip.build(&udp(5004, 6004, None, &[])));
    let w = env_encapsulated(env, udp4_ends(ip4(INNER_SRC), ip4(INNER_DST), 5004, 6004));
    add(
        "inner UDP with a zero-length payload",
        f,
        Outcome::Reported(with_id(w, id)),
    );

    let (s6, d6) = POD6;
    let chain = [
        (EXT_HOP_BY_HOP, ipv6_padn(6)),
        (EXT_ROUTING, vec![0, 0, 0, 0, 0, 0]),
        (EXT_DEST_OPTS, ipv6_padn(6)),
    ];
    let f = eth(
        ETH_P_IPV6,
        &ipv6(s6, d6, &chain, PROTO_UDP, &udp(5005, 6005, None, &[3; 8])),
    );
    let w = env_encapsulated(env, udp4_ends(ip6(s6), ip6(d6), 5005, 6005));
    add(
        "inner IPv6 hop-by-hop, routing, dest-opts",
        f,
        Outcome::Reported(with_id(w, 0)),
    );

    let chain = [(EXT_FRAGMENT, ipv6_fragment(0, true, 0x2006))];
    let f = eth(
        ETH_P_IPV6,
        &ipv6(
            s6,
            d6,
            &chain,
            PROTO_UDP,
            &udp(5006, 6006, Some(900), &[4; 8]),
        ),
    );
    let w = env_encapsulated(env, udp4_ends(ip6(s6), ip6(d6), 5006, 6006));
    add(
        "inner IPv6 first fragment",
        f,
        Outcome::Reported(with_id(w, 0x2006)),
    );

    let chain = [
        (EXT_DEST_OPTS, ipv6_padn(6)),
        (EXT_FRAGMENT, ipv6_fragment(64, false, 0x2007)),
    ];
    let f = eth(ETH_P_IPV6, &ipv6(s6, d6, &chain, PROTO_UDP, &[5; 24]));
    let mut w = env_encapsulated(env, icmp(ip6(s6), ip6(d6), "udp"));
    w.fragment = true;
    add(
        "inner IPv6 later fragment",
        f,
        Outcome::Reported(with_id(w, 0x2007)),
    );

    let id = 2009;
    let mut ip = Ipv4::new(INNER_SRC, INNER_DST, PROTO_ICMP)
        .id(id)
        .build(&icmp_echo(8, id, 1, &[0; 8]));
    ip[0] = 0x43; // IHL 3: shorter than an IPv4 header can be
    add(
        "inner IPv4 with IHL 3",
        eth(ETH_P_IP, &ip),
        undecodable_inner(env),
    );

    cases
}

fn env_encapsulated(env: &Env, inner: Ends) -> Want {
    env.encapsulated_pub(inner)
}

/// An inner frame that cannot be decoded: the VXLAN frame is ours and
/// counted. Its outer source port is the sending kernel's choice; node b
/// decapsulates it and its stack drops the inner packet, which is not a
/// drop of our port's frame.
fn undecodable_inner(env: &Env) -> Outcome {
    let mut outer = env.encapsulated_pub(icmp(ip4(INNER_SRC), ip4(INNER_DST), "icmp"));
    Outcome::Undecodable {
        outer: outer.outer.take().expect("outer"),
        dropped: false,
    }
}
