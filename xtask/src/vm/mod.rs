//! `cargo xtask vm-test [KERNEL...]`: the kernel matrix. Each kernel is a
//! real Debian kernel (fetched with apt into `target/vm/cache`, never
//! touching the host's /etc/apt), booted under qemu with an initramfs that
//! holds the release binary, the integration tests, the lab's tools and the
//! kernel modules they need. The guest runs one attach probe per backend
//! and the integration tests, prints marker lines on the serial console,
//! and powers off; the host parses the console log into a per-kernel
//! verdict, `target/vm/matrix.json` and a Markdown table for README.md.

mod apt;
pub(crate) mod host;
mod initramfs;
mod kernel;
mod matrix;
mod qemu;
mod report;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::setup;

/// The kernels of the matrix, oldest first.
pub const KERNELS: [&str; 4] = ["5.10", "6.1", "6.12", "7"];

/// The kernel booted a second time with `lockdown=confidentiality`, where
/// only tests/tests/lockdown.rs runs (TC-only mode).
pub const LOCKDOWN_KERNEL: &str = "6.12";
const LOCKDOWN_APPEND: &str = "lockdown=confidentiality";

#[derive(Args)]
pub struct Options {
    /// Kernels to test: 5.10, 6.1, 6.12, 7 (default: all four; 6.12 is also
    /// booted with lockdown=confidentiality), or 6.12-lockdown for that
    /// boot alone.
    #[arg(value_name = "KERNEL")]
    kernels: Vec<String>,
    /// Use KVM (`-accel kvm -cpu host`) instead of TCG software emulation.
    #[arg(long)]
    kvm: bool,
    /// Limit for one guest (boot, probes and tests), in minutes; a guest
    /// still running then is killed and reported as failed.
    #[arg(long, value_name = "MINUTES", default_value_t = 15)]
    timeout: u64,
    /// Run the whole integration suite in every guest instead of the
    /// default subset.
    #[arg(long)]
    full: bool,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    memory: u32,
    /// Use the cached package lists and kernels only (no `apt-get update`).
    #[arg(long)]
    offline: bool,
    /// Echo the guest's serial console while it runs.
    #[arg(long, short)]
    verbose: bool,
    /// Skip `cargo xtask setup` and the builds; use the binaries already in
    /// target/ (for re-running the VMs only).
    #[arg(long)]
    no_build: bool,
    /// Arguments for the integration test binary in the guest (a name
    /// filter, `--exact`, ...); replaces the default subset.
    #[arg(last = true)]
    test_args: Vec<String>,
}

/// Where everything of the matrix lives: target/vm.
pub fn vm_dir() -> PathBuf {
    setup::workspace_root().join("target/vm")
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let kernels = select_kernels(&opts.kernels)?;
    let dir = vm_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    host::ensure_tools().context("installing the VM tools on the host")?;
    if opts.kvm {
        host::check_kvm()?;
    }
    let bins = host::artifacts(!opts.no_build).context("building the binaries for the guests")?;
    let apt = apt::Apt::new(&dir.join("apt"), &dir.join("cache"))?;
    if !opts.offline {
        apt.update()
            .context("refreshing the private package lists (target/vm/apt)")?;
    }

    let test_args = if !opts.test_args.is_empty() {
        opts.test_args.clone()
    } else if opts.full {
        Vec::new()
    } else {
        initramfs::default_test_args()
    };

    // Each kernel, and the lockdown boot of one of them right after it
    // (whenever that kernel is tested and the default subset is asked for).
    // `KERNEL-lockdown` alone selects only that boot.
    let mut boots: Vec<(String, bool)> = Vec::new();
    for key in &kernels {
        if let Some(k) = key.strip_suffix("-lockdown") {
            boots.push((k.to_owned(), true));
            continue;
        }
        boots.push((key.clone(), false));
        if key == LOCKDOWN_KERNEL && test_args == initramfs::default_test_args() {
            boots.push((key.clone(), true));
        }
    }
    let mut results = Vec::new();
    for (key, lockdown) in &boots {
        let started = Instant::now();
        let label = if *lockdown {
            format!("{key}-lockdown")
        } else {
            key.clone()
        };
        let mut result = match run_one(&opts, &apt, &bins, key, *lockdown, &test_args, &dir) {
            Ok(r) => r,
            Err(e) => {
                report::KernelResult::setup_failure(&label, format!("{e:#}"), started.elapsed())
            }
        };
        if *lockdown {
            if !result.tests.is_empty()
                && !result
                    .tests
                    .iter()
                    .any(|(n, _)| n == initramfs::LOCKDOWN_TEST)
            {
                result.problems.push(format!(
                    "test {} did not run (renamed?)",
                    initramfs::LOCKDOWN_TEST
                ));
            }
            let level = result.facts.get("lockdown").cloned().unwrap_or_default();
            if !result.release.is_empty() && !level.contains("[confidentiality]") {
                result.problems.push(format!(
                    "booted with {LOCKDOWN_APPEND} but /sys/kernel/security/lockdown reads {level:?}"
                ));
            }
            println!("{}", result.line());
            results.push(result);
            continue;
        }
        if test_args == initramfs::default_test_args() && !result.tests.is_empty() {
            // A renamed test must not silently drop out of the subset.
            let crafted: &[&str] = if initramfs::CRAFTED_KERNELS.contains(&key.as_str()) {
                &initramfs::CRAFTED_TESTS
            } else {
                &[]
            };
            for name in initramfs::DEFAULT_TESTS.iter().chain(crafted) {
                if !result.tests.iter().any(|(n, _)| n == name) {
                    result.problems.push(format!(
                        "test {name} of the default subset did not run (renamed?)"
                    ));
                }
            }
        }
        println!("{}", result.line());
        results.push(result);
    }

    let matrix = matrix::Matrix::new(results, opts.kvm, &test_args);
    let json_path = dir.join("matrix.json");
    fs::write(&json_path, matrix.json())
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md_path = dir.join("matrix.md");
    let md = matrix.markdown();
    fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;

    println!();
    println!(
        "== Kernel matrix ({}) ==",
        if opts.kvm { "KVM" } else { "TCG" }
    );
    for r in &matrix.results {
        println!("{}", r.line());
    }
    println!();
    println!("{md}");
    println!("written: {} and {}", json_path.display(), md_path.display());
    // One closing line over every guest's tests.
    let (passed, failed_tests) = matrix
        .results
        .iter()
        .fold((0, 0), |(p, f), r| (p + r.passed, f + r.failed));
    println!("kernels: {passed} passed, {failed_tests} failed");
    let failed: Vec<&str> = matrix
        .results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.key.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "kernel matrix failed on {}: see target/vm/<kernel>.log",
            failed.join(", ")
        );
    }
    Ok(())
}

