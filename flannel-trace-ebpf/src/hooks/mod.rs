//! The programs, one file per hook family: `tc` (the six TC hops), `vxlan_rcv`
//! (the vxlan receive path: kprobe, fentry, tp_btf or tracepoint, whichever
//! the kernel allows) and `drop` (freed skbs). Each file holds its entry
//! points and their logic. Every hook decides "not ours" with the fewest
//! reads it can (device and namespace first, a few fixed-offset packet
//! bytes next) before it zeroes scratch space or parses. What they share
//! is here: the configuration, the keep rule, the event-or-count report
//! and reading the skb behind a probe.

pub mod drop;
pub mod tc;
pub mod vxlan_rcv;

use aya_ebpf::{EbpfContext, programs::BtfTracePointContext};
use aya_log_ebpf::error;
use flannel_trace_common::{
    Config, Counter, PacketInfo,
    config::MODE_STATS,
    parse::{ParseError, wanted},
    stats::packet_key,
};

use crate::{
    emit::{Learnt, Meta, bump, count, learn, learnt, submit},
    skb::{self, Skb, dev_of, ifindex_of},
};

/// Set by userspace before load. `static mut` (in `.data`) rather than a
/// `static`, so the compiler cannot fold the compile-time defaults into the
/// code: the values that count are the ones written at load time.
#[unsafe(no_mangle)]
static mut CONFIG: Config = Config::zeroed();

#[inline(always)]
// A direct `&CONFIG` on a `static mut` is refused in edition 2024; the raw
// pointer is the sanctioned route, which this lint mistakes for a detour.
#[allow(clippy::deref_addrof)]
pub fn config() -> &'static Config {
    // SAFETY: written only by the loader, before any program runs.
    unsafe { &*(&raw const CONFIG) }
}

/// Whether a parsed packet is reported. A frame of the overlay that could
/// not be decoded is counted (`unparsed`) where `count` says so: at the
/// hooks a frame passes once per node (underlay ingress or egress, and the
/// tunnel's entry), not again at every later hop.
#[inline(always)]
pub(crate) fn keep(
    cfg: &Config,
    r: Result<(), ParseError>,
    pkt: &PacketInfo,
    count_failure: bool,
) -> bool {
    match r {
        Ok(()) => wanted(cfg, pkt),
        Err(e) => {
            if count_failure && e.is_overlay_failure() {
                count(Counter::Unparsed);
            }
            false
        }
    }
}

/// An event, or in counters mode a count.
#[inline(always)]
pub(crate) fn report(cfg: &Config, meta: &Meta, pkt: &PacketInfo) {
    if cfg.mode != MODE_STATS {
        submit(cfg, meta, pkt);
        return;
    }
    let key = packet_key(
        pkt,
        meta.hop,
        meta.ifindex,
        cfg.peer_prefix_v4,
        cfg.peer_prefix_v6,
    );
    bump(&key, meta.skb_len);
}

/// Read the skb, reporting a failure: it means the offsets taken from BTF
/// do not match the kernel. Logged at the 1st, 2nd, 4th, 8th... failure on
/// a CPU, so a broken layout is visible without flooding the log.
#[inline(always)]
pub(crate) fn load_skb<C: EbpfContext>(ctx: &C, addr: u64, cfg: &Config) -> Option<Skb> {
    let skb = Skb::load(addr, &cfg.offsets);
    if skb.is_none() {
        let n = count(Counter::ProbeRead);
        if n.is_power_of_two() {
            // Not the address: in BTF-typed programs it is a pointer, which
            // the verifier refuses to format.
            error!(
                ctx,
                "cannot read a struct sk_buff ({} failures on this CPU): kernel layout differs from its BTF?",
                n
            );
        }
    }
    skb
}

/// Whether `dev` lives in the traced network namespace. Once the
/// namespace's `struct net` is known, one read (the device's) decides.
#[inline(always)]
pub(crate) fn in_traced_netns(cfg: &Config, dev: u64) -> Option<bool> {
    let net: u64 = skb::read(dev, cfg.offsets.dev_nd_net)?;
    let known = learnt(Learnt::Netns);
    if known != 0 {
        return Some(net == known);
    }
    let ours = skb::read::<u32>(net, cfg.offsets.net_ns_inum)? == cfg.netns_ino;
    if ours {
        learn(Learnt::Netns, net);
    }
    Some(ours)
}

/// The ifindex of the skb's device, if the device lives in the traced
/// network namespace.
#[inline(always)]
pub(crate) fn local_ifindex(cfg: &Config, addr: u64) -> Option<u32> {
    let dev = dev_of(addr, &cfg.offsets)?;
    if !in_traced_netns(cfg, dev)? {
        return None;
    }
    ifindex_of(dev, &cfg.offsets)
}

/// The `struct sk_buff *` first argument of a tp_btf program, as a plain
/// number. Loaded straight from the context the verifier types it as a
/// BTF pointer, and kernels before 6.x (5.10 measured) then refuse the
/// shifts of the byte-wise copy of `skb_addr` into the event ("pointer
/// arithmetic with >>= operator prohibited"). Read through the helper it
/// is a scalar; the programs only ever pass it to bpf_probe_read_kernel.
#[inline(always)]
pub(crate) fn skb_arg(ctx: &BtfTracePointContext) -> u64 {
    use aya_ebpf::{EbpfContext as _, helpers::bpf_probe_read_kernel};
    // SAFETY: a tp_btf context is the array of the tracepoint's u64 arguments.
    unsafe { bpf_probe_read_kernel(ctx.as_ptr() as *const u64) }.unwrap_or(0)
}
