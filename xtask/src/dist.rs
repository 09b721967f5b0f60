//! `cargo xtask dist`: what an SRE copies to a node that has no Rust.
//!
//! ```text
//! target/dist/flannel-trace-x86_64      static (musl), eBPF object embedded
//! target/dist/flannel-trace-aarch64     the same for ARM nodes
//! target/dist/SHA256SUMS                `sha256sum -c SHA256SUMS`
//! target/dist/man/flannel-trace*.1      one page per command
//! target/dist/completions/              bash, zsh, fish
//! ```
//!
//! The man pages and completions are generated from the very clap
//! definition the binary parses (flannel-trace/src/cli.rs, compiled into
//! xtask as a module), so they cannot describe other options.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::{Args, CommandFactory as _};
use sha2::{Digest as _, Sha256};

use crate::{setup, vm::host};

#[allow(dead_code, reason = "only the clap definition is used here")]
#[path = "../../flannel-trace/src/cli.rs"]
mod cli;

/// The architectures shipped, with their Rust targets.
pub const TARGETS: [(&str, &str); 2] = [
    ("x86_64", "x86_64-unknown-linux-musl"),
    ("aarch64", "aarch64-unknown-linux-musl"),
];

#[derive(Args)]
pub struct Options {
    /// Only these architectures (x86_64, aarch64); default both.
    #[arg(long, value_delimiter = ',')]
    arch: Vec<String>,
}

impl Options {
    /// Every architecture.
    pub fn all() -> Options {
        Options { arch: Vec::new() }
    }
}

pub fn dist_dir() -> PathBuf {
    setup::workspace_root().join("target/dist")
}

/// The static x86_64 binary in target/dist; with `build`, `cargo xtask
/// dist --arch x86_64` first (sums, man pages and completions included).
pub fn static_binary(build: bool) -> anyhow::Result<PathBuf> {
    let arch = TARGETS[0].0;
    if build {
        run(Options {
            arch: vec![arch.to_owned()],
        })?;
    }
    let path = dist_dir().join(format!("flannel-trace-{arch}"));
    if !path.is_file() {
        bail!("{} does not exist: run `cargo xtask dist`", path.display());
    }
    Ok(path)
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::run()?;
    let started = Instant::now();
    let dir = dist_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut shipped = 0;
    for (arch, target) in TARGETS {
        if !opts.arch.is_empty() && !opts.arch.iter().any(|a| a == arch) {
            continue;
        }
        let t = Instant::now();
        build_static(target).with_context(|| format!("building the {arch} binary"))?;
        let file = copy_binary(arch, target)?;
        eprintln!(
            "dist: {} ({} bytes, static, built in {:.0} s)",
            file.display(),
            fs::metadata(&file)?.len(),
            t.elapsed().as_secs_f64()
        );
        shipped += 1;
    }
    if shipped == 0 {
        bail!("--arch names none of x86_64, aarch64");
    }
    write_sums(&dir)?;
    write_man(&dir.join("man"))?;
    write_completions(&dir.join("completions"))?;
    eprintln!(
        "dist: everything in {} ({:.0} s)",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo build --release --target T`. musl targets link statically by
/// default; aarch64 links with the toolchain's own lld, so no cross gcc is
/// needed (the musl C runtime objects ship with the Rust target).
fn build_static(target: &str) -> anyhow::Result<()> {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(setup::workspace_root()).args([
        "build",
        "--release",
        "-p",
        "flannel-trace",
        "--target",
        target,
    ]);
    if !target.starts_with(env::consts::ARCH) {
        let var = format!(
            "CARGO_TARGET_{}_LINKER",
            target.to_uppercase().replace('-', "_")
        );
        cmd.env(var, "rust-lld");
    }
    setup::run_cmd(&mut cmd)
}

fn copy_binary(arch: &str, target: &str) -> anyhow::Result<PathBuf> {
    let built = setup::workspace_root().join(format!("target/{target}/release/flannel-trace"));
    if !host::is_static(&built)? {
        bail!(
            "{} is dynamically linked: the dist binary must run on any node",
            built.display()
        );
    }
    let dst = dist_dir().join(format!("flannel-trace-{arch}"));
    fs::copy(&built, &dst)
        .with_context(|| format!("copying {} to {}", built.display(), dst.display()))?;
    Ok(dst)
}

/// SHA256SUMS, in the format `sha256sum -c` reads, over every binary in
/// the directory (a build of one architecture keeps the other's line).
fn write_sums(dir: &Path) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("flannel-trace-"))
        })
        .collect();
    files.sort();
    let mut text = String::new();
    for f in &files {
        let data = fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let hex: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = f.file_name().expect("a file").to_string_lossy();
        text.push_str(&format!("{hex}  {name}\n"));
    }
    let path = dir.join("SHA256SUMS");
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// flannel-trace.1 and one page per subcommand (flannel-trace-check.1, …).
pub fn write_man(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = cli::Cli::command();
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("writing man pages to {}", dir.display()))
}

pub fn write_completions(dir: &Path) -> anyhow::Result<()> {
    use clap_complete::Shell;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = cli::Cli::command();
        clap_complete::generate_to(shell, &mut cmd, "flannel-trace", dir)
            .with_context(|| format!("writing the {shell} completion"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_and_completions_cover_every_command() {
        let dir = env::temp_dir().join(format!("ft-dist-test-{}", std::process::id()));
        write_man(&dir.join("man")).unwrap();
        write_completions(&dir.join("completions")).unwrap();
        let read = |p: &str| fs::read_to_string(dir.join(p)).unwrap();
        let main = read("man/flannel-trace.1");
        assert!(
            main.contains("\\-\\-listen"),
            "the main page documents --listen"
        );
        let check = read("man/flannel-trace-check.1");
        assert!(check.contains("NODES_JSON"), "{check}");
        for f in [
            "completions/flannel-trace.bash",
            "completions/_flannel-trace",
            "completions/flannel-trace.fish",
        ] {
            let text = read(f);
            assert!(text.contains("vxlan-dev"), "{f} completes --vxlan-dev");
            assert!(text.contains("check"), "{f} completes the check subcommand");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
