//! Reading a recording back one event at a time, so that `join` holds a
//! time window of two recordings instead of both of them.
//!
//! The summary is the last frame of a recording, but the verdict needs its
//! end of observation while it streams (packets sent just before the end
//! are in flight, not lost): [`Replay::open`] walks the frame headers once
//! (a seek per frame, nothing decoded) to read it first. The checks of the
//! format (magic, checksums, order of records) are made by the streaming
//! pass itself, with the same errors as reading the file whole.

use std::{
    fs::File,
    io::{self, Read, Seek as _, SeekFrom},
    path::{Path, PathBuf},
};

use bytes::BytesMut;

use crate::{
    schema::event::Event,
    schema::identity::NodeIdentity,
    schema::record::Record,
    schema::recording::{MAGIC, RecordError},
    schema::summary::Summary,
    schema::wire::{self, Frame},
};

/// Bytes read from the file at a time.
const CHUNK: usize = 256 << 10;

/// A recording being read: its identity and summary up front, its events
/// as they come.
pub struct Replay<R> {
    pub path: PathBuf,
    pub identity: NodeIdentity,
    /// Absent when the tracer was stopped abruptly (SIGKILL, crash).
    pub summary: Option<Summary>,
    input: R,
    buf: BytesMut,
    decoder: wire::Decoder<Record>,
    /// Bytes taken from `input` so far, the magic included.
    fed: usize,
    eof: bool,
    /// A summary was met by the streaming pass.
    summary_seen: bool,
}

impl Replay<File> {
    /// Opens `path`: its magic, its `start` record and its summary.
    pub fn open(path: &Path) -> Result<Replay<File>, RecordError> {
        let read = |source| RecordError::Read {
            path: path.into(),
            source,
        };
        let mut file = File::open(path).map_err(read)?;
        let summary = last_summary(&mut file).map_err(read)?;
        file.seek(SeekFrom::Start(0)).map_err(read)?;
        let mut r = Replay::start(path, file)?;
        r.summary = summary;
        Ok(r)
    }
}

/// The summary, when the last complete frame of the file is one. Only
/// frame lengths are read; a damaged file is left to the streaming pass.
fn last_summary(file: &mut File) -> io::Result<Option<Summary>> {
    let size = file.metadata()?.len();
    let mut at = MAGIC.len() as u64;
    let mut last = None;
    let mut header = [0u8; 8];
    while at + 8 <= size {
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut header)?;
        let len = u64::from(u32::from_be_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        if at + 8 + len > size {
            return Ok(None);
        }
        last = Some((at + 8, len));
        at += 8 + len;
    }
    let Some((from, len)) = last else {
        return Ok(None);
    };
    // Batches start with a tag byte, JSON records with `{`; a summary is
    // small, an event batch is not worth reading here.
    if len > 1 << 20 {
        return Ok(None);
    }
    let mut payload = vec![0; len as usize];
    file.seek(SeekFrom::Start(from))?;
    file.read_exact(&mut payload)?;
    Ok(match serde_json::from_slice(&payload) {
        Ok(Record::Summary(s)) => Some(s),
        _ => None,
    })
}

impl<R: Read> Replay<R> {
    /// Checks the magic and reads up to the `start` record. The summary is
    /// only known once the stream has been read (see [`Replay::open`]).
    pub fn start(path: &Path, mut input: R) -> Result<Replay<R>, RecordError> {
        let p = || path.to_path_buf();
        let mut magic = Vec::with_capacity(MAGIC.len());
        (&mut input)
            .take(MAGIC.len() as u64)
            .read_to_end(&mut magic)
            .map_err(|source| RecordError::Read { path: p(), source })?;
        if magic.len() < MAGIC.len() || magic[..6] != MAGIC[..6] || magic[7] != b'\n' {
            return Err(RecordError::Magic { path: p() });
        }
        if magic[6] != MAGIC[6] {
            return Err(RecordError::Version {
                path: p(),
                version: magic[6],
            });
        }
        let mut r = Replay {
            path: p(),
            identity: NodeIdentity::default(),
            summary: None,
            input,
            buf: BytesMut::new(),
            decoder: wire::Decoder::default(),
            fed: MAGIC.len(),
            eof: false,
            summary_seen: false,
        };
        match r.frame()? {
            Some((Frame::Message(m), _)) if matches!(*m, Record::Start(_)) => {
                let Record::Start(id) = *m else {
                    unreachable!("matched a start")
                };
                r.identity = id;
            }
            _ => return Err(RecordError::NoStart { path: p() }),
        }
        Ok(r)
    }

