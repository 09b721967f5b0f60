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
}

impl Tally {
    fn print(&self, failed: u64) {
        println!(
            "{} passed, {failed} failed, {} ignored",
            self.passed,
            self.ignored.len()
        );
        for t in &self.ignored {
            println!("  ignored: {t}");
        }
    }
}

/// Run a cargo test command, echoing its output and adding up its results.
fn status(mut c: Command, what: &str, tally: &mut Tally) -> anyhow::Result<()> {
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
    if !s.success() {
        tally.print(tally.failed.max(1));
        bail!("{what} failed ({s})");
    }
    Ok(())
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
    let mut tally = Tally::default();
    status(unit_tests(), "unit tests", &mut tally)?;
    if opts.unit_only {
        tally.print(tally.failed);
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
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
