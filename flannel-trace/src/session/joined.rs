//! The live join from this session's side: the handshake's outcome, and
//! (`--listen`) the peer's messages.

use std::sync::{Arc, atomic::AtomicU64};

use tokio::sync::mpsc;

use super::{events::Session, writer::spawn_writer};
use crate::{
    datapath::Probes,
    exit::{Fatal, OrFatal as _, Status},
    net::icmp,
    options::Probe,
    peer::feed::Feed,
    peer::thin::{self, ThinStep},
    peer::{Channel, Handshake},
    peer::{Control, Message},
    schema::record::Record,
};

/// What the peer's reader task hands the loop: a message, the end of the
/// stream (`None`), or why it broke.
pub(super) type Remote = Result<Option<Message>, String>;

impl Session<'_> {
    /// The handshake succeeded: trace the peer's ports too, then either
    /// read the peer (`--listen`) or stream to the listener (`--peer`).
    pub async fn joined(
        &mut self,
        h: Handshake,
        channel: Channel,
        remote_tx: &mpsc::Sender<Remote>,
        probes: &mut Probes,
    ) -> Result<(), Fatal> {
        eprintln!(
            "flannel-trace: joined with {} ({})",
            h.remote.node,
            channel.peer_addr()
        );
        // Watch the peer's ports too: with mismatched ports, its frames
        // would otherwise be invisible here.
        let before = self.ports;
        for p in h
            .remote
            .device_port
            .into_iter()
            .chain(h.remote.ports.iter().copied())
        {
            if !self.ports.add(p) {
                log::warn!("cannot also trace the peer's port {p}: four ports already traced");
            }
        }
        if self.ports != before {
            probes.set_ports(self.ports).fatal(Status::Failure)?;
            eprintln!(
                "flannel-trace: also tracing the peer's ports: {:?}",
                self.ports
                    .ports
                    .iter()
                    .filter(|p| **p != 0)
                    .collect::<Vec<_>>()
            );
        }
        let probe = self.probe.and_then(|p| {
            let to = p.to.or_else(|| h.remote.vtep_addrs.first().copied())?;
            Some((to, p))
        });
        let (tx, mut rx) = channel.split();
        if let Some(j) = self.joiner.as_mut() {
            j.remote = Some(h.remote);
            j.clock = h.clock;
            if let Some(c) = h.clock {
                eprintln!(
                    "flannel-trace: peer clock offset {:+.3} ms ± {:.3} ms",
                    c.offset_ns as f64 / 1e6,
                    c.error_ns as f64 / 1e6
                );
            }
            drop(tx);
            let fwd = remote_tx.clone();
            tokio::spawn(async move {
                loop {
                    let m = rx.recv().await.map_err(|e| e.to_string());
                    let end = !matches!(m, Ok(Some(_)));
                    if fwd.send(m).await.is_err() || end {
                        break;
                    }
                }
            });
            self.link.receiving_from_peer();
        } else {
            // Through a bounded queue, so that a slow listener never stalls
            // the ring buffer; the feed thins consistently when the link
            // cannot keep up.
            let taken = Arc::new(AtomicU64::new(0));
            let (q, ctl, handle) = spawn_writer(tx, self.codec_ctx.clone(), taken.clone());
            let feed = Feed::new(q, taken, self.sample_mask, self.clock_offset_ns);
            drop(rx);
            let effects = self.link.streaming_to(feed, ctl, handle);
            self.apply(effects);
        }
        if let Some((to, p)) = probe {
            start_probe(to, p);
        }
        Ok(())
    }

    pub fn remote(&mut self, m: Message) {
        let Some(j) = self.joiner.as_mut() else {
            return;
        };
        match m {
            Message::Record(Record::Event(ev)) => j.push_remote(ev),
            Message::Record(Record::Summary(sum)) => j.remote_summary = Some(sum),
            Message::Control(Control::Thin { from_ns, mask }) => {
                // The counting rule needs nested masks that only grow: a
                // step that is not one (a peer of another build, or a
                // damaged one) would turn into false losses, so the live
                // join stops trusting the peer's counts instead.
                let last = j.remote_thinned.last().map_or(0, |t| t.mask);
                if !(mask.wrapping_add(1).is_power_of_two()
                    && mask > last
                    && mask <= thin::MAX_MASK)
                {
                    eprintln!(
                        "flannel-trace: the peer sent an impossible thinning step (mask {mask:#x} after {last:#x}): ignored, and the verdict is marked uncertain"
                    );
                    j.remote_gaps.push(format!(
                        "the peer sent an impossible thinning step (mask {mask:#x} after {last:#x}): its counts cannot be trusted"
                    ));
                    return;
                }
                let step = ThinStep {
                    from_wall_ns: from_ns,
                    mask,
                };
                let at =
                    crate::kernel::clock::rfc3339(from_ns - j.clock.map_or(0, |c| c.offset_ns));
                eprintln!(
                    "flannel-trace: the peer's link cannot keep up: its live stream carries 1 in {} packets from {} on; counts after that are estimates",
                    step.rate(),
                    at.get(11..19).unwrap_or(&at)
                );
                j.remote_thinned.push(step);
            }
            Message::Control(Control::Bye) => {}
            other => log::debug!("ignoring {other:?} from the peer"),
        }
    }

    pub fn peer_finished(&self) -> bool {
        self.joiner
            .as_ref()
            .is_some_and(|j| j.remote_summary.is_some())
    }

    pub fn peer_gone(&mut self, why: &str) {
        eprintln!("flannel-trace: {why}");
        if let Some(j) = self.joiner.as_mut()
            && j.remote_summary.is_none()
        {
            j.remote_gaps.push(format!(
                "{why}: its view ends early, the verdict is partial"
            ));
        }
    }
}

/// `--probe`'s echoes, in the background.
pub(super) fn start_probe(to: std::net::IpAddr, p: Probe) {
    tokio::spawn(async move {
        match icmp::run(to, p.count, p.interval).await {
            Ok(n) => log::info!("sent {n} probes to {to}"),
            Err(e) => eprintln!("flannel-trace: {e}"),
        }
    });
}
