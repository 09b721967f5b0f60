//! The compact binary encoding of events, defined once and shared by
//! recordings (format 2) and the peer stream; JSON stays for `--json`, the
//! documented schema and the control messages (start, summary, ...).
//!
//! A batch is one frame payload (see `wire`): the tag [`BATCH`] (JSON
//! payloads start with `{`), a varint count, then the events. An event is a
//! varint presence bitmap, the hop as the `u8` of flannel-trace-common's
//! `Hop`, the timestamp as a zigzag varint delta from the previous event of
//! the batch, then each present field in bitmap order. What the node's
//! identity already says is not repeated: the wall-clock `time` comes from
//! `ts_mono_ns` and the identity's clock offset, and the interface name
//! from its ifindex when it is the vxlan or underlay device.
//!
//! Adding a hop needs nothing here (it is a `Hop` value); adding an
//! optional field is one presence bit plus its write and its read below.
//! ARP, which has no IP protocol number, is written as the name `arp`.
//!
//! The event's values are typed (see `values`), so every hop, fingerprint
//! and set of TCP flags has its compact form: the `*_TEXT` / `*_NAMED`
//! bits, which once carried text the compact form could not express, are
//! no longer written. Batches of older writers may still carry them: the
//! text is accepted where it parses to the typed value, and is a
//! [`CodecError::Value`] otherwise.

use thiserror::Error;

use crate::schema::{identity::NodeIdentity, values::BadValue};

/// First byte of a batch payload.
pub const BATCH: u8 = 0x01;
/// Events per batch: large enough to amortise the frame header, small
/// enough that a killed tracer loses little of its recording.
pub const MAX_BATCH: usize = 256;

// Presence bits of an event.
const OUTER: u32 = 1 << 0;
const VNI: u32 = 1 << 1;
const VLAN: u32 = 1 << 2;
const OUTER_RECOVERED: u32 = 1 << 3;
const INNER: u32 = 1 << 4;
const FINGERPRINT: u32 = 1 << 5;
/// Read only: written by older versions (see the module's comment).
const FINGERPRINT_TEXT: u32 = 1 << 6;
const DROP: u32 = 1 << 7;
const IFACE_NONE: u32 = 1 << 8;
const IFACE_NAMED: u32 = 1 << 9;
/// Read only: written by older versions (see the module's comment).
const HOP_NAMED: u32 = 1 << 10;
const TCP: u32 = 1 << 11;
/// Read only: written by older versions (see the module's comment).
const TCP_FLAGS_TEXT: u32 = 1 << 12;
const ICMP: u32 = 1 << 13;
const FRAGMENT: u32 = 1 << 14;
const TRUNCATED: u32 = 1 << 15;
const VLAN_INNER: u32 = 1 << 16;
const UNDECODABLE: u32 = 1 << 17;
const ARP: u32 = 1 << 18;
const DST_MAC: u32 = 1 << 19;

// Presence bits of a pair of endpoints.
const V6: u8 = 1 << 0;
const SPORT: u8 = 1 << 1;
const DPORT: u8 = 1 << 2;
const PROTO_NAMED: u8 = 1 << 3;

// Presence bits of a drop.
const REASON: u8 = 1 << 0;
const REASON_CODE: u8 = 1 << 1;
const LOCATION: u8 = 1 << 2;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("event batch cut short at byte {0}")]
    Truncated(usize),
    #[error("event batch: varint too long at byte {0}")]
    Varint(usize),
    #[error("event batch: unknown hop {0}")]
    Hop(u8),
    #[error("event batch: text that is not UTF-8 at byte {0}")]
    Utf8(usize),
    #[error("event batch: {0} bytes left over after the last event")]
    Trailing(usize),
    #[error("event batch: not a batch (tag {0:#04x})")]
    Tag(u8),
    #[error("event batch: {1} (text at byte {0})")]
    Value(usize, BadValue),
}

/// What the node's identity contributes to every event of its stream.
#[derive(Debug, Clone)]
pub struct Context {
    offset_ns: i64,
    names: [(u32, String); 2],
}

impl Context {
    pub fn of(id: &NodeIdentity) -> Context {
        Context {
            offset_ns: id.clock_offset_ns,
            names: [
                (id.vxlan_ifindex, id.vxlan_dev.clone()),
                (id.underlay_ifindex, id.underlay_dev.clone()),
            ],
        }
    }

    fn name_of(&self, ifindex: u32) -> Option<&str> {
        self.names
            .iter()
            .find(|(i, _)| *i == ifindex)
            .map(|(_, n)| n.as_str())
    }
}

mod decode;
mod encode;

pub use self::decode::decode_batch;
pub use self::encode::encode_batch;

#[cfg(test)]
#[path = "codec/tests.rs"]
mod tests;
