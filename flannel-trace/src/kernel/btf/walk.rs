//! Walking the type graph: member paths, sizes, typedef chains, the name
//! index. Every walk is depth- and work-limited.

use super::{
    Btf, BtfError,
    error::malformed,
    format::{Member, Type, fnv1a, kind, kind_name, read_u32, string_at},
};

/// Pointer size of the targets we support (64-bit kernels only).
const PTR_SIZE: u32 = 8;
/// Limit on typedef/const chains and anonymous-member nesting. Real kernels
/// nest a handful of levels; anything deeper is a cycle in corrupt data.
const MAX_DEPTH: usize = 32;
/// Limit on members visited by one lookup, so a corrupt graph in which many
/// anonymous members share a type cannot make a lookup exponential.
const MAX_VISITS: usize = 1 << 20;

impl Btf {
    /// Walks `path` from `struct_name`; returns (byte offset, member type id).
    pub(super) fn locate(&self, struct_name: &str, path: &[&str]) -> Result<(u32, u32), BtfError> {
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
    pub(super) fn find_composite(&self, name: &str) -> Result<u32, BtfError> {
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
    pub(super) fn find_member(
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
    pub(super) fn member(&self, id: u32, t: &Type, i: usize) -> Result<Member, BtfError> {
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
    pub(super) fn is_int_bitfield(&self, type_id: u32) -> Result<bool, BtfError> {
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
    pub(super) fn size_of(&self, id: u32, depth: usize) -> Result<u32, BtfError> {
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
    pub(super) fn resolve(&self, mut id: u32) -> Result<(u32, Type), BtfError> {
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

    pub(super) fn ty(&self, id: u32) -> Result<Type, BtfError> {
        self.types.get(id as usize).copied().ok_or_else(|| {
            malformed(format!(
                "reference to type id {id}, but only {} types exist",
                self.types.len()
            ))
        })
    }

    /// All types named exactly `name`, in id order.
    pub(super) fn ids_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (u32, Type)> + 'a {
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

    pub(super) fn u32_at(&self, off: usize) -> Option<u32> {
        read_u32(&self.type_data, off, self.big_endian)
    }

    /// The NUL-terminated string at `off` (empty if out of range; offsets are
    /// validated at parse time, so that does not happen).
    pub(super) fn name_bytes(&self, off: u32) -> &[u8] {
        string_at(&self.strings, off)
    }

    pub(super) fn name_string(&self, off: u32) -> String {
        String::from_utf8_lossy(self.name_bytes(off)).into_owned()
    }
}
