//! Tests of the peer layer over loopback TCP: the real handshake, channel
//! and admission code, two nodes in one process.

use std::net::SocketAddr;
use std::sync::{Mutex, Once};
use std::thread::{self, ThreadId};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{Channel, Handshake, connect, listen};
use crate::schema::identity::NodeIdentity;

mod admission;
mod channel;
mod handshake;

const TOKEN: &str = "s3cret";
const MS: i64 = 1_000_000;

fn identity(node: &str) -> NodeIdentity {
    NodeIdentity {
        version: "test".into(),
        node: node.into(),
        kernel: "6.1.0".into(),
        netns_inode: 4_026_531_840,
        vxlan_dev: "flannel.1".into(),
        vxlan_ifindex: 3,
        vxlan_mac: Some("aa:bb:cc:dd:ee:ff".into()),
        vtep_addrs: vec!["10.244.1.0".parse().unwrap()],
        underlay_dev: "eth0".into(),
        underlay_ifindex: 2,
        underlay_addrs: vec!["192.0.2.1".parse().unwrap()],
        local: None,
        port: 8472,
        ports: vec![8472],
        port_source: "default".into(),
        device_port: Some(8472),
        vni: Some(1),
        fdb: vec![],
        hooks: vec![],
        clock_offset_ns: 0,
        ring_size: 1 << 20,
        attached_wall_ns: 0,
        ..Default::default()
    }
}

async fn bound() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A loopback address nothing listens on (for now).
async fn free_addr() -> SocketAddr {
    bound().await.1
}

/// Captures warnings per thread: `#[tokio::test]` runs every task of a
/// test on the test's own thread, so tests running in parallel do not
/// see each other's lines.
struct Capture;
static LINES: Mutex<Vec<(ThreadId, String)>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = record.args().to_string();
            LINES.lock().unwrap().push((thread::current().id(), line));
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&Capture).expect("no other logger in tests");
        log::set_max_level(log::LevelFilter::Warn);
    });
}

fn warnings() -> Vec<String> {
    let me = thread::current().id();
    let lines = LINES.lock().unwrap();
    lines
        .iter()
        .filter(|(t, _)| *t == me)
        .map(|(_, l)| l.clone())
        .collect()
}

/// Node "a" listening on a fresh loopback port for up to `secs`, in a task.
async fn listener_a(secs: u64) -> (JoinHandle<Listened>, SocketAddr) {
    let (listener, addr) = bound().await;
    let wait = Some(Duration::from_secs(secs));
    let server = tokio::spawn(async move { listen(listener, TOKEN, &identity("a"), wait).await });
    (server, addr)
}

type Listened = Result<(Handshake, Channel), super::PeerError>;

async fn pair() -> (Handshake, Channel, Handshake, Channel) {
    let (listener, addr) = bound().await;
    let (a, b) = (identity("node-a"), identity("node-b"));
    let (listened, connected) = tokio::join!(
        listen(listener, TOKEN, &a, Some(Duration::from_secs(10))),
        connect(addr, TOKEN, &b, Duration::from_secs(5)),
    );
    let (hs_a, ch_a) = listened.unwrap();
    let (hs_b, ch_b) = connected.unwrap();
    (hs_a, ch_a, hs_b, ch_b)
}
