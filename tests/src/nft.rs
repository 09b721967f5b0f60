//! Loading nftables rulesets into a namespace, reading their counters, and
//! the two rulesets the tests use to imitate real drops: a security group
//! on the underlay (fabric) and a host firewall on the receiving node.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::netns::Netns;

/// Table name used by the ready-made rulesets below.
pub const FT_TABLE: &str = "ft";
/// Chain of [`fabric_drop_udp`] (family `bridge`).
pub const FABRIC_DROP_CHAIN: &str = "forward";
/// Chain of [`input_drop_udp`] (family `inet`).
pub const INPUT_DROP_CHAIN: &str = "input";

/// A fabric rule that drops UDP from `src` to `dst` port `dport`, as a cloud
/// security group would. The fabric is a Linux bridge, so this is a `bridge`
/// family table on the `forward` hook: it sees every frame switched between
/// two ports and can still match IPv4/UDP headers. (An `inet` table would
/// only see bridged traffic while br_netfilter is loaded and
/// `bridge-nf-call-iptables` is 1, which depends on the host.)
pub fn fabric_drop_udp(src: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> String {
    format!(
        "table bridge {FT_TABLE} {{\n\
         \tchain {FABRIC_DROP_CHAIN} {{\n\
         \t\ttype filter hook forward priority 0; policy accept;\n\
         \t\tip saddr {src} ip daddr {dst} udp dport {dport} counter drop\n\
         \t}}\n\
         }}\n"
    )
}

/// A fabric rule dropping UDP to `dport` that enters the bridge from one
/// port: a second network (behind that port) whose security group lacks
/// the VXLAN port.
pub fn bridge_port_drop_udp(port: &str, dport: u16) -> String {
    format!(
        "table bridge {FT_TABLE} {{\n\
         \tchain {FABRIC_DROP_CHAIN} {{\n\
         \t\ttype filter hook forward priority 0; policy accept;\n\
         \t\tiifname \"{port}\" udp dport {dport} counter drop\n\
         \t}}\n\
         }}\n"
    )
}

/// A node-local firewall rule dropping incoming UDP to `dport` (the VXLAN
/// port) before the vxlan socket sees it.
pub fn input_drop_udp(dport: u16) -> String {
    format!(
        "table inet {FT_TABLE} {{\n\
         \tchain {INPUT_DROP_CHAIN} {{\n\
         \t\ttype filter hook input priority 0; policy accept;\n\
         \t\tudp dport {dport} counter drop\n\
         \t}}\n\
         }}\n"
    )
}

/// Puts a newline between adjacent closing braces (outside quoted strings).
///
/// nft 1.0.6 (Debian 12) rejects the one-line form
/// `table inet t { chain c { ...; drop; } }` with "unexpected '}', expecting
/// newline or semicolon": it wants a terminator after the chain's `}`. A
/// newline is a statement terminator everywhere a `}` can close something,
/// so adding one there never changes the meaning.
pub fn normalize_ruleset(ruleset: &str) -> String {
    let mut out = String::with_capacity(ruleset.len() + 8);
    let mut in_string = false;
    let mut after_close = false;
    for c in ruleset.chars() {
        if in_string {
            in_string = c != '"';
            out.push(c);
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                after_close = false;
            }
            '}' if after_close => out.push('\n'),
            '}' => after_close = true,
            // Already terminated: nothing to add.
            '\n' | ';' => after_close = false,
            c if c.is_whitespace() => {}
            _ => after_close = false,
        }
        out.push(c);
    }
    out
}

impl Netns {
    /// Loads `ruleset` with `nft -f -` inside the namespace. Rulesets are
    /// added to what is there; include `flush ruleset` to replace.
    pub fn nft(&self, ruleset: &str) -> Result<()> {
        self.run_with_stdin(&["nft", "-f", "-"], &normalize_ruleset(ruleset))
            .with_context(|| format!("loading nft ruleset in netns {}:\n{ruleset}", self.name()))?;
        Ok(())
    }

    /// Sum of the packet counters of all rules in one chain, to prove that a
    /// drop rule really matched (rather than traffic vanishing elsewhere).
    pub fn nft_packets(&self, family: &str, table: &str, chain: &str) -> Result<u64> {
        let json = self
            .run(&["nft", "-j", "list", "chain", family, table, chain])
            .with_context(|| format!("reading nft chain {family} {table} {chain}"))?;
        let value: Value = serde_json::from_str(&json)
            .with_context(|| format!("parsing `nft -j list chain` output: {json}"))?;
        Ok(counter_packets(&value))
    }
}

/// Adds up every `{"counter": {"packets": N}}` in nft's JSON output.
fn counter_packets(value: &Value) -> u64 {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(key, v)| match (key.as_str(), v.get("packets")) {
                ("counter", Some(packets)) => packets.as_u64().unwrap_or(0),
                _ => counter_packets(v),
            })
            .sum(),
        Value::Array(items) => items.iter().map(counter_packets).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_adjacent_closing_braces() {
        assert_eq!(
            normalize_ruleset("table inet t { chain c { udp dport 1 drop; } }"),
            "table inet t { chain c { udp dport 1 drop; } \n}"
        );
        assert_eq!(
            normalize_ruleset("chain c { udp dport { 1, 2 } }"),
            "chain c { udp dport { 1, 2 } \n}"
        );
    }

    #[test]
    fn leaves_strings_and_single_braces_alone() {
        let text = "table t { chain c { comment \"} }\"; drop }\n}";
        assert_eq!(normalize_ruleset(text), text);
    }

    #[test]
    fn sums_rule_counters() {
        let json = serde_json::json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"rule": {"expr": [{"counter": {"packets": 3, "bytes": 300}}, {"drop": null}]}},
            {"rule": {"expr": [{"counter": {"packets": 4, "bytes": 400}}]}},
        ]});
        assert_eq!(counter_packets(&json), 7);
    }

    #[test]
    fn ready_made_rulesets_name_their_chain() {
        let rules = fabric_drop_udp(
            Ipv4Addr::new(10, 25, 1, 55),
            Ipv4Addr::new(10, 25, 1, 51),
            8475,
        );
        assert!(rules.contains("table bridge ft"));
        assert!(rules.contains("ip saddr 10.25.1.55 ip daddr 10.25.1.51 udp dport 8475"));
        assert!(input_drop_udp(8475).contains("hook input"));
    }
}
