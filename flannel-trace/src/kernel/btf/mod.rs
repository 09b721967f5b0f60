//! A minimal, dependency-free reader for the BPF Type Format (BTF).
//!
//! Rust eBPF programs have no CO-RE relocations, so every kernel struct field
//! they read needs its byte offset computed for the *running* kernel. The
//! kernel describes its own types in BTF at `/sys/kernel/btf/vmlinux`; this
//! module parses that blob and answers the few questions the tool asks:
//! member offsets and sizes, enumerator values (drop reasons are numbered
//! differently on each kernel), whether a function exists, and the arity of
//! a BTF tracepoint.
//!
//! Format reference: <https://docs.kernel.org/bpf/btf.html>. Only standalone
//! BTF is supported (vmlinux); split BTF of kernel modules refers to the base
//! blob's types and strings and is rejected as malformed.
//!
//! Why not a crate: the maintained BTF reader, btf-rs (retis's), is
//! LGPL-2.1-or-later, which a statically linked MIT/Apache binary shipped
//! to nodes cannot take without relinking obligations; aya-obj, which aya
//! uses to parse vmlinux BTF, keeps its type accessors crate-private.
//!
//! Every read from the blob is bounds-checked: corrupt input yields
//! [`BtfError::Malformed`], never a panic, and all walks over the type graph
//! are depth- and work-limited so a cyclic or adversarial graph cannot hang
//! or overflow the stack.

mod error;
mod format;
#[cfg(test)]
mod tests;
mod walk;

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::path::Path;

pub use self::error::BtfError;
use self::error::malformed;
use self::format::{
    MAGIC, MIN_HDR_LEN, PassThroughHasher, Type, index_names, kind, parse_types, read_u32, section,
};

/// Where the running kernel exposes its own BTF.
pub const VMLINUX_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Parsed BTF: the type headers indexed by id, the raw type section for
/// kind-specific data, the string table, and a name index built once so that
/// lookups do not scan ~100k types.
pub struct Btf {
    big_endian: bool,
    /// Indexed by type id; id 0 is void.
    types: Vec<Type>,
    type_data: Vec<u8>,
    strings: Vec<u8>,
    /// Hash of a type name -> first type id with that hash (0 = none).
    by_name: HashMap<u64, u32, BuildHasherDefault<PassThroughHasher>>,
    /// Indexed by type id: next id whose name has the same hash (0 = end).
    next_same_hash: Vec<u32>,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.types.len())
            .field("strings_len", &self.strings.len())
            .field("big_endian", &self.big_endian)
            .finish()
    }
}

impl Btf {
    /// The running kernel's BTF, from [`VMLINUX_BTF_PATH`].
    pub fn vmlinux() -> Result<Btf, BtfError> {
        Btf::from_file(VMLINUX_BTF_PATH)
    }

