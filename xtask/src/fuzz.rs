//! `cargo xtask fuzz`: a short cargo-fuzz run of every target in fuzz/
//! (decoders of untrusted input), with the pinned nightly, starting from
//! the corpora committed in fuzz/corpus. Prints executions per target;
//! fails on any finding (the crashing input is left in fuzz/artifacts).

use std::{env, process::Command};

use anyhow::{Context as _, bail};

use crate::setup;

/// No AddressSanitizer: the decoders are safe Rust (the one `unsafe` read
/// is a length-checked unaligned copy of plain data), panics are found
/// without it, and building every dependency instrumented took most of the
/// CI budget (about 8 minutes on the 2-core VM, against about 3).
const SANITIZER: &str = "none";

/// Every target, as fuzz/Cargo.toml names them.
pub const TARGETS: [&str; 6] = [
    "packet",
    "ring_event",
    "event_batch",
    "frames",
    "peer",
    "recording",
];

#[derive(clap::Args)]
pub struct Options {
    /// Seconds per target.
    #[arg(long, default_value_t = 15)]
    pub seconds: u32,
    /// Only these targets (default: all).
    pub targets: Vec<String>,
}

fn cargo_fuzz(nightly: &str) -> Command {
    let mut c = Command::new("cargo");
    c.arg(format!("+{nightly}"))
        .arg("fuzz")
        .current_dir(setup::workspace_root().join("fuzz"))
        // The decoders only: no nested eBPF build under sanitizer flags.
        .env("FLANNEL_TRACE_NO_EBPF", "1")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR");
    c
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::run()?;
    let nightly = setup::ebpf_toolchain()?;
    let targets: Vec<String> = if opts.targets.is_empty() {
        TARGETS.iter().map(|t| t.to_string()).collect()
    } else {
        opts.targets
    };
    println!("fuzz: building {} target(s) with {nightly}", targets.len());
    setup::run_cmd(cargo_fuzz(&nightly).args(["build", "-O", "-s", SANITIZER]))
        .context("building the fuzz targets")?;
    let mut findings = Vec::new();
    for t in &targets {
        let corpus = setup::workspace_root().join("fuzz/corpus").join(t);
        // Work on a copy: a CI run must not grow the committed corpus.
        let work = env::temp_dir().join(format!("flannel-trace-fuzz-{}-{t}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let out = cargo_fuzz(&nightly)
            .args(["run", "-O", "-s", SANITIZER, t])
            .arg(&work)
            .arg(&corpus)
            .args([
                "--",
                &format!("-max_total_time={}", opts.seconds),
                "-print_final_stats=1",
            ])
            .output()
            .with_context(|| format!("running fuzz target {t}"))?;
        let _ = std::fs::remove_dir_all(&work);
        let log = String::from_utf8_lossy(&out.stderr);
        let runs = log
            .lines()
            .filter_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .next_back();
        match (out.status.success(), runs) {
            (true, Some(n)) => println!(
                "fuzz: {t}: {n} executions in {} s, no finding",
                opts.seconds
            ),
            _ => {
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                eprintln!("fuzz: {t}: FINDING or failure:\n{}", tail.join("\n"));
                findings.push(t.clone());
            }
        }
    }
    if !findings.is_empty() {
        bail!(
            "fuzz targets with findings: {} (inputs in fuzz/artifacts/)",
            findings.join(", ")
        );
    }
    Ok(())
}
