//! Entry points of the fuzz targets (`fuzz/`): each feeds untrusted bytes
//! to a decoder the tool runs on them. None may panic; the compact event
//! encoding must also decode to what it encodes.

use std::{collections::HashMap, path::Path};

use bytes::BytesMut;
use flannel_trace_common::{
    Config, PacketInfo, Ports,
    dropped::Record,
    fingerprint::fingerprint,
    parse::{Layer, parse_inner, parse_underlay, recover_outer},
};

use crate::{
    kernel::clock::Clock, kernel::kallsyms::Kallsyms, schema::codec, schema::event::Decoder,
    schema::identity::NodeIdentity,
};

/// A node identity for the stream context of event batches.
pub(crate) fn identity() -> NodeIdentity {
    serde_json::from_value(serde_json::json!({
        "version": "fuzz", "node": "node-a", "kernel": "6.1.0", "netns_inode": 1,
        "vxlan_dev": "flannel.1", "vxlan_ifindex": 3, "vxlan_mac": null, "vtep_addrs": [],
        "underlay_dev": "eth1", "underlay_ifindex": 2, "underlay_addrs": [], "local": null,
        "port": 8472, "port_source": "default", "device_port": 8472, "vni": 1, "fdb": [],
        "hooks": [], "clock_offset_ns": 1_700_000_000_000_000_000i64, "ring_size": 4096,
    }))
    .expect("a valid identity")
}

/// The packet parser as the programs run it, at every layer it starts at.
pub fn packet(data: &[u8]) {
    let mut ports = Ports::default();
    ports.add(8472);
    ports.add(4789);
    for layer in [Layer::Ethernet, Layer::Ipv4, Layer::Ipv6] {
        let mut p = PacketInfo::default();
        if parse_underlay(data, layer, 0, &ports, &mut p).is_ok() {
            let _ = fingerprint(&p);
        }
        let mut p = PacketInfo::default();
        if parse_inner(data, layer, 0, &mut p).is_ok() {
            let _ = fingerprint(&p);
        }
    }
    // After decapsulation: the outer headers in front of the inner frame.
    if let Some(&at) = data.first() {
        let mut p = PacketInfo::default();
        let _ = recover_outer(data, usize::from(at), &ports, &mut p);
    }
}

/// A ring-buffer record of either kind, then the userspace decoder; a drop
/// record's bytes go through the parser first, as the session runs it (on
/// and off the vxlan device, with a pod network and every filter off).
pub fn ring_event(data: &[u8]) {
    let mut d = Decoder::new(Clock::sample(), HashMap::new(), Kallsyms::parse(""));
    match Record::from_bytes(data) {
        Ok(Record::Event(raw)) => {
            let _ = d.decode(&raw);
        }
        Ok(Record::Drop(mut raw)) => {
            let mut cfg = Config::zeroed();
            cfg.overlay.set_v4([10, 244, 0, 0], 16);
            cfg.has_drop_reason = 1;
            let mut ports = Ports::default();
            ports.add(8472);
            for on_vxlan in [raw.on_vxlan, raw.on_vxlan ^ 1] {
                raw.on_vxlan = on_vxlan;
                if let Some(ev) = raw.parse(&cfg, &ports) {
                    let _ = d.decode(&ev);
                }
            }
        }
        Err(_) => {}
    }
}

/// A batch of events in the compact encoding: decodes, or is an error; what
/// decodes re-encodes to a batch that decodes to the same events.
pub fn event_batch(data: &[u8]) {
    let ctx = codec::Context::of(&identity());
    let Ok(events) = codec::decode_batch(&ctx, data) else {
        return;
    };
    let mut again = Vec::new();
    codec::encode_batch(&ctx, &events, &mut again);
    let back = codec::decode_batch(&ctx, &again).expect("a batch we encoded decodes");
    let json =
        |e: &[crate::schema::event::Event]| serde_json::to_value(e).expect("events serialise");
    assert_eq!(
        json(&events),
        json(&back),
        "the round trip changed an event"
    );
}

/// A frame stream (recording body or decrypted peer stream).
pub fn frames(data: &[u8]) {
    // As a recording holds it (records only), and as the peer reads it.
    let mut records = crate::schema::wire::Decoder::<crate::schema::record::Record>::default();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = records.decode(&mut buf) {}
    let mut messages = crate::schema::wire::Decoder::<crate::peer::Message>::default();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = messages.decode(&mut buf) {}
}

/// The peer handshake and record layer.
pub fn peer(data: &[u8]) {
    crate::peer::fuzz(data);
}

