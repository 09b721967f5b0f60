//! The live channel between two nodes: `--listen` on one, `--peer` on the
//! other. It runs over the underlay (TCP between the nodes' own addresses),
//! so it keeps working when the overlay under investigation is broken.
//!
//! ```text
//! connecting node (initiator)                       listener (responder)
//!   "FTPEER" + version (u16) + Noise msg 1  ──────▶   (-> e, psk)
//!                                           ◀──────   0 + Noise msg 2 (<- e, ee)
//!                                                     or 1 + reason (refused, in clear)
//!   ── everything below is encrypted and authenticated (ChaCha20-Poly1305) ──
//!                                           ◀──────   Start(identity)
//!   Start(identity)                         ──────▶
//!                                           ◀──────   ClockPing × CLOCK_ROUNDS
//!   ClockPong × CLOCK_ROUNDS                ──────▶
//!   events, summary, bye                    ──────▶
//! ```
//!
//! Why Noise (`Noise_NNpsk0_25519_ChaChaPoly_SHA256`, the `snow` crate)
//! rather than an HMAC per frame: one well-reviewed construction gives at
//! once what the channel needs — *both* sides prove the token (the key of
//! every message after the first depends on it, so a listener that does
//! not know it cannot answer, and a peer that does not know it cannot
//! produce a first message that decrypts), fresh ephemeral keys per session
//! (a recorded session cannot be replayed or decrypted later from the
//! traffic alone), and per-frame integrity with ordering (AEAD with a
//! counter nonce: a flipped, dropped, replayed or reordered frame fails
//! to decrypt and ends the session). An HMAC scheme would have needed a
//! key schedule, nonces and replay rules of our own, and still no
//! confidentiality for the packet metadata that crosses the underlay.
//!
//! The token is hashed into the 32-byte pre-shared key; it never crosses
//! the wire. What an eavesdropper on the underlay sees: the TCP endpoints,
//! the 8-byte hello (magic and protocol version), two ephemeral public
//! keys, the sizes and timing of the encrypted records, and a refusal
//! reason in clear when the listener turns a client away. It does not see
//! identities, events or verdicts. With a recording of one handshake it can
//! try to guess the token offline, so the token must be random (e.g.
//! `openssl rand -hex 16`), not a word.
//!
//! Admission (the listener): every accepted connection is handshaken in
//! its own task, at most [`MAX_PENDING`] at a time; when one more arrives,
//! the oldest unauthenticated one is dropped, so a flood of idle or garbage
//! connections can neither exhaust descriptors nor delay the real peer
//! (whose handshake takes one round trip) by more than its own handshake.
//! Each unauthenticated connection gets [`HANDSHAKE_DEADLINE`]. Refusals
//! are logged, at most [`LOG_BURST`] lines at once and then
//! [`LOG_PER_SEC`] a second, with a count of those not shown.
//!
//! Every frame is bounded before anything is allocated, and TCP keepalive
//! bounds how long a vanished peer goes unnoticed.

pub mod feed;
pub mod thin;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use std::{fmt, io};

use bytes::{Buf as _, BytesMut};
use sha2::{Digest as _, Sha256};
use snow::StatelessTransportState;
use socket2::{SockRef, TcpKeepalive};
use thiserror::Error;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, sleep, timeout};

use crate::kernel::clock::Clock;
use crate::schema::identity::NodeIdentity;
use crate::schema::wire::{self, FrameError, Message};
use crate::verdict::ClockEstimate;

/// Version of the peer protocol; both nodes must speak the same.
/// 3: `thin` messages (a thinned live stream).
pub const PROTOCOL_VERSION: u16 = 3;
/// First bytes a connecting node sends, followed by the version.
const MAGIC: &[u8; 6] = b"FTPEER";
const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
/// Largest Noise message (the spec's limit), and the plaintext it carries.
const RECORD_MAX: usize = 65_535;
const TAG: usize = 16;
const CHUNK: usize = RECORD_MAX - TAG;
/// Handshake messages are tens of bytes; anything larger is not one.
const HANDSHAKE_MAX: usize = 1024;

/// Time an accepted connection has to complete the Noise handshake.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(3);
/// Time an authenticated peer has for identities and the clock exchange.
const ADMIT_DEADLINE: Duration = Duration::from_secs(10);
/// Handshakes in progress at once on the listener (the total number of
/// connections it holds open while waiting).
pub const MAX_PENDING: usize = 64;
/// Refusal log lines: a burst, then a steady rate.
const LOG_BURST: f64 = 10.0;
const LOG_PER_SEC: f64 = 2.0;
/// Limit on each step of the connecting side (one message awaited).
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
    #[error(
        "the listener at {peer} could not prove that it knows the token (a different --token there, or not the flannel-trace listener you meant)"
    )]
    ListenerNotAuthenticated { peer: SocketAddr },
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
    #[error(
        "a record from peer {peer} failed its integrity check (altered, replayed or cut on the way)"
    )]
    Integrity { peer: SocketAddr },
    #[error("peer {peer} went away in the middle of a frame ({pending} bytes received)")]
    Truncated { peer: SocketAddr, pending: usize },
    #[error("the Noise handshake could not be set up: {0}")]
    Noise(snow::Error),
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
            PeerError::Integrity { .. } => "a record failed its integrity check".into(),
            other => other.to_string(),
        }
    }
}

