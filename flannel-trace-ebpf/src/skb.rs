//! Reading a kernel `struct sk_buff` from probes and tracepoints.
//!
//! Field offsets come from userspace (BTF of the running kernel), since Rust
//! eBPF has no CO-RE. Packet bytes are read with `bpf_probe_read_kernel`,
//! bounded to the linear part of the buffer: `[head, data + headlen)`.

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use flannel_trace_common::{config::KernelOffsets, dropped::RAW_CAP, parse::Bytes};

/// `(u16)~0U`: the kernel's "header offset not set".
const HDR_UNSET: u16 = 0xffff;

#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address itself and fails
    // cleanly on a bad one; nothing is dereferenced directly.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// The linear bytes of an skb, addressed relative to `skb->head` so that
/// header offsets (`mac_header`, `network_header`) index them directly.
pub struct SkbBytes {
    head: u64,
    end: usize,
}

impl Bytes for SkbBytes {
    #[inline(always)]
    fn read<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if off > self.end || N > self.end - off {
            return None;
        }
        // SAFETY: as in `read`: the helper validates the address.
        unsafe { bpf_probe_read_kernel((self.head + off as u64) as *const [u8; N]).ok() }
    }
}

impl SkbBytes {
    /// Copy the linear bytes from `off` on, at most [`RAW_CAP`], into
    /// `dst`; how many. `None` when there are none or the read failed.
    #[inline(always)]
    pub fn copy_from(&self, off: usize, dst: &mut [u8; RAW_CAP]) -> Option<usize> {
        if off >= self.end {
            return None;
        }
        let n = self.end - off;
        // The verifier checks the length against the destination's size.
        // Bounds learnt from a comparison reach the register compared, and
        // LLVM may compare a copy: before 5.11 the length register was then
        // unbounded. So the length is a constant, or masked; `black_box`
        // keeps LLVM from dropping a mask it knows to be a no-op.
        let n = if n >= RAW_CAP {
            RAW_CAP
        } else {
            core::hint::black_box(n) & (RAW_CAP - 1)
        };
        // SAFETY: `dst` holds RAW_CAP >= n bytes; the source is kernel
        // memory, read with the helper that tolerates bad addresses.
        let r = unsafe {
            generated::bpf_probe_read_kernel(
                dst.as_mut_ptr().cast(),
                n as u32,
                (self.head + off as u64) as *const _,
            )
        };
        (r == 0).then_some(n)
    }
}

/// What the hooks need to know about one skb.
pub struct Skb {
    pub bytes: SkbBytes,
    pub len: u32,
    pub protocol: u16,
    pub mac_header: Option<usize>,
    pub network_header: Option<usize>,
}

impl Skb {
    /// The rest of the skb, read only once a hook knows the skb is of
    /// interest (its device already checked).
    #[inline(always)]
    pub fn load(addr: u64, o: &KernelOffsets) -> Option<Skb> {
        let head: u64 = read(addr, o.skb_head)?;
        let data: u64 = read(addr, o.skb_data)?;
        let len: u32 = read(addr, o.skb_len)?;
        let data_len: u32 = read(addr, o.skb_data_len)?;
        let mac: u16 = read(addr, o.skb_mac_header)?;
        let net: u16 = read(addr, o.skb_network_header)?;
        let protocol: u16 = read(addr, o.skb_protocol)?;
        if data < head {
            return None;
        }
        let headlen = len.saturating_sub(data_len) as u64;
        let end = (data - head + headlen) as usize;
        let hdr = |h: u16| {
            if h == HDR_UNSET {
                None
            } else {
                Some(h as usize)
            }
        };
        Some(Skb {
            bytes: SkbBytes { head, end },
            len,
            protocol: u16::from_be(protocol),
            mac_header: hdr(mac),
            network_header: hdr(net),
        })
    }
}

/// `skb->dev`, `None` when the skb is on no device (or unreadable).
#[inline(always)]
pub fn dev_of(skb: u64, o: &KernelOffsets) -> Option<u64> {
    let dev: u64 = read(skb, o.skb_dev)?;
    if dev == 0 { None } else { Some(dev) }
}

#[inline(always)]
pub fn ifindex_of(dev: u64, o: &KernelOffsets) -> Option<u32> {
    read(dev, o.dev_ifindex)
}
