//! `flannel-trace join A.rec B.rec`: the verdict from two recordings.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use thiserror::Error;

use crate::{
    exit::{Fatal, OrFatal as _, Status},
    kernel::clock,
    options::JoinOptions,
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

pub fn run(args: JoinOptions) -> Result<(), Fatal> {
    let [a, b] = &args.files;
    let (a, b) = (open(a)?, open(b)?);
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
#[path = "offline_tests.rs"]
mod tests;
