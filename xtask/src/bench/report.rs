//! The printed tables and BENCHMARKS.md: one text for both.

use std::{collections::HashMap, fmt::Write as _, process::Command, time::Duration};

use super::{
    Plan,
    configs::{self, Config, Modes},
    decode::Rate,
    figures::change,
    load::UDP_PAYLOAD,
    observer::TCPDUMP_IFACES,
    phases::{AttachDetach, Cost, JoinRun, Live, Recorded},
    rounds::Figures,
    table::Table,
};
use crate::setup;

pub struct Inputs<'a> {
    pub plan: &'a Plan,
    pub modes: Modes,
    pub attach: &'a AttachDetach,
    pub side: &'a HashMap<Config, Figures>,
    pub costs: &'a [Cost],
    pub rec: &'a Recorded,
    pub live: &'a Live,
    pub joins: &'a [JoinRun],
    pub decoding: &'a Result<Vec<Rate>, String>,
    pub wall: Duration,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .current_dir(setup::workspace_root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn unavailable() -> Vec<String> {
    vec!["not available in this build".into()]
}

pub fn render(i: &Inputs) -> String {
    let mut s = String::new();
    let commit = sh("git", &["rev-parse", "--short=12", "HEAD"]);
    let dirty = if sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " plus uncommitted changes"
    };
    let _ = writeln!(s, "# flannel-trace benchmarks\n");
    let _ = writeln!(
        s,
        "`cargo xtask bench{}`: commit {commit}{dirty}, {}, kernel {}, {} cores; {} rounds, {:.0} s in all.\n",
        if i.plan.quick { " --quick" } else { "" },
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        sh("uname", &["-r"]),
        sh("nproc", &[]),
        i.plan.rounds,
        i.wall.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "Other engineers were compiling on the same 2 cores during the run, so throughput moves ±30 % between runs: \
         compare configurations only within this run, by their ratio to this run's no-tracer baseline. \
         Figures are medians with (min–max) over the rounds; configurations ran interleaved (A B C … A B C …).\n"
    );
    let _ = writeln!(
        s,
        "Lab: two flannel-style nodes (network namespaces), a pod behind cni0 on each, traffic from node a's pod to node b's pod \
         through flannel.1 and the underlay veth eth1. flannel-trace runs with `--port 8475`, text output to /dev/null. \
         tcpdump runs as `tcpdump -n -i IFACE -s 128 -w FILE`, one process per interface ({}), pcap files on disk. \
         \"Receiver\" is node b; \"both\" is node a and node b.\n",
        TCPDUMP_IFACES.join(", ")
    );
    let _ = writeln!(
        s,
        "Loads (generators of the bench's own): {UDP_PAYLOAD}-byte UDP payloads sent as fast as one thread can, \
         packets/s counted where the receiving pod reads them ({:.1} s per round); TCP bulk, MB/s received ({:.1} s); \
         TCP request/response with 64-byte messages and Nagle off, round-trip percentiles ({:.1} s).\n",
        i.plan.udp.as_secs_f64(),
        i.plan.tcp.as_secs_f64(),
        i.plan.rr.as_secs_f64()
    );

    let _ = writeln!(s, "## Side by side\n");
    let base = i.side.get(&Config::NoTracer);
    let base_udp = base.and_then(|f| f.udp_kpps.median());
    let base_tcp = base.and_then(|f| f.tcp_mbs.median());
    let mut t = Table::new(&[
        "configuration",
        "UDP 64 B, kpps",
        "vs none",
        "TCP bulk, MB/s",
        "vs none",
        "RR p50, µs",
        "RR p99, µs",
        "attach, ms",
        "events / lost",
    ]);
    for c in configs::ALL {
        let Some(f) = i.side.get(&c) else {
            let mut row = vec![c.label().to_owned()];
            row.extend(unavailable());
            t.row(row);
            continue;
        };
        let mut loss = if c.is_tracer() {
            format!("{} / {} lost", f.events, f.lost)
        } else if c == Config::NoTracer {
            "–".into()
        } else {
            format!("{} dropped by kernel", f.lost)
        };
        if f.failures > 0 {
            loss.push_str(&format!(" ({} loads failed)", f.failures));
        }
        t.row(vec![
            c.label().into(),
            f.udp_kpps.show(1),
            change(f.udp_kpps.median(), base_udp),
            f.tcp_mbs.show(0),
            change(f.tcp_mbs.median(), base_tcp),
            f.p50_us.show(0),
            f.p99_us.show(0),
            f.attach_ms.show(0),
            loss,
        ]);
    }
    s.push_str(&t.render());
    let loss = |c: Config| {
        let v = i.side.get(&c)?.udp_kpps.median()?;
        Some(1.0 - v / base_udp?)
    };
    if let (Some(ft), Some(td)) = (loss(Config::FtReceiver), loss(Config::TcpdumpReceiver)) {
        let ratio = if td > 0.0 {
            format!("flannel-trace costs {:.2}× what tcpdump costs", ft / td)
        } else {
            "tcpdump's loss is within this run's noise, so no ratio can be given".into()
        };
        let _ = writeln!(
            s,
            "\nUDP packets/s lost to the observer on the receiver: flannel-trace {:.1} %, tcpdump {:.1} %: {ratio} (issue 8's target: ≤ 0.33×).",
            ft * 100.0,
            td * 100.0,
        );
    }
    if !i.modes.stats || !i.modes.sample {
        let _ = writeln!(
            s,
            "\n`--stats` / `--sample`: run only when `flannel-trace --help` lists them; \"not available in this build\" otherwise."
        );
    }

    let _ = writeln!(
        s,
        "\n## Kernel cost per program (bpf_stats, UDP flood of {:.0} s)\n",
        i.plan.cost.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "`kernel.bpf_stats_enabled` on for this phase only (restored afterwards). Runs per packet are per UDP packet sent by node a's pod; \
         programs of both nodes' tracers are summed by name (the global hooks of each tracer see every namespace).\n"
    );
    let mut t = Table::new(&["configuration", "program", "runs", "runs/packet", "ns/run"]);
    for c in i.costs {
        for (name, (runs, ns)) in &c.programs {
            if *runs == 0 {
                continue;
            }
            t.row(vec![
                c.config.label().into(),
                name.clone(),
                runs.to_string(),
                format!("{:.2}", *runs as f64 / c.sent.max(1) as f64),
                format!("{:.0}", *ns as f64 / *runs as f64),
            ]);
        }
    }
    s.push_str(&t.render());

    let _ = writeln!(s, "\n## Userspace cost of node b's tracer (same phase)\n");
    let mut t = Table::new(&[
        "configuration",
        "pkts sent / received",
        "events",
        "lost",
        "events/s",
        "CPU s per M events",
        "peak RSS (VmHWM), MiB",
    ]);
    for c in i.costs {
        let per_m = if c.events > 0 {
            format!("{:.2}", c.cpu_s / (c.events as f64 / 1e6))
        } else {
            "–".into()
        };
        t.row(vec![
            c.config.label().into(),
            format!("{} / {}", c.sent, c.received),
            c.events.to_string(),
            c.lost.to_string(),
            format!("{:.0}", c.events as f64 / c.secs),
            per_m,
            format!("{:.1}", c.hwm_kib as f64 / 1024.0),
        ]);
    }
    s.push_str(&t.render());
    let _ = writeln!(
        s,
        "\nCPU is utime + stime from /proc/<pid>/stat over the flood; events are the tracer's own summary count."
    );

    let _ = writeln!(
        s,
        "\n## Userspace decoding (micro-benchmark, one core)\n\n\
         `cargo bench -p flannel-trace --bench decode`: a batch of 1024 ring-buffer records \
         (encapsulated UDP at the NIC and after decapsulation, inner TCP, a drop) decoded into events, \
         counted into the summary and written as text or JSON lines into a 64 KiB buffered sink, \
         as the session does. The fastest sample is the least disturbed by the other engineers' builds.\n"
    );
    match i.decoding {
        Ok(rates) => {
            let mut t = Table::new(&["benchmark", "events/s, fastest sample", "events/s, median"]);
            for r in rates {
                t.row(vec![
                    r.name.clone(),
                    format!("{:.2} M", r.fastest / 1e6),
                    format!("{:.2} M", r.median / 1e6),
                ]);
            }
            s.push_str(&t.render());
        }
        Err(e) => {
            let _ = writeln!(s, "not measured: {e}");
        }
    }

    let _ = writeln!(
        s,
        "\n## Attach and detach (node b, {} cycles)\n",
        i.plan.cycles
    );
    let mut t = Table::new(&["", "median (min–max), ms"]);
    t.row(vec![
        "attach: start to every hook in place (banner printed)".into(),
        i.attach.attach_ms.show(0),
    ]);
    t.row(vec![
        "detach: SIGINT to exit (summary printed)".into(),
        i.attach.detach_ms.show(0),
    ]);
    s.push_str(&t.render());

    let _ = writeln!(s, "\n## Recordings, live channel, join\n");
    let mut t = Table::new(&["figure", "value"]);
    for (n, node) in ["a", "b"].iter().enumerate() {
        let (e, b) = (i.rec.events[n], i.rec.bytes[n]);
        t.row(vec![
            format!("recording on node {node}: bytes per event"),
            if e > 0 {
                format!("{:.0} ({e} events, {b} bytes)", b as f64 / e as f64)
            } else {
                "–".into()
            },
        ]);
    }
    let l = i.live;
    t.row(vec![
        "live channel (--peer b → --listen a): sustained events/s".into(),
        live_row(l),
    ]);
    if !l.listener_note.is_empty() {
        t.row(vec![
            "listener's verdict".into(),
            l.listener_note.replace('|', "/"),
        ]);
    }
    s.push_str(&t.render());
    let _ = writeln!(s);
    s.push_str(&join_table(i.plan, i.joins));
    s
}

