use std::time::Instant;

use serde_json::json;

use super::*;
use crate::verdict::test_identity as identity;

fn ctx() -> Context {
    Context::of(&identity("node-a"))
}

fn event(v: serde_json::Value) -> Event {
    serde_json::from_value(v).unwrap()
}

/// A TCP data segment as the underlay ingress hook reports it.
fn tcp_event(i: u64) -> Event {
    let id = identity("node-a");
    let ts = 1_000_000_000 + i * 13_000;
    event(json!({
        "time": crate::kernel::clock::rfc3339(ts as i64 + id.clock_offset_ns),
        "ts_mono_ns": ts,
        "hop": "underlay-ingress",
        "ifindex": id.underlay_ifindex,
        "iface": id.underlay_dev,
        "len": 1514,
        "outer": {"src": "10.25.1.55", "dst": "10.25.1.51", "proto": "udp", "sport": 40000 + (i % 1000) as u16, "dport": 8475},
        "vni": 1,
        "inner": {"src": "10.244.2.7", "dst": "10.244.1.9", "proto": "tcp", "sport": 43210, "dport": 8080,
                  "ip_id": 40000 + i, "ip_len": 1450,
                  "tcp": {"seq": 1_000_000 + i * 1398, "ack": 77, "flags": "ACK|PSH", "payload_len": 1398}},
        "fingerprint": format!("{:016x}", 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i + 1)),
    }))
}

fn samples() -> Vec<Event> {
    let id = identity("node-a");
    let t = |ts: i64| crate::kernel::clock::rfc3339(ts + id.clock_offset_ns);
    vec![
        tcp_event(0),
        event(json!({
            "time": t(5_000), "ts_mono_ns": 5_000, "hop": "overlay-egress",
            "ifindex": id.vxlan_ifindex, "iface": id.vxlan_dev, "len": 98,
            "inner": {"src": "10.244.1.0", "dst": "10.244.2.0", "proto": "icmp", "ip_id": 7, "ip_len": 84,
                      "icmp": {"type": 8, "code": 0, "id": 1106, "seq": 1}},
            "fingerprint": "6953c514e9ff7c04",
        })),
        // Earlier than the previous one: negative delta.
        event(json!({
            "time": t(4_000), "ts_mono_ns": 4_000, "hop": "drop", "ifindex": 9, "iface": "cni0", "len": 134,
            "outer": {"src": "fd00::1", "dst": "fd00::2", "proto": "udp", "sport": 1, "dport": 8472},
            "vni": 16_777_215, "vlan": 100, "outer_recovered": true,
            "inner": {"src": "fd10::1", "dst": "fd10::2", "proto": "icmpv6", "ip_id": 0, "ip_len": 64,
                      "icmp": {"type": 128, "code": 0, "id": 1, "seq": 2}, "fragment": true, "truncated": true},
            "drop": {"reason": "NETFILTER_DROP", "reason_code": 12, "location": "nft_do_chain+0x3e8", "location_addr": "0xffffffff81000010"},
        })),
        // The extremes of each field (the values the compact form once
        // wrote as text can no longer be made: see `older_writers_text`).
        event(json!({
            "time": t(u64::MAX as i64), "ts_mono_ns": u64::MAX, "hop": "pod-ingress", "ifindex": 4_000_000_000u32, "iface": null, "len": 0,
            "inner": {"src": "10.0.0.1", "dst": "10.0.0.2", "proto": "ip-proto-99", "ip_id": 0, "ip_len": 0,
                      "tcp": {"seq": 0, "ack": 0, "flags": "SYN|ACK|FIN|RST|PSH|URG|ECE|CWR", "payload_len": 0}},
            "fingerprint": "ffffffffffffffff",
            "drop": {"reason": null, "reason_code": null, "location": null, "location_addr": "0x0"},
        })),
        // The pod path's fields: inner MAC, QinQ, ARP, an undecodable frame.
        event(json!({
            "time": t(6_000), "ts_mono_ns": 6_000, "hop": "underlay-ingress", "ifindex": 2, "iface": "eth1", "len": 92,
            "outer": {"src": "10.25.1.55", "dst": "10.25.1.51", "proto": "udp", "sport": 40000, "dport": 8475},
            "vni": 1, "vlan": 100, "vlan_inner": 7,
            "inner": {"src": "10.244.1.0", "dst": "10.244.2.0", "proto": "arp", "ip_id": 0, "ip_len": 0,
                      "arp": {"op": "request"}, "dst_mac": "0e:f7:00:00:99:02"},
            "fingerprint": "0000000000000001",
        })),
        event(json!({
            "time": t(7_000), "ts_mono_ns": 7_000, "hop": "drop", "ifindex": 2, "iface": "eth1", "len": 38,
            "outer": {"src": "10.25.1.55", "dst": "10.25.1.51", "proto": "udp", "sport": 40000, "dport": 8475},
            "undecodable": true,
            "drop": {"reason": "UDP_CSUM", "reason_code": 5, "location": "udp_rcv", "location_addr": "0x1"},
        })),
        event(json!({
            "time": t(0), "ts_mono_ns": 0, "hop": "vxlan-rcv", "ifindex": id.vxlan_ifindex, "iface": "renamed0", "len": 1,
            "inner": {"src": "10.0.0.1", "dst": "10.0.0.2", "proto": "tcp", "ip_id": 0, "ip_len": 40,
                      "tcp": {"seq": 1, "ack": 2, "flags": "-", "payload_len": 0}},
            "fingerprint": "00000000000000ab",
        })),
    ]
}

