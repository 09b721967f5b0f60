//! The join window: what is matched inside it, what is not outside it,
//! and that it holds a window of packets, not a trace.

use super::*;

const SEC: u64 = 1000;

fn window(secs: i64) -> Options {
    Options {
        window_ns: secs * 1_000_000_000,
        ..Options::default()
    }
}

/// One ping a → b: sent at 1 s, seen on b `late_ms` later.
fn ping_seen_late(late_ms: u64) -> (Vec<Event>, Vec<Event>) {
    let p = ping("10.244.1.0", "10.244.2.0", AB, 1);
    let t = SEC;
    let ea = vec![ev("overlay-egress", t, &p), ev("underlay-egress", t, &p)];
    let eb = vec![
        ev("underlay-ingress", t + late_ms, &p),
        ev("vxlan-rcv", t + late_ms, &p),
        ev("overlay-ingress", t + late_ms, &p),
    ];
    (ea, eb)
}

#[test]
fn a_match_that_arrives_late_but_inside_the_window_is_delivered() {
    let (ia, ib) = (a(), b());
    let (ea, eb) = ping_seen_late(3 * SEC);
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, window(5));
    let ab = &r.directions[0];
    assert_eq!((ab.sent, ab.delivered, ab.lost.total()), (1, 1, 0));
    assert_eq!(ab.segment, Segment::Delivered);
    assert_eq!(ab.flows[0].latency.underlay_ms, Some(3000.0));
}

#[test]
fn a_match_outside_the_window_is_a_loss_and_another_packet() {
    let (ia, ib) = (a(), b());
    let (ea, eb) = ping_seen_late(7 * SEC);
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, window(5));
    let ab = &r.directions[0];
    // The sender's packet found nothing within 5 s on b: lost in the
    // underlay. What b saw 7 s later is a packet of its own, arrived.
    assert_eq!(ab.lost.underlay, 1, "{:?}", ab.flows[0]);
    assert_eq!(ab.segment, Segment::Underlay);
    assert_eq!(ab.flows[0].latency.samples, 0);
    // A window wide enough matches them again.
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, window(10));
    assert_eq!(r.directions[0].lost.total(), 0);
    assert_eq!(r.directions[0].delivered, 1);
}

#[test]
fn a_receiver_clock_behind_the_sender_still_matches_within_the_window() {
    // b's observations come 2 s before a's (b's wall clock is behind and
    // recordings are not clock-corrected): the packet opens on b's event.
    let (ia, ib) = (a(), b());
    let p = ping("10.244.1.0", "10.244.2.0", AB, 1);
    let ea = vec![
        ev("overlay-egress", 3 * SEC, &p),
        ev("underlay-egress", 3 * SEC, &p),
    ];
    let eb = vec![
        ev("underlay-ingress", SEC, &p),
        ev("vxlan-rcv", SEC, &p),
        ev("overlay-ingress", SEC, &p),
    ];
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, window(5));
    assert_eq!(r.directions[0].lost.total(), 0);
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, window(1));
    assert_eq!(r.directions[0].lost.underlay, 1);
}

#[test]
fn tcp_ranges_are_matched_within_the_window_only() {
    let (ia, ib) = (a(), b());
    let seg = |seq| Pkt {
        src: "10.244.1.1",
        dst: "10.244.2.1",
        outer: Some(AB),
        seq: 0,
        tcp: Some((seq, 1000)),
        len: 1500,
    };
    let ea = vec![
        ev("overlay-egress", SEC, &seg(5000)),
        ev("underlay-egress", SEC, &seg(5000)),
    ];
    // The receiver's copy differs in fingerprint (GRO merged it), so only
    // its range can match it.
    let late = |ms| {
        let mut eb = vec![
            ev("underlay-ingress", SEC + ms, &seg(5000)),
            ev("vxlan-rcv", SEC + ms, &seg(5000)),
            ev("overlay-ingress", SEC + ms, &seg(5000)),
        ];
        for e in &mut eb {
            // Any value other than the sender's.
            e.fingerprint = Some(crate::schema::values::Fingerprint(0x6d65_7267_6564));
        }
        judge(&trace(&ia, &ea), &trace(&ib, &eb), None, window(5)).directions[0].lost
    };
    assert_eq!(late(4 * SEC).total(), 0);
    assert_eq!(late(6 * SEC).underlay, 1);
}

#[test]
fn the_window_holds_its_span_of_packets_not_the_trace() {
    let (ia, ib) = (a(), b());
    let (ta, tb) = (trace(&ia, &[]), trace(&ib, &[]));
    let mut j = Join::new(&ta, &tb, None, window(5));
    // 2000 pings 100 ms apart (200 s), each seen 1 ms later on b.
    for seq in 0..2000u16 {
        let p = ping("10.244.1.0", "10.244.2.0", AB, seq);
        let t = SEC + u64::from(seq) * 100;
        j.push(0, &ev("overlay-egress", t, &p));
        j.push(0, &ev("underlay-egress", t, &p));
        j.push(1, &ev("underlay-ingress", t + 1, &p));
        j.push(1, &ev("vxlan-rcv", t + 1, &p));
        j.push(1, &ev("overlay-ingress", t + 1, &p));
    }
    // 5 s of pings 100 ms apart: about 50 packets, not 2000.
    assert!(j.peak_held() <= 60, "held {}", j.peak_held());
    let r = j.report();
    let ab = &r.directions[0];
    assert_eq!((ab.sent, ab.delivered, ab.lost.total()), (2000, 2000, 0));
    assert_eq!(r.nodes[0].events, 4000);
    assert_eq!(r.nodes[1].events, 6000);
}

#[test]
fn a_lost_packet_is_judged_when_the_window_has_passed_over_it() {
    let (ia, ib) = (a(), b());
    let (ta, tb) = (trace(&ia, &[]), trace(&ib, &[]));
    let mut j = Join::new(&ta, &tb, None, window(5));
    let p = ping("10.244.1.0", "10.244.2.0", AB, 1);
    j.push(0, &ev("overlay-egress", SEC, &p));
    j.push(0, &ev("underlay-egress", SEC, &p));
    assert_eq!(j.peak_held(), 1);
    // Later traffic moves time on past the window: the packet is folded.
    for seq in 2..4u16 {
        let q = ping("10.244.1.0", "10.244.2.0", AB, seq);
        j.push(0, &ev("overlay-egress", 7 * SEC * u64::from(seq), &q));
    }
    assert_eq!(j.dirs[0].held(), 1, "only the newest packet is pending");
    let r = j.report();
    assert_eq!(r.directions[0].lost.underlay, 1);
}
