//! What can go wrong reading or querying BTF, with the likely remedy.

use std::path::{Path, PathBuf};

use super::VMLINUX_BTF_PATH;

/// Errors from loading or querying BTF. Messages name the object that failed
/// and, where there is one, the likely remedy.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("cannot read BTF from {}: {source}{}", path.display(), io_hint(path, source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The blob violates the BTF format (truncated, corrupt, or unsupported).
    #[error(
        "malformed BTF: {0} (the data is truncated, corrupt, or in a format this reader does not support)"
    )]
    Malformed(String),
    /// No struct (or union) of that name exists.
    #[error(
        "no struct named `{0}` in the kernel's BTF; this kernel version or configuration does not define it"
    )]
    NoSuchType(String),
    /// The struct exists but the member path does not.
    #[error(
        "struct `{ty}` has no member `{member}` in the kernel's BTF; the field may be renamed, moved or compiled out in this kernel version"
    )]
    NoSuchMember { ty: String, member: String },
    /// A path element is not the last one, but its type is not a struct/union.
    #[error(
        "cannot look inside `{ty}.{member}`: it is a {kind}, not a struct or union (pointers are not followed, they lead to a separate object)"
    )]
    NotComposite {
        ty: String,
        member: String,
        kind: &'static str,
    },
    /// The member is a bitfield: it has no byte offset of its own.
    #[error(
        "`{ty}.{member}` is a bitfield (bit offset {bit_offset}); it has no byte offset, read the containing word and mask it instead"
    )]
    Bitfield {
        ty: String,
        member: String,
        bit_offset: u64,
    },
}

/// Remedy appended to I/O errors: the common case is a kernel without BTF.
pub(super) fn io_hint(path: &Path, err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::NotFound if path == Path::new(VMLINUX_BTF_PATH) => {
            " (kernel built without CONFIG_DEBUG_INFO_BTF?)"
        }
        std::io::ErrorKind::PermissionDenied => " (permission denied; run as root?)",
        _ => "",
    }
}

pub(super) fn malformed(msg: impl Into<String>) -> BtfError {
    BtfError::Malformed(msg.into())
}