/// The 32-byte pre-shared key of the Noise handshake. Domain-separated, so
/// the same token used elsewhere yields an unrelated key.
fn psk(token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"flannel-trace peer token\0");
    h.update(token.as_bytes());
    h.finalize().into()
}

fn noise(psk: &[u8; 32]) -> Result<snow::Builder<'_>, PeerError> {
    let params = NOISE_PARAMS.parse().map_err(PeerError::Noise)?;
    snow::Builder::new(params)
        .prologue(&PROLOGUE)
        .and_then(|b| b.psk(0, psk))
        .map_err(PeerError::Noise)
}

/// Binds the handshake to the protocol version: a node of another version
/// fails to authenticate rather than misreading frames.
const PROLOGUE: [u8; 8] = hello();

const fn hello() -> [u8; 8] {
    let v = PROTOCOL_VERSION.to_be_bytes();
    [
        MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], MAGIC[4], MAGIC[5], v[0], v[1],
    ]
}

/// A framed, bounded, encrypted message stream over TCP.
#[derive(Debug)]
pub struct Channel {
    tx: ChannelTx,
    rx: ChannelRx,
}

/// Sending half of a [`Channel`].
pub struct ChannelTx {
    half: OwnedWriteHalf,
    peer: SocketAddr,
    cipher: Arc<StatelessTransportState>,
    nonce: u64,
    out: Vec<u8>,
}

/// Receiving half of a [`Channel`].
pub struct ChannelRx {
    half: OwnedReadHalf,
    peer: SocketAddr,
    cipher: Arc<StatelessTransportState>,
    nonce: u64,
    /// Bytes off the socket, not yet a whole record.
    raw: BytesMut,
    /// Decrypted bytes, not yet a whole frame.
    plain: BytesMut,
    scratch: Vec<u8>,
    /// Frames to messages, event batches included.
    frames: wire::Decoder,
}

impl fmt::Debug for ChannelTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelTx")
            .field("peer", &self.peer)
            .finish()
    }
}

impl fmt::Debug for ChannelRx {
    // Not derived: the buffers may hold a megabyte of someone's frame.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelRx")
            .field("peer", &self.peer)
            .field("buffered", &(self.raw.len() + self.plain.len()))
            .finish()
    }
}

fn tune(stream: &TcpStream) -> io::Result<()> {
    // Handshake and clock pings are small request/response messages:
    // Nagle's algorithm would hold them back and skew the clock rounds.
    stream.set_nodelay(true)?;
    let sock = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_tcp_user_timeout(Some(DEAD_PEER_AFTER))
}

impl Channel {
    fn new(stream: TcpStream, cipher: StatelessTransportState) -> io::Result<Channel> {
        let peer = stream.peer_addr()?;
        let cipher = Arc::new(cipher);
        let (read, write) = stream.into_split();
        Ok(Channel {
            tx: ChannelTx {
                half: write,
                peer,
                cipher: cipher.clone(),
                nonce: 0,
                out: Vec::new(),
            },
            rx: ChannelRx {
                half: read,
                peer,
                cipher,
                nonce: 0,
                raw: BytesMut::with_capacity(READ_BUFFER),
                plain: BytesMut::with_capacity(READ_BUFFER),
                scratch: vec![0; RECORD_MAX],
                frames: wire::Decoder::default(),
            },
        })
    }

    pub async fn send(&mut self, msg: &Message) -> Result<(), PeerError> {
        self.tx.send(msg).await
    }

    /// Next message; `Ok(None)` on orderly EOF. A frame over
    /// [`wire::MAX_FRAME`], a record that fails to decrypt, a bad checksum
    /// or an invalid message is an error.
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
    /// Not cancel-safe: a send abandoned half-way leaves a partial record on
    /// the stream, so do not race it in `select!` and then keep using it.
    pub async fn send(&mut self, msg: &Message) -> Result<(), PeerError> {
        let peer = self.peer;
        let frame = wire::encode(msg).map_err(|source| PeerError::Encode { peer, source })?;
        self.send_frames(&frame).await
    }

