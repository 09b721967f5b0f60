//! The per-event path as the session runs it — ring-buffer record to
//! `Event`, the summary's counting, the text and JSON lines — for the
//! decode micro-benchmark (`benches/decode.rs`), which as a crate of its
//! own reaches the library only through what it exports.

pub use crate::{
    clock::Clock,
    event::{Decoder, Event},
    kernel::kallsyms::Kallsyms,
    output::{EventRecord, write_event_text},
    session::bump,
};
