//! Checks that turn "EPERM" or "No such file" deep inside a lab build into a
//! message telling the developer what to do.

use std::env;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Tools the lab shells out to, with the Debian/Ubuntu package providing each.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("bridge", "iproute2"),
    ("nft", "nftables"),
    ("ping", "iputils-ping"),
];

/// Creating namespaces, veths and nft tables needs CAP_SYS_ADMIN and
/// CAP_NET_ADMIN; checking the effective uid is the simple proxy.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!(
            "integration tests need root: run `sudo -E cargo xtask test` (running as uid {euid})"
        );
    }
    Ok(())
}

/// Fails naming every missing tool and the apt packages that provide them.
pub fn require_tools() -> Result<()> {
    let path = env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = env::split_paths(&path).collect();
    match diagnose_tools(&dirs, SBIN_AND_BIN) {
        Some(message) => bail!(message),
        None => Ok(()),
    }
}

/// Where the tools live when installed, whether or not PATH says so.
const SBIN_AND_BIN: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// What is wrong with the tools on `path_dirs`, if anything.
fn diagnose_tools(path_dirs: &[PathBuf], install_dirs: &[&str]) -> Option<String> {
    let mut problems = Vec::new();
    let mut packages: Vec<&str> = Vec::new();
    for &(tool, package) in TOOLS {
        if path_dirs.iter().any(|dir| is_executable(&dir.join(tool))) {
            continue;
        }
        // sudo and minimal shells often drop /usr/sbin from PATH; telling
        // "install iproute2" to someone who has it would send them astray.
        let elsewhere = install_dirs
            .iter()
            .map(|dir| Path::new(dir).join(tool))
            .find(|candidate| is_executable(candidate));
        match elsewhere {
            Some(found) => problems.push(format!(
                "`{tool}` is at {} but its directory is not on PATH",
                found.display()
            )),
            None => {
                problems.push(format!("`{tool}` not found (package {package})"));
                if !packages.contains(&package) {
                    packages.push(package);
                }
            }
        }
    }
    if problems.is_empty() {
        return None;
    }
    let mut message = format!("integration tests need: {}", problems.join("; "));
    if !packages.is_empty() {
        message.push_str(&format!(
            ". Install with `apt-get install -y {}`",
            packages.join(" ")
        ));
    }
    Some(message)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Root and the lab's tools, in one call at the top of every lab test.
pub fn preflight() -> Result<()> {
    require_root()?;
    require_tools()
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held by the tests of one binary that must not overlap (those whose
/// listeners share a port or that time one another's programs); a test
/// that panicked does not poison it for the next.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_packages_of_missing_tools() {
        let nowhere = [PathBuf::from("/nonexistent")];
        let message = diagnose_tools(&nowhere, &["/nonexistent"]).unwrap();
        assert!(
            message.ends_with("`apt-get install -y iproute2 nftables iputils-ping`"),
            "{message}"
        );
    }

    #[test]
    fn points_at_tools_that_are_only_off_path() {
        let nowhere = [PathBuf::from("/nonexistent")];
        // Executable stubs stand in for tools installed outside PATH.
        let dir = tempdir_with(&["ip", "bridge", "nft", "ping"]);
        let message = diagnose_tools(&nowhere, &[dir.to_str().unwrap()]).unwrap();
        assert!(message.contains("is not on PATH"), "{message}");
        assert!(!message.contains("apt-get"), "{message}");
        assert_eq!(diagnose_tools(std::slice::from_ref(&dir), &[]), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir_with(names: &[&str]) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = env::temp_dir().join(format!("ft-preflight-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in names {
            let file = dir.join(name);
            std::fs::write(&file, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }
}
