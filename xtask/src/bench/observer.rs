//! The observers under test, as processes in a node's namespace:
//! flannel-trace in its modes, and tcpdump on the same interfaces. Each is
//! started, waited for until it is really capturing, and stopped with
//! SIGINT; what it printed on stderr and its /proc figures are kept.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use flannel_trace_tests::{Netns, POD_IFACE, UNDERLAY_IFACE, VXLAN_IFACE};

use crate::setup;

/// Interfaces tcpdump captures on: the ones whose hops flannel-trace
/// reports (the overlay device, the underlay NIC, the pod bridge).
pub const TCPDUMP_IFACES: [&str; 3] = [VXLAN_IFACE, UNDERLAY_IFACE, POD_IFACE];
/// tcpdump's snap length: headers of both layers, as an SRE would set it.
const SNAPLEN: &str = "128";

/// One running observer process.
pub struct Proc {
    pub label: String,
    child: Child,
    stderr: PathBuf,
    /// Start to "capturing": flannel-trace's banner, tcpdump's "listening".
    pub attach: Duration,
}

/// What a stopped observer left.
pub struct Stopped {
    pub stderr: String,
    pub detach: Duration,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// utime + stime of `pid` in seconds, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    Some((utime + stime) / clock_ticks())
}

/// VmHWM of `pid` in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

impl Proc {
    /// `cmd` inside `ns` (`ip netns exec` execs in place, so the pid is the
    /// program's own), stdout to `stdout`, stderr to a file in `dir`; ready
    /// once stderr contains `ready`.
    pub fn start(
        label: &str,
        ns: &Netns,
        cmd: &[&str],
        stdout: &Path,
        dir: &Path,
        ready: &str,
    ) -> Result<Proc> {
        let stderr = dir.join(format!(
            "{}.{}.err",
            label.replace([' ', '/'], "_"),
            unique()
        ));
        let t = Instant::now();
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .args(cmd)
            // The recordings a live join always makes go with the run's
            // other files, removed at the end (not to /var/tmp).
            .env("FLANNEL_TRACE_RECORD_DIR", dir)
            .stdin(Stdio::null())
            .stdout(fs::File::create(stdout).context("stdout file")?)
            .stderr(fs::File::create(&stderr).context("stderr file")?)
            .spawn()
            .with_context(|| format!("starting {label}"))?;
        let mut p = Proc {
            label: label.to_owned(),
            child,
            stderr,
            attach: Duration::ZERO,
        };
        p.wait_ready(ready, t)?;
        Ok(p)
    }

