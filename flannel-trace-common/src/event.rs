//! The event envelope written to the ring buffer by every hook.
//!
//! One fixed-size record serves every hook: a kind tag says how to read it,
//! and decoding goes through `TryFrom`, so an unknown tag is an error rather
//! than undefined behaviour.

use core::mem::size_of;

/// Where in the node a packet was seen. The names are the vocabulary of
/// every verdict the tool prints.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hop {
    /// TC egress on the vxlan device: the inner frame entering the tunnel.
    OverlayEgress = 1,
    /// TC egress on the underlay NIC: the encapsulated frame leaving.
    UnderlayEgress = 2,
    /// TC ingress on the underlay NIC: an encapsulated frame arriving.
    UnderlayIngress = 3,
    /// The vxlan receive path (decapsulation).
    VxlanRcv = 4,
    /// TC ingress on the vxlan device: the decapsulated inner frame.
    OverlayIngress = 5,
    /// The kernel freed the packet as a drop.
    Drop = 6,
    /// TC ingress on the pod-side device (cni0): a pod's packet entering
    /// the node.
    PodIngress = 7,
    /// TC egress on the pod-side device: the packet leaving the node
    /// towards the receiving pod.
    PodEgress = 8,
}

impl Hop {
    /// Every hop, in the order a packet passes them (sender, then
    /// receiver), drops last. The numbers stay as they were first given,
    /// so recordings keep their meaning.
    pub const ALL: [Hop; 8] = [
        Hop::PodIngress,
        Hop::OverlayEgress,
        Hop::UnderlayEgress,
        Hop::UnderlayIngress,
        Hop::VxlanRcv,
        Hop::OverlayIngress,
        Hop::PodEgress,
        Hop::Drop,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Hop::OverlayEgress => "overlay-egress",
            Hop::UnderlayEgress => "underlay-egress",
            Hop::UnderlayIngress => "underlay-ingress",
            Hop::VxlanRcv => "vxlan-rcv",
            Hop::OverlayIngress => "overlay-ingress",
            Hop::Drop => "drop",
            Hop::PodIngress => "pod-ingress",
            Hop::PodEgress => "pod-egress",
        }
    }
}

impl TryFrom<u8> for Hop {
    type Error = DecodeError;
    fn try_from(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => Hop::OverlayEgress,
            2 => Hop::UnderlayEgress,
            3 => Hop::UnderlayIngress,
            4 => Hop::VxlanRcv,
            5 => Hop::OverlayIngress,
            6 => Hop::Drop,
            7 => Hop::PodIngress,
            8 => Hop::PodEgress,
            other => return Err(DecodeError::UnknownHop(other)),
        })
    }
}

/// The envelope's kind tag.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A packet seen at a hop.
    Packet = 1,
    /// A packet the kernel dropped (`skb:kfree_skb`).
    Drop = 2,
}

impl TryFrom<u8> for EventKind {
    type Error = DecodeError;
    fn try_from(v: u8) -> Result<Self, DecodeError> {
        match v {
            1 => Ok(EventKind::Packet),
            2 => Ok(EventKind::Drop),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

/// Why a ring-buffer record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is not `size_of::<RawEvent>()` bytes long: the eBPF object
    /// and the userspace binary disagree on the layout.
    Size {
        got: usize,
        want: usize,
    },
    UnknownKind(u8),
    UnknownHop(u8),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Size { got, want } => write!(
                f,
                "ring buffer record of {got} bytes, expected {want} (eBPF object and binary out of step: rebuild)"
            ),
            DecodeError::UnknownKind(k) => write!(f, "unknown event kind {k}"),
            DecodeError::UnknownHop(h) => write!(f, "unknown hop {h}"),
        }
    }
}

/// Address family tags used in [`Tuple::family`].
pub const AF_NONE: u8 = 0;
pub const AF_INET: u8 = 4;
pub const AF_INET6: u8 = 6;

/// An IP 5-tuple. IPv4 addresses occupy the first four bytes. Ports are in
/// host byte order and zero for protocols without ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// [`AF_INET`], [`AF_INET6`] or [`AF_NONE`] when absent.
    pub family: u8,
    /// IP protocol number (after IPv6 extension headers).
    pub proto: u8,
    pub _pad: [u8; 2],
}

