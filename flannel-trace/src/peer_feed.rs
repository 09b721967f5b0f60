//! The `--peer` side of the live stream: events go to the writer task
//! through a bounded queue; when the link cannot keep up, the stream is
//! thinned consistently (see `thin`) rather than cut arbitrarily.
//!
//! An overflow behind the queue takes what does not fit at once, up to
//! about a second of what the link was seen to carry while it was busy
//! (so the live view lags by a second or two, not by a queue of minutes,
//! and the end of the session flushes within bounds). When it is full
//! too, the mask escalates: the overflow and the event at hand
//! are filtered by the new mask (they were not queued yet, so their time
//! is where the switch is dated), and the event is retried. Only when the
//! mask is at its maximum and still nothing fits is an event left out
//! (`unsent`), which makes the verdict uncertain as before.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::{
    event::Event,
    thin::{self, MAX_MASK, ThinStep},
    wire::Message,
};

/// Events held behind a full queue before the stream is thinned: about
/// [`MAX_LAG`] of what the link carries, within these bounds.
const OVERFLOW_MIN: usize = 2_048;
const OVERFLOW_MAX: usize = 65_536;
const MAX_LAG: f64 = 1.0;
/// How often the link's throughput is measured.
const MEASURE_EVERY: Duration = Duration::from_millis(200);
/// A backlog of at least this many events means the link was busy.
const BUSY: u64 = crate::codec::MAX_BATCH as u64;

/// The listener went away.
#[derive(Debug)]
pub struct Closed;

/// One escalation, to announce.
#[derive(Debug, Clone, Copy)]
pub struct Escalation {
    pub step: ThinStep,
    /// Events a second this node offered the stream since the previous
    /// escalation (or the start).
    pub rate: f64,
}

pub struct Feed {
    tx: mpsc::Sender<Message>,
    /// Events the writer has sent (it counts them).
    taken: Arc<AtomicU64>,
    /// Events put into the queue.
    queued: u64,
    /// Bounds of the overflow's size; equal for a fixed size.
    bounds: (usize, usize),
    measured_at: Instant,
    taken_then: u64,
    busy_then: bool,
    /// The mask in force; starts at the kernel's `--sample` mask, which the
    /// events have passed already.
    mask: u32,
    overflow: VecDeque<Event>,
    cap: usize,
    /// Events' monotonic time → this node's wall clock.
    clock_offset_ns: i64,
    offered: u64,
    since: Instant,
    pub steps: Vec<ThinStep>,
    /// Events left out although they passed the mask (maximum reached).
    pub unsent: u64,
    /// Events left out by the mask: not missing, by design.
    pub thinned: u64,
}

impl Feed {
    /// `taken` is the writer's count of events sent.
    pub fn new(
        tx: mpsc::Sender<Message>,
        taken: Arc<AtomicU64>,
        base_mask: u32,
        clock_offset_ns: i64,
    ) -> Feed {
        let mut f = Feed::with_overflow(tx, base_mask, clock_offset_ns, OVERFLOW_MAX);
        f.taken = taken;
        f.bounds = (OVERFLOW_MIN, OVERFLOW_MAX);
        f
    }

    /// An overflow of a fixed size (tests).
    pub fn with_overflow(
        tx: mpsc::Sender<Message>,
        base_mask: u32,
        clock_offset_ns: i64,
        cap: usize,
    ) -> Feed {
        Feed {
            tx,
            taken: Arc::default(),
            queued: 0,
            bounds: (cap, cap),
            measured_at: Instant::now(),
            taken_then: 0,
            busy_then: false,
            mask: base_mask,
            overflow: VecDeque::new(),
            cap,
            clock_offset_ns,
            offered: 0,
            since: Instant::now(),
            steps: Vec::new(),
            unsent: 0,
            thinned: 0,
        }
    }

    /// Moves what the queue takes now from the overflow into it.
    fn flush(&mut self) -> Result<(), Closed> {
        while let Some(ev) = self.overflow.pop_front() {
            match self.tx.try_send(Message::Event(ev)) {
                Ok(()) => self.queued += 1,
                Err(TrySendError::Full(m)) => {
                    if let Message::Event(ev) = m {
                        self.overflow.push_front(ev);
                    }
                    return Ok(());
                }
                Err(TrySendError::Closed(_)) => return Err(Closed),
            }
        }
        Ok(())
    }

