//! The link's transitions, driven by hand: the writer is a task reading
//! the feed's queue, the listener's going away is that queue closing.

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;

const PEER: Role = Role::Peer {
    addr: std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        7800,
    )),
    wait: Duration::from_secs(1),
};

fn udp(id: u32) -> Event {
    serde_json::from_value(serde_json::json!({
        "time": "1970-01-01T00:00:00.000000000Z", "ts_mono_ns": 1000 + u64::from(id), "hop": "overlay-egress", "ifindex": 1,
        "len": 100,
        "inner": {"src": "10.244.1.5", "dst": "10.244.2.9", "proto": "udp",
                  "sport": 4000, "dport": 8080, "ip_id": id, "ip_len": 60},
    }))
    .unwrap()
}

fn ip_id(m: &Message) -> Option<u32> {
    match m {
        Message::Record(Record::Event(ev)) => ev.inner.as_ref().map(|i| i.ip_id),
        _ => None,
    }
}

/// A writer that keeps what it is sent: the messages arrive on `sent`.
struct Writer {
    q: mpsc::Sender<Message>,
    ctl: mpsc::UnboundedSender<Message>,
    ctl_rx: mpsc::UnboundedReceiver<Message>,
    handle: JoinHandle<()>,
    sent: mpsc::UnboundedReceiver<Message>,
}

fn writer(depth: usize) -> Writer {
    let (q, mut q_rx) = mpsc::channel::<Message>(depth);
    let (ctl, ctl_rx) = mpsc::unbounded_channel();
    let (keep, sent) = mpsc::unbounded_channel();
    let handle = tokio::spawn(async move {
        while let Some(m) = q_rx.recv().await {
            let bye = matches!(m, Message::Control(Control::Bye));
            let _ = keep.send(m);
            if bye {
                break;
            }
        }
    });
    Writer {
        q,
        ctl,
        ctl_rx,
        handle,
        sent,
    }
}

fn join(link: &mut PeerLink, w: Writer, overflow: usize) -> (Vec<Effect>, Parts) {
    let feed = Feed::with_overflow(w.q, 0, 0, overflow);
    let effects = link.streaming_to(feed, w.ctl, w.handle);
    (
        effects,
        Parts {
            ctl_rx: w.ctl_rx,
            sent: w.sent,
        },
    )
}

struct Parts {
    ctl_rx: mpsc::UnboundedReceiver<Message>,
    sent: mpsc::UnboundedReceiver<Message>,
}

#[test]
fn without_a_live_join_nothing_is_held() {
    let mut link = PeerLink::new(None);
    assert!(!link.waiting() && !link.receiving() && !link.streaming());
    assert!(link.offer(udp(1)).is_empty());
    assert!(link.take_stream().is_none());
}

#[test]
fn a_listener_holds_nothing_and_ends_when_the_peer_closes() {
    let listen = Role::Listen("127.0.0.1:7800".parse().unwrap());
    let mut link = PeerLink::new(Some(listen));
    assert!(link.waiting());
    assert!(link.offer(udp(1)).is_empty());
    link.receiving_from_peer();
    assert!(link.receiving() && !link.waiting());
    link.peer_closed();
    assert!(!link.receiving() && !link.waiting());
}

#[tokio::test]
async fn events_of_before_the_join_are_replayed_in_order() {
    let mut link = PeerLink::new(Some(PEER));
    for i in 0..5 {
        assert!(link.offer(udp(i)).is_empty());
    }
    let (effects, mut parts) = join(&mut link, writer(64), 64);
    assert!(effects.is_empty(), "{effects:?}");
    assert!(link.streaming() && !link.waiting());
    assert!(link.offer(udp(5)).is_empty());
    let stream = link.take_stream().expect("streaming");
    assert!(!link.streaming());
    assert_eq!(stream.close(&Summary::default()).await, None);
    let mut got = Vec::new();
    while let Ok(m) = parts.sent.try_recv() {
        got.push(m);
    }
    let ids: Vec<u32> = got.iter().filter_map(ip_id).collect();
    assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
    // The summary, then bye, after the events.
    let n = got.len();
    assert!(
        matches!(&got[n - 2], Message::Record(Record::Summary(s)) if s.pending_dropped == 0 && s.peer_unsent == 0)
    );
    assert!(matches!(got[n - 1], Message::Control(Control::Bye)));
}

