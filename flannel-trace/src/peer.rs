//! The live channel between two nodes: `--listen` on one, `--peer` on the
//! other. It runs over the underlay (TCP between the nodes' own addresses),
//! so it keeps working when the overlay under investigation is broken.
//!
//! Handshake, each step bounded by [`STEP_TIMEOUT`]:
//!
//! ```text
//! listener                                   connecting node
//!    Challenge { version, nonce }   ──────▶
//!                                   ◀──────  Auth { mac }
//!    Start(identity)                ──────▶     (or Refused { reason })
//!                                   ◀──────  Start(identity)
//!    ClockPing × CLOCK_ROUNDS       ──────▶
//!                                   ◀──────  ClockPong × CLOCK_ROUNDS
//! ```
//!
//! `mac` is HMAC-SHA256 keyed with the shared token over
//! `"flannel-trace/1 " + nonce`, so the token never crosses the wire and a
//! recorded `Auth` is useless against a fresh nonce. What this does *not*
//! give: the listener does not prove that it knows the token, and nothing
//! after the handshake is encrypted or authenticated, so an attacker on the
//! underlay path could read or hijack the stream. It keeps strangers and
//! misconfigured nodes out; it is not a secure tunnel.
//!
//! Every frame is bounded by [`wire::MAX_FRAME`] before anything is
//! allocated, and TCP keepalive bounds how long a vanished peer goes
//! unnoticed.

use std::net::SocketAddr;
use std::time::Duration;
use std::{fmt, io};

use bytes::BytesMut;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use socket2::{SockRef, TcpKeepalive};
use thiserror::Error;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, timeout};

use crate::clock::Clock;
use crate::identity::NodeIdentity;
use crate::verdict::ClockEstimate;
use crate::wire::{self, FrameError, Message};

pub const PROTOCOL_VERSION: u32 = 1;

/// Limit on each handshake step (one message awaited).
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between connection attempts while the listener is not up yet.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// Ping-pong rounds of the clock exchange; the connecting side answers
/// exactly this many, so it is part of the protocol version.
const CLOCK_ROUNDS: u32 = 8;
/// A peer that vanishes without closing (crash, power, cut link) sends no
/// FIN: keepalive probes (idle connections) and TCP_USER_TIMEOUT (unacked
/// data) turn that into an error after about a minute, instead of a `recv`
/// that waits forever. Generous, since the underlay being debugged may
/// itself be lossy.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_PROBES: u32 = 9;
const DEAD_PEER_AFTER: Duration = Duration::from_secs(60);
/// Initial read buffer; it grows with the largest frame seen.
const READ_BUFFER: usize = 16 * 1024;

#[derive(Debug, Error)]
pub enum PeerError {
    #[error(
        "no peer token: pass --token or set FLANNEL_TRACE_TOKEN, with the same secret on both nodes"
    )]
    NoToken,
    #[error(
        "could not connect to the listener at {addr} within {waited:?}: {source} (is `flannel-trace --listen` running there, and does the firewall let the port through on the underlay?)"
    )]
    Connect {
        addr: SocketAddr,
        waited: Duration,
        source: io::Error,
    },
    #[error(
        "no peer authenticated on {local} within {waited:?}: run `flannel-trace --peer <this node's underlay address>:{port} --token …` on the other node, with the same token",
        port = local.port()
    )]
    NoPeer { local: SocketAddr, waited: Duration },
    #[error("the peer listening socket is unusable: {0}")]
    Socket(io::Error),
    #[error(
        "the listener at {peer} refused this node: {reason} (both nodes need the same --token and flannel-trace version)"
    )]
    Refused { peer: SocketAddr, reason: String },
    #[error("handshake with {peer} failed: {reason}")]
    Handshake { peer: SocketAddr, reason: String },
    #[error("connection with peer {peer} failed: {source}")]
    Io { peer: SocketAddr, source: io::Error },
    #[error("could not send a message to peer {peer}: {source}")]
    Encode {
        peer: SocketAddr,
        source: FrameError,
    },
    #[error("peer {peer} sent a bad frame: {source}")]
    Frame {
        peer: SocketAddr,
        source: FrameError,
    },
    #[error("peer {peer} went away in the middle of a frame ({pending} bytes received)")]
    Truncated { peer: SocketAddr, pending: usize },
    #[error("could not read random bytes for the challenge: {0}")]
    Random(io::Error),
}