    /// The next frame and the file offset it was read at; `None` at a
    /// clean end (between frames).
    fn frame(&mut self) -> Result<Option<(Frame<Record>, usize)>, RecordError> {
        loop {
            let offset = self.fed - self.buf.len();
            if self.eof && self.buf.is_empty() {
                return Ok(None);
            }
            match self.decoder.decode_frame(&mut self.buf) {
                Ok(Some(m)) => return Ok(Some((m, offset))),
                Ok(None) if self.eof => {
                    return Err(RecordError::Truncated {
                        path: self.path.clone(),
                        offset,
                    });
                }
                Ok(None) => self.fill()?,
                Err(source) => {
                    return Err(RecordError::Corrupt {
                        path: self.path.clone(),
                        offset,
                        source,
                    });
                }
            }
        }
    }

    fn fill(&mut self) -> Result<(), RecordError> {
        let at = self.buf.len();
        self.buf.resize(at + CHUNK, 0);
        let n = loop {
            match self.input.read(&mut self.buf[at..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(RecordError::Read {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        };
        self.buf.truncate(at + n);
        self.fed += n;
        self.eof = n == 0;
        Ok(())
    }

    /// The next batch of events (not empty); `Ok(None)` at the end of the
    /// recording. A summary met on the way is kept (it replaces the one
    /// read up front: the same frame).
    pub fn next_batch(&mut self) -> Result<Option<Vec<Event>>, RecordError> {
        loop {
            let Some((frame, offset)) = self.frame()? else {
                return Ok(None);
            };
            let msg = match frame {
                Frame::Events(events) if events.is_empty() => continue,
                Frame::Events(events) => return Ok(Some(events)),
                Frame::Message(m) => *m,
            };
            match msg {
                Record::Event(e) => return Ok(Some(vec![e])),
                Record::Summary(s) if !self.summary_seen => {
                    self.summary_seen = true;
                    self.summary = Some(s);
                }
                other => {
                    return Err(RecordError::Unexpected {
                        path: self.path.clone(),
                        offset,
                        kind: other.kind(),
                    });
                }
            }
        }
    }

    /// Whether the stream really ended with a summary: the one read up
    /// front is only trusted when the streaming pass met it too.
    pub fn ended_with_summary(&self) -> bool {
        self.summary_seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{schema::recording::Writer, verdict::test_identity as identity};

    fn event(i: u64) -> Event {
        serde_json::from_value(serde_json::json!({
            "time": "1970-01-01T00:00:00.000000000Z", "ts_mono_ns": i, "hop": "underlay-egress", "ifindex": 2,
            "iface": "eth1", "len": 100,
        }))
        .unwrap()
    }

    #[test]
    fn the_summary_is_known_before_the_events_and_a_cut_file_has_none() {
        let path = std::env::temp_dir().join(format!("ft-replay-{}.rec", std::process::id()));
        let mut w = Writer::create(&path, &identity("node-a")).unwrap();
        // More than one batch, so the summary is several frames away.
        for i in 0..600 {
            w.write_event(event(i)).unwrap();
        }
        let summary = Summary {
            end_wall_ns: 42,
            events: 600,
            ..Summary::default()
        };
        w.finish(&summary).unwrap();
        let mut r = Replay::open(&path).unwrap();
        assert_eq!(r.identity.node, "node-a");
        assert_eq!(r.summary.as_ref().map(|s| s.end_wall_ns), Some(42));
        let mut n = 0;
        while let Some(b) = r.next_batch().unwrap() {
            assert!(!b.is_empty());
            n += b.len();
        }
        assert_eq!(n, 600);
        assert!(r.ended_with_summary());

        // Cut between the event batches and the summary: no summary, and
        // the events before the cut.
        let data = std::fs::read(&path).unwrap();
        let summary_frame = data.len() - wire::encode(&Record::Summary(summary)).unwrap().len();
        std::fs::write(&path, &data[..summary_frame]).unwrap();
        let mut r = Replay::open(&path).unwrap();
        assert!(r.summary.is_none());
        let mut n = 0;
        while let Some(b) = r.next_batch().unwrap() {
            n += b.len();
        }
        assert_eq!(n, 600);
        assert!(!r.ended_with_summary());

        // Cut inside a frame: the streaming pass says so, naming the file.
        std::fs::write(&path, &data[..summary_frame - 5]).unwrap();
        let mut r = Replay::open(&path).unwrap();
        let err = loop {
            match r.next_batch() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("a cut frame was read as a clean end"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, RecordError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("ft-replay-"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}
