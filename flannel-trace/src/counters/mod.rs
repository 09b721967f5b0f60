//! Counters mode (`--stats`): no per-packet events, only the programs'
//! per-CPU counters of packets and bytes per (remote, hop, device) and of
//! drops per (reason, device), read every interval. The incident's
//! "flannel.1 RX packets 0", made precise per peer and per hop — cheap
//! enough to leave running for hours.

mod join;
mod metrics;
mod run;
mod table;

use std::{collections::HashMap, net::IpAddr};

use aya::maps::PerCpuHashMap;
use flannel_trace_common::{
    Hop,
    event::AF_INET6,
    stats::{StatKey, StatValue},
};
use serde::{Deserialize, Serialize};

pub use join::CounterVerdict;
pub use run::run;

use crate::{event::addr, net as netdev};

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
pub struct Reader {
    names: HashMap<u32, Option<String>>,
    reasons: HashMap<u32, String>,
}

impl Reader {
    pub fn new(reasons: HashMap<u32, String>) -> Reader {
        Reader {
            names: HashMap::new(),
            reasons,
        }
    }

    pub fn read(
        &mut self,
        map: &PerCpuHashMap<aya::maps::MapData, StatKey, StatValue>,
        node: &str,
        uncounted: u64,
    ) -> Snapshot {
        let mut rows = Vec::new();
        for item in map.iter() {
            let Ok((k, per_cpu)) = item else { continue };
            let (mut packets, mut bytes) = (0u64, 0u64);
            for v in per_cpu.iter() {
                packets += v.packets;
                bytes += v.bytes;
            }
            let Ok(hop) = Hop::try_from(k.hop) else {
                continue;
            };
            let iface = self
                .names
                .entry(k.ifindex)
                .or_insert_with(|| netdev::ifname(k.ifindex))
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
                packets,
                bytes,
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
            wall_ns: crate::clock::Clock::now_wall_ns(),
            rows,
            uncounted,
        }
    }
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
}
