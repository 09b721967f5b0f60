//! Text and JSON renderings of the session: start banner, events, summary.

use std::{fmt::Write as _, io, net::IpAddr};

use serde::Serialize;

use crate::{
    kernel::clock,
    schema::event::{Endpoints, Event},
    schema::identity::NodeIdentity,
    schema::summary::Summary,
    schema::values::ArpOp,
};

pub fn start_text(s: &NodeIdentity) -> String {
    let mut out = String::new();
    let vni = s.vni.map_or("any".into(), |v| v.to_string());
    let _ = writeln!(
        out,
        "flannel-trace {} on {} (kernel {}, netns {}): VXLAN udp/{} ({}), device vni {}",
        s.version, s.node, s.kernel, s.netns_inode, s.port, s.port_source, vni
    );
    let _ = writeln!(
        out,
        "  overlay {} (ifindex {}), underlay {} (ifindex {}{})",
        s.vxlan_dev,
        s.vxlan_ifindex,
        s.underlay_dev,
        s.underlay_ifindex,
        s.local.map_or(String::new(), |ip| format!(", local {ip}"))
    );
    let nets = s
        .pod_networks
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let nets = if nets.is_empty() {
        "unknown (no drops of plain pod traffic reported)".to_owned()
    } else {
        format!("{nets} (from {})", s.pod_network_source)
    };
    if s.pod_devs.is_empty() {
        let _ = writeln!(
            out,
            "  pods: no pod device (host-network tracing: paths start and end at {}); pod network {nets}",
            s.vxlan_dev
        );
    } else {
        let subnets = s
            .pod_subnets
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "  pods: behind {} (this node's subnet {subnets}); pod network {nets}",
            s.pod_devs.join(", ")
        );
    }
    for h in &s.hooks {
        let _ = write!(out, "  {:<17} {:<15} {}", h.hop, h.backend, h.target);
        for (b, why) in &h.fallbacks {
            let _ = write!(out, "\n  {:<17}   ({b} unavailable: {why})", "");
        }
        out.push('\n');
    }
    for m in &s.missing_hops {
        let _ = writeln!(out, "  {:<17} NOT TRACED      {}", m.hop, m.reason);
    }
    out
}

/// `proto src:sport > dst:dport` (IPv6 bracketed when ports follow), or
/// `proto src > dst` without ports.
fn write_endpoints(out: &mut impl io::Write, e: &Endpoints) -> io::Result<()> {
    match e.proto.static_name() {
        Some(name) => out.write_all(name.as_bytes())?,
        None => write!(out, "{}", e.proto)?,
    }
    out.write_all(b" ")?;
    match (e.sport, e.dport) {
        (Some(sp), Some(dp)) => {
            write_ip(out, e.src, true)?;
            out.write_all(b":")?;
            write_u64(out, sp.into())?;
            out.write_all(b" > ")?;
            write_ip(out, e.dst, true)?;
            out.write_all(b":")?;
            write_u64(out, dp.into())
        }
        _ => {
            write_ip(out, e.src, false)?;
            out.write_all(b" > ")?;
            write_ip(out, e.dst, false)
        }
    }
}

/// An address as `Display` writes it, IPv6 in brackets when `bracket`;
/// IPv4 by hand, the common case on an overlay.
fn write_ip(out: &mut impl io::Write, ip: IpAddr, bracket: bool) -> io::Result<()> {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b".")?;
                }
                write_u64(out, octet.into())?;
            }
            Ok(())
        }
        IpAddr::V6(v6) if bracket => write!(out, "[{v6}]"),
        IpAddr::V6(v6) => write!(out, "{v6}"),
    }
}

/// Decimal digits without the formatter.
fn write_u64(out: &mut impl io::Write, mut v: u64) -> io::Result<()> {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.write_all(&buf[at..])
}

