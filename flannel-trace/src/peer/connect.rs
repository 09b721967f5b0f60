//! The connecting side (`--peer`): reach the listener, retrying while it
//! is not up yet, then the handshake, the identities and the clock pings.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use super::channel::tune;
use super::clock_sync::answer_pings;
use super::handshake::{Handshake, expect, initiate, psk, require_token, send_step, unexpected};
use super::protocol::{Message, STEP_TIMEOUT};
use super::{Channel, PeerError};
use crate::schema::identity::NodeIdentity;
use crate::schema::record::Record;

/// Pause between connection attempts while the listener is not up yet.
const RETRY_EVERY: Duration = Duration::from_millis(500);

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
        Message::Record(Record::Start(identity)) => identity,
        other => return Err(unexpected(&ch, "the listener's identity", &other)),
    };
    send_step(&mut ch, &Message::Record(Record::Start(local.clone()))).await?;
    answer_pings(&mut ch).await?;
    Ok((
        Handshake {
            remote,
            clock: None,
        },
        ch,
    ))
}
