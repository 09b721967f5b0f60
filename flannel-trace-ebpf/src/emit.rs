//! Maps, counters and the submission of events to userspace.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, PerCpuArray, PerCpuHashMap, RingBuf},
};
use flannel_trace_common::{
    Config, Counter, EventKind, Hop, PacketInfo, Ports, RawEvent,
    config::COUNTER_SLOTS,
    dropped::{RAW_DROP_KIND, RawDrop},
    stats::{STAT_KEYS, StatKey, StatValue},
};

use crate::skb::Skb;

/// Default 4 MiB; userspace resizes it (`--ring-size`) before loading.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// The overlay's UDP ports; userspace writes slot 0 before attaching and
/// may add a peer's port later.
#[map]
static PORTS: Array<Ports> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn ports() -> Option<&'static Ports> {
    PORTS.get(0)
}

/// Kernel addresses the global hooks learn, so that a foreign packet
/// costs one read fewer: the traced namespace's `struct net` (it lives as
/// long as the tracer, which runs inside it) and the vxlan device's
/// `struct net_device` (checked again by ifindex and namespace when it
/// matches, in case the device was freed and its memory reused).
#[map]
static LEARNT: Array<u64> = Array::with_max_entries(2, 0);

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Learnt {
    Netns = 0,
    VxlanDev = 1,
}

/// A learnt address, 0 while unknown.
#[inline(always)]
pub fn learnt(what: Learnt) -> u64 {
    LEARNT.get(what as u32).copied().unwrap_or(0)
}

#[inline(always)]
pub fn learn(what: Learnt, addr: u64) {
    if let Some(p) = LEARNT.get_ptr_mut(what as u32) {
        // SAFETY: a map slot; racing writers store the same value.
        unsafe { *p = addr };
    }
}

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Per-CPU scratch space for the parsed packet, which would not fit on the
/// 512-byte BPF stack next to the parser. One slot per hook family, so that a
/// tracepoint interrupted by a TC program in softirq on the same CPU
/// does not see its packet overwritten; a hook does not nest within itself
/// (the kernel skips recursive runs of a program and counts them as misses).
/// The drop hook parses nothing and needs none.
#[map]
static SCRATCH: PerCpuArray<PacketInfo> = PerCpuArray::with_max_entries(2, 0);

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Slot {
    Tc = 0,
    VxlanRcv = 1,
}

/// This CPU's zeroed scratch packet for `slot`.
#[inline(always)]
pub fn scratch(slot: Slot) -> Option<&'static mut PacketInfo> {
    let p = SCRATCH.get_ptr_mut(slot as u32)?;
    // SAFETY: per-CPU, one user per slot at a time (see SCRATCH).
    // Zero it word by word: a plain assignment becomes a call to a
    // byte-at-a-time memset that costs the verifier 120 loop iterations.
    const WORDS: usize = core::mem::size_of::<PacketInfo>() / 8;
    for i in 0..WORDS {
        // SAFETY: `i < WORDS` keeps the write inside the map value.
        unsafe { core::ptr::write_volatile(p.cast::<u64>().add(i), 0) };
    }
    // SAFETY: as above, this CPU's slot has no other user right now.
    Some(unsafe { &mut *p })
}

/// Count one occurrence on this CPU; returns the new per-CPU total.
#[inline(always)]
pub fn count(c: Counter) -> u64 {
    match COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU slot of the map, valid while the program runs;
        // a lost increment under nesting only undercounts by one.
        Some(slot) => unsafe {
            *slot += 1;
            *slot
        },
        None => 0,
    }
}

/// Fields of a packet event besides the parsed packet.
pub struct Meta {
    pub hop: Hop,
    pub ifindex: u32,
    pub skb_len: u32,
}

/// Reserve a record in the ring buffer, fill it and submit it. The packet is
/// parsed on the stack first, so nothing is reserved for foreign traffic; a
/// full ring buffer is counted, never silent.
#[inline(always)]
pub fn submit(cfg: &Config, meta: &Meta, pkt: &PacketInfo) {
    let Some(mut entry) = EVENTS.reserve::<RawEvent>(0) else {
        count(Counter::RingbufFull);
        return;
    };
    entry.write(RawEvent {
        // SAFETY: a helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        drop_location: 0,
        kind: EventKind::Packet as u8,
        hop: meta.hop as u8,
        _pad0: [0; 2],
        ifindex: meta.ifindex,
        skb_len: meta.skb_len,
        drop_reason: 0,
        pkt: *pkt,
    });
    entry.submit(wakeup(cfg, core::mem::size_of::<RawEvent>()));
}

/// Wake the reader once, as the waiting data crosses the threshold (a
/// window of a few records, as CPUs submit side by side); below it, and
/// while a woken reader is still catching up, it finds the records on its
/// next timer tick.
#[inline(always)]
fn wakeup(cfg: &Config, record: usize) -> u64 {
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let threshold = cfg.wakeup_bytes as u64;
    let window = 4 * (record as u64 + 8);
    let flags = if waiting >= threshold && waiting < threshold + window {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    flags as u64
}

/// A dropped skb's first bytes from its network header, for userspace to
/// parse: written field by field into the reserved record (a whole
/// `RawDrop` would not fit on the stack), the bytes with one bounded read.
#[inline(always)]
pub fn submit_drop(
    cfg: &Config,
    skb: &Skb,
    net: usize,
    ifindex: u32,
    on_vxlan: bool,
    location: u64,
    reason: u32,
) {
    let Some(mut entry) = EVENTS.reserve::<RawDrop>(0) else {
        count(Counter::RingbufFull);
        return;
    };
    let r = entry.as_mut_ptr();
    // SAFETY: `r` points to the reserved record, exclusively ours until
    // submitted or discarded.
    let Some(n) = skb.bytes.copy_from(net, unsafe { &mut (*r).bytes }) else {
        entry.discard(0);
        return;
    };
    // SAFETY: as above; the helper takes no arguments.
    unsafe {
        (*r).ts_ns = bpf_ktime_get_ns();
        (*r).drop_location = location;
        (*r).kind = RAW_DROP_KIND;
        (*r).on_vxlan = on_vxlan as u8;
        (*r)._pad0 = [0; 2];
        (*r).ifindex = ifindex;
        (*r).skb_len = skb.len;
        (*r).drop_reason = reason;
        (*r).protocol = skb.protocol;
        (*r).captured = n as u16;
        (*r)._pad1 = 0;
    }
    entry.submit(wakeup(cfg, core::mem::size_of::<RawDrop>()));
}

/// Counters mode: packets and bytes per (remote, hop, device[, reason]).
#[map]
static STATS: PerCpuHashMap<StatKey, StatValue> = PerCpuHashMap::with_max_entries(STAT_KEYS, 0);

/// Count one packet of `len` bytes under `key` on this CPU.
#[inline(always)]
pub fn bump(key: &StatKey, len: u32) {
    if let Some(v) = STATS.get_ptr_mut(key) {
        // SAFETY: this CPU's own slot of the value; a lost increment under
        // nesting only undercounts by one.
        unsafe {
            (*v).packets += 1;
            (*v).bytes += len as u64;
        }
        return;
    }
    let first = StatValue {
        packets: 1,
        bytes: len as u64,
    };
    // From a program, an update writes this CPU's slot only (others start
    // at zero), so racing with another CPU's first packet loses nothing.
    if STATS.insert(key, &first, 0).is_err() {
        count(Counter::StatsFull);
    }
}
