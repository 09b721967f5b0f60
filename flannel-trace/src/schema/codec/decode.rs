//! A batch back into events, every read bounds-checked: a short or
//! corrupt batch is a [`CodecError`], never a panic.

use super::{
    ARP, BATCH, CodecError, Context, DPORT, DROP, DST_MAC, FINGERPRINT, FINGERPRINT_TEXT, FRAGMENT,
    HOP_NAMED, ICMP, IFACE_NAMED, IFACE_NONE, INNER, LOCATION, OUTER, OUTER_RECOVERED, PROTO_NAMED,
    REASON, REASON_CODE, SPORT, TCP, TCP_FLAGS_TEXT, TRUNCATED, UNDECODABLE, V6, VLAN, VLAN_INNER,
    VNI,
};
use crate::schema::event::Arp;
use crate::schema::event::Endpoints;
use crate::schema::event::Event;
use crate::schema::event::Icmp;
use crate::schema::event::Inner;
use crate::schema::event::KernelDrop;
use crate::schema::event::Tcp;
use crate::schema::values::BadValue;
use crate::schema::values::Fingerprint;
use crate::schema::values::Mac;
use crate::schema::values::Proto;
use crate::schema::values::TcpFlags;
use crate::schema::values::hop_name;
use flannel_trace_common::Hop;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::Ipv6Addr;
use std::str::FromStr;

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

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
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
