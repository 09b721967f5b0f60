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

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};

/// Where the running kernel exposes its own BTF.
pub const VMLINUX_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Pointer size of the targets we support (64-bit kernels only).
const PTR_SIZE: u32 = 8;
const MAGIC: u16 = 0xeb9f;
/// Size of the original header; newer kernels may append fields (`hdr_len`).
const MIN_HDR_LEN: usize = 24;
/// Size of the common `struct btf_type` header that starts every type.
const TYPE_HDR_LEN: usize = 12;
/// Limit on typedef/const chains and anonymous-member nesting. Real kernels
/// nest a handful of levels; anything deeper is a cycle in corrupt data.
const MAX_DEPTH: usize = 32;
/// Limit on members visited by one lookup, so a corrupt graph in which many
/// anonymous members share a type cannot make a lookup exponential.
const MAX_VISITS: usize = 1 << 20;

/// BTF kind numbers (`info` bits 24-28).
mod kind {
    pub const INT: u8 = 1;
    pub const PTR: u8 = 2;
    pub const ARRAY: u8 = 3;
    pub const STRUCT: u8 = 4;
    pub const UNION: u8 = 5;
    pub const ENUM: u8 = 6;
    pub const FWD: u8 = 7;
    pub const TYPEDEF: u8 = 8;
    pub const VOLATILE: u8 = 9;
    pub const CONST: u8 = 10;
    pub const RESTRICT: u8 = 11;
    pub const FUNC: u8 = 12;
    pub const FUNC_PROTO: u8 = 13;
    pub const VAR: u8 = 14;
    pub const DATASEC: u8 = 15;
    pub const FLOAT: u8 = 16;
    pub const DECL_TAG: u8 = 17;
    pub const TYPE_TAG: u8 = 18;
    pub const ENUM64: u8 = 19;
}

/// Human-readable kind name, for error messages.
fn kind_name(k: u8) -> &'static str {
    match k {
        0 => "void",
        kind::INT => "int",
        kind::PTR => "pointer",
        kind::ARRAY => "array",
        kind::STRUCT => "struct",
        kind::UNION => "union",
        kind::ENUM => "enum",
        kind::FWD => "forward declaration",
        kind::TYPEDEF => "typedef",
        kind::VOLATILE => "volatile",
        kind::CONST => "const",
        kind::RESTRICT => "restrict",
        kind::FUNC => "function",
        kind::FUNC_PROTO => "function prototype",
        kind::VAR => "variable",
        kind::DATASEC => "data section",
        kind::FLOAT => "float",
        kind::DECL_TAG => "decl tag",
        kind::TYPE_TAG => "type tag",
        kind::ENUM64 => "enum64",
        _ => "unknown kind",
    }
}

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
fn io_hint(path: &Path, err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::NotFound if path == Path::new(VMLINUX_BTF_PATH) => {
            " (kernel built without CONFIG_DEBUG_INFO_BTF?)"
        }
        std::io::ErrorKind::PermissionDenied => " (permission denied; run as root?)",
        _ => "",
    }
}

fn malformed(msg: impl Into<String>) -> BtfError {
    BtfError::Malformed(msg.into())
}

/// One parsed `struct btf_type` header plus where its kind-specific data is.
#[derive(Clone, Copy, Debug)]
struct Type {
    name_off: u32,
    info: u32,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
    /// Byte offset, in the type section, of the data that follows the header.
    extra: u32,
}

impl Type {
    const VOID: Type = Type {
        name_off: 0,
        info: 0,
        size_or_type: 0,
        extra: 0,
    };

    fn kind(&self) -> u8 {
        ((self.info >> 24) & 0x1f) as u8
    }

    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }

    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }

    fn is_composite(&self) -> bool {
        matches!(self.kind(), kind::STRUCT | kind::UNION)
    }
}

/// A struct/union member as stored (`struct btf_member`), decoded.
#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u64,
    /// Non-zero only for bitfields in structs with `kind_flag` set.
    bitfield_size: u32,
}

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

/// The name index keys are already FNV hashes; hashing them again with
/// SipHash would only cost time.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a(bytes);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn read_u32(data: &[u8], off: usize, be: bool) -> Option<u32> {
    let b: [u8; 4] = data.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(if be {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

/// A header-relative section `[off, off+len)` of `data`, bounds-checked.
fn section<'a>(
    data: &'a [u8],
    hdr_len: usize,
    off: u32,
    len: u32,
    what: &str,
) -> Result<&'a [u8], BtfError> {
    let start = hdr_len.checked_add(off as usize);
    let end = start.and_then(|s| s.checked_add(len as usize));
    match (start, end) {
        (Some(s), Some(e)) if e <= data.len() => Ok(&data[s..e]),
        _ => Err(malformed(format!(
            "{what} section (offset {off}, length {len} after a {hdr_len}-byte header) extends past the end of the {}-byte blob",
            data.len()
        ))),
    }
}

