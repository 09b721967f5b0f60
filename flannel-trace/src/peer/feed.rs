//! The `--peer` side of the live stream: events go to the writer task
//! through a bounded queue; when the link cannot keep up, the stream is
//! thinned consistently (see `thin`) rather than cut arbitrarily.
//!
//! What the link takes is measured between drains of the ring buffer
//! (the writer shares the thread): the queue may hold about two seconds
//! of it and the overflow behind it about one more, so the live view
//! lags by seconds, not by a queue of minutes, and the end of a session
//! flushes in time. A drain of the ring buffer goes into the overflow as
//! a whole (the writer gets no turn meanwhile); after it, if the overflow
//! holds more than its size and did not shrink since the last drain (the
//! link is not catching up), the mask escalates one step: the overflow is
//! filtered by the new mask (nothing in it was queued yet, so its
//! earliest event is where the switch is dated). Should a drain
//! exceed even the overflow's hard bound, the event at hand escalates
//! the same way and is retried. Only when the mask is at its maximum and
//! still nothing fits is an event left out (`unsent`), which makes the
//! verdict uncertain as before.

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
    peer::Message,
    peer::thin::{self, MAX_MASK, ThinStep},
    schema::event::Event,
    schema::record::Record,
};

/// Bounds of what the queue (within its own capacity) and the overflow
/// hold: (smallest, largest), and how many seconds of the link's rate.
const QUEUE: (usize, usize, f64) = (8_192, 65_536, 2.0);
const OVERFLOW: (usize, usize, f64) = (4_096, 16_384, 1.0);
/// What the overflow may hold within one drain of the ring buffer.
const OVERFLOW_HARD: usize = 262_144;
/// How often what the link takes is measured.
const MEASURE_EVERY: Duration = Duration::from_millis(500);
/// A backlog of at least this many events means the link was busy.
const BUSY: u64 = 4 * crate::schema::codec::MAX_BATCH as u64;

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
    /// Whether the sizes follow the link's rate (not in tests).
    adaptive: bool,
    measured_at: Instant,
    taken_then: u64,
    busy_then: bool,
    queue_cap: u64,
    /// The overflow's length after the last drain.
    overflow_then: usize,
    /// The mask in force; starts at the kernel's `--sample` mask, which the
    /// events have passed already.
    mask: u32,
    /// That starting mask: until the first escalation nothing is left out
    /// (the kernel's sampling already chose, and events without an inner
    /// packet, e.g. undecodable frames, must still reach the listener).
    base_mask: u32,
    overflow: VecDeque<Event>,
    /// The overflow's size between drains, and within one.
    cap: usize,
    hard: usize,
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
        let mut f = Feed::with_overflow(tx, base_mask, clock_offset_ns, OVERFLOW.1);
        f.taken = taken;
        f.adaptive = true;
        f.hard = OVERFLOW_HARD;
        f
    }

    /// An overflow of a fixed size, the queue as deep as its channel
    /// (tests).
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
            adaptive: false,
            measured_at: Instant::now(),
            taken_then: 0,
            busy_then: false,
            queue_cap: u64::MAX,
            overflow_then: 0,
            mask: base_mask,
            base_mask,
            overflow: VecDeque::new(),
            cap,
            hard: cap,
            clock_offset_ns,
            offered: 0,
            since: Instant::now(),
            steps: Vec::new(),
            unsent: 0,
            thinned: 0,
        }
    }

    /// Events queued and not yet written.
    fn backlog(&self) -> u64 {
        self.queued
            .saturating_sub(self.taken.load(Ordering::Relaxed))
    }

    /// Into the queue, if it takes it; the event back if not.
    fn try_queue(&mut self, ev: Event) -> Result<Option<Event>, Closed> {
        if self.backlog() >= self.queue_cap {
            return Ok(Some(ev));
        }
        match self.tx.try_send(Message::Record(Record::Event(ev))) {
            Ok(()) => {
                self.queued += 1;
                Ok(None)
            }
            Err(TrySendError::Full(Message::Record(Record::Event(ev)))) => Ok(Some(ev)),
            Err(TrySendError::Full(_)) => Ok(None),
            Err(TrySendError::Closed(_)) => Err(Closed),
        }
    }

    /// Moves what the queue takes now from the overflow into it.
    fn flush(&mut self) -> Result<(), Closed> {
        while let Some(ev) = self.overflow.pop_front() {
            if let Some(ev) = self.try_queue(ev)? {
                self.overflow.push_front(ev);
                break;
            }
        }
        Ok(())
    }

    /// Between drains of the ring buffer: sizes the queue and the overflow
    /// by what the link took while it was busy (back to the largest sizes
    /// when it keeps up), then thins one step if the overflow is over its
    /// size and not shrinking: one step a drain lets the link show what a
    /// mask is worth before the next.
    pub fn tick(&mut self) -> Option<Escalation> {
        self.measure();
        let len = self.overflow.len();
        let step = (len > self.cap && len >= self.overflow_then && self.mask < MAX_MASK)
            .then(|| self.escalate(None));
        self.overflow_then = self.overflow.len();
        step
    }

    fn measure(&mut self) {
        let dt = self.measured_at.elapsed();
        if !self.adaptive || dt < MEASURE_EVERY {
            return;
        }
        let taken = self.taken.load(Ordering::Relaxed);
        let busy = self.backlog() + self.overflow.len() as u64 >= BUSY;
        let size =
            |(lo, hi, secs): (usize, usize, f64), rate: f64| ((rate * secs) as usize).clamp(lo, hi);
        if busy && self.busy_then {
            let rate = taken.saturating_sub(self.taken_then) as f64 / dt.as_secs_f64();
            self.queue_cap = size(QUEUE, rate) as u64;
            self.cap = size(OVERFLOW, rate);
        } else if !busy {
            (self.queue_cap, self.cap) = (QUEUE.1 as u64, OVERFLOW.1);
        }
        (self.measured_at, self.taken_then, self.busy_then) = (Instant::now(), taken, busy);
    }

    /// Offers one event to the stream; returns the escalations it caused.
    pub fn offer(&mut self, ev: Event) -> Result<Vec<Escalation>, Closed> {
        self.offered += 1;
        self.flush()?;
        let mut out = Vec::new();
        if !self.passes(&ev) {
            self.thinned += 1;
            return Ok(out);
        }
        let ev = if self.overflow.is_empty() {
            match self.try_queue(ev)? {
                None => return Ok(out),
                Some(ev) => ev,
            }
        } else {
            ev
        };
        loop {
            if self.overflow.len() < self.hard {
                self.overflow.push_back(ev);
                return Ok(out);
            }
            if self.mask >= MAX_MASK {
                self.unsent += 1;
                return Ok(out);
            }
            out.push(self.escalate(Some(ev.ts_mono_ns)));
            if !self.passes(&ev) {
                self.thinned += 1;
                return Ok(out);
            }
        }
    }

    /// Whether the stream, as thin as it is now, carries `ev`.
    fn passes(&self, ev: &Event) -> bool {
        self.mask == self.base_mask || thin::keeps(ev, self.mask)
    }

    /// Twice as thin: dated by the earliest event not yet queued, which is
    /// the earliest the new mask filters (everything later comes later).
    fn escalate(&mut self, at_hand: Option<u64>) -> Escalation {
        let from_mono = self
            .overflow
            .iter()
            .map(|e| e.ts_mono_ns)
            .chain(at_hand)
            .min()
            .unwrap_or(0);
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
            match tokio::time::timeout_at(until, self.tx.send(Message::Record(Record::Event(ev))))
                .await
            {
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
mod tests;
