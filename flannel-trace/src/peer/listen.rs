//! The listener's admission of connections (see the module doc of `peer`
//! for the limits): concurrent handshakes, the least advanced dropped
//! first under a flood, refusals logged at a bounded rate.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use snow::StatelessTransportState;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, sleep, timeout};

use super::channel::tune;
use super::clock_sync::measure_clock;
use super::handshake::{
    HANDSHAKE_MAX, Handshake, answer, check_hello, expect, handshake_error, noise, psk,
    read_handshake_message, require_token, send_step, unexpected,
};
use super::protocol::{Control, Message, STEP_TIMEOUT};
use super::{Channel, PeerError};
use crate::schema::identity::NodeIdentity;
use crate::schema::record::Record;

/// Time an accepted connection has to complete the Noise handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(3);

/// Time an authenticated peer has for identities and the clock exchange.
const ADMIT_DEADLINE: Duration = Duration::from_secs(10);

/// Handshakes in progress at once on the listener (the total number of
/// connections it holds open while waiting).
const MAX_PENDING: usize = 64;

/// Refusal log lines: a burst, then a steady rate.
pub(super) const LOG_BURST: f64 = 10.0;
const LOG_PER_SEC: f64 = 2.0;

/// Refusal lines, rate-limited (token bucket), with a count of those not
/// shown: a flood must not flood the terminal too.
pub(super) struct RefusalLog {
    tokens: f64,
    last: Instant,
    pub(super) suppressed: u64,
    pub(super) total: u64,
}

impl RefusalLog {
    pub(super) fn new() -> RefusalLog {
        RefusalLog {
            tokens: LOG_BURST,
            last: Instant::now(),
            suppressed: 0,
            total: 0,
        }
    }

    pub(super) fn refused(&mut self, addr: SocketAddr, reason: &str) {
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
            send_step(&mut ch, &Message::Record(Record::Start(local.clone()))).await?;
            let remote = match expect(&mut ch, "the peer's identity", STEP_TIMEOUT).await? {
                Message::Record(Record::Start(identity)) => identity,
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
                let refused = Message::Control(Control::Refused { reason: e.reason() });
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
