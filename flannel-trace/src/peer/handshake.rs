//! The handshake: the 8-byte hello, the Noise exchange that proves the
//! token on both sides, and the helpers of the identity and clock steps
//! that follow it on the encrypted channel.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use snow::StatelessTransportState;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::protocol::{Control, MAGIC, Message, PROTOCOL_VERSION, STEP_TIMEOUT, hello};
use super::{Channel, PeerError};
use crate::schema::identity::NodeIdentity;
use crate::verdict::ClockEstimate;
const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";

/// Handshake messages are tens of bytes; anything larger is not one.
pub(super) const HANDSHAKE_MAX: usize = 1024;

/// The 32-byte pre-shared key of the Noise handshake. Domain-separated, so
/// the same token used elsewhere yields an unrelated key.
pub(super) fn psk(token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"flannel-trace peer token\0");
    h.update(token.as_bytes());
    h.finalize().into()
}

pub(super) fn noise(psk: &[u8; 32]) -> Result<snow::Builder<'_>, PeerError> {
    let params = NOISE_PARAMS.parse().map_err(PeerError::Noise)?;
    snow::Builder::new(params)
        .prologue(&PROLOGUE)
        .and_then(|b| b.psk(0, psk))
        .map_err(PeerError::Noise)
}

/// Binds the handshake to the protocol version: a node of another version
/// fails to authenticate rather than misreading frames.
const PROLOGUE: [u8; 8] = hello();

/// The outcome of a handshake.
#[derive(Debug)]
pub struct Handshake {
    pub remote: NodeIdentity,
    /// Listener side only: the clock offset to the peer.
    pub clock: Option<ClockEstimate>,
}

/// The 8-byte hello: our magic and our protocol version.
pub(super) fn check_hello(hello: &[u8], addr: SocketAddr) -> Result<(), PeerError> {
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
pub(super) fn answer(
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
pub(super) async fn initiate(
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
pub(super) fn finish_initiator(
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

/// `[u16 length][bytes]`, at most [`HANDSHAKE_MAX`] bytes.
pub(super) async fn read_handshake_message(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
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

pub(super) fn require_token(token: &str) -> Result<(), PeerError> {
    if token.is_empty() {
        return Err(PeerError::NoToken);
    }
    Ok(())
}

/// The next message within `limit`; a `Refused` from the other side ends the
/// handshake.
pub(super) async fn expect(
    ch: &mut Channel,
    what: &str,
    limit: Duration,
) -> Result<Message, PeerError> {
    match timeout(limit, ch.recv()).await {
        Err(_) => Err(handshake_error(
            ch,
            format!("timed out after {limit:?} waiting for {what}"),
        )),
        Ok(Ok(None)) => Err(handshake_error(
            ch,
            format!("connection closed while waiting for {what}"),
        )),
        Ok(Ok(Some(Message::Control(Control::Refused { reason })))) => Err(PeerError::Refused {
            peer: ch.peer_addr(),
            reason,
        }),
        Ok(Ok(Some(msg))) => Ok(msg),
        Ok(Err(e)) => Err(e),
    }
}

/// Send during the handshake: a peer that stops reading cannot stall us.
pub(super) async fn send_step(ch: &mut Channel, msg: &Message) -> Result<(), PeerError> {
    match timeout(STEP_TIMEOUT, ch.send(msg)).await {
        Ok(sent) => sent,
        Err(_) => Err(handshake_error(
            ch,
            format!("could not send within {STEP_TIMEOUT:?}"),
        )),
    }
}

pub(super) fn handshake_error(ch: &Channel, reason: impl Into<String>) -> PeerError {
    PeerError::Handshake {
        peer: ch.peer_addr(),
        reason: reason.into(),
    }
}

pub(super) fn unexpected(ch: &Channel, expected: &str, got: &Message) -> PeerError {
    let got = got.kind();
    handshake_error(
        ch,
        format!(
            "expected {expected}, got a {got} message (not a flannel-trace peer of this version?)"
        ),
    )
}
