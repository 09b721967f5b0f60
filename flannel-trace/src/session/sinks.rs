//! Where this node's own output goes: stdout (text or JSON lines) and the
//! recording.

use std::{
    io::{self, Write as _},
    path::PathBuf,
};

use anyhow::Context as _;

use crate::{
    exit::{Fatal, OrFatal as _, Status},
    options::TraceOptions,
    render::text,
    schema::{event::Event, identity::NodeIdentity, record::Record, recording, summary::Summary},
};

pub struct Sinks<'a> {
    pub json: bool,
    print_events: bool,
    // Buffered: stdout alone is line-buffered, a write(2) per event.
    out: io::BufWriter<io::StdoutLock<'a>>,
    recorder: Option<recording::Writer>,
    /// Where this session is recorded (`--record`, or the default path
    /// whenever a live join is requested).
    pub record_path: Option<PathBuf>,
}

impl Sinks<'_> {
    /// Stdout, and the recording. Nothing lost: a live join is always also
    /// recorded, so that a join that does not happen can be done offline
    /// later.
    pub fn open(opts: &TraceOptions, identity: &NodeIdentity) -> Result<Self, Fatal> {
        let mut sinks = Sinks {
            json: opts.output.json,
            print_events: !opts.listening() || opts.output.events,
            out: io::BufWriter::with_capacity(1 << 16, io::stdout().lock()),
            recorder: None,
            record_path: None,
        };
        let record_path = match (&opts.record, opts.live.is_some()) {
            (Some(p), _) => Some(p.clone()),
            (None, true) => Some(recording::default_path(&identity.node).fatal(Status::Failure)?),
            (None, false) => None,
        };
        if let Some(path) = &record_path {
            sinks.recorder =
                Some(recording::Writer::create(path, identity).fatal(Status::Failure)?);
            if opts.record.is_none() {
                eprintln!(
                    "flannel-trace: recording this session to {} (for `flannel-trace join` if the live join fails)",
                    path.display()
                );
            }
        }
        sinks.record_path = record_path;
        Ok(sinks)
    }

    pub fn line(&mut self, s: &str) -> Result<(), Fatal> {
        writeln!(self.out, "{s}").context("writing to stdout")?;
        Ok(())
    }

    pub fn json_line(&mut self, m: &Record) -> Result<(), Fatal> {
        let s = serde_json::to_string(m).context("encoding JSON")?;
        self.line(&s)
    }

    pub fn flush(&mut self) -> Result<(), Fatal> {
        self.out.flush().context("writing to stdout")?;
        Ok(())
    }

    /// The start banner (stderr) or the `start` line.
    pub fn start(&mut self, id: &NodeIdentity) -> Result<(), Fatal> {
        if self.json {
            self.json_line(&Record::Start(id.clone()))?;
        } else {
            eprint!("{}", text::start_text(id));
            eprintln!("  (Ctrl-C to stop)");
        }
        self.flush()
    }

    /// One event: printed (unless only verdicts are) and recorded.
    pub fn event(&mut self, ev: &Event, clock_offset_ns: i64) -> Result<(), Fatal> {
        if self.print_events {
            // Straight into the 64 KiB buffer: no per-event String, no copy
            // of the event.
            let out = &mut self.out;
            if self.json {
                serde_json::to_writer(&mut *out, &text::EventRecord::Event(ev))
                    .context("encoding event")?;
            } else {
                text::write_event_text(out, ev, clock_offset_ns).context("writing to stdout")?;
            }
            out.write_all(b"\n").context("writing to stdout")?;
        }
        if let Some(r) = self.recorder.as_mut() {
            // Batched by the writer, which keeps what it is given.
            r.write_event(ev.clone()).fatal(Status::Failure)?;
        }
        Ok(())
    }

    /// After a drain: the recording's batch to disk.
    pub fn flush_recording(&mut self) -> Result<(), Fatal> {
        if let Some(r) = self.recorder.as_mut() {
            r.flush_events().fatal(Status::Failure)?;
        }
        Ok(())
    }

    /// The session's summary (stderr or a `summary` line), and the
    /// recording closed with it.
    pub fn summary(&mut self, summary: &Summary) -> Result<(), Fatal> {
        if self.json {
            self.json_line(&Record::Summary(summary.clone()))?;
        } else {
            eprint!("{}", text::summary_text(summary));
        }
        if let Some(r) = self.recorder.take() {
            r.finish(summary).fatal(Status::Failure)?;
        }
        Ok(())
    }
}
