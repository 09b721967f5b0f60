//! Idempotent set-up of a fresh machine: system tools, the pinned eBPF
//! nightly with rust-src, and a bpf-linker built against that nightly's own
//! LLVM. Each step says what it does and, when it fails, what to do.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

/// bpf-linker release that supports the LLVM of the pinned nightly.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Commands the tests, the demo and the bench run, and the Debian packages
/// that carry them. tcpdump is the bench's reference observer; the bench's
/// loads are its own generators and it reads bpf_stats through aya, so it
/// needs neither iperf3 nor bpftool.
const SYSTEM_TOOLS: [(&str, &str); 6] = [
    ("ip", "iproute2"),
    ("bridge", "iproute2"),
    ("nft", "nftables"),
    ("ping", "iputils-ping"),
    // Runs the aarch64 dist binary in the dist test (a static emulator,
    // so that it works inside an empty chroot too).
    ("qemu-aarch64-static", "qemu-user-static"),
    ("tcpdump", "tcpdump"),
];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn run() -> anyhow::Result<()> {
    system_tools().context("set-up step `system tools` failed")?;
    let nightly = ebpf_toolchain()?;
    nightly_toolchain(&nightly).context("set-up step `eBPF toolchain` failed")?;
    bpf_linker(&nightly).context("set-up step `bpf-linker` failed")?;
    dist_targets().context("set-up step `musl targets` failed")?;
    kube_validate().context("set-up step `kubernetes-validate` failed")?;
    cargo_fuzz().context("set-up step `cargo-fuzz` failed")?;
    Ok(())
}

/// cargo-fuzz, for `cargo xtask fuzz` (from crates.io, once).
fn cargo_fuzz() -> anyhow::Result<()> {
    if cargo_home().join("bin/cargo-fuzz").is_file() {
        return Ok(());
    }
    println!("setup: installing cargo-fuzz");
    run_cmd(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))
}

fn have(cmd: &str) -> bool {
    env::var_os("PATH")
        .map(|p| env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(cmd).is_file())
}

pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn system_tools() -> anyhow::Result<()> {
    let mut missing: Vec<&str> = SYSTEM_TOOLS
        .iter()
        .filter(|(c, _)| !have(c))
        .map(|(_, p)| *p)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {} with apt-get", missing.join(" "));
    if !have("apt-get") {
        bail!(
            "missing {} and no apt-get here: install them with your package manager",
            missing.join(", ")
        );
    }
    run_cmd(Command::new("apt-get").arg("update").arg("-q"))
        .context("apt-get update (needs root and the Debian mirrors)")?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("apt-get install {}", missing.join(" ")))?;
    Ok(())
}

