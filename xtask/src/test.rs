//! `cargo xtask test`: unit tests (no root), then the netns integration
//! tests against the real kernel (root).

use std::{env, process::Command};

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

fn status(mut c: Command, what: &str) -> anyhow::Result<()> {
    let s = c.status().with_context(|| format!("starting {what}"))?;
    if !s.success() {
        bail!("{what} failed ({s})");
    }
    Ok(())
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::run()?;
    setup::build_release()?;
    let mut unit = cargo();
    unit.args([
        "test",
        "--workspace",
        "--exclude",
        "flannel-trace-tests",
        "--exclude",
        "flannel-trace-ebpf",
    ]);
    status(unit, "unit tests")?;
    if opts.unit_only {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!(
            "the integration tests create network namespaces and load eBPF programs: run `sudo -E cargo xtask test` (or --unit-only)"
        );
    }
    let mut it = cargo();
    it.args(["test", "-p", "flannel-trace-tests", "--"])
        .args(&opts.args);
    it.env("FLANNEL_TRACE_BIN", setup::release_binary());
    status(it, "integration tests")
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
