//! Generating traffic inside a namespace: ping (iputils), and TCP/UDP with
//! std::net on a thread that has entered the namespace, so no nc/socat is
//! needed and failures come back as `io::Error`s.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::{Netns, enter_netns};

/// What a client sends on a TCP connection; short enough for one segment.
const TCP_PAYLOAD: &[u8] = b"flannel-trace lab probe\n";

/// How long a listener waits for a connected client to send something.
const SERVER_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the listener thread looks at its stop flag between accepts.
const ACCEPT_POLL: Duration = Duration::from_millis(10);

/// Echo requests sent and replies received, from ping's summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingResult {
    pub sent: u32,
    pub received: u32,
}

impl PingResult {
    /// Every request was answered (and at least one was sent).
    pub fn all_received(&self) -> bool {
        self.sent > 0 && self.received == self.sent
    }
}

/// Parses iputils' "N packets transmitted, M received, ..." summary line.
pub fn parse_ping_summary(output: &str) -> Option<PingResult> {
    let line = output
        .lines()
        .find(|line| line.contains("packets transmitted"))?;
    let mut parts = line.split(',').map(str::trim);
    let sent = parts.next()?.strip_suffix(" packets transmitted")?;
    // "received" is the second field whether or not "+N duplicates" follows.
    let received = parts.next()?.strip_suffix(" received")?;
    Some(PingResult {
        sent: sent.parse().ok()?,
        received: received.parse().ok()?,
    })
}

/// A TCP server in a namespace: it accepts connections one at a time, reads
/// what the client sends, echoes it back and closes. Dropping it stops the
/// thread (which also releases its hold on the namespace).
pub struct Listener {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// The bound address (0.0.0.0:port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Payloads of the connections accepted so far, one entry each.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `count` connections were served; returns how
    /// many there were when it stopped waiting.
    pub fn wait_for_connections(&self, count: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let served = self.received.lock().unwrap().len();
            if served >= count || Instant::now() >= deadline {
                return served;
            }
            thread::sleep(ACCEPT_POLL);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Enters the namespace (this is the listener's own thread) and binds.
fn bind_in(path: &Path, netns: &str, port: u16) -> io::Result<(TcpListener, SocketAddr)> {
    enter_netns(path, netns)?;
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

fn serve(listener: TcpListener, received: Arc<Mutex<Vec<Vec<u8>>>>, stop: Arc<AtomicBool>) {
    // Non-blocking accept plus polling keeps shutdown simple: a blocking
    // accept could only be woken by a connection or by closing the fd from
    // another thread.
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let payload = echo_once(stream).unwrap_or_default();
                received.lock().unwrap().push(payload);
            }
            // WouldBlock (nobody waiting) is the usual case; the other accept
            // errors (a client that reset before accept) are per-connection.
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
    }
}

fn echo_once(mut stream: TcpStream) -> io::Result<Vec<u8>> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(SERVER_READ_TIMEOUT))?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf)?;
    stream.write_all(&buf[..n])?;
    stream.shutdown(Shutdown::Both)?;
    Ok(buf[..n].to_vec())
}

impl Netns {
    /// `ping -c count -i interval dst` inside the namespace (intervals
    /// below 200 ms are fine: we are root). Lost replies
    /// are a result, not an error; only an unusable ping run is an error.
    pub fn ping(&self, dst: IpAddr, count: u32, interval: Duration) -> Result<PingResult> {
        self.ping_with(None, dst, count, interval)
    }

    /// Like [`Netns::ping`] with the source address forced to `src` (e.g. a
    /// node's pod address on cni0, to send from the pod network).
    pub fn ping_from(
        &self,
        src: IpAddr,
        dst: IpAddr,
        count: u32,
        interval: Duration,
    ) -> Result<PingResult> {
        self.ping_with(Some(src), dst, count, interval)
    }

