//! Run-time configuration handed from userspace to the eBPF programs as a
//! global (`CONFIG`), set before the object is loaded.
//!
//! Rust eBPF has no CO-RE, so the kernel struct offsets the probes need are
//! read by userspace from the running kernel's BTF and passed here.

/// Sentinel meaning "no VNI filter".
pub const ANY_VNI: u32 = u32::MAX;

/// Offsets of the kernel fields read by the probe-based hooks. All values are
/// byte offsets inside the named struct of the running kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub skb_head: u32,
    pub skb_data: u32,
    pub skb_len: u32,
    pub skb_data_len: u32,
    pub skb_mac_header: u32,
    pub skb_network_header: u32,
    pub skb_protocol: u32,
    pub skb_dev: u32,
    pub dev_ifindex: u32,
    /// `net_device.nd_net.net`: the device's network namespace.
    pub dev_nd_net: u32,
    /// `net.ns.inum`: the namespace inode number, as in /proc/self/ns/net.
    pub net_ns_inum: u32,
    /// Offsets of the classic tracepoints' fields (from tracefs `format`).
    pub tp_kfree_skbaddr: u32,
    pub tp_kfree_location: u32,
    pub tp_kfree_reason: u32,
    pub tp_netif_skbaddr: u32,
    pub _pad: u32,
}

/// Filters and identity of the traced node.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Inner IP protocol to keep (0 = all).
    pub filter_proto: u8,
    /// Address family of `filter_addr` (0 = no address filter, 4 or 6).
    pub filter_family: u8,
    pub _pad1: u16,
    /// VNI of the traced vxlan device, or [`ANY_VNI`].
    pub vni: u32,
    /// Inode of the traced network namespace; hooks that see every
    /// namespace (tracepoints, kprobes) drop events from other ones.
    pub netns_ino: u32,
    /// ifindex of the vxlan device inside the traced namespace.
    pub vxlan_ifindex: u32,
    /// ifindex of the underlay NIC inside the traced namespace.
    pub underlay_ifindex: u32,
    /// 1 when the drop tracepoint carries a `reason` argument (5.17+).
    pub has_drop_reason: u8,
    pub _pad0: [u8; 3],
    /// Inner address to keep (either source or destination), IPv4 in the
    /// first four bytes.
    pub filter_addr: [u8; 16],
    pub offsets: KernelOffsets,
}

impl Config {
    pub const fn zeroed() -> Self {
        Self {
            filter_proto: 0,
            filter_family: 0,
            _pad1: 0,
            vni: ANY_VNI,
            netns_ino: 0,
            vxlan_ifindex: 0,
            underlay_ifindex: 0,
            has_drop_reason: 0,
            _pad0: [0; 3],
            filter_addr: [0; 16],
            offsets: KernelOffsets {
                skb_head: 0,
                skb_data: 0,
                skb_len: 0,
                skb_data_len: 0,
                skb_mac_header: 0,
                skb_network_header: 0,
                skb_protocol: 0,
                skb_dev: 0,
                dev_ifindex: 0,
                dev_nd_net: 0,
                net_ns_inum: 0,
                tp_kfree_skbaddr: 0,
                tp_kfree_location: 0,
                tp_kfree_reason: 0,
                tp_netif_skbaddr: 0,
                _pad: 0,
            },
        }
    }
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 64);
const _: () = assert!(core::mem::size_of::<Config>() == 40 + 64);

/// The UDP destination ports that carry this overlay (host byte order; 0 =
/// unused slot). Kept in a map rather than in [`Config`], because the live
/// join adds the peer's port once it is known: with mismatched ports, each
/// node must see the other's frames too.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ports {
    pub ports: [u16; 4],
}

impl Ports {
    #[inline(always)]
    pub fn contains(&self, port: u16) -> bool {
        port != 0
            && (self.ports[0] == port
                || self.ports[1] == port
                || self.ports[2] == port
                || self.ports[3] == port)
    }

    /// Add a port; false when full. Adding a present port is a no-op.
    pub fn add(&mut self, port: u16) -> bool {
        if self.contains(port) {
            return true;
        }
        match self.ports.iter_mut().find(|p| **p == 0) {
            Some(slot) => {
                *slot = port;
                true
            }
            None => false,
        }
    }
}

const _: () = assert!(core::mem::size_of::<Ports>() == 8);

/// Slots of the per-CPU `COUNTERS` array: what the programs could not report.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// The ring buffer was full: an event was lost by the tracer itself.
    RingbufFull = 0,
    /// A frame of this overlay that the parser could not decode.
    Unparsed = 1,
    /// A probe could not read a `struct sk_buff`: the kernel's layout is
    /// not what its BTF said. Also logged (rate-limited) through aya-log.
    ProbeRead = 2,
}

pub const COUNTER_SLOTS: u32 = 3;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, every bit pattern valid, explicit padding.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Ports {}
}