    /// Sizes the overflow to about [`MAX_LAG`] of the link's throughput,
    /// measured over an interval it was busy throughout.
    fn measure(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.measured_at);
        if self.bounds.0 == self.bounds.1 || dt < MEASURE_EVERY {
            return;
        }
        let taken = self.taken.load(Ordering::Relaxed);
        let busy = self.queued.saturating_sub(taken) + self.overflow.len() as u64 >= BUSY;
        if busy && self.busy_then {
            let rate = taken.saturating_sub(self.taken_then) as f64 / dt.as_secs_f64();
            self.cap = ((rate * MAX_LAG) as usize).clamp(self.bounds.0, self.bounds.1);
        }
        (self.measured_at, self.taken_then, self.busy_then) = (now, taken, busy);
    }

    /// Offers one event to the stream; returns the escalations it caused.
    pub fn offer(&mut self, ev: Event) -> Result<Vec<Escalation>, Closed> {
        self.offered += 1;
        if self.offered.is_multiple_of(256) {
            self.measure();
        }
        self.flush()?;
        if !thin::keeps(&ev, self.mask) {
            self.thinned += 1;
            return Ok(Vec::new());
        }
        let ev = if self.overflow.is_empty() {
            match self.tx.try_send(Message::Event(ev)) {
                Ok(()) => {
                    self.queued += 1;
                    return Ok(Vec::new());
                }
                Err(TrySendError::Full(Message::Event(ev))) => ev,
                Err(TrySendError::Full(_)) => return Ok(Vec::new()),
                Err(TrySendError::Closed(_)) => return Err(Closed),
            }
        } else {
            ev
        };
        let mut out = Vec::new();
        loop {
            if self.overflow.len() < self.cap {
                self.overflow.push_back(ev);
                return Ok(out);
            }
            if self.mask >= MAX_MASK {
                self.unsent += 1;
                return Ok(out);
            }
            out.push(self.escalate(&ev));
            if !thin::keeps(&ev, self.mask) {
                self.thinned += 1;
                return Ok(out);
            }
        }
    }

    /// Twice as thin: dated by the earliest event not yet queued, which is
    /// the earliest the new mask filters (everything later comes later).
    fn escalate(&mut self, ev: &Event) -> Escalation {
        let from_mono = self
            .overflow
            .iter()
            .map(|e| e.ts_mono_ns)
            .fold(ev.ts_mono_ns, u64::min);
        self.mask = thin::next_mask(self.mask).min(MAX_MASK);
        let mask = self.mask;
        let before = self.overflow.len();
        self.overflow.retain(|e| thin::keeps(e, mask));
        self.thinned += (before - self.overflow.len()) as u64;
        let step = ThinStep {
            from_wall_ns: from_mono as i64 + self.clock_offset_ns,
            mask,
        };
        self.steps.push(step);
        let secs = self.since.elapsed().as_secs_f64().max(1e-3);
        let rate = self.offered as f64 / secs;
        (self.offered, self.since) = (0, Instant::now());
        Escalation { step, rate }
    }

    /// Everything still held, into the queue, waiting as needed up to
    /// `deadline` (the end of the session); what is left then is unsent.
    pub async fn drain(&mut self, deadline: Duration) -> Result<(), Closed> {
        let until = tokio::time::Instant::now() + deadline;
        while let Some(ev) = self.overflow.pop_front() {
            match tokio::time::timeout_at(until, self.tx.send(Message::Event(ev))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Closed),
                Err(_) => {
                    self.unsent += 1 + self.overflow.len() as u64;
                    self.overflow.clear();
                }
            }
        }
        Ok(())
    }

    pub fn sender(&self) -> &mpsc::Sender<Message> {
        &self.tx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(id: u32, ts: u64) -> Event {
        serde_json::from_value(serde_json::json!({
            "time": "x", "ts_mono_ns": ts, "hop": "overlay-egress", "ifindex": 1, "len": 100,
            "inner": {"src": "10.244.1.5", "dst": "10.244.2.9", "proto": "udp",
                      "sport": 4000, "dport": 8080, "ip_id": id, "ip_len": 60},
        }))
        .unwrap()
    }

    /// A queue nobody reads: the feed must thin, consistently, and date
    /// each step no later than the first event it filtered.
    #[test]
    fn a_full_queue_escalates_the_mask_and_keeps_by_hash() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut feed = Feed::with_overflow(tx, 0, 1_000, 8);
        let mut offered = Vec::new();
        for i in 0..64u32 {
            let ev = udp(i, 100 + u64::from(i));
            offered.push(ev.clone());
            feed.offer(ev).unwrap();
        }
        assert!(!feed.steps.is_empty());
        let masks: Vec<u32> = feed.steps.iter().map(|s| s.mask).collect();
        assert!(
            masks.windows(2).all(|w| w[1] == thin::next_mask(w[0])),
            "{masks:?}"
        );
        let mut got = Vec::new();
        while let Ok(Message::Event(e)) = rx.try_recv() {
            got.push(e);
        }
        // Freed slots: the overflow moves up, then drains at the end.
        drain_into(&mut feed, &mut rx, &mut got);
        // Every event offered from a step's time on that passed its mask
        // was sent (nothing left out: the maximum was not reached).
        assert_eq!(feed.unsent, 0);
        for ev in &offered {
            let wall = ev.ts_mono_ns as i64 + 1_000;
            let m = feed
                .steps
                .iter()
                .filter(|s| s.from_wall_ns <= wall)
                .map(|s| s.mask)
                .max()
                .unwrap_or(0);
            let sent = got.iter().any(|g| g.ts_mono_ns == ev.ts_mono_ns);
            if thin::keeps(ev, m) {
                assert!(
                    sent,
                    "event {} passed mask {m} but was not sent",
                    ev.ts_mono_ns
                );
            }
        }
        assert_eq!(
            got.len() as u64 + feed.thinned,
            offered.len() as u64,
            "each event either sent or thinned"
        );
    }

    fn drain_into(feed: &mut Feed, rx: &mut mpsc::Receiver<Message>, got: &mut Vec<Event>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let drain = feed.drain(Duration::from_secs(5));
            let take = async {
                while got.len() < 64 {
                    match tokio::time::timeout(std::time::Duration::from_millis(50), rx.recv())
                        .await
                    {
                        Ok(Some(Message::Event(e))) => got.push(e),
                        _ => break,
                    }
                }
            };
            let (r, _) = tokio::join!(drain, take);
            r.unwrap();
        });
    }

    #[test]
    fn at_the_maximum_what_does_not_fit_is_unsent() {
        let (tx, _rx) = mpsc::channel(1);
        let mut feed = Feed::with_overflow(tx, MAX_MASK, 0, 1);
        let keep: Vec<Event> = (0..100_000u32)
            .map(|i| udp(i, u64::from(i)))
            .filter(|e| thin::keeps(e, MAX_MASK))
            .take(3)
            .collect();
        for ev in keep {
            assert!(feed.offer(ev).unwrap().is_empty());
        }
        assert_eq!(feed.unsent, 1);
        assert!(feed.steps.is_empty());
    }
}
