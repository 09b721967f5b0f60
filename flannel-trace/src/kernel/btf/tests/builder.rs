//! Hand-assembled BTF blobs.

use super::super::format::{MAGIC, kind};

/// Assembles BTF blobs by hand, so tests control every byte.
pub(super) struct Builder {
    be: bool,
    pub(super) types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Builder {
    pub(super) fn new(be: bool) -> Self {
        Builder {
            be,
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    pub(super) fn s(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        off
    }

    pub(super) fn put(&mut self, v: u32) {
        let b = if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.types.extend_from_slice(&b);
    }

    pub(super) fn head(&mut self, name: &str, k: u8, kflag: bool, vlen: usize, sot: u32) -> u32 {
        let n = self.s(name);
        self.put(n);
        self.put((u32::from(kflag) << 31) | (u32::from(k) << 24) | vlen as u32);
        self.put(sot);
        self.next_id += 1;
        self.next_id - 1
    }

    pub(super) fn int(&mut self, name: &str, size: u32, bits: u32) -> u32 {
        let id = self.head(name, kind::INT, false, 0, size);
        self.put(bits);
        id
    }

    pub(super) fn simple(&mut self, name: &str, k: u8, to: u32) -> u32 {
        self.head(name, k, false, 0, to)
    }

    pub(super) fn composite(
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

    pub(super) fn enum32(&mut self, name: &str, signed: bool, vals: &[(&str, i32)]) -> u32 {
        let id = self.head(name, kind::ENUM, signed, vals.len(), 4);
        for &(n, v) in vals {
            let n = self.s(n);
            self.put(n);
            self.put(v as u32);
        }
        id
    }

    pub(super) fn enum64(&mut self, name: &str, vals: &[(&str, u64)]) -> u32 {
        let id = self.head(name, kind::ENUM64, false, vals.len(), 8);
        for &(n, v) in vals {
            let n = self.s(n);
            self.put(n);
            self.put(v as u32);
            self.put((v >> 32) as u32);
        }
        id
    }

    pub(super) fn proto(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
        let id = self.head("", kind::FUNC_PROTO, false, params.len(), ret);
        for &(n, ty) in params {
            let n = self.s(n);
            self.put(n);
            self.put(ty);
        }
        id
    }

    pub(super) fn finish(&self, extra_hdr: &[u32]) -> Vec<u8> {
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
pub(super) fn sample(be: bool) -> Vec<u8> {
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
