//! Offline join: refusing the same node twice, the overlap gap, streaming two recordings, and the bench's inputs.

use super::*;
use crate::schema::values::Fingerprint;
use crate::verdict::{self, test_identity as identity};

const S: i64 = 1_000_000_000;

fn rec(name: &str, path: &str, from: i64, to: i64) -> Head {
    let mut id = identity(name);
    id.attached_wall_ns = from;
    Head {
        path: PathBuf::from(path),
        identity: id,
        summary: Some(Summary {
            start_wall_ns: from,
            end_wall_ns: to,
            complete: true,
            ..Summary::default()
        }),
        last_wall_ns: None,
    }
}

#[test]
fn the_same_recording_or_node_twice_is_refused() {
    let a = rec("node-a", "a.rec", 100 * S, 160 * S);
    let copy = rec("node-a", "copy-of-a.rec", 100 * S, 160 * S);
    let e = refuse_same_node(&a, &copy).unwrap_err();
    assert!(matches!(e, JoinError::SameRecording { .. }), "{e}");
    assert!(e.to_string().contains("same recording"), "{e}");
    assert_eq!(e.status(), Status::Usage);

    // Another session of the same node.
    let later = rec("node-a", "a2.rec", 200 * S, 260 * S);
    let e = refuse_same_node(&a, &later).unwrap_err();
    assert!(matches!(e, JoinError::SameNode { .. }), "{e}");
    assert!(e.to_string().contains("one recording from each"), "{e}");

    let b = rec("node-b", "b.rec", 100 * S, 160 * S);
    refuse_same_node(&a, &b).unwrap();
}

#[test]
fn recordings_that_do_not_or_barely_overlap_are_marked() {
    let a = rec("node-a", "a.rec", 100 * S, 160 * S);
    let b = rec("node-b", "b.rec", 100 * S, 160 * S);
    assert_eq!(overlap_gap(&a, &b), None);
    let apart = rec("node-b", "b.rec", 300 * S, 360 * S);
    let gap = overlap_gap(&a, &apart).unwrap();
    assert!(gap.contains("do not overlap"), "{gap}");
    let barely = rec("node-b", "b.rec", 150 * S, 210 * S);
    let gap = overlap_gap(&a, &barely).unwrap();
    assert!(gap.contains("only 10.0 s"), "{gap}");

    // Through the verdict: every direction uncertain, with the reason.
    let (mut ta, tb) = (trace(&a), trace(&apart));
    ta.gaps.extend(overlap_gap(&a, &apart));
    let r = verdict::judge(&ta, &tb, None, Options::default());
    assert!(r.directions.iter().all(|d| !d.certain));
    assert!(r.uncertain.iter().any(|u| u.contains("do not overlap")));
}

#[test]
fn a_clock_step_in_a_recording_makes_the_verdict_uncertain() {
    let mut a = rec("node-a", "a.rec", 100 * S, 160 * S);
    a.summary.as_mut().unwrap().clock_step_ns = 3 * S;
    let b = rec("node-b", "b.rec", 100 * S, 160 * S);
    let r = verdict::judge(&trace(&a), &trace(&b), None, Options::default());
    assert!(r.directions.iter().all(|d| !d.certain));
    assert!(
        r.uncertain.iter().any(|u| u.contains("wall clock stepped")),
        "{:?}",
        r.uncertain
    );
}

