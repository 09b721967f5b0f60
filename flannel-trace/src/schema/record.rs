//! The public records: what the `--json` stream prints and a recording
//! file holds, one JSON object per record tagged by `"type"`. The peer
//! channel carries them too, beside its own control messages (see
//! `peer::protocol`), which are never records.

use serde::{Deserialize, Serialize};

use crate::{
    counters::{CounterVerdict, Snapshot},
    schema::event::Event,
    schema::identity::NodeIdentity,
    schema::summary::Summary,
    schema::wire::Framed,
    verdict::Report,
};

// `Start` comes once per session and `Event`s are moved in batches: the
// size of the enum costs nothing worth a box around the identity.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// Who is tracing what, with which hooks: first record of a session.
    Start(NodeIdentity),
    Event(Event),
    Summary(Summary),
    /// A joined verdict (live `--listen` mode and `join`).
    Verdict(Report),
    /// Counters mode: one node's counters at one moment.
    Stats(Snapshot),
    /// Counters mode: the joined verdict of both directions.
    StatsVerdict {
        directions: Vec<CounterVerdict>,
    },
}

impl Record {
    /// The `"type"` tag, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Start(_) => "start",
            Record::Event(_) => "event",
            Record::Summary(_) => "summary",
            Record::Verdict(_) => "verdict",
            Record::Stats(_) => "stats",
            Record::StatsVerdict { .. } => "stats_verdict",
        }
    }
}

impl From<Event> for Record {
    fn from(ev: Event) -> Record {
        Record::Event(ev)
    }
}

impl Framed for Record {
    fn start(&self) -> Option<&NodeIdentity> {
        match self {
            Record::Start(id) => Some(id),
            _ => None,
        }
    }

    fn from_json(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer channel's own messages are not records: a recording or a
    /// `--json` stream holding one is refused, naming what it met.
    #[test]
    fn a_peer_control_message_is_not_a_record() {
        for (json, kind) in [
            (r#"{"type":"bye"}"#, "bye"),
            (r#"{"type":"clock_ping","id":1,"t1":2}"#, "clock_ping"),
            (r#"{"type":"thin","from_ns":1,"mask":1}"#, "thin"),
            (r#"{"type":"refused","reason":"no"}"#, "refused"),
        ] {
            let err = serde_json::from_str::<Record>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("unknown variant `{kind}`")), "{err}");
            assert!(
                err.contains("`start`") && err.contains("`summary`"),
                "{err}"
            );
        }
    }

    #[test]
    fn kind_is_the_serialised_tag() {
        let records = [
            Record::Start(crate::verdict::test_identity("a")),
            Record::Summary(Summary::default()),
            Record::StatsVerdict { directions: vec![] },
        ];
        for r in records {
            let v = serde_json::to_value(&r).unwrap();
            assert_eq!(v["type"], r.kind());
        }
    }
}