    /// Send already-framed bytes (one or more `wire` frames back to back),
    /// in as few records and writes as they fit: the peer's writer batches
    /// events this way.
    pub async fn send_frames(&mut self, frames: &[u8]) -> Result<(), PeerError> {
        let peer = self.peer;
        self.out.clear();
        for chunk in frames.chunks(CHUNK) {
            let at = self.out.len();
            self.out.resize(at + 2 + chunk.len() + TAG, 0);
            let n = self
                .cipher
                .write_message(self.nonce, chunk, &mut self.out[at + 2..])
                .map_err(|e| PeerError::Io {
                    peer,
                    source: io::Error::other(e),
                })?;
            self.nonce += 1;
            self.out[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
            self.out.truncate(at + 2 + n);
        }
        self.half
            .write_all(&self.out)
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
            // it, and records are only decrypted while less than one whole
            // frame is buffered, so the buffers stay within a small multiple
            // of MAX_FRAME whatever the peer sends.
            if let Some(msg) = self
                .frames
                .decode(&mut self.plain)
                .map_err(|source| PeerError::Frame { peer, source })?
            {
                return Ok(Some(msg));
            }
            if self.open_record()? {
                continue;
            }
            let n = self
                .half
                .read_buf(&mut self.raw)
                .await
                .map_err(|source| PeerError::Io { peer, source })?;
            if n == 0 {
                return match self.raw.len() + self.plain.len() {
                    0 => Ok(None),
                    pending => Err(PeerError::Truncated { peer, pending }),
                };
            }
        }
    }

    /// Decrypt one whole record off `raw` into `plain`, if there is one.
    fn open_record(&mut self) -> Result<bool, PeerError> {
        open_record(
            &self.cipher,
            &mut self.nonce,
            &mut self.raw,
            &mut self.plain,
            &mut self.scratch,
            self.peer,
        )
    }
}

/// `[u16 length][ciphertext]` off the front of `raw`, decrypted onto
/// `plain`; `Ok(false)` when the record is not whole yet.
fn open_record(
    cipher: &StatelessTransportState,
    nonce: &mut u64,
    raw: &mut BytesMut,
    plain: &mut BytesMut,
    scratch: &mut [u8],
    peer: SocketAddr,
) -> Result<bool, PeerError> {
    if raw.len() < 2 {
        return Ok(false);
    }
    let len = usize::from(u16::from_be_bytes([raw[0], raw[1]]));
    if raw.len() < 2 + len {
        raw.reserve(2 + len - raw.len());
        return Ok(false);
    }
    let n = cipher
        .read_message(*nonce, &raw[2..2 + len], scratch)
        .map_err(|_| PeerError::Integrity { peer })?;
    *nonce += 1;
    raw.advance(2 + len);
    plain.extend_from_slice(&scratch[..n]);
    Ok(true)
}

/// The outcome of a handshake.
#[derive(Debug)]
pub struct Handshake {
    pub remote: NodeIdentity,
    /// Listener side only: the clock offset to the peer.
    pub clock: Option<ClockEstimate>,
}

/// Refusal lines, rate-limited (token bucket), with a count of those not
/// shown: a flood must not flood the terminal too.
struct RefusalLog {
    tokens: f64,
    last: Instant,
    suppressed: u64,
    total: u64,
}

impl RefusalLog {
    fn new() -> RefusalLog {
        RefusalLog {
            tokens: LOG_BURST,
            last: Instant::now(),
            suppressed: 0,
            total: 0,
        }
    }

    fn refused(&mut self, addr: SocketAddr, reason: &str) {
        self.total += 1;
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * LOG_PER_SEC)
            .min(LOG_BURST);
        self.last = now;
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return;
        }
        self.tokens -= 1.0;
        match std::mem::take(&mut self.suppressed) {
            0 => log::warn!("refused peer {addr}: {reason}"),
            n => log::warn!("refused peer {addr}: {reason} ({n} more refusals not shown)"),
        }
    }
}

/// One connection being admitted by the listener.
struct Pending {
    abort: AbortHandle,
    addr: SocketAddr,
    /// How far its handshake got ([`ACCEPTED`], [`HELLO`], [`AUTHENTICATED`]):
    /// the least advanced, then the oldest, makes room for a new one.
    progress: Arc<AtomicU8>,
}

const ACCEPTED: u8 = 0;
/// Sent a valid hello: one Diffie-Hellman away from proving the token.
const HELLO: u8 = 1;
/// Proved the token: never dropped to make room.
const AUTHENTICATED: u8 = 2;

type Admitted = (SocketAddr, Result<(Handshake, Channel), PeerError>);

