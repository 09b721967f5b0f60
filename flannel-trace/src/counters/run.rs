//! The counters-mode session: read the counters every interval, print
//! them, serve them, and with a peer join both nodes' counters into a
//! verdict per direction.

use std::{
    collections::HashMap,
    io::{self, Write as _},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use flannel_trace_common::{
    Config, Counter, Ports,
    dropped::Record,
    stats::{StatKey, StatValue},
};
use tokio::{net::TcpListener, signal::unix::SignalKind, sync::mpsc};

use super::{Reader, Snapshot, join, metrics, table};
use crate::{
    cli::TraceArgs,
    datapath::Probes,
    exit::{Fatal, OrFatal as _, Status},
    peer::{self, ChannelTx, Control, Message},
    schema::identity::NodeIdentity,
    schema::record,
};

/// The live peer, once joined.
struct Peer {
    local: NodeIdentity,
    remote: NodeIdentity,
    /// Listener: the peer's first and latest counters.
    remote_base: Option<Snapshot>,
    remote_now: Option<Snapshot>,
    /// Our counters when the peer joined.
    local_base: Snapshot,
    /// Peer side: where our counters go.
    tx: Option<ChannelTx>,
}

pub async fn run(
    args: &TraceArgs,
    identity: NodeIdentity,
    reasons: HashMap<u32, String>,
    probes: &mut Probes,
    cfg: &Config,
    ports: Ports,
) -> Result<(), Fatal> {
    let ebpf = probes.ebpf_mut();
    let stats_map = ebpf
        .take_map("STATS")
        .ok_or_else(|| anyhow!("map STATS missing from the eBPF object"))?;
    let stats: PerCpuHashMap<MapData, StatKey, StatValue> =
        PerCpuHashMap::try_from(stats_map).context("opening the STATS map")?;
    // Drops are not counted in the kernel: their records come through the
    // ring buffer, to be parsed and counted here.
    let mut ring = crate::session::open_ring(probes)?;
    let mut reader = Reader::new(reasons);
    let node = identity.node.clone();
    let mut out = io::BufWriter::new(io::stdout().lock());
    let (cfg, node_ref) = (*cfg, &node);
    let read = move |reader: &mut Reader, probes: &mut Probes, ring: &mut RingBuf<MapData>| {
        count_drops(ring, reader, &cfg, &ports);
        let uncounted = uncounted(probes).unwrap_or(0);
        reader.read(&stats, node_ref, uncounted)
    };
    let mut drain_tick = tokio::time::interval(crate::session::DRAIN_EVERY);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let metrics = Arc::new(Mutex::new(metrics::Metrics::new()));
    if let Some(addr) = args.metrics {
        let l = metrics::bind(addr)
            .await
            .with_context(|| format!("serving metrics on {addr}"))
            .fatal(Status::Failure)?;
        eprintln!("flannel-trace: Prometheus metrics on http://{addr}/metrics");
        tokio::spawn(metrics::serve(l, metrics.clone()));
    }

    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&record::Record::Start(identity.clone()))
                .context("encoding JSON")?
        )
        .context("writing to stdout")?;
    } else {
        eprint!("{}", crate::render::text::start_text(&identity));
    }
    // Also in --json mode: the line tells a script the hooks are attached.
    eprintln!(
        "flannel-trace: counting (counters mode), a report every {:?} (Ctrl-C to stop)",
        args.report_every
    );
    out.flush().context("writing to stdout")?;

    // The peer channel, set up in the background.
    let (peer_tx, mut peer_rx) = mpsc::channel::<Result<(NodeIdentity, peer::Channel), String>>(1);
    let token = args.token.clone().unwrap_or_default();
    if let Some(addr) = args.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))
            .fatal(Status::Failure)?;
        eprintln!("flannel-trace: waiting for a peer on {addr}");
        let id = identity.clone();
        tokio::spawn(async move {
            let r = peer::listen(listener, &token, &id, None)
                .await
                .map(|(h, c)| (h.remote, c))
                .map_err(|e| e.to_string());
            let _ = peer_tx.send(r).await;
        });
    } else if let Some(addr) = args.peer {
        let (id, wait) = (identity.clone(), args.peer_wait);
        tokio::spawn(async move {
            let r = peer::connect(addr, &token, &id, wait)
                .await
                .map(|(h, c)| (h.remote, c))
                .map_err(|e| e.to_string());
            let _ = peer_tx.send(r).await;
        });
    } else {
        drop(peer_tx);
    }
    let (remote_tx, mut remote_rx) = mpsc::channel::<Message>(64);

    let mut term = tokio::signal::unix::signal(SignalKind::terminate())
        .context("installing a SIGTERM handler")?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt())
        .context("installing a SIGINT handler")?;
    let deadline = tokio::time::sleep(
        args.duration
            .unwrap_or(Duration::from_secs(10 * 365 * 24 * 3600)),
    );
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(args.report_every);
    tick.tick().await;
    let start = read(&mut reader, probes, ring.get_mut());
    let mut last = start.clone();
    let mut last_at = Instant::now();
    let mut peer: Option<Peer> = None;
    let mut peer_pending = args.listen.is_some() || args.peer.is_some();
    let mut join_failed: Option<String> = None;
    let listening = args.listen.is_some();
    loop {
        tokio::select! {
            joined = peer_rx.recv(), if peer_pending => {
                peer_pending = false;
                match joined {
                    Some(Ok((remote, channel))) => {
                        eprintln!("flannel-trace: joined with {} ({})", remote.node, channel.peer_addr());
                        let (tx, mut rx) = channel.split();
                        let fwd = remote_tx.clone();
                        tokio::spawn(async move {
                            while let Ok(Some(m)) = rx.recv().await {
                                if fwd.send(m).await.is_err() {
                                    break;
                                }
                            }
                        });
                        let local_base = read(&mut reader, probes, ring.get_mut());
                        let mut p = Peer { local: identity.clone(), remote, remote_base: None, remote_now: None, local_base, tx: (!listening).then_some(tx) };
                        if let Some(tx) = p.tx.as_mut() {
                            let _ = tx.send(&Message::Record(record::Record::Stats(p.local_base.clone()))).await;
                        }
                        peer = Some(p);
                    }
                    Some(Err(e)) => {
                        // Counters are not recorded: what this node counted
                        // is printed below, and the status says the join failed.
                        eprintln!("flannel-trace: live join failed: {e}; counting locally only");
                        join_failed = Some(e);
                    }
                    None => {}
                }
            }
            m = remote_rx.recv() => {
                match (m, peer.as_mut()) {
                    (Some(Message::Record(record::Record::Stats(s))), Some(p)) => {
                        if p.remote_base.is_none() {
                            p.remote_base = Some(s.clone());
                        }
                        p.remote_now = Some(s);
                    }
                    (Some(Message::Record(record::Record::Event(_))), Some(p)) => {
                        return Err(Fatal::new(Status::Usage, anyhow!(
                            "{} streams per-packet events: run both nodes with --stats, or neither", p.remote.node
                        )));
                    }
                    (Some(Message::Control(Control::Bye)), _) if listening => break,
                    _ => {}
                }
            }
            _ = tick.tick() => {
                let now = read(&mut reader, probes, ring.get_mut());
                let secs = last_at.elapsed().as_secs_f64();
                report(&mut out, args.json, &now.since(&last), &now.since(&start), secs, peer.as_ref(), &now)?;
                metrics.lock().unwrap_or_else(|p| p.into_inner()).update(&now);
                if let Some(tx) = peer.as_mut().and_then(|p| p.tx.as_mut())
                    && let Err(e) = tx.send(&Message::Record(record::Record::Stats(now.clone()))).await
                {
                    eprintln!("flannel-trace: sending counters to the listener failed: {e}");
                    if let Some(p) = peer.as_mut() { p.tx = None; }
                }
                last = now;
                last_at = Instant::now();
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for drop records")?;
                guard.clear_ready();
                count_drops(guard.get_inner_mut(), &mut reader, &cfg, &ports);
            }
            _ = drain_tick.tick() => count_drops(ring.get_mut(), &mut reader, &cfg, &ports),
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = &mut deadline => break,
        }
    }
    let now = read(&mut reader, probes, ring.get_mut());
    if let Some(tx) = peer.as_mut().and_then(|p| p.tx.as_mut()) {
        let _ = tx
            .send(&Message::Record(record::Record::Stats(now.clone())))
            .await;
        let _ = tx.send(&Message::Control(Control::Bye)).await;
    }
    if listening && let Some(p) = peer.as_mut() {
        // The peer's last counters, if it is still sending.
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Some(m)) = tokio::time::timeout_at(until, remote_rx.recv()).await {
            match m {
                Message::Record(record::Record::Stats(s)) => p.remote_now = Some(s),
                Message::Control(Control::Bye) => break,
                _ => {}
            }
        }
    }
    let secs = last_at.elapsed().as_secs_f64();
    if !args.json {
        eprintln!("flannel-trace: final counters");
    }
    report(
        &mut out,
        args.json,
        &now.since(&last),
        &now.since(&start),
        secs,
        peer.as_ref(),
        &now,
    )?;
    if let Some(e) = join_failed {
        return Err(Fatal::new(
            Status::NoJoin,
            anyhow!("the live join did not happen ({e}); the counters above are this node's alone"),
        ));
    }
    if (listening || args.peer.is_some()) && peer.is_none() {
        return Err(Fatal::new(
            Status::NoJoin,
            anyhow!("no peer joined before the end: the counters above are this node's alone"),
        ));
    }
    Ok(())
}

