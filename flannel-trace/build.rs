//! Builds the eBPF object (flannel-trace-ebpf) for the bpf target with the
//! pinned nightly toolchain, so that the binary can embed it.
//!
//! The nested cargo runs here rather than through `aya_build::build_ebpf`,
//! which relays every line the nested cargo prints (`Compiling core …`) as a
//! `cargo:warning`, so that a fresh build shows ~50 "warnings" and a real one
//! drowns. Here the nested build's progress goes to this script's stderr
//! (what `cargo build -vv` shows, and target/*/build/flannel-trace-*/stderr
//! keeps), while cargo's own progress bar shows `flannel-trace(build)`
//! running; only the compiler's warnings and errors, and cargo's own
//! `warning:`/`error:` lines, become cargo warnings.
use std::{
    env,
    ffi::OsString,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
};

use anyhow::{Context as _, anyhow, bail};
use cargo_metadata::{Message, diagnostic::DiagnosticLevel};

const PACKAGE: &str = "flannel-trace-ebpf";

fn main() -> anyhow::Result<()> {
    // The fuzz targets (fuzz/) exercise userspace decoders only: they get an
    // empty object instead of a nested eBPF build under sanitizer flags.
    println!("cargo:rerun-if-env-changed=FLANNEL_TRACE_NO_EBPF");
    if std::env::var_os("FLANNEL_TRACE_NO_EBPF").is_some() {
        let out = std::env::var("OUT_DIR").context("OUT_DIR")?;
        fs::write(Path::new(&out).join("flannel-trace"), b"")?;
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata failed")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == PACKAGE)
        .ok_or_else(|| anyhow!("package {PACKAGE} not found in the workspace"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?
        .as_std_path()
        .to_path_buf();
    let toolchain = ebpf_toolchain(&root)?;
    println!("cargo::rerun-if-changed={}", root.display());
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    build_ebpf(&root, &toolchain, &out_dir).context(
        "building the eBPF object failed; run `cargo xtask setup` to install the pinned nightly, rust-src and bpf-linker",
    )
}

/// `cargo build` of the eBPF crate for `bpfel`/`bpfeb-unknown-none`, its
/// binary copied to `OUT_DIR/flannel-trace`.
fn build_ebpf(root: &Path, toolchain: &str, out_dir: &Path) -> anyhow::Result<()> {
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN")?;
    let target = match endian.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        other => bail!("unsupported endianness {other}"),
    };
    // The programs read `struct pt_regs` (kprobes), whose layout is the
    // architecture's that the binary is built for, not the build host's.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH")?;
    let arch = if arch.starts_with("riscv64") {
        "riscv64".to_owned()
    } else {
        arch
    };
    let mut rustflags = OsString::new();
    for (i, flag) in [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            rustflags.push("\x1f");
        }
        rustflags.push(flag);
    }
    // Separate from OUT_DIR's own files, so that the copied object cannot
    // collide with cargo's directories.
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", toolchain, "cargo", "build", "--package", PACKAGE])
        .args(["--bins", "--release", "--message-format=json", "--target"])
        .arg(target)
        // The pinned toolchain is a nightly: core is built from rust-src.
        .args(["-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        // The outer build's compiler must not leak into the nested one.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTUP_TOOLCHAIN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("building the eBPF object: {cmd:?}");
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?} (is rustup installed?)"))?;

    // stderr: cargo's progress and its own diagnostics, read on a thread so
    // that neither pipe can fill up and stall the nested cargo.
    let stderr = child.stderr.take().context("stderr")?;
    let relay = thread::spawn(move || {
        let mut kept = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let trimmed = line.trim_start();
            if trimmed.starts_with("warning:") || trimmed.starts_with("error") {
                println!("cargo::warning=eBPF build: {line}");
            } else {
                eprintln!("{line}");
            }
            kept.push(line);
        }
        kept
    });

    let mut objects = Vec::new();
    let stdout = child.stdout.take().context("stdout")?;
    for message in Message::parse_stream(BufReader::new(stdout)) {
        match message.context("the nested cargo printed invalid JSON")? {
            Message::CompilerArtifact(artifact) => {
                if let Some(exe) = artifact.executable {
                    objects.push((artifact.target.name, exe.into_std_path_buf()));
                }
            }
            Message::CompilerMessage(msg) => {
                let real = matches!(
                    msg.message.level,
                    DiagnosticLevel::Warning | DiagnosticLevel::Error | DiagnosticLevel::Ice
                );
                let text = msg.message.rendered.unwrap_or(msg.message.message);
                for line in text.lines() {
                    if real {
                        println!("cargo::warning={line}");
                    } else {
                        eprintln!("{line}");
                    }
                }
            }
            Message::TextLine(line) => eprintln!("{line}"),
            _ => {}
        }
    }
    let status = child.wait().context("waiting for the nested cargo")?;
    let stderr = relay.join().unwrap_or_default();
    if !status.success() {
        let tail = stderr[stderr.len().saturating_sub(30)..].join("\n");
        bail!("{cmd:?} failed ({status}):\n{tail}");
    }
    if objects.is_empty() {
        bail!("{cmd:?} built no binary of {PACKAGE}");
    }
    for (name, object) in objects {
        let dst = out_dir.join(name);
        fs::copy(&object, &dst)
            .with_context(|| format!("copying {} to {}", object.display(), dst.display()))?;
    }
    Ok(())
}

/// The channel pinned in flannel-trace-ebpf/rust-toolchain.toml: one source of
/// truth for this script, `cargo xtask setup` and anyone building by hand.
fn ebpf_toolchain(root: &Path) -> anyhow::Result<String> {
    let path = root.join("rust-toolchain.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| anyhow!("no `channel = \"...\"` in {}", path.display()))
}