/// Writes two recordings of a ping flood between node-a and node-b,
/// `events` in all (2 on a, 3 on b per packet), every packet delivered.
fn write_pair(pa: &Path, pb: &Path, events: u64) {
    use crate::{schema::event::Event, schema::recording::Writer};

    let packets = events / 5;
    let (ia, ib) = (identity("node-a"), identity("node-b"));
    let template = |id: &NodeIdentity, hop: &str, outer: bool| -> Event {
        let mut v = serde_json::json!({
            "time": "1970-01-01T00:00:00.000000000Z", "ts_mono_ns": 0, "hop": hop, "ifindex": id.underlay_ifindex,
            "iface": id.underlay_dev, "len": 98,
            "inner": {"src": "10.244.1.0", "dst": "10.244.2.0", "proto": "icmp",
                      "ip_id": 0, "ip_len": 84,
                      "icmp": {"type": 8, "code": 0, "id": 7, "seq": 0}},
            "fingerprint": "0000000000000000",
        });
        if outer {
            v["outer"] = serde_json::json!({"src": "10.25.1.51", "dst": "10.25.1.55", "proto": "udp", "sport": 50000, "dport": 8472});
            v["vni"] = 1.into();
        }
        serde_json::from_value(v).unwrap()
    };
    let hops_a = [
        (template(&ia, "overlay-egress", false), 0),
        (template(&ia, "underlay-egress", true), 1_000),
    ];
    let hops_b = [
        (template(&ib, "underlay-ingress", true), 100_000),
        (template(&ib, "vxlan-rcv", true), 101_000),
        (template(&ib, "overlay-ingress", false), 102_000),
    ];
    let mut wa = Writer::create(pa, &ia).unwrap();
    let mut wb = Writer::create(pb, &ib).unwrap();
    // 20 k packets a second: 2×10 M events span some 40 minutes.
    let gap = 50_000u64;
    for i in 0..packets {
        let t = 1_000_000_000 + i * gap;
        let fp = Fingerprint(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i + 1));
        for (w, hops) in [(&mut wa, &hops_a[..]), (&mut wb, &hops_b[..])] {
            for (ev, dt) in hops {
                let mut ev = ev.clone();
                ev.ts_mono_ns = t + dt;
                ev.fingerprint = Some(fp);
                let inner = ev.inner.as_mut().unwrap();
                inner.ip_id = i as u32;
                inner.icmp.as_mut().unwrap().seq = i as u16;
                w.write_event(ev).unwrap();
            }
        }
    }
    let end = |start: i64| Summary {
        start_wall_ns: start,
        end_wall_ns: start + (1_000_000_000 + packets * gap) as i64 + S,
        complete: true,
        ..Summary::default()
    };
    wa.finish(&end(ia.attached_wall_ns)).unwrap();
    wb.finish(&end(ib.attached_wall_ns)).unwrap();
}

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Not a check: prints the rate of the streamed `join` (read both
/// recordings, judge) on two recordings of 1 M events in all, its bytes
/// per event on disk and the process's peak memory (`cargo xtask
/// bench`; the 2×10 M figures run the binary on the files of
/// `write_join_inputs_for_the_bench`).
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_join_events_per_second() {
    use std::time::Instant;

    let events = 1_000_000;
    let dir = std::env::temp_dir();
    let (pa, pb) = (
        dir.join(format!("ft-bench-a-{}.rec", std::process::id())),
        dir.join(format!("ft-bench-b-{}.rec", std::process::id())),
    );
    write_pair(&pa, &pb, events);
    let bytes = std::fs::metadata(&pa).unwrap().len() + std::fs::metadata(&pb).unwrap().len();
    let started = Instant::now();
    let (join, _) = stream(
        Replay::open(&pa).unwrap(),
        Replay::open(&pb).unwrap(),
        Options::default(),
    )
    .unwrap();
    let held = join.peak_held();
    let report = join.report();
    let total = started.elapsed();
    println!(
        "join: {events} events, {:.1} bytes/event on disk; streamed read+judge {:.2} M events/s ({:.2} s), window held at most {held} packets; {}",
        bytes as f64 / events as f64,
        events as f64 / total.as_secs_f64() / 1e6,
        total.as_secs_f64(),
        peak_rss()
    );
    assert_eq!(report.directions[0].delivered, events / 5);
    let _ = std::fs::remove_file(&pa);
    let _ = std::fs::remove_file(&pb);
}

/// Not a check: writes the inputs of the bench's large `join` figures,
/// `FT_BENCH_JOIN_EVENTS` per file (default 10 M), to
/// `$FT_BENCH_JOIN_DIR/syn-{a,b}.rec`.
#[test]
#[ignore = "bench input: run by `cargo xtask bench`"]
fn write_join_inputs_for_the_bench() {
    let Some(dir) = std::env::var_os("FT_BENCH_JOIN_DIR") else {
        panic!("FT_BENCH_JOIN_DIR is not set")
    };
    let per_file: u64 = std::env::var("FT_BENCH_JOIN_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = PathBuf::from(dir);
    // a holds 2 of the 5 events of a packet: size by it.
    write_pair(
        &dir.join("syn-a.rec"),
        &dir.join("syn-b.rec"),
        per_file * 5 / 2,
    );
}
