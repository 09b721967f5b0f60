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

impl KernelOffsets {
    /// Every offset 0, for the compile-time default of [`Config`].
    // SAFETY: the struct is `#[repr(C)]` and all `u32`: all-zero bytes are
    // a valid value. `zeroed` here keeps adding a field to one place.
    pub const ZERO: KernelOffsets = unsafe { core::mem::zeroed() };
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
    /// The overlay's pod networks: the pod hops keep, and the drop hook
    /// reports anywhere in the namespace, plain IP packets between two
    /// addresses of them. See [`Overlay`].
    pub overlay: Overlay,
    /// Raw `enum skb_drop_reason` values that are not drops
    /// (`SKB_CONSUMED`, `NOT_DROPPED_YET`), from BTF; [`NO_REASON`] when
    /// the kernel has no such value. The drop hook returns on them before
    /// it reads anything.
    pub reason_consumed: u32,
    pub reason_not_dropped: u32,
    /// Events are submitted without waking userspace until this many bytes
    /// wait in the ring buffer (userspace also drains it on a short timer):
    /// one wakeup per event would cost the node an interrupt per packet.
    pub wakeup_bytes: u32,
    /// [`MODE_EVENTS`] or [`MODE_STATS`].
    pub mode: u8,
    /// In counters mode, inner addresses are counted per remote address
    /// masked to this prefix length: whole addresses by default, so that
    /// userspace can tell a peer's pods from the peer itself.
    pub peer_prefix_v4: u8,
    pub peer_prefix_v6: u8,
    pub _pad2: u8,
    /// `--sample N`: keep a packet when its sample hash (see
    /// [`crate::fingerprint::sample_hash`]) has these bits clear, N - 1 for
    /// a power of two N; 0 keeps everything.
    pub sample_mask: u32,
    pub _pad3: u32,
    pub offsets: KernelOffsets,
}

/// One event per packet and hop, to the ring buffer.
pub const MODE_EVENTS: u8 = 0;
/// Only per-CPU counters (see [`crate::stats`]); no events.
pub const MODE_STATS: u8 = 1;

/// "No such drop reason value."
pub const NO_REASON: u32 = u32::MAX;

/// Overlay networks as address/mask words, compared without a loop (every
/// byte compared would be one more branch for the verifier). IPv4 values are
/// the address bytes as a native-endian u32, like the packet bytes they are
/// compared with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overlay {
    pub v4_net: u32,
    pub v4_mask: u32,
    pub v6_net: [u64; 2],
    pub v6_mask: [u64; 2],
    /// Bit 0: the IPv4 network is set; bit 1: the IPv6 one.
    pub families: u32,
    pub _pad: u32,
}

impl Overlay {
    pub const V4: u32 = 1;
    pub const V6: u32 = 2;

    pub const fn none() -> Self {
        Overlay {
            v4_net: 0,
            v4_mask: 0,
            v6_net: [0; 2],
            v6_mask: [0; 2],
            families: 0,
            _pad: 0,
        }
    }

    /// Set the IPv4 network `addr/len`.
    pub fn set_v4(&mut self, addr: [u8; 4], len: u8) {
        let mask = prefix_mask_be(len.min(32) as u32, 32) as u32;
        self.v4_mask = u32::from_ne_bytes(mask.to_be_bytes());
        self.v4_net = u32::from_ne_bytes(addr) & self.v4_mask;
        self.families |= Self::V4;
    }

    /// Set the IPv6 network `addr/len`.
    pub fn set_v6(&mut self, addr: [u8; 16], len: u8) {
        let len = len.min(128) as u32;
        let hi = prefix_mask_be(len.min(64), 64);
        let lo = prefix_mask_be(len.saturating_sub(64), 64);
        self.v6_mask = [
            u64::from_ne_bytes(hi.to_be_bytes()),
            u64::from_ne_bytes(lo.to_be_bytes()),
        ];
        let w = words16(&addr);
        self.v6_net = [w[0] & self.v6_mask[0], w[1] & self.v6_mask[1]];
        self.families |= Self::V6;
    }

    #[inline(always)]
    pub fn contains_v4(&self, addr: u32) -> bool {
        self.families & Self::V4 != 0 && addr & self.v4_mask == self.v4_net
    }

    #[inline(always)]
    pub fn contains_v6(&self, w: [u64; 2]) -> bool {
        self.families & Self::V6 != 0
            && w[0] & self.v6_mask[0] == self.v6_net[0]
            && w[1] & self.v6_mask[1] == self.v6_net[1]
    }
}

/// The top `len` bits of a `bits`-wide word set (`bits` is 32 or 64,
/// `len` at most `bits`), as a host-order value.
const fn prefix_mask_be(len: u32, bits: u32) -> u64 {
    if len == 0 {
        0
    } else {
        (u64::MAX << (64 - len)) >> (64 - bits)
    }
}

/// An IPv6 address as two native-endian words.
#[inline(always)]
pub fn words16(a: &[u8; 16]) -> [u64; 2] {
    [
        u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    ]
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
            overlay: Overlay::none(),
            reason_consumed: NO_REASON,
            reason_not_dropped: NO_REASON,
            wakeup_bytes: 0,
            mode: MODE_EVENTS,
            peer_prefix_v4: 32,
            peer_prefix_v6: 128,
            _pad2: 0,
            sample_mask: 0,
            _pad3: 0,
            offsets: KernelOffsets::ZERO,
        }
    }
}

// No implicit padding, whose bytes userspace could leave uninitialised: the
// offsets end on an 8-byte boundary (add or drop `_pad` with a field), and
// `Config` is its fields and nothing else.
const _: () = assert!(core::mem::size_of::<KernelOffsets>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<Overlay>() == 48);
const _: () = assert!(
    core::mem::size_of::<Config>()
        == 40 + core::mem::size_of::<Overlay>() + 24 + core::mem::size_of::<KernelOffsets>()
);

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
    /// Counters mode: the counter map was full, a packet was not counted.
    StatsFull = 3,
}

pub const COUNTER_SLOTS: u32 = 4;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, every bit pattern valid, explicit padding.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Ports {}
}
