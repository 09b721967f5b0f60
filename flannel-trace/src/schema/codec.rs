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

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use flannel_trace_common::Hop;
use thiserror::Error;

use crate::{
    schema::event::{Arp, Endpoints, Event, Icmp, Inner, KernelDrop, Tcp},
    schema::identity::NodeIdentity,
    schema::values::{BadValue, Fingerprint, Mac, Proto, TcpFlags, hop_name},
};

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

/// Appends one batch payload holding `events` to `out`.
pub fn encode_batch(ctx: &Context, events: &[Event], out: &mut Vec<u8>) {
    out.push(BATCH);
    varint(out, events.len() as u64);
    let mut prev = 0u64;
    for ev in events {
        encode_event(ctx, ev, prev, out);
        prev = ev.ts_mono_ns;
    }
}

fn encode_event(ctx: &Context, ev: &Event, prev_ts: u64, out: &mut Vec<u8>) {
    let mut bits = 0;
    let mut set = |b: u32, on: bool| {
        if on {
            bits |= b;
        }
    };
    set(OUTER, ev.outer.is_some());
    set(VNI, ev.vni.is_some());
    set(VLAN, ev.vlan.is_some());
    set(VLAN_INNER, ev.vlan_inner.is_some());
    set(UNDECODABLE, ev.undecodable);
    set(OUTER_RECOVERED, ev.outer_recovered);
    set(INNER, ev.inner.is_some());
    set(FINGERPRINT, ev.fingerprint.is_some());
    set(DROP, ev.drop.is_some());
    let iface_implied = ev.iface.as_deref() == ctx.name_of(ev.ifindex) && ev.iface.is_some();
    set(IFACE_NONE, ev.iface.is_none());
    set(IFACE_NAMED, ev.iface.is_some() && !iface_implied);
    if let Some(inner) = &ev.inner {
        set(TCP, inner.tcp.is_some());
        set(ICMP, inner.icmp.is_some());
        set(FRAGMENT, inner.fragment);
        set(TRUNCATED, inner.truncated);
        set(ARP, inner.arp.is_some());
        set(DST_MAC, inner.dst_mac.is_some());
    }
    varint(out, u64::from(bits));
    out.push(ev.hop as u8);
    varint(out, zigzag(ev.ts_mono_ns.wrapping_sub(prev_ts) as i64));
    varint(out, u64::from(ev.ifindex));
    if bits & IFACE_NAMED != 0 {
        text(out, ev.iface.as_deref().unwrap_or_default());
    }
    varint(out, u64::from(ev.len));
    if let Some(o) = &ev.outer {
        endpoints(out, o);
    }
    if let Some(v) = ev.vni {
        varint(out, u64::from(v));
    }
    if let Some(v) = ev.vlan {
        out.extend_from_slice(&v.to_le_bytes());
    }
    if let Some(v) = ev.vlan_inner {
        out.extend_from_slice(&v.to_le_bytes());
    }
    if let Some(i) = &ev.inner {
        endpoints(out, &i.endpoints);
        varint(out, u64::from(i.ip_id));
        varint(out, u64::from(i.ip_len));
        if let Some(t) = &i.tcp {
            out.extend_from_slice(&t.seq.to_le_bytes());
            out.extend_from_slice(&t.ack.to_le_bytes());
            out.push(t.flags.0);
            varint(out, u64::from(t.payload_len));
        }
        if let Some(c) = &i.icmp {
            out.extend_from_slice(&[c.ty, c.code]);
            out.extend_from_slice(&c.id.to_le_bytes());
            out.extend_from_slice(&c.seq.to_le_bytes());
        }
        if let Some(a) = &i.arp {
            text(out, &a.op.to_string());
        }
        if let Some(m) = i.dst_mac {
            out.extend_from_slice(&m.0);
        }
    }
    if let Some(Fingerprint(n)) = ev.fingerprint {
        out.extend_from_slice(&n.to_le_bytes());
    }
    if let Some(d) = &ev.drop {
        let mut b = 0;
        b |= if d.reason.is_some() { REASON } else { 0 };
        b |= if d.reason_code.is_some() {
            REASON_CODE
        } else {
            0
        };
        b |= if d.location.is_some() { LOCATION } else { 0 };
        out.push(b);
        if let Some(r) = &d.reason {
            text(out, r);
        }
        if let Some(c) = d.reason_code {
            varint(out, u64::from(c));
        }
        if let Some(l) = &d.location {
            text(out, l);
        }
        text(out, &d.location_addr.to_string());
    }
}