/// Listening side. Admits connections concurrently until one authenticates
/// and completes the identity and clock exchange (see the module doc for
/// the limits); a client that fails is sent a refusal if possible, logged
/// and dropped, and the listener keeps waiting. Gives up after `wait`
/// (`None`: never).
pub async fn listen(
    listener: TcpListener,
    token: &str,
    local: &NodeIdentity,
    wait: Option<Duration>,
) -> Result<(Handshake, Channel), PeerError> {
    require_token(token)?;
    let key = psk(token);
    // Fail now, not per connection, if the handshake cannot be built.
    noise(&key)?.build_responder().map_err(PeerError::Noise)?;
    let local_addr = listener.local_addr().map_err(PeerError::Socket)?;
    let mut log = RefusalLog::new();
    let mut tasks: JoinSet<Admitted> = JoinSet::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let accepting = async {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, addr) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Linux reports some errors of the new connection
                            // (and running out of descriptors) here: neither
                            // ends the listener, but pause briefly so that a
                            // persistent one does not spin.
                            log.refused(local_addr, &format!("accept failed: {e}"));
                            sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    if pending.len() >= MAX_PENDING {
                        // The least advanced, oldest handshake makes room: an
                        // idle one has had the longest to speak.
                        let victim = [ACCEPTED, HELLO].into_iter().find_map(|stage| {
                            pending
                                .iter()
                                .position(|p| p.progress.load(Ordering::Relaxed) == stage)
                        });
                        if let Some(i) = victim {
                            let old = pending.remove(i).expect("index in range");
                            old.abort.abort();
                            log.refused(
                                old.addr,
                                &format!("dropped to make room: {MAX_PENDING} handshakes pending"),
                            );
                        } else {
                            log.refused(addr, "too many authenticated connections pending");
                            continue;
                        }
                    }
                    let progress = Arc::new(AtomicU8::new(ACCEPTED));
                    let abort = tasks.spawn(admit(
                        stream,
                        addr,
                        key,
                        local.clone(),
                        progress.clone(),
                    ));
                    pending.push_back(Pending { abort, addr, progress });
                    // Let the new connection read what it was sent before
                    // accepting more: under a flood, `accept` is always
                    // ready, and the real peer's hello is already waiting.
                    tokio::task::yield_now().await;
                }
                Some(done) = tasks.join_next_with_id() => {
                    let id = match &done {
                        Ok((id, _)) => *id,
                        Err(e) => e.id(),
                    };
                    pending.retain(|p| p.abort.id() != id);
                    match done {
                        Ok((_, (_, Ok(joined)))) => {
                            if log.total > 0 {
                                log::warn!(
                                    "turned away {} connection(s) before the peer authenticated",
                                    log.total
                                );
                            }
                            return Ok(joined);
                        }
                        Ok((_, (addr, Err(e)))) => log.refused(addr, &e.reason()),
                        // Aborted to make room: already logged.
                        Err(_) => {}
                    }
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

/// The listener's admission of one connection: Noise handshake within
/// [`HANDSHAKE_DEADLINE`], then identities and the clock within
/// [`ADMIT_DEADLINE`].
async fn admit(
    mut stream: TcpStream,
    addr: SocketAddr,
    key: [u8; 32],
    local: NodeIdentity,
    progress: Arc<AtomicU8>,
) -> Admitted {
    let result = async {
        let io_err = |source| PeerError::Io { peer: addr, source };
        tune(&stream).map_err(io_err)?;
        let transport = match timeout(
            HANDSHAKE_DEADLINE,
            respond(&mut stream, &key, addr, &progress),
        )
        .await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                refuse_in_clear(&stream, &e.reason());
                return Err(e);
            }
            Err(_) => {
                let reason = format!("no handshake within {HANDSHAKE_DEADLINE:?}");
                refuse_in_clear(&stream, &reason);
                return Err(PeerError::Handshake { peer: addr, reason });
            }
        };
        progress.store(AUTHENTICATED, Ordering::Relaxed);
        let mut ch = Channel::new(stream, transport).map_err(io_err)?;
        let exchange = async {
            send_step(&mut ch, &Message::Start(local.clone())).await?;
            let remote = match expect(&mut ch, "the peer's identity", STEP_TIMEOUT).await? {
                Message::Start(identity) => identity,
                other => return Err(unexpected(&ch, "the peer's identity", &other)),
            };
            let clock = measure_clock(&mut ch).await?;
            Ok(Handshake {
                remote,
                clock: Some(clock),
            })
        };
        match timeout(ADMIT_DEADLINE, exchange).await {
            Ok(Ok(h)) => Ok((h, ch)),
            Ok(Err(e)) => {
                let refused = Message::Refused { reason: e.reason() };
                let _ = timeout(Duration::from_secs(1), ch.send(&refused)).await;
                Err(e)
            }
            Err(_) => Err(handshake_error(
                &ch,
                format!("identities and clock not exchanged within {ADMIT_DEADLINE:?}"),
            )),
        }
    }
    .await;
    (addr, result)
}

/// Best effort, never waits: the client may be gone or not reading.
fn refuse_in_clear(stream: &TcpStream, reason: &str) {
    let reason = &reason.as_bytes()[..reason.len().min(HANDSHAKE_MAX)];
    let mut out = Vec::with_capacity(3 + reason.len());
    out.push(1);
    out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
    out.extend_from_slice(reason);
    let _ = stream.try_write(&out);
}

/// The responder's half of the Noise handshake.
async fn respond(
    stream: &mut TcpStream,
    key: &[u8; 32],
    addr: SocketAddr,
    progress: &AtomicU8,
) -> Result<StatelessTransportState, PeerError> {
    let fail = |reason: String| PeerError::Handshake { peer: addr, reason };
    let io_err = |source| PeerError::Io { peer: addr, source };
    let mut hello_bytes = [0u8; 8];
    stream
        .read_exact(&mut hello_bytes)
        .await
        .map_err(|e| fail(format!("no hello ({e})")))?;
    check_hello(&hello_bytes, addr)?;
    progress.store(HELLO, Ordering::Relaxed);
    let msg1 = read_handshake_message(stream)
        .await
        .map_err(|e| fail(format!("bad first handshake message ({e})")))?;
    let (out, transport) = answer(key, &msg1, addr)?;
    stream.write_all(&out).await.map_err(io_err)?;
    Ok(transport)
}

