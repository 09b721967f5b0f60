//! The listener's admission: refusals, floods, bounded waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BufMut as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use super::*;
use crate::peer::PeerError;
use crate::peer::listen::{LOG_BURST, RefusalLog};
use crate::peer::protocol::hello;

/// Connects, sends `bytes`, and reads what the listener says until it
/// hangs up: the status byte and the refusal reason.
async fn turned_away(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    // The listener may reset rather than close if our bytes are unread.
    let read = timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the listener did not hang up");
    assert!(got.len() >= 3, "no refusal: {got:?}");
    assert_eq!(got[0], 1, "a refusal");
    String::from_utf8_lossy(&got[3..]).into_owned()
}

#[tokio::test]
async fn garbage_oversized_and_silent_clients_are_dropped() {
    capture_logs();
    let (server, addr) = listener_a(30).await;

    let http = b"GET / HTTP/1.1\r\nHost: node-a\r\n\r\n";
    assert!(turned_away(addr, http).await.contains("bad hello"));

    let mut old = hello();
    old[7] = 1;
    let reason = turned_away(addr, &old).await;
    assert!(reason.contains("version 1"), "{reason}");

    // A handshake message longer than any real one: refused before
    // anything is allocated for it.
    let mut oversized = hello().to_vec();
    oversized.put_u16(u16::MAX);
    let reason = turned_away(addr, &oversized).await;
    assert!(reason.contains("more than a handshake"), "{reason}");

    // Right length, random bytes: does not decrypt under the token.
    let mut junk = hello().to_vec();
    junk.put_u16(48);
    junk.extend_from_slice(&[7u8; 48]);
    assert!(turned_away(addr, &junk).await.contains("bad token"));

    // Says nothing: dropped after HANDSHAKE_DEADLINE.
    let reason = turned_away(addr, b"").await;
    assert!(reason.contains("no handshake within"), "{reason}");

    let (hs, _ch) = connect(addr, TOKEN, &identity("b"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(hs.remote.node, "a");
    server.await.unwrap().unwrap();
    let refusals = warnings()
        .into_iter()
        .filter(|l| l.starts_with("refused peer "))
        .count();
    assert_eq!(refusals, 5);
}

/// Hundreds of idle and garbage connections, kept up while the real
/// peer connects: it gets in within a second, and the refusal log
/// stays short.
#[tokio::test]
async fn the_real_peer_gets_in_during_a_flood() {
    const IDLE: usize = 150;
    const GARBAGE: usize = 150;
    let (server, addr) = listener_a(30).await;
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut floods = Vec::new();
    for i in 0..GARBAGE {
        let stop = stop.clone();
        floods.push(tokio::spawn(async move {
            // Bounded: each flooder reconnects at most 200 times.
            for _ in 0..200 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let junk: Vec<u8> = if i % 2 == 0 {
                    let mut h = hello().to_vec();
                    h.put_u16(48);
                    h.extend_from_slice(&[i as u8; 48]);
                    h
                } else {
                    b"\x16\x03\x01\x02\x00garbage".to_vec()
                };
                let _ = s.write_all(&junk).await;
                let mut sink = [0u8; 256];
                let _ = timeout(Duration::from_millis(500), s.read(&mut sink)).await;
            }
        }));
    }
    sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (hs, _ch) = connect(addr, TOKEN, &identity("b"), Duration::from_secs(10))
        .await
        .unwrap();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    eprintln!(
        "the real peer got in after {took:?} among {IDLE} idle and {GARBAGE} garbage connections"
    );
    assert_eq!(hs.remote.node, "a");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let (server_hs, _) = server.await.unwrap().unwrap();
    assert_eq!(server_hs.remote.node, "b");
    for f in floods {
        f.await.unwrap();
    }
    drop(idle);
}

#[test]
fn refusal_lines_are_rate_limited() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut log = RefusalLog::new();
    let shown_before = |l: &RefusalLog| l.total - l.suppressed;
    for _ in 0..1000 {
        log.refused(addr, "bad token");
    }
    assert_eq!(log.total, 1000);
    // The burst, plus what the rate allowed during the loop.
    assert!(
        shown_before(&log) <= LOG_BURST as u64 + 2,
        "{}",
        log.suppressed
    );
    assert!(log.suppressed >= 900);
}

#[tokio::test]
async fn connect_retries_until_the_listener_is_up() {
    let addr = free_addr().await;
    let late = tokio::spawn(async move {
        sleep(Duration::from_millis(1200)).await;
        let listener = TcpListener::bind(addr).await.unwrap();
        listen(listener, TOKEN, &identity("a"), None).await
    });
    let (hs, _ch) = connect(addr, TOKEN, &identity("b"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(hs.remote.node, "a");
    late.await.unwrap().unwrap();
}

#[tokio::test]
async fn waiting_is_bounded_on_both_sides() {
    let addr = free_addr().await;
    let started = Instant::now();
    let err = connect(addr, TOKEN, &identity("b"), Duration::from_millis(600))
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let (listener, _) = bound().await;
    let wait = Some(Duration::from_millis(300));
    let err = listen(listener, TOKEN, &identity("a"), wait)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::NoPeer { .. }), "{err}");
    assert!(err.to_string().contains("--peer"), "{err}");
}
