//! tracefs: where classic tracepoints live.
//!
//! `ip netns exec` remounts /sys for the new namespace, and minimal hosts
//! may not mount tracefs at all. When it is missing, flannel-trace mounts it
//! inside a private mount namespace of its own process: the mount is
//! invisible to the rest of the system and vanishes when the process exits.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it privately failed at {step}: {source}")]
    Mount {
        step: &'static str,
        source: io::Error,
    },
    #[error("cannot read tracepoint format {path}: {source}")]
    Format { path: PathBuf, source: io::Error },
    #[error("tracepoint format {path} has no field `{field}`")]
    NoField { path: PathBuf, field: String },
}

fn populated(p: &Path) -> bool {
    fs::read_dir(p)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

/// A mounted tracefs, mounting one privately if needed. Must run while the
/// process is still single-threaded (unshare(CLONE_NEWNS) requires it).
pub fn ensure() -> Result<PathBuf, TracefsError> {
    if let Some(p) = CANDIDATES.iter().map(Path::new).find(|p| populated(p)) {
        return Ok(p.to_path_buf());
    }
    let target = Path::new(CANDIDATES[0]);
    mount_private("tracefs", CANDIDATES[0])
        .map_err(|(step, source)| TracefsError::Mount { step, source })?;
    Ok(target.to_path_buf())
}

/// Mount a pseudo filesystem (`tracefs`, `securityfs`) at `target` inside
/// a private mount namespace of this process: invisible to the rest of the
/// system, gone when the process exits. Must run while the process is
/// single-threaded (unshare(CLONE_NEWNS) requires it). The error names the
/// step that failed.
pub fn mount_private(fstype: &str, target: &str) -> Result<(), (&'static str, io::Error)> {
    let err = |step| (step, io::Error::last_os_error());
    let src = CString::new(fstype).map_err(|e| ("fstype", io::Error::other(e)))?;
    let dst = CString::new(target).map_err(|e| ("target", io::Error::other(e)))?;
    // SAFETY: plain syscalls with valid, NUL-terminated arguments.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(err("unshare(CLONE_NEWNS)"));
        }
        // Keep our mounts from propagating back to the host.
        let root = CString::new("/").expect("static");
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(err("making / private"));
        }
        if libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            return Err(err("mount"));
        }
    }
    Ok(())
}

/// Byte offset of `field` in the record of tracepoint `category/name`.
pub fn field_offset(
    tracefs: &Path,
    category: &str,
    name: &str,
    field: &str,
) -> Result<u32, TracefsError> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = fs::read_to_string(&path).map_err(|source| TracefsError::Format {
        path: path.clone(),
        source,
    })?;
    parse_field_offset(&text, field).ok_or(TracefsError::NoField {
        path,
        field: field.to_owned(),
    })
}

/// Parse `field:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;` lines.
fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        parts
            .find_map(|p| p.strip_prefix("offset:"))
            .and_then(|o| o.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KFREE_SKB: &str = "name: kfree_skb\nID: 1500\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;\n\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;\n\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;\n";

    #[test]
    fn offsets_from_format() {
        assert_eq!(parse_field_offset(KFREE_SKB, "skbaddr"), Some(8));
        assert_eq!(parse_field_offset(KFREE_SKB, "location"), Some(16));
        assert_eq!(parse_field_offset(KFREE_SKB, "reason"), Some(36));
        assert_eq!(parse_field_offset(KFREE_SKB, "sk"), None);
        assert_eq!(
            parse_field_offset(
                "\tfield:__data_loc char[] name;\toffset:12;\tsize:4;\tsigned:0;",
                "name"
            ),
            Some(12)
        );
    }
}
