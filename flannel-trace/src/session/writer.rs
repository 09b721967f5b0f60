//! The task that writes this node's events to the listener (`--peer`).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::mpsc;

use crate::{
    peer::ChannelTx,
    peer::{Control, Message},
    schema::codec,
    schema::event::Event,
    schema::record::Record,
    schema::wire,
};

/// Queue depth towards the listener: a drain of the ring buffer fits, so
/// that the writer (on the same thread) catches up between drains.
const PEER_QUEUE: usize = 65_536;

/// The task that writes to the listener; ends when the queue closes or the
/// connection fails. It takes whatever is queued at once (up to a batch of
/// events) and sends it as one encrypted write: events go in the compact
/// encoding, other messages in JSON, in queue order. Control messages
/// (`thin`) go first, ahead of the events queued before them: the
/// listener places a switch by its time, not by where it arrives.
pub fn spawn_writer(
    mut tx: ChannelTx,
    ctx: codec::Context,
    taken: Arc<AtomicU64>,
) -> (
    mpsc::Sender<Message>,
    mpsc::UnboundedSender<Message>,
    tokio::task::JoinHandle<()>,
) {
    let (q_tx, mut q_rx) = mpsc::channel::<Message>(PEER_QUEUE);
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Message>();
    let handle = tokio::spawn(async move {
        let mut events: Vec<Event> = Vec::with_capacity(codec::MAX_BATCH);
        let mut out: Vec<u8> = Vec::new();
        loop {
            out.clear();
            // Control messages first, in their order; then what is queued.
            let first = tokio::select! {
                biased;
                Some(c) = ctl_rx.recv() => {
                    for c in std::iter::once(c).chain(std::iter::from_fn(|| ctl_rx.try_recv().ok())) {
                        match wire::encode(&c) {
                            Ok(frame) => out.extend_from_slice(&frame),
                            Err(e) => log::warn!("not sent to the listener: {e}"),
                        }
                    }
                    q_rx.try_recv().ok()
                }
                m = q_rx.recv() => match m {
                    Some(m) => Some(m),
                    None => break,
                },
            };
            let mut bye = false;
            let mut n = 0u64;
            let mut next = first;
            while let Some(m) = next.take() {
                match m {
                    Message::Record(Record::Event(ev)) => {
                        events.push(ev);
                        n += 1;
                    }
                    other => {
                        if !events.is_empty() {
                            wire::encode_events(&ctx, &events, &mut out);
                            events.clear();
                        }
                        bye = matches!(other, Message::Control(Control::Bye));
                        match wire::encode(&other) {
                            Ok(frame) => out.extend_from_slice(&frame),
                            Err(e) => log::warn!("not sent to the listener: {e}"),
                        }
                    }
                }
                if bye || events.len() >= codec::MAX_BATCH {
                    break;
                }
                next = q_rx.try_recv().ok();
            }
            if !events.is_empty() {
                wire::encode_events(&ctx, &events, &mut out);
                events.clear();
            }
            if let Err(e) = tx.send_frames(&out).await {
                eprintln!("flannel-trace: sending to the listener failed: {e}");
                break;
            }
            // The feed sizes its overflow by what the link carries.
            taken.fetch_add(n, Ordering::Relaxed);
            if bye {
                break;
            }
        }
    });
    (q_tx, ctl_tx, handle)
}
