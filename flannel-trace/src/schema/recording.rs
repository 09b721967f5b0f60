//! Recordings: a session written to a file, to be joined later with
//! another node's (`flannel-trace join`).
//!
//! Format: the 8-byte magic `FTREC\x00\x02\n` (format version 2), then
//! frames as on the peer channel (see `wire`): a `start` message (JSON)
//! with the node's identity and clock offset, batches of events in the
//! compact encoding of `codec` (about 60 bytes an event), and a closing
//! `summary` (JSON). Every frame is length-prefixed and checksummed, so a
//! cut or damaged file is detected, never misread. Format 1 (one JSON frame
//! per event, ~350 bytes) is refused with a message naming it.

use std::{
    fs::File,
    io::{self, BufWriter, Write as _},
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::{
    schema::codec::{self, MAX_BATCH},
    schema::event::Event,
    schema::identity::NodeIdentity,
    schema::record::Record,
    schema::summary::Summary,
    schema::wire::{self, FrameError},
};

pub const MAGIC: &[u8; 8] = b"FTREC\x00\x02\n";
pub const FORMAT: u8 = 2;

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("cannot create recording {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("writing recording {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read recording {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a flannel-trace recording (bad magic bytes)")]
    Magic { path: PathBuf },
    #[error(
        "{path} is a recording of format {version}{}; this flannel-trace reads format {FORMAT}: join it with the flannel-trace version that wrote it",
        if *version == 1 { " (JSON frames, written before the compact encoding)" } else { " (written by a newer flannel-trace?)" }
    )]
    Version { path: PathBuf, version: u8 },
    #[error(
        "{path} is truncated at byte {offset}: the last frame is incomplete (was the copy cut short?)"
    )]
    Truncated { path: PathBuf, offset: usize },
    #[error("{path} is corrupt at byte {offset}: {source}")]
    Corrupt {
        path: PathBuf,
        offset: usize,
        source: FrameError,
    },
    #[error("{path} does not start with the node's identity (a `start` record)")]
    NoStart { path: PathBuf },
    #[error("{path}: unexpected `{kind}` record at byte {offset}")]
    Unexpected {
        path: PathBuf,
        offset: usize,
        kind: &'static str,
    },
}

/// Where a live session is recorded when `--record` is not given:
/// `$FLANNEL_TRACE_RECORD_DIR`, else `/var/tmp/flannel-trace` (kept across
/// reboots, unlike /tmp on many systems), created readable by root only,
/// since recordings hold the overlay's addresses and flows.
pub const DEFAULT_DIR: &str = "/var/tmp/flannel-trace";

pub fn default_path(node: &str) -> Result<PathBuf, RecordError> {
    let dir = std::env::var_os("FLANNEL_TRACE_RECORD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
    let create = |source| RecordError::Create {
        path: dir.clone(),
        source,
    };
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(create)?;
    }
    let safe: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // 2026-12-01T09:15:30.123456789Z → 20261201T091530Z
    let stamp: String = crate::kernel::clock::rfc3339(crate::kernel::clock::Clock::now_wall_ns())
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    let name = format!("{safe}-{stamp}Z-{}.rec", std::process::id());
    Ok(dir.join(name))
}

pub struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    ctx: codec::Context,
    /// Events not yet written: they go out as one batch frame.
    batch: Vec<Event>,
    frame: Vec<u8>,
}

impl Writer {
    pub fn create(path: &Path, identity: &NodeIdentity) -> Result<Writer, RecordError> {
        let file = File::create(path).map_err(|source| RecordError::Create {
            path: path.into(),
            source,
        })?;
        let mut w = Writer {
            path: path.into(),
            out: BufWriter::new(file),
            ctx: codec::Context::of(identity),
            batch: Vec::with_capacity(MAX_BATCH),
            frame: Vec::new(),
        };
        w.raw(MAGIC)?;
        w.write(&Record::Start(identity.clone()))?;
        Ok(w)
    }

