//! Consistent thinning of the live stream: when the peer link cannot keep
//! up with a node's event rate, the peer forwards only the packets whose
//! `--sample` hash passes a mask, and the listener counts exactly those
//! packets, each for N = mask + 1.
//!
//! The hash is the kernel's own (`--sample`), recomputed from the decoded
//! event's invariant fields: both nodes compute it alike from what they
//! saw, the peer when it filters and the listener when it counts, so the
//! recording and compact encodings need not carry it. Masks are nested
//! (0 ⊂ 1 ⊂ 3 ⊂ 7 …, and every one contains the kernel's `--sample`
//! mask): a packet kept by a mask is kept by every smaller one.

use flannel_trace_common::{
    PacketInfo, Tuple,
    event::{AF_INET, AF_INET6, flags},
    fingerprint::{self, PROBE_ID_TAG},
};
use serde::{Deserialize, Serialize};

use crate::schema::event::Event;

/// The largest mask the peer thins to (1 in 1024): beyond it, events that
/// still do not fit are left out (`unsent`) and the verdict is uncertain.
pub const MAX_MASK: u32 = 1023;

/// One escalation: from `from_wall_ns` (the thinned node's wall clock) on,
/// its live stream carries only packets whose hash has `mask`'s bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinStep {
    pub from_wall_ns: i64,
    pub mask: u32,
}

impl ThinStep {
    /// "1 in N".
    pub fn rate(&self) -> u32 {
        self.mask + 1
    }
}

/// The next mask after `mask`, nested in it: twice as thin.
pub fn next_mask(mask: u32) -> u32 {
    (mask << 1) | 1
}

/// The kernel's `--sample` hash of the event's inner packet, from the
/// fields the decoder kept (equal to `fingerprint::sample_hash` of the
/// record it was decoded from); `None` without an inner packet.
pub fn sample_hash(ev: &Event) -> Option<u32> {
    let i = ev.inner.as_ref()?;
    let e = &i.endpoints;
    let (family, src, dst) = match (e.src, e.dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            (AF_INET, pad(s.octets()), pad(d.octets()))
        }
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => (AF_INET6, s.octets(), d.octets()),
        _ => return None,
    };
    // ARP has no IP protocol: 0.
    let proto = e.proto.number().unwrap_or(0);
    let mut p = PacketInfo {
        inner: Tuple {
            src,
            dst,
            sport: e.sport.unwrap_or(0),
            dport: e.dport.unwrap_or(0),
            family,
            proto,
            _pad: [0; 2],
        },
        ip_id: i.ip_id,
        flags: flags::HAS_INNER,
        ..PacketInfo::default()
    };
    // The decoder shows the L4 header exactly when the kernel had it.
    let l4 = match proto {
        6 => i.tcp.is_some(),
        17 | 132 => e.sport.is_some(),
        1 | 58 => i.icmp.is_some(),
        _ => true,
    };
    if l4 {
        p.flags |= flags::HAS_L4;
    }
    if i.fragment {
        p.flags |= flags::INNER_FRAGMENT;
    }
    if i.arp.is_some() {
        p.flags |= flags::INNER_ARP;
    }
    if let Some(c) = &i.icmp {
        (p.icmp_type, p.icmp_code, p.icmp_id, p.icmp_seq) = (c.ty, c.code, c.id, c.seq);
    }
    Some(fingerprint::sample_hash(&p))
}

fn pad(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&a);
    out
}

/// One of flannel-trace's own probes (or a reply): never thinned, as the
/// kernel never samples them out.
pub fn is_probe(ev: &Event) -> bool {
    ev.inner
        .as_ref()
        .and_then(|i| i.icmp.as_ref())
        .is_some_and(|c| matches!(c.ty, 0 | 8 | 128 | 129) && c.id & 0xff00 == PROBE_ID_TAG)
}

/// Whether the live stream under `mask` carries `ev`. Events without an
/// inner packet are never joined packet by packet, so thinning leaves them
/// out altogether.
pub fn keeps(ev: &Event, mask: u32) -> bool {
    mask == 0 || is_probe(ev) || sample_hash(ev).is_some_and(|h| h & mask == 0)
}

