//! Events into a batch: a presence bitmap, then each present field.

use super::{
    ARP, BATCH, Context, DPORT, DROP, DST_MAC, FINGERPRINT, FRAGMENT, ICMP, IFACE_NAMED,
    IFACE_NONE, INNER, LOCATION, OUTER, OUTER_RECOVERED, PROTO_NAMED, REASON, REASON_CODE, SPORT,
    TCP, TRUNCATED, UNDECODABLE, V6, VLAN, VLAN_INNER, VNI,
};
use crate::schema::event::Endpoints;
use crate::schema::event::Event;
use crate::schema::values::Fingerprint;
use std::net::IpAddr;

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

pub(super) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(super) fn text(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}