    fn raw(&mut self, b: &[u8]) -> Result<(), RecordError> {
        self.out.write_all(b).map_err(|source| RecordError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// A message in JSON (after the events before it).
    pub fn write(&mut self, msg: &Record) -> Result<(), RecordError> {
        self.flush_events()?;
        let frame = wire::encode(msg).map_err(|e| RecordError::Write {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        self.raw(&frame)
    }

    /// An event, written with the next batch.
    pub fn write_event(&mut self, ev: Event) -> Result<(), RecordError> {
        self.batch.push(ev);
        if self.batch.len() >= MAX_BATCH {
            self.flush_events()?;
        }
        Ok(())
    }

    /// Writes the pending events as one batch frame (into the file's
    /// buffer): the session calls it after each ring-buffer drain, so a
    /// killed tracer loses at most what the buffer held.
    pub fn flush_events(&mut self) -> Result<(), RecordError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.frame.clear();
        wire::encode_events(&self.ctx, &self.batch, &mut self.frame);
        self.batch.clear();
        let frame = std::mem::take(&mut self.frame);
        let written = self.raw(&frame);
        self.frame = frame;
        written
    }

    pub fn finish(mut self, summary: &Summary) -> Result<(), RecordError> {
        self.write(&Record::Summary(summary.clone()))?;
        self.out.flush().map_err(|source| RecordError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// A recording read back whole: by the tests and the fuzz target (`join`
/// streams it, see `replay`).
#[cfg_attr(not(test), allow(dead_code))]
pub struct Recording {
    pub identity: NodeIdentity,
    pub events: Vec<Event>,
    /// Absent when the tracer was stopped abruptly (SIGKILL, crash).
    pub summary: Option<Summary>,
}

#[cfg(test)]
pub fn read(path: &Path) -> Result<Recording, RecordError> {
    let mut r = crate::schema::replay::Replay::open(path)?;
    collect(&mut r)
}

pub(crate) fn parse(path: &Path, data: &[u8]) -> Result<Recording, RecordError> {
    let mut r = crate::schema::replay::Replay::start(path, data)?;
    collect(&mut r)
}

/// The whole of a recording in memory (tests, fuzzing; `join` streams).
fn collect<R: std::io::Read>(
    r: &mut crate::schema::replay::Replay<R>,
) -> Result<Recording, RecordError> {
    let mut events = Vec::new();
    while let Some(batch) = r.next_batch()? {
        events.extend(batch);
    }
    Ok(Recording {
        identity: r.identity.clone(),
        events,
        summary: if r.ended_with_summary() {
            r.summary.clone()
        } else {
            None
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::test_identity as identity;

    fn sample() -> Vec<u8> {
        // One file per call: the tests that use it run in parallel.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ftrec-test-{}-{n}.rec", std::process::id()));
        let id = identity("node-a");
        let mut w = Writer::create(&path, &id).unwrap();
        for i in 0..3u64 {
            let ev: Event = serde_json::from_value(serde_json::json!({
                "time": crate::kernel::clock::rfc3339(i as i64 + id.clock_offset_ns), "ts_mono_ns": i,
                "hop": "underlay-egress", "ifindex": id.underlay_ifindex, "iface": id.underlay_dev,
                "len": 100 + i,
                "outer": {"src": "10.25.1.51", "dst": "10.25.1.55", "proto": "udp", "sport": 1, "dport": 8475},
                "vni": 1, "fingerprint": "0123456789abcdef",
            }))
            .unwrap();
            w.write_event(ev).unwrap();
        }
        w.finish(&Summary {
            events: 3,
            complete: true,
            ..Summary::default()
        })
        .unwrap();
        let data = std::fs::read(&path).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.identity.node, "node-a");
        std::fs::remove_file(&path).unwrap();
        data
    }

    #[test]
    fn round_trip() {
        let data = sample();
        let r = parse(Path::new("x.rec"), &data).unwrap();
        assert_eq!(r.identity.node, "node-a");
        assert!(r.summary.is_some());
        assert_eq!(r.events.len(), 3);
        assert_eq!(r.events[2].len, 102);
        assert_eq!(r.events[0].iface, Some(identity("node-a").underlay_dev));
    }

    /// A peer channel's own message (here its `bye`, as a peer frames
    /// it) is not a record: a file holding one is refused, naming it.
    #[test]
    fn a_peer_control_message_in_a_recording_is_refused() {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&wire::encode(&Record::Start(identity("node-a"))).unwrap());
        let at = data.len();
        let bye = serde_json::json!({"type": "bye"});
        data.extend_from_slice(&wire::encode(&bye).unwrap());
        let Err(e) = parse(Path::new("x.rec"), &data) else {
            panic!("a recording with a `bye` accepted")
        };
        assert!(
            matches!(e, RecordError::Corrupt { offset, .. } if offset == at),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("x.rec") && msg.contains("unknown variant `bye`"),
            "{msg}"
        );
    }

    #[test]
    fn every_truncation_and_corruption_is_a_clear_error() {
        let data = sample();
        for cut in 0..data.len() {
            // Cutting exactly between frames leaves a valid, summary-less
            // recording; anywhere else it is an error naming the file.
            match parse(Path::new("x.rec"), &data[..cut]) {
                Ok(r) => assert!(r.summary.is_none()),
                Err(e) => assert!(e.to_string().contains("x.rec"), "{e}"),
            }
        }
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x41;
            // Must not panic; most flips are errors.
            let _ = parse(Path::new("x.rec"), &bad);
        }
        assert!(matches!(
            parse(Path::new("x.rec"), b"hello world"),
            Err(RecordError::Magic { .. })
        ));
        let mut v1 = data.clone();
        v1[6] = 1;
        let Err(e) = parse(Path::new("x.rec"), &v1) else {
            panic!("format {} accepted", v1[6])
        };
        assert!(matches!(e, RecordError::Version { version: 1, .. }), "{e}");
        assert!(e.to_string().contains("format 1 (JSON frames"), "{e}");
        v1[6] = 3;
        let Err(e) = parse(Path::new("x.rec"), &v1) else {
            panic!("format {} accepted", v1[6])
        };
        assert!(e.to_string().contains("newer"), "{e}");
        let cut = data.len() - 3;
        assert!(matches!(
            parse(Path::new("x.rec"), &data[..cut]),
            Err(RecordError::Truncated { .. })
        ));
    }
}
