//! The verdict when a node traced its TC hops only (vxlan-rcv and/or drop
//! hook missing, as under kernel lockdown): it must say what it could not
//! see, never turn a missing hop into "0 reached" or "no drops".

use super::tests::{AB, a, b, delivered_a_to_b, ev, ping, trace};
use super::*;
use crate::datapath::degraded::{MissingCause, MissingHop};
use flannel_trace_common::Hop;

const WHY: &str = "kernel lockdown (confidentiality) forbids reading kernel memory";

fn without(mut id: NodeIdentity, hops: &[&str]) -> NodeIdentity {
    id.missing_hops = hops
        .iter()
        .map(|h| MissingHop {
            hop: (*h).into(),
            cause: MissingCause::Lockdown,
            reason: WHY.into(),
            tried: vec![("tp_btf".into(), "load failed".into())],
        })
        .collect();
    id
}

/// What a receiver without the probe hops records: only its TC hops.
fn tc_only(events: &mut Vec<Event>) {
    events.retain(|e| e.hop != Hop::VxlanRcv && e.hop != Hop::Drop);
}

#[test]
fn a_receiver_without_vxlan_rcv_delivers_without_claiming_zero_there() {
    let (ia, ib) = (a(), without(b(), &["vxlan-rcv", "drop"]));
    let (mut ea, mut eb) = (vec![], vec![]);
    delivered_a_to_b(&mut ea, &mut eb, 5);
    tc_only(&mut eb);
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, Options::default());
    let ab = &r.directions[0];
    assert_eq!(
        (ab.segment, ab.sent, ab.delivered),
        (Segment::Delivered, 5, 5)
    );
    let h = &ab.flows[0].hops;
    assert_eq!((h.vxlan_rcv, h.receiver_drops), (None, None));
    assert_eq!(h.sender_drops, Some(0), "the sender had its drop hook");
    let json = serde_json::to_value(ab).unwrap();
    assert!(json["flows"][0]["hops"]["vxlan_rcv"].is_null(), "{json}");
    assert_eq!(
        r.untraced,
        [
            format!("node-b: vxlan-rcv not traced: {WHY}"),
            format!("node-b: drop not traced: {WHY}")
        ]
    );
    let text = crate::render::verdict::text(&r);
    assert!(
        text.contains("vxlan-rcv untraced overlay-ingress 5 drop untraced"),
        "{text}"
    );
    assert!(text.contains(&format!("NOT TRACED: node-b: vxlan-rcv not traced: {WHY}")));
}

#[test]
fn a_loss_inside_the_receiver_is_not_split_without_vxlan_rcv() {
    let (ia, ib) = (a(), without(b(), &["vxlan-rcv", "drop"]));
    let (mut ea, mut eb) = (vec![], vec![]);
    for seq in 0..4 {
        let p = ping("10.244.1.0", "10.244.2.0", AB, seq);
        ea.push(ev("overlay-egress", 1000, &p));
        ea.push(ev("underlay-egress", 1000, &p));
        eb.push(ev("underlay-ingress", 1001, &p));
    }
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, Options::default());
    let ab = &r.directions[0];
    assert_eq!(ab.segment, Segment::ReceiverHost, "{}", ab.verdict);
    assert_eq!(ab.lost.receiver_host, 4);
    assert!(ab.certain, "the TC hops saw everything they could");
    assert_eq!(
        ab.verdict,
        format!(
            "node-a→node-b: 4 frames reached node-b's eth1 (outer 10.25.1.51→10.25.1.55 udp/8475), 0 came out of node-b's flannel.1: lost inside node-b, between eth1 and flannel.1 (vxlan-rcv not traced: {WHY}) (drop reasons unavailable on node-b: {WHY})"
        )
    );
    let fix = ab.fix.as_deref().unwrap();
    assert!(
        fix.starts_with("drop reasons are unavailable on node-b:"),
        "{fix}"
    );
    assert!(!fix.contains("no kernel drop"), "{fix}");
}

#[test]
fn with_vxlan_rcv_traced_the_same_loss_reads_as_before() {
    // Only the drop hook missing: the receive path is seen, the reasons
    // are not.
    let (ia, ib) = (a(), without(b(), &["drop"]));
    let (mut ea, mut eb) = (vec![], vec![]);
    for seq in 0..3 {
        let p = ping("10.244.1.0", "10.244.2.0", AB, seq);
        ea.push(ev("overlay-egress", 1000, &p));
        ea.push(ev("underlay-egress", 1000, &p));
        eb.push(ev("underlay-ingress", 1001, &p));
        eb.push(ev("vxlan-rcv", 1001, &p));
    }
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, Options::default());
    let ab = &r.directions[0];
    assert_eq!(ab.segment, Segment::ReceiverHost);
    assert_eq!(ab.flows[0].hops.vxlan_rcv, Some(3));
    assert!(
        !ab.verdict.contains("vxlan-rcv not traced"),
        "{}",
        ab.verdict
    );
    assert!(
        ab.verdict.ends_with(&format!(
            "lost inside node-b (drop reasons unavailable on node-b: {WHY})"
        )),
        "{}",
        ab.verdict
    );
}

#[test]
fn a_sender_without_its_drop_hook_never_says_it_dropped_nothing() {
    let (ia, ib) = (without(a(), &["drop"]), b());
    let (mut ea, eb) = (vec![], vec![]);
    for seq in 0..2 {
        let p = ping("10.244.1.0", "10.244.2.0", AB, seq);
        ea.push(ev("overlay-egress", 1000, &p));
    }
    let r = judge(&trace(&ia, &ea), &trace(&ib, &eb), None, Options::default());
    let ab = &r.directions[0];
    assert_eq!(ab.segment, Segment::SenderHost);
    assert!(
        ab.verdict.ends_with(&format!(
            "lost inside node-a (drop reasons unavailable on node-a: {WHY})"
        )),
        "{}",
        ab.verdict
    );
    assert_eq!(ab.flows[0].hops.sender_drops, None);
}
