//! Facts about the running kernel that the programs need: struct offsets
//! (Rust eBPF has no CO-RE), drop-reason names, namespace identity and
//! privileges.

use std::{collections::HashMap, fs, io, os::unix::fs::MetadataExt as _};

use flannel_trace_common::config::KernelOffsets;
use thiserror::Error;

pub mod btf;
pub mod clock;
pub mod features;
pub mod kallsyms;
pub mod tracefs;

use btf::{Btf, BtfError};

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("{0}")]
    Btf(#[from] BtfError),
    #[error("unexpected kernel struct layout ({0}): the probes cannot read it safely")]
    Layout(String),
    #[error("cannot read the network namespace of this process (/proc/self/ns/net): {0}")]
    Netns(io::Error),
    #[error(
        "flannel-trace needs root, or the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, and CAP_NET_RAW for --probe (missing: {0}); run it with sudo"
    )]
    Privilege(String),
}

/// A kernel struct field the probes read: where BTF has it, the size the
/// programs read it with (a kernel that differs is refused rather than
/// misread), and the slot of [`KernelOffsets`] its offset goes to. Adding
/// a field: a slot in `KernelOffsets`, a row here, the read in the eBPF
/// crate's `skb.rs`.
struct BtfField {
    ty: &'static str,
    path: &'static [&'static str],
    size: u32,
    slot: fn(&mut KernelOffsets) -> &mut u32,
}

const BTF_FIELDS: [BtfField; 11] = [
    field("sk_buff", &["head"], 8, |o| &mut o.skb_head),
    field("sk_buff", &["data"], 8, |o| &mut o.skb_data),
    field("sk_buff", &["len"], 4, |o| &mut o.skb_len),
    field("sk_buff", &["data_len"], 4, |o| &mut o.skb_data_len),
    field("sk_buff", &["mac_header"], 2, |o| &mut o.skb_mac_header),
    field("sk_buff", &["network_header"], 2, |o| {
        &mut o.skb_network_header
    }),
    field("sk_buff", &["protocol"], 2, |o| &mut o.skb_protocol),
    field("sk_buff", &["dev"], 8, |o| &mut o.skb_dev),
    field("net_device", &["ifindex"], 4, |o| &mut o.dev_ifindex),
    field("net_device", &["nd_net", "net"], 8, |o| &mut o.dev_nd_net),
    field("net", &["ns", "inum"], 4, |o| &mut o.net_ns_inum),
];

const fn field(
    ty: &'static str,
    path: &'static [&'static str],
    size: u32,
    slot: fn(&mut KernelOffsets) -> &mut u32,
) -> BtfField {
    BtfField {
        ty,
        path,
        size,
        slot,
    }
}

/// Offsets of the kernel fields the probes read, from the running kernel's
/// BTF (the tracepoints' fields come from tracefs, see `tracefs`).
pub fn offsets(btf: &Btf) -> Result<KernelOffsets, KernelError> {
    let mut out = KernelOffsets::default();
    for f in &BTF_FIELDS {
        let got = btf.member_size(f.ty, f.path)?;
        if got != f.size {
            return Err(KernelError::Layout(format!(
                "{}.{} is {got} bytes, expected {}",
                f.ty,
                f.path.join("."),
                f.size
            )));
        }
        *(f.slot)(&mut out) = btf.member_offset(f.ty, f.path)?;
    }
    Ok(out)
}

/// `enum skb_drop_reason` of the running kernel, value → name without the
/// `SKB_DROP_REASON_` prefix. Empty on kernels before 5.17 (no reasons).
/// The numbering differs between kernel versions, so it is never hard-coded.
pub fn drop_reasons(btf: &Btf) -> HashMap<u32, String> {
    btf.enum_values("skb_drop_reason")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, v)| {
            let v = u32::try_from(v).ok()?;
            Some((
                v,
                name.strip_prefix("SKB_DROP_REASON_")
                    .unwrap_or(&name)
                    .to_owned(),
            ))
        })
        .collect()
}

/// Inode of this process's network namespace, as the kernel's `net.ns.inum`.
pub fn netns_inode() -> Result<u32, KernelError> {
    let meta = fs::metadata("/proc/self/ns/net").map_err(KernelError::Netns)?;
    u32::try_from(meta.ino())
        .map_err(|_| KernelError::Netns(io::Error::other("inode does not fit 32 bits")))
}

/// A capability flannel-trace checks for at start.
pub struct Capability {
    pub name: &'static str,
    /// Its number (`linux/capability.h`).
    pub bit: u32,
    /// CAP_SYS_ADMIN stands in for the two split out of it in Linux 5.8.
    pub sys_admin_ok: bool,
    /// The option that needs it, if only one does.
    pub only_with: Option<&'static str>,
}

/// One list for the check at start and for `--print-capabilities`, which
/// the deploy/ manifests' test reads, so that the two cannot drift apart.
pub const CAPABILITIES: [Capability; 4] = [
    Capability {
        name: "CAP_BPF",
        bit: 39,
        sys_admin_ok: true,
        only_with: None,
    },
    Capability {
        name: "CAP_NET_ADMIN",
        bit: 12,
        sys_admin_ok: false,
        only_with: None,
    },
    // The raw ICMP socket of the probes.
    Capability {
        name: "CAP_NET_RAW",
        bit: 13,
        sys_admin_ok: false,
        only_with: Some("--probe"),
    },
    Capability {
        name: "CAP_PERFMON",
        bit: 38,
        sys_admin_ok: true,
        only_with: None,
    },
];

const CAP_SYS_ADMIN: u32 = 21;

/// The capabilities of [`CAPABILITIES`] this process lacks (effective set),
/// counting those of `--probe` only when it is given.
pub fn missing_capabilities(probe: bool) -> Vec<&'static str> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    CAPABILITIES
        .iter()
        .filter(|c| probe || c.only_with.is_none())
        .filter(|c| !(has(c.bit) || (c.sys_admin_ok && has(CAP_SYS_ADMIN))))
        .map(|c| c.name)
        .collect()
}

/// Refuse early, with a useful message, rather than fail on the first
/// bpf() call with a bare EPERM.
pub fn check_privileges(probe: bool) -> Result<(), KernelError> {
    let missing = missing_capabilities(probe);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(KernelError::Privilege(missing.join(", ")))
    }
}

/// `uname -r`, for the start banner and recordings.
pub fn release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row fills its own slot: a copy-pasted row that writes another
    /// field's slot would leave one offset at 0 and read the wrong bytes.
    #[test]
    fn every_field_has_its_own_slot() {
        let mut o = KernelOffsets::ZERO;
        for (i, f) in BTF_FIELDS.iter().enumerate() {
            *(f.slot)(&mut o) = 1000 + i as u32;
        }
        for (i, f) in BTF_FIELDS.iter().enumerate() {
            assert_eq!(*(f.slot)(&mut o), 1000 + i as u32, "{}.{:?}", f.ty, f.path);
        }
    }

    /// On the running kernel, every offset is the one BTF gives for its
    /// row (this host and every matrix guest have BTF).
    #[test]
    fn offsets_of_the_running_kernel() {
        let btf = Btf::vmlinux().expect("the running kernel has BTF");
        let mut o = offsets(&btf).expect("this kernel's layout is supported");
        for f in &BTF_FIELDS {
            let want = btf.member_offset(f.ty, f.path).unwrap();
            assert_eq!(*(f.slot)(&mut o), want, "{}.{:?}", f.ty, f.path);
        }
        assert!(o.skb_head != 0 && o.dev_ifindex != 0 && o.net_ns_inum != 0);
    }
}
