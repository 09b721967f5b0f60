//! The event loop of a trace session and where its events go: stdout, a
//! recording, a peer, or (when listening) the live join.

pub mod trace;

use std::{
    collections::HashMap,
    io::{self, Write as _},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use flannel_trace_common::{Config, Counter, Ports, dropped::Record};
use tokio::{
    io::unix::AsyncFd,
    net::TcpListener,
    signal::unix::SignalKind,
    sync::{mpsc, oneshot},
};

use crate::{
    cli::TraceArgs,
    datapath::Probes,
    exit::{Fatal, OrFatal as _, Status},
    kernel::clock::Clock,
    net::icmp,
    peer::feed::{self, Feed},
    peer::thin::{self, ThinStep},
    peer::{self, Channel, ChannelTx, Control, Handshake, Message},
    render::{self, text},
    schema::codec,
    schema::event::{Decoder, Event, is_real_drop},
    schema::identity::NodeIdentity,
    schema::record,
    schema::recording,
    schema::summary::Summary,
    schema::wire,
    verdict::live::Joiner,
};

/// How often the ring buffer is drained when no wakeup came.
pub(crate) const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// Events held while the peer connection is being set up.
const PENDING_CAP: usize = 200_000;

/// What a connected peer channel delivers to the loop.
enum PeerNews {
    Joined(Box<(Handshake, Channel)>),
    Failed(String),
}

struct Sinks<'a> {
    json: bool,
    print_events: bool,
    // Buffered: stdout alone is line-buffered, a write(2) per event.
    out: io::BufWriter<io::StdoutLock<'a>>,
    recorder: Option<recording::Writer>,
    /// --peer: our events go to a writer task once connected, through a
    /// bounded queue, so a slow listener never stalls the ring buffer; the
    /// feed thins them consistently when the link cannot keep up.
    to_peer: Option<Feed>,
    /// Control messages (`thin`) to the writer, ahead of queued events.
    to_peer_ctl: Option<mpsc::UnboundedSender<Message>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    pending: Vec<Event>,
    pending_dropped: u64,
    peer_failed: bool,
    /// Why the live join did not happen (or ended before our last events
    /// reached the listener): the session then exits with
    /// [`Status::NoJoin`] and says how to join the recordings later.
    join_missing: Option<String>,
    /// Where this session is recorded (`--record`, or the default path
    /// whenever a live join is requested).
    record_path: Option<std::path::PathBuf>,
    /// --listen: the join.
    joiner: Option<Joiner>,
}

