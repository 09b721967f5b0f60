//! `--metrics ADDR`: the counters as a Prometheus endpoint.
//!
//! The encoding is prometheus-client's; the HTTP side is a few lines of our
//! own: one GET of one path, no keep-alive, no TLS — pulling in an HTTP
//! server crate for that would cost more build time and attack surface
//! than it saves.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use super::Snapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    node: String,
    hop: String,
    iface: String,
    remote: String,
    reason: String,
}

/// The registry and the totals it last saw, to feed counters with deltas.
pub struct Metrics {
    registry: Registry,
    packets: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    uncounted: Counter,
    seen: HashMap<Labels, (u64, u64)>,
    seen_uncounted: u64,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("flannel_trace");
        let packets = Family::<Labels, Counter>::default();
        let bytes = Family::<Labels, Counter>::default();
        let uncounted = Counter::default();
        registry.register(
            "packets",
            "Packets of the overlay seen at a hop (drops: freed by the kernel, with the reason)",
            packets.clone(),
        );
        registry.register("bytes", "Bytes of those packets", bytes.clone());
        registry.register(
            "uncounted_packets",
            "Packets not counted because the kernel's counter map was full",
            uncounted.clone(),
        );
        Metrics {
            registry,
            packets,
            bytes,
            uncounted,
            seen: HashMap::new(),
            seen_uncounted: 0,
        }
    }

    /// Bring the counters up to a snapshot of kernel totals.
    pub fn update(&mut self, s: &Snapshot) {
        for r in &s.rows {
            let l = Labels {
                node: s.node.clone(),
                hop: r.hop.clone(),
                iface: r.iface.clone().unwrap_or_default(),
                remote: r.remote.map(|a| a.to_string()).unwrap_or_default(),
                reason: r.reason.clone().unwrap_or_default(),
            };
            let (p0, b0) = self.seen.get(&l).copied().unwrap_or((0, 0));
            self.packets
                .get_or_create(&l)
                .inc_by(r.packets.saturating_sub(p0));
            self.bytes
                .get_or_create(&l)
                .inc_by(r.bytes.saturating_sub(b0));
            self.seen.insert(l, (r.packets.max(p0), r.bytes.max(b0)));
        }
        self.uncounted
            .inc_by(s.uncounted.saturating_sub(self.seen_uncounted));
        self.seen_uncounted = self.seen_uncounted.max(s.uncounted);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serve `GET /metrics` on `addr` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Mutex<Metrics>>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, ctype, body) =
                if head.starts_with("GET /metrics ") || head.starts_with("GET / ") {
                    let body = metrics.lock().unwrap_or_else(|p| p.into_inner()).encode();
                    (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        body,
                    )
                } else {
                    (
                        "404 Not Found",
                        "text/plain",
                        "flannel-trace serves GET /metrics only\n".to_owned(),
                    )
                };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Bind the endpoint; the caller spawns [`serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Row;

    #[test]
    fn counters_follow_kernel_totals() {
        let mut m = Metrics::new();
        let snap = |p| Snapshot {
            node: "node-a".into(),
            wall_ns: 0,
            rows: vec![Row {
                hop: "underlay-egress".into(),
                iface: Some("eth1".into()),
                remote: Some("10.25.1.55".parse().unwrap()),
                reason: None,
                packets: p,
                bytes: p * 10,
            }],
            uncounted: 0,
        };
        m.update(&snap(5));
        m.update(&snap(12));
        let text = m.encode();
        assert!(
            text.contains(r#"flannel_trace_packets_total{node="node-a",hop="underlay-egress",iface="eth1",remote="10.25.1.55",reason=""} 12"#),
            "{text}"
        );
        assert!(text.contains("flannel_trace_bytes_total"), "{text}");
    }
}
