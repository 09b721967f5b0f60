//! The crafted-packet corpus: each case is one frame and what node b's
//! tracer must make of it. Frames to the underlay are built whole; frames
//! for the vxlan device are inner frames the sending kernel encapsulates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flannel_trace_tests::frames::*;

/// Where a case's frame is put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// On the fabric's port towards node b: node b's eth1 receives it as is.
    Underlay,
    /// On node a's flannel.1: node a's kernel encapsulates it to node b.
    Vxlan,
}

/// Addresses, protocol and ports as the tracer prints them.
#[derive(Clone, Debug)]
pub struct Ends {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: &'static str,
    /// `None`: no ports reported. `Some(None)` in `sport` of an outer
    /// header the sending kernel chose: any port.
    pub sport: Option<Option<u16>>,
    pub dport: Option<u16>,
}

/// One event at node b's underlay-ingress, field by field.
#[derive(Clone, Debug, Default)]
pub struct Want {
    pub outer: Option<Ends>,
    pub vni: Option<u32>,
    pub vlan: Option<u16>,
    pub vlan_inner: Option<u16>,
    pub inner: Option<Ends>,
    pub ip_id: Option<u32>,
    pub fragment: bool,
    pub arp: Option<&'static str>,
    pub len: Option<u32>,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    /// Exactly one underlay-ingress event, as described; nothing counted.
    Reported(Want),
    /// To our port but undecodable: counted once as unparsed, no event;
    /// when the kernel drops it (`dropped`), one drop event flagged
    /// `undecodable` with this outer tuple.
    Undecodable { outer: Ends, dropped: bool },
    /// Not the overlay's as far as the bytes tell: nothing at all.
    Ignored,
}

pub struct Case {
    pub name: &'static str,
    pub via: Via,
    pub frame: Vec<u8>,
    pub outcome: Outcome,
}

/// Lab facts the frames need.
pub struct Env {
    pub a_eth1: [u8; 6],
    pub b_eth1: [u8; 6],
    pub a_vtep: [u8; 6],
    pub b_vtep: [u8; 6],
    pub port: u16,
}

pub const NODE_A: Ipv4Addr = Ipv4Addr::new(10, 25, 1, 51);
pub const NODE_B: Ipv4Addr = Ipv4Addr::new(10, 25, 1, 55);
/// Inner source of the crafted packets: node a's VTEP address, so that what
/// node b's stack answers is taken by node a's (a made-up address would
/// draw ICMP errors back); the background ping between the pods stays apart.
pub const INNER_SRC: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 0);
/// Node b's VTEP address: its stack answers what reaches it.
pub const INNER_DST: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 0);
const POD6_A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 0x77);
const POD6_B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 2, 0, 0, 0, 0, 1);
pub const JUMBO_MTU: u32 = 9000;

pub fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

pub fn v6(a: Ipv6Addr) -> IpAddr {
    IpAddr::V6(a)
}

pub fn outer4(sport: u16, port: u16) -> Ends {
    Ends {
        src: v4(NODE_A),
        dst: v4(NODE_B),
        proto: "udp",
        sport: Some(Some(sport)),
        dport: Some(port),
    }
}

pub fn icmp_ends(src: IpAddr, dst: IpAddr, proto: &'static str) -> Ends {
    Ends {
        src,
        dst,
        proto,
        sport: None,
        dport: None,
    }
}

