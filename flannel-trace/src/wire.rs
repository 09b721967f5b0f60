//! One envelope for everything flannel-trace writes or sends: the `--json`
//! stream, recording files and the peer channel all carry [`Message`]s,
//! tagged by `"type"`.
//!
//! Frames (recordings and the peer channel) are
//! `[u32 length, big-endian][u32 CRC-32 of the payload][payload: JSON]`,
//! bounded by [`MAX_FRAME`], so a corrupted or hostile stream is an error,
//! never an unbounded allocation or a panic.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{event::Event, identity::NodeIdentity, output::Summary, verdict::Report};

/// Largest frame accepted, header excluded.
pub const MAX_FRAME: usize = 1 << 20;
const HEADER: usize = 8;

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

/// Take one frame off the front of `buf`; `Ok(None)` when more bytes are
/// needed. The length is checked before anything is allocated.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
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
    Ok(Some(serde_json::from_slice(&payload)?))
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
        // Byte by byte: nothing until the frame is whole.
        for (i, b) in frame.iter().enumerate() {
            buf.put_u8(*b);
            let got = decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == frame.len() - 1);
        }
        let mut bad = BytesMut::from(&frame[..]);
        let last = bad.len() - 2;
        bad[last] ^= 0x20;
        assert!(matches!(decode(&mut bad), Err(FrameError::Checksum)));
        let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0][..]);
        assert!(matches!(decode(&mut huge), Err(FrameError::TooLarge(_))));
    }
}
