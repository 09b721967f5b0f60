//! Interface packet counters, the kernel's own account of where frames went,
//! to check the lab (and later the tracer's verdicts) against.

use anyhow::{Context, Result};
use serde_json::Value;

use crate::netns::Netns;

/// Packet counters of one interface (`ip -s link`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

impl Netns {
    /// Counters of interface `iface` in this namespace.
    pub fn link_stats(&self, iface: &str) -> Result<LinkStats> {
        let json = self
            .ip(&format!("-j -s link show dev {iface}"))
            .with_context(|| format!("reading counters of {iface} in netns {}", self.name()))?;
        parse_link_stats(&json)
            .with_context(|| format!("parsing `ip -j -s link show dev {iface}`: {json}"))
    }
}

fn parse_link_stats(json: &str) -> Result<LinkStats> {
    let value: Value = serde_json::from_str(json)?;
    let stats = value
        .get(0)
        .and_then(|link| link.get("stats64"))
        .context("no stats64 object")?;
    let counter = |dir: &str, name: &str| {
        stats
            .get(dir)
            .and_then(|d| d.get(name))
            .and_then(Value::as_u64)
            .with_context(|| format!("no {dir}.{name} counter"))
    };
    Ok(LinkStats {
        rx_packets: counter("rx", "packets")?,
        rx_dropped: counter("rx", "dropped")?,
        tx_packets: counter("tx", "packets")?,
        tx_dropped: counter("tx", "dropped")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stats64() {
        let json = r#"[{"ifname":"flannel.1","stats64":{
            "rx":{"bytes":168,"packets":2,"errors":0,"dropped":1},
            "tx":{"bytes":84,"packets":3,"errors":0,"dropped":6}}}]"#;
        assert_eq!(
            parse_link_stats(json).unwrap(),
            LinkStats {
                rx_packets: 2,
                rx_dropped: 1,
                tx_packets: 3,
                tx_dropped: 6
            }
        );
        assert!(parse_link_stats("[]").is_err());
    }
}
