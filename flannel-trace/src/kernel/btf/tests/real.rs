//! The running kernel's BTF: this host and every matrix guest have it.

use super::synthetic::exercise;
use crate::kernel::btf::{Btf, BtfError, VMLINUX_BTF_PATH};

/// The running kernel's BTF. The tool cannot run without it, and this host
/// and every matrix guest have it: a host without it fails these tests
/// with the reason rather than passing them unexamined.
fn real() -> (Vec<u8>, Btf) {
    let data = std::fs::read(VMLINUX_BTF_PATH).unwrap_or_else(|e| {
        panic!("cannot read {VMLINUX_BTF_PATH} ({e}); kernel without CONFIG_DEBUG_INFO_BTF?")
    });
    let start = std::time::Instant::now();
    let btf = Btf::from_bytes(&data).expect("the running kernel's BTF parses");
    println!(
        "parsed {} bytes, {} types in {:?}",
        data.len(),
        btf.types.len(),
        start.elapsed()
    );
    (data, btf)
}

#[test]
fn real_vmlinux_offsets() {
    let (_, btf) = real();
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
    let (_, btf) = real();
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
    let (data, _) = real();
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