fn endpoints(out: &mut Vec<u8>, e: &Endpoints) {
    let proto = e.proto.number();
    let mut b = 0;
    b |= if e.src.is_ipv6() { V6 } else { 0 };
    b |= if e.sport.is_some() { SPORT } else { 0 };
    b |= if e.dport.is_some() { DPORT } else { 0 };
    b |= if proto.is_none() { PROTO_NAMED } else { 0 };
    out.push(b);
    for a in [e.src, e.dst] {
        match (a, b & V6 != 0) {
            (IpAddr::V4(a), false) => out.extend_from_slice(&a.octets()),
            (IpAddr::V6(a), true) => out.extend_from_slice(&a.octets()),
            // Mixed families (never produced by the decoder): as v6.
            (IpAddr::V4(a), true) => out.extend_from_slice(&a.to_ipv6_mapped().octets()),
            (IpAddr::V6(_), false) => unreachable!("V6 is set when src is IPv6"),
        }
    }
    match proto {
        Some(p) => out.push(p),
        None => text(out, &e.proto.to_string()),
    }
    if let Some(p) = e.sport {
        out.extend_from_slice(&p.to_le_bytes());
    }
    if let Some(p) = e.dport {
        out.extend_from_slice(&p.to_le_bytes());
    }
}

/// Decodes one batch payload.
pub fn decode_batch(ctx: &Context, payload: &[u8]) -> Result<Vec<Event>, CodecError> {
    let mut r = Reader { b: payload, at: 0 };
    let tag = r.u8()?;
    if tag != BATCH {
        return Err(CodecError::Tag(tag));
    }
    let count = r.varint()?;
    // Every event takes at least three bytes: the count cannot make us
    // reserve more than the payload could hold.
    let mut events = Vec::with_capacity((count as usize).min(payload.len() / 3));
    let mut prev = 0u64;
    for _ in 0..count {
        let ev = decode_event(ctx, &mut r, prev)?;
        prev = ev.ts_mono_ns;
        events.push(ev);
    }
    match r.b.len() - r.at {
        0 => Ok(events),
        n => Err(CodecError::Trailing(n)),
    }
}

