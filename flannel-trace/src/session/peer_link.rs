//! The live join's link, as this node's session sees it: a state machine.
//!
//! ```text
//!            joined (--peer)          listener went away
//! Waiting ───────────────────▶ Streaming ─────────────────▶ Ended
//!    │  └─ joined (--listen) ─▶ Receiving ── peer closed ──▶ Ended
//!    └──────────── handshake failed ───────────────────────▶ Ended
//! ```
//!
//! `--peer` holds its events while the handshake runs (up to
//! [`PENDING_CAP`], then counts what it could not hold) and replays them
//! once joined; joined, events go through the [`Feed`], which thins them
//! consistently when the link cannot keep up. The transitions return what
//! the session must say ([`Effect`]); the link itself only tells the writer
//! of a thinning step, ahead of the events queued.

use std::time::Duration;

use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    options::Role,
    peer::feed::{self, Escalation, Feed},
    peer::{Control, Message},
    schema::{event::Event, record::Record, summary::Summary},
};

/// Events held while the peer connection is being set up.
pub const PENDING_CAP: usize = 200_000;

/// How long the end of a session waits for the queue to drain, and again
/// for the writer to send it.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

pub struct PeerLink {
    state: State,
    cap: usize,
}

enum State {
    /// No live join was asked for.
    Off,
    /// The handshake is under way; `hold`: events wait for it (`--peer`).
    Waiting {
        hold: bool,
        pending: Vec<Event>,
        /// Events not held: the cap was reached. After the first one,
        /// nothing more is held, so that what is replayed has no hole.
        dropped: u64,
    },
    /// `--peer`, joined: events go to the listener.
    Streaming(Box<Stream>),
    /// `--listen`, joined: the peer's messages arrive.
    Receiving,
    /// The join failed, or the other side went away or finished.
    Ended,
}

/// `--peer`'s side of a joined link.
pub struct Stream {
    feed: Feed,
    /// Control messages (`thin`) to the writer, ahead of queued events.
    ctl: mpsc::UnboundedSender<Message>,
    writer: JoinHandle<()>,
    /// Events of before the join that were not held.
    dropped_before_join: u64,
}

/// What the session must do after a transition.
#[derive(Debug, Clone, Copy)]
pub enum Effect {
    /// The live stream is thinner from now on (the listener was told).
    Thinned(Escalation),
    /// The feed, thinned as far as it goes, started leaving events out.
    LeavingOut,
    /// The listener went away: tracing goes on locally only.
    ListenerGone,
    /// Events of before the join that could not be held.
    NotSentFromBefore(u64),
}

impl PeerLink {
    pub fn new(role: Option<Role>) -> PeerLink {
        PeerLink::with_cap(role, PENDING_CAP)
    }

    fn with_cap(role: Option<Role>, cap: usize) -> PeerLink {
        let state = match role {
            None => State::Off,
            Some(role) => State::Waiting {
                hold: matches!(role, Role::Peer { .. }),
                pending: Vec::new(),
                dropped: 0,
            },
        };
        PeerLink { state, cap }
    }

    /// Whether the handshake's outcome is still awaited.
    pub fn waiting(&self) -> bool {
        matches!(self.state, State::Waiting { .. })
    }

    /// Whether the peer's messages are still to be read (`--listen`).
    pub fn receiving(&self) -> bool {
        matches!(self.state, State::Receiving)
    }

    #[cfg(test)]
    fn streaming(&self) -> bool {
        matches!(self.state, State::Streaming(_))
    }

    /// One of this node's events, for the listener.
    pub fn offer(&mut self, ev: Event) -> Vec<Effect> {
        match &mut self.state {
            State::Waiting {
                hold: true,
                pending,
                dropped,
            } => {
                if *dropped == 0 && pending.len() < self.cap {
                    pending.push(ev);
                } else {
                    *dropped += 1;
                }
                Vec::new()
            }
            State::Streaming(stream) => {
                let before = stream.feed.unsent;
                match stream.feed.offer(ev) {
                    Ok(steps) => {
                        let mut out = stream.thinned(steps);
                        if before == 0 && stream.feed.unsent > 0 {
                            out.push(Effect::LeavingOut);
                        }
                        out
                    }
                    Err(feed::Closed) => {
                        self.state = State::Ended;
                        vec![Effect::ListenerGone]
                    }
                }
            }
            _ => Vec::new(),
        }
    }

