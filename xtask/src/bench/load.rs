//! Traffic between the two pods, through cni0, flannel.1 and the underlay:
//! a 64-byte UDP flood, TCP bulk, and a TCP request/response ping-pong.
//! Generators of our own rather than iperf3, so that every run is bounded in
//! time, needs no server process per namespace, and counts exactly what the
//! receiving pod got.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use flannel_trace_tests::Node;

use super::figures::quantile;

const UDP_PORT: u16 = 9100;
const TCP_PORT: u16 = 9101;
const RR_PORT: u16 = 9102;
/// UDP payload of the flood, as `iperf3 -u -l 64`.
pub const UDP_PAYLOAD: usize = 64;
/// Request and response size of the ping-pong.
const RR_SIZE: usize = 64;

pub struct Udp {
    pub sent: u64,
    pub received: u64,
    pub secs: f64,
}

impl Udp {
    /// Packets per second that reached the receiving pod.
    pub fn rate(&self) -> f64 {
        self.received as f64 / self.secs
    }
}

fn set_rcvbuf(fd: i32, bytes: i32) {
    // SAFETY: plain setsockopt on an open socket with an int option. A
    // large buffer keeps the sink from being where packets are lost; the
    // kernel caps it at net.core.rmem_max unless FORCE is allowed (root).
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const i32).cast(),
            size_of::<i32>() as u32,
        );
    }
}

/// 64-byte UDP as fast as one sender thread can send, pod `a` → pod `b`,
/// for `secs`; the rate is what pod b received.
pub fn udp_flood(a: &Node, b: &Node, dur: Duration) -> Result<Udp> {
    let dst = SocketAddr::new(b.pod_ip().into(), UDP_PORT);
    let sink = b.pod().in_thread(|| UdpSocket::bind(dst))?;
    set_rcvbuf(sink.as_raw_fd(), 8 << 20);
    sink.set_read_timeout(Some(Duration::from_millis(100)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let counter = {
        let (stop, received) = (stop.clone(), received.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if sink.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let src = a.pod().in_thread(|| {
        let s = UdpSocket::bind(SocketAddr::new(a.pod_ip().into(), 0))?;
        s.connect(dst)?;
        Ok(s)
    })?;
    let payload = [0x5au8; UDP_PAYLOAD];
    // Warm-up: ARP/neighbour entries and the first-packet paths are not
    // what is measured.
    for _ in 0..100 {
        let _ = src.send(&payload);
    }
    thread::sleep(Duration::from_millis(100));
    let before = received.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < dur {
        for _ in 0..64 {
            // ENOBUFS under overload is part of the measurement: such a
            // packet was not delivered.
            if src.send(&payload).is_ok() {
                sent += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // What was in flight when sending stopped still belongs to the window.
    thread::sleep(Duration::from_millis(50));
    let got = received.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    counter.join().map_err(|_| anyhow!("UDP sink panicked"))?;
    Ok(Udp {
        sent,
        received: got,
        secs,
    })
}

/// Bulk TCP pod `a` → pod `b` for `dur`, MB/s as received.
pub fn tcp_bulk(a: &Node, b: &Node, dur: Duration) -> Result<f64> {
    let dst = SocketAddr::new(b.pod_ip().into(), TCP_PORT);
    let listener = b.pod().in_thread(|| TcpListener::bind(dst))?;
    let sink = thread::spawn(move || -> std::io::Result<(u64, f64)> {
        let (mut s, _) = listener.accept()?;
        let start = Instant::now();
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok((n, start.elapsed().as_secs_f64())),
                k => n += k as u64,
            }
        }
    });
    a.pod().in_thread(|| {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(3))?;
        let chunk = vec![0x5au8; 1 << 16];
        let start = Instant::now();
        while start.elapsed() < dur {
            s.write_all(&chunk)?;
        }
        Ok(())
    })?;
    let (bytes, secs) = sink
        .join()
        .map_err(|_| anyhow!("TCP sink panicked"))?
        .context("TCP sink")?;
    Ok(bytes as f64 / 1e6 / secs)
}

pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
}

/// 64-byte request, 64-byte response over one TCP connection (Nagle off),
/// back to back for `dur`: round-trip percentiles.
pub fn request_response(a: &Node, b: &Node, dur: Duration) -> Result<Latency> {
    let dst = SocketAddr::new(b.pod_ip().into(), RR_PORT);
    let listener = b.pod().in_thread(|| TcpListener::bind(dst))?;
    let server = thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; RR_SIZE];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut rtts = a.pod().in_thread(|| {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(3))?;
        s.set_nodelay(true)?;
        // Generous: a retransmission on a loaded machine is slow, not a hang.
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0x33u8; RR_SIZE];
        let mut rtts = Vec::with_capacity(1 << 16);
        let start = Instant::now();
        while start.elapsed() < dur {
            let t = Instant::now();
            s.write_all(&buf)?;
            s.read_exact(&mut buf)?;
            rtts.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(rtts)
    })?;
    server
        .join()
        .map_err(|_| anyhow!("ping-pong server panicked"))?
        .context("ping-pong server")?;
    Ok(Latency {
        p50_us: quantile(&mut rtts, 0.50).unwrap_or(f64::NAN),
        p99_us: quantile(&mut rtts, 0.99).unwrap_or(f64::NAN),
    })
}
