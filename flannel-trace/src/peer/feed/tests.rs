//! The feed against a real bounded queue: escalation, the overflow, what is
//! left unsent.

use super::*;

fn udp(id: u32, ts: u64) -> Event {
    serde_json::from_value(serde_json::json!({
        "time": "1970-01-01T00:00:00.000000000Z", "ts_mono_ns": ts, "hop": "overlay-egress", "ifindex": 1, "len": 100,
        "inner": {"src": "10.244.1.5", "dst": "10.244.2.9", "proto": "udp",
                  "sport": 4000, "dport": 8080, "ip_id": id, "ip_len": 60},
    }))
    .unwrap()
}

/// A queue nobody reads: the feed must thin, consistently, and date
/// each step no later than the first event it filtered.
#[test]
fn a_full_queue_escalates_the_mask_and_keeps_by_hash() {
    let (tx, mut rx) = mpsc::channel(8);
    let mut feed = Feed::with_overflow(tx, 0, 1_000, 8);
    let mut offered = Vec::new();
    for i in 0..64u32 {
        let ev = udp(i, 100 + u64::from(i));
        offered.push(ev.clone());
        feed.offer(ev).unwrap();
    }
    assert!(!feed.steps.is_empty());
    let masks: Vec<u32> = feed.steps.iter().map(|s| s.mask).collect();
    assert!(
        masks.windows(2).all(|w| w[1] == thin::next_mask(w[0])),
        "{masks:?}"
    );
    let mut got = Vec::new();
    while let Ok(Message::Record(Record::Event(e))) = rx.try_recv() {
        got.push(e);
    }
    // Freed slots: the overflow moves up, then drains at the end.
    drain_into(&mut feed, &mut rx, &mut got);
    // Every event offered from a step's time on that passed its mask
    // was sent (nothing left out: the maximum was not reached).
    assert_eq!(feed.unsent, 0);
    for ev in &offered {
        let wall = ev.ts_mono_ns as i64 + 1_000;
        let m = feed
            .steps
            .iter()
            .filter(|s| s.from_wall_ns <= wall)
            .map(|s| s.mask)
            .max()
            .unwrap_or(0);
        let sent = got.iter().any(|g| g.ts_mono_ns == ev.ts_mono_ns);
        if thin::keeps(ev, m) {
            assert!(
                sent,
                "event {} passed mask {m} but was not sent",
                ev.ts_mono_ns
            );
        }
    }
    assert_eq!(
        got.len() as u64 + feed.thinned,
        offered.len() as u64,
        "each event either sent or thinned"
    );
}

fn drain_into(feed: &mut Feed, rx: &mut mpsc::Receiver<Message>, got: &mut Vec<Event>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let drain = feed.drain(Duration::from_secs(5));
        let take = async {
            while got.len() < 64 {
                match tokio::time::timeout(std::time::Duration::from_millis(50), rx.recv()).await {
                    Ok(Some(Message::Record(Record::Event(e)))) => got.push(e),
                    _ => break,
                }
            }
        };
        let (r, _) = tokio::join!(drain, take);
        r.unwrap();
    });
}

/// A drain larger than the overflow's size: it goes in whole, and the
/// tick after it thins the overflow down to size, dated by the
/// earliest event it filtered.
#[test]
fn after_a_drain_the_overflow_is_thinned_down_to_its_size() {
    let (tx, _rx) = mpsc::channel(16);
    let mut feed = Feed::new(tx, Arc::default(), 0, 0);
    // Sizes fixed: on a loaded machine the 40 k offers outlast the
    // measuring period, and the measured rate (nothing read) would
    // shrink the overflow and take more steps than this test is about.
    feed.adaptive = false;
    let n = 40_000u32;
    for i in 0..n {
        assert!(feed.offer(udp(i, 1_000 + u64::from(i))).unwrap().is_empty());
    }
    assert_eq!(feed.overflow.len() as u32, n - 16);
    // One step a drain, while the overflow is over its size and does
    // not shrink (nobody reads the queue here).
    let steps: Vec<Escalation> = std::iter::from_fn(|| feed.tick()).collect();
    let masks: Vec<u32> = steps.iter().map(|e| e.step.mask).collect();
    assert_eq!(masks, [1, 3], "40 k events into an overflow of 16 k");
    assert!(feed.overflow.len() <= OVERFLOW.1);
    // The first event not queued (the 17th) dates the first step; the
    // second, the earliest the first one left.
    assert_eq!(steps[0].step.from_wall_ns, 1_016);
    let left = (16..n).find(|&i| thin::keeps(&udp(i, 0), 1)).unwrap();
    assert_eq!(steps[1].step.from_wall_ns, 1_000 + i64::from(left));
    assert!(feed.overflow.iter().all(|e| thin::keeps(e, 3)));
    assert_eq!(feed.overflow.len() as u64 + feed.thinned, u64::from(n - 16));
    assert!(feed.tick().is_none());
}

#[test]
fn at_the_maximum_what_does_not_fit_is_unsent() {
    let (tx, _rx) = mpsc::channel(1);
    let mut feed = Feed::with_overflow(tx, MAX_MASK, 0, 1);
    let keep: Vec<Event> = (0..100_000u32)
        .map(|i| udp(i, u64::from(i)))
        .filter(|e| thin::keeps(e, MAX_MASK))
        .take(3)
        .collect();
    for ev in keep {
        assert!(feed.offer(ev).unwrap().is_empty());
    }
    assert_eq!(feed.unsent, 1);
    assert!(feed.steps.is_empty());
}