fn select_kernels(asked: &[String]) -> anyhow::Result<Vec<String>> {
    if asked.is_empty() {
        return Ok(KERNELS.iter().map(|k| (*k).to_owned()).collect());
    }
    let mut out = Vec::new();
    for k in asked {
        let k = k.trim_start_matches('v');
        let lockdown = format!("{LOCKDOWN_KERNEL}-lockdown");
        let key = match k {
            "7" | "7.x" => "7",
            other if other == lockdown => other,
            other if KERNELS.contains(&other) => other,
            other => bail!(
                "unknown kernel `{other}`: choose among {}",
                KERNELS.join(", ")
            ),
        };
        if !out.iter().any(|o: &String| o == key) {
            out.push(key.to_owned());
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    opts: &Options,
    apt: &apt::Apt,
    bins: &host::Artifacts,
    key: &str,
    lockdown: bool,
    test_args: &[String],
    dir: &Path,
) -> anyhow::Result<report::KernelResult> {
    let started = Instant::now();
    let kernel = kernel::fetch(apt, key, &dir.join("kernels"))
        .with_context(|| format!("fetching the {key} kernel"))?;
    eprintln!(
        "vm-test: {key}: kernel {} ({})",
        kernel.release,
        kernel.packages.join(" ")
    );
    let initrd = dir.join(format!("initramfs-{}.cpio.gz", kernel.release));
    // Under TCG the tracer starts ~20 times slower than on hardware.
    let time_scale = if opts.kvm { 1 } else { 8 };
    // The lockdown boot has the same initramfs as the kernel's plain boot:
    // its /init reads the command line to know what to run.
    initramfs::build(&kernel, key, bins, test_args, time_scale, &initrd)
        .with_context(|| format!("building the initramfs for {}", kernel.release))?;
    let key = &if lockdown {
        format!("{key}-lockdown")
    } else {
        key.to_owned()
    };
    let log = dir.join(format!("{key}.log"));
    let boot = qemu::Boot {
        kernel: &kernel.vmlinuz,
        initrd: &initrd,
        log: &log,
        kvm: opts.kvm,
        memory_mib: opts.memory,
        timeout: Duration::from_secs(opts.timeout * 60),
        verbose: opts.verbose,
        append: if lockdown { LOCKDOWN_APPEND } else { "" },
    };
    eprintln!(
        "vm-test: {key}: booting {} under {} (console: {})",
        kernel.release,
        if opts.kvm { "KVM" } else { "TCG" },
        log.display()
    );
    let outcome = boot.run()?;
    let text = fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    Ok(report::KernelResult::from_log(
        key,
        &kernel.release,
        &kernel.packages,
        &text,
        &outcome,
        started.elapsed(),
    ))
}
