//! `cargo xtask bench`: figures, not pass/fail. In the lab: attach and
//! detach time, TCP throughput across the overlay without and with the
//! tracer, and the kernel's own per-invocation run time of each program
//! (`kernel.bpf_stats_enabled`, restored afterwards).

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use clap::Args;
use flannel_trace_tests::{Lab, Node, Tracer, require_root, require_tools, with_lab};

use crate::setup;

#[derive(Args)]
pub struct Options {
    /// Megabytes sent per throughput run.
    #[arg(long, default_value_t = 400)]
    mb: u64,
    /// Attach/detach cycles to time.
    #[arg(long, default_value_t = 5)]
    cycles: u32,
}

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Bulk TCP from A's pod address to B's, MB/s.
fn throughput(a: &Node, b: &Node, mb: u64) -> Result<f64> {
    let dst = SocketAddr::new(b.pod_ip().into(), 5201);
    let listener = b.in_thread(|| TcpListener::bind(dst))?;
    let sink = thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(n),
                k => n += k as u64,
            }
        }
    });
    let start = Instant::now();
    a.in_thread(|| {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(3))?;
        let chunk = vec![0x5au8; 1 << 16];
        for _ in 0..(mb * 16) {
            s.write_all(&chunk)?;
        }
        Ok(())
    })?;
    let got = sink
        .join()
        .map_err(|_| anyhow::anyhow!("sink panicked"))??;
    Ok(got as f64 / 1e6 / start.elapsed().as_secs_f64())
}

/// Average ns per run of each of our programs, from the kernel's stats.
fn program_costs() -> Vec<(String, u64, f64)> {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter_map(|p| {
            let name = p.name_as_str()?.to_owned();
            (name.starts_with("ft_") && p.run_count() > 0).then(|| {
                (
                    name,
                    p.run_count(),
                    p.run_time().as_nanos() as f64 / p.run_count() as f64,
                )
            })
        })
        .collect()
}

/// Userspace figures, from the benchmarks among the unit tests (ignored
/// in normal runs): the compact codec, the live channel, `join`.
fn userspace() -> Result<()> {
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "test",
            "--release",
            "-q",
            "-p",
            "flannel-trace",
            "--lib",
            "bench_",
            "--",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .current_dir(setup::workspace_root())
        .output()
        .context("running the userspace benchmarks")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines().filter(|l| {
        l.starts_with("codec:") || l.starts_with("live channel:") || l.starts_with("join:")
    }) {
        println!("{line}");
    }
    if !out.status.success() {
        anyhow::bail!(
            "userspace benchmarks failed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

pub fn run(opts: Options) -> Result<()> {
    setup::run()?;
    setup::build_release()?;
    userspace()?;
    require_root()?;
    require_tools()?;
    let before = fs::read_to_string(STATS).unwrap_or_else(|_| "0".into());
    let result = with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let mut attach = Vec::new();
        let mut detach = Vec::new();
        for _ in 0..opts.cycles {
            let t = Instant::now();
            let tracer = Tracer::start(a, &[])?;
            attach.push(t.elapsed());
            let t = Instant::now();
            tracer.stop()?;
            detach.push(t.elapsed());
        }
        let ms = |v: &[Duration]| {
            let mut v: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "attach (start to all hooks in place): median {:.0} ms over {} runs",
            ms(&attach),
            opts.cycles
        );
        println!(
            "detach (SIGINT to exit, summary printed): median {:.0} ms",
            ms(&detach)
        );

        // Best of three: the machine may be shared, and the best run is the
        // least disturbed one.
        let best = |a: &Node, b: &Node| -> Result<f64> {
            let mut v = Vec::new();
            for _ in 0..3 {
                v.push(throughput(a, b, opts.mb)?);
            }
            Ok(v.into_iter().fold(0.0, f64::max))
        };
        let base = best(a, b)?;
        println!(
            "TCP across the overlay, no tracer: {base:.0} MB/s (best of 3 × {} MB)",
            opts.mb
        );
        fs::write(STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
        let tracer = Tracer::start(a, &[])?;
        let traced = best(a, b)?;
        let costs = program_costs();
        let s = tracer.stop()?;
        let summary = s.summary.unwrap_or_default();
        println!(
            "TCP across the overlay, tracer on the sender: {traced:.0} MB/s ({:+.1} %), {} events, {} lost (ring buffer full)",
            (traced / base - 1.0) * 100.0,
            summary["events"],
            summary["lost"]
        );
        println!("kernel-measured cost per program run (bpf_stats):");
        for (name, runs, ns) in costs {
            println!("  {name:<16} {runs:>9} runs  {ns:>7.0} ns/run");
        }
        Ok(())
    });
    // Leave the machine as found.
    fs::write(STATS, before.trim()).context("restoring kernel.bpf_stats_enabled")?;
    result
}
