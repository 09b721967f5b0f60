//! `flannel-trace join A.rec B.rec`: the verdict from two recordings.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use thiserror::Error;

use crate::{
    cli::JoinArgs,
    exit::{Fatal, OrFatal as _, Status},
    kernel::clock,
    render,
    schema::identity::NodeIdentity,
    schema::record::Record,
    schema::recording::RecordError,
    schema::replay::Replay,
    schema::summary::Summary,
    verdict::{Join, NodeTrace, Options},
};

/// What `join` knows of a recording besides its events.
pub struct Head {
    pub path: PathBuf,
    pub identity: NodeIdentity,
    pub summary: Option<Summary>,
    /// Wall time of its last event, once read.
    pub last_wall_ns: Option<i64>,
}

impl Head {
    fn of<R>(r: &Replay<R>) -> Head {
        Head {
            path: r.path.clone(),
            identity: r.identity.clone(),
            summary: r.summary.clone(),
            last_wall_ns: None,
        }
    }
}

/// Two recordings that cannot be joined.
#[derive(Debug, Error)]
pub enum JoinError {
    #[error(
        "{a} and {b} are the same recording (node {node}, attached at {at}): join needs one recording from each of the two nodes"
    )]
    SameRecording {
        a: String,
        b: String,
        node: String,
        at: String,
    },
    #[error(
        "{a} and {b} both come from node {node} (same network namespace {netns} and underlay address {addr}): join needs one recording from each of the two nodes"
    )]
    SameNode {
        a: String,
        b: String,
        node: String,
        netns: u32,
        addr: String,
    },
}

impl JoinError {
    pub fn status(&self) -> Status {
        Status::Usage
    }
}

/// Less than this share of the shorter recording in common, and the join
/// says so: most of what one node saw cannot be checked against the other.
const MIN_OVERLAP: f64 = 0.5;

/// The same node twice (a copy, or two sessions of one node) would be
/// joined into a verdict about traffic between a node and itself, with
/// invented findings (its own VTEP MAC "missing" from its FDB).
pub fn refuse_same_node(a: &Head, b: &Head) -> Result<(), JoinError> {
    let (ia, ib) = (&a.identity, &b.identity);
    let names = || (a.path.display().to_string(), b.path.display().to_string());
    let same_file = match (a.path.canonicalize(), b.path.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    if same_file
        || (ia.node == ib.node
            && ia.netns_inode == ib.netns_inode
            && ia.attached_wall_ns == ib.attached_wall_ns
            && ia.clock_offset_ns == ib.clock_offset_ns)
    {
        let (a, b) = names();
        return Err(JoinError::SameRecording {
            a,
            b,
            node: ia.node.clone(),
            at: clock::rfc3339(ia.attached_wall_ns),
        });
    }
    let shared = ia
        .underlay_ips()
        .find(|ip| ib.underlay_ips().any(|o| o == *ip));
    if let Some(addr) = shared
        && ia.netns_inode == ib.netns_inode
        && ia.kernel == ib.kernel
    {
        let (a, b) = names();
        return Err(JoinError::SameNode {
            a,
            b,
            node: ia.node.clone(),
            netns: ia.netns_inode,
            addr: addr.to_string(),
        });
    }
    Ok(())
}

/// Wall-clock span a recording observed: from attach to its summary's end,
/// or to its last event when it was cut short.
fn span(r: &Head) -> (i64, i64) {
    let start = r.summary.as_ref().map_or(r.identity.attached_wall_ns, |s| {
        s.start_wall_ns.max(r.identity.attached_wall_ns)
    });
    let end = r
        .summary
        .as_ref()
        .map(|s| s.end_wall_ns)
        .unwrap_or_else(|| r.last_wall_ns.unwrap_or(start));
    (start, end.max(start))
}

/// Why the two recordings' times make the verdict uncertain, if they do.
pub fn overlap_gap(a: &Head, b: &Head) -> Option<String> {
    let ((sa, ea), (sb, eb)) = (span(a), span(b));
    let common = ea.min(eb) - sa.max(sb);
    let secs = |ns: i64| ns as f64 / 1e9;
    let show = |s: i64, e: i64| format!("{}–{}", clock::time_of_day(s), clock::time_of_day(e));
    if common <= 0 {
        return Some(format!(
            "the recordings do not overlap in time ({} {}, {} {}, UTC): what one node sent cannot be checked against the other (or their wall clocks differ by that much)",
            a.identity.node,
            show(sa, ea),
            b.identity.node,
            show(sb, eb)
        ));
    }
    let shorter = (ea - sa).min(eb - sb).max(1);
    let share = common as f64 / shorter as f64;
    (share < MIN_OVERLAP).then(|| {
        format!(
            "the recordings overlap for only {:.1} s ({:.0} % of the shorter one, {} {}, {} {}, UTC): packets outside the overlap are not judged",
            secs(common),
            share * 100.0,
            a.identity.node,
            show(sa, ea),
            b.identity.node,
            show(sb, eb)
        )
    })
}

fn trace(r: &Head) -> NodeTrace<'_> {
    let mut gaps = Vec::new();
    if r.summary.is_none() {
        gaps.push(format!(
            "{} has no summary: the tracer was stopped abruptly",
            r.path.display()
        ));
    }
    if let Some(s) = &r.summary {
        gaps.extend(s.gaps());
    }
    NodeTrace {
        identity: &r.identity,
        events: &[],
        lost: r.summary.as_ref().map_or(0, |s| s.lost),
        end_wall_ns: r.summary.as_ref().map(|s| s.end_wall_ns),
        gaps,
        // Recordings keep every event: nothing to thin.
        thinned: Vec::new(),
    }
}

