//! The encrypted channel after the handshake: frames (see `wire`) cut into
//! Noise transport records `[u16 length][ciphertext]`, each sealed with
//! ChaCha20-Poly1305 under a counter nonce, over a tuned TCP stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use std::{fmt, io};

use bytes::{Buf as _, BytesMut};
use snow::StatelessTransportState;
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::PeerError;
use super::protocol::Message;
use crate::schema::wire;

/// Largest Noise message (the spec's limit), and the plaintext it carries.
pub(super) const RECORD_MAX: usize = 65_535;
const TAG: usize = 16;
const CHUNK: usize = RECORD_MAX - TAG;

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

/// A framed, bounded, encrypted message stream over TCP.
#[derive(Debug)]
pub struct Channel {
    /// Visible to the tests, which write raw bytes on its socket.
    pub(super) tx: ChannelTx,
    rx: ChannelRx,
}

/// Sending half of a [`Channel`].
pub struct ChannelTx {
    pub(super) half: OwnedWriteHalf,
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
    frames: wire::Decoder<Message>,
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

pub(super) fn tune(stream: &TcpStream) -> io::Result<()> {
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
    pub(super) fn new(stream: TcpStream, cipher: StatelessTransportState) -> io::Result<Channel> {
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
pub(super) fn open_record(
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
