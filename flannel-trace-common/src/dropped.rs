//! The drop hook's ring-buffer record and its decoding in userspace.
//!
//! The drop hook (`kfree_skb`) sees every freed skb of the kernel, from a
//! variable network-header offset read through `bpf_probe_read_kernel`: run
//! there, the full parser made the verifier walk hundreds of milliseconds of
//! paths at attach. So the hook only does cheap checks
//! ([`crate::parse::prefilter::dropped`]) and copies the first
//! [`RAW_CAP`] linear bytes from the network header into a [`RawDrop`];
//! userspace runs the same parser ([`parse_dropped`]) and the same keep
//! rules over those bytes, producing the very event the hook used to.

use core::mem::size_of;

use crate::{
    Config, EventKind, Hop, PacketInfo, Ports, RawEvent,
    event::{DecodeError, flags},
    parse::{Dropped, Layer, in_overlay, parse_dropped, wanted},
};

/// Bytes of a dropped skb copied from its network header: every header
/// chain without IPv6 extension headers fits (outer IPv4 with options,
/// UDP, VXLAN, inner Ethernet with two VLAN tags, inner IPv4 with options
/// and TCP end before byte 172), with room left for extension headers.
pub const RAW_CAP: usize = 256;

/// [`RawDrop::kind`]: not an [`EventKind`], so that a record is told apart
/// by this byte, which sits where [`RawEvent::kind`] does.
pub const RAW_DROP_KIND: u8 = 3;

/// One dropped skb as the drop hook saw it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawDrop {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Kernel text address that freed the packet.
    pub drop_location: u64,
    /// [`RAW_DROP_KIND`].
    pub kind: u8,
    /// 1 when the skb was on the vxlan device (the bytes are an inner
    /// frame there).
    pub on_vxlan: u8,
    pub _pad0: [u8; 2],
    pub ifindex: u32,
    /// `skb->len`.
    pub skb_len: u32,
    /// Raw `enum skb_drop_reason` value.
    pub drop_reason: u32,
    /// `skb->protocol` (ethertype, host order): where the bytes start.
    pub protocol: u16,
    /// How many of `bytes` were copied: the linear bytes from the network
    /// header, at most [`RAW_CAP`].
    pub captured: u16,
    pub _pad1: u32,
    pub bytes: [u8; RAW_CAP],
}

const _: () = assert!(size_of::<RawDrop>() == 40 + RAW_CAP);
const _: () = assert!(RAW_CAP.is_power_of_two() && RAW_CAP <= u16::MAX as usize);
// The kind byte lies at the same offset in both records.
const _: () =
    assert!(core::mem::offset_of!(RawDrop, kind) == core::mem::offset_of!(RawEvent, kind));

impl RawDrop {
    pub const SIZE: usize = size_of::<RawDrop>();

    pub const fn zeroed() -> RawDrop {
        RawDrop {
            ts_ns: 0,
            drop_location: 0,
            kind: RAW_DROP_KIND,
            on_vxlan: 0,
            _pad0: [0; 2],
            ifindex: 0,
            skb_len: 0,
            drop_reason: 0,
            protocol: 0,
            captured: 0,
            _pad1: 0,
            bytes: [0; RAW_CAP],
        }
    }

    /// The copied bytes.
    pub fn captured(&self) -> &[u8] {
        &self.bytes[..(self.captured as usize).min(RAW_CAP)]
    }

    /// What the drop hook decided in the kernel before: `Some` drop event
    /// when the skb is this overlay's traffic and passes the filters of
    /// `cfg` (the values userspace wrote into the programs' `CONFIG`), with
    /// `ports` the overlay's current ports. An encapsulated frame on our
    /// port anywhere, an inner frame on the vxlan device, or a plain packet
    /// between pod-network addresses on any other device.
    pub fn parse(&self, cfg: &Config, ports: &Ports) -> Option<RawEvent> {
        let layer = Layer::from_ethertype(self.protocol)?;
        let on_vxlan = self.on_vxlan != 0;
        let mut pkt = PacketInfo::default();
        match parse_dropped(self.captured(), layer, 0, ports, on_vxlan, &mut pkt) {
            Ok(Dropped::Plain) if !on_vxlan => {
                if !in_overlay(&cfg.overlay, &pkt) {
                    return None;
                }
                pkt.flags |= flags::POD_NETWORK;
            }
            Ok(_) => {}
            // Not counted as unparsed: a drop of an overlay frame is
            // counted where the frame entered (TC, the tunnel), as before.
            Err(_) => return None,
        }
        if !wanted(cfg, &pkt) {
            return None;
        }
        if cfg.has_drop_reason != 0 {
            pkt.flags |= flags::HAS_REASON;
        }
        Some(RawEvent {
            ts_ns: self.ts_ns,
            drop_location: self.drop_location,
            kind: EventKind::Drop as u8,
            hop: Hop::Drop as u8,
            _pad0: [0; 2],
            ifindex: self.ifindex,
            skb_len: self.skb_len,
            drop_reason: self.drop_reason,
            pkt,
        })
    }
}

/// A ring-buffer record of either kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    Event(RawEvent),
    Drop(RawDrop),
}

impl Record {
    /// Tell the records apart by their kind byte, then check the size.
    pub fn from_bytes(bytes: &[u8]) -> Result<Record, DecodeError> {
        const KIND: usize = core::mem::offset_of!(RawEvent, kind);
        if bytes.get(KIND) != Some(&RAW_DROP_KIND) {
            return RawEvent::from_bytes(bytes).map(Record::Event);
        }
        if bytes.len() != RawDrop::SIZE {
            return Err(DecodeError::Size {
                got: bytes.len(),
                want: RawDrop::SIZE,
            });
        }
        // SAFETY: the length was checked; RawDrop is repr(C) plain data for
        // which every bit pattern is valid.
        Ok(Record::Drop(unsafe {
            core::ptr::read_unaligned(bytes.as_ptr().cast::<RawDrop>())
        }))
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, every bit pattern valid, explicit padding.
    unsafe impl aya::Pod for super::RawDrop {}
}

#[cfg(test)]
#[path = "dropped_tests.rs"]
mod tests;
