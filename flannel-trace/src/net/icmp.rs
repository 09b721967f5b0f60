//! `--probe`: a few recognisable ICMP echo requests across the overlay, so
//! that an idle or broken link still produces packets to judge.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::error::NetError;

/// Payload that marks our probes in captures.
const PAYLOAD: &[u8] = b"flannel-trace probe";

/// The echo identifier of this process's probes.
pub fn echo_id() -> u16 {
    // Tagged so that the programs can keep probes under --sample.
    flannel_trace_common::fingerprint::PROBE_ID_TAG | (std::process::id() & 0xff) as u16
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP (or ICMPv6) echo request. ICMPv6 checksums are filled in by the
/// kernel on raw sockets, since they cover the IPv6 pseudo-header.
pub fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(PAYLOAD);
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// Send `count` echo requests to `to`, `interval` apart. Replies are left
/// to the kernel: the tracer sees them on their way back.
pub async fn run(to: IpAddr, count: u32, interval: Duration) -> Result<u32, NetError> {
    let (domain, proto) = match to {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    // socket2 gives raw sockets without unsafe code; close-on-exec is its
    // default. Non-blocking: one echo request never waits for buffer space.
    let sock = Socket::new(domain, Type::RAW, Some(proto)).map_err(NetError::IcmpSocket)?;
    sock.set_nonblocking(true).map_err(NetError::IcmpSocket)?;
    let dest = SockAddr::from(SocketAddr::new(to, 0));
    let mut tick = tokio::time::interval(interval);
    let id = echo_id();
    for seq in 0..count {
        tick.tick().await;
        let seq = (seq & 0xffff) as u16;
        let pkt = echo_request(to.is_ipv6(), id, seq);
        sock.send_to(&pkt, &dest)
            .map_err(|source| NetError::IcmpSend { seq, to, source })?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksum_verifies() {
        let p = echo_request(false, 0x1234, 7);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
        assert!(p.ends_with(PAYLOAD));
        let v6 = echo_request(true, 1, 2);
        assert_eq!((v6[0], v6[2], v6[3]), (128, 0, 0));
    }
}
