//! A trace session's state, and what becomes of each record the programs
//! write: decoded, counted, printed, recorded, joined or streamed.

use std::collections::{BTreeMap, HashMap};

use anyhow::anyhow;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use flannel_trace_common::{Config, Counter, Ports, dropped::Record};

use super::{
    peer_link::{Effect, PeerLink},
    sinks::Sinks,
};
use crate::{
    datapath::Probes,
    exit::Fatal,
    options::Probe,
    peer::thin,
    schema::codec,
    schema::event::{Decoder, Event, is_real_drop},
    schema::summary::Summary,
    verdict::live::Joiner,
};

pub(super) struct Session<'a> {
    /// This node's identity as the compact event encoding needs it.
    pub codec_ctx: codec::Context,
    /// What the programs were configured with: the drop records are parsed
    /// and filtered here by the same rules.
    pub cfg: Config,
    /// `--sample`'s mask: where thinning the live stream starts from.
    pub sample_mask: u32,
    /// Events' monotonic time → this node's wall clock.
    pub clock_offset_ns: i64,
    /// The overlay ports the programs match.
    pub ports: Ports,
    pub decoder: Decoder,
    pub summary: Summary,
    pub sinks: Sinks<'a>,
    /// --peer: our events go to a writer task once connected.
    pub link: PeerLink,
    /// --listen: the join.
    pub joiner: Option<Joiner>,
    /// Why the live join did not happen (or ended before our last events
    /// reached the listener): the session then exits with
    /// [`Status::NoJoin`](crate::exit::Status::NoJoin) and says how to join
    /// the recordings later.
    pub join_missing: Option<String>,
    pub probe: Option<Probe>,
}

impl Session<'_> {
    pub async fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<(), Fatal> {
        // The whole batch is copied out first (160 bytes a packet record,
        // 296 a drop), so the ring's space is handed back to the programs
        // before the slower parsing, decoding and output.
        let mut batch = Vec::new();
        while let Some(item) = ring.next() {
            batch.push(Record::from_bytes(&item));
        }
        for record in batch {
            let ev = match record {
                Ok(Record::Event(r)) => self.decoder.decode(&r),
                // Dropped skbs come as bytes: most are not ours.
                Ok(Record::Drop(d)) => match d.parse(&self.cfg, &self.ports) {
                    Some(r) => self.decoder.decode(&r),
                    None => continue,
                },
                Err(e) => Err(e),
            };
            self.handle(ev).await?;
        }
        let effects = self.link.tick();
        self.apply(effects);
        self.sinks.flush_recording()
    }

    async fn handle(
        &mut self,
        ev: Result<Event, flannel_trace_common::event::DecodeError>,
    ) -> Result<(), Fatal> {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                self.summary.decode_errors += 1;
                log::debug!("undecodable record: {e}");
                return Ok(());
            }
        };
        if ev.drop.is_some() && !is_real_drop(&ev) {
            return Ok(());
        }
        self.summary.events += 1;
        count(
            &mut self.summary.per_hop,
            &mut self.summary.drops_by_reason,
            &ev,
        );
        self.sinks.event(&ev, self.decoder.clock.offset_ns())?;
        if let Some(j) = self.joiner.as_mut() {
            j.push_local(ev);
        } else {
            let effects = self.link.offer(ev);
            self.apply(effects);
        }
        Ok(())
    }

    /// Says what the link's transition means; degrades explicitly, once
    /// per step: the live stream thins by hash, the local recording keeps
    /// everything, the listener is told from when (and its verdict says so).
    pub fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Thinned(e) => eprintln!(
                    "flannel-trace: the peer link cannot keep up ({:.0} events/s): the live stream now carries 1 in {} packets, chosen by hash on both nodes; the recording keeps every event",
                    e.rate,
                    e.step.rate()
                ),
                Effect::LeavingOut => eprintln!(
                    "flannel-trace: the peer link cannot keep up even with the live stream thinned to 1 in {}: events are being left out (the local recording keeps them all; the verdict will be marked uncertain, with the count)",
                    thin::MAX_MASK + 1
                ),
                Effect::ListenerGone => {
                    eprintln!("flannel-trace: the listener went away; tracing locally only");
                    self.join_missing = Some("the listener went away before the end".into());
                }
                Effect::NotSentFromBefore(n) => {
                    log::warn!("{n} events from before the peer joined were not sent");
                }
            }
        }
    }

    pub fn interim_report(&mut self, probes: &mut Probes) -> Result<(), Fatal> {
        let lost = counters(probes)
            .map(|c| c.get(&Counter::RingbufFull).copied().unwrap_or(0))
            .unwrap_or(0);
        let Some(j) = self.joiner.as_mut() else {
            return Ok(());
        };
        let Some(report) = j.report(lost, None, false) else {
            return Ok(());
        };
        if self.sinks.json {
            return Ok(());
        }
        for line in j.changed(&report) {
            eprintln!("[verdict so far] {line}");
        }
        Ok(())
    }
}

/// The summary's per-hop and per-reason counts of one event. Keys are
/// cloned only the first time a hop or reason is seen.
pub fn count(per_hop: &mut BTreeMap<String, u64>, drops: &mut BTreeMap<String, u64>, ev: &Event) {
    bump(per_hop, ev.hop.name());
    if let Some(d) = &ev.drop {
        bump(drops, &d.summary_key());
    }
}

/// Counts one more under `key`, allocating the key only when it is new.
fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

/// The programs' own counters of what they could not report.
pub(super) fn counters(probes: &mut Probes) -> anyhow::Result<HashMap<Counter, u64>> {
    let map = probes
        .ebpf_mut()
        .map("COUNTERS")
        .ok_or_else(|| anyhow!("map COUNTERS missing"))?;
    let arr = PerCpuArray::<_, u64>::try_from(map)?;
    let mut out = HashMap::new();
    for c in [Counter::RingbufFull, Counter::Unparsed, Counter::ProbeRead] {
        let per_cpu = arr.get(&(c as u32), 0)?;
        out.insert(c, per_cpu.iter().sum());
    }
    Ok(out)
}