pub async fn run(
    args: &TraceArgs,
    identity: NodeIdentity,
    decoder: Decoder,
    probes: &mut Probes,
    cfg: &Config,
    ports: Ports,
) -> Result<(), Fatal> {
    let listening = args.listen.is_some();
    let mut s = Session {
        codec_ctx: codec::Context::of(&identity),
        cfg: *cfg,
        sample_mask: identity.sample_rate() - 1,
        clock_offset_ns: identity.clock_offset_ns,
        ports,
        decoder,
        summary: Summary {
            complete: true,
            start_wall_ns: Clock::now_wall_ns(),
            ..Summary::default()
        },
        sinks: Sinks {
            json: args.json,
            print_events: !listening || args.events,
            out: io::BufWriter::with_capacity(1 << 16, io::stdout().lock()),
            recorder: None,
            to_peer: None,
            to_peer_ctl: None,
            writer: None,
            pending: Vec::new(),
            pending_dropped: 0,
            // Events are held for a listener only with --peer; without one,
            // holding them would only grow memory (up to PENDING_CAP).
            peer_failed: args.peer.is_none(),
            join_missing: None,
            record_path: None,
            joiner: listening.then(|| Joiner::new(identity.clone(), args.max_events)),
        },
    };
    // Nothing lost: a live join is always also recorded, so that a join
    // that does not happen can be done offline later.
    let live = args.listen.is_some() || args.peer.is_some();
    let record_path = match (&args.record, live) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(recording::default_path(&identity.node).fatal(Status::Failure)?),
        (None, false) => None,
    };
    if let Some(path) = &record_path {
        s.sinks.recorder = Some(recording::Writer::create(path, &identity).fatal(Status::Failure)?);
        if args.record.is_none() {
            eprintln!(
                "flannel-trace: recording this session to {} (for `flannel-trace join` if the live join fails)",
                path.display()
            );
        }
    }
    s.sinks.record_path = record_path;
    s.emit_start(&identity)?;

    // The peer channel is set up in the background: the ring buffer must be
    // drained meanwhile.
    let (news_tx, mut news_rx) = oneshot::channel::<PeerNews>();
    let token = args.token.clone().unwrap_or_default();
    if let Some(addr) = args.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))
            .fatal(Status::Failure)?;
        if addr.ip().is_unspecified() {
            eprintln!(
                "flannel-trace: warning: --listen {addr} accepts connections on every address of this node, overlay and pod-facing ones included; prefer this node's underlay address"
            );
        }
        eprintln!("flannel-trace: waiting for a peer on {addr}");
        let id = identity.clone();
        tokio::spawn(async move {
            let news = match peer::listen(listener, &token, &id, None).await {
                Ok(joined) => PeerNews::Joined(Box::new(joined)),
                Err(e) => PeerNews::Failed(e.to_string()),
            };
            let _ = news_tx.send(news);
        });
    } else if let Some(addr) = args.peer {
        let (id, wait) = (identity.clone(), args.peer_wait);
        tokio::spawn(async move {
            let news = match peer::connect(addr, &token, &id, wait).await {
                Ok(joined) => PeerNews::Joined(Box::new(joined)),
                Err(e) => PeerNews::Failed(e.to_string()),
            };
            let _ = news_tx.send(news);
        });
    } else {
        drop(news_tx);
    }
    if let (true, Some(to)) = (args.probe, args.probe_to) {
        start_probe(to, args);
    }

    let mut ring = open_ring(probes)?;
    // The programs' own diagnostics (rare, rate-limited) arrive via aya-log.
    let mut logger = match aya_log::EbpfLogger::init(probes.ebpf_mut()) {
        Ok(l) => Some(register_logger(l)?),
        Err(e) => {
            log::debug!("no eBPF log channel: {e}");
            None
        }
    };
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())
        .context("installing a SIGTERM handler")?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt())
        .context("installing a SIGINT handler")?;
    let deadline = tokio::time::sleep(
        args.duration
            .unwrap_or(Duration::from_secs(10 * 365 * 24 * 3600)),
    );
    tokio::pin!(deadline);
    let mut report_tick = tokio::time::interval(args.report_every);
    // The programs wake us only once a batch is waiting (see
    // Config::wakeup_bytes); this tick collects what a quiet moment leaves.
    let mut drain_tick = tokio::time::interval(DRAIN_EVERY);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (remote_tx, mut remote_rx) = mpsc::channel::<Result<Option<Message>, String>>(1024);
    let mut peer_open = false;
    let mut news_open = args.listen.is_some() || args.peer.is_some();
    let began = Instant::now();
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard: tokio::io::unix::AsyncFdReadyMutGuard<'_, RingBuf<MapData>> = guard.context("waiting for events")?;
                // Readiness is cleared before draining, not after: a wakeup
                // that comes while we drain then marks the fd ready again,
                // instead of being wiped out and leaving the rest of the
                // batch to the next tick.
                guard.clear_ready();
                s.drain(guard.get_inner_mut()).await?;
                s.sinks.out.flush().context("writing to stdout")?;
            }
            news = &mut news_rx, if news_open => {
                news_open = false;
                match news {
                    Ok(PeerNews::Joined(joined)) => {
                        let (h, channel) = *joined;
                        peer_open = s.joined(h, channel, &remote_tx, args, probes).await?;
                    }
                    Ok(PeerNews::Failed(e)) => {
                        let what = if listening { "no peer joined" } else { "could not join the listener" };
                        eprintln!("flannel-trace: {what}: {e}; tracing locally only");
                        s.sinks.join_missing = Some(format!("{what}: {e}"));
                        s.sinks.peer_failed = true;
                        s.sinks.pending.clear();
                    }
                    Err(_) => {}
                }
            }
            msg = remote_rx.recv(), if peer_open => {
                match msg {
                    Some(Ok(Some(m))) => s.remote(m),
                    Some(Ok(None)) | None => {
                        peer_open = false;
                        if s.peer_finished() {
                            eprintln!("flannel-trace: the peer finished");
                        } else {
                            s.peer_gone("the peer closed the connection before the end");
                        }
                        if listening { break; }
                    }
                    Some(Err(e)) => {
                        peer_open = false;
                        s.peer_gone(&format!("the peer went away ({e})"));
                        if listening { break; }
                    }
                }
            }
            guard = async { logger.as_mut().expect("guarded").readable_mut().await }, if logger.is_some() => {
                let mut guard = guard.context("waiting for eBPF log records")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = drain_tick.tick() => {
                s.drain(ring.get_mut()).await?;
                s.sinks.out.flush().context("writing to stdout")?;
            }
            _ = report_tick.tick(), if listening => s.interim_report(probes)?,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = &mut deadline => break,
        }
    }
    // What arrived between the last wake-up and the stop.
    s.drain(ring.get_mut()).await?;
    s.summary.duration_s = began.elapsed().as_secs_f64();
    s.summary.end_wall_ns = Clock::now_wall_ns();
    let step = Clock::sample().offset_ns() - s.decoder.clock.offset_ns();
    if step.abs() > crate::schema::summary::CLOCK_STEP_NOTED {
        s.summary.clock_step_ns = step;
        eprintln!(
            "flannel-trace: the wall clock stepped by {:+.3} s during the session: the verdict is marked uncertain",
            step as f64 / 1e9
        );
    }
    s.finish(probes, &mut remote_rx, peer_open).await
}

