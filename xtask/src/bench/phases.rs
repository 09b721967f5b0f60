//! The measurements that are not side by side: attach and detach, the
//! kernel's per-program cost, the tracer's own userspace cost, recordings,
//! the live channel and `join`.

use std::{collections::BTreeMap, fs, path::Path, thread, time::Duration};

use anyhow::Result;
use flannel_trace_tests::Lab;

use super::{
    Plan, bpf_stats,
    configs::{self, Config},
    figures::Samples,
    load, observer, progress, recordings,
};

pub struct AttachDetach {
    pub attach_ms: Samples,
    pub detach_ms: Samples,
}

/// Start to "every hook attached" and SIGINT to exit, on node b.
pub fn attach_detach(lab: &Lab, plan: &Plan, dir: &Path) -> Result<AttachDetach> {
    let mut out = AttachDetach {
        attach_ms: Samples::default(),
        detach_ms: Samples::default(),
    };
    for i in 1..=plan.cycles {
        progress(&format!("attach/detach {i}/{}", plan.cycles));
        let p = observer::flannel_trace("attach", lab.node('b'), &[], Path::new("/dev/null"), dir)?;
        out.attach_ms.push(p.attach.as_secs_f64() * 1e3);
        let s = p.stop()?;
        out.detach_ms.push(s.detach.as_secs_f64() * 1e3);
    }
    Ok(out)
}

/// One tracer configuration under the UDP flood with bpf_stats on.
pub struct Cost {
    pub config: Config,
    pub sent: u64,
    pub received: u64,
    /// Per program: runs, ns total.
    pub programs: BTreeMap<String, (u64, u64)>,
    /// Node b's tracer: events, CPU seconds over the flood, peak RSS.
    pub events: u64,
    pub lost: u64,
    pub secs: f64,
    pub cpu_s: f64,
    pub hwm_kib: u64,
}

pub fn costs(lab: &Lab, plan: &Plan, configs: &[Config], dir: &Path) -> Result<Vec<Cost>> {
    let (a, b) = (lab.node('a'), lab.node('b'));
    let _stats = bpf_stats::Enabled::new()?;
    let mut out = Vec::new();
    for &config in configs {
        progress(&format!("bpf_stats and userspace cost: {}", config.label()));
        let procs = config.start(lab, dir)?;
        thread::sleep(Duration::from_millis(200));
        // Node b's tracer is the first one started.
        let pid = procs.first().map(|p| p.pid());
        let cpu0 = pid.and_then(observer::cpu_seconds).unwrap_or(f64::NAN);
        let before = bpf_stats::snapshot();
        let udp = load::udp_flood(a, b, plan.cost);
        let after = bpf_stats::snapshot();
        let cpu1 = pid.and_then(observer::cpu_seconds).unwrap_or(f64::NAN);
        let hwm = pid.and_then(observer::peak_rss_kib).unwrap_or(0);
        let stopped = configs::stop_all(procs)?;
        let udp = udp?;
        let b_err = stopped.first().map_or("", |s| s.stderr.as_str());
        out.push(Cost {
            config,
            sent: udp.sent,
            received: udp.received,
            programs: bpf_stats::delta(&before, &after),
            events: observer::events_of(b_err).unwrap_or(0),
            lost: observer::lost_of(b_err),
            secs: udp.secs,
            cpu_s: cpu1 - cpu0,
            hwm_kib: hwm,
        });
    }
    Ok(out)
}

pub struct Recorded {
    pub events: [u64; 2],
    pub bytes: [u64; 2],
}

/// `--record` on both nodes under the UDP flood: bytes per event, and the
/// real pair `join` is run on.
pub fn record(lab: &Lab, plan: &Plan, dir: &Path) -> Result<Recorded> {
    progress("recording on both nodes");
    let (a, b) = (lab.node('a'), lab.node('b'));
    let paths = [dir.join("a.rec"), dir.join("b.rec")];
    let null = Path::new("/dev/null");
    let pa = paths[0].to_string_lossy().into_owned();
    let pb = paths[1].to_string_lossy().into_owned();
    let ta = observer::flannel_trace("record a", a, &["--record", &pa], null, dir)?;
    let tb = observer::flannel_trace("record b", b, &["--record", &pb], null, dir)?;
    let udp = load::udp_flood(a, b, plan.cost);
    let rr = load::request_response(a, b, Duration::from_millis(300));
    let stopped = configs::stop_all(vec![ta, tb])?;
    udp?;
    // The ping-pong only adds TCP events to the recordings; its failure
    // costs nothing measured here.
    if let Err(e) = rr {
        progress(&format!(
            "  request/response during the recording failed: {e:#}"
        ));
    }
    let bytes = [
        fs::metadata(&paths[0])?.len(),
        fs::metadata(&paths[1])?.len(),
    ];
    let events = [
        observer::events_of(&stopped[0].stderr).unwrap_or(0),
        observer::events_of(&stopped[1].stderr).unwrap_or(0),
    ];
    Ok(Recorded { events, bytes })
}