/// Print one interval: the table (or a JSON line) and, with a peer, the
/// joined verdict since the join.
fn report(
    out: &mut impl io::Write,
    json: bool,
    delta: &Snapshot,
    total: &Snapshot,
    secs: f64,
    peer: Option<&Peer>,
    now: &Snapshot,
) -> Result<(), Fatal> {
    let verdicts = peer.and_then(|p| {
        let (rb, rn) = (p.remote_base.as_ref()?, p.remote_now.as_ref()?);
        let local = now.since(&p.local_base);
        let remote = rn.since(rb);
        Some(vec![
            join::direction(&p.local, &local, &p.remote, &remote),
            join::direction(&p.remote, &remote, &p.local, &local),
        ])
    });
    if json {
        let line = serde_json::to_string(&record::Record::Stats(total.clone()))
            .context("encoding JSON")?;
        writeln!(out, "{line}").context("writing to stdout")?;
        if let Some(v) = verdicts {
            let line = serde_json::to_string(&record::Record::StatsVerdict { directions: v })
                .context("encoding JSON")?;
            writeln!(out, "{line}").context("writing to stdout")?;
        }
    } else {
        write!(out, "{}", table::text(delta, total, secs)).context("writing to stdout")?;
        for v in verdicts.into_iter().flatten() {
            writeln!(out, "{}", v.verdict).context("writing to stdout")?;
            if let Some(f) = &v.fix {
                writeln!(out, "  fix: {f}").context("writing to stdout")?;
            }
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}

/// Parse the drop records waiting in the ring buffer and count those of
/// the overlay, by the rules the programs were configured with.
fn count_drops(ring: &mut RingBuf<MapData>, reader: &mut Reader, cfg: &Config, ports: &Ports) {
    while let Some(item) = ring.next() {
        match Record::from_bytes(&item) {
            Ok(Record::Drop(d)) => {
                if let Some(raw) = d.parse(cfg, ports) {
                    reader.count_drop(&raw);
                }
            }
            // Counters mode sends nothing else.
            Ok(Record::Event(_)) => {}
            Err(e) => log::debug!("undecodable record: {e}"),
        }
    }
}

/// Packets not counted: the counter map was full, or (drops) the ring
/// buffer that carries their records.
fn uncounted(probes: &mut Probes) -> anyhow::Result<u64> {
    let map = probes
        .ebpf_mut()
        .map("COUNTERS")
        .ok_or_else(|| anyhow!("map COUNTERS missing"))?;
    let arr = PerCpuArray::<_, u64>::try_from(map)?;
    let mut n = 0;
    for c in [Counter::StatsFull, Counter::RingbufFull] {
        n += arr.get(&(c as u32), 0)?.iter().sum::<u64>();
    }
    Ok(n)
}
