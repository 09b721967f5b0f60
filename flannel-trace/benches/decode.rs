//! Micro-benchmark of the userspace hot path, per event: ring-buffer
//! record → `Event` (decode), then the text line or the JSON line that the
//! session writes, into a 64 KiB buffered sink as the session does.
//! Throughput is events/s on one core (divan prints items/s).
//!
//! It uses the library's `hot_path` module: the same code the session runs.

use std::{
    collections::{BTreeMap, HashMap},
    hint::black_box,
    io::{self, Write as _},
};

use divan::{Bencher, counter::ItemsCount};
use flannel_trace_common::{EventKind, Hop, PacketInfo, RawEvent, Tuple, event::flags};

use flannel_trace::hot_path::{self as output, Clock, Decoder, Event, Kallsyms, bump};

fn main() {
    divan::main();
}

/// Records per benchmark iteration, about one ring-buffer batch.
const BATCH: usize = 1024;

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&a);
    b
}

fn tuple(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, proto: u8) -> Tuple {
    Tuple {
        src: v4(src),
        dst: v4(dst),
        sport,
        dport,
        family: 4,
        proto,
        _pad: [0; 2],
    }
}

/// The mix a node sees under pod-to-pod load: encapsulated UDP at the NIC
/// and after decapsulation, inner TCP on the overlay, and a kernel drop.
fn raw(i: usize) -> RawEvent {
    let mut p = PacketInfo {
        ip_id: i as u32,
        inner_len: 92,
        ip_hlen: 20,
        ..PacketInfo::default()
    };
    let outer = tuple([10, 25, 1, 51], [10, 25, 1, 55], 49839, 8475, 17);
    let (mut hop, mut kind) = (Hop::UnderlayIngress, EventKind::Packet);
    match i % 4 {
        0 | 1 => {
            p.outer = outer;
            p.vni = 1;
            p.inner = tuple([10, 244, 1, 2], [10, 244, 2, 2], 40000, 9100, 17);
            p.flags = flags::HAS_OUTER | flags::HAS_INNER | flags::HAS_L4 | flags::HAS_INNER_MAC;
            p.inner_dmac = [0x0e, 0xf7, 0, 0, 0, 2];
            if i % 4 == 1 {
                hop = Hop::VxlanRcv;
                p.flags |= flags::OUTER_FROM_HEADROOM;
            }
        }
        2 => {
            hop = Hop::OverlayIngress;
            p.inner = tuple([10, 244, 1, 2], [10, 244, 2, 2], 40001, 9101, 6);
            p.flags = flags::HAS_INNER | flags::HAS_L4;
            p.tcp_seq = 1000 + i as u32 * 1448;
            p.tcp_ack = 77;
            p.tcp_flags = 0x18;
            p.tcp_hlen = 32;
            p.inner_len = 1500;
        }
        _ => {
            (hop, kind) = (Hop::Drop, EventKind::Drop);
            p.outer = outer;
            p.vni = 1;
            p.inner = tuple([10, 244, 1, 0], [10, 244, 2, 0], 0, 0, 1);
            p.flags = flags::HAS_OUTER | flags::HAS_INNER | flags::HAS_L4 | flags::HAS_REASON;
            p.icmp_type = 8;
            p.icmp_id = 1106;
            p.icmp_seq = i as u16;
        }
    }
    RawEvent {
        ts_ns: 1_000_000_000 + i as u64 * 1_000,
        kind: kind as u8,
        hop: hop as u8,
        // lo: present in every namespace, so the name lookup succeeds.
        ifindex: 1,
        skb_len: 134,
        drop_reason: 12,
        drop_location: 0xffff_ffff_8100_03e8,
        pkt: p,
        ..RawEvent::default()
    }
}

/// The records as the ring buffer hands them over: bytes.
fn records() -> Vec<Vec<u8>> {
    (0..BATCH)
        .map(|i| {
            let r = raw(i);
            // SAFETY: RawEvent is repr(C) plain data; viewing it as bytes
            // is what the kernel side's ring-buffer write amounts to.
            unsafe {
                std::slice::from_raw_parts((&r as *const RawEvent).cast::<u8>(), RawEvent::SIZE)
            }
            .to_vec()
        })
        .collect()
}

fn decoder() -> Decoder {
    let reasons = HashMap::from([(12, "NETFILTER_DROP".to_owned())]);
    let syms = Kallsyms::parse("ffffffff81000000 T nft_do_chain\nffffffff81001000 T other\n");
    Decoder::new(Clock::sample(), reasons, syms)
}

/// What session.rs does with each event besides rendering it: the
/// summary's per-hop and per-reason counts.
#[derive(Default)]
struct Counts {
    per_hop: BTreeMap<String, u64>,
    drops: BTreeMap<String, u64>,
}

impl Counts {
    /// As session.rs counts: a key is cloned only when it is new.
    fn add(&mut self, ev: &Event) {
        bump(&mut self.per_hop, ev.hop.name());
        if let Some(d) = &ev.drop {
            bump(&mut self.drops, &d.summary_key());
        }
    }
}

/// Ring-buffer bytes → `Event`, nothing else.
#[divan::bench]
fn decode(bencher: Bencher) {
    let recs = records();
    let mut d = decoder();
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        for r in &recs {
            let ev = RawEvent::from_bytes(r).and_then(|raw| d.decode(&raw));
            black_box(ev.ok());
        }
    });
}

/// Decode, count, and write the text line (the default output).
#[divan::bench]
fn text_line(bencher: Bencher) {
    let recs = records();
    let mut d = decoder();
    let mut counts = Counts::default();
    let mut out = io::BufWriter::with_capacity(1 << 16, io::sink());
    let offset = d.clock.offset_ns();
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        for r in &recs {
            let ev = RawEvent::from_bytes(r)
                .and_then(|raw| d.decode(&raw))
                .unwrap();
            counts.add(&ev);
            output::write_event_text(&mut out, &ev, offset).unwrap();
            out.write_all(b"\n").unwrap();
        }
    });
}

/// Decode, count, and write the JSON line (`--json`).
#[divan::bench]
fn json_line(bencher: Bencher) {
    let recs = records();
    let mut d = decoder();
    let mut counts = Counts::default();
    let mut out = io::BufWriter::with_capacity(1 << 16, io::sink());
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        for r in &recs {
            let ev = RawEvent::from_bytes(r)
                .and_then(|raw| d.decode(&raw))
                .unwrap();
            counts.add(&ev);
            serde_json::to_writer(&mut out, &output::EventRecord::Event(&ev)).unwrap();
            out.write_all(b"\n").unwrap();
        }
    });
}
