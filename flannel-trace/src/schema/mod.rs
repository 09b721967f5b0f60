//! Everything flannel-trace writes or sends, as types: the events, the
//! node's identity, the session summary, the public records of `--json`
//! and recordings, their framing, the compact event encoding, and the
//! recording file.

pub mod codec;
pub mod event;
pub mod identity;
pub mod record;
pub mod recording;
pub mod replay;
pub mod summary;
pub mod values;
pub mod wire;
