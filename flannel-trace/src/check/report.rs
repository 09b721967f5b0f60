//! Printing the findings: one line each with its fix, or one JSON document.

use serde_json::json;

use super::model::{Device, Finding, KERNEL_DEFAULT_PORT, mac_text};

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

pub fn json(me: Option<&str>, dev: &Device, nodes: usize, found: &[Finding]) {
    let doc = json!({
        "type": "check",
        "node": me,
        "device": {
            "name": dev.name,
            "vni": dev.vni,
            "port": dev.port.unwrap_or(KERNEL_DEFAULT_PORT),
            "local": dev.local,
            "mac": dev.mac.as_ref().map(mac_text),
        },
        "nodes": nodes,
        "ok": found.is_empty(),
        "findings": found,
    });
    println!("{doc}");
}