/// The listener's counting rule for one thinned node, on one direction's
/// clock.
///
/// Why a packet it counts is complete on both sides: the peer switched to
/// mask m_k at T_k, the earliest time among the events it filtered under
/// m_k (the triggering one and those still waiting to be queued), and
/// every event it handles later is later than that, so an event of time
/// t was filtered under at most M(t) = the largest m_k with T_k ≤ t
/// (plus ring-buffer reordering, microseconds). The join groups a packet's
/// observations from its first one, t0, for one window; a TCP range is
/// judged against what later hops saw up to a window after it, itself at
/// most a window after t0; and the peer's times reach this clock within
/// the clock bound. So every observation a counted packet needs is of time
/// ≤ t0 + `guard` (2 windows + the clock bound + a margin), and was
/// filtered under a mask ≤ m = M(t0 + guard). Counting the packet iff
/// hash & m == 0 then counts it only when each of those observations
/// passed its own, smaller-or-equal mask: masks are nested, so nothing it
/// needs was thinned out. The packet stands for m + 1 packets (for
/// (m + 1) / (kernel N) on top of `--sample`'s own factor): the hash, not
/// time, decides which packets, so that is an unbiased estimate.
#[derive(Debug, Clone, Default)]
pub struct Counting {
    /// (from, mask) on this direction's clock, masks increasing.
    steps: Vec<(i64, u32)>,
    /// The kernel's `--sample` mask, which the stream had already.
    base: u32,
    guard: i64,
}

impl Counting {
    /// Each node's steps on its own clock, with the shift that moves them
    /// onto this direction's.
    pub fn new(sides: [(&[ThinStep], i64); 2], base: u32, guard: i64) -> Counting {
        let mut s: Vec<(i64, u32)> = sides
            .iter()
            .flat_map(|(steps, shift)| {
                steps
                    .iter()
                    .map(move |t| (t.from_wall_ns.saturating_add(*shift), t.mask))
            })
            .collect();
        s.sort_by_key(|&(t, m)| (t, m));
        Counting {
            steps: s,
            base,
            guard,
        }
    }

    /// Whether anything was thinned at all.
    pub fn active(&self) -> bool {
        self.steps.iter().any(|&(_, m)| m > self.base)
    }

    /// The mask a packet first seen at `t0` is counted by.
    fn mask_for(&self, t0: i64) -> u32 {
        let until = t0.saturating_add(self.guard);
        self.steps
            .iter()
            .take_while(|&&(from, _)| from <= until)
            .map(|&(_, m)| m)
            .fold(self.base, u32::max)
    }

