//! `--probe`: a few recognisable ICMP echo requests across the overlay, so
//! that an idle or broken link still produces packets to judge.

use std::{io, mem, net::IpAddr, time::Duration};

use thiserror::Error;

/// Payload that marks our probes in captures.
const PAYLOAD: &[u8] = b"flannel-trace probe";

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("cannot open a raw ICMP socket for --probe: {0} (needs CAP_NET_RAW)")]
    Socket(io::Error),
    #[error("sending probe {seq} to {to}: {source}")]
    Send {
        seq: u16,
        to: IpAddr,
        source: io::Error,
    },
}

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

struct RawSocket(libc::c_int);

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: our own descriptor.
        unsafe { libc::close(self.0) };
    }
}

fn send_one(sock: &RawSocket, to: IpAddr, packet: &[u8]) -> io::Result<()> {
    // SAFETY: zeroed sockaddr structs are valid; sendto gets the exact size.
    let rc = unsafe {
        match to {
            IpAddr::V4(a) => {
                let mut sa: libc::sockaddr_in = mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
                sendto(sock, packet, &sa)
            }
            IpAddr::V6(a) => {
                let mut sa: libc::sockaddr_in6 = mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_addr.s6_addr = a.octets();
                sendto(sock, packet, &sa)
            }
        }
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// sendto(2) with any `sockaddr_*`.
///
/// # Safety
/// `T` must be a sockaddr type matching the socket's family.
unsafe fn sendto<T>(sock: &RawSocket, packet: &[u8], sa: &T) -> isize {
    // SAFETY: valid buffer and address of the stated sizes; see above.
    unsafe {
        libc::sendto(
            sock.0,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (sa as *const T).cast(),
            mem::size_of::<T>() as u32,
        )
    }
}

/// Send `count` echo requests to `to`, `interval` apart. Replies are left
/// to the kernel: the tracer sees them on their way back.
pub async fn run(to: IpAddr, count: u32, interval: Duration) -> Result<u32, ProbeError> {
    let (family, proto) = match to {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    };
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            proto,
        )
    };
    if fd < 0 {
        return Err(ProbeError::Socket(io::Error::last_os_error()));
    }
    let sock = RawSocket(fd);
    let mut tick = tokio::time::interval(interval);
    let id = echo_id();
    for seq in 0..count {
        tick.tick().await;
        let seq = (seq & 0xffff) as u16;
        let pkt = echo_request(to.is_ipv6(), id, seq);
        send_one(&sock, to, &pkt).map_err(|source| ProbeError::Send { seq, to, source })?;
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