/// One event as a line of text (without the newline). The session writes
/// [`write_event_text`]; this owning form is for everyone else.
#[allow(dead_code)]
pub fn event_text(e: &Event, clock_offset_ns: i64) -> String {
    let mut out = Vec::with_capacity(192);
    write_event_text(&mut out, e, clock_offset_ns).expect("writing to a Vec");
    String::from_utf8_lossy(&out).into_owned()
}

/// [`event_text`] straight into the output buffer (no newline): the
/// per-event path of a session builds no intermediate strings.
pub fn write_event_text(s: &mut impl io::Write, e: &Event, clock_offset_ns: i64) -> io::Result<()> {
    let mut tod = [0u8; 15];
    s.write_all(clock::time_of_day_bytes(
        e.ts_mono_ns as i64 + clock_offset_ns,
        &mut tod,
    ))?;
    s.write_all(b" ")?;
    write_padded(s, e.hop.name(), 16)?;
    s.write_all(b" ")?;
    write_padded(s, e.iface.as_deref().unwrap_or("?"), 10)?;
    if let Some(o) = &e.outer {
        s.write_all(b" ")?;
        write_endpoints(s, o)?;
        s.write_all(b" vni ")?;
        write_u64(s, e.vni.unwrap_or(0).into())?;
        if let Some(v) = e.vlan {
            write!(s, " vlan {v}")?;
        }
        if let Some(v) = e.vlan_inner {
            write!(s, " inner-vlan {v}")?;
        }
        s.write_all(b" |")?;
    }
    match &e.inner {
        Some(i) if i.arp.is_some() => {
            let (src, dst) = (i.endpoints.src, i.endpoints.dst);
            match i.arp.as_ref().map(|a| a.op) {
                Some(ArpOp::Reply) => write!(s, " arp reply {src} is-at (to {dst})")?,
                Some(ArpOp::Request) => write!(s, " arp request who-has {dst} tell {src}")?,
                Some(op @ ArpOp::Other(_)) => write!(s, " arp {op} {src} > {dst}")?,
                None => unreachable!("matched on arp"),
            }
        }
        Some(i) => {
            s.write_all(b" ")?;
            write_endpoints(s, &i.endpoints)?;
            if let Some(t) = &i.tcp {
                write!(s, " [{}] seq {} ack {}", t.flags, t.seq, t.ack)?;
            }
            if let Some(c) = &i.icmp {
                write!(
                    s,
                    " type {} code {} id {} seq {}",
                    c.ty, c.code, c.id, c.seq
                )?;
            }
            if i.fragment {
                s.write_all(b" fragment")?;
            }
            if i.truncated {
                s.write_all(b" (truncated)")?;
            }
        }
        None if e.undecodable => {
            s.write_all(b" (undecodable VXLAN frame: cut or inconsistent headers)")?
        }
        None => s.write_all(b" (inner frame not decoded)")?,
    }
    s.write_all(b" len ")?;
    write_u64(s, e.len.into())?;
    if let Some(d) = &e.drop {
        let reason = d.reason.as_deref().unwrap_or("(no reason on this kernel)");
        match d.location.as_deref() {
            Some(l) => write!(s, " | DROP {reason} at {l}")?,
            None => write!(s, " | DROP {reason} at {}", d.location_addr)?,
        }
    }
    if let Some(fp) = &e.fingerprint {
        s.write_all(b" fp ")?;
        s.write_all(&fp.digits())?;
    }
    Ok(())
}

/// `{:<width}` without the formatter (per event, twice).
fn write_padded(out: &mut impl io::Write, text: &str, width: usize) -> io::Result<()> {
    const SPACES: &[u8; 16] = b"                ";
    out.write_all(text.as_bytes())?;
    let pad = width.saturating_sub(text.chars().count());
    out.write_all(&SPACES[..pad.min(SPACES.len())])
}

/// An event as the `--json` stream carries it: the same object as
/// `Record::Event`, serialised from a borrow, so printing an event does
/// not copy it.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventRecord<'a> {
    Event(&'a Event),
}