    fn wait_ready(&mut self, ready: &str, t: Instant) -> Result<()> {
        let deadline = t + Duration::from_secs(90);
        loop {
            let text = fs::read_to_string(&self.stderr).unwrap_or_default();
            if text.contains(ready) {
                self.attach = t.elapsed();
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready:\n{text}",
                    self.label
                );
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{} not ready after 90 s:\n{text}", self.label);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until stderr contains `text` (e.g. "joined with").
    pub fn wait_for(&mut self, text: &str, patience: Duration) -> Result<()> {
        let t = Instant::now();
        while t.elapsed() < patience {
            if fs::read_to_string(&self.stderr)
                .unwrap_or_default()
                .contains(text)
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}) before printing {text:?}", self.label);
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!("{} did not print {text:?} within {patience:?}", self.label)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then wait for the exit (SIGKILL after 30 s).
    pub fn stop(mut self) -> Result<Stopped> {
        let pid = self.pid();
        let t = Instant::now();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        let deadline = t + Duration::from_secs(30);
        loop {
            if self.child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{} did not exit within 30 s of SIGINT", self.label);
            }
            thread::sleep(Duration::from_millis(2));
        }
        let detach = t.elapsed();
        let stderr = fs::read_to_string(&self.stderr).unwrap_or_default();
        let _ = fs::remove_file(&self.stderr);
        Ok(Stopped { stderr, detach })
    }

    /// Waits for a process that ends by itself (the listener after its
    /// peer said bye); SIGINT after `patience`.
    pub fn wait_or_stop(mut self, patience: Duration) -> Result<Stopped> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                let stderr = fs::read_to_string(&self.stderr).unwrap_or_default();
                let _ = fs::remove_file(&self.stderr);
                return Ok(Stopped {
                    stderr,
                    detach: Duration::ZERO,
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.stop()
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// flannel-trace on `ns` with `extra` options, text output to `stdout`.
pub fn flannel_trace(
    label: &str,
    ns: &Netns,
    extra: &[&str],
    stdout: &Path,
    dir: &Path,
) -> Result<Proc> {
    // `$FLANNEL_TRACE_BIN`, as for the tests: e.g. another build, for a
    // before/after figure of one phase (`bench --live-only`).
    let bin = std::env::var_os("FLANNEL_TRACE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(setup::release_binary);
    let bin = bin.to_string_lossy();
    let mut cmd = vec![bin.as_ref(), "--port", "8475"];
    cmd.extend_from_slice(extra);
    // The text banner ends with this line once every hook is attached.
    Proc::start(label, ns, &cmd, stdout, dir, "(Ctrl-C to stop)")
}

/// One tcpdump per interface of `ns` (tcpdump captures one interface at a
/// time; `-i any` would be a different capture), writing pcap files.
pub fn tcpdump(label: &str, ns: &Netns, dir: &Path) -> Result<Vec<Proc>> {
    TCPDUMP_IFACES
        .iter()
        .map(|iface| {
            let pcap = dir.join(format!("{}-{iface}.pcap", ns.name()));
            let pcap = pcap.to_string_lossy().into_owned();
            Proc::start(
                &format!("{label} {iface}"),
                ns,
                &["tcpdump", "-n", "-i", iface, "-s", SNAPLEN, "-w", &pcap],
                Path::new("/dev/null"),
                dir,
                "listening on",
            )
        })
        .collect()
}

/// "N events in Xs" from flannel-trace's text summary.
pub fn events_of(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_suffix('s')?.split_once(" events in "))
        .and_then(|(n, _)| n.trim().parse().ok())
}

/// "the tracer itself lost N events" from the text summary; 0 without it.
pub fn lost_of(stderr: &str) -> u64 {
    number_before(stderr, "lost ", " events").unwrap_or(0)
}

/// "… ended thinned to 1 in N (M events left out of it by hash …" from a
/// --peer's stderr: (N, M), or (1, 0) when it never thinned.
pub fn thinned_of(stderr: &str) -> (u64, u64) {
    stderr
        .lines()
        .find_map(|l| {
            let rest = l.split_once("ended thinned to 1 in ")?.1;
            let (n, rest) = rest.split_once(" (")?;
            let m = rest.split_once(' ')?.0;
            Some((n.parse().ok()?, m.parse().ok()?))
        })
        .unwrap_or((1, 0))
}

/// "N events could not be sent to the listener" from a --peer's stderr.
pub fn unsent_of(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            let (head, _) = l.split_once(" events could not be sent")?;
            head.rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// tcpdump's "N packets dropped by kernel".
pub fn tcpdump_dropped(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            l.strip_suffix(" packets dropped by kernel")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn number_before(text: &str, before: &str, after: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let i = l.find(before)? + before.len();
        let rest = &l[i..];
        rest[..rest.find(after)?].trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tools_own_summaries() {
        let ft = "\n1234 events in 3.2s\n  underlay-ingress  10\nWARNING: the tracer itself lost 37 events (ring buffer full; ...)\n";
        assert_eq!(events_of(ft), Some(1234));
        assert_eq!(lost_of(ft), 37);
        assert_eq!(lost_of("0 events in 1.0s"), 0);
        let peer = "flannel-trace: 319455 events could not be sent to the listener in time\n";
        assert_eq!(unsent_of(peer), 319_455);
        let thin = "flannel-trace: the live stream ended thinned to 1 in 4 (325300 events left out of it by hash; the recording has them all)\n";
        assert_eq!(thinned_of(thin), (4, 325_300));
        assert_eq!(thinned_of(peer), (1, 0));
        let td =
            "10 packets captured\n12 packets received by filter\n2 packets dropped by kernel\n";
        assert_eq!(tcpdump_dropped(td), 2);
    }
}
