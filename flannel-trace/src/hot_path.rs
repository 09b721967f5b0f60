//! The per-event path as the session runs it — ring-buffer record to
//! `Event`, the summary's counting, the text and JSON lines — for the
//! decode micro-benchmark (`benches/decode.rs`), which as a crate of its
//! own reaches the library only through what it exports.

pub use crate::{
    kernel::clock::Clock,
    kernel::kallsyms::Kallsyms,
    render::text::{EventRecord, write_event_text},
    schema::event::{Decoder, Event},
    session::count,
};