#[test]
fn every_field_round_trips_exactly() {
    let events = samples();
    let mut out = Vec::new();
    encode_batch(&ctx(), &events, &mut out);
    let back = decode_batch(&ctx(), &out).unwrap();
    assert_eq!(back.len(), events.len());
    for (a, b) in events.iter().zip(&back) {
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap()
        );
    }
}

#[test]
fn a_busy_stream_takes_at_most_80_bytes_per_event() {
    let events: Vec<Event> = (0..MAX_BATCH as u64).map(tcp_event).collect();
    let mut out = Vec::new();
    encode_batch(&ctx(), &events, &mut out);
    // Frame header (length, CRC) included.
    let per_event = (out.len() + 8) as f64 / events.len() as f64;
    let json = serde_json::to_vec(&crate::schema::record::Record::Event(events[0].clone()))
        .unwrap()
        .len();
    eprintln!(
        "compact: {per_event:.1} bytes/event (JSON frame: {} bytes)",
        json + 8
    );
    assert!(per_event <= 80.0, "{per_event}");
}

#[test]
fn damaged_batches_are_errors_never_panics() {
    let mut out = Vec::new();
    encode_batch(&ctx(), &samples(), &mut out);
    for cut in 0..out.len() {
        assert!(decode_batch(&ctx(), &out[..cut]).is_err(), "cut at {cut}");
    }
    for i in 0..out.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut bad = out.clone();
            bad[i] ^= flip;
            let _ = decode_batch(&ctx(), &bad);
        }
    }
    let mut extra = out.clone();
    extra.push(0);
    assert_eq!(
        decode_batch(&ctx(), &extra).unwrap_err(),
        CodecError::Trailing(1)
    );
    // A count far beyond the bytes: an error, without reserving for it.
    let huge = [BATCH, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(decode_batch(&ctx(), &huge).is_err());
    assert_eq!(
        decode_batch(&ctx(), b"{}").unwrap_err(),
        CodecError::Tag(b'{')
    );
}

