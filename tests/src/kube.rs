//! A `kubectl get nodes -o json` document for a lab, with each node's
//! annotations as flannel's kube subnet manager writes them (backend-data
//! is Go's JSON encoding of `{VNI, VtepMAC}`). The VtepMAC and the public-ip
//! are read back from each node's kernel, not from the lab's plan, as
//! flanneld reads them from the device it created.

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::{Lab, Node, VXLAN_IFACE};

/// Kubernetes name of a lab node: `node-a`, `node-b`, …
pub fn node_name(node: &Node) -> String {
    format!("node-{}", node.role())
}

fn device_mac(node: &Node) -> Result<String> {
    // `ip netns exec` mounts a sysfs of the node's namespace on /sys.
    let path = format!("/sys/class/net/{VXLAN_IFACE}/address");
    let mac = node
        .run(&["cat", &path])
        .with_context(|| format!("reading {path} in {}", node.name()))?;
    Ok(mac.trim().to_owned())
}

/// One `v1/Node` item.
pub fn node_item(node: &Node) -> Result<Value> {
    let name = node_name(node);
    let mac = device_mac(node)?;
    let cidr = format!("{}/24", node.pod_subnet());
    let backend_data = format!("{{\"VNI\":{},\"VtepMAC\":\"{mac}\"}}", node.vni());
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
            },
            "annotations": {
                "flannel.alpha.coreos.com/backend-data": backend_data,
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                "flannel.alpha.coreos.com/public-ip": node.underlay_ip().to_string(),
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "podCIDR": cidr,
            "podCIDRs": [cidr],
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.underlay_ip().to_string()},
                {"type": "Hostname", "address": name},
            ],
        },
    }))
}

/// The whole list, as `kubectl get nodes -o json` prints it (kind `List`).
pub fn kubectl_get_nodes(lab: &Lab) -> Result<Value> {
    let items = lab
        .nodes()
        .iter()
        .map(node_item)
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": items,
        "metadata": {"resourceVersion": ""},
    }))
}

/// Replaces the VtepMAC in node `name`'s backend-data annotation.
pub fn set_vtep_mac(doc: &mut Value, name: &str, mac: &str) -> Result<()> {
    let item = doc["items"]
        .as_array_mut()
        .and_then(|items| items.iter_mut().find(|i| i["metadata"]["name"] == name))
        .with_context(|| format!("no node {name} in the list"))?;
    let key = "flannel.alpha.coreos.com/backend-data";
    let data: Value = serde_json::from_str(
        item["metadata"]["annotations"][key]
            .as_str()
            .unwrap_or("{}"),
    )?;
    let data = json!({"VNI": data["VNI"], "VtepMAC": mac});
    item["metadata"]["annotations"][key] = Value::String(data.to_string());
    Ok(())
}
