//! The peer protocol's messages: the public records (see
//! `schema::record`) plus the channel's own control messages, which never
//! reach `--json` or a recording. On the wire both are the same
//! `"type"`-tagged JSON objects (events travel in `codec` batches, see
//! `wire`), so the bytes are those of one flat enum and a node of the same
//! protocol version interoperates whatever the Rust types look like.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::schema::event::Event;
use crate::schema::identity::NodeIdentity;
use crate::schema::record::Record;
use crate::schema::wire::Framed;

/// Version of the peer protocol; both nodes must speak the same.
/// 3: `thin` messages (a thinned live stream).
pub const PROTOCOL_VERSION: u16 = 3;

/// First bytes a connecting node sends, followed by the version.
pub(super) const MAGIC: &[u8; 6] = b"FTPEER";

/// The 8-byte hello: magic and version.
pub(super) const fn hello() -> [u8; 8] {
    let v = PROTOCOL_VERSION.to_be_bytes();
    [
        MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], MAGIC[4], MAGIC[5], v[0], v[1],
    ]
}

/// Ping-pong rounds of the clock exchange; the connecting side answers
/// exactly this many, so it is part of the protocol version.
pub(super) const CLOCK_ROUNDS: u32 = 8;

/// Limit on each step of the connecting side (one message awaited).
pub(super) const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// One message of the peer channel: a public record, or one of the
/// channel's own control messages. Both are written as they are (each
/// carries its own `"type"`), so the bytes are those of one flat enum.
// Unboxed: records (every event) are the common case, and a box would
// cost an allocation per event on the way to the channel's writer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Message {
    Control(Control),
    /// Start, event, summary, stats…
    Record(Record),
}

/// The messages only the peer channel carries, never `--json` or a
/// recording.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// After the handshake: one side gives up on the other (identity or
    /// clock exchange failed).
    Refused { reason: String },
    /// Clock probe (NTP-style): t1 by the listener.
    ClockPing { id: u32, t1: i64 },
    /// Reply with the peer's receive (t2) and send (t3) wall-clock times.
    ClockPong { id: u32, t1: i64, t2: i64, t3: i64 },
    /// From `from_ns` (the sender's wall clock) on, its live stream
    /// carries only the packets whose `--sample` hash has `mask`'s bits
    /// clear (see `thin`); its recording keeps every event.
    Thin { from_ns: i64, mask: u32 },
    /// Orderly end of the stream.
    Bye,
}

impl Control {
    /// Every `"type"` tag of a control message (see [`Control::kind`]).
    const KINDS: [&'static str; 5] = ["refused", "clock_ping", "clock_pong", "thin", "bye"];

    /// The `"type"` tag, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Control::Refused { .. } => "refused",
            Control::ClockPing { .. } => "clock_ping",
            Control::ClockPong { .. } => "clock_pong",
            Control::Thin { .. } => "thin",
            Control::Bye => "bye",
        }
    }
}

impl Message {
    /// The `"type"` tag, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Control(c) => c.kind(),
            Message::Record(r) => r.kind(),
        }
    }
}

impl From<Record> for Message {
    fn from(r: Record) -> Message {
        Message::Record(r)
    }
}

impl From<Event> for Message {
    fn from(ev: Event) -> Message {
        Message::Record(Record::Event(ev))
    }
}

impl Framed for Message {
    fn start(&self) -> Option<&NodeIdentity> {
        match self {
            Message::Record(r) => r.start(),
            Message::Control(_) => None,
        }
    }

    /// The tag says which half to read, so that a malformed message gets
    /// the error of what it claims to be (`missing field …`), and an
    /// unknown one the list of records (`unknown variant … expected one
    /// of …`). Finding the tag skips the other fields without building
    /// them; events do not come this way (they travel in batches).
    fn from_json(payload: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Tag<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
        }
        let tag: Tag = serde_json::from_slice(payload)?;
        if Control::KINDS.contains(&&*tag.kind) {
            serde_json::from_slice(payload).map(Message::Control)
        } else {
            serde_json::from_slice(payload).map(Message::Record)
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::schema::wire::{self, Decoder, FrameError};

    /// The bytes of protocol version 3, as a node built before the split
    /// of records and control messages writes them.
    #[test]
    fn control_messages_keep_their_wire_form() {
        let cases = [
            (Message::Control(Control::Bye), r#"{"type":"bye"}"#),
            (
                Message::Control(Control::Refused {
                    reason: "no".into(),
                }),
                r#"{"type":"refused","reason":"no"}"#,
            ),
            (
                Message::Control(Control::ClockPing { id: 7, t1: -5 }),
                r#"{"type":"clock_ping","id":7,"t1":-5}"#,
            ),
            (
                Message::Control(Control::ClockPong {
                    id: 1,
                    t1: 2,
                    t2: 3,
                    t3: 4,
                }),
                r#"{"type":"clock_pong","id":1,"t1":2,"t2":3,"t3":4}"#,
            ),
            (
                Message::Control(Control::Thin {
                    from_ns: 9,
                    mask: 3,
                }),
                r#"{"type":"thin","from_ns":9,"mask":3}"#,
            ),
        ];
        // Every control message is here, and `KINDS` knows each tag.
        let mut tags: Vec<&str> = cases.iter().map(|(m, _)| m.kind()).collect();
        let mut kinds = Control::KINDS.to_vec();
        tags.sort_unstable();
        kinds.sort_unstable();
        assert_eq!(tags, kinds);
        for (msg, json) in cases {
            assert_eq!(serde_json::to_string(&msg).unwrap(), json);
            let back = Message::from_json(json.as_bytes()).unwrap();
            assert_eq!(back.kind(), msg.kind());
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
        }
    }

    /// A record crosses the channel as the record itself: the same object
    /// `--json` prints and a recording holds.
    #[test]
    fn a_record_is_sent_as_itself() {
        let id = crate::verdict::test_identity("node-a");
        let record = Record::Start(id);
        let as_record = serde_json::to_string(&record).unwrap();
        let msg = Message::from(record);
        assert_eq!(serde_json::to_string(&msg).unwrap(), as_record);
        assert!(as_record.starts_with(r#"{"type":"start","#), "{as_record}");
        match Message::from_json(as_record.as_bytes()).unwrap() {
            Message::Record(Record::Start(back)) => assert_eq!(back.node, "node-a"),
            other => panic!("{other:?}"),
        }
    }

    /// Neither a control message nor a record: the error says what was
    /// wrong, not only that nothing matched.
    #[test]
    fn a_bad_message_gets_a_clear_error() {
        let err = Message::from_json(br#"{"type":"nope"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `nope`"), "{err}");
        let err = Message::from_json(br#"{"type":"clock_ping","id":1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `t1`"), "{err}");
        let err = Message::from_json(br#"{"type":"summary","events":"many"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("events") || err.contains("invalid type"),
            "{err}"
        );
    }

    #[test]
    fn event_batches_need_the_start_first_and_come_out_one_by_one() {
        let (batch, mut stream) = wire::test_stream(&Message::Control(Control::Bye));
        let mut d = Decoder::<Message>::default();
        let mut early = BytesMut::from(&batch[..]);
        assert!(matches!(d.decode(&mut early), Err(FrameError::NoContext)));

        let mut d = Decoder::<Message>::default();
        let kinds: Vec<&str> = std::iter::from_fn(|| d.decode(&mut stream).unwrap())
            .map(|m| m.kind())
            .collect();
        assert_eq!(kinds, ["start", "event", "event", "bye"]);
    }
}
