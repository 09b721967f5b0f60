//! What the host needs for the kernel matrix: qemu, a static busybox, the
//! lab's tools (copied into every guest), and the binaries under test.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

use crate::setup;

/// Host commands the matrix uses, and the Debian package of each. The lab's
/// own tools (`ip`, `bridge`, `tc`, `nft`, `ping`, `setpriv`) are copied
/// into the guests with their libraries, so the host needs them too.
const TOOLS: [(&str, &str); 12] = [
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("dpkg-deb", "dpkg"),
    ("gzip", "gzip"),
    ("xz", "xz-utils"),
    ("zstd", "zstd"),
    ("ip", "iproute2"),
    ("bridge", "iproute2"),
    ("tc", "iproute2"),
    ("nft", "nftables"),
    ("ping", "iputils-ping"),
    ("setpriv", "util-linux"),
];

pub fn find(cmd: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// Installs what is missing with the host's own apt (never touching its
/// configuration). busybox must be the static build: the guest has no libc
/// for it at /init time, and Debian's dynamic `busybox` package is not.
pub fn ensure_tools() -> anyhow::Result<()> {
    let mut missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(c, _)| find(c).is_none())
        .map(|(_, p)| *p)
        .collect();
    if let Some(bb) = find("busybox")
        && !is_static(&bb)?
        && !missing.contains(&"busybox-static")
    {
        missing.push("busybox-static");
    }
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("vm-test: installing {} with apt-get", missing.join(" "));
    if find("apt-get").is_none() {
        bail!(
            "missing {}: install them with your package manager",
            missing.join(", ")
        );
    }
    crate::setup::run_cmd(Command::new("apt-get").args(["update", "-q"]))
        .context("apt-get update (needs root)")?;
    crate::setup::run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("apt-get install {}", missing.join(" ")))?;
    let bb = find("busybox")
        .ok_or_else(|| anyhow!("busybox still missing after installing busybox-static"))?;
    if !is_static(&bb)? {
        bail!(
            "{} is not statically linked: install Debian's busybox-static",
            bb.display()
        );
    }
    Ok(())
}

pub fn check_kvm() -> anyhow::Result<()> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .context("--kvm: /dev/kvm cannot be opened (no hardware virtualisation here? leave out --kvm to use TCG)")
}

/// An ELF file without a PT_INTERP program header needs no dynamic loader.
pub fn is_static(path: &Path) -> anyhow::Result<bool> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if data.get(..5) != Some(b"\x7fELF\x02") {
        bail!("{} is not a 64-bit ELF file", path.display());
    }
    let bad = || anyhow!("{}: truncated ELF header", path.display());
    let phoff = u64_at(0x20).ok_or_else(bad)? as usize;
    let phentsize = u16_at(0x36).ok_or_else(bad)? as usize;
    let phnum = u16_at(0x38).ok_or_else(bad)? as usize;
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize).ok_or_else(bad)? == 3 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The binaries that go into every guest.
pub struct Artifacts {
    /// target/dist/flannel-trace-x86_64 (static, musl).
    pub tracer: PathBuf,
    /// The `tracer` integration test binary of flannel-trace-tests.
    pub tests: PathBuf,
    /// The `lockdown` one, for the guest booted with lockdown.
    pub lockdown_tests: PathBuf,
    /// The `crafted` (hostile packets) integration test binary.
    pub crafted: PathBuf,
}

/// Sets up, builds the release binary and the integration test binaries
/// (in release mode: smaller, and quicker under emulation), and returns them.
pub fn artifacts(build: bool) -> anyhow::Result<Artifacts> {
    // The static musl binary of `cargo xtask dist`, as an SRE would copy it
    // to a node: the guests then also prove it needs nothing from the host.
    let tracer = crate::dist::static_binary(build)?;
    if !is_static(&tracer)? {
        bail!("{} is not statically linked", tracer.display());
    }
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(setup::workspace_root()).args([
        "test",
        "--release",
        "-p",
        "flannel-trace-tests",
        "--test",
        "tracer",
        "--test",
        "lockdown",
        "--test",
        "crafted",
        "--no-run",
        "--message-format=json",
    ]);
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the integration tests failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let executable = |name: &str| {
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == name)
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .ok_or_else(|| anyhow!("cargo printed no executable for the `{name}` test"))
    };
    Ok(Artifacts {
        tracer,
        tests: executable("tracer")?,
        lockdown_tests: executable("lockdown")?,
        crafted: executable("crafted")?,
    })
}