/// A whole recording file.
pub fn recording(data: &[u8]) {
    let _ = crate::schema::recording::parse(Path::new("fuzz.rec"), data);
}

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf};

    use flannel_trace_common::{EventKind, Hop, RawEvent};

    use super::*;
    use crate::{
        peer::{Control, Message},
        schema::record::Record,
        schema::summary::Summary,
    };

    /// Ethernet / IPv4 / UDP to `dport` / VXLAN VNI 1 / Ethernet / IPv4 /
    /// `inner_l4` (protocol `proto`).
    fn vxlan_frame(dport: u16, proto: u8, inner_l4: &[u8]) -> Vec<u8> {
        let mut inner = vec![0u8; 12];
        inner.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + inner_l4.len()) as u16;
        inner.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0x12,
            0x34,
            0,
            0,
            64,
            proto,
            0,
            0,
        ]);
        inner.extend_from_slice(&[10, 244, 1, 0, 10, 244, 2, 0]);
        inner.extend_from_slice(inner_l4);
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + 8 + inner.len()) as u16;
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0x40,
            0,
            64,
            17,
            0,
            0,
        ]);
        f.extend_from_slice(&[10, 25, 1, 51, 10, 25, 1, 55]);
        let udp_len = (8 + 8 + inner.len()) as u16;
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 1, 0]);
        f.extend_from_slice(&inner);
        f
    }

    fn write(target: &str, name: &str, data: &[u8]) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    }

    /// Seeds the fuzz corpora with valid inputs of every kind (run by hand
    /// when a format changes; the seeds are committed).
    #[test]
    #[ignore = "writes fuzz/corpus: run by hand with --ignored"]
    fn write_fuzz_seeds() {
        let icmp = vxlan_frame(8472, 1, &[8, 0, 0, 0, 0, 7, 0, 1]);
        let tcp = vxlan_frame(
            4789,
            6,
            &[
                0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x18, 0, 0, 0, 0, 0, 0,
            ],
        );
        write("packet", "vxlan-icmp", &icmp);
        write("packet", "vxlan-tcp", &tcp);
        write("packet", "inner-ipv4", &icmp[50..]);

        let mut pkt = PacketInfo::default();
        let mut ports = Ports::default();
        ports.add(8472);
        parse_underlay(&icmp[..], Layer::Ethernet, 0, &ports, &mut pkt).unwrap();
        let raw = RawEvent {
            ts_ns: 1_000,
            kind: EventKind::Packet as u8,
            hop: Hop::UnderlayIngress as u8,
            ifindex: 2,
            skb_len: icmp.len() as u32,
            pkt,
            ..Default::default()
        };
        // SAFETY: RawEvent is repr(C) with explicit padding (no
        // uninitialised bytes), SIZE bytes long.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw as *const RawEvent).cast::<u8>(), RawEvent::SIZE)
        };
        write("ring_event", "underlay-ingress", bytes);
        // A drop record: the encapsulated frame from its IP header.
        let mut drop = flannel_trace_common::dropped::RawDrop::zeroed();
        let ip = &icmp[14..];
        drop.bytes[..ip.len()].copy_from_slice(ip);
        drop.captured = ip.len() as u16;
        drop.protocol = 0x0800;
        drop.ifindex = 2;
        drop.skb_len = ip.len() as u32;
        drop.drop_reason = 5;
        assert!(drop.parse(&Config::zeroed(), &ports).is_some());
        // SAFETY: RawDrop is repr(C) with explicit padding, SIZE bytes long.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&drop as *const flannel_trace_common::dropped::RawDrop).cast::<u8>(),
                flannel_trace_common::dropped::RawDrop::SIZE,
            )
        };
        write("ring_event", "raw-drop", bytes);

        let id = identity();
        let mut d = Decoder::new(Clock::sample(), HashMap::new(), Kallsyms::parse(""));
        let ev = d.decode(&raw).unwrap();
        let ctx = codec::Context::of(&id);
        let mut batch = Vec::new();
        codec::encode_batch(&ctx, &[ev.clone(), ev.clone()], &mut batch);
        write("event_batch", "two-events", &batch);

        let mut stream = crate::schema::wire::encode(&Record::Start(id.clone()))
            .unwrap()
            .to_vec();
        crate::schema::wire::encode_events(&ctx, std::slice::from_ref(&ev), &mut stream);
        stream.extend_from_slice(
            &crate::schema::wire::encode(&Message::Control(Control::Bye)).unwrap(),
        );
        write("frames", "start-events-bye", &stream);

        let path = std::env::temp_dir().join(format!("ft-seed-{}.rec", std::process::id()));
        let mut w = crate::schema::recording::Writer::create(&path, &id).unwrap();
        w.write_event(ev).unwrap();
        w.finish(&Summary {
            events: 1,
            complete: true,
            ..Summary::default()
        })
        .unwrap();
        write("recording", "one-event", &fs::read(&path).unwrap());
        fs::remove_file(&path).unwrap();

        // Peer: a genuine first message (mode 0), a reply (mode 1), records (mode 2).
        let mut m0 = vec![0u8];
        m0.extend_from_slice(&crate::peer::hello_for_fuzz());
        m0.extend_from_slice(&[0x11; 48]);
        write("peer", "hello-and-message", &m0);
        write("peer", "reply", &[&[1u8, 0][..], &[0x22; 48]].concat());
        write(
            "peer",
            "records",
            &[&[2u8, 0, 20][..], &[0x33; 20]].concat(),
        );
    }

    #[test]
    fn every_entry_point_takes_garbage() {
        for data in [
            &b""[..],
            b"\x00",
            b"\x01\x02\x03",
            &[0xff; 300],
            &[0u8; 160],
            &[3u8; 304],
        ] {
            packet(data);
            ring_event(data);
            event_batch(data);
            frames(data);
            peer(data);
            recording(data);
        }
    }
}