/// The nightly pinned in flannel-trace-ebpf/rust-toolchain.toml.
pub fn ebpf_toolchain() -> anyhow::Result<String> {
    let path = workspace_root().join("flannel-trace-ebpf/rust-toolchain.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|r| r.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| anyhow!("no channel in {}", path.display()))
}

fn rustc_vv(toolchain: &str) -> Option<String> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "-vV"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sysroot(toolchain: &str) -> anyhow::Result<PathBuf> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn nightly_toolchain(nightly: &str) -> anyhow::Result<()> {
    if !have("rustup") {
        bail!(
            "rustup is not installed: install it from your distribution or rustup.rs, then rerun"
        );
    }
    let has_src = rustc_vv(nightly).is_some()
        && sysroot(nightly)
            .map(|s| s.join("lib/rustlib/src/rust/library/core").is_dir())
            .unwrap_or(false);
    if has_src {
        return Ok(());
    }
    eprintln!("setup: installing toolchain {nightly} with rust-src");
    run_cmd(Command::new("rustup").args([
        "toolchain",
        "install",
        nightly,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
    .with_context(|| format!("rustup toolchain install {nightly}"))
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}

/// bpf-linker must be built against the very LLVM of the nightly that
/// compiles the programs; a stamp next to it records which one that was.
fn bpf_linker(nightly: &str) -> anyhow::Result<()> {
    let vv = rustc_vv(nightly).ok_or_else(|| anyhow!("toolchain {nightly} does not run"))?;
    let commit = vv
        .lines()
        .find_map(|l| l.strip_prefix("commit-hash: "))
        .unwrap_or("unknown")
        .to_owned();
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .ok_or_else(|| anyhow!("no LLVM version in rustc -vV"))?;
    let major = llvm.split('.').next().unwrap_or(llvm);
    let stamp_want =
        format!("bpf-linker {BPF_LINKER_VERSION} for {nightly} {commit} llvm {llvm}\n");
    let bin = cargo_home().join("bin/bpf-linker");
    let stamp = cargo_home().join("bpf-linker.flannel-trace.stamp");
    if bin.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(stamp_want.as_str()) {
        return Ok(());
    }
    let sysroot = sysroot(nightly)?;
    let lib = sysroot.join("lib");
    let dylib = fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with(&format!("libLLVM-{major}")) && n.ends_with(".so"))
        .ok_or_else(|| {
            anyhow!(
                "no libLLVM-{major}*.so in {}: the nightly ships no LLVM dylib",
                lib.display()
            )
        })?;
    let dylib = dylib.trim_start_matches("lib").trim_end_matches(".so");
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {dylib} (takes a few minutes)"
    );
    let rustflags = format!(
        "-L {0} -l dylib={dylib} -C link-arg=-Wl,-rpath,{0}",
        lib.display()
    );
    run_cmd(
        Command::new("rustup")
            .args([
                "run",
                nightly,
                "cargo",
                "install",
                "bpf-linker",
                "--locked",
                "--force",
            ])
            .args([
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major},no-llvm-linking"))
            .env("RUSTFLAGS", rustflags)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .env_remove("RUSTC"),
    )
    .context("cargo install bpf-linker (needs crates.io and a C compiler)")?;
    fs::write(&stamp, stamp_want).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(())
}

/// The Rust targets of `cargo xtask dist` for the workspace's own toolchain
/// (rust-toolchain.toml). Their rust-std carries musl's C runtime and libc,
/// and the toolchain carries lld, so no musl-tools or cross gcc is needed.
fn dist_targets() -> anyhow::Result<()> {
    let out = Command::new("rustc")
        .current_dir(workspace_root())
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let missing: Vec<&str> = crate::dist::TARGETS
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| !sysroot.join("lib/rustlib").join(t).join("lib").is_dir())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: adding Rust targets {}", missing.join(" "));
    run_cmd(
        Command::new("rustup")
            .current_dir(workspace_root())
            .args(["target", "add"])
            .args(&missing)
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
    .with_context(|| format!("rustup target add {}", missing.join(" ")))
}

/// The offline Kubernetes schema validator the deploy/ test uses.
const KUBE_VALIDATE: &str = "kubernetes-validate==1.37.0";

pub fn kube_venv() -> PathBuf {
    workspace_root().join("target/kube-validate")
}

/// kubernetes-validate (PyPI, with the API schemas of 1.25–1.37 inside) in a
/// virtualenv under target/, so that neither the system Python nor a
/// network at test time is involved.
fn kube_validate() -> anyhow::Result<()> {
    let venv = kube_venv();
    let bin = venv.join("bin/kubernetes-validate");
    let version = KUBE_VALIDATE.rsplit('=').next().unwrap_or_default();
    let current = Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(version))
        .unwrap_or(false);
    if current {
        return Ok(());
    }
    if !have("python3") {
        eprintln!("setup: installing python3 with apt-get");
        apt_install(&["python3", "python3-venv"])?;
    }
    eprintln!("setup: installing {KUBE_VALIDATE} in {}", venv.display());
    let make = || {
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !make() {
        // Debian's python3 keeps venv (ensurepip) in a package of its own.
        apt_install(&["python3-venv"])?;
        if !make() {
            bail!("python3 -m venv {} failed", venv.display());
        }
    }
    run_cmd(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(KUBE_VALIDATE),
    )
    .context("pip install kubernetes-validate (needs PyPI)")
}

fn apt_install(pkgs: &[&str]) -> anyhow::Result<()> {
    if !have("apt-get") {
        bail!(
            "missing {} and no apt-get here: install it with your package manager",
            pkgs.join(", ")
        );
    }
    run_cmd(Command::new("apt-get").arg("update").arg("-q"))
        .context("apt-get update (needs root and the Debian mirrors)")?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("apt-get install {}", pkgs.join(" ")))
}

pub fn build_release() -> anyhow::Result<()> {
    run_cmd(
        Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace_root())
            .args(["build", "--release", "-p", "flannel-trace"]),
    )
    .context("building flannel-trace")
}

pub fn release_binary() -> PathBuf {
    workspace_root().join("target/release/flannel-trace")
}