/// Queue depth towards the listener: a drain of the ring buffer fits, so
/// that the writer (on the same thread) catches up between drains.
const PEER_QUEUE: usize = 65_536;

/// The task that writes to the listener; ends when the queue closes or the
/// connection fails. It takes whatever is queued at once (up to a batch of
/// events) and sends it as one encrypted write: events go in the compact
/// encoding, other messages in JSON, in queue order. Control messages
/// (`thin`) go first, ahead of the events queued before them: the
/// listener places a switch by its time, not by where it arrives.
fn spawn_writer(
    mut tx: ChannelTx,
    ctx: codec::Context,
    taken: Arc<AtomicU64>,
) -> (
    mpsc::Sender<Message>,
    mpsc::UnboundedSender<Message>,
    tokio::task::JoinHandle<()>,
) {
    let (q_tx, mut q_rx) = mpsc::channel::<Message>(PEER_QUEUE);
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Message>();
    let handle = tokio::spawn(async move {
        let mut events: Vec<Event> = Vec::with_capacity(codec::MAX_BATCH);
        let mut out: Vec<u8> = Vec::new();
        loop {
            out.clear();
            // Control messages first, in their order; then what is queued.
            let first = tokio::select! {
                biased;
                Some(c) = ctl_rx.recv() => {
                    for c in std::iter::once(c).chain(std::iter::from_fn(|| ctl_rx.try_recv().ok())) {
                        match wire::encode(&c) {
                            Ok(frame) => out.extend_from_slice(&frame),
                            Err(e) => log::warn!("not sent to the listener: {e}"),
                        }
                    }
                    q_rx.try_recv().ok()
                }
                m = q_rx.recv() => match m {
                    Some(m) => Some(m),
                    None => break,
                },
            };
            let mut bye = false;
            let mut n = 0u64;
            let mut next = first;
            while let Some(m) = next.take() {
                match m {
                    Message::Record(record::Record::Event(ev)) => {
                        events.push(ev);
                        n += 1;
                    }
                    other => {
                        if !events.is_empty() {
                            wire::encode_events(&ctx, &events, &mut out);
                            events.clear();
                        }
                        bye = matches!(other, Message::Control(Control::Bye));
                        match wire::encode(&other) {
                            Ok(frame) => out.extend_from_slice(&frame),
                            Err(e) => log::warn!("not sent to the listener: {e}"),
                        }
                    }
                }
                if bye || events.len() >= codec::MAX_BATCH {
                    break;
                }
                next = q_rx.try_recv().ok();
            }
            if !events.is_empty() {
                wire::encode_events(&ctx, &events, &mut out);
                events.clear();
            }
            if let Err(e) = tx.send_frames(&out).await {
                eprintln!("flannel-trace: sending to the listener failed: {e}");
                break;
            }
            // The feed sizes its overflow by what the link carries.
            taken.fetch_add(n, Ordering::Relaxed);
            if bye {
                break;
            }
        }
    });
    (q_tx, ctl_tx, handle)
}

fn start_probe(to: std::net::IpAddr, args: &TraceArgs) {
    let (count, interval) = (args.probe_count, args.probe_interval);
    tokio::spawn(async move {
        match icmp::run(to, count, interval).await {
            Ok(n) => log::info!("sent {n} probes to {to}"),
            Err(e) => eprintln!("flannel-trace: {e}"),
        }
    });
}