impl PeerError {
    /// What the listener tells a client it turns away, and logs: the
    /// client's address is already known to both.
    fn reason(&self) -> String {
        match self {
            PeerError::Handshake { reason, .. } => reason.clone(),
            PeerError::Refused { reason, .. } => format!("it refused this node: {reason}"),
            PeerError::Io { source, .. } => source.to_string(),
            PeerError::Frame { source, .. } => format!("bad frame: {source}"),
            PeerError::Truncated { pending, .. } => format!("closed mid-frame ({pending} bytes)"),
            other => other.to_string(),
        }
    }
}

/// A framed, bounded message stream over TCP.
#[derive(Debug)]
pub struct Channel {
    tx: ChannelTx,
    rx: ChannelRx,
}

/// Sending half of a [`Channel`].
#[derive(Debug)]
pub struct ChannelTx {
    half: OwnedWriteHalf,
    peer: SocketAddr,
}

/// Receiving half of a [`Channel`].
pub struct ChannelRx {
    half: OwnedReadHalf,
    buf: BytesMut,
    peer: SocketAddr,
}

impl fmt::Debug for ChannelRx {
    // Not derived: the buffer may hold a megabyte of someone's frame.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelRx")
            .field("peer", &self.peer)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl Channel {
    fn new(stream: TcpStream) -> io::Result<Channel> {
        let peer = stream.peer_addr()?;
        // Handshake and clock pings are small request/response messages:
        // Nagle's algorithm would hold them back and skew the clock rounds.
        stream.set_nodelay(true)?;
        let sock = SockRef::from(&stream);
        let keepalive = TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES);
        sock.set_tcp_keepalive(&keepalive)?;
        sock.set_tcp_user_timeout(Some(DEAD_PEER_AFTER))?;
        let (read, write) = stream.into_split();
        Ok(Channel {
            tx: ChannelTx { half: write, peer },
            rx: ChannelRx {
                half: read,
                buf: BytesMut::with_capacity(READ_BUFFER),
                peer,
            },
        })
    }

    pub async fn send(&mut self, msg: &Message) -> Result<(), PeerError> {
        self.tx.send(msg).await
    }

    /// Next message; `Ok(None)` on orderly EOF. A frame over
    /// [`wire::MAX_FRAME`], a bad checksum or invalid JSON is an error.
    pub async fn recv(&mut self) -> Result<Option<Message>, PeerError> {
        self.rx.recv().await
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.tx.peer
    }

    /// Split into halves that can be used from different tasks.
    pub fn split(self) -> (ChannelTx, ChannelRx) {
        (self.tx, self.rx)
    }
}

impl ChannelTx {
    /// Not cancel-safe: a send abandoned half-way leaves a partial frame on
    /// the stream, so do not race it in `select!` and then keep using it.
    pub async fn send(&mut self, msg: &Message) -> Result<(), PeerError> {
        let peer = self.peer;
        let frame = wire::encode(msg).map_err(|source| PeerError::Encode { peer, source })?;
        self.half
            .write_all(&frame)
            .await
            .map_err(|source| PeerError::Io { peer, source })
    }
}

impl ChannelRx {
    /// Next message; `Ok(None)` on orderly EOF. Cancel-safe (bytes already
    /// read stay buffered), so it can be raced in `select!`.
    pub async fn recv(&mut self) -> Result<Option<Message>, PeerError> {
        let peer = self.peer;
        loop {
            // `decode` rejects an oversized length before reserving room for
            // it, and we only read while less than one whole frame is
            // buffered, so the buffer stays within a small multiple of
            // MAX_FRAME whatever the peer sends.
            if let Some(msg) =
                wire::decode(&mut self.buf).map_err(|source| PeerError::Frame { peer, source })?
            {
                return Ok(Some(msg));
            }
            let n = self
                .half
                .read_buf(&mut self.buf)
                .await
                .map_err(|source| PeerError::Io { peer, source })?;
            if n == 0 {
                return match self.buf.len() {
                    0 => Ok(None),
                    pending => Err(PeerError::Truncated { peer, pending }),
                };
            }
        }
    }
}

/// The outcome of a handshake.
#[derive(Debug)]
pub struct Handshake {
    pub remote: NodeIdentity,
    /// Listener side only: the clock offset to the peer.
    pub clock: Option<ClockEstimate>,
}

