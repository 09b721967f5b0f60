//! The live channel between two nodes: `--listen` on one, `--peer` on the
//! other. It runs over the underlay (TCP between the nodes' own addresses),
//! so it keeps working when the overlay under investigation is broken.
//!
//! ```text
//! connecting node (initiator)                       listener (responder)
//!   "FTPEER" + version (u16) + Noise msg 1  ──────▶   (-> e, psk)
//!                                           ◀──────   0 + Noise msg 2 (<- e, ee)
//!                                                     or 1 + reason (refused, in clear)
//!   ── everything below is encrypted and authenticated (ChaCha20-Poly1305) ──
//!                                           ◀──────   Start(identity)
//!   Start(identity)                         ──────▶
//!                                           ◀──────   ClockPing × CLOCK_ROUNDS
//!   ClockPong × CLOCK_ROUNDS                ──────▶
//!   events, summary, bye                    ──────▶
//! ```
//!
//! Why Noise (`Noise_NNpsk0_25519_ChaChaPoly_SHA256`, the `snow` crate)
//! rather than an HMAC per frame: one well-reviewed construction gives at
//! once what the channel needs — *both* sides prove the token (the key of
//! every message after the first depends on it, so a listener that does
//! not know it cannot answer, and a peer that does not know it cannot
//! produce a first message that decrypts), fresh ephemeral keys per session
//! (a recorded session cannot be replayed or decrypted later from the
//! traffic alone), and per-frame integrity with ordering (AEAD with a
//! counter nonce: a flipped, dropped, replayed or reordered frame fails
//! to decrypt and ends the session). An HMAC scheme would have needed a
//! key schedule, nonces and replay rules of our own, and still no
//! confidentiality for the packet metadata that crosses the underlay.
//!
//! The token is hashed into the 32-byte pre-shared key; it never crosses
//! the wire. What an eavesdropper on the underlay sees: the TCP endpoints,
//! the 8-byte hello (magic and protocol version), two ephemeral public
//! keys, the sizes and timing of the encrypted records, and a refusal
//! reason in clear when the listener turns a client away. It does not see
//! identities, events or verdicts. With a recording of one handshake it can
//! try to guess the token offline, so the token must be random (e.g.
//! `openssl rand -hex 16`), not a word.
//!
//! Admission (the listener): every accepted connection is handshaken in
//! its own task, at most `MAX_PENDING` at a time; when one more arrives,
//! the oldest unauthenticated one is dropped, so a flood of idle or garbage
//! connections can neither exhaust descriptors nor delay the real peer
//! (whose handshake takes one round trip) by more than its own handshake.
//! Each unauthenticated connection gets `HANDSHAKE_DEADLINE`. Refusals
//! are logged, at most `LOG_BURST` lines at once and then
//! `LOG_PER_SEC` a second, with a count of those not shown.
//!
//! Every frame is bounded before anything is allocated, and TCP keepalive
//! bounds how long a vanished peer goes unnoticed.
//!
//! Where things are: [`protocol`] (the messages and the version),
//! `handshake` (hello, Noise, the identity steps), `listen` (admission),
//! `connect`, `clock_sync` (the clock exchange), `channel` (the encrypted
//! records), `error`; [`feed`] and [`thin`] are the live event stream on
//! top of a channel.

mod channel;
mod clock_sync;
mod connect;
mod error;
pub mod feed;
mod fuzz;
mod handshake;
mod listen;
pub mod protocol;
pub mod thin;

#[cfg(test)]
mod tests;

pub use channel::{Channel, ChannelTx};
pub use connect::connect;
pub use error::PeerError;
pub use fuzz::fuzz;
#[cfg(test)]
pub use fuzz::hello_for_fuzz;
pub use handshake::Handshake;
pub use listen::listen;
pub use protocol::{Control, Message};
