//! `cargo xtask bench-ab`: two or more builds of flannel-trace compared on
//! the kernel's own accounting, interleaved (A B A B …) so that a busy
//! minute of the shared machine hits every build alike. Each round runs,
//! under the same UDP flood: no tracer, tcpdump on both nodes, then every
//! build in per-packet mode and in counters mode (`--stats`) on both nodes.
//! Figures: packets/s that reached the pod, the loss against no tracer as
//! a fraction of tcpdump's, and per program ns/run and runs/packet from
//! `kernel.bpf_stats_enabled`. Prints Markdown; nothing is written.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use flannel_trace_tests::{Lab, Node, require_root, require_tools, with_lab};

use super::{
    bpf_stats,
    configs::stop_all,
    figures::Samples,
    load,
    observer::{self, Proc},
    progress,
};
use crate::setup;

#[derive(Args)]
pub struct Options {
    /// A build to compare, as LABEL=PATH (PATH: a flannel-trace binary);
    /// LABEL=PATH,VAR=VALUE also sets an environment variable for it.
    /// Give it twice or more.
    #[arg(long = "build", required = true)]
    builds: Vec<String>,
    /// Rounds (default 5).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Seconds of UDP flood per configuration and round.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Skip counters mode.
    #[arg(long)]
    no_stats: bool,
}

struct Build {
    label: String,
    bin: PathBuf,
    env: Vec<String>,
}

fn parse_build(s: &str) -> Result<Build> {
    let Some((label, rest)) = s.split_once('=') else {
        bail!("--build {s:?}: expected LABEL=PATH[,VAR=VALUE…]");
    };
    let mut parts = rest.split(',');
    let bin = PathBuf::from(parts.next().unwrap_or_default());
    if !bin.is_file() {
        bail!("--build {label}: {} is not a file", bin.display());
    }
    Ok(Build {
        label: label.to_owned(),
        bin,
        env: parts.map(str::to_owned).collect(),
    })
}

/// One configuration's samples over the rounds.
#[derive(Default)]
struct Figures {
    kpps: Samples,
    /// 1 - kpps / no tracer's kpps of the same round.
    loss: Samples,
    attach_ms: Samples,
    /// Per program: ns/run and runs/packet (packets received by the pod).
    programs: BTreeMap<String, (Samples, Samples)>,
    /// Per program, ns/run under a flood that is none of the overlay's
    /// (pod a to its own node's underlay address): the foreign-traffic cost.
    foreign: BTreeMap<String, Samples>,
    lost_events: u64,
}

/// 64-byte UDP from pod a to node a's underlay address for `dur`: traffic
/// every global hook sees and none reports. Returns packets received.
fn foreign_flood(a: &Node, dur: Duration) -> Result<u64> {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Instant;
    let dst = SocketAddr::new(a.underlay_ip().into(), 9200);
    let sink = a.in_thread(|| UdpSocket::bind(dst))?;
    sink.set_nonblocking(true)?;
    let src = a.pod().in_thread(|| {
        let s = UdpSocket::bind(SocketAddr::new(a.pod_ip().into(), 0))?;
        s.connect(dst)?;
        Ok(s)
    })?;
    let payload = [0x5au8; load::UDP_PAYLOAD];
    let (t, mut got, mut buf) = (Instant::now(), 0u64, [0u8; 256]);
    while t.elapsed() < dur {
        for _ in 0..32 {
            let _ = src.send(&payload);
        }
        while sink.recv(&mut buf).is_ok() {
            got += 1;
        }
    }
    Ok(got)
}

fn start_tracer(b: &Build, node: &Node, extra: &[&str], dir: &Path) -> Result<Proc> {
    let bin = b.bin.to_string_lossy();
    let mut cmd: Vec<&str> = vec!["env"];
    cmd.extend(b.env.iter().map(String::as_str));
    cmd.extend([bin.as_ref(), "--port", "8475"]);
    cmd.extend_from_slice(extra);
    let label = format!("{} {}", b.label, node.name());
    Proc::start(
        &label,
        node,
        &cmd,
        Path::new("/dev/null"),
        dir,
        "(Ctrl-C to stop)",
    )
}

fn start_both(b: &Build, lab: &Lab, extra: &[&str], dir: &Path) -> Result<Vec<Proc>> {
    thread::scope(|s| {
        let hs: Vec<_> = [lab.node('b'), lab.node('a')]
            .into_iter()
            .map(|n| s.spawn(move || start_tracer(b, n, extra, dir)))
            .collect();
        hs.into_iter().map(|h| h.join().expect("starter")).collect()
    })
}

