//! Parser, fingerprint and decoding tests on hand-built frames; the frame
//! builders they share (and `dropped_tests` uses) are here.
extern crate std;

mod decoding;
mod overlay;
mod underlay;

use std::vec::Vec;

use crate::Ports;

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