pub fn summary_text(s: &Summary) -> String {
    let mut out = format!("\n{} events in {:.1}s\n", s.events, s.duration_s);
    for (hop, n) in &s.per_hop {
        let _ = writeln!(out, "  {hop:<17} {n}");
    }
    for (reason, n) in &s.drops_by_reason {
        let _ = writeln!(out, "  drop reason {reason}: {n}");
    }
    if s.lost > 0 {
        let _ = writeln!(
            out,
            "WARNING: the tracer itself lost {} events (ring buffer full; raise --ring-size or narrow with --host/--proto): counts above are lower bounds",
            s.lost
        );
    }
    if s.unparsed > 0 {
        let _ = writeln!(
            out,
            "  {} frames on the overlay port could not be decoded",
            s.unparsed
        );
    }
    if s.probe_read_errors > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} reads of struct sk_buff failed in the probe hooks (kernel layout not as its BTF says): vxlan-rcv/drop counts are incomplete",
            s.probe_read_errors
        );
    }
    if s.decode_errors > 0 {
        let _ = writeln!(
            out,
            "  {} records could not be decoded (binary and eBPF object out of step)",
            s.decode_errors
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::record::Record;

    fn sample() -> Event {
        let ep = |a: &str, b: &str, proto: &str, ports: bool| Endpoints {
            src: a.parse().unwrap(),
            dst: b.parse().unwrap(),
            proto: proto.parse().unwrap(),
            sport: ports.then_some(49839),
            dport: ports.then_some(8475),
        };
        Event {
            time: crate::schema::values::rfc3339_text::parse("2026-12-01T09:15:30.643302000Z")
                .unwrap(),
            ts_mono_ns: 1_000_000,
            hop: flannel_trace_common::Hop::UnderlayIngress,
            ifindex: 2,
            iface: Some("eth1".into()),
            len: 148,
            outer: Some(ep("10.25.1.51", "10.25.1.55", "udp", true)),
            vni: Some(1),
            vlan: None,
            vlan_inner: None,
            undecodable: false,
            outer_recovered: false,
            inner: Some(crate::schema::event::Inner {
                endpoints: ep("fd00::1", "fd00::2", "icmpv6", false),
                ip_id: 7,
                ip_len: 64,
                tcp: None,
                icmp: Some(crate::schema::event::Icmp {
                    ty: 128,
                    code: 0,
                    id: 1106,
                    seq: 1,
                }),
                arp: None,
                dst_mac: None,
                fragment: false,
                truncated: false,
            }),
            fingerprint: Some(crate::schema::values::Fingerprint(0x6953_c514_e9ff_7c04)),
            drop: None,
        }
    }

    #[test]
    fn the_borrowed_record_is_the_message() {
        let ev = sample();
        assert_eq!(
            serde_json::to_string(&EventRecord::Event(&ev)).unwrap(),
            serde_json::to_string(&Record::Event(ev.clone())).unwrap()
        );
    }

    #[test]
    fn hand_written_numbers_and_addresses_match_display() {
        let mut out = Vec::new();
        for v in [0u64, 7, 10, 65535, u64::MAX] {
            out.clear();
            write_u64(&mut out, v).unwrap();
            assert_eq!(out, v.to_string().as_bytes());
        }
        for (ip, bracket, want) in [
            ("0.0.0.0", true, "0.0.0.0"),
            ("10.244.1.255", false, "10.244.1.255"),
            ("fd00::1", true, "[fd00::1]"),
            ("fd00::1", false, "fd00::1"),
        ] {
            out.clear();
            write_ip(&mut out, ip.parse().unwrap(), bracket).unwrap();
            assert_eq!(String::from_utf8_lossy(&out), want);
        }
    }

    #[test]
    fn text_line() {
        let line = event_text(&sample(), 9 * 3_600_000_000_000);
        assert_eq!(
            line,
            "09:00:00.001000 underlay-ingress eth1       udp 10.25.1.51:49839 > 10.25.1.55:8475 vni 1 | \
             icmpv6 fd00::1 > fd00::2 type 128 code 0 id 1106 seq 1 len 148 fp 6953c514e9ff7c04"
        );
    }
}