type Logger = aya_log::EbpfLogger<&'static dyn log::Log>;

fn register_logger(l: Logger) -> anyhow::Result<AsyncFd<Logger>> {
    // SAFETY: the logger owns its ring buffer map fd for its whole life.
    unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("polling the eBPF log channel: {}", e.into_parts().1))
}

/// The programs' ring buffer, taken from the object and registered with
/// tokio (readable interest only).
pub(crate) fn open_ring(probes: &mut Probes) -> anyhow::Result<AsyncFd<RingBuf<MapData>>> {
    let map = probes
        .ebpf_mut()
        .take_map("EVENTS")
        .ok_or_else(|| anyhow!("map EVENTS missing from the eBPF object"))?;
    let ring = RingBuf::try_from(map).context("opening the EVENTS ring buffer")?;
    // SAFETY: the ring buffer owns its map fd, which stays open and refers
    // to the same map for as long as the AsyncFd owns the ring buffer.
    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("polling the ring buffer: {}", e.into_parts().1))
}

struct Session<'a> {
    /// This node's identity as the compact event encoding needs it.
    codec_ctx: codec::Context,
    /// What the programs were configured with: the drop records are parsed
    /// and filtered here by the same rules.
    cfg: Config,
    /// `--sample`'s mask: where thinning the live stream starts from.
    sample_mask: u32,
    /// Events' monotonic time → this node's wall clock.
    clock_offset_ns: i64,
    /// The overlay ports the programs match.
    ports: Ports,
    decoder: Decoder,
    summary: Summary,
    sinks: Sinks<'a>,
}