/// Listening side. Accepts connections until one authenticates; a client
/// that fails the handshake in any way is sent `Refused { reason }` if
/// possible, logged and dropped, and the listener keeps waiting. Clients are
/// handled one at a time, so a silent one delays the next by at most
/// [`STEP_TIMEOUT`]. Gives up after `wait` (`None`: never).
pub async fn listen(
    listener: TcpListener,
    token: &str,
    local: &NodeIdentity,
    wait: Option<Duration>,
) -> Result<(Handshake, Channel), PeerError> {
    require_token(token)?;
    let local_addr = listener.local_addr().map_err(PeerError::Socket)?;
    let accepting = async {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Linux reports some errors of the new connection (and
                    // running out of descriptors) here: neither ends the
                    // listener, but pause so that a persistent one does not
                    // spin.
                    log::warn!("accepting a peer on {local_addr}: {e}");
                    sleep(RETRY_EVERY).await;
                    continue;
                }
            };
            let mut ch = match Channel::new(stream) {
                Ok(ch) => ch,
                Err(e) => {
                    log::warn!("refused peer {addr}: {e}");
                    continue;
                }
            };
            match admit(&mut ch, token, local).await {
                Ok(handshake) => return Ok((handshake, ch)),
                Err(PeerError::Random(e)) => return Err(PeerError::Random(e)),
                Err(e) => {
                    let reason = e.reason();
                    log::warn!("refused peer {addr}: {reason}");
                    // Best effort: the client may be gone or not reading.
                    let refused = Message::Refused { reason };
                    let _ = timeout(Duration::from_secs(1), ch.send(&refused)).await;
                }
            }
        }
    };
    match wait {
        None => accepting.await,
        Some(waited) => timeout(waited, accepting)
            .await
            .unwrap_or(Err(PeerError::NoPeer {
                local: local_addr,
                waited,
            })),
    }
}

/// The listener's half of the handshake with one client.
async fn admit(
    ch: &mut Channel,
    token: &str,
    local: &NodeIdentity,
) -> Result<Handshake, PeerError> {
    let nonce = random_nonce()?;
    let challenge = Message::Challenge {
        version: PROTOCOL_VERSION,
        nonce: nonce.clone(),
    };
    send_step(ch, &challenge).await?;
    match expect(ch, "the auth reply", STEP_TIMEOUT).await? {
        Message::Auth { mac } if mac_matches(token, &nonce, &mac) => {}
        Message::Auth { .. } => return Err(handshake_error(ch, "bad token")),
        other => return Err(unexpected(ch, "the auth reply", &other)),
    }
    send_step(ch, &Message::Start(local.clone())).await?;
    let remote = match expect(ch, "the peer's identity", STEP_TIMEOUT).await? {
        Message::Start(identity) => identity,
        other => return Err(unexpected(ch, "the peer's identity", &other)),
    };
    let clock = measure_clock(ch).await?;
    Ok(Handshake {
        remote,
        clock: Some(clock),
    })
}

/// Connecting side: connect (retrying every 500 ms until `wait` elapses,
/// since the listener may start a little later), answer the challenge,
/// exchange identities, answer the clock pings.
pub async fn connect(
    addr: SocketAddr,
    token: &str,
    local: &NodeIdentity,
    wait: Duration,
) -> Result<(Handshake, Channel), PeerError> {
    require_token(token)?;
    let deadline = Instant::now() + wait;
    let stream = loop {
        // An unanswered SYN can take minutes to fail: bound each attempt
        // (but always make one).
        let remaining = deadline.saturating_duration_since(Instant::now());
        let error = match timeout(remaining.max(RETRY_EVERY), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => break stream,
            Ok(Err(e)) => e,
            Err(_) => io::ErrorKind::TimedOut.into(),
        };
        if Instant::now() + RETRY_EVERY > deadline {
            return Err(PeerError::Connect {
                addr,
                waited: wait,
                source: error,
            });
        }
        log::debug!("connecting to {addr}: {error}; retrying");
        sleep(RETRY_EVERY).await;
    };
    let mut ch = Channel::new(stream).map_err(|source| PeerError::Io { peer: addr, source })?;

    // A listener busy turning away another client answers late: allow the
    // rest of the connect budget for the challenge.
    let first = STEP_TIMEOUT.max(deadline.saturating_duration_since(Instant::now()));
    let nonce = match expect(&mut ch, "the challenge", first).await? {
        Message::Challenge { version, nonce } if version == PROTOCOL_VERSION => nonce,
        Message::Challenge { version, .. } => {
            let reason = format!(
                "the listener speaks protocol version {version}, this node {PROTOCOL_VERSION}: \
                 run the same flannel-trace version on both nodes"
            );
            let _ = send_step(
                &mut ch,
                &Message::Refused {
                    reason: reason.clone(),
                },
            )
            .await;
            return Err(handshake_error(&ch, reason));
        }
        other => return Err(unexpected(&ch, "the challenge", &other)),
    };
    let mac = mac_hex(token, &nonce);
    send_step(&mut ch, &Message::Auth { mac }).await?;
    let remote = match expect(&mut ch, "the listener's identity", STEP_TIMEOUT).await? {
        Message::Start(identity) => identity,
        other => return Err(unexpected(&ch, "the listener's identity", &other)),
    };
    send_step(&mut ch, &Message::Start(local.clone())).await?;
    for _ in 0..CLOCK_ROUNDS {
        match expect(&mut ch, "a clock ping", STEP_TIMEOUT).await? {
            Message::ClockPing { id, t1 } => {
                let t2 = Clock::now_wall_ns();
                // t3 as late as possible: time spent here counts as ours,
                // not as path delay.
                let pong = Message::ClockPong {
                    id,
                    t1,
                    t2,
                    t3: Clock::now_wall_ns(),
                };
                send_step(&mut ch, &pong).await?;
            }
            other => return Err(unexpected(&ch, "a clock ping", &other)),
        }
    }
    Ok((
        Handshake {
            remote,
            clock: None,
        },
        ch,
    ))
}

