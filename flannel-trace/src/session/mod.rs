//! A trace run: resolve the node's devices, attach, stream events (or count
//! them), summarise, detach.
//!
//! - `node.rs`: the node's devices and pod side, as the options name them
//! - `attach.rs`: the programs configured and loaded
//! - `identity.rs`: this node as the banner, recording and peer see it
//! - `event_loop.rs`: what the session waits on; `events.rs` what becomes
//!   of each record; `sinks.rs` stdout and the recording
//! - `peer_link.rs` (the live join's state machine), `joined.rs`,
//!   `writer.rs` (the task writing to the listener), `end.rs`
//! - `waits.rs`: the end and the handshake, which `--stats` waits on too

mod attach;
mod end;
mod event_loop;
mod events;
mod identity;
mod joined;
mod node;
mod peer_link;
mod sinks;
mod waits;
mod writer;

use anyhow::Context as _;

pub use attach::AttachError;
pub(crate) use event_loop::{DRAIN_EVERY, open_ring};
pub use events::count;
pub use node::NodeError;
pub(crate) use waits::{Stop, handshake};

use crate::{
    exit::{Fatal, OrFatal as _, Status},
    kernel::{self, clock::Clock},
    options::TraceOptions,
    schema::event::Decoder,
};

/// The whole trace run, from options to exit status.
pub fn run(opts: TraceOptions) -> Result<(), Fatal> {
    kernel::check_privileges(opts.probe.is_some()).fatal(Status::Privilege)?;
    let node = node::resolve(&opts.node, &opts.ports)?;
    let attach::Attached {
        mut probes,
        cfg,
        ports,
        reasons,
        missing,
        kallsyms,
    } = attach::attach(&opts, &node)?;
    // Said once, before anything else is printed: the verdict accounts
    // for these hops too.
    for m in &missing {
        eprintln!("{}", m.banner(&node.underlay.name, &node.vxlan.name));
    }
    let clock = Clock::sample();
    let identity = identity::identity(&node, &cfg, &probes, missing, &opts, clock);
    let kallsyms = attach::kallsyms_or_none(kallsyms);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let result = if opts.stats() {
        rt.block_on(crate::counters::run(
            &opts,
            identity,
            reasons,
            &mut probes,
            &cfg,
            ports,
        ))
    } else {
        let decoder = Decoder::new(clock, reasons, kallsyms);
        rt.block_on(event_loop::run(
            &opts,
            identity,
            decoder,
            &mut probes,
            &cfg,
            ports,
        ))
    };
    drop(probes);
    result
}