/// One event as a writer before typed values made it: `bits`, the hop as
/// text, no timestamp delta, ifindex 1, length 0, then `rest`.
fn named(bits: u32, hop: &str, rest: &[u8]) -> Vec<u8> {
    let mut out = vec![BATCH, 1];
    varint(&mut out, u64::from(bits | HOP_NAMED | IFACE_NONE));
    text(&mut out, hop);
    out.extend_from_slice(&[0, 1, 0]);
    out.extend_from_slice(rest);
    out
}

#[test]
fn older_writers_text_is_read_where_it_is_a_value() {
    let ev = &decode_batch(&ctx(), &named(0, "vxlan-rcv", &[])).unwrap()[0];
    assert_eq!(ev.hop, Hop::VxlanRcv);
    assert!(matches!(
        decode_batch(&ctx(), &named(0, "nowhere", &[])),
        Err(CodecError::Value(4, _))
    ));
    let mut fp = Vec::new();
    text(&mut fp, "6953c514e9ff7c04");
    let ev = &decode_batch(&ctx(), &named(FINGERPRINT_TEXT, "drop", &fp)).unwrap()[0];
    assert_eq!(ev.fingerprint, Some(Fingerprint(0x6953_c514_e9ff_7c04)));
    let mut fp = Vec::new();
    text(&mut fp, "not-hex");
    assert!(matches!(
        decode_batch(&ctx(), &named(FINGERPRINT_TEXT, "drop", &fp)),
        Err(CodecError::Value(..))
    ));
    // An inner TCP packet whose protocol and flags are text.
    let inner_tcp = |proto: &str, flags: &str| {
        let mut b = vec![PROTO_NAMED, 10, 0, 0, 1, 10, 0, 0, 2];
        text(&mut b, proto);
        b.extend_from_slice(&[0, 40]); // ip_id, ip_len
        b.extend_from_slice(&[0; 8]); // seq, ack
        text(&mut b, flags);
        b.push(0); // payload_len
        decode_batch(
            &ctx(),
            &named(INNER | TCP | TCP_FLAGS_TEXT, "overlay-ingress", &b),
        )
    };
    let ev = &inner_tcp("tcp", "SYN|ACK").unwrap()[0];
    let i = ev.inner.as_ref().unwrap();
    assert_eq!(i.endpoints.proto, Proto::Tcp);
    assert_eq!(i.tcp.as_ref().unwrap().flags, TcpFlags(0x12));
    for (proto, flags) in [("tcp", "strange"), ("ip-proto-6", "SYN"), ("TCP", "SYN")] {
        assert!(
            matches!(inner_tcp(proto, flags), Err(CodecError::Value(..))),
            "{proto} {flags}"
        );
    }
}

/// Not a check: prints encode and decode rates (`cargo xtask bench`).
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_codec_events_per_second() {
    let events: Vec<Event> = (0..MAX_BATCH as u64).map(tcp_event).collect();
    let rounds = 4_000;
    let mut out = Vec::with_capacity(32 * 1024);
    let started = Instant::now();
    for _ in 0..rounds {
        out.clear();
        encode_batch(&ctx(), &events, &mut out);
    }
    let enc = (rounds * events.len()) as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut n = 0;
    for _ in 0..rounds {
        n += decode_batch(&ctx(), &out).unwrap().len();
    }
    let dec = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "codec: encode {:.2} M events/s, decode {:.2} M events/s, {:.1} bytes/event",
        enc / 1e6,
        dec / 1e6,
        (out.len() + 8) as f64 / events.len() as f64
    );
}

/// A batch an earlier version wrote (the fuzz corpus's seed): typed
/// values read it and write it again byte for byte.
#[test]
fn an_older_batch_re_encodes_to_its_bytes() {
    let old = include_bytes!("../../../../fuzz/corpus/event_batch/two-events");
    let ctx = Context::of(&crate::fuzzing::identity());
    let events = decode_batch(&ctx, old).unwrap();
    assert_eq!(events.len(), 2);
    let mut again = Vec::new();
    encode_batch(&ctx, &events, &mut again);
    assert_eq!(again, old);
}
