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
//! Anything the compact form cannot express (an unknown hop or protocol
//! name, a non-canonical fingerprint) is written as a string instead, so a
//! round trip is always exact.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flannel_trace_common::Hop;
use thiserror::Error;

use crate::{
    schema::event::{Arp, Drop, Endpoints, Event, Icmp, Inner, Tcp, proto_name, tcp_flags},
    schema::identity::NodeIdentity,
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
const FINGERPRINT_TEXT: u32 = 1 << 6;
const DROP: u32 = 1 << 7;
const IFACE_NONE: u32 = 1 << 8;
const IFACE_NAMED: u32 = 1 << 9;
const HOP_NAMED: u32 = 1 << 10;
const TCP: u32 = 1 << 11;
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
    let hop = Hop::ALL.into_iter().find(|h| h.name() == ev.hop);
    let fp = ev
        .fingerprint
        .as_deref()
        .map(|f| match parse_fingerprint(f) {
            Some(n) => Ok(n),
            None => Err(f),
        });
    let tcp_bits = ev
        .inner
        .as_ref()
        .and_then(|i| i.tcp.as_ref())
        .map(|t| tcp_flag_bits(&t.flags).ok_or(t.flags.as_str()));
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
    set(FINGERPRINT, matches!(fp, Some(Ok(_))));
    set(FINGERPRINT_TEXT, matches!(fp, Some(Err(_))));
    set(DROP, ev.drop.is_some());
    let iface_implied = ev.iface.as_deref() == ctx.name_of(ev.ifindex) && ev.iface.is_some();
    set(IFACE_NONE, ev.iface.is_none());
    set(IFACE_NAMED, ev.iface.is_some() && !iface_implied);
    set(HOP_NAMED, hop.is_none());
    if let Some(inner) = &ev.inner {
        set(TCP, inner.tcp.is_some());
        set(TCP_FLAGS_TEXT, matches!(tcp_bits, Some(Err(_))));
        set(ICMP, inner.icmp.is_some());
        set(FRAGMENT, inner.fragment);
        set(TRUNCATED, inner.truncated);
        set(ARP, inner.arp.is_some());
        set(
            DST_MAC,
            inner.dst_mac.as_deref().and_then(parse_mac).is_some(),
        );
    }
    varint(out, u64::from(bits));
    match hop {
        Some(h) => out.push(h as u8),
        None => text(out, &ev.hop),
    }
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
            match tcp_bits {
                Some(Ok(b)) => out.push(b),
                _ => text(out, &t.flags),
            }
            varint(out, u64::from(t.payload_len));
        }
        if let Some(c) = &i.icmp {
            out.extend_from_slice(&[c.ty, c.code]);
            out.extend_from_slice(&c.id.to_le_bytes());
            out.extend_from_slice(&c.seq.to_le_bytes());
        }
        if let Some(a) = &i.arp {
            text(out, &a.op);
        }
        if let Some(m) = i.dst_mac.as_deref().and_then(parse_mac) {
            out.extend_from_slice(&m);
        }
    }
    match fp {
        Some(Ok(n)) => out.extend_from_slice(&n.to_le_bytes()),
        Some(Err(s)) => text(out, s),
        None => {}
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
        text(out, &d.location_addr);
    }
}

fn endpoints(out: &mut Vec<u8>, e: &Endpoints) {
    let proto = proto_number(&e.proto);
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
        None => text(out, &e.proto),
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
    // A batch's events fall within a second or two: the date is formatted
    // once a second, not per event.
    let mut times = crate::kernel::clock::Rfc3339Cache::default();
    for _ in 0..count {
        let ev = decode_event(ctx, &mut r, prev, &mut times)?;
        prev = ev.ts_mono_ns;
        events.push(ev);
    }
    match r.b.len() - r.at {
        0 => Ok(events),
        n => Err(CodecError::Trailing(n)),
    }
}

fn decode_event(
    ctx: &Context,
    r: &mut Reader<'_>,
    prev_ts: u64,
    times: &mut crate::kernel::clock::Rfc3339Cache,
) -> Result<Event, CodecError> {
    let bits = r.varint()? as u32;
    let hop = if bits & HOP_NAMED != 0 {
        r.text()?
    } else {
        let h = r.u8()?;
        Hop::try_from(h)
            .map_err(|_| CodecError::Hop(h))?
            .name()
            .to_owned()
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
                r.text()?
            } else {
                tcp_flags(r.u8()?)
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
            .then(|| r.text().map(|op| Arp { op }))
            .transpose()?;
        let dst_mac = (bits & DST_MAC != 0)
            .then(|| {
                r.bytes(6)
                    .map(|b| crate::schema::identity::mac_string(&b.try_into().expect("6 bytes")))
            })
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
        Some(crate::schema::event::hex16(r.u64()?))
    } else if bits & FINGERPRINT_TEXT != 0 {
        Some(r.text()?)
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
        Some(Drop {
            reason,
            reason_code,
            location,
            location_addr: r.text()?,
        })
    } else {
        None
    };
    Ok(Event {
        time: times.format((ts_mono_ns as i64).wrapping_add(ctx.offset_ns)),
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
        r.text()?
    } else {
        proto_name(r.u8()?)
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

/// The inverse of `proto_name`, where the name is one it produces.
pub(crate) fn proto_number(name: &str) -> Option<u8> {
    let n = match name {
        "icmp" => 1,
        "tcp" => 6,
        "udp" => 17,
        "icmpv6" => 58,
        "sctp" => 132,
        other => other.strip_prefix("ip-proto-")?.parse().ok()?,
    };
    (proto_name(n) == name).then_some(n)
}

/// The inverse of `tcp_flags`, where the text is one it produces.
/// `aa:bb:cc:dd:ee:ff` as six bytes.
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn tcp_flag_bits(text: &str) -> Option<u8> {
    if text == "-" {
        return Some(0);
    }
    let mut b = 0u8;
    for name in text.split('|') {
        b |= match name {
            "FIN" => 0x01,
            "SYN" => 0x02,
            "RST" => 0x04,
            "PSH" => 0x08,
            "ACK" => 0x10,
            "URG" => 0x20,
            "ECE" => 0x40,
            "CWR" => 0x80,
            _ => return None,
        };
    }
    // Only the canonical order and spelling round-trip as bits.
    (tcp_flags(b) == text).then_some(b)
}

/// 16 lowercase hex digits, as the decoder writes fingerprints.
fn parse_fingerprint(f: &str) -> Option<u64> {
    let canonical = f.len() == 16 && f.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    canonical.then(|| u64::from_str_radix(f, 16).ok()).flatten()
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

    fn text(&mut self) -> Result<String, CodecError> {
        let n = self.varint()?;
        let at = self.at;
        let n = usize::try_from(n).map_err(|_| CodecError::Truncated(at))?;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| CodecError::Utf8(at))
    }
}

#[cfg(test)]
#[path = "codec/tests.rs"]
mod tests;
