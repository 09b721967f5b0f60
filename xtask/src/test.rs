//! `cargo xtask test`: unit tests (no root), then the netns integration
//! tests against the real kernel (root).

use std::{
    env,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::setup;

#[derive(Args)]
pub struct Options {
    /// Run only the unit tests (no root needed).
    #[arg(long)]
    unit_only: bool,
    /// Arguments passed to the integration test binaries (e.g. a name filter).
    #[arg(last = true)]
    args: Vec<String>,
}

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(setup::workspace_root());
    c
}

/// Totals over every `test result:` line cargo printed.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    /// Tests not run, with cargo's reason: the host lacks what they need
    /// (e.g. 802.1Q, a lockdown kernel; the kernel matrix runs those) or
    /// they are benchmarks. Listed at the end so a skip is never silent.
    ignored: Vec<String>,
    /// Tests that ran but found at run time that the host lacks what they
    /// need, and said so (`SKIP_LOG`): counted here, not as passed.
    skipped: Vec<String>,
    /// Single checks of tests that passed, left out for the same reason.
    checks_skipped: Vec<String>,
    /// Lines of the skip log already counted.
    skip_lines: usize,
}

/// The file the tests append their run-time skips to, one
/// `test|check<TAB>name<TAB>reason` line each (tests/src/skip.rs,
/// flannel-trace/src/testing.rs).
const SKIP_LOG: &str = "FLANNEL_TRACE_SKIP_LOG";

impl Tally {
    fn print(&self, failed: u64) {
        println!(
            "{} passed, {failed} failed, {} ignored, {} skipped",
            self.passed,
            self.ignored.len(),
            self.skipped.len()
        );
        for t in &self.ignored {
            println!("  ignored: {t}");
        }
        for t in &self.skipped {
            println!("  skipped: {t}");
        }
        for t in &self.checks_skipped {
            println!("  check skipped: {t}");
        }
    }

    /// Counts the skips logged since the last call: a skipped test had
    /// been counted as passed by cargo.
    fn read_skips(&mut self, log: &std::path::Path) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let new: Vec<&str> = text.lines().skip(self.skip_lines).collect();
        self.skip_lines += new.len();
        for line in new {
            let mut parts = line.splitn(3, '\t');
            let (kind, name, why) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let entry = format!("{name} ({why})");
            if kind == "check" {
                self.checks_skipped.push(entry);
            } else {
                self.passed = self.passed.saturating_sub(1);
                self.skipped.push(entry);
            }
        }
    }
}

/// Run a cargo test command, echoing its output and adding up its results.
fn status(mut c: Command, what: &str, tally: &mut Tally) -> anyhow::Result<()> {
    let log = skip_log();
    c.env(SKIP_LOG, &log);
    c.stdout(Stdio::piped());
    let mut child = c.spawn().with_context(|| format!("starting {what}"))?;
    let out = child.stdout.take().context("stdout")?;
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(t) = line.strip_prefix("test ")
            && let Some((name, why)) = t.split_once(" ... ignored")
        {
            let why = why.trim_start_matches(", ");
            tally.ignored.push(if why.is_empty() {
                name.to_owned()
            } else {
                format!("{name} ({why})")
            });
        }
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |key: &str| {
                rest.split(';')
                    .find_map(|p| {
                        p.trim().strip_suffix(key).map(|n| {
                            n.trim()
                                .rsplit(' ')
                                .next()
                                .unwrap_or("0")
                                .parse()
                                .unwrap_or(0)
                        })
                    })
                    .unwrap_or(0)
            };
            tally.passed += num(" passed");
            tally.failed += num(" failed");
        }
    }
    let s = child.wait()?;
    tally.read_skips(&log);
    if !s.success() {
        tally.print(tally.failed.max(1));
        bail!("{what} failed ({s})");
    }
    Ok(())
}

/// This run's skip log: one per xtask process, removed when it starts.
fn skip_log() -> std::path::PathBuf {
    env::temp_dir().join(format!("flannel-trace-skips-{}.log", std::process::id()))
}

/// Unit tests that need root (they build network namespaces): ignored by
/// the unit stage, run in the root stage.
const ROOT_UNIT_TESTS: &str = "net::netns_tests::";

/// `cargo test` of the unit tests: every crate but the integration tests and
/// the eBPF programs.
fn unit_tests() -> Command {
    let mut unit = cargo();
    unit.args([
        "test",
        "--workspace",
        "--exclude",
        "flannel-trace-tests",
        "--exclude",
        "flannel-trace-ebpf",
    ]);
    unit
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::run()?;
    setup::build_release()?;
    let _ = std::fs::remove_file(skip_log());
    let mut tally = Tally::default();
    status(unit_tests(), "unit tests", &mut tally)?;
    if opts.unit_only {
        tally.print(tally.failed);
        let _ = std::fs::remove_file(skip_log());
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!(
            "the integration tests create network namespaces and load eBPF programs: run `sudo -E cargo xtask test` (or --unit-only)"
        );
    }
    let mut root_unit = unit_tests();
    root_unit.args(["--", "--ignored", ROOT_UNIT_TESTS]);
    status(root_unit, "unit tests that need root", &mut tally)?;
    // They ran: no longer worth listing as skipped.
    tally.ignored.retain(|t| !t.starts_with(ROOT_UNIT_TESTS));
    let mut it = cargo();
    it.args(["test", "-p", "flannel-trace-tests", "--"])
        .args(&opts.args);
    it.env("FLANNEL_TRACE_BIN", setup::release_binary());
    // The dist tests run both static binaries of `cargo xtask dist` in an
    // empty chroot.
    crate::dist::run(crate::dist::Options::all())?;
    it.env(
        "FLANNEL_TRACE_STATIC_BIN",
        crate::dist::static_binary(false)?,
    );
    it.env("FLANNEL_TRACE_KUBE_VENV", setup::kube_venv());
    status(it, "integration tests", &mut tally)?;
    // One closing line over every test binary.
    tally.print(tally.failed);
    let _ = std::fs::remove_file(skip_log());
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_skip_is_counted_as_skipped_not_passed() {
        let log = env::temp_dir().join(format!("ft-xtask-skips-{}.log", std::process::id()));
        std::fs::write(
            &log,
            "test\tkernel::btf::tests::real\tno BTF\ncheck\tvni\tno reason\n",
        )
        .unwrap();
        let mut t = Tally {
            passed: 5,
            ..Tally::default()
        };
        t.read_skips(&log);
        assert_eq!(t.passed, 4);
        assert_eq!(t.skipped, ["kernel::btf::tests::real (no BTF)"]);
        assert_eq!(t.checks_skipped, ["vni (no reason)"]);
        // Lines already counted are not counted again by the next stage.
        std::fs::write(
            &log,
            "test\tkernel::btf::tests::real\tno BTF\ncheck\tvni\tno reason\ntest\tb\twhy\n",
        )
        .unwrap();
        t.read_skips(&log);
        assert_eq!((t.passed, t.skipped.len()), (3, 2));
        std::fs::remove_file(&log).unwrap();
    }
}