/// The 8-byte hello: our magic and our protocol version.
fn check_hello(hello: &[u8], addr: SocketAddr) -> Result<(), PeerError> {
    let fail = |reason: String| PeerError::Handshake { peer: addr, reason };
    if hello.len() != 8 || hello[..6] != MAGIC[..] {
        return Err(fail("not a flannel-trace peer (bad hello)".into()));
    }
    let version = u16::from_be_bytes([hello[6], hello[7]]);
    if version != PROTOCOL_VERSION {
        return Err(fail(format!(
            "it speaks peer protocol version {version}, this node {PROTOCOL_VERSION}: run the same flannel-trace version on both nodes"
        )));
    }
    Ok(())
}

/// The responder's answer to the first handshake message: the reply to
/// send and the transport keys, or "bad token".
fn answer(
    key: &[u8; 32],
    msg1: &[u8],
    addr: SocketAddr,
) -> Result<(Vec<u8>, StatelessTransportState), PeerError> {
    let mut hs = noise(key)?.build_responder().map_err(PeerError::Noise)?;
    let mut buf = [0u8; HANDSHAKE_MAX];
    hs.read_message(msg1, &mut buf)
        .map_err(|_| PeerError::Handshake {
            peer: addr,
            reason: "bad token (its handshake does not decrypt under this node's token)".into(),
        })?;
    let n = hs.write_message(&[], &mut buf).map_err(PeerError::Noise)?;
    let mut out = Vec::with_capacity(3 + n);
    out.push(0);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&buf[..n]);
    let transport = hs
        .into_stateless_transport_mode()
        .map_err(PeerError::Noise)?;
    Ok((out, transport))
}

/// The initiator's half of the Noise handshake.
async fn initiate(
    stream: &mut TcpStream,
    key: &[u8; 32],
    addr: SocketAddr,
) -> Result<StatelessTransportState, PeerError> {
    let io_err = |source| PeerError::Io { peer: addr, source };
    let mut hs = noise(key)?.build_initiator().map_err(PeerError::Noise)?;
    let mut buf = [0u8; HANDSHAKE_MAX];
    let n = hs.write_message(&[], &mut buf).map_err(PeerError::Noise)?;
    let mut out = Vec::with_capacity(10 + n);
    out.extend_from_slice(&hello());
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&buf[..n]);
    stream.write_all(&out).await.map_err(io_err)?;
    let mut status = [0u8; 1];
    stream
        .read_exact(&mut status)
        .await
        .map_err(|e| PeerError::Handshake {
            peer: addr,
            reason: format!("connection closed during the handshake ({e})"),
        })?;
    let body = read_handshake_message(stream)
        .await
        .map_err(|e| PeerError::Handshake {
            peer: addr,
            reason: format!("bad handshake reply ({e})"),
        })?;
    finish_initiator(hs, status[0], &body, addr)
}

/// The initiator's reading of the listener's reply (status, body).
fn finish_initiator(
    mut hs: snow::HandshakeState,
    status: u8,
    body: &[u8],
    addr: SocketAddr,
) -> Result<StatelessTransportState, PeerError> {
    match status {
        0 => {}
        1 => {
            return Err(PeerError::Refused {
                peer: addr,
                reason: String::from_utf8_lossy(body).into_owned(),
            });
        }
        other => {
            return Err(PeerError::Handshake {
                peer: addr,
                reason: format!("unknown handshake status {other}: not a flannel-trace listener?"),
            });
        }
    }
    let mut buf = [0u8; HANDSHAKE_MAX];
    hs.read_message(body, &mut buf)
        .map_err(|_| PeerError::ListenerNotAuthenticated { peer: addr })?;
    hs.into_stateless_transport_mode().map_err(PeerError::Noise)
}

/// The hello bytes, for the fuzz corpus.
#[cfg(test)]
pub fn hello_for_fuzz() -> [u8; 8] {
    hello()
}

