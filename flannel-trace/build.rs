//! Builds the eBPF object (flannel-trace-ebpf) for the bpf target with the
//! pinned nightly toolchain, so that the binary can embed it.
use std::{fs, path::Path};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

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
        .find(|p| p.name.as_str() == "flannel-trace-ebpf")
        .ok_or_else(|| anyhow!("package flannel-trace-ebpf not found in the workspace"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let toolchain = ebpf_toolchain(root.as_std_path())?;
    println!("cargo:rerun-if-changed={root}/rust-toolchain.toml");
    let package = aya_build::Package {
        name: "flannel-trace-ebpf",
        root_dir: root.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::Custom(&toolchain)).context(
        "building the eBPF object failed; run `cargo xtask setup` to install the pinned nightly, rust-src and bpf-linker",
    )
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
