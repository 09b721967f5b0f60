//! Userspace figures from the benchmarks kept among flannel-trace's unit
//! tests (ignored in normal runs): the compact codec, the live channel and
//! `join`, printed as they come.

use anyhow::{Context as _, Result, bail};

use crate::setup;

/// `cargo test --release` of flannel-trace's ignored lib tests matching
/// `filter` (benchmarks and bench-input writers), run from the workspace.
pub fn ignored_lib_tests(filter: &str, extra: &[&str]) -> std::process::Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = std::process::Command::new(cargo);
    c.args([
        "test",
        "--release",
        "-q",
        "-p",
        "flannel-trace",
        "--lib",
        filter,
        "--",
        "--ignored",
    ])
    .args(extra)
    .current_dir(setup::workspace_root());
    c
}

pub fn run() -> Result<()> {
    let out = ignored_lib_tests("bench_", &["--nocapture", "--test-threads=1"])
        .output()
        .context("running the userspace benchmarks")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines().filter(|l| {
        l.starts_with("codec:") || l.starts_with("live channel:") || l.starts_with("join:")
    }) {
        println!("{line}");
    }
    if !out.status.success() {
        bail!(
            "userspace benchmarks failed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
