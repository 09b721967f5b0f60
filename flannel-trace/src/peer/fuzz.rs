//! Fuzz entry points of the peer layer (`fuzzing::peer` calls them).

use std::net::SocketAddr;

use bytes::BytesMut;

use super::PeerError;
use super::channel::{RECORD_MAX, open_record};
use super::handshake::{HANDSHAKE_MAX, answer, check_hello, finish_initiator, noise, psk};
use super::protocol::Message;
#[cfg(test)]
use super::protocol::hello;
use crate::schema::wire;

/// The hello bytes, for the fuzz corpus.
#[cfg(test)]
pub fn hello_for_fuzz() -> [u8; 8] {
    hello()
}

/// Fuzz entry: the handshake and record layer on untrusted bytes, never
/// a panic. The first byte picks what the rest is: a connecting node's
/// hello and first message (listener side), a listener's reply (peer
/// side), or the record stream after a real handshake.
pub fn fuzz(data: &[u8]) {
    let key = psk("fuzz");
    let addr = SocketAddr::from(([127, 0, 0, 1], 9));
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let initiator = || noise(&key).and_then(|b| b.build_initiator().map_err(PeerError::Noise));
    match mode % 3 {
        0 => {
            let (hello, msg1) = rest.split_at(rest.len().min(8));
            if check_hello(hello, addr).is_ok() {
                let _ = answer(&key, msg1, addr);
            }
        }
        1 => {
            let Ok(mut hs) = initiator() else { return };
            let mut buf = [0u8; HANDSHAKE_MAX];
            if hs.write_message(&[], &mut buf).is_err() {
                return;
            }
            if let Some((status, body)) = rest.split_first() {
                let _ = finish_initiator(hs, *status, body, addr);
            }
        }
        _ => {
            // A genuine transport state, so that the record layer runs as
            // it does after a real handshake (a fuzzed record never passes
            // the AEAD tag: this exercises the length handling).
            let Ok(mut init) = initiator() else { return };
            let mut m1 = [0u8; HANDSHAKE_MAX];
            let Ok(n) = init.write_message(&[], &mut m1) else {
                return;
            };
            let Ok((reply, _listener)) = answer(&key, &m1[..n], addr) else {
                return;
            };
            let Ok(cipher) = finish_initiator(init, reply[0], &reply[3..], addr) else {
                return;
            };
            let (mut raw, mut plain) = (BytesMut::from(rest), BytesMut::new());
            let (mut nonce, mut scratch) = (0u64, vec![0u8; RECORD_MAX]);
            let mut frames = wire::Decoder::<Message>::default();
            while let Ok(true) = open_record(
                &cipher,
                &mut nonce,
                &mut raw,
                &mut plain,
                &mut scratch,
                addr,
            ) {
                while let Ok(Some(_)) = frames.decode(&mut plain) {}
            }
        }
    }
}
