//! Counters mode (`--stats`): no per-packet events, only the programs'
//! per-CPU counters of packets and bytes per (remote, hop, device), read
//! every interval, and drops per (reason, device), counted here from the
//! drop hook's records. The incident's
//! "flannel.1 RX packets 0", made precise per peer and per hop — cheap
//! enough to leave running for hours.

mod join;
mod metrics;
mod run;
mod table;

use std::{collections::HashMap, net::IpAddr};

use aya::maps::PerCpuHashMap;
use flannel_trace_common::{
    Hop, RawEvent,
    event::AF_INET6,
    stats::{STAT_KEYS, StatKey, StatValue, drop_key},
};
use serde::{Deserialize, Serialize};

pub use join::CounterVerdict;
pub use run::run;

use crate::{net, schema::event::addr};

/// One counter, named for the output edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub hop: String,
    pub iface: Option<String>,
    /// The remote side (see `StatKey::addr`); absent for drops of inner
    /// packets.
    pub remote: Option<IpAddr>,
    /// Drops: the kernel's reason name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

/// Every counter of one node at one moment, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub node: String,
    pub wall_ns: i64,
    pub rows: Vec<Row>,
    /// Packets the kernel could not count (its counter map was full).
    #[serde(default)]
    pub uncounted: u64,
}

impl Row {
    /// What identifies the counter.
    fn key(&self) -> RowKey<'_> {
        (
            self.hop.as_str(),
            self.iface.as_deref(),
            self.remote,
            self.reason.as_deref(),
        )
    }
}

type RowKey<'a> = (&'a str, Option<&'a str>, Option<IpAddr>, Option<&'a str>);

impl Snapshot {
    /// What changed since `base` (counters only grow; a row new since then
    /// counts from zero).
    pub fn since(&self, base: &Snapshot) -> Snapshot {
        let before: HashMap<RowKey<'_>, (u64, u64)> = base
            .rows
            .iter()
            .map(|r| (r.key(), (r.packets, r.bytes)))
            .collect();
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let (p, b) = before.get(&r.key()).copied().unwrap_or((0, 0));
                Row {
                    packets: r.packets.saturating_sub(p),
                    bytes: r.bytes.saturating_sub(b),
                    ..r.clone()
                }
            })
            .collect();
        Snapshot {
            node: self.node.clone(),
            wall_ns: self.wall_ns,
            rows,
            uncounted: self.uncounted.saturating_sub(base.uncounted),
        }
    }

    /// Packets at `hop` whose remote satisfies `pick`.
    pub fn packets(&self, hop: Hop, pick: impl Fn(Option<IpAddr>) -> bool) -> u64 {
        self.rows
            .iter()
            .filter(|r| r.hop == hop.name() && pick(r.remote))
            .map(|r| r.packets)
            .sum()
    }
}

/// Reads the kernel's counters, naming hops, devices and drop reasons.
/// Drops are counted here: the drop hook hands over each dropped skb's
/// first bytes, which userspace parses (see `run`), and they are counted
/// under the key the kernel used to count them under.
pub struct Reader {
    names: HashMap<u32, Option<String>>,
    reasons: HashMap<u32, String>,
    drops: HashMap<StatKey, StatValue>,
    /// Drops not counted: the table was full.
    drops_uncounted: u64,
}

impl Reader {
    pub fn new(reasons: HashMap<u32, String>) -> Reader {
        Reader {
            names: HashMap::new(),
            reasons,
            drops: HashMap::new(),
            drops_uncounted: 0,
        }
    }

    /// Count one parsed drop record. At most as many keys as the kernel's
    /// own map holds, beyond which drops are counted as uncounted, as
    /// the kernel did.
    pub fn count_drop(&mut self, raw: &RawEvent) {
        let key = drop_key(&raw.pkt, raw.ifindex, raw.drop_reason);
        let full = self.drops.len() >= STAT_KEYS as usize;
        match self.drops.get_mut(&key) {
            Some(v) => add(v, 1, u64::from(raw.skb_len)),
            None if full => self.drops_uncounted += 1,
            None => {
                self.drops.insert(
                    key,
                    StatValue {
                        packets: 1,
                        bytes: u64::from(raw.skb_len),
                    },
                );
            }
        }
    }

    pub fn read(
        &mut self,
        map: &PerCpuHashMap<aya::maps::MapData, StatKey, StatValue>,
        node: &str,
        uncounted: u64,
    ) -> Snapshot {
        let mut sums: HashMap<StatKey, StatValue> = HashMap::new();
        for item in map.iter() {
            let Ok((k, per_cpu)) = item else { continue };
            let v = sums.entry(k).or_default();
            for c in per_cpu.iter() {
                add(v, c.packets, c.bytes);
            }
        }
        self.snapshot(sums, node, uncounted)
    }

    /// The kernel's counters `sums`, with the drops counted here.
    fn snapshot(
        &mut self,
        mut sums: HashMap<StatKey, StatValue>,
        node: &str,
        uncounted: u64,
    ) -> Snapshot {
        for (k, d) in &self.drops {
            add(sums.entry(*k).or_default(), d.packets, d.bytes);
        }
        let mut rows = Vec::new();
        for (k, v) in sums {
            let Ok(hop) = Hop::try_from(k.hop) else {
                continue;
            };
            let iface = self
                .names
                .entry(k.ifindex)
                .or_insert_with(|| net::ifname(k.ifindex))
                .clone();
            let remote = match k.family {
                0 => None,
                f => Some(addr(if f == AF_INET6 { AF_INET6 } else { f }, &k.addr)),
            };
            let reason = (hop == Hop::Drop).then(|| {
                self.reasons
                    .get(&k.reason)
                    .cloned()
                    .unwrap_or_else(|| format!("reason#{}", k.reason))
            });
            rows.push(Row {
                hop: hop.name().into(),
                iface,
                remote,
                reason,
                packets: v.packets,
                bytes: v.bytes,
            });
        }
        rows.sort_by(|a, b| {
            (hop_rank(&a.hop), &a.iface, a.remote, &a.reason).cmp(&(
                hop_rank(&b.hop),
                &b.iface,
                b.remote,
                &b.reason,
            ))
        });
        Snapshot {
            node: node.into(),
            wall_ns: crate::kernel::clock::Clock::now_wall_ns(),
            rows,
            uncounted: uncounted + self.drops_uncounted,
        }
    }
}