    /// Reads and parses a raw BTF file (not an ELF `.BTF` section).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Btf, BtfError> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Btf::from_bytes(&data).map_err(|e| match e {
            BtfError::Malformed(m) => malformed(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses a raw BTF blob of either byte order.
    pub fn from_bytes(data: &[u8]) -> Result<Btf, BtfError> {
        let big_endian = match data.get(..2) {
            Some([0x9f, 0xeb]) => false,
            Some([0xeb, 0x9f]) => true,
            _ => {
                return Err(malformed(format!(
                    "bad magic (expected {MAGIC:#06x} in either byte order); not a raw BTF blob"
                )));
            }
        };
        let be = big_endian;
        let short = || {
            malformed(format!(
                "{}-byte blob is shorter than the BTF header",
                data.len()
            ))
        };
        let version = *data.get(2).ok_or_else(short)?;
        if version != 1 {
            return Err(malformed(format!(
                "unsupported BTF version {version} (expected 1)"
            )));
        }
        let hdr_len = read_u32(data, 4, be).ok_or_else(short)? as usize;
        if hdr_len < MIN_HDR_LEN || hdr_len > data.len() {
            return Err(malformed(format!(
                "header length {hdr_len} is not within [{MIN_HDR_LEN}, {}]",
                data.len()
            )));
        }
        let field = |off: usize| read_u32(data, off, be).ok_or_else(short);
        let type_sec = section(data, hdr_len, field(8)?, field(12)?, "type")?;
        let strings = section(data, hdr_len, field(16)?, field(20)?, "string")?;
        // Newer kernels append layout_off/layout_len, describing each kind's size.
        let layout = if hdr_len >= 32 {
            section(data, hdr_len, field(24)?, field(28)?, "layout")?
        } else {
            &[]
        };
        if strings.first() != Some(&0) || strings.last() != Some(&0) {
            return Err(malformed(
                "string section must start with an empty string and end with a NUL byte",
            ));
        }
        let types = parse_types(type_sec, strings, layout, be)?;
        let (by_name, next_same_hash) = index_names(&types, strings);
        Ok(Btf {
            big_endian,
            types,
            type_data: type_sec.to_vec(),
            strings: strings.to_vec(),
            by_name,
            next_same_hash,
        })
    }

    /// Byte offset of a (possibly nested) member, e.g.
    /// `member_offset("sk_buff", &["dev"])` or `member_offset("net", &["ns", "inum"])`.
    ///
    /// `struct_name` is a struct (a non-empty definition preferred), else a
    /// union, else a typedef of either (`possible_net_t`).
    /// Members of anonymous structs/unions are found as if they were direct
    /// members (as C sees them). Each path element except the last must be a
    /// struct/union (through typedef/const/volatile); pointers are not
    /// followed. An empty path gives 0. Bitfields are an error.
    pub fn member_offset(&self, struct_name: &str, path: &[&str]) -> Result<u32, BtfError> {
        self.locate(struct_name, path).map(|(off, _)| off)
    }

    /// Size in bytes of the member's type (typedef/const/volatile resolved,
    /// pointers are 8 bytes). An empty path gives the struct's size.
    pub fn member_size(&self, struct_name: &str, path: &[&str]) -> Result<u32, BtfError> {
        let (_, type_id) = self.locate(struct_name, path)?;
        self.size_of(type_id, 0)
    }

    /// Size in bytes of a struct; same as `member_size(name, &[])`.
    #[cfg(test)]
    pub fn struct_size(&self, struct_name: &str) -> Result<u32, BtfError> {
        self.member_size(struct_name, &[])
    }

    /// Enumerators of the enum (32- or 64-bit) named `enum_name`, as raw
    /// `(name, value)` pairs in declaration order; `None` if there is no such
    /// enum. Unsigned 64-bit values above `i64::MAX` wrap to negative.
    pub fn enum_values(&self, enum_name: &str) -> Option<Vec<(String, i64)>> {
        let mut candidates = self
            .ids_named(enum_name)
            .filter(|(_, t)| matches!(t.kind(), kind::ENUM | kind::ENUM64));
        let first = candidates.next()?;
        // An enum with no enumerators is a forward declaration; prefer a definition.
        let (_, t) = std::iter::once(first)
            .chain(candidates)
            .find(|(_, t)| t.vlen() > 0)
            .unwrap_or(first);
        let is64 = t.kind() == kind::ENUM64;
        let stride = if is64 { 12 } else { 8 };
        let mut out = Vec::with_capacity(t.vlen());
        for i in 0..t.vlen() {
            let at = t.extra as usize + i * stride;
            let name_off = self.u32_at(at)?;
            let lo = self.u32_at(at + 4)?;
            let value = if is64 {
                let hi = self.u32_at(at + 8)?;
                ((u64::from(hi) << 32) | u64::from(lo)) as i64
            } else if t.kind_flag() {
                i64::from(lo as i32) // kind_flag marks a signed enum
            } else {
                i64::from(lo)
            };
            out.push((self.name_string(name_off), value));
        }
        Some(out)
    }

    /// Whether a function (BTF `FUNC`) named `name` exists.
    pub fn has_func(&self, name: &str) -> bool {
        self.ids_named(name).any(|(_, t)| t.kind() == kind::FUNC)
    }

    /// Number of arguments of the BTF tracepoint `tp` (from the prototype
    /// behind typedef `btf_trace_<tp>`), not counting the leading `void *`
    /// context. `None` if the kernel has no such tracepoint.
    pub fn tracepoint_params(&self, tp: &str) -> Option<usize> {
        let name = format!("btf_trace_{tp}");
        let (_, td) = self
            .ids_named(&name)
            .find(|(_, t)| t.kind() == kind::TYPEDEF)?;
        let (_, ptr) = self.resolve(td.size_or_type).ok()?;
        if ptr.kind() != kind::PTR {
            return None;
        }
        let (_, proto) = self.resolve(ptr.size_or_type).ok()?;
        if proto.kind() != kind::FUNC_PROTO || proto.vlen() == 0 {
            return None;
        }
        let mut params = proto.vlen();
        // A trailing parameter of type void marks a variadic prototype.
        let last_type = self.u32_at(proto.extra as usize + (params - 1) * 8 + 4)?;
        if last_type == 0 {
            params -= 1;
        }
        params.checked_sub(1)
    }
}
