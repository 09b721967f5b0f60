//! What the user may ask of the datapath, as the loader sees it: plain
//! values, so that the loader does not depend on the command line (the
//! CLI's clap enums are mapped to these in `args.rs`).

/// How the TC hooks attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcMode {
    /// TCX links where the kernel has them (6.6+), netlink clsact otherwise.
    Auto,
    Tcx,
    Netlink,
}

/// The vxlan-rcv hop's backend; `Auto` tries them in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VxlanBackendChoice {
    Auto,
    Fentry,
    Kprobe,
    TpBtf,
    Tracepoint,
}

/// The drop hop's backend; `Auto` tries them in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropBackendChoice {
    Auto,
    TpBtf,
    Tracepoint,
}
