//! `cargo xtask bench`: figures, not pass/fail. On the lab (two flannel
//! nodes, a pod behind cni0 on each, traffic pod → pod through flannel.1):
//! no tracer, flannel-trace in its modes and tcpdump side by side under
//! three loads, then the kernel's per-program cost (bpf_stats), attach and
//! detach, the tracer's userspace cost, recordings, the live channel and
//! `join`. Prints Markdown tables and writes them to BENCHMARKS.md.

pub mod ab;
mod bpf_stats;
mod configs;
mod decode;
mod figures;
mod load;
mod observer;
mod phases;
mod recordings;
mod report;
mod rounds;
mod table;
mod unit_benches;

use std::{
    fs,
    path::PathBuf,
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use flannel_trace_tests::{Lab, require_root, require_tools, with_lab};

use crate::setup;

#[derive(Args)]
pub struct Options {
    /// About 3 minutes instead of about 10: the same 5 rounds with shorter
    /// loads, and `join` on 300 k-event recordings instead of 1 M and 10 M.
    #[arg(long)]
    quick: bool,
    /// Rounds of the side-by-side comparison (default 5).
    #[arg(long)]
    rounds: Option<u32>,
    /// Only the `join` figures on synthesised recordings (no lab, no root):
    /// the streamed join's events/s and peak RSS, printed and written to
    /// --out (default target/BENCHMARKS-join.md).
    #[arg(long)]
    join_only: bool,
    /// Only the live-channel phase (`--listen a`, `--peer b` under the UDP
    /// flood), printed; the binary is `$FLANNEL_TRACE_BIN` when set, for a
    /// before/after figure.
    #[arg(long)]
    live_only: bool,
    /// Where the Markdown report goes (default BENCHMARKS.md at the
    /// workspace root; target/BENCHMARKS-quick.md with --quick).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Durations and sizes of one run.
pub struct Plan {
    pub quick: bool,
    pub rounds: u32,
    pub cycles: u32,
    pub udp: Duration,
    pub tcp: Duration,
    pub rr: Duration,
    /// UDP flood of the bpf_stats, recording and live phases.
    pub cost: Duration,
    /// Events per file of the synthesised `join` inputs.
    pub join_sizes: Vec<u64>,
    /// Address-space cap of `join`: the machine is shared.
    pub join_cap: u64,
    pub join_limit: Duration,
}

impl Plan {
    fn new(o: &Options) -> Plan {
        let s = Duration::from_secs_f64;
        if o.quick {
            Plan {
                quick: true,
                rounds: o.rounds.unwrap_or(5),
                cycles: 3,
                udp: s(0.7),
                tcp: s(0.7),
                rr: s(0.4),
                cost: s(2.0),
                join_sizes: vec![300_000],
                join_cap: 6 << 30,
                join_limit: s(60.0),
            }
        } else {
            Plan {
                quick: false,
                rounds: o.rounds.unwrap_or(5),
                cycles: 5,
                udp: s(3.0),
                tcp: s(2.0),
                rr: s(1.5),
                cost: s(4.0),
                join_sizes: vec![1_000_000, 10_000_000],
                join_cap: 6 << 30,
                join_limit: s(150.0),
            }
        }
    }
}

static STARTED: OnceLock<Instant> = OnceLock::new();

/// One line per step on stderr, with the time since the start.
pub fn progress(what: &str) {
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs();
    eprintln!("[bench {:02}:{:02}] {what}", t / 60, t % 60);
}

fn help_text() -> Result<String> {
    let out = Command::new(setup::release_binary())
        .arg("--help")
        .output()
        .context("running flannel-trace --help")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `--join-only`: the userspace `join` figures alone.
fn join_only(opts: &Options, plan: &Plan) -> Result<()> {
    progress("release build");
    setup::build_release()?;
    let dir = setup::workspace_root().join("target/bench-join-tmp");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let joins = phases::joins(None, plan, &dir);
    let _ = fs::remove_dir_all(&dir);
    let text = format!("## join\n\n{}", report::join_table(plan, &joins?));
    println!("{text}");
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| setup::workspace_root().join("target/BENCHMARKS-join.md"));
    fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    progress(&format!("wrote {}", out.display()));
    Ok(())
}

/// `--live-only`: the live channel's figure alone.
fn live_only(plan: &Plan) -> Result<()> {
    progress("release build");
    setup::build_release()?;
    require_root()?;
    require_tools()?;
    let dir = setup::workspace_root().join("target/bench-live-tmp");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let mut live = None;
    let outcome = with_lab(Lab::builder().nodes(2), |lab| {
        live = Some(phases::live(lab, plan, &dir)?);
        Ok(())
    });
    let _ = fs::remove_dir_all(&dir);
    outcome?;
    let l = live.expect("set by the lab body");
    println!(
        "live channel (--peer b → --listen a): sustained events/s: {}",
        report::live_row(&l)
    );
    println!("listener's verdict: {}", l.listener_note);
    Ok(())
}

pub fn run(opts: Options) -> Result<()> {
    if opts.join_only {
        return join_only(&opts, &Plan::new(&opts));
    }
    if opts.live_only {
        return live_only(&Plan::new(&opts));
    }
    progress("set-up and release build");
    setup::run()?;
    setup::build_release()?;
    require_root()?;
    require_tools()?;
    if !have("tcpdump") {
        bail!("tcpdump is missing: `cargo xtask setup` installs it");
    }
    let plan = Plan::new(&opts);
    let modes = configs::Modes::probe(&help_text()?);
    let dir = setup::workspace_root().join("target/bench-tmp");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let began = Instant::now();
    progress("userspace decode micro-benchmark (cargo bench, divan)");
    let decoding = decode::run().map_err(|e| format!("{e:#}"));
    progress("codec, live channel and join micro-benchmarks (unit-test benches)");
    if let Err(e) = unit_benches::run() {
        eprintln!("bench: {e:#}");
    }
    let mut results = None;
    let outcome = with_lab(Lab::builder().nodes(2), |lab| {
        let attach = phases::attach_detach(lab, &plan, &dir)?;
        let side = rounds::run(lab, &plan, modes, &dir)?;
        let tracers: Vec<_> = configs::ALL
            .into_iter()
            .filter(|c| c.is_tracer() && c.available(modes))
            .collect();
        let costs = phases::costs(lab, &plan, &tracers, &dir)?;
        let rec = phases::record(lab, &plan, &dir)?;
        let live = phases::live(lab, &plan, &dir)?;
        results = Some((attach, side, costs, rec, live));
        Ok(())
    });
    let joined = match (&outcome, &results) {
        (Ok(()), Some((_, _, _, rec, _))) => Some(phases::joins(Some(rec), &plan, &dir)),
        _ => None,
    };
    let _ = fs::remove_dir_all(&dir);
    outcome?;
    let (attach, side, costs, rec, live) = results.expect("set by the lab body");
    let joins = joined.expect("ran after the lab")?;
    let text = report::render(&report::Inputs {
        plan: &plan,
        modes,
        attach: &attach,
        side: &side,
        costs: &costs,
        rec: &rec,
        live: &live,
        joins: &joins,
        decoding: &decoding,
        wall: began.elapsed(),
    });
    println!("{text}");
    let out = opts.out.unwrap_or_else(|| {
        setup::workspace_root().join(if plan.quick {
            "target/BENCHMARKS-quick.md"
        } else {
            "BENCHMARKS.md"
        })
    });
    fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    progress(&format!("wrote {}", out.display()));
    Ok(())
}
