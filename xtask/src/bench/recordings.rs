//! Recordings for the `join` figures. Real recordings of a lab load hold a
//! few hundred thousand events at most in the time a bench has, so the
//! ≥ 10 M-event pair is synthesised: a ping flood between two nodes written
//! by flannel-trace's own recording writer (an ignored unit test,
//! `verdict::offline::tests::write_join_inputs_for_the_bench`), so the inputs are always in the
//! current recording format. `join` itself runs as the release binary.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::observer::peak_rss_kib;
use crate::setup;

/// Writes `dir/syn-a.rec` (≥ `per_file` events) and `dir/syn-b.rec` (half
/// as many again); returns their paths and event counts.
pub fn synthesise(dir: &Path, per_file: u64) -> Result<([PathBuf; 2], [u64; 2])> {
    let out = super::unit_benches::ignored_lib_tests(
        "verdict::offline::tests::write_join_inputs_for_the_bench",
        &["--exact"],
    )
    .env("FT_BENCH_JOIN_DIR", dir)
    .env("FT_BENCH_JOIN_EVENTS", per_file.to_string())
    .output()
    .context("running the join input writer")?;
    if !out.status.success() {
        bail!(
            "writing the join inputs failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // 2 of a packet's 5 events are on a, 3 on b (see the writer).
    let packets = per_file * 5 / 2 / 5;
    Ok((
        [dir.join("syn-a.rec"), dir.join("syn-b.rec")],
        [packets * 2, packets * 3],
    ))
}

pub struct Join {
    pub ok: bool,
    pub secs: f64,
    pub hwm_kib: u64,
    pub note: String,
}

/// `flannel-trace join a b --json` under an address-space cap (the machine
/// is shared: an unbounded join must not push others into the OOM killer)
/// and a time limit; peak RSS polled from /proc.
pub fn join(a: &Path, b: &Path, cap_bytes: u64, limit: Duration) -> Result<Join> {
    let t = Instant::now();
    let mut cmd = Command::new(setup::release_binary());
    cmd.arg("join")
        .arg(a)
        .arg(b)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: cap_bytes,
                rlim_max: cap_bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting flannel-trace join")?;
    let mut hwm = 0;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        hwm = peak_rss_kib(child.id()).unwrap_or(hwm).max(hwm);
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let secs = t.elapsed().as_secs_f64();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut err);
    }
    let (ok, note) = match status {
        Some(s) if s.success() => (true, String::new()),
        Some(s) => {
            // The allocator's own message names the failed allocation;
            // the backtrace hint after it says nothing.
            let why = err
                .lines()
                .find(|l| l.contains("memory allocation") || l.contains("error"))
                .or_else(|| err.lines().rfind(|l| !l.trim_start().starts_with("note:")))
                .unwrap_or("")
                .trim();
            (
                false,
                format!(
                    "failed after {secs:.0} s ({s}) under the {} GiB cap: {why}",
                    cap_bytes >> 30
                ),
            )
        }
        None => (
            false,
            format!("killed after the {} s limit", limit.as_secs()),
        ),
    };
    Ok(Join {
        ok,
        secs,
        hwm_kib: hwm,
        note,
    })
}
