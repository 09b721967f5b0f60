//! One envelope for everything flannel-trace writes or sends: the `--json`
//! stream, recording files and the peer channel all carry [`Message`]s,
//! tagged by `"type"`.
//!
//! Frames (recordings and the peer channel) are
//! `[u32 length, big-endian][u32 CRC-32 of the payload][payload]`, bounded
//! by [`MAX_FRAME`], so a corrupted or hostile stream is an error, never an
//! unbounded allocation or a panic. A payload is either one JSON message
//! (it starts with `{`) or a batch of events in the compact encoding of
//! `codec` (it starts with [`codec::BATCH`]), which needs the node's
//! identity: a stream's `start` message comes first.

use std::collections::VecDeque;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    schema::codec::{self, CodecError},
    schema::event::Event,
    schema::identity::NodeIdentity,
    schema::summary::Summary,
    verdict::Report,
};

/// Largest frame accepted, header excluded.
pub const MAX_FRAME: usize = 1 << 20;
const HEADER: usize = 8;

// `Start` comes once per session and `Event`s are moved in batches: the
// size of the enum costs nothing worth a box around the identity.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Who is tracing what, with which hooks: first record of a session.
    Start(NodeIdentity),
    Event(Event),
    Summary(Summary),
    /// A joined verdict (live `--listen` mode and `join`).
    Verdict(Report),
    /// Peer channel, after the handshake: one side gives up on the other
    /// (identity or clock exchange failed).
    Refused {
        reason: String,
    },
    /// Peer channel clock probe (NTP-style): t1 by the listener.
    ClockPing {
        id: u32,
        t1: i64,
    },
    /// Reply with the peer's receive (t2) and send (t3) wall-clock times.
    ClockPong {
        id: u32,
        t1: i64,
        t2: i64,
        t3: i64,
    },
    /// Counters mode: one node's counters at one moment.
    Stats(crate::counters::Snapshot),
    /// Counters mode: the joined verdict of both directions.
    StatsVerdict {
        directions: Vec<crate::counters::CounterVerdict>,
    },
    /// Peer channel: from `from_ns` (the sender's wall clock) on, its
    /// live stream carries only the packets whose `--sample` hash has
    /// `mask`'s bits clear (see `thin`); its recording keeps every event.
    Thin {
        from_ns: i64,
        mask: u32,
    },
    /// Orderly end of the stream.
    Bye,
}

impl Message {
    /// The `"type"` tag, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Start(_) => "start",
            Message::Event(_) => "event",
            Message::Summary(_) => "summary",
            Message::Verdict(_) => "verdict",
            Message::Refused { .. } => "refused",
            Message::ClockPing { .. } => "clock_ping",
            Message::ClockPong { .. } => "clock_pong",
            Message::Stats(_) => "stats",
            Message::StatsVerdict { .. } => "stats_verdict",
            Message::Thin { .. } => "thin",
            Message::Bye => "bye",
        }
    }
}

#[derive(Debug, Error)]
pub enum FrameError {
    #[error(
        "frame of {0} bytes exceeds the {MAX_FRAME}-byte limit (corrupt or not a flannel-trace stream)"
    )]
    TooLarge(usize),
    #[error("frame checksum mismatch (corrupt data)")]
    Checksum,
    #[error("frame is not a valid message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Batch(#[from] CodecError),
    #[error("a batch of events before the node's identity (`start`)")]
    NoContext,
}

pub fn encode(msg: &Message) -> Result<Bytes, FrameError> {
    let payload = serde_json::to_vec(msg)?;
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(payload.len()));
    }
    let mut buf = BytesMut::with_capacity(HEADER + payload.len());
    buf.put_u32(payload.len() as u32);
    buf.put_u32(crc32(&payload));
    buf.put_slice(&payload);
    Ok(buf.freeze())
}

/// Appends one frame holding `events` in the compact encoding to `out`.
pub fn encode_events(ctx: &codec::Context, events: &[Event], out: &mut Vec<u8>) {
    let at = out.len();
    out.extend_from_slice(&[0; HEADER]);
    codec::encode_batch(ctx, events, out);
    let len = out.len() - at - HEADER;
    let sum = crc32(&out[at + HEADER..]);
    out[at..at + 4].copy_from_slice(&(len as u32).to_be_bytes());
    out[at + 4..at + 8].copy_from_slice(&sum.to_be_bytes());
}