fn require_token(token: &str) -> Result<(), PeerError> {
    if token.is_empty() {
        return Err(PeerError::NoToken);
    }
    Ok(())
}

/// The next message within `limit`; a `Refused` from the other side ends the
/// handshake.
async fn expect(ch: &mut Channel, what: &str, limit: Duration) -> Result<Message, PeerError> {
    match timeout(limit, ch.recv()).await {
        Err(_) => Err(handshake_error(
            ch,
            format!("timed out after {limit:?} waiting for {what}"),
        )),
        Ok(Ok(None)) => Err(handshake_error(
            ch,
            format!("connection closed while waiting for {what}"),
        )),
        Ok(Ok(Some(Message::Refused { reason }))) => Err(PeerError::Refused {
            peer: ch.peer_addr(),
            reason,
        }),
        Ok(Ok(Some(msg))) => Ok(msg),
        Ok(Err(e)) => Err(e),
    }
}

/// Send during the handshake: a peer that stops reading cannot stall us.
async fn send_step(ch: &mut Channel, msg: &Message) -> Result<(), PeerError> {
    match timeout(STEP_TIMEOUT, ch.send(msg)).await {
        Ok(sent) => sent,
        Err(_) => Err(handshake_error(
            ch,
            format!("could not send within {STEP_TIMEOUT:?}"),
        )),
    }
}

fn handshake_error(ch: &Channel, reason: impl Into<String>) -> PeerError {
    PeerError::Handshake {
        peer: ch.peer_addr(),
        reason: reason.into(),
    }
}

fn unexpected(ch: &Channel, expected: &str, got: &Message) -> PeerError {
    let got = got.kind();
    handshake_error(
        ch,
        format!(
            "expected {expected}, got a {got} message (not a flannel-trace peer of this version?)"
        ),
    )
}

/// 32 bytes from the kernel's CSPRNG, hex-encoded.
fn random_nonce() -> Result<String, PeerError> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        let rest = &mut bytes[filled..];
        // SAFETY: the pointer and length describe the writable `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(PeerError::Random(e));
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(hex(&bytes))
}

/// The connecting side's proof that it knows `token`, bound to this
/// protocol version and to the listener's fresh `nonce`.
fn authenticator(token: &str, nonce: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(format!("flannel-trace/{PROTOCOL_VERSION} ").as_bytes());
    mac.update(nonce.as_bytes());
    mac
}

fn mac_hex(token: &str, nonce: &str) -> String {
    hex(&authenticator(token, nonce).finalize().into_bytes())
}

