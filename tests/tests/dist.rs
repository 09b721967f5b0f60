//! The artifacts of `cargo xtask dist` need nothing from the host: the
//! static binary runs in an empty root (a real `chroot`, as root) holding
//! only itself, and the sums match. `cargo xtask test` builds the binary
//! first and names it in FLANNEL_TRACE_STATIC_BIN.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context as _, Result, bail, ensure};
use flannel_trace_tests::require_root;

fn dist_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dist")
}

fn static_bin() -> Result<PathBuf> {
    let path = std::env::var_os("FLANNEL_TRACE_STATIC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| dist_dir().join("flannel-trace-x86_64"));
    if !path.is_file() {
        bail!(
            "{} does not exist: build it with `cargo xtask dist`",
            path.display()
        );
    }
    Ok(path)
}

/// Whether an ELF file asks for a dynamic loader (has PT_INTERP).
fn has_interpreter(data: &[u8]) -> Result<bool> {
    ensure!(
        data.starts_with(b"\x7fELF\x02\x01"),
        "not a 64-bit little-endian ELF"
    );
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into()?) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    Ok((0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or_default()) == 3
    }))
}

/// An empty directory that is removed on drop.
struct EmptyRoot(PathBuf);

impl EmptyRoot {
    fn new(tag: &str) -> Result<EmptyRoot> {
        let dir = std::env::temp_dir().join(format!("ft-chroot-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(EmptyRoot(dir))
    }
}

impl Drop for EmptyRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn chroot(root: &Path, args: &[&str]) -> Result<Output> {
    chroot_run(root, &["/flannel-trace"], args)
}

fn chroot_run(root: &Path, program: &[&str], args: &[&str]) -> Result<Output> {
    // Looked up here: the child's environment is emptied, PATH included.
    let chroot = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .context("no chroot (coreutils) on this host")?;
    Command::new(chroot)
        .arg(root)
        .args(program)
        .args(args)
        .env_clear()
        .output()
        .context("starting chroot")
}

#[test]
fn the_static_binary_runs_in_an_empty_root() -> Result<()> {
    require_root()?;
    let bin = static_bin()?;
    let data = fs::read(&bin)?;
    ensure!(
        !has_interpreter(&data)?,
        "{} asks for a dynamic loader",
        bin.display()
    );
    let root = EmptyRoot::new("x86_64")?;
    fs::copy(&bin, root.0.join("flannel-trace"))?;
    let entries: Vec<_> = fs::read_dir(&root.0)?.collect::<Result<_, _>>()?;
    ensure!(entries.len() == 1, "the root holds only the binary");

    let out = chroot(&root.0, &["--version"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "--version: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let version = format!("flannel-trace {}", env!("CARGO_PKG_VERSION"));
    ensure!(text.starts_with(&version), "{text}");
    // No /sys in the empty root: the feature list says so rather than fail.
    ensure!(
        text.contains("BTF           no (no /sys/kernel/btf/vmlinux"),
        "{text}"
    );

    let out = chroot(&root.0, &["--help"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("Usage: flannel-trace"),
        "{text}"
    );
    ensure!(
        text.contains("check") && text.contains("--listen"),
        "{text}"
    );

    // A run that needs the kernel fails with its documented status, not a
    // loader error: no /proc here, so no capabilities are visible (3).
    let out = chroot(&root.0, &["--duration", "1s"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(3) && err.contains("needs root"),
        "{}: {err}",
        out.status
    );
    Ok(())
}

/// The aarch64 binary under qemu's user-mode emulator (static itself,
/// installed by `cargo xtask setup`), in an empty root holding only the two.
#[test]
fn the_aarch64_binary_runs_under_emulation_in_an_empty_root() -> Result<()> {
    require_root()?;
    let bin = dist_dir().join("flannel-trace-aarch64");
    ensure!(
        bin.is_file(),
        "{} does not exist: run `cargo xtask dist`",
        bin.display()
    );
    let data = fs::read(&bin)?;
    // e_machine 183 is EM_AARCH64.
    ensure!(
        data.get(0x12..0x14) == Some(&[183, 0][..]),
        "not an aarch64 ELF"
    );
    ensure!(
        !has_interpreter(&data)?,
        "{} asks for a dynamic loader",
        bin.display()
    );
    let qemu = ["/usr/bin/qemu-aarch64-static", "/usr/bin/qemu-aarch64"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .context("no qemu-aarch64-static: run `cargo xtask setup` (Debian qemu-user-static)")?;
    let root = EmptyRoot::new("aarch64")?;
    fs::copy(&bin, root.0.join("flannel-trace"))?;
    fs::copy(qemu, root.0.join("qemu"))?;
    let out = chroot_run(&root.0, &["/qemu", "/flannel-trace"], &["--version"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = format!("flannel-trace {}", env!("CARGO_PKG_VERSION"));
    ensure!(
        out.status.success() && text.starts_with(&version),
        "{}: {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let out = chroot_run(&root.0, &["/qemu", "/flannel-trace"], &["check", "--help"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("NODES_JSON"),
        "{text}"
    );
    Ok(())
}

#[test]
fn every_shipped_file_matches_its_sum() -> Result<()> {
    let dir = dist_dir();
    let sums = fs::read_to_string(dir.join("SHA256SUMS"))
        .context("no target/dist/SHA256SUMS: run `cargo xtask dist`")?;
    let names: Vec<&str> = sums
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    ensure!(
        names.contains(&"flannel-trace-x86_64") && names.contains(&"flannel-trace-aarch64"),
        "{sums}"
    );
    let out = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .context("starting sha256sum")?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for page in [
        "man/flannel-trace.1",
        "man/flannel-trace-check.1",
        "completions/flannel-trace.bash",
        "completions/_flannel-trace",
        "completions/flannel-trace.fish",
    ] {
        ensure!(dir.join(page).is_file(), "target/dist/{page} is missing");
    }
    Ok(())
}
