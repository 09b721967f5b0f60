//! The framing shared by recording files and the peer channel: what the
//! frames carry is [`Framed`] (records, or the peer protocol's messages).
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
use serde::Serialize;
use thiserror::Error;

#[cfg(doc)]
use crate::schema::record::Record;
use crate::{
    schema::codec::{self, CodecError},
    schema::event::Event,
    schema::identity::NodeIdentity,
};

/// Largest frame accepted, header excluded.
pub const MAX_FRAME: usize = 1 << 20;
const HEADER: usize = 8;

/// What a stream of frames carries: the public [`Record`]s (recordings),
/// or the peer protocol's messages (`peer::protocol`), which add control
/// messages of their own. A batch of events decodes to one item per event,
/// and the stream's `start` gives the context of the batches after it.
pub trait Framed: Serialize + From<Event> {
    /// The node's identity, if this is a stream's `start`.
    fn start(&self) -> Option<&NodeIdentity>;

    /// One JSON payload.
    fn from_json(payload: &[u8]) -> Result<Self, serde_json::Error>;
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

pub fn encode(msg: &impl Serialize) -> Result<Bytes, FrameError> {
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
#[derive(Debug)]
pub struct Decoder<T> {
    ctx: Option<codec::Context>,
    queue: VecDeque<T>,
}

impl<T> Default for Decoder<T> {
    fn default() -> Self {
        Decoder {
            ctx: None,
            queue: VecDeque::new(),
        }
    }
}

/// One frame, decoded.
pub enum Frame<T> {
    /// A batch of events (possibly empty).
    Events(Vec<Event>),
    Message(Box<T>),
}

impl<T: Framed> Decoder<T> {
    /// The next message, from what is queued or off the front of `buf`;
    /// `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<T>, FrameError> {
        loop {
            if let Some(m) = self.queue.pop_front() {
                return Ok(Some(m));
            }
            match self.decode_frame(buf)? {
                None => return Ok(None),
                Some(Frame::Events(events)) => self.queue.extend(events.into_iter().map(T::from)),
                Some(Frame::Message(m)) => return Ok(Some(*m)),
            }
        }
    }

    /// The next frame off the front of `buf`, a batch of events left whole
    /// (a reader of recordings needs no message per event); `Ok(None)`
    /// when more bytes are needed. Not to be mixed with [`Self::decode`]
    /// while it has messages queued.
    pub fn decode_frame(&mut self, buf: &mut BytesMut) -> Result<Option<Frame<T>>, FrameError> {
        let Some(payload) = take_payload(buf)? else {
            return Ok(None);
        };
        if payload.first() == Some(&codec::BATCH) {
            let ctx = self.ctx.as_ref().ok_or(FrameError::NoContext)?;
            return Ok(Some(Frame::Events(codec::decode_batch(ctx, &payload)?)));
        }
        let msg = T::from_json(&payload)?;
        if let Some(id) = msg.start() {
            self.ctx = Some(codec::Context::of(id));
        }
        Ok(Some(Frame::Message(Box::new(msg))))
    }
}

/// CRC-32 (IEEE 802.3, reflected), as zlib and Ethernet compute it.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// For the decoder tests (here and of the peer protocol): a batch of two
/// events alone, and a whole stream: the `start` of a test identity, that
/// batch, then `last`.
#[cfg(test)]
pub(crate) fn test_stream(last: &impl Serialize) -> (Vec<u8>, BytesMut) {
    let id = crate::verdict::test_identity("node-a");
    let ctx = codec::Context::of(&id);
    let ev: Event = serde_json::from_value(serde_json::json!({
        "time": crate::kernel::clock::rfc3339(10 + id.clock_offset_ns), "ts_mono_ns": 10,
        "hop": "drop", "ifindex": 1, "iface": null, "len": 1,
    }))
    .unwrap();
    let mut batch = Vec::new();
    encode_events(&ctx, &[ev.clone(), ev], &mut batch);
    let start = crate::schema::record::Record::Start(id);
    let mut stream = BytesMut::from(&encode(&start).unwrap()[..]);
    stream.extend_from_slice(&batch);
    stream.extend_from_slice(&encode(last).unwrap());
    (batch, stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::record::Record;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn round_trip_partial_and_corrupt() {
        let msg = Record::Summary(Default::default());
        let frame = encode(&msg).unwrap();
        let mut buf = BytesMut::new();
        let mut d = Decoder::<Record>::default();
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
        let (batch, mut stream) = test_stream(&Record::Summary(Default::default()));
        let mut d = Decoder::<Record>::default();
        let mut early = BytesMut::from(&batch[..]);
        assert!(matches!(d.decode(&mut early), Err(FrameError::NoContext)));

        let mut d = Decoder::<Record>::default();
        let kinds: Vec<&str> = std::iter::from_fn(|| d.decode(&mut stream).unwrap())
            .map(|m| m.kind())
            .collect();
        assert_eq!(kinds, ["start", "event", "event", "summary"]);
    }
}