pub fn udp_ends(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Ends {
    Ends {
        src,
        dst,
        proto: "udp",
        sport: Some(Some(sport)),
        dport: Some(dport),
    }
}

impl Env {
    /// The inner Ethernet frame of an IPv4 packet, to node b's VTEP.
    pub fn inner_eth(&self, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        ethernet(self.b_vtep, self.a_vtep, &[], ethertype, payload)
    }

    /// An inner ICMP echo request, IP id and ICMP id `id`.
    pub fn inner_ping(&self, id: u16, data: usize) -> Vec<u8> {
        let icmp = icmp_echo(8, id, 1, &vec![0x5a; data]);
        let ip = Ipv4::new(INNER_SRC, INNER_DST, PROTO_ICMP)
            .id(id)
            .build(&icmp);
        self.inner_eth(ETH_P_IP, &ip)
    }

    /// The outer Ethernet frame of an IPv4 underlay packet to node b.
    pub fn outer_eth(&self, tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        ethernet(self.b_eth1, self.a_eth1, tags, ethertype, payload)
    }

    /// A whole VXLAN frame node a could have sent, outer UDP source port
    /// `sport` (the case's mark), VNI 1, inner ping `id`.
    pub fn vxlan4(&self, sport: u16, ip: &Ipv4, tags: &[(u16, u16)], inner: &[u8]) -> Vec<u8> {
        let udp = udp(sport, self.port, None, &vxlan(0x08, [0; 3], 1, inner));
        self.outer_eth(tags, ETH_P_IP, &ip.build(&udp))
    }

    pub fn outer_ip(&self) -> Ipv4 {
        Ipv4::new(NODE_A, NODE_B, PROTO_UDP)
    }

    pub fn ping_want(&self, sport: u16, id: u16) -> Want {
        Want {
            outer: Some(outer4(sport, self.port)),
            vni: Some(1),
            inner: Some(icmp_ends(v4(INNER_SRC), v4(INNER_DST), "icmp")),
            ip_id: Some(u32::from(id)),
            ..Want::default()
        }
    }

    /// What node a's kernel makes of an inner frame: outer from a to b on
    /// our port, source port of its choosing, VNI 1.
    pub fn encapsulated_pub(&self, inner: Ends) -> Want {
        Want {
            outer: Some(Ends {
                sport: Some(None),
                ..outer4(0, self.port)
            }),
            vni: Some(1),
            inner: Some(inner),
            ..Want::default()
        }
    }
}

/// Every case. Underlay cases are marked by their outer source port
/// (40000 + n), inner ones by IP id or ARP target.
pub fn all(env: &Env) -> Vec<Case> {
    let mut out = underlay_cases(env);
    out.extend(super::inner_cases::all(env));
    out
}

fn underlay_cases(env: &Env) -> Vec<Case> {
    let mut cases = Vec::new();
    ipv4_cases(env, &mut cases);
    super::odd_cases::all(env, &mut cases);
    cases
}

/// Collects underlay cases, giving each the next mark (outer source
/// port, inner IP id).
pub struct Builder<'a> {
    cases: &'a mut Vec<Case>,
    n: u16,
}

impl Builder<'_> {
    pub fn new(cases: &mut Vec<Case>, first: u16) -> Builder<'_> {
        Builder { cases, n: first }
    }

    pub fn next(&mut self) -> (u16, u16) {
        self.n += 1;
        (40000 + self.n, 1000 + self.n)
    }

    pub fn add(&mut self, name: &'static str, frame: Vec<u8>, outcome: Outcome) {
        self.cases.push(Case {
            name,
            via: Via::Underlay,
            frame,
            outcome,
        })
    }
}

/// What an undecodable frame from node a to our port is reported as.
pub fn undecodable(sport: u16, port: u16) -> Outcome {
    Outcome::Undecodable {
        outer: outer4(sport, port),
        dropped: true,
    }
}