/// The live channel's figure: events sent a second, and what was thinned
/// out by hash or not sent at all.
pub fn live_row(l: &crate::bench::phases::Live) -> String {
    let delivered = l.events.saturating_sub(l.unsent + l.thinned);
    format!(
        "{:.0} ({} of {} events sent; {} thinned out by hash, 1 in {} at the end; {} not sent in time)",
        delivered as f64 / l.secs,
        delivered,
        l.events,
        l.thinned,
        l.rate,
        l.unsent
    )
}

/// The `join` figures (also the whole report of `bench --join-only`).
pub fn join_table(plan: &Plan, joins: &[JoinRun]) -> String {
    let mut s = String::new();
    let mut t = Table::new(&[
        "join input",
        "events (a + b)",
        "size, MB (both)",
        "wall, s",
        "events/s",
        "peak RSS, MiB",
        "result",
    ]);
    for j in joins {
        let total = j.events[0] + j.events[1];
        t.row(vec![
            if j.synthetic {
                "synthesised pair".into()
            } else {
                "real pair (above)".into()
            },
            format!("{} + {}", j.events[0], j.events[1]),
            format!("{:.0}", j.bytes as f64 / 1e6),
            format!("{:.1}", j.join.secs),
            if j.join.ok {
                format!("{:.0}", total as f64 / j.join.secs)
            } else {
                "–".into()
            },
            format!("{:.0}", j.join.hwm_kib as f64 / 1024.0),
            if j.join.ok {
                "ok".into()
            } else {
                j.join.note.replace('|', "/")
            },
        ]);
    }
    s.push_str(&t.render());
    let _ = writeln!(
        s,
        "\nThe synthesised pairs are a ping flood between the two nodes (20 k packets/s, 2 events per packet on a, \
         3 on b, every packet delivered), written by flannel-trace's own recording writer. `join` streams both files \
         through its default 5 s window; it runs under a {} GiB address-space cap and a {} s limit, since the machine \
         is shared; events/s counts the events of both files, peak RSS is the child's VmHWM.",
        plan.join_cap >> 30,
        plan.join_limit.as_secs()
    );
    s
}
