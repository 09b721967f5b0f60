//! Printing the findings: one line each with its fix, or one JSON document.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::model::{Device, Finding, KERNEL_DEFAULT_PORT, mac_text};

/// The `check --json` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    #[serde(rename = "type")]
    pub ty: CheckTag,
    /// This node's name, `None` when it is not in the node list.
    pub node: Option<String>,
    pub device: CheckedDevice,
    /// Nodes in the list.
    pub nodes: usize,
    /// No finding.
    pub ok: bool,
    pub findings: Vec<Finding>,
}

/// The document's `"type"`: always `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckTag {
    Check,
}

/// This node's vxlan device as the check read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedDevice {
    pub name: String,
    pub vni: Option<u32>,
    /// The kernel's default when the device sets none.
    pub port: u16,
    pub local: Option<IpAddr>,
    pub mac: Option<String>,
}

fn device_line(dev: &Device) -> String {
    format!(
        "{} vni {} port {} local {} mac {}",
        dev.name,
        dev.vni.map_or_else(|| "?".into(), |v| v.to_string()),
        dev.port.unwrap_or(KERNEL_DEFAULT_PORT),
        dev.local
            .map_or_else(|| "unset".into(), |ip| ip.to_string()),
        dev.mac.as_ref().map_or_else(|| "?".into(), mac_text),
    )
}

pub fn text(me: Option<&str>, dev: &Device, nodes: usize, found: &[Finding]) {
    println!(
        "check: this node {} ({}), {nodes} nodes in the list: {}",
        me.unwrap_or("(not in the list)"),
        device_line(dev),
        match found.len() {
            0 => "all agree".to_owned(),
            1 => "1 finding".to_owned(),
            n => format!("{n} findings"),
        }
    );
    for f in found {
        let who = if f.node.is_empty() {
            String::new()
        } else {
            format!("{}: ", f.node)
        };
        println!("{who}{} — fix: {}", f.message, f.fix);
    }
}

/// The `check --json` document of these findings.
pub fn document(me: Option<&str>, dev: &Device, nodes: usize, found: &[Finding]) -> CheckReport {
    CheckReport {
        ty: CheckTag::Check,
        node: me.map(str::to_owned),
        device: CheckedDevice {
            name: dev.name.clone(),
            vni: dev.vni,
            port: dev.port.unwrap_or(KERNEL_DEFAULT_PORT),
            local: dev.local,
            mac: dev.mac.as_ref().map(mac_text),
        },
        nodes,
        ok: found.is_empty(),
        findings: found.to_vec(),
    }
}

pub fn json(me: Option<&str>, dev: &Device, nodes: usize, found: &[Finding]) {
    let doc = document(me, dev, nodes, found);
    // Through a JSON value, so that the keys keep the order they have
    // always had (sorted).
    match serde_json::to_value(&doc) {
        Ok(v) => println!("{v}"),
        Err(e) => eprintln!("flannel-trace: encoding the check report: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::check::model::Kind;

    #[test]
    fn the_json_document_has_its_fields_and_reads_back() {
        let dev = Device {
            name: "flannel.1".into(),
            mac: Some([0x0e, 0xf7, 0, 0, 0, 1]),
            vni: Some(1),
            local: Some("10.25.1.51".parse().unwrap()),
            ..Device::default()
        };
        let found = [Finding {
            kind: Kind::MissingFdb,
            node: "node-b".into(),
            message: "no FDB entry".into(),
            fix: "bridge fdb append".into(),
        }];
        let doc = document(Some("node-a"), &dev, 2, &found);
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            v,
            json!({
                "type": "check",
                "node": "node-a",
                "device": {
                    "name": "flannel.1", "vni": 1, "port": KERNEL_DEFAULT_PORT,
                    "local": "10.25.1.51", "mac": "0e:f7:00:00:00:01",
                },
                "nodes": 2,
                "ok": false,
                "findings": [{
                    "kind": "missing-fdb", "node": "node-b",
                    "message": "no FDB entry", "fix": "bridge fdb append",
                }],
            })
        );
        let back: CheckReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, doc);
    }
}