fn ipv4_cases(env: &Env, cases: &mut Vec<Case>) {
    let port = env.port;
    let mut b = Builder::new(cases, 0);
    let undecodable = |sport| undecodable(sport, port);

    let (sp, id) = b.next();
    let f = env.vxlan4(sp, &env.outer_ip(), &[], &env.inner_ping(id, 32));
    b.add(
        "well-formed VXLAN (control)",
        f,
        Outcome::Reported(env.ping_want(sp, id)),
    );

    let (sp, id) = b.next();
    let ip = Ipv4 {
        total_len: Some(12),
        ..env.outer_ip()
    };
    let f = env.vxlan4(sp, &ip, &[], &env.inner_ping(id, 32));
    b.add(
        "outer IPv4 total length shorter than its header",
        f,
        undecodable(sp),
    );

    let (sp, id) = b.next();
    let ip = Ipv4 {
        total_len: Some(20 + 8 + 8),
        ..env.outer_ip()
    };
    let f = env.vxlan4(sp, &ip, &[], &env.inner_ping(id, 32));
    b.add(
        "outer IPv4 total length shorter than its payload",
        f,
        undecodable(sp),
    );

    let (sp, _) = b.next();
    let mut udp4 = udp(sp, port, None, &[]);
    udp4.truncate(4);
    let f = env.outer_eth(&[], ETH_P_IP, &env.outer_ip().build(&udp4));
    b.add("UDP header cut to 4 bytes on our port", f, undecodable(sp));

    let (sp, id) = b.next();
    let payload = vxlan(0x08, [0; 3], 1, &env.inner_ping(id, 32));
    let f = env.outer_eth(
        &[],
        ETH_P_IP,
        &env.outer_ip().build(&udp(sp, port, Some(12), &payload)),
    );
    b.add(
        "UDP length too short for VXLAN and Ethernet",
        f,
        undecodable(sp),
    );

    let (sp, _) = b.next();
    let f = env.outer_eth(
        &[],
        ETH_P_IP,
        &env.outer_ip().build(&udp(sp, port, None, &[])),
    );
    b.add(
        "UDP datagram with a zero-length payload",
        f,
        undecodable(sp),
    );

    let (sp, id) = b.next();
    let payload = vxlan(0x00, [0; 3], 1, &env.inner_ping(id, 32));
    let f = env.outer_eth(
        &[],
        ETH_P_IP,
        &env.outer_ip().build(&udp(sp, port, None, &payload)),
    );
    b.add("VXLAN I flag unset", f, undecodable(sp));

    let (sp, id) = b.next();
    let payload = vxlan(0x08 | 0x80, [0xff; 3], 1, &env.inner_ping(id, 32));
    let f = env.outer_eth(
        &[],
        ETH_P_IP,
        &env.outer_ip().build(&udp(sp, port, None, &payload)),
    );
    b.add(
        "VXLAN reserved bits set",
        f,
        Outcome::Reported(env.ping_want(sp, id)),
    );

    // Node a's own kernel refuses to encapsulate this one (it checks the
    // inner IP header is there), so it is built whole.
    let (sp, id) = b.next();
    let mut ip = Ipv4::new(INNER_SRC, INNER_DST, PROTO_ICMP)
        .id(id)
        .build(&[]);
    ip.truncate(12);
    let f = env.vxlan4(sp, &env.outer_ip(), &[], &env.inner_eth(ETH_P_IP, &ip));
    let outer = outer4(sp, port);
    b.add(
        "inner IPv4 header cut at 12 bytes",
        f,
        Outcome::Undecodable {
            outer,
            dropped: false,
        },
    );

    let (sp, id) = b.next();
    let payload = vxlan(0x08, [0; 3], 42, &env.inner_ping(id, 32));
    let f = env.outer_eth(
        &[],
        ETH_P_IP,
        &env.outer_ip().build(&udp(sp, port, None, &payload)),
    );
    let want = Want {
        vni: Some(42),
        ..env.ping_want(sp, id)
    };
    b.add("VNI mismatch (42)", f, Outcome::Reported(want));

    let (sp, id) = b.next();
    let f = env.vxlan4(
        sp,
        &env.outer_ip(),
        &[(ETH_P_8021Q, 100)],
        &env.inner_ping(id, 32),
    );
    let want = Want {
        vlan: Some(100),
        ..env.ping_want(sp, id)
    };
    b.add("outer 802.1Q tag", f, Outcome::Reported(want));

    let (sp, id) = b.next();
    let tags = [(ETH_P_8021AD, 200), (ETH_P_8021Q, 100)];
    let f = env.vxlan4(sp, &env.outer_ip(), &tags, &env.inner_ping(id, 32));
    let want = Want {
        vlan: Some(200),
        vlan_inner: Some(100),
        ..env.ping_want(sp, id)
    };
    b.add(
        "outer QinQ (802.1ad then 802.1Q)",
        f,
        Outcome::Reported(want),
    );

    let (sp, id) = b.next();
    let ip = Ipv4 {
        // NOP, NOP, NOP, then End of options, twice: 8 bytes, IHL 7.
        options: vec![1, 1, 1, 0, 1, 1, 1, 0],
        ..env.outer_ip()
    };
    let f = env.vxlan4(sp, &ip, &[], &env.inner_ping(id, 32));
    b.add(
        "outer IPv4 options (IHL 7)",
        f,
        Outcome::Reported(env.ping_want(sp, id)),
    );

    let (sp, id) = b.next();
    let ip = Ipv4 {
        frag: IP_MF,
        id: 0x7001,
        ..env.outer_ip()
    };
    let f = env.vxlan4(sp, &ip, &[], &env.inner_ping(id, 32));
    b.add(
        "outer first fragment",
        f,
        Outcome::Reported(env.ping_want(sp, id)),
    );

    let (sp, _) = b.next();
    let ip = Ipv4 {
        frag: 185,
        id: 0x7002,
        ..env.outer_ip()
    };
    // A later fragment has no UDP header: whatever its first bytes say.
    let mut body = udp(sp, port, None, &random_bytes(u64::from(sp), 64));
    body.truncate(72);
    let f = env.outer_eth(&[], ETH_P_IP, &ip.build(&body));
    b.add("outer later fragment", f, Outcome::Ignored);
}

pub use {icmp_ends as icmp, udp_ends as udp4_ends, v4 as ip4, v6 as ip6};
pub(crate) const POD6: (Ipv6Addr, Ipv6Addr) = (POD6_A, POD6_B);