fn add(v: &mut StatValue, packets: u64, bytes: u64) {
    v.packets += packets;
    v.bytes += bytes;
}

fn hop_rank(name: &str) -> usize {
    Hop::ALL
        .iter()
        .position(|h| h.name() == name)
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hop: Hop, remote: &str, packets: u64) -> Row {
        Row {
            hop: hop.name().into(),
            iface: Some("eth1".into()),
            remote: Some(remote.parse().unwrap()),
            reason: None,
            packets,
            bytes: packets * 100,
        }
    }

    #[test]
    fn deltas_since_a_baseline() {
        let base = Snapshot {
            node: "a".into(),
            wall_ns: 0,
            rows: vec![row(Hop::UnderlayEgress, "10.25.1.55", 10)],
            uncounted: 1,
        };
        let now = Snapshot {
            node: "a".into(),
            wall_ns: 5,
            rows: vec![
                row(Hop::UnderlayEgress, "10.25.1.55", 25),
                row(Hop::UnderlayIngress, "10.25.1.55", 4),
            ],
            uncounted: 1,
        };
        let d = now.since(&base);
        assert_eq!(d.packets(Hop::UnderlayEgress, |_| true), 15);
        assert_eq!(d.packets(Hop::UnderlayIngress, |_| true), 4);
        assert_eq!(d.rows[0].bytes, 1500);
        assert_eq!(d.uncounted, 0);
    }

    /// A drop as the session gets it: a RawDrop record parsed.
    fn dropped(src: [u8; 4], reason: u32, len: u32) -> RawEvent {
        use flannel_trace_common::{Config, Ports, dropped::RawDrop};
        let mut inner = vec![0u8; 12];
        inner.extend_from_slice(&[0x08, 0x00]);
        inner.extend_from_slice(&[0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0]);
        inner.extend_from_slice(&[10, 244, 0, 5, 10, 244, 1, 7]);
        inner.extend_from_slice(&[8, 0, 0, 0, 0, 7, 0, 1]);
        let total = (20 + 8 + 8 + inner.len()) as u16;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&[10, 25, 1, 51]);
        ip.extend_from_slice(&40000u16.to_be_bytes());
        ip.extend_from_slice(&8472u16.to_be_bytes());
        ip.extend_from_slice(&(total - 20).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x08, 0, 0, 0, 0, 0, 1, 0]);
        ip.extend_from_slice(&inner);
        let mut r = RawDrop::zeroed();
        r.bytes[..ip.len()].copy_from_slice(&ip);
        r.captured = ip.len() as u16;
        r.protocol = 0x0800;
        r.ifindex = 1;
        r.skb_len = len;
        r.drop_reason = reason;
        let mut ports = Ports::default();
        ports.add(8472);
        r.parse(&Config::zeroed(), &ports)
            .expect("an overlay frame")
    }

    #[test]
    fn drops_parsed_in_userspace_count_under_the_kernels_key() {
        let reasons = HashMap::from([(5, "NETFILTER_DROP".to_owned())]);
        let mut r = Reader::new(reasons);
        r.count_drop(&dropped([10, 25, 1, 55], 5, 100));
        r.count_drop(&dropped([10, 25, 1, 55], 5, 50));
        r.count_drop(&dropped([10, 25, 1, 56], 9, 10));
        // The kernel's own counters for packets, a row of them.
        let pkt = StatKey {
            hop: Hop::UnderlayIngress as u8,
            ifindex: 1,
            ..StatKey::default()
        };
        let kernel = HashMap::from([(
            pkt,
            StatValue {
                packets: 3,
                bytes: 300,
            },
        )]);
        let s = r.snapshot(kernel, "a", 4);
        assert_eq!(s.uncounted, 4);
        assert_eq!(s.packets(Hop::UnderlayIngress, |_| true), 3);
        let drops: Vec<&Row> = s.rows.iter().filter(|r| r.hop == "drop").collect();
        assert_eq!(drops.len(), 2, "{drops:?}");
        let nf = drops
            .iter()
            .find(|d| d.reason.as_deref() == Some("NETFILTER_DROP"))
            .unwrap();
        assert_eq!(nf.remote, Some("10.25.1.55".parse().unwrap()));
        assert_eq!((nf.packets, nf.bytes), (2, 150));
        assert!(
            drops
                .iter()
                .any(|d| d.reason.as_deref() == Some("reason#9"))
        );
        // Counted again at the next read: totals, as the kernel's are.
        let s = r.snapshot(HashMap::new(), "a", 0);
        assert_eq!(s.packets(Hop::Drop, |_| true), 3);
    }

    #[test]
    fn drop_keys_beyond_the_kernels_limit_are_uncounted() {
        let mut r = Reader::new(HashMap::new());
        for i in 0..STAT_KEYS + 2 {
            let mut d = dropped([10, 25, 1, 55], i, 1);
            d.ifindex = i;
            r.count_drop(&d);
        }
        let s = r.snapshot(HashMap::new(), "a", 0);
        assert_eq!(s.rows.len(), STAT_KEYS as usize);
        assert_eq!(s.uncounted, 2);
    }
}
