//! What both kinds of session (events and counters) wait on besides their
//! own data: the end (a signal or `--duration`) and the live join's
//! handshake, run in the background while the ring buffer is drained.

use std::{net::SocketAddr, pin::Pin, time::Duration};

use anyhow::Context as _;
use tokio::{
    net::TcpListener,
    signal::unix::{Signal, SignalKind},
    sync::oneshot,
    time::Sleep,
};

use crate::{
    exit::{Fatal, OrFatal as _, Status},
    options::{LiveJoin, Role},
    peer::{self, Channel, Handshake},
    schema::identity::NodeIdentity,
};

/// SIGTERM, SIGINT or the end of `--duration`, whichever comes first.
pub struct Stop {
    term: Signal,
    int: Signal,
    deadline: Pin<Box<Sleep>>,
}

impl Stop {
    pub fn new(duration: Option<Duration>) -> Result<Stop, Fatal> {
        let term = tokio::signal::unix::signal(SignalKind::terminate())
            .context("installing a SIGTERM handler")?;
        let int = tokio::signal::unix::signal(SignalKind::interrupt())
            .context("installing a SIGINT handler")?;
        let deadline = Box::pin(tokio::time::sleep(
            duration.unwrap_or(Duration::from_secs(10 * 365 * 24 * 3600)),
        ));
        Ok(Stop {
            term,
            int,
            deadline,
        })
    }

    /// Cancel-safe: a `select!` may poll it anew every turn.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
            _ = &mut self.deadline => {}
        }
    }
}

/// The handshake's outcome: joined, or why not.
pub type Joined = Result<Box<(Handshake, Channel)>, String>;

/// Starts the handshake of `live` in the background (`None`: the channel
/// is closed at once). A listener binds its address first, so that a bad
/// one fails the run; `warn_every_address` warns that an unspecified one
/// also listens on overlay and pod-facing addresses.
pub async fn handshake(
    live: Option<&LiveJoin>,
    identity: &NodeIdentity,
    warn_every_address: bool,
) -> Result<oneshot::Receiver<Joined>, Fatal> {
    let (news_tx, news_rx) = oneshot::channel::<Joined>();
    let Some(live) = live else {
        return Ok(news_rx);
    };
    let (token, id) = (live.token.clone(), identity.clone());
    let news = |r: Result<(Handshake, Channel), peer::PeerError>| {
        r.map(Box::new).map_err(|e| e.to_string())
    };
    match live.role {
        Role::Listen(addr) => {
            let listener = bind(addr, warn_every_address).await?;
            tokio::spawn(async move {
                let _ = news_tx.send(news(peer::listen(listener, &token, &id, None).await));
            });
        }
        Role::Peer { addr, wait } => {
            tokio::spawn(async move {
                let _ = news_tx.send(news(peer::connect(addr, &token, &id, wait).await));
            });
        }
    }
    Ok(news_rx)
}

async fn bind(addr: SocketAddr, warn_every_address: bool) -> Result<TcpListener, Fatal> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))
        .fatal(Status::Failure)?;
    if warn_every_address && addr.ip().is_unspecified() {
        eprintln!(
            "flannel-trace: warning: --listen {addr} accepts connections on every address of this node, overlay and pod-facing ones included; prefer this node's underlay address"
        );
    }
    eprintln!("flannel-trace: waiting for a peer on {addr}");
    Ok(listener)
}