/// Fuzz entry: the handshake and record layer on untrusted bytes, never
/// a panic. The first byte picks what the rest is: a connecting node's
/// hello and first message (listener side), a listener's reply (peer
/// side), or the record stream after a real handshake.
pub fn fuzz(data: &[u8]) {
    let key = psk("fuzz");
    let addr = SocketAddr::from(([127, 0, 0, 1], 9));
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let initiator = || noise(&key).and_then(|b| b.build_initiator().map_err(PeerError::Noise));
    match mode % 3 {
        0 => {
            let (hello, msg1) = rest.split_at(rest.len().min(8));
            if check_hello(hello, addr).is_ok() {
                let _ = answer(&key, msg1, addr);
            }
        }
        1 => {
            let Ok(mut hs) = initiator() else { return };
            let mut buf = [0u8; HANDSHAKE_MAX];
            if hs.write_message(&[], &mut buf).is_err() {
                return;
            }
            if let Some((status, body)) = rest.split_first() {
                let _ = finish_initiator(hs, *status, body, addr);
            }
        }
        _ => {
            // A genuine transport state, so that the record layer runs as
            // it does after a real handshake (a fuzzed record never passes
            // the AEAD tag: this exercises the length handling).
            let Ok(mut init) = initiator() else { return };
            let mut m1 = [0u8; HANDSHAKE_MAX];
            let Ok(n) = init.write_message(&[], &mut m1) else {
                return;
            };
            let Ok((reply, _listener)) = answer(&key, &m1[..n], addr) else {
                return;
            };
            let Ok(cipher) = finish_initiator(init, reply[0], &reply[3..], addr) else {
                return;
            };
            let (mut raw, mut plain) = (BytesMut::from(rest), BytesMut::new());
            let (mut nonce, mut scratch) = (0u64, vec![0u8; RECORD_MAX]);
            let mut frames = wire::Decoder::default();
            while let Ok(true) = open_record(
                &cipher,
                &mut nonce,
                &mut raw,
                &mut plain,
                &mut scratch,
                addr,
            ) {
                while let Ok(Some(_)) = frames.decode(&mut plain) {}
            }
        }
    }
}