#[tokio::test]
async fn beyond_the_cap_events_are_counted_and_the_summary_says_so() {
    let mut link = PeerLink::with_cap(Some(PEER), 3);
    for i in 0..5 {
        link.offer(udp(i));
    }
    let (effects, mut parts) = join(&mut link, writer(64), 64);
    assert!(
        matches!(effects[..], [Effect::NotSentFromBefore(2)]),
        "{effects:?}"
    );
    let summary = Summary {
        complete: true,
        ..Summary::default()
    };
    assert_eq!(link.take_stream().unwrap().close(&summary).await, None);
    let mut ids = Vec::new();
    let mut last = None;
    while let Ok(m) = parts.sent.try_recv() {
        ids.extend(ip_id(&m));
        if let Message::Record(Record::Summary(s)) = m {
            last = Some(s);
        }
    }
    assert_eq!(ids, [0, 1, 2]);
    let s = last.expect("a summary was sent");
    assert_eq!(s.pending_dropped, 2);
    assert!(
        !s.complete,
        "events left out make the peer's view incomplete"
    );
}

#[test]
fn a_failed_handshake_lets_the_held_events_go() {
    let mut link = PeerLink::new(Some(PEER));
    link.offer(udp(1));
    link.failed();
    assert!(!link.waiting() && !link.streaming());
    assert!(link.offer(udp(2)).is_empty());
    // A late join finds nothing to stream into.
    let (q, _q_rx) = mpsc::channel(4);
    let (ctl, _) = mpsc::unbounded_channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let effects = link.streaming_to(Feed::with_overflow(q, 0, 0, 4), ctl, tokio::spawn(async {}));
    assert!(effects.is_empty());
    assert!(!link.streaming());
}

#[tokio::test]
async fn the_listener_going_away_ends_the_link_once() {
    let mut link = PeerLink::new(Some(PEER));
    // The writer's queue is closed: the listener is gone.
    let (q, q_rx) = mpsc::channel(4);
    drop(q_rx);
    let (ctl, _ctl_rx) = mpsc::unbounded_channel();
    link.streaming_to(Feed::with_overflow(q, 0, 0, 4), ctl, tokio::spawn(async {}));
    let effects = link.offer(udp(1));
    assert!(matches!(effects[..], [Effect::ListenerGone]), "{effects:?}");
    assert!(!link.streaming());
    assert!(link.offer(udp(2)).is_empty());
    assert!(link.take_stream().is_none());
}

#[tokio::test]
async fn a_link_that_cannot_keep_up_thins_and_tells_the_writer_first() {
    let mut link = PeerLink::new(Some(PEER));
    // A queue of 2 that nobody reads (the writer task is not scheduled
    // while this test runs), an overflow of 4.
    let (effects, mut parts) = join(&mut link, writer(2), 4);
    assert!(effects.is_empty());
    let mut steps = Vec::new();
    for i in 0..64 {
        for e in link.offer(udp(i)) {
            match e {
                Effect::Thinned(e) => steps.push(e.step),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(!steps.is_empty(), "an overflowing feed thins");
    let mut told = Vec::new();
    while let Ok(Message::Control(Control::Thin { from_ns, mask })) = parts.ctl_rx.try_recv() {
        told.push(crate::peer::thin::ThinStep {
            from_wall_ns: from_ns,
            mask,
        });
    }
    assert_eq!(told, steps, "every step is told to the writer, in order");
}
