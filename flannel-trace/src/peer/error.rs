//! What can go wrong between two nodes, each with the message an SRE
//! reads (which node, which flag to check).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use crate::schema::wire::FrameError;

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
    pub(super) fn reason(&self) -> String {
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
