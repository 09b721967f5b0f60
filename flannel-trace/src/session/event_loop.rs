//! The event loop of a trace session: what it waits on (the ring buffer,
//! the handshake, the peer, the eBPF log, ticks, signals, the deadline) and
//! which part of the session each wakes.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use aya::maps::{MapData, RingBuf};
use flannel_trace_common::{Config, Ports};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::{
    events::Session,
    joined::{Remote, start_probe},
    peer_link::PeerLink,
    sinks::Sinks,
    waits::{self, Stop},
};
use crate::{
    datapath::Probes, exit::Fatal, kernel::clock::Clock, options::TraceOptions, schema::codec,
    schema::event::Decoder, schema::identity::NodeIdentity, schema::summary::Summary,
    verdict::live::Joiner,
};

/// How often the ring buffer is drained when no wakeup came.
pub(crate) const DRAIN_EVERY: Duration = Duration::from_millis(50);

pub async fn run(
    opts: &TraceOptions,
    identity: NodeIdentity,
    decoder: Decoder,
    probes: &mut Probes,
    cfg: &Config,
    ports: Ports,
) -> Result<(), Fatal> {
    let listening = opts.listening();
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
        sinks: Sinks::open(opts, &identity)?,
        link: PeerLink::new(opts.role()),
        joiner: listening.then(|| Joiner::new(identity.clone(), opts.max_events)),
        join_missing: None,
        probe: opts.probe,
    };
    s.sinks.start(&identity)?;

    // The peer channel is set up in the background: the ring buffer must be
    // drained meanwhile.
    let mut news_rx = waits::handshake(opts.live.as_ref(), &identity, true).await?;
    if let Some(p) = opts.probe
        && let Some(to) = p.to
    {
        start_probe(to, p);
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
    let mut stop = Stop::new(opts.duration)?;
    let mut report_tick = tokio::time::interval(opts.report_every);
    // The programs wake us only once a batch is waiting (see
    // Config::wakeup_bytes); this tick collects what a quiet moment leaves.
    let mut drain_tick = tokio::time::interval(DRAIN_EVERY);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (remote_tx, mut remote_rx) = mpsc::channel::<Remote>(1024);
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
                s.sinks.flush()?;
            }
            news = &mut news_rx, if s.link.waiting() => {
                match news {
                    Ok(Ok(joined)) => {
                        let (h, channel) = *joined;
                        s.joined(h, channel, &remote_tx, probes).await?;
                    }
                    Ok(Err(e)) => {
                        let what = if listening { "no peer joined" } else { "could not join the listener" };
                        eprintln!("flannel-trace: {what}: {e}; tracing locally only");
                        s.join_missing = Some(format!("{what}: {e}"));
                        s.link.failed();
                    }
                    // The task ended without news: nothing more to wait for.
                    Err(_) => s.link.failed(),
                }
            }
            // Only a listener reads the peer: the loop ends with its stream.
            msg = remote_rx.recv(), if s.link.receiving() => {
                match msg {
                    Some(Ok(Some(m))) => s.remote(m),
                    Some(Ok(None)) | None => {
                        s.link.peer_closed();
                        if s.peer_finished() {
                            eprintln!("flannel-trace: the peer finished");
                        } else {
                            s.peer_gone("the peer closed the connection before the end");
                        }
                        break;
                    }
                    Some(Err(e)) => {
                        s.link.peer_closed();
                        s.peer_gone(&format!("the peer went away ({e})"));
                        break;
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
                s.sinks.flush()?;
            }
            _ = report_tick.tick(), if listening => s.interim_report(probes)?,
            _ = stop.wait() => break,
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
    s.finish(probes, &mut remote_rx).await
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
