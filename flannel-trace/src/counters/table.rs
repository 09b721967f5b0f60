//! Counters as a small text table, and as one JSON line.

use std::fmt::Write as _;

use super::Snapshot;

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `delta` covers `secs` seconds; `total` is everything since start.
pub fn text(delta: &Snapshot, total: &Snapshot, secs: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} — counters over the last {secs:.1} s (totals since start in brackets)",
        delta.node
    );
    let _ = writeln!(
        out,
        "  {:<17} {:<10} {:<26} {:>10} {:>10} {:>10} {:>12}",
        "hop", "device", "remote / reason", "packets", "pkt/s", "bytes", "[packets]"
    );
    for (d, t) in delta.rows.iter().zip(&total.rows) {
        let what = match (&d.reason, d.remote) {
            (Some(r), Some(ip)) => format!("{r} from {ip}"),
            (Some(r), None) => r.clone(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => "-".into(),
        };
        let rate = if secs > 0.0 {
            d.packets as f64 / secs
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "  {:<17} {:<10} {:<26} {:>10} {:>10.1} {:>10} {:>12}",
            d.hop,
            d.iface.as_deref().unwrap_or("?"),
            what,
            d.packets,
            rate,
            human_bytes(d.bytes),
            t.packets
        );
    }
    if delta.rows.is_empty() {
        let _ = writeln!(out, "  (no overlay traffic counted yet)");
    }
    if total.uncounted > 0 {
        let _ = writeln!(
            out,
            "  {} packets not counted: the kernel's counter map is full (too many distinct remotes)",
            total.uncounted
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Row;

    #[test]
    fn rows_with_rates_and_totals() {
        let row = |p| Row {
            hop: "underlay-ingress".into(),
            iface: Some("eth1".into()),
            remote: Some("10.25.1.55".parse().unwrap()),
            reason: None,
            packets: p,
            bytes: p * 150,
        };
        let delta = Snapshot {
            node: "node-a".into(),
            wall_ns: 0,
            rows: vec![row(50)],
            uncounted: 0,
        };
        let total = Snapshot {
            rows: vec![row(500)],
            ..delta.clone()
        };
        let t = text(&delta, &total, 5.0);
        assert!(t.contains("underlay-ingress"), "{t}");
        assert!(t.contains("10.25.1.55"), "{t}");
        assert!(t.contains("10.0"), "{t}");
        assert!(t.contains("7.5 KB"), "{t}");
        assert!(t.contains("500"), "{t}");
    }
}
