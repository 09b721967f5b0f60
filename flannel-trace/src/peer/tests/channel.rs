//! The encrypted channel: messages both ways, closes, the event rate.

use tokio::io::AsyncWriteExt as _;
use tokio::time::{Instant, timeout};

use super::*;
use crate::peer::channel::ChannelRx;
use crate::peer::protocol::{Control, Message};
use crate::peer::{ChannelTx, PeerError};
use crate::schema::record::Record;
use crate::schema::wire;

#[tokio::test]
async fn messages_round_trip_both_ways_and_after_split() {
    let (_, mut a, _, mut b) = pair().await;
    a.send(&Message::Control(Control::ClockPing { id: 1, t1: -7 }))
        .await
        .unwrap();
    match b.recv().await.unwrap() {
        Some(Message::Control(Control::ClockPing { id: 1, t1: -7 })) => {}
        other => panic!("{other:?}"),
    }
    b.send(&Message::Record(Record::Start(identity("b2"))))
        .await
        .unwrap();
    match a.recv().await.unwrap() {
        Some(Message::Record(Record::Start(id))) => assert_eq!(id.node, "b2"),
        other => panic!("{other:?}"),
    }

    // Both directions at once, from separate halves, with a large frame
    // that spans many records.
    let (mut a_tx, mut a_rx) = a.split();
    let (mut b_tx, mut b_rx) = b.split();
    let big = "x".repeat(wire::MAX_FRAME - 100);
    async fn send_all(tx: &mut ChannelTx, big: &str) {
        for id in 0..200 {
            tx.send(&Message::Control(Control::ClockPing { id, t1: id.into() }))
                .await
                .unwrap();
        }
        let reason = big.to_string();
        tx.send(&Message::Control(Control::Refused { reason }))
            .await
            .unwrap();
        tx.send(&Message::Control(Control::Bye)).await.unwrap();
    }
    async fn recv_all(rx: &mut ChannelRx) -> (u32, usize) {
        let (mut pings, mut big) = (0, 0);
        loop {
            match rx.recv().await.unwrap() {
                Some(Message::Control(Control::ClockPing { id, .. })) => {
                    assert_eq!(id, pings);
                    pings += 1;
                }
                Some(Message::Control(Control::Refused { reason })) => big = reason.len(),
                Some(Message::Control(Control::Bye)) => return (pings, big),
                other => panic!("{other:?}"),
            }
        }
    }
    let (_, _, from_b, from_a) = tokio::join!(
        send_all(&mut a_tx, &big),
        send_all(&mut b_tx, &big),
        recv_all(&mut a_rx),
        recv_all(&mut b_rx),
    );
    assert_eq!(from_a, (200, big.len()));
    assert_eq!(from_b, (200, big.len()));

    // Closing one side is an orderly EOF on the other.
    drop(a_tx);
    assert!(b_rx.recv().await.unwrap().is_none());
}

#[tokio::test]
async fn recv_sees_clean_close_and_loss_mid_record() {
    for cut in [false, true] {
        let (_, mut a, _, b) = pair().await;
        let (mut b_tx, b_rx) = b.split();
        b_tx.send(&Message::Control(Control::Bye)).await.unwrap();
        if cut {
            // A record header promising more than follows.
            b_tx.half.write_all(&[0, 40, 1, 2, 3]).await.unwrap();
        }
        drop((b_tx, b_rx));
        let limit = Duration::from_secs(5);
        let first = timeout(limit, a.recv()).await.unwrap();
        assert!(matches!(first, Ok(Some(Message::Control(Control::Bye)))));
        let next = timeout(limit, a.recv()).await.expect("no hang");
        match (cut, next) {
            (false, Ok(None)) => {}
            (true, Err(e @ PeerError::Truncated { .. })) => {
                assert!(e.to_string().contains("middle of a frame"), "{e}")
            }
            (_, other) => panic!("cut {cut}: {other:?}"),
        }
    }
}

/// Not a check: prints the sustained rate of the live channel (events
/// batched and encrypted as the peer's writer does, over loopback TCP,
/// decoded on the other side) for `cargo xtask bench`.
#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_live_channel_events_per_second() {
    let (_, a, _, b) = pair().await;
    let (_, mut rx) = a.split();
    let (mut tx, _) = b.split();
    let id = identity("node-b");
    let ctx = crate::schema::codec::Context::of(&id);
    let ev: crate::schema::event::Event = serde_json::from_value(serde_json::json!({
        "time": crate::kernel::clock::rfc3339(5 + id.clock_offset_ns), "ts_mono_ns": 5,
        "hop": "underlay-egress", "ifindex": id.underlay_ifindex, "iface": id.underlay_dev,
        "len": 1514,
        "outer": {"src": "192.0.2.1", "dst": "192.0.2.2", "proto": "udp", "sport": 40000, "dport": 8472},
        "vni": 1,
        "inner": {"src": "10.244.1.5", "dst": "10.244.2.9", "proto": "tcp", "sport": 43210, "dport": 8080,
                  "ip_id": 4242, "ip_len": 1450,
                  "tcp": {"seq": 1000, "ack": 77, "flags": "ACK|PSH", "payload_len": 1398}},
        "fingerprint": "0123456789abcdef",
    }))
    .unwrap();
    let batch = vec![ev; crate::schema::codec::MAX_BATCH];
    let batches = 4_000usize;
    let started = Instant::now();
    let sender = async {
        let mut out = Vec::new();
        for _ in 0..batches {
            out.clear();
            wire::encode_events(&ctx, &batch, &mut out);
            tx.send_frames(&out).await.unwrap();
        }
        tx.send(&Message::Control(Control::Bye)).await.unwrap();
        out.len()
    };
    let receiver = async {
        let mut n = 0usize;
        // The stream's context (node-b's identity) came with the handshake.
        loop {
            match rx.recv().await.unwrap() {
                Some(Message::Record(Record::Event(_))) => n += 1,
                Some(Message::Control(Control::Bye)) | None => return n,
                Some(_) => {}
            }
        }
    };
    let (frame_len, got) = tokio::join!(sender, receiver);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(got, batches * batch.len());
    println!(
        "live channel: {:.2} M events/s sustained over loopback ({} events, {:.1} bytes/event on the wire before encryption)",
        got as f64 / secs / 1e6,
        got,
        frame_len as f64 / batch.len() as f64
    );
}
