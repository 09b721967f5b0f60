//! Offsets, sizes, enums and errors on hand-assembled blobs, and corrupt
//! blobs that must be errors, never panics or hangs.

use super::builder::{Builder, sample};
use crate::kernel::btf::{Btf, BtfError, VMLINUX_BTF_PATH, format::kind};

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
    assert!(matches!(err("outer", &["b"]), BtfError::NoSuchMember { member, .. } if member == "b"));
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
pub(super) fn exercise(btf: &Btf, structs: &[(&str, &[&str])]) {
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