/// Take one frame's payload off the front of `buf`; `Ok(None)` when more
/// bytes are needed. The length is checked before anything is allocated.
fn take_payload(buf: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if buf.len() < HEADER + len {
        buf.reserve(HEADER + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let sum = buf.get_u32();
    let payload = buf.split_to(len);
    if crc32(&payload) != sum {
        return Err(FrameError::Checksum);
    }
    Ok(Some(payload))
}

/// Turns a stream of frames back into messages, one at a time: it keeps
/// the identity of the stream's `start` (the context of its event
/// batches) and the rest of a batch between calls.
#[derive(Debug, Default)]
pub struct Decoder {
    ctx: Option<codec::Context>,
    queue: VecDeque<Message>,
}

/// One frame, decoded.
pub enum Frame {
    /// A batch of events (possibly empty).
    Events(Vec<crate::schema::event::Event>),
    Message(Box<Message>),
}

impl Decoder {
    /// The next message, from what is queued or off the front of `buf`;
    /// `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        loop {
            if let Some(m) = self.queue.pop_front() {
                return Ok(Some(m));
            }
            match self.decode_frame(buf)? {
                None => return Ok(None),
                Some(Frame::Events(events)) => {
                    self.queue.extend(events.into_iter().map(Message::Event))
                }
                Some(Frame::Message(m)) => return Ok(Some(*m)),
            }
        }
    }

    /// The next frame off the front of `buf`, a batch of events left whole
    /// (a reader of recordings needs no message per event); `Ok(None)`
    /// when more bytes are needed. Not to be mixed with [`Self::decode`]
    /// while it has messages queued.
    pub fn decode_frame(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(payload) = take_payload(buf)? else {
            return Ok(None);
        };
        if payload.first() == Some(&codec::BATCH) {
            let ctx = self.ctx.as_ref().ok_or(FrameError::NoContext)?;
            return Ok(Some(Frame::Events(codec::decode_batch(ctx, &payload)?)));
        }
        let msg: Message = serde_json::from_slice(&payload)?;
        if let Message::Start(id) = &msg {
            self.ctx = Some(codec::Context::of(id));
        }
        Ok(Some(Frame::Message(Box::new(msg))))
    }
}

/// CRC-32 (IEEE 802.3, reflected), as zlib and Ethernet compute it.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn round_trip_partial_and_corrupt() {
        let msg = Message::ClockPing { id: 7, t1: -5 };
        let frame = encode(&msg).unwrap();
        let mut buf = BytesMut::new();
        let mut d = Decoder::default();
        // Byte by byte: nothing until the frame is whole.
        for (i, b) in frame.iter().enumerate() {
            buf.put_u8(*b);
            let got = d.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == frame.len() - 1);
        }
        let mut bad = BytesMut::from(&frame[..]);
        let last = bad.len() - 2;
        bad[last] ^= 0x20;
        assert!(matches!(d.decode(&mut bad), Err(FrameError::Checksum)));
        let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0][..]);
        assert!(matches!(d.decode(&mut huge), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn event_batches_need_the_start_first_and_come_out_one_by_one() {
        let id = crate::verdict::test_identity("node-a");
        let ctx = codec::Context::of(&id);
        let ev: Event = serde_json::from_value(serde_json::json!({
            "time": crate::kernel::clock::rfc3339(10 + id.clock_offset_ns), "ts_mono_ns": 10,
            "hop": "drop", "ifindex": 1, "iface": null, "len": 1,
        }))
        .unwrap();
        let mut batch = Vec::new();
        encode_events(&ctx, &[ev.clone(), ev.clone()], &mut batch);
        let mut d = Decoder::default();
        let mut early = BytesMut::from(&batch[..]);
        assert!(matches!(d.decode(&mut early), Err(FrameError::NoContext)));

        let mut stream = BytesMut::from(&encode(&Message::Start(id)).unwrap()[..]);
        stream.extend_from_slice(&batch);
        stream.extend_from_slice(&encode(&Message::Bye).unwrap());
        let mut d = Decoder::default();
        let kinds: Vec<&str> = std::iter::from_fn(|| d.decode(&mut stream).unwrap())
            .map(|m| m.kind())
            .collect();
        assert_eq!(kinds, ["start", "event", "event", "bye"]);
    }
}
