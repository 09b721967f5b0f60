//! Running the real flannel-trace binary inside a lab node and collecting
//! its JSON stream (`start`, `event`..., `summary`).

use std::{
    io::Read as _,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use flannel_trace::schema::{event::Event, identity::NodeIdentity, summary::Summary};
use flannel_trace_common::Hop;

use crate::{
    LineReader, Netns,
    records::{Record, is_hop, line, record},
};

/// The binary under test: `$FLANNEL_TRACE_BIN` (set by `cargo xtask test`),
/// else the workspace's release build.
pub fn tracer_bin() -> PathBuf {
    std::env::var_os("FLANNEL_TRACE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/flannel-trace")
        })
}

/// A flannel-trace process in a node, started with `--json`.
pub struct Tracer {
    child: Child,
    stdout: LineReader,
    stderr: Stderr,
    pub start: NodeIdentity,
}

/// Everything one session printed.
#[derive(Debug)]
pub struct Session {
    pub start: NodeIdentity,
    pub events: Vec<Event>,
    pub summary: Option<Summary>,
    pub status: ExitStatus,
    pub stderr: String,
}

/// A child's stderr, read to its end by a thread of its own.
struct Stderr {
    buf: Arc<Mutex<String>>,
    reader: thread::JoinHandle<()>,
}

impl Stderr {
    /// Everything, once the process has exited: waits (a bounded time) for
    /// the reader to see the end of the pipe, so that a last line written
    /// just before exit is never missed.
    fn all(&self) -> String {
        let deadline = Instant::now() + crate::patience(Duration::from_secs(5));
        while !self.reader.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        self.buf.lock().expect("stderr buffer").clone()
    }
}

fn spawn(ns: &Netns, args: &[&str]) -> Result<(Child, LineReader, Stderr)> {
    let bin = tracer_bin();
    if !bin.is_file() {
        bail!(
            "{} does not exist: build it with `cargo xtask build`",
            bin.display()
        );
    }
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(&bin)
        .args(args)
        .env("FLANNEL_TRACE_RECORD_DIR", crate::recording_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} in {}", bin.display(), ns.name()))?;
    let stdout = LineReader::new(child.stdout.take().context("stdout")?);
    let mut err = child.stderr.take().context("stderr")?;
    let buf = Arc::new(Mutex::new(String::new()));
    let sink = buf.clone();
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        sink.lock().expect("stderr buffer").push_str(&text);
    });
    Ok((child, stdout, Stderr { buf, reader }))
}

impl Tracer {
    /// Start the tracer in `ns` and wait until it has attached (its `start`
    /// record is printed only after every hook is in place).
    pub fn start(ns: &Netns, args: &[&str]) -> Result<Tracer> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (mut child, mut stdout, stderr) = spawn(ns, &all)?;
        let line = stdout.wait_for_line(
            |l| l.contains("\"type\":\"start\""),
            crate::patience(Duration::from_secs(30)),
        );
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!(
                    "tracer did not start ({e}); exit {status:?}; stderr:\n{}",
                    stderr.all()
                );
            }
        };
        let Record::Start(start) = record(&line)? else {
            bail!("the first record is not the start record: {line}");
        };
        Ok(Tracer {
            child,
            stdout,
            stderr,
            start,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGINT, then collect everything it printed until it exits.
    pub fn stop(self) -> Result<Session> {
        self.signal(libc::SIGINT);
        self.finish()
    }

    /// Wait for exit (e.g. after `--duration`) and collect the output.
    pub fn finish(mut self) -> Result<Session> {
        let deadline = Instant::now() + crate::patience(Duration::from_secs(30));
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("tracer did not exit within 30 s of being stopped");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let mut events = Vec::new();
        let mut summary = None;
        while let Ok(line) = self.stdout.wait_for_line(|_| true, Duration::from_secs(5)) {
            match record(&line)? {
                Record::Event(e) => events.push(e),
                Record::Summary(s) => summary = Some(s),
                other => bail!("unexpected {} record: {line}", other.kind()),
            }
        }
        let stderr = self.stderr.all();
        Ok(Session {
            start: self.start,
            events,
            summary,
            status,
            stderr,
        })
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) -> Result<ExitStatus> {
        self.child.kill()?;
        Ok(self.child.wait()?)
    }
}

/// Run the tracer to completion (for invocations expected to fail fast).
pub fn run_tracer(ns: &Netns, args: &[&str]) -> Result<(ExitStatus, String, String)> {
    let (mut child, mut stdout, stderr) = spawn(ns, args)?;
    let status = child.wait()?;
    let mut out = String::new();
    while let Ok(l) = stdout.wait_for_line(|_| true, Duration::from_secs(2)) {
        out.push_str(&l);
        out.push('\n');
    }
    let err = stderr.all();
    Ok((status, out, err))
}

impl Session {
    /// The events reported at `hop`.
    pub fn at(&self, hop: Hop) -> impl Iterator<Item = &Event> + '_ {
        self.events.iter().filter(move |e| is_hop(&e.hop, hop))
    }

    /// The backend the tracer chose for `hop`.
    pub fn backend(&self, hop: Hop) -> Option<String> {
        backend(&self.start, hop)
    }

    pub fn dump(&self) -> String {
        let mut s = format!("exit {:?}\nstderr:\n{}\n", self.status, self.stderr);
        for e in &self.events {
            s.push_str(&line(e));
            s.push('\n');
        }
        s.push_str(&format!("summary: {:?}\n", self.summary));
        s
    }
}

/// The backend a start record says serves `hop`.
pub fn backend(start: &NodeIdentity, hop: Hop) -> Option<String> {
    start
        .hooks
        .iter()
        .find(|h| is_hop(&h.hop, hop))
        .map(|h| h.backend.to_string())
}
