//! The tool's output read as the library's own types: the `--json` lines of
//! a trace or counters run, a `join --json` document. One place parses, and
//! a line that is not a record fails naming the line, so the tests assert on
//! typed fields instead of repeating lookups in untyped JSON.
//!
//! Only this module names the envelope type, so a change of the schema's
//! layout is mended here alone.

use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use flannel_trace::{
    CounterSnapshot, CounterVerdict, Direction, Report,
    schema::{event::Event, identity::NodeIdentity, summary::Summary},
};
use flannel_trace_common::Hop;

/// One `--json` record (or a recording's), tagged by its `"type"`.
pub use flannel_trace::schema::record::Record;

/// One line of `--json` output as a record; the error quotes the line.
pub fn record(line: &str) -> Result<Record> {
    serde_json::from_str(line).with_context(|| format!("not a flannel-trace record: {line}"))
}

/// Every record a `--json` run printed, in order. Blank lines are allowed;
/// anything else that is not a record fails, naming its line number.
pub fn records(stdout: &str) -> Result<Vec<Record>> {
    stdout
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| record(l).with_context(|| format!("line {} of the output", n + 1)))
        .collect()
}

/// The records of one run, with accessors for each kind.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub records: Vec<Record>,
}

impl Output {
    pub fn parse(stdout: &str) -> Result<Output> {
        Ok(Output {
            records: records(stdout)?,
        })
    }

    pub fn start(&self) -> Result<&NodeIdentity> {
        self.records
            .iter()
            .find_map(|r| match r {
                Record::Start(id) => Some(id),
                _ => None,
            })
            .with_context(|| format!("no start record in {} records", self.records.len()))
    }

    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.records.iter().filter_map(|r| match r {
            Record::Event(e) => Some(e),
            _ => None,
        })
    }

    pub fn summary(&self) -> Option<&Summary> {
        self.records.iter().find_map(|r| match r {
            Record::Summary(s) => Some(s),
            _ => None,
        })
    }

    /// The `verdict` record (a listener's, or `join --json`'s document).
    pub fn verdict(&self) -> Result<&Report> {
        self.records
            .iter()
            .find_map(|r| match r {
                Record::Verdict(v) => Some(v),
                _ => None,
            })
            .with_context(|| format!("no verdict in {} records", self.records.len()))
    }

    /// The `stats` snapshots of a counters run, in order.
    pub fn stats(&self) -> impl Iterator<Item = &CounterSnapshot> {
        self.records.iter().filter_map(|r| match r {
            Record::Stats(s) => Some(s),
            _ => None,
        })
    }

    /// The last counters verdict (`stats_verdict`) of a listener.
    pub fn stats_verdict(&self) -> Option<&[CounterVerdict]> {
        self.records.iter().rev().find_map(|r| match r {
            Record::StatsVerdict { directions } => Some(directions.as_slice()),
            _ => None,
        })
    }
}

/// A whole document (`join --json` prints one, pretty-printed): the
/// verdict it holds.
pub fn report(doc: &[u8]) -> Result<Report> {
    let text = String::from_utf8_lossy(doc);
    match serde_json::from_slice::<Record>(doc) {
        Ok(Record::Verdict(v)) => Ok(v),
        Ok(other) => bail!("expected a verdict document, got a {} record", other.kind()),
        Err(e) => bail!("not a verdict document ({e}):\n{text}"),
    }
}

/// The direction of a verdict that starts at node `from`.
pub fn direction<'a>(v: &'a Report, from: &str) -> Result<&'a Direction> {
    v.directions
        .iter()
        .find(|d| d.from == from)
        .with_context(|| format!("no direction from {from}: {}", show(v)))
}

/// Pretty JSON of any record, for failure messages.
pub fn show<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("(unprintable: {e})"))
}

/// Compact JSON of any record, for one-line failure messages.
pub fn line<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("(unprintable: {e})"))
}

/// Whether a typed field shows as `name` (its `Display` is the JSON
/// string): a protocol, TCP flags, a drop reason.
pub fn named(field: &impl std::fmt::Display, name: &str) -> bool {
    field.to_string() == name
}

/// A field that names a hop: the typed [`Hop`] or its name as text (the
/// records carry either), so the tests compare hops one way.
pub trait HopName {
    fn hop_name(&self) -> &str;
}

impl HopName for Hop {
    fn hop_name(&self) -> &str {
        self.name()
    }
}

impl HopName for String {
    fn hop_name(&self) -> &str {
        self
    }
}

/// Whether a hop field is `hop`.
pub fn is_hop(field: &impl HopName, hop: Hop) -> bool {
    field.hop_name() == hop.name()
}

/// Inner source address of an event, if it carried an inner packet.
pub fn inner_src(e: &Event) -> Option<IpAddr> {
    e.inner.as_ref().map(|i| i.endpoints.src)
}

pub fn inner_dst(e: &Event) -> Option<IpAddr> {
    e.inner.as_ref().map(|i| i.endpoints.dst)
}

/// Whether the event's inner packet is of protocol `name` (`icmp`, `tcp`…).
pub fn inner_proto_is(e: &Event, name: &str) -> bool {
    e.inner
        .as_ref()
        .is_some_and(|i| named(&i.endpoints.proto, name))
}

pub fn outer_src(e: &Event) -> Option<IpAddr> {
    e.outer.as_ref().map(|o| o.src)
}

pub fn outer_dst(e: &Event) -> Option<IpAddr> {
    e.outer.as_ref().map(|o| o.dst)
}

pub fn outer_dport(e: &Event) -> Option<u16> {
    e.outer.as_ref().and_then(|o| o.dport)
}

/// The kernel's drop reason of a drop event, by name.
pub fn drop_reason(e: &Event) -> Option<String> {
    e.drop
        .as_ref()
        .and_then(|d| d.reason.as_ref().map(|r| r.to_string()))
}

/// The packet's fingerprint as printed (16 hex digits).
pub fn fingerprint(e: &Event) -> Option<String> {
    e.fingerprint.as_ref().map(|f| f.to_string())
}