fn open(path: &Path) -> Result<Replay<std::fs::File>, Fatal> {
    Replay::open(path).fatal(Status::Failure)
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Batches of decoded events on their way from a reader thread.
const BATCHES_AHEAD: usize = 16;

/// One recording decoded on its own thread (decoding is most of the cost
/// of a join): batches come in order, an error ends the stream.
struct Source {
    rx: std::sync::mpsc::Receiver<Result<Vec<crate::schema::event::Event>, RecordError>>,
    /// Batches done with go back to be freed where they were allocated
    /// (cheaper for the allocator than freeing them here).
    back: std::sync::mpsc::SyncSender<Vec<crate::schema::event::Event>>,
    batch: Vec<crate::schema::event::Event>,
    at: usize,
}

impl Source {
    fn spawn<'s>(scope: &'s std::thread::Scope<'s, '_>, mut r: Replay<std::fs::File>) -> Source {
        let (tx, rx) = std::sync::mpsc::sync_channel(BATCHES_AHEAD);
        let (back, done) =
            std::sync::mpsc::sync_channel::<Vec<crate::schema::event::Event>>(BATCHES_AHEAD);
        scope.spawn(move || {
            loop {
                while let Ok(old) = done.try_recv() {
                    drop(old);
                }
                let next = r.next_batch().transpose();
                let stop = !matches!(next, Some(Ok(_)));
                if let Some(b) = next
                    && tx.send(b).is_err()
                {
                    break;
                }
                if stop {
                    break;
                }
            }
        });
        Source {
            rx,
            back,
            batch: Vec::new(),
            at: 0,
        }
    }

    /// The next event, without taking it; `None` at the end.
    fn peek(&mut self) -> Result<Option<&crate::schema::event::Event>, Fatal> {
        if self.at == self.batch.len() {
            match self.rx.recv() {
                Ok(b) => {
                    let old = std::mem::replace(&mut self.batch, b.fatal(Status::Failure)?);
                    self.at = 0;
                    // A full return channel: freed here then.
                    let _ = self.back.try_send(old);
                }
                Err(_) => return Ok(None),
            }
        }
        Ok(self.batch.get(self.at))
    }
}

/// Streams both recordings through the join, merged by time; returns the
/// verdict engine with every event pushed and each recording's head with
/// its last event's time.
fn stream(
    ra: Replay<std::fs::File>,
    rb: Replay<std::fs::File>,
    opts: Options,
) -> Result<(Join, [Head; 2]), Fatal> {
    let mut heads = [Head::of(&ra), Head::of(&rb)];
    refuse_same_node(&heads[0], &heads[1]).map_err(|e| Fatal::new(e.status(), e))?;
    let mut join = Join::new(&trace(&heads[0]), &trace(&heads[1]), None, opts);
    std::thread::scope(|scope| {
        let mut src = [Source::spawn(scope, ra), Source::spawn(scope, rb)];
        loop {
            let ta = src[0].peek()?.map(|e| join.time(0, e));
            let tb = src[1].peek()?.map(|e| join.time(1, e));
            let node = match (ta, tb) {
                (Some(x), Some(y)) => usize::from(y < x),
                (Some(_), None) => 0,
                (None, Some(_)) => 1,
                (None, None) => break,
            };
            let s = &mut src[node];
            let ev = &s.batch[s.at];
            s.at += 1;
            join.push(node, ev);
            heads[node].last_wall_ns =
                Some((ev.ts_mono_ns as i64).saturating_add(heads[node].identity.clock_offset_ns));
        }
        Ok::<_, Fatal>(())
    })?;
    Ok((join, heads))
}

pub fn run(args: JoinArgs) -> Result<(), Fatal> {
    let a = open(&args.files[0])?;
    let b = open(&args.files[1])?;
    let opts = Options {
        grace_ns: nanos(args.grace),
        window_ns: nanos(args.window),
    };
    let (mut join, [ha, hb]) = stream(a, b, opts)?;
    log::debug!("join: the window held at most {} packets", join.peak_held());
    // Recordings carry each node's own wall clock; they are not compared,
    // but one that does not overlap the other says so.
    if let Some(gap) = overlap_gap(&ha, &hb) {
        join.add_gap(0, gap);
    }
    let report = join.report();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Record::Verdict(report))
                .context("encoding the verdict")?
        );
    } else {
        print!("{}", render::verdict::text(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
}