pub struct JoinRun {
    /// Events in the two files.
    pub events: [u64; 2],
    pub synthetic: bool,
    pub bytes: u64,
    pub join: recordings::Join,
}

/// `join` on the real pair (when the lab ran), then on synthesised pairs
/// of `sizes` events per file.
pub fn joins(rec: Option<&Recorded>, plan: &Plan, dir: &Path) -> Result<Vec<JoinRun>> {
    let mut out = Vec::new();
    if let Some(rec) = rec {
        progress("join on the real recordings");
        let real = recordings::join(
            &dir.join("a.rec"),
            &dir.join("b.rec"),
            plan.join_cap,
            plan.join_limit,
        )?;
        out.push(JoinRun {
            events: rec.events,
            synthetic: false,
            bytes: rec.bytes[0] + rec.bytes[1],
            join: real,
        });
    }
    for &size in &plan.join_sizes {
        progress(&format!(
            "writing two recordings of ≥ {:.1} M events each",
            size as f64 / 1e6
        ));
        let ([sa, sb], events) = recordings::synthesise(dir, size)?;
        let bytes = fs::metadata(&sa)?.len() + fs::metadata(&sb)?.len();
        progress(&format!("join on {} + {} events", events[0], events[1]));
        let join = recordings::join(&sa, &sb, plan.join_cap, plan.join_limit)?;
        let _ = fs::remove_file(&sa);
        let _ = fs::remove_file(&sb);
        out.push(JoinRun {
            events,
            synthetic: true,
            bytes,
            join,
        });
    }
    Ok(out)
}

pub struct Live {
    pub events: u64,
    pub unsent: u64,
    /// Left out of the live stream by hash (thinned to 1 in `rate`).
    pub thinned: u64,
    pub rate: u64,
    pub secs: f64,
    pub listener_note: String,
}

/// `--listen` on node a, `--peer` on node b (the busier one: it receives
/// the flood), the peer's events streamed over the underlay.
pub fn live(lab: &Lab, plan: &Plan, dir: &Path) -> Result<Live> {
    progress("live channel (--listen a, --peer b)");
    let (a, b) = (lab.node('a'), lab.node('b'));
    let addr = format!("{}:7800", a.underlay_ip());
    let verdict = dir.join("listener.out");
    let token = ["--token", "bench-token"];
    let listener = observer::flannel_trace(
        "listener a",
        a,
        &["--listen", &addr, token[0], token[1]],
        &verdict,
        dir,
    )?;
    let mut peer = observer::flannel_trace(
        "peer b",
        b,
        &["--peer", &addr, token[0], token[1]],
        Path::new("/dev/null"),
        dir,
    )?;
    peer.wait_for("joined with", Duration::from_secs(30))?;
    let udp = load::udp_flood(a, b, plan.cost);
    let p = peer.stop()?;
    let l = listener.wait_or_stop(Duration::from_secs(20))?;
    let udp = udp?;
    let text = fs::read_to_string(&verdict).unwrap_or_default();
    let mut notes: Vec<&str> = text
        .lines()
        .chain(l.stderr.lines())
        .filter(|l| l.contains("UNCERTAIN") || l.to_lowercase().contains("uncertain"))
        .take(1)
        .collect();
    notes.extend(text.lines().filter(|l| l.starts_with("THINNED:")));
    let (rate, thinned) = observer::thinned_of(&p.stderr);
    Ok(Live {
        events: observer::events_of(&p.stderr).unwrap_or(0),
        unsent: observer::unsent_of(&p.stderr),
        thinned,
        rate,
        secs: udp.secs,
        listener_note: if notes.is_empty() {
            first_verdict_line(&text)
        } else {
            notes.join(" / ")
        },
    })
}

/// The listener's direction sentences, when nothing marked the verdict.
fn first_verdict_line(text: &str) -> String {
    text.lines()
        .filter(|l| l.contains('→') && !l.starts_with(' '))
        .take(2)
        .collect::<Vec<_>>()
        .join(" / ")
}