/// A TCP connection to `addr`, retrying until `deadline` (always one try).
async fn connect_tcp(
    addr: SocketAddr,
    wait: Duration,
    deadline: Instant,
) -> Result<TcpStream, PeerError> {
    loop {
        // An unanswered SYN can take minutes to fail: bound each attempt
        // (but always make one).
        let remaining = deadline.saturating_duration_since(Instant::now());
        let error = match timeout(remaining.max(RETRY_EVERY), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
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
    }
}

/// `[u16 length][bytes]`, at most [`HANDSHAKE_MAX`] bytes.
async fn read_handshake_message(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > HANDSHAKE_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{len} bytes, more than a handshake message"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// Connecting side: connect (retrying every 500 ms until `wait` elapses,
/// since the listener may start a little later), run the Noise handshake,
/// exchange identities, answer the clock pings.
pub async fn connect(
    addr: SocketAddr,
    token: &str,
    local: &NodeIdentity,
    wait: Duration,
) -> Result<(Handshake, Channel), PeerError> {
    require_token(token)?;
    let key = psk(token);
    let deadline = Instant::now() + wait;
    let (stream, transport) = loop {
        let mut stream = connect_tcp(addr, wait, deadline).await?;
        tune(&stream).map_err(|source| PeerError::Io { peer: addr, source })?;
        let error = match timeout(STEP_TIMEOUT, initiate(&mut stream, &key, addr)).await {
            Ok(Ok(t)) => break (stream, t),
            // A verdict on this node or on the listener: retrying cannot help.
            Ok(Err(
                e @ (PeerError::Refused { .. }
                | PeerError::ListenerNotAuthenticated { .. }
                | PeerError::Noise(_)),
            )) => return Err(e),
            Ok(Err(e)) => e,
            Err(_) => PeerError::Handshake {
                peer: addr,
                reason: format!("no handshake reply within {STEP_TIMEOUT:?}"),
            },
        };
        // A listener under a flood may drop a connection before reading
        // it: try again while the budget lasts.
        if Instant::now() + RETRY_EVERY > deadline {
            return Err(error);
        }
        log::debug!("handshake with {addr}: {error}; retrying");
        sleep(RETRY_EVERY / 5).await;
    };
    let mut ch =
        Channel::new(stream, transport).map_err(|source| PeerError::Io { peer: addr, source })?;
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
    use std::sync::atomic::AtomicBool;
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
                .any(|l| l.starts_with("refused peer 127.0.0.1:") && l.contains(": bad token")),
            "{logs:?}"
        );
    }

    /// A listener that does not know the token cannot pass itself off as
    /// the real one: neither by answering anything, nor by replaying what
    /// the real listener answered to an earlier handshake.
    #[tokio::test]
    async fn a_listener_without_the_token_is_not_trusted() {
        // Capture a genuine reply through a recording proxy.
        let (listener, real) = bound().await;
        let server = tokio::spawn(async move {
            listen(
                listener,
                TOKEN,
                &identity("a"),
                Some(Duration::from_secs(20)),
            )
            .await
        });
        let (proxy, proxy_addr) = bound().await;
        let recorder = tokio::spawn(async move {
            let (mut client, _) = proxy.accept().await.unwrap();
            let mut upstream = TcpStream::connect(real).await.unwrap();
            let mut hello = [0u8; 8 + 2 + 48];
            client.read_exact(&mut hello).await.unwrap();
            upstream.write_all(&hello).await.unwrap();
            let mut reply = [0u8; 3 + 48];
            upstream.read_exact(&mut reply).await.unwrap();
            client.write_all(&reply).await.unwrap();
            reply
        });
        // The proxy stops forwarding after the handshake, so this attempt
        // times out; what matters is the reply it recorded.
        let _ = connect(proxy_addr, TOKEN, &identity("b"), Duration::from_secs(1)).await;
        let genuine = recorder.await.unwrap();
        assert_eq!(genuine[0], 0, "the real listener accepted");
        server.abort();

        for reply in [genuine.to_vec(), {
            let mut forged = vec![0u8, 0, 48];
            forged.extend_from_slice(&[0x5a; 48]);
            forged
        }] {
            let (rogue, rogue_addr) = bound().await;
            let task = tokio::spawn(async move {
                let (mut s, _) = rogue.accept().await.unwrap();
                let mut hello = [0u8; 8 + 2 + 48];
                s.read_exact(&mut hello).await.unwrap();
                s.write_all(&reply).await.unwrap();
                // Hold the connection so the client decides on the reply.
                sleep(Duration::from_secs(2)).await;
            });
            let err = connect(rogue_addr, TOKEN, &identity("b"), Duration::from_secs(1))
                .await
                .unwrap_err();
            assert!(
                matches!(err, PeerError::ListenerNotAuthenticated { .. }),
                "{err}"
            );
            assert!(err.to_string().contains("prove"), "{err}");
            task.abort();
        }
    }

    /// A byte changed on the way (after the handshake) ends the session
    /// with an integrity error, never a misread message.
    #[tokio::test]
    async fn a_tampered_record_fails_its_integrity_check() {
        let (listener, real) = bound().await;
        let _server = tokio::spawn(async move {
            listen(
                listener,
                TOKEN,
                &identity("a"),
                Some(Duration::from_secs(20)),
            )
            .await
        });
        let (proxy, proxy_addr) = bound().await;
        tokio::spawn(async move {
            let (client, _) = proxy.accept().await.unwrap();
            let upstream = TcpStream::connect(real).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut ur, mut uw) = upstream.into_split();
            tokio::spawn(async move { tokio::io::copy(&mut cr, &mut uw).await });
            // Listener → client: flip one byte inside the first encrypted
            // record (the listener's identity), past the 51-byte reply.
            let mut seen = 0usize;
            let mut buf = vec![0u8; 4096];
            loop {
                let n = ur.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    if seen + i == 80 {
                        *b ^= 0x01;
                    }
                }
                seen += n;
                if cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let err = connect(proxy_addr, TOKEN, &identity("b"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, PeerError::Integrity { .. }), "{err}");
    }

    /// Connects, sends `bytes`, and reads what the listener says until it
    /// hangs up: the status byte and the refusal reason.
    async fn turned_away(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut got = Vec::new();
        // The listener may reset rather than close if our bytes are unread.
        let read = timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the listener did not hang up");
        assert!(got.len() >= 3, "no refusal: {got:?}");
        assert_eq!(got[0], 1, "a refusal");
        String::from_utf8_lossy(&got[3..]).into_owned()
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
        assert!(turned_away(addr, http).await.contains("bad hello"));

        let mut old = hello();
        old[7] = 1;
        let reason = turned_away(addr, &old).await;
        assert!(reason.contains("version 1"), "{reason}");

        // A handshake message longer than any real one: refused before
        // anything is allocated for it.
        let mut oversized = hello().to_vec();
        oversized.put_u16(u16::MAX);
        let reason = turned_away(addr, &oversized).await;
        assert!(reason.contains("more than a handshake"), "{reason}");

        // Right length, random bytes: does not decrypt under the token.
        let mut junk = hello().to_vec();
        junk.put_u16(48);
        junk.extend_from_slice(&[7u8; 48]);
        assert!(turned_away(addr, &junk).await.contains("bad token"));

        // Says nothing: dropped after HANDSHAKE_DEADLINE.
        let reason = turned_away(addr, b"").await;
        assert!(reason.contains("no handshake within"), "{reason}");

        let (hs, _ch) = connect(addr, TOKEN, &identity("b"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(hs.remote.node, "a");
        server.await.unwrap().unwrap();
        let refusals = warnings()
            .into_iter()
            .filter(|l| l.starts_with("refused peer "))
            .count();
        assert_eq!(refusals, 5);
    }

    /// Hundreds of idle and garbage connections, kept up while the real
    /// peer connects: it gets in within a second, and the refusal log
    /// stays short.
    #[tokio::test]
    async fn the_real_peer_gets_in_during_a_flood() {
        const IDLE: usize = 150;
        const GARBAGE: usize = 150;
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
        let mut idle = Vec::new();
        for _ in 0..IDLE {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut floods = Vec::new();
        for i in 0..GARBAGE {
            let stop = stop.clone();
            floods.push(tokio::spawn(async move {
                // Bounded: each flooder reconnects at most 200 times.
                for _ in 0..200 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(mut s) = TcpStream::connect(addr).await else {
                        sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    let junk: Vec<u8> = if i % 2 == 0 {
                        let mut h = hello().to_vec();
                        h.put_u16(48);
                        h.extend_from_slice(&[i as u8; 48]);
                        h
                    } else {
                        b"\x16\x03\x01\x02\x00garbage".to_vec()
                    };
                    let _ = s.write_all(&junk).await;
                    let mut sink = [0u8; 256];
                    let _ = timeout(Duration::from_millis(500), s.read(&mut sink)).await;
                }
            }));
        }
        sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let (hs, _ch) = connect(addr, TOKEN, &identity("b"), Duration::from_secs(10))
            .await
            .unwrap();
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        eprintln!(
            "the real peer got in after {took:?} among {IDLE} idle and {GARBAGE} garbage connections"
        );
        assert_eq!(hs.remote.node, "a");
        assert!(took < Duration::from_secs(1), "took {took:?}");
        let (server_hs, _) = server.await.unwrap().unwrap();
        assert_eq!(server_hs.remote.node, "b");
        for f in floods {
            f.await.unwrap();
        }
        drop(idle);
    }

    #[test]
    fn refusal_lines_are_rate_limited() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut log = RefusalLog::new();
        let shown_before = |l: &RefusalLog| l.total - l.suppressed;
        for _ in 0..1000 {
            log.refused(addr, "bad token");
        }
        assert_eq!(log.total, 1000);
        // The burst, plus what the rate allowed during the loop.
        assert!(
            shown_before(&log) <= LOG_BURST as u64 + 2,
            "{}",
            log.suppressed
        );
        assert!(log.suppressed >= 900);
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
        // that spans many records.
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
    async fn recv_sees_clean_close_and_loss_mid_record() {
        for cut in [false, true] {
            let (_, mut a, _, b) = pair().await;
            let (mut b_tx, b_rx) = b.split();
            b_tx.send(&Message::Bye).await.unwrap();
            if cut {
                // A record header promising more than follows.
                b_tx.half.write_all(&[0, 40, 1, 2, 3]).await.unwrap();
            }
            drop((b_tx, b_rx));
            let limit = Duration::from_secs(5);
            let first = timeout(limit, a.recv()).await.unwrap();
            assert!(matches!(first, Ok(Some(Message::Bye))));
            let next = timeout(limit, a.recv()).await.expect("no hang");
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
    fn the_key_is_a_domain_separated_hash_of_the_token() {
        // Python: hashlib.sha256(b"flannel-trace peer token\0" + b"S3cret")
        let want = "2c83a92f96632163faa42cdb39428d7c90adcb14640fc63ee54ba57902277e3e";
        let got: String = psk("S3cret").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want);
        assert_ne!(psk("S3cret"), psk("S3cret!"));
        assert_eq!(psk("S3cret"), psk("S3cret"));
    }

    /// Not a check: prints the sustained rate of the live channel (events
    /// batched and encrypted as the peer's writer does, over loopback TCP,
    /// decoded on the other side) for `cargo xtask bench`.
    #[tokio::test]
    #[ignore = "benchmark: run with --ignored --nocapture"]
    async fn bench_live_channel_events_per_second() {
        let (_, a, _, b) = pair().await;
        let (_, mut rx) = a.split();
        let (mut tx, _) = b.split();
        let id = identity("node-b");
        let ctx = crate::schema::codec::Context::of(&id);
        let ev: crate::schema::event::Event = serde_json::from_value(serde_json::json!({
            "time": crate::kernel::clock::rfc3339(5 + id.clock_offset_ns), "ts_mono_ns": 5,
            "hop": "underlay-egress", "ifindex": id.underlay_ifindex, "iface": id.underlay_dev,
            "len": 1514,
            "outer": {"src": "192.0.2.1", "dst": "192.0.2.2", "proto": "udp", "sport": 40000, "dport": 8472},
            "vni": 1,
            "inner": {"src": "10.244.1.5", "dst": "10.244.2.9", "proto": "tcp", "sport": 43210, "dport": 8080,
                      "ip_id": 4242, "ip_len": 1450,
                      "tcp": {"seq": 1000, "ack": 77, "flags": "ACK|PSH", "payload_len": 1398}},
            "fingerprint": "0123456789abcdef",
        }))
        .unwrap();
        let batch = vec![ev; crate::schema::codec::MAX_BATCH];
        let batches = 4_000usize;
        let started = Instant::now();
        let sender = async {
            let mut out = Vec::new();
            for _ in 0..batches {
                out.clear();
                wire::encode_events(&ctx, &batch, &mut out);
                tx.send_frames(&out).await.unwrap();
            }
            tx.send(&Message::Bye).await.unwrap();
            out.len()
        };
        let receiver = async {
            let mut n = 0usize;
            // The stream's context (node-b's identity) came with the handshake.
            loop {
                match rx.recv().await.unwrap() {
                    Some(Message::Event(_)) => n += 1,
                    Some(Message::Bye) | None => return n,
                    Some(_) => {}
                }
            }
        };
        let (frame_len, got) = tokio::join!(sender, receiver);
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(got, batches * batch.len());
        println!(
            "live channel: {:.2} M events/s sustained over loopback ({} events, {:.1} bytes/event on the wire before encryption)",
            got as f64 / secs / 1e6,
            got,
            frame_len as f64 / batch.len() as f64
        );
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