    /// `--peer` joined: the writer takes the feed's queue; what was held is
    /// replayed into it.
    pub fn streaming_to(
        &mut self,
        feed: Feed,
        ctl: mpsc::UnboundedSender<Message>,
        writer: JoinHandle<()>,
    ) -> Vec<Effect> {
        let State::Waiting {
            pending, dropped, ..
        } = std::mem::replace(&mut self.state, State::Ended)
        else {
            return Vec::new();
        };
        self.state = State::Streaming(Box::new(Stream {
            feed,
            ctl,
            writer,
            dropped_before_join: dropped,
        }));
        let mut out = Vec::new();
        for ev in pending {
            out.extend(self.offer(ev));
        }
        if dropped > 0 {
            out.push(Effect::NotSentFromBefore(dropped));
        }
        out
    }

    /// `--listen` joined.
    pub fn receiving_from_peer(&mut self) {
        if self.waiting() {
            self.state = State::Receiving;
        }
    }

    /// The handshake failed: what was held is let go.
    pub fn failed(&mut self) {
        if self.waiting() {
            self.state = State::Ended;
        }
    }

    /// The peer's stream ended (`--listen`).
    pub fn peer_closed(&mut self) {
        if self.receiving() {
            self.state = State::Ended;
        }
    }

    /// After a drain of the ring buffer: the feed may thin one step.
    pub fn tick(&mut self) -> Vec<Effect> {
        match &mut self.state {
            State::Streaming(stream) => {
                let step = stream.feed.tick();
                stream.thinned(step.into_iter().collect())
            }
            _ => Vec::new(),
        }
    }

    /// The end of the session: the stream to close, if this node streams.
    pub fn take_stream(&mut self) -> Option<Box<Stream>> {
        match std::mem::replace(&mut self.state, State::Ended) {
            State::Streaming(stream) => Some(stream),
            other => {
                self.state = other;
                None
            }
        }
    }
}

impl Stream {
    /// Tells the writer of each step (ahead of the events queued: the
    /// listener places a step by its time, not by where it arrives).
    fn thinned(&self, steps: Vec<Escalation>) -> Vec<Effect> {
        steps
            .into_iter()
            .map(|e| {
                let _ = self.ctl.send(Message::Control(Control::Thin {
                    from_ns: e.step.from_wall_ns,
                    mask: e.step.mask,
                }));
                Effect::Thinned(e)
            })
            .collect()
    }

    /// Sends what is still held, then this node's summary (with what the
    /// listener did not get, and why) and `bye`, and waits, within bounds,
    /// for the writer to send them. Returns why the join is incomplete if
    /// the writer did not finish in time.
    pub async fn close(self, summary: &Summary) -> Option<String> {
        let Stream {
            mut feed,
            ctl,
            writer,
            dropped_before_join,
        } = self;
        // What waits behind the queue goes first.
        let _ = feed.drain(CLOSE_WAIT).await;
        // The listener marks what we could not send, with its cause.
        let mut s = summary.clone();
        s.peer_unsent = feed.unsent;
        s.pending_dropped = dropped_before_join;
        s.complete &= feed.unsent == 0 && dropped_before_join == 0;
        if let Some(last) = feed.steps.last() {
            eprintln!(
                "flannel-trace: the live stream ended thinned to 1 in {} ({} events left out of it by hash; the recording has them all)",
                last.rate(),
                feed.thinned
            );
        }
        if feed.unsent > 0 {
            eprintln!(
                "flannel-trace: {} events could not be sent to the listener in time",
                feed.unsent
            );
        }
        drop(ctl);
        let tx = feed.sender().clone();
        drop(feed);
        let _ = tx.send(Message::Record(Record::Summary(s))).await;
        let _ = tx.send(Message::Control(Control::Bye)).await;
        drop(tx);
        // Let the writer flush, within bounds.
        if tokio::time::timeout(CLOSE_WAIT, writer).await.is_err() {
            eprintln!("flannel-trace: the listener did not take our last events within 5 s");
            return Some("the listener did not take our last events within 5 s".into());
        }
        None
    }
}

#[cfg(test)]
#[path = "peer_link_tests.rs"]
mod tests;