fn decode_event(ctx: &Context, r: &mut Reader<'_>, prev_ts: u64) -> Result<Event, CodecError> {
    let bits = r.varint()? as u32;
    let hop = if bits & HOP_NAMED != 0 {
        r.parsed_with(hop_name::parse)?
    } else {
        let h = r.u8()?;
        Hop::try_from(h).map_err(|_| CodecError::Hop(h))?
    };
    let ts_mono_ns = prev_ts.wrapping_add(unzigzag(r.varint()?) as u64);
    let ifindex = r.varint()? as u32;
    let iface = if bits & IFACE_NONE != 0 {
        None
    } else if bits & IFACE_NAMED != 0 {
        Some(r.text()?)
    } else {
        ctx.name_of(ifindex).map(str::to_owned)
    };
    let len = r.varint()? as u32;
    let outer = (bits & OUTER != 0).then(|| read_endpoints(r)).transpose()?;
    let vni = (bits & VNI != 0)
        .then(|| r.varint().map(|v| v as u32))
        .transpose()?;
    let vlan = (bits & VLAN != 0).then(|| r.u16()).transpose()?;
    let vlan_inner = (bits & VLAN_INNER != 0).then(|| r.u16()).transpose()?;
    let inner = if bits & INNER != 0 {
        let endpoints = read_endpoints(r)?;
        let ip_id = r.varint()? as u32;
        let ip_len = r.varint()? as u16;
        let tcp = if bits & TCP != 0 {
            let seq = r.u32()?;
            let ack = r.u32()?;
            let flags = if bits & TCP_FLAGS_TEXT != 0 {
                r.parsed()?
            } else {
                TcpFlags(r.u8()?)
            };
            let payload_len = r.varint()? as u32;
            Some(Tcp {
                seq,
                ack,
                flags,
                payload_len,
            })
        } else {
            None
        };
        let icmp = if bits & ICMP != 0 {
            Some(Icmp {
                ty: r.u8()?,
                code: r.u8()?,
                id: r.u16()?,
                seq: r.u16()?,
            })
        } else {
            None
        };
        let arp = (bits & ARP != 0)
            .then(|| r.parsed().map(|op| Arp { op }))
            .transpose()?;
        let dst_mac = (bits & DST_MAC != 0)
            .then(|| r.bytes(6).map(|b| Mac(b.try_into().expect("6 bytes"))))
            .transpose()?;
        Some(Inner {
            endpoints,
            ip_id,
            ip_len,
            tcp,
            icmp,
            arp,
            dst_mac,
            fragment: bits & FRAGMENT != 0,
            truncated: bits & TRUNCATED != 0,
        })
    } else {
        None
    };
    let fingerprint = if bits & FINGERPRINT != 0 {
        Some(Fingerprint(r.u64()?))
    } else if bits & FINGERPRINT_TEXT != 0 {
        Some(r.parsed()?)
    } else {
        None
    };
    let drop = if bits & DROP != 0 {
        let b = r.u8()?;
        let reason = (b & REASON != 0).then(|| r.text()).transpose()?;
        let reason_code = (b & REASON_CODE != 0)
            .then(|| r.varint().map(|v| v as u32))
            .transpose()?;
        let location = (b & LOCATION != 0).then(|| r.text()).transpose()?;
        Some(KernelDrop {
            reason,
            reason_code,
            location,
            location_addr: r.parsed()?,
        })
    } else {
        None
    };
    Ok(Event {
        time: (ts_mono_ns as i64).wrapping_add(ctx.offset_ns),
        ts_mono_ns,
        hop,
        ifindex,
        iface,
        len,
        outer,
        vni,
        vlan,
        vlan_inner,
        undecodable: bits & UNDECODABLE != 0,
        outer_recovered: bits & OUTER_RECOVERED != 0,
        inner,
        fingerprint,
        drop,
    })
}

fn read_endpoints(r: &mut Reader<'_>) -> Result<Endpoints, CodecError> {
    let b = r.u8()?;
    let mut addr = || -> Result<IpAddr, CodecError> {
        Ok(if b & V6 != 0 {
            let o: [u8; 16] = r.bytes(16)?.try_into().expect("16 bytes");
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            let o: [u8; 4] = r.bytes(4)?.try_into().expect("4 bytes");
            IpAddr::V4(Ipv4Addr::from(o))
        })
    };
    let src = addr()?;
    let dst = addr()?;
    let proto = if b & PROTO_NAMED != 0 {
        r.parsed()?
    } else {
        Proto::from_number(r.u8()?)
    };
    let sport = (b & SPORT != 0).then(|| r.u16()).transpose()?;
    let dport = (b & DPORT != 0).then(|| r.u16()).transpose()?;
    Ok(Endpoints {
        src,
        dst,
        proto,
        sport,
        dport,
    })
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

fn text(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(CodecError::Truncated(self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into().expect("2")))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8")))
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let start = self.at;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Varint(start))
    }

    fn str(&mut self) -> Result<&'a str, CodecError> {
        let n = self.varint()?;
        let at = self.at;
        let n = usize::try_from(n).map_err(|_| CodecError::Truncated(at))?;
        let b = self.bytes(n)?;
        std::str::from_utf8(b).map_err(|_| CodecError::Utf8(at))
    }

    fn text(&mut self) -> Result<String, CodecError> {
        self.str().map(str::to_owned)
    }

    /// A typed value written as its text.
    fn parsed_with<T>(
        &mut self,
        parse: impl FnOnce(&str) -> Result<T, BadValue>,
    ) -> Result<T, CodecError> {
        let at = self.at;
        parse(self.str()?).map_err(|e| CodecError::Value(at, e))
    }

    fn parsed<T: FromStr<Err = BadValue>>(&mut self) -> Result<T, CodecError> {
        self.parsed_with(str::parse)
    }
}

#[cfg(test)]
#[path = "codec/tests.rs"]
mod tests;