pub fn run(opts: Options) -> Result<()> {
    let builds: Vec<Build> = opts
        .builds
        .iter()
        .map(|s| parse_build(s))
        .collect::<Result<_>>()?;
    setup::run()?;
    require_root()?;
    require_tools()?;
    let dir = setup::workspace_root().join("target/bench-ab-tmp");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let dur = Duration::from_secs_f64(opts.secs);
    let mut labels = vec!["no tracer".to_owned(), "tcpdump -w, both".to_owned()];
    for b in &builds {
        labels.push(format!("{}, per packet", b.label));
        if !opts.no_stats {
            labels.push(format!("{}, --stats", b.label));
        }
    }
    let mut all: BTreeMap<String, Figures> = BTreeMap::new();
    let outcome = with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let _stats = bpf_stats::Enabled::new()?;
        for round in 1..=opts.rounds {
            let mut base = f64::NAN;
            for (i, label) in labels.iter().enumerate() {
                progress(&format!("round {round}/{}: {label}", opts.rounds));
                let procs = match i {
                    0 => Vec::new(),
                    1 => {
                        let mut v = observer::tcpdump("tcpdump b", b, &dir)?;
                        v.extend(observer::tcpdump("tcpdump a", a, &dir)?);
                        v
                    }
                    _ => {
                        let k = i - 2;
                        let per = if opts.no_stats { 1 } else { 2 };
                        let extra: &[&str] = if k % per == 1 { &["--stats"] } else { &[] };
                        start_both(&builds[k / per], lab, extra, &dir)
                            .with_context(|| format!("starting {label}"))?
                    }
                };
                let f = all.entry(label.clone()).or_default();
                if i >= 2 {
                    for p in &procs {
                        f.attach_ms.push(p.attach.as_secs_f64() * 1e3);
                    }
                }
                thread::sleep(Duration::from_millis(200));
                let before = bpf_stats::snapshot();
                let udp = load::udp_flood(a, b, dur);
                let after = bpf_stats::snapshot();
                let foreign = if i >= 2 {
                    let before = bpf_stats::snapshot();
                    foreign_flood(a, Duration::from_secs(1))?;
                    Some(bpf_stats::delta(&before, &bpf_stats::snapshot()))
                } else {
                    None
                };
                let stopped = stop_all(procs)?;
                for s in &stopped {
                    f.lost_events += observer::lost_of(&s.stderr);
                }
                for e in fs::read_dir(&dir)?.flatten() {
                    if e.path().extension().is_some_and(|x| x == "pcap") {
                        let _ = fs::remove_file(e.path());
                    }
                }
                let udp = match udp {
                    Ok(u) => u,
                    Err(e) => {
                        progress(&format!("  UDP flood failed: {e:#}"));
                        continue;
                    }
                };
                for (name, (runs, ns)) in foreign.into_iter().flatten() {
                    if runs > 0 {
                        let e = f.foreign.entry(name).or_default();
                        e.push(ns as f64 / runs as f64);
                    }
                }
                let kpps = udp.rate() / 1e3;
                if i == 0 {
                    base = kpps;
                }
                f.kpps.push(kpps);
                f.loss.push(1.0 - kpps / base);
                for (name, (runs, ns)) in bpf_stats::delta(&before, &after) {
                    if runs == 0 {
                        continue;
                    }
                    let e = f.programs.entry(name).or_default();
                    e.0.push(ns as f64 / runs as f64);
                    e.1.push(runs as f64 / udp.received.max(1) as f64);
                }
            }
        }
        Ok(())
    });
    let _ = fs::remove_dir_all(&dir);
    outcome?;
    println!("{}", render(&labels, &all));
    Ok(())
}

fn render(labels: &[String], all: &BTreeMap<String, Figures>) -> String {
    let mut s = String::new();
    s.push_str("| configuration | pod kpps | loss vs no tracer | loss / tcpdump's | attach ms | events lost |\n");
    s.push_str("|---|---|---|---|---|---|\n");
    let td = all
        .get(&labels[1])
        .and_then(|f| f.loss.median())
        .unwrap_or(f64::NAN);
    for l in labels {
        let Some(f) = all.get(l) else { continue };
        let ratio = f.loss.median().map_or(f64::NAN, |m| m / td);
        s.push_str(&format!(
            "| {l} | {} | {} | {ratio:.2} | {} | {} |\n",
            f.kpps.show(1),
            Samples(f.loss.0.iter().map(|x| x * 100.0).collect()).show(1),
            f.attach_ms.show(0),
            f.lost_events,
        ));
    }
    let cols: Vec<&String> = labels[2..].iter().collect();
    s.push_str("\nns/run (runs/packet), medians over rounds (min–max of ns/run)\n\n");
    per_program(&mut s, all, &cols, |f, p| {
        f.programs.get(p).map(|(ns, rpp)| {
            let rpp = rpp.median().unwrap_or(f64::NAN);
            format!("{} ({rpp:.2})", ns.show(0))
        })
    });
    s.push_str(
        "\nForeign traffic only (pod a to node a's underlay address): ns/run, median (min–max)\n\n",
    );
    per_program(&mut s, all, &cols, |f, p| {
        f.foreign.get(p).map(|ns| ns.show(0))
    });
    s
}

/// A table with one row per program and one column per configuration;
/// `cell` gives a configuration's figure for a program, if it ran.
fn per_program(
    s: &mut String,
    all: &BTreeMap<String, Figures>,
    cols: &[&String],
    cell: impl Fn(&Figures, &String) -> Option<String>,
) {
    s.push_str("| program |");
    for c in cols {
        s.push_str(&format!(" {c} |"));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(cols.len()));
    s.push('\n');
    let progs: std::collections::BTreeSet<&String> = all
        .values()
        .flat_map(|f| f.programs.keys().chain(f.foreign.keys()))
        .collect();
    for p in progs {
        let cells: Vec<Option<String>> = cols
            .iter()
            .map(|c| all.get(*c).and_then(|f| cell(f, p)))
            .collect();
        if cells.iter().all(Option::is_none) {
            continue;
        }
        s.push_str(&format!("| {p} |"));
        for c in cells {
            s.push_str(&format!(" {} |", c.as_deref().unwrap_or("–")));
        }
        s.push('\n');
    }
}
