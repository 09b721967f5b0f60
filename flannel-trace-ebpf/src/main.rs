//! flannel-trace's eBPF programs: the entry points and their logic live in
//! `hooks/`, one file per hook family; `emit` holds the maps and the ring
//! buffer, `skb` the reads of a kernel `struct sk_buff`.
//!
//! Every entry point is a thin wrapper around a `try_*` function; whatever
//! happens inside, TC programs hand the packet on unchanged (a tracer never
//! drops traffic) and probes return 0.
#![no_std]
#![no_main]
// The `#[classifier]` macro generates the extern entry taking the kernel's
// raw context pointer; that entry is what this lint flags.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod emit;
mod hooks;
mod skb;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