/// Size in bytes of the kind-specific data following a type header. Kinds
/// this reader does not know can still be skipped when the blob carries a
/// layout section (newer kernels) describing them.
fn trailing_len(k: u8, vlen: usize, layout: &[u8]) -> Option<usize> {
    let (fixed, per_elem) = match k {
        kind::INT | kind::VAR | kind::DECL_TAG => (4, 0),
        kind::ARRAY => (12, 0),
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => (0, 12),
        kind::ENUM | kind::FUNC_PROTO => (0, 8),
        kind::PTR
        | kind::FWD
        | kind::TYPEDEF
        | kind::VOLATILE
        | kind::CONST
        | kind::RESTRICT
        | kind::FUNC
        | kind::FLOAT
        | kind::TYPE_TAG => (0, 0),
        _ => {
            // struct btf_layout { u8 info_sz; u8 elem_sz; u16 flags; }, indexed by kind.
            let entry = layout.get(usize::from(k) * 4..usize::from(k) * 4 + 4)?;
            (usize::from(entry[0]), usize::from(entry[1]))
        }
    };
    fixed.checked_add(per_elem.checked_mul(vlen)?)
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

    /// Walks `path` from `struct_name`; returns (byte offset, member type id).
    fn locate(&self, struct_name: &str, path: &[&str]) -> Result<(u32, u32), BtfError> {
        let mut current = self.find_composite(struct_name)?;
        let mut type_id = current;
        let mut bits: u64 = 0;
        let mut visits = 0;
        for (i, &member) in path.iter().enumerate() {
            let dotted = || path[..=i].join(".");
            if i > 0 {
                let (id, t) = self.resolve(type_id)?;
                if !t.is_composite() {
                    return Err(BtfError::NotComposite {
                        ty: struct_name.to_string(),
                        member: path[..i].join("."),
                        kind: kind_name(t.kind()),
                    });
                }
                current = id;
            }
            let (rel, m) = self
                .find_member(current, member, 0, &mut visits)?
                .ok_or_else(|| BtfError::NoSuchMember {
                    ty: struct_name.to_string(),
                    member: dotted(),
                })?;
            let abs = bits.checked_add(rel).ok_or_else(|| {
                malformed(format!("offset of {struct_name}.{} overflows", dotted()))
            })?;
            if m.bitfield_size != 0 || abs % 8 != 0 || self.is_int_bitfield(m.type_id)? {
                return Err(BtfError::Bitfield {
                    ty: struct_name.to_string(),
                    member: dotted(),
                    bit_offset: abs,
                });
            }
            bits = abs;
            type_id = m.type_id;
        }
        let offset = u32::try_from(bits / 8).map_err(|_| {
            malformed(format!(
                "offset of {struct_name}.{} does not fit in 32 bits",
                path.join(".")
            ))
        })?;
        Ok((offset, type_id))
    }

    /// Id of the struct named `name`: the first non-empty definition, else the
    /// first empty one; then unions of that name, then typedefs of a
    /// struct/union (`possible_net_t`).
    fn find_composite(&self, name: &str) -> Result<u32, BtfError> {
        for k in [kind::STRUCT, kind::UNION] {
            let mut first = None;
            for (id, t) in self.ids_named(name).filter(|(_, t)| t.kind() == k) {
                if t.size_or_type != 0 {
                    return Ok(id);
                }
                first.get_or_insert(id);
            }
            if let Some(id) = first {
                return Ok(id);
            }
        }
        // Types like `possible_net_t` are typedefs of anonymous structs.
        for (id, t) in self.ids_named(name) {
            if t.kind() == kind::TYPEDEF
                && let Ok((target, resolved)) = self.resolve(id)
                && resolved.is_composite()
            {
                return Ok(target);
            }
        }
        Err(BtfError::NoSuchType(name.to_string()))
    }

    /// Searches composite `id` for `name`, descending into anonymous
    /// struct/union members. Returns the member's bit offset relative to `id`.
    fn find_member(
        &self,
        id: u32,
        name: &str,
        depth: usize,
        visits: &mut usize,
    ) -> Result<Option<(u64, Member)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed(format!(
                "anonymous members nested deeper than {MAX_DEPTH} levels below type id {id} (cycle?)"
            )));
        }
        let t = self.ty(id)?;
        for i in 0..t.vlen() {
            *visits += 1;
            if *visits > MAX_VISITS {
                return Err(malformed(format!(
                    "looking up `{name}` visited more than {MAX_VISITS} members"
                )));
            }
            let m = self.member(id, &t, i)?;
            let member_name = self.name_bytes(m.name_off);
            if member_name == name.as_bytes() {
                return Ok(Some((m.bit_offset, m)));
            }
            if member_name.is_empty() {
                let (inner_id, inner) = self.resolve(m.type_id)?;
                if inner.is_composite()
                    && let Some((rel, found)) =
                        self.find_member(inner_id, name, depth + 1, visits)?
                {
                    return Ok(Some((m.bit_offset + rel, found)));
                }
            }
        }
        Ok(None)
    }

    /// Member `i` of composite `t` (type id `id`, for messages).
    fn member(&self, id: u32, t: &Type, i: usize) -> Result<Member, BtfError> {
        let at = t.extra as usize + i * 12;
        let read = |off| {
            self.u32_at(at + off)
                .ok_or_else(|| malformed(format!("member {i} of type id {id} is out of bounds")))
        };
        let (name_off, type_id, raw) = (read(0)?, read(4)?, read(8)?);
        // With kind_flag, the top 8 bits hold the bitfield size.
        let (bit_offset, bitfield_size) = if t.kind_flag() {
            (raw & 0x00ff_ffff, raw >> 24)
        } else {
            (raw, 0)
        };
        Ok(Member {
            name_off,
            type_id,
            bit_offset: u64::from(bit_offset),
            bitfield_size,
        })
    }

    /// Structs without kind_flag encode bitfields in the INT type instead:
    /// a bit offset or a width narrower than the int's size.
    fn is_int_bitfield(&self, type_id: u32) -> Result<bool, BtfError> {
        let (id, t) = self.resolve(type_id)?;
        if t.kind() != kind::INT {
            return Ok(false);
        }
        let enc = self
            .u32_at(t.extra as usize)
            .ok_or_else(|| malformed(format!("int type id {id} is truncated")))?;
        let (int_offset, nr_bits) = ((enc >> 16) & 0xff, enc & 0xff);
        Ok(int_offset != 0 || u64::from(nr_bits) != u64::from(t.size_or_type) * 8)
    }

    /// Size in bytes of type `id`.
    fn size_of(&self, id: u32, depth: usize) -> Result<u32, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed(format!(
                "array nesting deeper than {MAX_DEPTH} at type id {id}"
            )));
        }
        let (id, t) = self.resolve(id)?;
        match t.kind() {
            kind::INT
            | kind::ENUM
            | kind::ENUM64
            | kind::STRUCT
            | kind::UNION
            | kind::FLOAT
            | kind::DATASEC => Ok(t.size_or_type),
            kind::PTR => Ok(PTR_SIZE),
            kind::VAR => self.size_of(t.size_or_type, depth + 1),
            kind::ARRAY => {
                let at = t.extra as usize;
                let elem = self.u32_at(at);
                let nelems = self.u32_at(at + 8);
                let (Some(elem), Some(nelems)) = (elem, nelems) else {
                    return Err(malformed(format!("array type id {id} is truncated")));
                };
                self.size_of(elem, depth + 1)?
                    .checked_mul(nelems)
                    .ok_or_else(|| malformed(format!("size of array type id {id} overflows")))
            }
            k => Err(malformed(format!(
                "type id {id} is a {} and has no size",
                kind_name(k)
            ))),
        }
    }

    /// Follows typedef/const/volatile/restrict/type-tag to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<(u32, Type), BtfError> {
        for _ in 0..MAX_DEPTH {
            let t = self.ty(id)?;
            match t.kind() {
                kind::TYPEDEF | kind::CONST | kind::VOLATILE | kind::RESTRICT | kind::TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Ok((id, t)),
            }
        }
        Err(malformed(format!(
            "type qualifier chain longer than {MAX_DEPTH} at type id {id} (cycle?)"
        )))
    }

    fn ty(&self, id: u32) -> Result<Type, BtfError> {
        self.types.get(id as usize).copied().ok_or_else(|| {
            malformed(format!(
                "reference to type id {id}, but only {} types exist",
                self.types.len()
            ))
        })
    }

    /// All types named exactly `name`, in id order.
    fn ids_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (u32, Type)> + 'a {
        let mut next = self
            .by_name
            .get(&fnv1a(name.as_bytes()))
            .copied()
            .unwrap_or(0);
        std::iter::from_fn(move || {
            while next != 0 {
                let id = next;
                next = self.next_same_hash.get(id as usize).copied().unwrap_or(0);
                let t = self.types.get(id as usize)?;
                if self.name_bytes(t.name_off) == name.as_bytes() {
                    return Some((id, *t));
                }
            }
            None
        })
    }

    fn u32_at(&self, off: usize) -> Option<u32> {
        read_u32(&self.type_data, off, self.big_endian)
    }

    /// The NUL-terminated string at `off` (empty if out of range; offsets are
    /// validated at parse time, so that does not happen).
    fn name_bytes(&self, off: u32) -> &[u8] {
        string_at(&self.strings, off)
    }

    fn name_string(&self, off: u32) -> String {
        String::from_utf8_lossy(self.name_bytes(off)).into_owned()
    }
}

