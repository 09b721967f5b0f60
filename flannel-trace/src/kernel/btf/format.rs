//! The BTF blob's layout: kinds, the type header, sections, and the one
//! pass over the type section that checks every offset, plus the name index.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::error::{BtfError, malformed};

pub(super) const MAGIC: u16 = 0xeb9f;
/// Size of the original header; newer kernels may append fields (`hdr_len`).
pub(super) const MIN_HDR_LEN: usize = 24;
/// Size of the common `struct btf_type` header that starts every type.
pub(super) const TYPE_HDR_LEN: usize = 12;

/// BTF kind numbers (`info` bits 24-28).
pub(super) mod kind {
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
pub(super) fn kind_name(k: u8) -> &'static str {
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

/// One parsed `struct btf_type` header plus where its kind-specific data is.
#[derive(Clone, Copy, Debug)]
pub(super) struct Type {
    pub(super) name_off: u32,
    pub(super) info: u32,
    /// `size` or `type`, depending on the kind.
    pub(super) size_or_type: u32,
    /// Byte offset, in the type section, of the data that follows the header.
    pub(super) extra: u32,
}

impl Type {
    pub(super) const VOID: Type = Type {
        name_off: 0,
        info: 0,
        size_or_type: 0,
        extra: 0,
    };

    pub(super) fn kind(&self) -> u8 {
        ((self.info >> 24) & 0x1f) as u8
    }

    pub(super) fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }

    pub(super) fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }

    pub(super) fn is_composite(&self) -> bool {
        matches!(self.kind(), kind::STRUCT | kind::UNION)
    }
}

/// A struct/union member as stored (`struct btf_member`), decoded.
#[derive(Clone, Copy, Debug)]
pub(super) struct Member {
    pub(super) name_off: u32,
    pub(super) type_id: u32,
    pub(super) bit_offset: u64,
    /// Non-zero only for bitfields in structs with `kind_flag` set.
    pub(super) bitfield_size: u32,
}

/// The name index keys are already FNV hashes; hashing them again with
/// SipHash would only cost time.
#[derive(Default)]
pub(super) struct PassThroughHasher(u64);

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

pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub(super) fn read_u32(data: &[u8], off: usize, be: bool) -> Option<u32> {
    let b: [u8; 4] = data.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(if be {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

/// A header-relative section `[off, off+len)` of `data`, bounds-checked.
pub(super) fn section<'a>(
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
pub(super) fn trailing_len(k: u8, vlen: usize, layout: &[u8]) -> Option<usize> {
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

pub(super) fn string_at(strings: &[u8], off: u32) -> &[u8] {
    let rest = strings.get(off as usize..).unwrap_or(&[]);
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    &rest[..end]
}

/// Walks the type section once, recording each type header and checking that
/// its kind-specific data and every name offset in it are in bounds.
pub(super) fn parse_types(
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

pub(super) type NameIndex = HashMap<u64, u32, BuildHasherDefault<PassThroughHasher>>;

/// Builds hash chains of named types. Walking ids backwards and pushing at the
/// head leaves every chain in ascending id order, so "first match" is stable.
pub(super) fn index_names(types: &[Type], strings: &[u8]) -> (NameIndex, Vec<u32>) {
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
