//! What a person reads: the session's text lines (banner, events, summary)
//! and the verdict's text.

pub mod text;
pub mod verdict;