/// Constant-time check of a hex MAC from the wire (`verify_slice` compares
/// without an early exit, so timing does not reveal a matching prefix).
fn mac_matches(token: &str, nonce: &str, mac: &str) -> bool {
    unhex(mac).is_some_and(|tag| authenticator(token, nonce).verify_slice(&tag).is_ok())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    // A SHA-256 tag is 64 hex digits: anything else cannot match, and
    // rejecting it first keeps a hostile string from costing anything.
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The listener's side of the clock exchange.
async fn measure_clock(ch: &mut Channel) -> Result<ClockEstimate, PeerError> {
    let mut rounds = Vec::with_capacity(CLOCK_ROUNDS as usize);
    for id in 0..CLOCK_ROUNDS {
        let t1 = Clock::now_wall_ns();
        send_step(ch, &Message::ClockPing { id, t1 }).await?;
        match expect(ch, "a clock pong", STEP_TIMEOUT).await? {
            Message::ClockPong {
                id: got, t2, t3, ..
            } if got == id => rounds.push(Round {
                t1,
                t2,
                t3,
                t4: Clock::now_wall_ns(),
            }),
            other => return Err(unexpected(ch, &format!("clock pong {id}"), &other)),
        }
    }
    estimate(&rounds).ok_or_else(|| {
        handshake_error(
            ch,
            "no usable clock round (a wall clock stepped during the exchange?)",
        )
    })
}

/// One NTP-style round: t1 and t4 on the listener's clock, t2 and t3 on the
/// peer's.
#[derive(Debug, Clone, Copy)]
struct Round {
    t1: i64,
    t2: i64,
    t3: i64,
    t4: i64,
}

/// The offset from the round with the least path delay.
///
/// With θ the true offset (peer − local) and d₁, d₂ the one-way delays
/// there and back: t2 − t1 = θ + d₁ and t3 − t4 = θ − d₂, so the estimate
/// ((t2 − t1) + (t3 − t4)) / 2 = θ + (d₁ − d₂) / 2, and the round trip is
/// delay = (t4 − t1) − (t3 − t2) = d₁ + d₂. The estimate is exact when the
/// path is symmetric (d₁ = d₂), the usual NTP assumption; and since neither
/// one-way delay can be negative, |d₁ − d₂| ≤ d₁ + d₂, so delay / 2 bounds
/// the error however asymmetric the path, provided neither clock steps or
/// drifts noticeably within a round (a sub-millisecond span here).
fn estimate(rounds: &[Round]) -> Option<ClockEstimate> {
    // In i128: the peer's clock may be anywhere (unset, or its timestamps
    // garbage), and differences of i64 timestamps need not fit in an i64.
    let (delay, offset) = rounds
        .iter()
        .filter_map(|r| {
            let [t1, t2, t3, t4] = [r.t1, r.t2, r.t3, r.t4].map(i128::from);
            let delay = (t4 - t1) - (t3 - t2);
            // A negative delay means a clock was stepped mid-round.
            (delay >= 0).then_some((delay, ((t2 - t1) + (t3 - t4)) / 2))
        })
        .min_by_key(|(delay, _)| *delay)?;
    Some(ClockEstimate {
        offset_ns: i64::try_from(offset).ok()?,
        // Rounded up, so that halving an odd delay stays a bound.
        error_ns: i64::try_from((delay + 1) / 2).ok()?,
        samples: rounds.len() as u32,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, Once};
    use std::thread::{self, ThreadId};

    use bytes::BufMut as _;

    use super::*;

    const TOKEN: &str = "s3cret";
    const MS: i64 = 1_000_000;

    fn identity(node: &str) -> NodeIdentity {
        NodeIdentity {
            version: "test".into(),
            node: node.into(),
            kernel: "6.1.0".into(),
            netns_inode: 4_026_531_840,
            vxlan_dev: "flannel.1".into(),
            vxlan_ifindex: 3,
            vxlan_mac: Some("aa:bb:cc:dd:ee:ff".into()),
            vtep_addrs: vec!["10.244.1.0".parse().unwrap()],
            underlay_dev: "eth0".into(),
            underlay_ifindex: 2,
            underlay_addrs: vec!["192.0.2.1".parse().unwrap()],
            local: None,
            port: 8472,
            ports: vec![8472],
            port_source: "default".into(),
            device_port: Some(8472),
            vni: Some(1),
            fdb: vec![],
            hooks: vec![],
            clock_offset_ns: 0,
            ring_size: 1 << 20,
            attached_wall_ns: 0,
            ..Default::default()
        }
    }

    async fn bound() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    /// A loopback address nothing listens on (for now).
    async fn free_addr() -> SocketAddr {
        bound().await.1
    }

    /// Captures warnings per thread: `#[tokio::test]` runs every task of a
    /// test on the test's own thread, so tests running in parallel do not
    /// see each other's lines.
    struct Capture;
    static LINES: Mutex<Vec<(ThreadId, String)>> = Mutex::new(Vec::new());

    impl log::Log for Capture {
        fn enabled(&self, meta: &log::Metadata) -> bool {
            meta.level() <= log::Level::Warn
        }
        fn log(&self, record: &log::Record) {
            if self.enabled(record.metadata()) {
                let line = record.args().to_string();
                LINES.lock().unwrap().push((thread::current().id(), line));
            }
        }
        fn flush(&self) {}
    }

    fn capture_logs() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            log::set_logger(&Capture).expect("no other logger in tests");
            log::set_max_level(log::LevelFilter::Warn);
        });
    }

    fn warnings() -> Vec<String> {
        let me = thread::current().id();
        let lines = LINES.lock().unwrap();
        lines
            .iter()
            .filter(|(t, _)| *t == me)
            .map(|(_, l)| l.clone())
            .collect()
    }

    async fn pair() -> (Handshake, Channel, Handshake, Channel) {
        let (listener, addr) = bound().await;
        let (a, b) = (identity("node-a"), identity("node-b"));
        let (listened, connected) = tokio::join!(
            listen(listener, TOKEN, &a, Some(Duration::from_secs(10))),
            connect(addr, TOKEN, &b, Duration::from_secs(5)),
        );
        let (hs_a, ch_a) = listened.unwrap();
        let (hs_b, ch_b) = connected.unwrap();
        (hs_a, ch_a, hs_b, ch_b)
    }

    #[tokio::test]
    async fn handshake_exchanges_identities_and_measures_the_clock() {
        let (hs_a, ch_a, hs_b, ch_b) = pair().await;
        assert_eq!(hs_a.remote.node, "node-b");
        assert_eq!(hs_b.remote.node, "node-a");
        assert_eq!(ch_a.peer_addr(), ch_b.tx.half.local_addr().unwrap());
        assert!(hs_b.clock.is_none(), "only the listener measures");
        let clock = hs_a.clock.expect("listener measures the clock");
        eprintln!(
            "loopback clock estimate: offset {} ns, error {} ns",
            clock.offset_ns, clock.error_ns
        );
        assert_eq!(clock.samples, CLOCK_ROUNDS);
        // Both sides read the same clock: the true offset is 0.
        assert!(clock.error_ns < 5 * MS, "{clock:?}");
        assert!(clock.offset_ns.abs() <= clock.error_ns + MS, "{clock:?}");
    }

    #[tokio::test]
    async fn wrong_token_is_refused_and_the_listener_keeps_waiting() {
        capture_logs();
        let (listener, addr) = bound().await;
        let server = tokio::spawn(async move {
            listen(
                listener,
                TOKEN,
                &identity("a"),
                Some(Duration::from_secs(20)),
            )
            .await
        });
        let wait = Duration::from_secs(5);
        let err = connect(addr, "guess", &identity("intruder"), wait)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refused") && err.contains("bad token"),
            "{err}"
        );
        assert!(err.contains(&addr.to_string()), "{err}");

        let (hs, _ch) = connect(addr, TOKEN, &identity("b"), wait).await.unwrap();
        assert_eq!(hs.remote.node, "a");
        let (server_hs, _server_ch) = server.await.unwrap().unwrap();
        assert_eq!(server_hs.remote.node, "b");
        let logs = warnings();
        assert!(
            logs.iter()
                .any(|l| l.starts_with("refused peer 127.0.0.1:") && l.ends_with(": bad token")),
            "{logs:?}"
        );
    }

    /// Connects, sends `bytes`, and reads what the listener says until it
    /// hangs up.
    async fn turned_away(addr: SocketAddr, bytes: &[u8]) -> Vec<Message> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut got = Vec::new();
        // The listener may reset rather than close if our bytes are unread.
        let read = timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the listener did not hang up");
        let mut buf = BytesMut::from(&got[..]);
        let mut msgs = Vec::new();
        while let Ok(Some(msg)) = wire::decode(&mut buf) {
            msgs.push(msg);
        }
        msgs
    }

    #[tokio::test]
    async fn garbage_oversized_and_silent_clients_are_dropped() {
        capture_logs();
        let (listener, addr) = bound().await;
        let server = tokio::spawn(async move {
            listen(
                listener,
                TOKEN,
                &identity("a"),
                Some(Duration::from_secs(30)),
            )
            .await
        });

        let http = b"GET / HTTP/1.1\r\nHost: node-a\r\n\r\n";
        let msgs = turned_away(addr, http).await;
        assert!(matches!(
            msgs.first(),
            Some(Message::Challenge { version: 1, .. })
        ));

        // Just over MAX_FRAME: refused before anything is allocated for it.
        let mut oversized = BytesMut::new();
        oversized.put_u32(wire::MAX_FRAME as u32 + 1);
        oversized.put_u32(0);
        let msgs = turned_away(addr, &oversized).await;
        match msgs.last() {
            Some(Message::Refused { reason }) => assert!(reason.contains("exceeds"), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }

        let mut bad_sum = BytesMut::from(&wire::encode(&Message::Bye).unwrap()[..]);
        bad_sum[5] ^= 1;
        turned_away(addr, &bad_sum).await;

        let payload = br#"{"type":"not_a_message"}"#;
        let mut bad_json = BytesMut::new();
        bad_json.put_u32(payload.len() as u32);
        bad_json.put_u32(wire::crc32(payload));
        bad_json.put_slice(payload);
        turned_away(addr, &bad_json).await;

        let out_of_order = wire::encode(&Message::Bye).unwrap();
        turned_away(addr, &out_of_order).await;

        // Says nothing: dropped after STEP_TIMEOUT.
        let msgs = turned_away(addr, b"").await;
        match msgs.last() {
            Some(Message::Refused { reason }) => assert!(reason.contains("timed out"), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }

        let (hs, _ch) = connect(addr, TOKEN, &identity("b"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(hs.remote.node, "a");
        server.await.unwrap().unwrap();
        let refusals = warnings()
            .into_iter()
            .filter(|l| l.starts_with("refused peer "))
            .count();
        assert_eq!(refusals, 6);
    }

    #[tokio::test]
    async fn messages_round_trip_both_ways_and_after_split() {
        let (_, mut a, _, mut b) = pair().await;
        a.send(&Message::ClockPing { id: 1, t1: -7 }).await.unwrap();
        match b.recv().await.unwrap() {
            Some(Message::ClockPing { id: 1, t1: -7 }) => {}
            other => panic!("{other:?}"),
        }
        b.send(&Message::Start(identity("b2"))).await.unwrap();
        match a.recv().await.unwrap() {
            Some(Message::Start(id)) => assert_eq!(id.node, "b2"),
            other => panic!("{other:?}"),
        }

        // Both directions at once, from separate halves, with a large frame
        // that needs many reads.
        let (mut a_tx, mut a_rx) = a.split();
        let (mut b_tx, mut b_rx) = b.split();
        let big = "x".repeat(wire::MAX_FRAME - 100);
        async fn send_all(tx: &mut ChannelTx, big: &str) {
            for id in 0..200 {
                tx.send(&Message::ClockPing { id, t1: id.into() })
                    .await
                    .unwrap();
            }
            let reason = big.to_string();
            tx.send(&Message::Refused { reason }).await.unwrap();
            tx.send(&Message::Bye).await.unwrap();
        }
        async fn recv_all(rx: &mut ChannelRx) -> (u32, usize) {
            let (mut pings, mut big) = (0, 0);
            loop {
                match rx.recv().await.unwrap() {
                    Some(Message::ClockPing { id, .. }) => {
                        assert_eq!(id, pings);
                        pings += 1;
                    }
                    Some(Message::Refused { reason }) => big = reason.len(),
                    Some(Message::Bye) => return (pings, big),
                    other => panic!("{other:?}"),
                }
            }
        }
        let (_, _, from_b, from_a) = tokio::join!(
            send_all(&mut a_tx, &big),
            send_all(&mut b_tx, &big),
            recv_all(&mut a_rx),
            recv_all(&mut b_rx),
        );
        assert_eq!(from_a, (200, big.len()));
        assert_eq!(from_b, (200, big.len()));

        // Closing one side is an orderly EOF on the other.
        drop(a_tx);
        assert!(b_rx.recv().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn recv_sees_clean_close_and_loss_mid_frame() {
        let (listener, addr) = bound().await;
        let frame = wire::encode(&Message::Bye).unwrap();
        for cut in [false, true] {
            let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let mut client = client.unwrap();
            let mut ch = Channel::new(accepted.unwrap().0).unwrap();
            client.write_all(&frame).await.unwrap();
            if cut {
                client.write_all(&frame[..frame.len() - 3]).await.unwrap();
            }
            drop(client);
            let limit = Duration::from_secs(5);
            let first = timeout(limit, ch.recv()).await.unwrap();
            assert!(matches!(first, Ok(Some(Message::Bye))));
            let next = timeout(limit, ch.recv()).await.expect("no hang");
            match (cut, next) {
                (false, Ok(None)) => {}
                (true, Err(e @ PeerError::Truncated { .. })) => {
                    assert!(e.to_string().contains("middle of a frame"), "{e}")
                }
                (_, other) => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn connect_retries_until_the_listener_is_up() {
        let addr = free_addr().await;
        let late = tokio::spawn(async move {
            sleep(Duration::from_millis(1200)).await;
            let listener = TcpListener::bind(addr).await.unwrap();
            listen(listener, TOKEN, &identity("a"), None).await
        });
        let (hs, _ch) = connect(addr, TOKEN, &identity("b"), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(hs.remote.node, "a");
        late.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn waiting_is_bounded_on_both_sides() {
        let addr = free_addr().await;
        let started = Instant::now();
        let err = connect(addr, TOKEN, &identity("b"), Duration::from_millis(600))
            .await
            .unwrap_err();
        assert!(matches!(err, PeerError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));

        let (listener, _) = bound().await;
        let wait = Some(Duration::from_millis(300));
        let err = listen(listener, TOKEN, &identity("a"), wait)
            .await
            .unwrap_err();
        assert!(matches!(err, PeerError::NoPeer { .. }), "{err}");
        assert!(err.to_string().contains("--peer"), "{err}");
    }

    #[tokio::test]
    async fn an_empty_token_is_refused_up_front() {
        let (listener, addr) = bound().await;
        let err = connect(addr, "", &identity("b"), Duration::ZERO)
            .await
            .unwrap_err();
        assert!(matches!(err, PeerError::NoToken));
        let msg = err.to_string();
        assert!(
            msg.contains("--token") && msg.contains("FLANNEL_TRACE_TOKEN"),
            "{msg}"
        );
        let err = listen(listener, "", &identity("a"), None)
            .await
            .unwrap_err();
        assert!(matches!(err, PeerError::NoToken));
    }

    #[test]
    fn mac_is_hmac_sha256_of_the_versioned_nonce() {
        let nonce = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        // Python: hmac.new(b"S3cret", b"flannel-trace/1 " + nonce, sha256)
        let want = "9745f40048c25a5abd5c8a6756476f71a332cd6c562d8d102ecfb6d260b0ef44";
        assert_eq!(mac_hex("S3cret", nonce), want);
        assert!(mac_matches("S3cret", nonce, want));
        assert!(!mac_matches("S3cret!", nonce, want));
        assert!(!mac_matches("S3cret", &nonce.replace('0', "1"), want));
        assert!(!mac_matches("S3cret", nonce, &want[..62]));
        assert!(!mac_matches("S3cret", nonce, &want.replace('9', "g")));
        assert!(!mac_matches("S3cret", nonce, &format!("{}é", &want[..62])));
    }

    #[test]
    fn nonces_are_fresh_32_byte_hex() {
        let (a, b) = (random_nonce().unwrap(), random_nonce().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn estimate_bounds_the_offset_even_on_asymmetric_paths() {
        let theta = 1_234_567_890i64; // the peer is ahead by this much
        // (start on the local clock, one-way delay there, time at the peer, delay back)
        let round = |t1: i64, there: i64, held: i64, back: i64| Round {
            t1,
            t2: t1 + there + theta,
            t3: t1 + there + held + theta,
            t4: t1 + there + held + back,
        };
        let rounds = [
            round(0, 5 * MS, 10_000, MS),
            round(100 * MS, 300_000, 50_000, 100_000), // least delay: 400 µs
            round(200 * MS, 2 * MS, 0, 2 * MS),
        ];
        let est = estimate(&rounds).unwrap();
        assert_eq!(est.samples, 3);
        assert_eq!(est.error_ns, 200_000);
        assert_eq!(est.offset_ns, theta + 100_000);
        assert!((est.offset_ns - theta).abs() <= est.error_ns);

        for (there, back) in [(0, 7), (7, 0), (1, 1), (MS, 3), (3, MS)] {
            let est = estimate(&[round(0, there, 5, back)]).unwrap();
            assert!(
                (est.offset_ns - theta).abs() <= est.error_ns,
                "{there} {back}"
            );
        }

        // A clock stepped back mid-round: negative delay, unusable.
        let stepped = Round {
            t4: -MS,
            ..round(0, 10, 0, 10)
        };
        assert!(estimate(&[stepped]).is_none());

        // Nonsense from the peer is no estimate, and no overflow panic.
        let wild = Round {
            t1: i64::MIN,
            t2: i64::MAX,
            t3: i64::MAX,
            t4: i64::MAX,
        };
        assert!(estimate(&[wild]).is_none());
    }
}