impl Session<'_> {
    fn line(&mut self, s: &str) -> Result<(), Fatal> {
        writeln!(self.sinks.out, "{s}").context("writing to stdout")?;
        Ok(())
    }

    fn json(&mut self, m: &record::Record) -> Result<(), Fatal> {
        let s = serde_json::to_string(m).context("encoding JSON")?;
        self.line(&s)
    }

    fn emit_start(&mut self, id: &NodeIdentity) -> Result<(), Fatal> {
        if self.sinks.json {
            self.json(&record::Record::Start(id.clone()))?;
        } else {
            eprint!("{}", text::start_text(id));
            eprintln!("  (Ctrl-C to stop)");
        }
        self.sinks.out.flush().context("writing to stdout")?;
        Ok(())
    }

    async fn joined(
        &mut self,
        h: Handshake,
        channel: Channel,
        remote_tx: &mpsc::Sender<Result<Option<Message>, String>>,
        args: &TraceArgs,
        probes: &mut Probes,
    ) -> Result<bool, Fatal> {
        eprintln!(
            "flannel-trace: joined with {} ({})",
            h.remote.node,
            channel.peer_addr()
        );
        // Watch the peer's ports too: with mismatched ports, its frames
        // would otherwise be invisible here.
        let before = self.ports;
        for p in h
            .remote
            .device_port
            .into_iter()
            .chain(h.remote.ports.iter().copied())
        {
            if !self.ports.add(p) {
                log::warn!("cannot also trace the peer's port {p}: four ports already traced");
            }
        }
        if self.ports != before {
            probes.set_ports(self.ports).fatal(Status::Failure)?;
            eprintln!(
                "flannel-trace: also tracing the peer's ports: {:?}",
                self.ports
                    .ports
                    .iter()
                    .filter(|p| **p != 0)
                    .collect::<Vec<_>>()
            );
        }
        let probe_to = args
            .probe
            .then(|| {
                args.probe_to
                    .or_else(|| h.remote.vtep_addrs.first().copied())
            })
            .flatten();
        let (tx, mut rx) = channel.split();
        if let Some(j) = self.sinks.joiner.as_mut() {
            j.remote = Some(h.remote);
            j.clock = h.clock;
            if let Some(c) = h.clock {
                eprintln!(
                    "flannel-trace: peer clock offset {:+.3} ms ± {:.3} ms",
                    c.offset_ns as f64 / 1e6,
                    c.error_ns as f64 / 1e6
                );
            }
            drop(tx);
            let fwd = remote_tx.clone();
            tokio::spawn(async move {
                loop {
                    let m = rx.recv().await.map_err(|e| e.to_string());
                    let end = !matches!(m, Ok(Some(_)));
                    if fwd.send(m).await.is_err() || end {
                        break;
                    }
                }
            });
        } else {
            let taken = Arc::new(AtomicU64::new(0));
            let (q, ctl, handle) = spawn_writer(tx, self.codec_ctx.clone(), taken.clone());
            self.sinks.to_peer = Some(Feed::new(q, taken, self.sample_mask, self.clock_offset_ns));
            self.sinks.to_peer_ctl = Some(ctl);
            self.sinks.writer = Some(handle);
            drop(rx);
            for ev in std::mem::take(&mut self.sinks.pending) {
                self.send_peer(ev);
            }
            if self.sinks.pending_dropped > 0 {
                log::warn!(
                    "{} events from before the peer joined were not sent",
                    self.sinks.pending_dropped
                );
            }
        }
        if let Some(to) = probe_to {
            start_probe(to, args);
        }
        Ok(self.sinks.joiner.is_some())
    }

    fn send_peer(&mut self, ev: Event) {
        let Some(feed) = self.sinks.to_peer.as_mut() else {
            return;
        };
        let before = feed.unsent;
        match feed.offer(ev) {
            Ok(steps) => {
                let unsent = feed.unsent;
                self.announce(steps);
                if before == 0 && unsent > 0 {
                    eprintln!(
                        "flannel-trace: the peer link cannot keep up even with the live stream thinned to 1 in {}: events are being left out (the local recording keeps them all; the verdict will be marked uncertain, with the count)",
                        thin::MAX_MASK + 1
                    );
                }
            }
            Err(feed::Closed) => {
                eprintln!("flannel-trace: the listener went away; tracing locally only");
                self.sinks.to_peer = None;
                self.sinks.peer_failed = true;
                self.sinks.join_missing = Some("the listener went away before the end".into());
            }
        }
    }

    /// Degrade explicitly, once per step: the live stream thins by hash,
    /// the local recording keeps everything, the listener is told from
    /// when (and its verdict says so).
    fn announce(&mut self, steps: Vec<feed::Escalation>) {
        for e in steps {
            eprintln!(
                "flannel-trace: the peer link cannot keep up ({:.0} events/s): the live stream now carries 1 in {} packets, chosen by hash on both nodes; the recording keeps every event",
                e.rate,
                e.step.rate()
            );
            if let Some(ctl) = &self.sinks.to_peer_ctl {
                let _ = ctl.send(Message::Control(Control::Thin {
                    from_ns: e.step.from_wall_ns,
                    mask: e.step.mask,
                }));
            }
        }
    }

    fn remote(&mut self, m: Message) {
        let Some(j) = self.sinks.joiner.as_mut() else {
            return;
        };
        match m {
            Message::Record(record::Record::Event(ev)) => j.push_remote(ev),
            Message::Record(record::Record::Summary(sum)) => j.remote_summary = Some(sum),
            Message::Control(Control::Thin { from_ns, mask }) => {
                // The counting rule needs nested masks that only grow: a
                // step that is not one (a peer of another build, or a
                // damaged one) would turn into false losses, so the live
                // join stops trusting the peer's counts instead.
                let last = j.remote_thinned.last().map_or(0, |t| t.mask);
                if !(mask.wrapping_add(1).is_power_of_two()
                    && mask > last
                    && mask <= thin::MAX_MASK)
                {
                    eprintln!(
                        "flannel-trace: the peer sent an impossible thinning step (mask {mask:#x} after {last:#x}): ignored, and the verdict is marked uncertain"
                    );
                    j.remote_gaps.push(format!(
                        "the peer sent an impossible thinning step (mask {mask:#x} after {last:#x}): its counts cannot be trusted"
                    ));
                    return;
                }
                let step = ThinStep {
                    from_wall_ns: from_ns,
                    mask,
                };
                let at =
                    crate::kernel::clock::rfc3339(from_ns - j.clock.map_or(0, |c| c.offset_ns));
                eprintln!(
                    "flannel-trace: the peer's link cannot keep up: its live stream carries 1 in {} packets from {} on; counts after that are estimates",
                    step.rate(),
                    at.get(11..19).unwrap_or(&at)
                );
                j.remote_thinned.push(step);
            }
            Message::Control(Control::Bye) => {}
            other => log::debug!("ignoring {other:?} from the peer"),
        }
    }

    fn peer_finished(&self) -> bool {
        self.sinks
            .joiner
            .as_ref()
            .is_some_and(|j| j.remote_summary.is_some())
    }

    fn peer_gone(&mut self, why: &str) {
        eprintln!("flannel-trace: {why}");
        if let Some(j) = self.sinks.joiner.as_mut()
            && j.remote_summary.is_none()
        {
            j.remote_gaps.push(format!(
                "{why}: its view ends early, the verdict is partial"
            ));
        }
    }

    async fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<(), Fatal> {
        // The whole batch is copied out first (168 bytes a packet record,
        // 304 a drop), so the ring's space is handed back to the programs
        // before the slower parsing, decoding and output.
        let mut batch = Vec::new();
        while let Some(item) = ring.next() {
            batch.push(Record::from_bytes(&item));
        }
        for record in batch {
            let ev = match record {
                Ok(Record::Event(r)) => self.decoder.decode(&r),
                // Dropped skbs come as bytes: most are not ours.
                Ok(Record::Drop(d)) => match d.parse(&self.cfg, &self.ports) {
                    Some(r) => self.decoder.decode(&r),
                    None => continue,
                },
                Err(e) => Err(e),
            };
            self.handle(ev).await?;
        }
        if let Some(feed) = self.sinks.to_peer.as_mut() {
            let step = feed.tick();
            self.announce(step.into_iter().collect());
        }
        if let Some(r) = self.sinks.recorder.as_mut() {
            r.flush_events().fatal(Status::Failure)?;
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        ev: Result<Event, flannel_trace_common::event::DecodeError>,
    ) -> Result<(), Fatal> {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                self.summary.decode_errors += 1;
                log::debug!("undecodable record: {e}");
                return Ok(());
            }
        };
        if ev.drop.is_some() && !is_real_drop(&ev) {
            return Ok(());
        }
        self.summary.events += 1;
        // Keys are cloned only the first time a hop or reason is seen.
        bump(&mut self.summary.per_hop, ev.hop.name());
        if let Some(d) = &ev.drop {
            bump(&mut self.summary.drops_by_reason, &d.summary_key());
        }
        if self.sinks.print_events {
            // Straight into the 64 KiB buffer: no per-event String, no copy
            // of the event.
            let out = &mut self.sinks.out;
            if self.sinks.json {
                serde_json::to_writer(&mut *out, &text::EventRecord::Event(&ev))
                    .context("encoding event")?;
            } else {
                text::write_event_text(out, &ev, self.decoder.clock.offset_ns())
                    .context("writing to stdout")?;
            }
            out.write_all(b"\n").context("writing to stdout")?;
        }
        if let Some(r) = self.sinks.recorder.as_mut() {
            // Batched by the writer, which keeps what it is given.
            r.write_event(ev.clone()).fatal(Status::Failure)?;
        }
        if let Some(j) = self.sinks.joiner.as_mut() {
            j.push_local(ev);
        } else if self.sinks.to_peer.is_some() {
            self.send_peer(ev);
        } else if !self.sinks.peer_failed
            && self.sinks.pending_dropped == 0
            && self.sinks.pending.len() < PENDING_CAP
        {
            self.sinks.pending.push(ev);
        } else {
            self.sinks.pending_dropped += 1;
        }
        Ok(())
    }

    fn interim_report(&mut self, probes: &mut Probes) -> Result<(), Fatal> {
        let lost = counters(probes)
            .map(|c| c.get(&Counter::RingbufFull).copied().unwrap_or(0))
            .unwrap_or(0);
        let Some(j) = self.sinks.joiner.as_mut() else {
            return Ok(());
        };
        let Some(report) = j.report(lost, None, false) else {
            return Ok(());
        };
        if self.sinks.json {
            return Ok(());
        }
        for line in j.changed(&report) {
            eprintln!("[verdict so far] {line}");
        }
        Ok(())
    }

    async fn finish(
        &mut self,
        probes: &mut Probes,
        remote_rx: &mut mpsc::Receiver<Result<Option<Message>, String>>,
        peer_open: bool,
    ) -> Result<(), Fatal> {
        let counters = counters(probes).context("reading the programs' counters")?;
        self.summary.lost = counters.get(&Counter::RingbufFull).copied().unwrap_or(0);
        self.summary.unparsed = counters.get(&Counter::Unparsed).copied().unwrap_or(0);
        self.summary.probe_read_errors = counters.get(&Counter::ProbeRead).copied().unwrap_or(0);
        self.summary.complete = self.summary.lost == 0
            && self.summary.decode_errors == 0
            && self.summary.probe_read_errors == 0;
        let summary = self.summary.clone();
        if self.sinks.json {
            self.json(&record::Record::Summary(summary.clone()))?;
        } else {
            eprint!("{}", text::summary_text(&summary));
        }
        if let Some(r) = self.sinks.recorder.take() {
            r.finish(&summary).fatal(Status::Failure)?;
        }
        if let Some(mut feed) = self.sinks.to_peer.take() {
            // What waits behind the queue goes first.
            let _ = feed.drain(Duration::from_secs(5)).await;
            // The listener marks what we could not send, with its cause.
            let mut s = summary.clone();
            s.peer_unsent = feed.unsent;
            s.pending_dropped = self.sinks.pending_dropped;
            s.complete &= feed.unsent == 0 && self.sinks.pending_dropped == 0;
            if let Some(last) = feed.steps.last() {
                eprintln!(
                    "flannel-trace: the live stream ended thinned to 1 in {} ({} events left out of it by hash; the recording has them all)",
                    last.rate(),
                    feed.thinned
                );
            }
            if feed.unsent > 0 {
                eprintln!(
                    "flannel-trace: {} events could not be sent to the listener in time",
                    feed.unsent
                );
            }
            self.sinks.to_peer_ctl = None;
            let tx = feed.sender().clone();
            drop(feed);
            let _ = tx.send(Message::Record(record::Record::Summary(s))).await;
            let _ = tx.send(Message::Control(Control::Bye)).await;
            drop(tx);
            // Let the writer flush, within bounds.
            if let Some(w) = self.sinks.writer.take()
                && tokio::time::timeout(Duration::from_secs(5), w)
                    .await
                    .is_err()
            {
                eprintln!("flannel-trace: the listener did not take our last events within 5 s");
                self.sinks.join_missing =
                    Some("the listener did not take our last events within 5 s".into());
            }
        }
        if self.sinks.joiner.is_some() {
            if peer_open {
                // Give the peer a moment to deliver its last events and summary.
                let until = tokio::time::Instant::now() + Duration::from_secs(3);
                while let Ok(Some(msg)) = tokio::time::timeout_at(until, remote_rx.recv()).await {
                    match msg {
                        Ok(Some(Message::Control(Control::Bye))) | Ok(None) | Err(_) => break,
                        Ok(Some(m)) => self.remote(m),
                    }
                }
            }
            let j = self.sinks.joiner.as_mut().expect("checked");
            j.local_gaps.extend(summary.gaps());
            match j.report(summary.lost, Some(summary.end_wall_ns), true) {
                Some(report) if self.sinks.json => self.json(&record::Record::Verdict(report))?,
                Some(report) => self.line(&render::verdict::text(&report))?,
                None => {
                    self.sinks
                        .join_missing
                        .get_or_insert_with(|| "no peer joined before the end".into());
                }
            }
        }
        self.sinks.out.flush().context("writing to stdout")?;
        match (self.sinks.join_missing.take(), &self.sinks.record_path) {
            (None, _) => Ok(()),
            (Some(why), Some(path)) => Err(Fatal::new(
                Status::NoJoin,
                anyhow!(
                    "the live join did not happen ({why}); this node's session is recorded in {p}. \
                     When the other node has stopped, join the two recordings with:\n  \
                     flannel-trace join {p} <the other node's recording>",
                    p = path.display()
                ),
            )),
            (Some(why), None) => Err(Fatal::new(
                Status::NoJoin,
                anyhow!("the live join did not happen ({why})"),
            )),
        }
    }
}

/// Counts one more under `key`, allocating the key only when it is new.
pub fn bump(map: &mut std::collections::BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

fn counters(probes: &mut Probes) -> anyhow::Result<HashMap<Counter, u64>> {
    let map = probes
        .ebpf_mut()
        .map("COUNTERS")
        .ok_or_else(|| anyhow!("map COUNTERS missing"))?;
    let arr = PerCpuArray::<_, u64>::try_from(map)?;
    let mut out = HashMap::new();
    for c in [Counter::RingbufFull, Counter::Unparsed, Counter::ProbeRead] {
        let per_cpu = arr.get(&(c as u32), 0)?;
        out.insert(c, per_cpu.iter().sum());
    }
    Ok(out)
}
