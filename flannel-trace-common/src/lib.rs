//! Types shared by flannel-trace's eBPF programs and its userspace.
//!
//! Everything that crosses the kernel/user boundary is `#[repr(C)]` with
//! explicit padding and a compile-time size check, so that both sides agree
//! on the layout byte for byte. The packet parser lives here too: the same
//! code runs inside the eBPF programs and in the unit tests on crafted frames.
#![no_std]

pub mod config;
pub mod dropped;
pub mod event;
pub mod fingerprint;
pub mod parse;
pub mod programs;
pub mod stats;

pub use config::{Config, Counter, Ports};
pub use event::{EventKind, Hop, PacketInfo, RawEvent, Tuple};

#[cfg(test)]
mod tests;