    fn ping_with(
        &self,
        src: Option<IpAddr>,
        dst: IpAddr,
        count: u32,
        interval: Duration,
    ) -> Result<PingResult> {
        let count_arg = count.to_string();
        let interval_arg = format!("{:.3}", interval.as_secs_f64());
        let src_arg = src.map(|ip| ip.to_string());
        let dst_arg = dst.to_string();
        let mut args = vec!["ping", "-n", "-q", "-c", &count_arg, "-i", &interval_arg];
        // -W bounds the wait for each reply, so a black-holed path costs
        // the sends plus one second. Not -w: with a deadline iputils keeps
        // sending until it has `count` replies, so "sent" would not be count.
        args.extend(["-W", "1"]);
        if let Some(src) = &src_arg {
            args.extend(["-I", src]);
        }
        args.push(&dst_arg);
        let out = self.exec(&args)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match parse_ping_summary(&stdout) {
            Some(result) => Ok(result),
            None => bail!(
                "`{}` in netns {} gave no summary ({}): {}{}",
                args.join(" "),
                self.name(),
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }

    /// Opens a TCP connection to `dst` from inside the namespace (full
    /// three-way handshake) and sends a few bytes. Does not wait for a reply.
    pub fn tcp_connect(&self, dst: SocketAddr, timeout: Duration) -> io::Result<()> {
        self.in_thread(|| {
            let mut stream = TcpStream::connect_timeout(&dst, timeout)?;
            stream.write_all(TCP_PAYLOAD)
        })
        .map_err(|e| with_target(e, "tcp connect", self.name(), dst))
    }

    /// Connects to `dst`, sends `payload` and reads until the server closes,
    /// returning what came back; against a [`Listener`] that is the echo,
    /// which proves data crossed the path both ways.
    pub fn tcp_echo(
        &self,
        dst: SocketAddr,
        payload: &[u8],
        timeout: Duration,
    ) -> io::Result<Vec<u8>> {
        self.in_thread(|| {
            let mut stream = TcpStream::connect_timeout(&dst, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.write_all(payload)?;
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply)?;
            Ok(reply)
        })
        .map_err(|e| with_target(e, "tcp echo", self.name(), dst))
    }

    /// Starts a [`Listener`] on 0.0.0.0:`port` inside the namespace. It is
    /// bound when this returns, so a client can connect right away.
    pub fn tcp_listen(&self, port: u16) -> Result<Listener> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (bound_tx, bound_rx) = mpsc::channel();
        let (path, netns) = (self.path(), self.name().to_owned());
        let thread = {
            let (received, stop, netns) = (Arc::clone(&received), Arc::clone(&stop), netns.clone());
            thread::Builder::new()
                .name(format!("listen-{port}"))
                .spawn(move || match bind_in(&path, &netns, port) {
                    Ok((listener, addr)) => {
                        let _ = bound_tx.send(Ok(addr));
                        serve(listener, received, stop);
                    }
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                    }
                })
        }
        .with_context(|| format!("spawning listener thread for netns {netns}"))?;
        let addr = bound_rx
            .recv()
            .context("listener thread died before binding")?
            .with_context(|| format!("listening on TCP port {port} in netns {netns}"))?;
        Ok(Listener {
            addr,
            received,
            stop,
            thread: Some(thread),
        })
    }

    /// Sends one UDP datagram to `dst` from inside the namespace.
    pub fn udp_send(&self, dst: SocketAddr, payload: &[u8]) -> io::Result<()> {
        self.udp_send_from(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), dst, payload)
    }

    /// Sends one UDP datagram to `dst` from the local address `src` (port 0
    /// picks any), e.g. to send from a pod address or a fixed source port.
    pub fn udp_send_from(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        self.in_thread(|| {
            let socket = UdpSocket::bind(src)?;
            let sent = socket.send_to(payload, dst)?;
            if sent != payload.len() {
                return Err(io::Error::other(format!(
                    "sent {sent} of {} bytes",
                    payload.len()
                )));
            }
            Ok(())
        })
        .map_err(|e| with_target(e, "udp send", self.name(), dst))
    }
}

fn with_target(err: io::Error, what: &str, netns: &str, dst: SocketAddr) -> io::Error {
    io::Error::new(
        err.kind(),
        format!("{what} to {dst} from netns {netns}: {err}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_partial_loss() {
        let ok = "--- 10.244.2.0 ping statistics ---\n\
                  3 packets transmitted, 3 received, 0% packet loss, time 402ms\n\
                  rtt min/avg/max/mdev = 0.051/0.070/0.090/0.016 ms\n";
        assert_eq!(
            parse_ping_summary(ok),
            Some(PingResult {
                sent: 3,
                received: 3
            })
        );
        let lost = "5 packets transmitted, 0 received, 100% packet loss, time 4090ms\n";
        assert_eq!(
            parse_ping_summary(lost),
            Some(PingResult {
                sent: 5,
                received: 0
            })
        );
        let errors = "4 packets transmitted, 1 received, +3 errors, 75% packet loss, time 3ms";
        assert_eq!(parse_ping_summary(errors).unwrap().received, 1);
    }

    #[test]
    fn rejects_output_without_summary() {
        assert_eq!(
            parse_ping_summary("ping: connect: Network is unreachable\n"),
            None
        );
    }

    #[test]
    fn all_received_needs_something_sent() {
        assert!(
            !PingResult {
                sent: 0,
                received: 0
            }
            .all_received()
        );
        assert!(
            PingResult {
                sent: 2,
                received: 2
            }
            .all_received()
        );
    }
}
