//! Kills at the worst moment leave nothing behind: SIGKILL at random
//! moments during attach, tracing and detach, in each TC mode the kernel
//! offers, then the next run (which sweeps what a killed run left) and, at
//! the end, `flannel-trace cleanup`: no `ft_*` filter of a dead tracer, no
//! clsact qdisc the tool made, no `ft_*` program.
//!
//! `FT_KILL_ITERATIONS` (default 30) sets the iterations per TC mode.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Result, ensure};
use flannel_trace_tests::{
    Kernel, VXLAN_IFACE,
    leftovers::{ft_filters, has_clsact, orphan_ft_programs},
    preflight,
    scenario::{Fault, Proc},
    serial, skip_check, with_lab,
};

const IFACES: [&str; 2] = ["eth1", VXLAN_IFACE];

/// xorshift64*: enough randomness for kill timings, seeded per run (the
/// seed is printed, so a failing sequence can be replayed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn kill(p: Proc) -> Result<()> {
    p.signal(libc::SIGKILL);
    p.wait(Duration::from_secs(20))?;
    Ok(())
}

#[test]
fn sigkill_at_random_moments_leaves_nothing_after_the_next_run() -> Result<()> {
    preflight()?;
    let _g = serial();
    let since = SystemTime::now();
    let iterations: u32 = std::env::var("FT_KILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed = std::env::var("FT_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    eprintln!("kill loop: {iterations} iterations per TC mode, FT_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let mut modes = vec!["netlink"];
    if Kernel::running().has_tcx() {
        modes.push("tcx");
    } else {
        skip_check("the kernel has no TCX: only the netlink TC mode is killed");
    }
    with_lab(Fault::None.lab(), |lab| {
        let a = lab.node('a');
        for mode in &modes {
            let args = [
                "--tc-mode",
                mode,
                "--no-drops",
                "--vxlan-rcv-backend",
                "tp-btf",
            ];
            // How long attaching takes here, to aim kills inside it.
            let started = Instant::now();
            let mut p = Proc::spawn(a, &args)?;
            p.wait_stderr("(Ctrl-C to stop)", Duration::from_secs(60))?;
            let attach_ms = started.elapsed().as_millis() as u64;
            p.signal(libc::SIGTERM);
            let r = p.wait(Duration::from_secs(20))?;
            ensure!(r.status.success(), "{}", r.stderr);
            let (mut during_attach, mut swept) = (0, 0);
            for i in 0..iterations {
                let mut p = Proc::spawn(a, &args)?;
                let pid = p.pid() as u32;
                match i % 3 {
                    // During attach (including before any hook, and after all).
                    0 => {
                        thread::sleep(Duration::from_millis(rng.below(attach_ms + 50)));
                        during_attach += 1;
                        kill(p)?;
                        continue;
                    }
                    // While tracing, or during detach (SIGTERM, then SIGKILL
                    // a few milliseconds into it).
                    phase => {
                        p.wait_stderr("(Ctrl-C to stop)", Duration::from_secs(60))?;
                        let stderr = p.stderr();
                        swept += usize::from(stderr.contains("removed a leftover of a killed run"));
                        // The previous, killed run's filters are gone once
                        // this one is attached: only this tracer's are left.
                        let foreign: Vec<_> = ft_filters(a, &IFACES)?
                            .into_iter()
                            .filter(|f| f.handle != pid)
                            .collect();
                        ensure!(
                            foreign.is_empty(),
                            "{mode} iteration {i}: filters of dead tracers after the next run attached: {foreign:?}\n{stderr}"
                        );
                        if phase == 1 {
                            thread::sleep(Duration::from_millis(rng.below(200)));
                        } else {
                            p.signal(libc::SIGTERM);
                            thread::sleep(Duration::from_millis(rng.below(60)));
                        }
                        kill(p)?;
                    }
                }
            }
            eprintln!(
                "{mode}: {iterations} kills ({during_attach} during attach), {swept} runs reported removing leftovers"
            );
            if *mode == "netlink" {
                ensure!(
                    swept > 0,
                    "netlink: killed tracers leave filters, so some run must have said it removed them"
                );
            }
        }
        // The last kill's leftovers: removed on demand.
        let out = Command::new("ip")
            .args(["netns", "exec", a.name()])
            .arg(flannel_trace_tests::tracer_bin())
            .arg("cleanup")
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "cleanup failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            stdout.contains("flannel-trace cleanup:"),
            "cleanup says what it did: {stdout}"
        );
        let filters = ft_filters(a, &IFACES)?;
        ensure!(
            filters.is_empty(),
            "ft_ filters left: {filters:?}\ncleanup said: {stdout}"
        );
        for iface in IFACES {
            ensure!(
                !has_clsact(a, iface)?,
                "a clsact qdisc was left on {iface}\ncleanup said: {stdout}"
            );
        }
        let progs = orphan_ft_programs(since);
        ensure!(
            progs.is_empty(),
            "ft_ programs loaded by no process: {progs:?}"
        );
        // And a second cleanup finds nothing.
        let again = Command::new("ip")
            .args(["netns", "exec", a.name()])
            .arg(flannel_trace_tests::tracer_bin())
            .arg("cleanup")
            .output()?;
        let again = String::from_utf8_lossy(&again.stdout);
        ensure!(again.contains("nothing left"), "{again}");
        Ok(())
    })
}

/// Two netlink tracers at once on the same devices, both ending normally:
/// whichever exits last removes the clsact qdisc the first one created.
#[test]
fn the_last_of_two_concurrent_netlink_tracers_removes_the_clsact() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Fault::None.lab(), |lab| {
        let a = lab.node('a');
        let args = ["--tc-mode", "netlink", "--no-drops"];
        for first_out in [0usize, 1] {
            let mut p1 = Proc::spawn(a, &args)?;
            p1.wait_stderr("(Ctrl-C to stop)", Duration::from_secs(60))?;
            let mut p2 = Proc::spawn(a, &args)?;
            p2.wait_stderr("(Ctrl-C to stop)", Duration::from_secs(60))?;
            ensure!(
                ft_filters(a, &IFACES)?.len() == 8,
                "{:?}",
                ft_filters(a, &IFACES)?
            );
            let mut ps = vec![p1, p2];
            let first = ps.remove(first_out);
            first.signal(libc::SIGTERM);
            let r = first.wait(Duration::from_secs(20))?;
            ensure!(r.status.success(), "{}", r.stderr);
            for iface in IFACES {
                ensure!(
                    has_clsact(a, iface)?,
                    "the other tracer still uses the clsact on {iface}"
                );
            }
            let second = ps.remove(0);
            second.signal(libc::SIGTERM);
            let r = second.wait(Duration::from_secs(20))?;
            ensure!(r.status.success(), "{}", r.stderr);
            for iface in IFACES {
                ensure!(
                    !has_clsact(a, iface)?,
                    "the last tracer out must remove the clsact on {iface}"
                );
            }
            ensure!(ft_filters(a, &IFACES)?.is_empty());
        }
        Ok(())
    })
}
