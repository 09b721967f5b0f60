//! Userspace figures from the benchmarks kept among flannel-trace's unit
//! tests (ignored in normal runs): the compact codec, the live channel and
//! `join`, printed as they come.

use anyhow::{Context as _, Result, bail};

use crate::setup;

pub fn run() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
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
        bail!(
            "userspace benchmarks failed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