    /// What the packet of `ev`, first seen at `t0`, counts for in units of
    /// the kernel's sampling: 0 (not counted), 1 (not thinned further), or
    /// (m + 1) / (base + 1).
    pub fn weight(&self, ev: &Event, t0: i64) -> u64 {
        let m = self.mask_for(t0);
        if m == self.base || is_probe(ev) {
            return 1;
        }
        match sample_hash(ev) {
            Some(h) if h & m == 0 => u64::from(m + 1) / u64::from(self.base + 1),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use flannel_trace_common::{
        EventKind, Hop, RawEvent,
        parse::{Layer, parse_inner},
    };

    use super::*;
    use crate::{kernel::clock::Clock, kernel::kallsyms::Kallsyms, schema::event::Decoder};

    fn frame(l4: &[u8], proto: u8, id: u16, src: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let len = (20 + l4.len()) as u16;
        f.extend_from_slice(&[0x45, 0, (len >> 8) as u8, len as u8]);
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[10, 244, 2, 9]);
        f.extend_from_slice(l4);
        f
    }

    /// The hash recomputed from decoded events is the kernel's, for every
    /// kind of inner packet the decoder shows.
    #[test]
    fn the_hash_of_a_decoded_event_is_the_kernels() {
        let mut d = Decoder::new(Clock::sample(), HashMap::new(), Kallsyms::parse(""));
        let tcp = [
            0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x18, 0, 0, 0, 0, 0, 0,
        ];
        let udp = [0x9c, 0x40, 0x21, 0x1d, 0, 8, 0, 0];
        let icmp = [8, 0, 0, 0, 0xf7, 1, 0, 3];
        let mut frames = Vec::new();
        for id in 0..64u16 {
            let src = [10, 244, 1, id as u8];
            frames.push(frame(&tcp, 6, id, src));
            frames.push(frame(&udp, 17, id, src));
            frames.push(frame(&icmp, 1, id, src));
            frames.push(frame(&udp[..2], 17, id, src)); // truncated: no ports
            frames.push(frame(&[], 47, id, src)); // GRE: addresses only
        }
        let mut probes = 0;
        for f in frames {
            let mut pkt = PacketInfo::default();
            parse_inner(&f[..], Layer::Ethernet, 0, &mut pkt).unwrap();
            let raw = RawEvent {
                kind: EventKind::Packet as u8,
                hop: Hop::OverlayEgress as u8,
                pkt,
                ..Default::default()
            };
            let ev = d.decode(&raw).unwrap();
            assert_eq!(
                sample_hash(&ev),
                Some(fingerprint::sample_hash(&pkt)),
                "{ev:?}"
            );
            assert_eq!(is_probe(&ev), fingerprint::is_probe(&pkt));
            probes += u32::from(is_probe(&ev));
        }
        assert_eq!(probes, 64);
    }

    fn udp(id: u32) -> Event {
        serde_json::from_value(serde_json::json!({
            "time": "1970-01-01T00:00:00.000000000Z", "ts_mono_ns": 0, "hop": "overlay-egress", "ifindex": 1, "len": 100,
            "inner": {"src": "10.244.1.5", "dst": "10.244.2.9", "proto": "udp",
                      "sport": 4000, "dport": 8080, "ip_id": id, "ip_len": 60},
        }))
        .unwrap()
    }

    #[test]
    fn masks_nest_and_weights_follow_the_mask_in_force() {
        let evs: Vec<Event> = (0..4096).map(udp).collect();
        let kept = |m| evs.iter().filter(|e| keeps(e, m)).count();
        let (k1, k3, k7) = (kept(1), kept(3), kept(7));
        assert!(k1 > 1700 && k1 < 2400, "{k1}");
        assert!(k3 > 800 && k3 < 1250, "{k3}");
        assert!(k7 > 350 && k7 < 680, "{k7}");
        // Nested: what a larger mask keeps, every smaller one keeps.
        assert!(
            evs.iter()
                .all(|e| !keeps(e, 7) || (keeps(e, 3) && keeps(e, 1)))
        );

        let steps = [
            ThinStep {
                from_wall_ns: 1_000,
                mask: 1,
            },
            ThinStep {
                from_wall_ns: 2_000,
                mask: 3,
            },
        ];
        let c = Counting::new([(&steps, 100), (&[], 0)], 0, 50);
        assert!(c.active());
        // From T_k + shift - guard on, the mask of step k applies.
        assert_eq!(c.mask_for(1_049), 0);
        assert_eq!(c.mask_for(1_050), 1);
        assert_eq!(c.mask_for(2_050), 3);
        let total: u64 = evs.iter().map(|e| c.weight(e, 5_000)).sum();
        assert_eq!(total, 4 * k3 as u64);
        assert!(evs.iter().all(|e| c.weight(e, 0) == 1));
        // On top of --sample 2 (base mask 1), mask 3 weighs 2 kernel units.
        let c = Counting::new([(&[], 0), (&steps, 0)], 1, 0);
        let kept_k: Vec<&Event> = evs.iter().filter(|e| keeps(e, 1)).collect();
        let w: u64 = kept_k.iter().map(|e| c.weight(e, 2_000)).sum();
        assert_eq!(w, 2 * k3 as u64);
        assert!(!Counting::new([(&[], 0), (&[], 0)], 1, 0).active());
    }
}