fn string_at(strings: &[u8], off: u32) -> &[u8] {
    let rest = strings.get(off as usize..).unwrap_or(&[]);
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    &rest[..end]
}

/// Walks the type section once, recording each type header and checking that
/// its kind-specific data and every name offset in it are in bounds.
fn parse_types(
    data: &[u8],
    strings: &[u8],
    layout: &[u8],
    be: bool,
) -> Result<Vec<Type>, BtfError> {
    let mut types = Vec::with_capacity(data.len() / 32 + 1);
    types.push(Type::VOID);
    let check_name = |name_off: u32, id: usize, what: &str| {
        if (name_off as usize) < strings.len() {
            Ok(())
        } else {
            Err(malformed(format!(
                "type id {id}: {what} name offset {name_off} is outside the {}-byte string section (split BTF of a module is not supported)",
                strings.len()
            )))
        }
    };
    let mut off = 0usize;
    while off < data.len() {
        let id = types.len();
        let truncated = || {
            malformed(format!(
                "type id {id} at byte {off} of the type section is truncated"
            ))
        };
        let name_off = read_u32(data, off, be).ok_or_else(truncated)?;
        let info = read_u32(data, off + 4, be).ok_or_else(truncated)?;
        let size_or_type = read_u32(data, off + 8, be).ok_or_else(truncated)?;
        let t = Type {
            name_off,
            info,
            size_or_type,
            extra: u32::try_from(off + TYPE_HDR_LEN)
                .map_err(|_| malformed("type section larger than 4 GiB"))?,
        };
        let len = trailing_len(t.kind(), t.vlen(), layout).ok_or_else(|| {
            malformed(format!(
                "type id {id} has kind {} which this reader does not know, and the blob has no layout entry for it",
                t.kind()
            ))
        })?;
        let end = (off + TYPE_HDR_LEN)
            .checked_add(len)
            .filter(|&e| e <= data.len())
            .ok_or_else(truncated)?;
        check_name(name_off, id, "type")?;
        // Members, enumerators and parameters all start with a name offset.
        let stride = match t.kind() {
            kind::STRUCT | kind::UNION | kind::ENUM64 => 12,
            kind::ENUM | kind::FUNC_PROTO => 8,
            _ => 0,
        };
        if stride != 0 {
            for i in 0..t.vlen() {
                let elem_name =
                    read_u32(data, t.extra as usize + i * stride, be).ok_or_else(truncated)?;
                check_name(elem_name, id, "member")?;
            }
        }
        types.push(t);
        off = end;
    }
    Ok(types)
}