/// Flags in [`PacketInfo::flags`].
pub mod flags {
    /// The frame was VXLAN-encapsulated and `outer`/`vni` are valid.
    pub const HAS_OUTER: u32 = 1 << 0;
    /// `inner` is valid.
    pub const HAS_INNER: u32 = 1 << 1;
    /// The underlay frame carried an 802.1Q/802.1ad tag (`vlan` is valid).
    pub const OUTER_VLAN: u32 = 1 << 2;
    /// The inner packet is a non-first IP fragment: no L4 header.
    pub const INNER_FRAGMENT: u32 = 1 << 3;
    /// The inner L4 header lay beyond what the hook could read.
    pub const TRUNCATED: u32 = 1 << 4;
    /// Outer headers were recovered from the bytes in front of the inner
    /// frame after decapsulation (tracepoint fallback of `vxlan-rcv`).
    pub const OUTER_FROM_HEADROOM: u32 = 1 << 5;
    /// The inner L4 header was read (ports, TCP/ICMP fields are valid).
    pub const HAS_L4: u32 = 1 << 6;
    /// The drop event carries a kernel drop reason.
    pub const HAS_REASON: u32 = 1 << 7;
    /// `inner_dmac` is valid (the inner frame's Ethernet header was read).
    pub const HAS_INNER_MAC: u32 = 1 << 8;
    /// A plain (not encapsulated) packet of the pod network, seen by the
    /// drop hook outside the vxlan device.
    pub const POD_NETWORK: u32 = 1 << 9;
    /// A frame to the overlay's UDP port that could not be decoded (cut UDP
    /// header, lengths that do not add up, bad VXLAN header): `outer` holds
    /// what was read (addresses, ports), `vni` and `inner` are not valid.
    pub const UNDECODABLE: u32 = 1 << 10;
    /// The inner frame is ARP (`inner.src`/`dst`: sender and target
    /// protocol address, `icmp_type`: the ARP opcode).
    pub const INNER_ARP: u32 = 1 << 11;
    /// The underlay frame carried two VLAN tags: `vlan` is the outer one,
    /// `inner_vlan` the inner one.
    pub const QINQ: u32 = 1 << 12;
}

/// What the parser extracted from one frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketInfo {
    pub outer: Tuple,
    pub inner: Tuple,
    pub vni: u32,
    pub flags: u32,
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    /// IPv4 identification, or the IPv6 fragment identification.
    pub ip_id: u32,
    pub icmp_id: u16,
    pub icmp_seq: u16,
    /// Inner IP length (header and payload) as the header states it.
    pub inner_len: u16,
    /// Outer IP length as the header states it.
    pub outer_len: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// TCP header length in bytes (data offset × 4).
    pub tcp_hlen: u8,
    /// VLAN ID of the underlay frame when [`flags::OUTER_VLAN`] is set.
    pub vlan: u16,
    /// Inner IP header length in bytes, IPv6 extension headers included.
    pub ip_hlen: u16,
    /// Destination MAC of the inner Ethernet frame when
    /// [`flags::HAS_INNER_MAC`] is set: on the receiver, a MAC that is not
    /// its VTEP's means a peer kept a stale VtepMAC.
    pub inner_dmac: [u8; 6],
    /// The second VLAN tag of a QinQ underlay frame ([`flags::QINQ`]).
    pub inner_vlan: u16,
    pub _pad2: [u8; 4],
}

/// One ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Kernel text address that freed the packet (drops only).
    pub drop_location: u64,
    /// [`EventKind`] tag.
    pub kind: u8,
    /// [`Hop`] tag.
    pub hop: u8,
    pub _pad0: [u8; 2],
    pub ifindex: u32,
    /// `skb->len` when the hook saw it.
    pub skb_len: u32,
    /// Raw `enum skb_drop_reason` value; its name comes from the kernel's BTF.
    pub drop_reason: u32,
    pub pkt: PacketInfo,
}

const _: () = assert!(size_of::<Tuple>() == 40);
const _: () = assert!(size_of::<PacketInfo>() == 128);
const _: () = assert!(size_of::<RawEvent>() == 160);

impl RawEvent {
    pub const SIZE: usize = size_of::<RawEvent>();

    /// Copy a record out of a ring-buffer slice. The slice has no alignment
    /// guarantee, hence the unaligned read.
    pub fn from_bytes(bytes: &[u8]) -> Result<RawEvent, DecodeError> {
        if bytes.len() != Self::SIZE {
            return Err(DecodeError::Size {
                got: bytes.len(),
                want: Self::SIZE,
            });
        }
        // SAFETY: the length was checked; RawEvent is repr(C) plain data for
        // which every bit pattern is valid.
        Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<RawEvent>()) })
    }

    pub fn kind(&self) -> Result<EventKind, DecodeError> {
        EventKind::try_from(self.kind)
    }

    pub fn hop(&self) -> Result<Hop, DecodeError> {
        Hop::try_from(self.hop)
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, every bit pattern valid, explicit padding.
    unsafe impl aya::Pod for super::RawEvent {}
}