type NameIndex = HashMap<u64, u32, BuildHasherDefault<PassThroughHasher>>;

/// Builds hash chains of named types. Walking ids backwards and pushing at the
/// head leaves every chain in ascending id order, so "first match" is stable.
fn index_names(types: &[Type], strings: &[u8]) -> (NameIndex, Vec<u32>) {
    let mut heads = NameIndex::with_capacity_and_hasher(types.len(), Default::default());
    let mut next = vec![0u32; types.len()];
    for (id, t) in types.iter().enumerate().skip(1).rev() {
        let name = string_at(strings, t.name_off);
        if name.is_empty() {
            continue;
        }
        // Ids fit in u32: each type takes at least 12 bytes of a u32-sized section.
        let id32 = id as u32;
        if let Some(prev) = heads.insert(fnv1a(name), id32) {
            next[id] = prev;
        }
    }
    (heads, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Assembles BTF blobs by hand, so tests control every byte.
    struct Builder {
        be: bool,
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new(be: bool) -> Self {
            Builder {
                be,
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }

        fn put(&mut self, v: u32) {
            let b = if self.be {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            self.types.extend_from_slice(&b);
        }

        fn head(&mut self, name: &str, k: u8, kflag: bool, vlen: usize, sot: u32) -> u32 {
            let n = self.s(name);
            self.put(n);
            self.put((u32::from(kflag) << 31) | (u32::from(k) << 24) | vlen as u32);
            self.put(sot);
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32, bits: u32) -> u32 {
            let id = self.head(name, kind::INT, false, 0, size);
            self.put(bits);
            id
        }

        fn simple(&mut self, name: &str, k: u8, to: u32) -> u32 {
            self.head(name, k, false, 0, to)
        }

        fn composite(
            &mut self,
            k: u8,
            name: &str,
            size: u32,
            kflag: bool,
            m: &[(&str, u32, u32)],
        ) -> u32 {
            let id = self.head(name, k, kflag, m.len(), size);
            for &(n, ty, off) in m {
                let n = self.s(n);
                self.put(n);
                self.put(ty);
                self.put(off);
            }
            id
        }

        fn enum32(&mut self, name: &str, signed: bool, vals: &[(&str, i32)]) -> u32 {
            let id = self.head(name, kind::ENUM, signed, vals.len(), 4);
            for &(n, v) in vals {
                let n = self.s(n);
                self.put(n);
                self.put(v as u32);
            }
            id
        }

        fn enum64(&mut self, name: &str, vals: &[(&str, u64)]) -> u32 {
            let id = self.head(name, kind::ENUM64, false, vals.len(), 8);
            for &(n, v) in vals {
                let n = self.s(n);
                self.put(n);
                self.put(v as u32);
                self.put((v >> 32) as u32);
            }
            id
        }

        fn proto(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
            let id = self.head("", kind::FUNC_PROTO, false, params.len(), ret);
            for &(n, ty) in params {
                let n = self.s(n);
                self.put(n);
                self.put(ty);
            }
            id
        }

        fn finish(&self, extra_hdr: &[u32]) -> Vec<u8> {
            let hdr_len = 24 + 4 * extra_hdr.len() as u32;
            let mut out = Vec::new();
            let mut put = |v: u32| {
                out.extend_from_slice(&if self.be {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                })
            };
            put(0); // placeholder for magic/version/flags
            put(hdr_len);
            put(0);
            put(self.types.len() as u32);
            put(self.types.len() as u32);
            put(self.strings.len() as u32);
            for &v in extra_hdr {
                put(v);
            }
            let magic = if self.be {
                MAGIC.to_be_bytes()
            } else {
                MAGIC.to_le_bytes()
            };
            out[..4].copy_from_slice(&[magic[0], magic[1], 1, 0]);
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A blob exercising every kind. Layout of `struct outer` (40 bytes):
    /// a@0, anonymous union {struct inner *p; unsigned long x;}@8, t@16
    /// (typedef of const int), in@20 (struct inner {int y; int z;}), arr@28 (int[3]).
    fn sample(be: bool) -> Vec<u8> {
        let mut b = Builder::new(be);
        let int = b.int("int", 4, 32);
        let ulong = b.int("long unsigned int", 8, 64);
        let inner = b.composite(
            kind::STRUCT,
            "inner",
            8,
            false,
            &[("y", int, 0), ("z", int, 32)],
        );
        let pinner = b.simple("", kind::PTR, inner);
        let cint = b.simple("", kind::CONST, int);
        let my_u32 = b.simple("my_u32", kind::TYPEDEF, cint);
        let vol = b.simple("", kind::VOLATILE, my_u32);
        let anon = b.composite(
            kind::UNION,
            "",
            8,
            false,
            &[("p", pinner, 0), ("x", ulong, 0)],
        );
        // Kinds the queries never touch, to check the walk skips them correctly.
        let arr = b.head("", kind::ARRAY, false, 0, 0);
        b.put(int);
        b.put(int);
        b.put(3);
        b.simple("fwd_only", kind::FWD, 0);
        b.simple("", kind::RESTRICT, pinner);
        let float = b.head("double", kind::FLOAT, false, 0, 8);
        let var = b.head("some_var", kind::VAR, false, 0, int);
        b.put(1);
        b.head(".data", kind::DATASEC, false, 1, 4);
        b.put(var);
        b.put(0);
        b.put(4);
        b.head("tag", kind::DECL_TAG, false, 0, inner);
        b.put(u32::MAX);
        b.simple("user", kind::TYPE_TAG, pinner);
        // A zero-size placeholder must lose against the real definition below.
        b.composite(kind::STRUCT, "outer", 0, false, &[]);
        b.composite(
            kind::STRUCT,
            "outer",
            40,
            false,
            &[
                ("a", int, 0),
                ("", anon, 64),
                ("t", vol, 128),
                ("in", inner, 160),
                ("arr", arr, 224),
            ],
        );
        b.composite(
            kind::STRUCT,
            "flagged",
            8,
            true,
            &[
                ("lo", int, (3 << 24) | 8),
                ("mid", int, (5 << 24) | 11),
                ("whole", int, 32),
            ],
        );
        let int3 = b.int("int3", 4, 3);
        b.composite(
            kind::STRUCT,
            "oldstyle",
            8,
            false,
            &[("bits", int3, 0), ("odd", int, 3), ("f", float, 0)],
        );
        b.enum32("signed_e", true, &[("NEG", -1), ("TWO", 2)]);
        b.enum32("unsigned_e", false, &[("BIG", -1)]);
        b.enum32("e64", false, &[]); // forward declaration of the enum64 below
        b.enum64("e64", &[("HUGE", 1 << 40), ("MAX", u64::MAX)]);
        let pvoid = b.simple("", kind::PTR, 0);
        let proto = b.proto(0, &[("__data", pvoid), ("skb", pinner), ("reason", int)]);
        let pproto = b.simple("", kind::PTR, proto);
        b.simple("btf_trace_foo", kind::TYPEDEF, pproto);
        let fproto = b.proto(int, &[("x", int)]);
        b.simple("my_func", kind::FUNC, fproto);
        b.simple("not_a_func", kind::TYPEDEF, int);
        let anon_s = b.composite(
            kind::STRUCT,
            "",
            16,
            false,
            &[("pad", ulong, 0), ("w", pinner, 64)],
        );
        b.simple("wrapped_t", kind::TYPEDEF, anon_s);
        b.finish(&[])
    }

    #[test]
    fn synthetic_offsets_and_sizes() {
        for be in [false, true] {
            let btf = Btf::from_bytes(&sample(be)).expect("sample parses");
            assert_eq!(btf.member_offset("outer", &["a"]).unwrap(), 0);
            assert_eq!(
                btf.member_offset("outer", &["p"]).unwrap(),
                8,
                "inside anonymous union"
            );
            assert_eq!(btf.member_size("outer", &["p"]).unwrap(), 8, "pointer size");
            assert_eq!(btf.member_size("outer", &["x"]).unwrap(), 8);
            assert_eq!(btf.member_offset("outer", &["t"]).unwrap(), 16);
            assert_eq!(
                btf.member_size("outer", &["t"]).unwrap(),
                4,
                "volatile->typedef->const->int"
            );
            assert_eq!(btf.member_offset("outer", &["in", "z"]).unwrap(), 24);
            assert_eq!(btf.member_size("outer", &["in"]).unwrap(), 8);
            assert_eq!(btf.member_offset("outer", &["arr"]).unwrap(), 28);
            assert_eq!(btf.member_size("outer", &["arr"]).unwrap(), 12);
            assert_eq!(btf.member_offset("outer", &[]).unwrap(), 0);
            assert_eq!(
                btf.struct_size("outer").unwrap(),
                40,
                "non-empty definition preferred"
            );
            assert_eq!(btf.member_offset("flagged", &["whole"]).unwrap(), 4);
            assert_eq!(btf.member_offset("inner", &["z"]).unwrap(), 4);
            assert_eq!(
                btf.member_offset("wrapped_t", &["w"]).unwrap(),
                8,
                "typedef of anonymous struct"
            );
            assert_eq!(btf.struct_size("wrapped_t").unwrap(), 16);
        }
    }

    #[test]
    fn synthetic_errors() {
        let btf = Btf::from_bytes(&sample(false)).unwrap();
        let err = |s: &str, p: &[&str]| btf.member_offset(s, p).unwrap_err();
        assert!(matches!(err("nope", &["a"]), BtfError::NoSuchType(n) if n == "nope"));
        assert!(
            matches!(err("outer", &["b"]), BtfError::NoSuchMember { member, .. } if member == "b")
        );
        assert!(
            matches!(err("outer", &["in", "w"]), BtfError::NoSuchMember { member, .. } if member == "in.w")
        );
        assert!(matches!(
            err("outer", &["p", "y"]),
            BtfError::NotComposite {
                kind: "pointer",
                ..
            }
        ));
        assert!(matches!(
            err("outer", &["a", "y"]),
            BtfError::NotComposite { kind: "int", .. }
        ));
        // kind_flag bitfields, byte-aligned or not, and the old INT encoding.
        for (s, m) in [
            ("flagged", "lo"),
            ("flagged", "mid"),
            ("oldstyle", "bits"),
            ("oldstyle", "odd"),
        ] {
            let e = err(s, &[m]);
            assert!(matches!(e, BtfError::Bitfield { .. }), "{s}.{m}: {e}");
            assert!(btf.member_size(s, &[m]).is_err());
        }
        let msg = err("flagged", &["mid"]).to_string();
        assert!(
            msg.contains("flagged.mid") && msg.contains("bit offset 11"),
            "{msg}"
        );
    }

    #[test]
    fn synthetic_enums_funcs_tracepoints() {
        let btf = Btf::from_bytes(&sample(true)).unwrap();
        let vals = |n| btf.enum_values(n).unwrap();
        assert_eq!(
            vals("signed_e"),
            vec![("NEG".to_string(), -1), ("TWO".to_string(), 2)]
        );
        assert_eq!(vals("unsigned_e"), vec![("BIG".to_string(), 0xffff_ffff)]);
        assert_eq!(
            vals("e64"),
            vec![("HUGE".to_string(), 1 << 40), ("MAX".to_string(), -1)]
        );
        assert!(btf.enum_values("outer").is_none());
        assert!(btf.enum_values("absent").is_none());
        assert!(btf.has_func("my_func"));
        assert!(!btf.has_func("not_a_func"));
        assert!(!btf.has_func("absent"));
        assert_eq!(btf.tracepoint_params("foo"), Some(2));
        assert_eq!(btf.tracepoint_params("bar"), None);
    }

    #[test]
    fn header_length_and_layout_section_respected() {
        // Build the sample with a 32-byte header whose layout section is empty.
        let base = sample(false);
        let mut blob = base[..24].to_vec();
        blob[4..8].copy_from_slice(&32u32.to_le_bytes());
        blob.extend_from_slice(&[0; 8]);
        blob.extend_from_slice(&base[24..]);
        let btf = Btf::from_bytes(&blob).unwrap();
        assert_eq!(btf.member_offset("outer", &["in", "z"]).unwrap(), 24);

        // An unknown kind 25 is skippable only when a layout entry sizes it.
        let mut b = Builder::new(false);
        let int = b.int("int", 4, 32);
        b.head("future", 25, false, 2, 0);
        b.put(7); // 4 bytes of fixed data ...
        b.put(1); // ... then 2 elements of 2 bytes each
        b.composite(kind::STRUCT, "after", 8, false, &[("v", int, 32)]);
        let types_len = b.types.len() as u32;
        let mut layout = vec![0u8; 26 * 4];
        layout[25 * 4] = 4;
        layout[25 * 4 + 1] = 2;
        let mut blob = b.finish(&[types_len, layout.len() as u32]);
        // Strings start right after types in finish(); move them after the layout.
        let str_start = 32 + types_len as usize;
        let strings = blob.split_off(str_start);
        blob.extend_from_slice(&layout);
        blob.extend_from_slice(&strings);
        blob[16..20].copy_from_slice(&(types_len + layout.len() as u32).to_le_bytes());
        let btf = Btf::from_bytes(&blob).unwrap();
        assert_eq!(btf.member_offset("after", &["v"]).unwrap(), 4);
        blob[32 + types_len as usize + 25 * 4..][..4].fill(0xff); // no longer fits
        assert!(matches!(
            Btf::from_bytes(&blob),
            Err(BtfError::Malformed(_))
        ));
        let without_layout = b.finish(&[]);
        let e = Btf::from_bytes(&without_layout).unwrap_err().to_string();
        assert!(e.contains("kind 25"), "{e}");
    }

    /// Runs every query on possibly corrupt data; only panics matter here.
    fn exercise(btf: &Btf, structs: &[(&str, &[&str])]) {
        for (s, p) in structs {
            let _ = btf.member_offset(s, p);
            let _ = btf.member_size(s, p);
        }
        let _ = btf.enum_values("skb_drop_reason");
        let _ = btf.enum_values("e64");
        let _ = btf.has_func("my_func");
        let _ = btf.tracepoint_params("foo");
        let _ = btf.tracepoint_params("kfree_skb");
    }

    #[test]
    fn synthetic_corruption_never_panics() {
        let paths: &[(&str, &[&str])] = &[
            ("outer", &["in", "z"]),
            ("outer", &["p"]),
            ("outer", &["arr"]),
            ("flagged", &["lo"]),
        ];
        let blob = sample(false);
        for len in 0..blob.len() {
            if let Ok(btf) = Btf::from_bytes(&blob[..len]) {
                exercise(&btf, paths);
            }
        }
        for pos in 0..blob.len() {
            for x in [0x01, 0x80, 0xff, 0x1f] {
                let mut bad = blob.clone();
                bad[pos] ^= x;
                if let Ok(btf) = Btf::from_bytes(&bad) {
                    exercise(&btf, paths);
                }
            }
        }
    }

    #[test]
    fn cyclic_types_are_errors_not_hangs() {
        let mut b = Builder::new(false);
        // Type 1: struct with an anonymous member of its own type.
        b.composite(kind::STRUCT, "loop", 4, false, &[("", 1, 0), ("", 1, 0)]);
        b.simple("t1", kind::TYPEDEF, 3);
        b.simple("t2", kind::TYPEDEF, 2);
        b.composite(kind::STRUCT, "s", 4, false, &[("m", 2, 0)]);
        let btf = Btf::from_bytes(&b.finish(&[])).unwrap();
        assert!(matches!(
            btf.member_offset("loop", &["x"]),
            Err(BtfError::Malformed(_))
        ));
        assert!(matches!(
            btf.member_size("s", &["m"]),
            Err(BtfError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_garbage_headers() {
        assert!(Btf::from_bytes(&[]).is_err());
        assert!(Btf::from_bytes(b"\x9f\xeb").is_err());
        assert!(Btf::from_bytes(&[0u8; 64]).is_err());
        let mut blob = sample(false);
        blob[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Btf::from_bytes(&blob).is_err());
        let mut blob = sample(false);
        blob[2] = 2;
        assert!(
            Btf::from_bytes(&blob)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
    }

    #[test]
    fn missing_file_errors_mention_path_and_hint() {
        let e = Btf::from_file("/nonexistent/btf").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/btf"), "{e}");
        let e = BtfError::Io {
            path: VMLINUX_BTF_PATH.into(),
            source: std::io::ErrorKind::NotFound.into(),
        }
        .to_string();
        assert!(
            e.contains(VMLINUX_BTF_PATH) && e.contains("CONFIG_DEBUG_INFO_BTF"),
            "{e}"
        );
    }

    /// The running kernel's BTF, or `None` with the reason printed.
    fn real() -> Option<(Vec<u8>, Btf)> {
        let data = match std::fs::read(VMLINUX_BTF_PATH) {
            Ok(d) => d,
            Err(e) => {
                crate::testing::skip_test(&format!(
                    "cannot read {VMLINUX_BTF_PATH} ({e}); kernel without CONFIG_DEBUG_INFO_BTF?"
                ));
                return None;
            }
        };
        let start = std::time::Instant::now();
        let btf = Btf::from_bytes(&data).expect("the running kernel's BTF parses");
        println!(
            "parsed {} bytes, {} types in {:?}",
            data.len(),
            btf.types.len(),
            start.elapsed()
        );
        Some((data, btf))
    }

    #[test]
    fn real_vmlinux_offsets() {
        let Some((_, btf)) = real() else { return };
        let fields: &[(&str, &[&str])] = &[
            ("sk_buff", &["head"]),
            ("sk_buff", &["data"]),
            ("sk_buff", &["len"]),
            ("sk_buff", &["data_len"]),
            ("sk_buff", &["mac_header"]),
            ("sk_buff", &["network_header"]),
            ("sk_buff", &["transport_header"]),
            ("sk_buff", &["protocol"]),
            ("sk_buff", &["dev"]),
            ("net_device", &["ifindex"]),
            ("net_device", &["nd_net"]),
            ("net_device", &["nd_net", "net"]),
            ("possible_net_t", &["net"]),
            ("net", &["ns", "inum"]),
        ];
        let mut seen = std::collections::HashMap::new();
        for (s, p) in fields {
            let size = btf.struct_size(s).unwrap();
            let off = btf.member_offset(s, p).unwrap_or_else(|e| panic!("{e}"));
            let msize = btf.member_size(s, p).unwrap();
            let field = format!("{s}.{}", p.join("."));
            println!("{field:<28} offset {off:5} size {msize} (struct size {size})");
            assert!(off + msize <= size, "{s}.{p:?} ends past the struct");
            if *s == "sk_buff" {
                assert!(
                    seen.insert(off, p[0]).is_none(),
                    "two sk_buff fields at {off}"
                );
            }
        }
        let sz = |s: &str, p: &[&str]| btf.member_size(s, p).unwrap();
        assert_eq!(sz("sk_buff", &["head"]), 8);
        assert_eq!(sz("sk_buff", &["dev"]), 8);
        assert_eq!(sz("sk_buff", &["len"]), 4);
        assert_eq!(sz("sk_buff", &["mac_header"]), 2);
        assert_eq!(sz("sk_buff", &["protocol"]), 2);
        assert_eq!(sz("net", &["ns", "inum"]), 4);
        // Same field reached another way: `headers` is the struct_group() copy
        // holding mac_header, so both paths must agree.
        let via_group = btf.member_offset("sk_buff", &["headers", "mac_header"]);
        println!("sk_buff.headers.mac_header   {via_group:?}");
        if let Ok(v) = via_group {
            assert_eq!(v, btf.member_offset("sk_buff", &["mac_header"]).unwrap());
        }
        // len directly follows the 32-bit-aligned layout: data_len is next.
        assert_eq!(
            btf.member_offset("sk_buff", &["len"]).unwrap() + 4,
            btf.member_offset("sk_buff", &["data_len"]).unwrap()
        );
        assert_eq!(
            btf.member_offset("net_device", &["nd_net", "net"]).unwrap(),
            btf.member_offset("net_device", &["nd_net"]).unwrap()
                + btf.member_offset("possible_net_t", &["net"]).unwrap()
        );
        assert!(matches!(
            btf.member_offset("sk_buff", &["dev", "ifindex"]),
            Err(BtfError::NotComposite { .. })
        ));
    }

    #[test]
    fn real_vmlinux_enums_and_funcs() {
        let Some((_, btf)) = real() else { return };
        let reasons = btf
            .enum_values("skb_drop_reason")
            .expect("enum skb_drop_reason");
        let names: Vec<&str> = reasons.iter().map(|(n, _)| n.as_str()).collect();
        for want in ["NOT_SPECIFIED", "NO_SOCKET", "NETFILTER_DROP"] {
            let full = format!("SKB_DROP_REASON_{want}");
            assert!(names.contains(&full.as_str()), "missing {full}");
        }
        assert!(names.contains(&"SKB_CONSUMED"));
        println!("{} drop reasons", reasons.len());
        for (n, v) in &reasons {
            if n.contains("VXLAN")
                || n.ends_with("NOT_SPECIFIED")
                || n.ends_with("NETFILTER_DROP")
                || n == "SKB_CONSUMED"
            {
                println!("  {n} = {v}");
            }
        }
        println!(
            "tracepoint_params(kfree_skb) = {:?}",
            btf.tracepoint_params("kfree_skb")
        );
        println!(
            "tracepoint_params(consume_skb) = {:?}",
            btf.tracepoint_params("consume_skb")
        );
        println!("has_func(vxlan_rcv) = {}", btf.has_func("vxlan_rcv"));
        assert!(btf.tracepoint_params("kfree_skb").is_some_and(|n| n >= 2));
        assert!(btf.tracepoint_params("no_such_tracepoint").is_none());
        assert!(btf.has_func("sk_skb_reason_drop") || btf.has_func("kfree_skb_reason"));
        assert!(!btf.has_func("sk_buff"));
    }

    #[test]
    fn real_vmlinux_corruption_never_panics() {
        let Some((data, _)) = real() else { return };
        let paths: &[(&str, &[&str])] = &[("sk_buff", &["dev"]), ("net", &["ns", "inum"])];
        let n = data.len();
        for len in [0, 1, 3, 23, 24, 25, 100, 4096, n / 3, n / 2, n - 1] {
            if let Ok(btf) = Btf::from_bytes(&data[..len]) {
                exercise(&btf, paths);
            }
        }
        // Deterministic pseudo-random corruption, mostly inside the header and type section.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut bad = data.clone();
        for round in 0..24 {
            let pos = if round < 8 {
                (rand() % 32) as usize
            } else {
                (rand() % n as u64) as usize
            };
            let old = bad[pos];
            bad[pos] ^= (rand() % 255 + 1) as u8;
            if let Ok(btf) = Btf::from_bytes(&bad) {
                exercise(&btf, paths);
            }
            bad[pos] = old;
        }
        // Many corruptions at once in the type section.
        for _ in 0..2000 {
            let pos = 24 + (rand() % (n as u64 / 2)) as usize;
            bad[pos] = rand() as u8;
        }
        if let Ok(btf) = Btf::from_bytes(&bad) {
            exercise(&btf, paths);
        }
    }
}
