//! Reading `kubectl get nodes -o json`: a `v1/NodeList`, each node with the
//! annotations flannel's kube subnet manager writes:
//!
//! ```text
//! flannel.alpha.coreos.com/backend-type: vxlan
//! flannel.alpha.coreos.com/backend-data: {"VNI":1,"VtepMAC":"0e:…"}
//! flannel.alpha.coreos.com/public-ip:    10.25.1.51
//! ```
//!
//! A node's own annotations that cannot be read are findings about that
//! node, not bad input: one half-configured node must not hide the others.

use std::net::IpAddr;

use serde_json::Value;
use thiserror::Error;

use super::model::{Cidr, ClusterNode, parse_mac};

const PREFIX: &str = "flannel.alpha.coreos.com/";

#[derive(Debug, Error)]
pub enum NodesError {
    #[error("{0} is not JSON: {1} (expected the output of `kubectl get nodes -o json`)")]
    NotJson(String, serde_json::Error),
    #[error(
        "{0} is not a node list: {1} (expected the output of `kubectl get nodes -o json`, kind NodeList)"
    )]
    NotNodeList(String, String),
}

/// Parses the document read from `source` (a path, or "stdin").
pub fn parse(source: &str, text: &str) -> Result<Vec<ClusterNode>, NodesError> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| NodesError::NotJson(source.into(), e))?;
    let bad = |why: String| NodesError::NotNodeList(source.into(), why);
    let kind = doc.get("kind").and_then(Value::as_str);
    // `kubectl get nodes -o json` says NodeList; `kubectl get nodes,pods`
    // or a server-side List wrapper says List: accept both if every item is
    // a Node.
    match kind {
        Some("NodeList" | "List") => {}
        Some(other) => return Err(bad(format!("its kind is {other}"))),
        None => return Err(bad("it has no `kind`".into())),
    }
    let items = doc
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("it has no `items` array".into()))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if let Some(k) = item.get("kind").and_then(Value::as_str)
                && k != "Node"
            {
                return Err(bad(format!("item {i} is a {k}, not a Node")));
            }
            node(item).ok_or_else(|| bad(format!("item {i} has no metadata.name")))
        })
        .collect()
}

fn node(item: &Value) -> Option<ClusterNode> {
    let meta = item.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_owned();
    let ann = |key: &str| {
        meta.get("annotations")
            .and_then(|a| a.get(format!("{PREFIX}{key}")))
            .and_then(Value::as_str)
    };
    let flannel = meta
        .get("annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.keys().any(|k| k.starts_with(PREFIX)));
    let mut n = ClusterNode {
        name,
        flannel,
        public_ip: ann("public-ip").and_then(|s| s.trim().parse::<IpAddr>().ok()),
        backend_type: ann("backend-type").map(str::to_owned),
        ..ClusterNode::default()
    };
    if let Some(data) = ann("backend-data") {
        match backend_data(data) {
            Ok((vni, mac)) => (n.vni, n.vtep_mac) = (vni, mac),
            Err(e) => n.backend_data_error = Some(e),
        }
    }
    let spec = item.get("spec");
    n.pod_cidr = spec
        .and_then(|s| s.get("podCIDR"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Cidr>().ok());
    n.vtep_ip = n.pod_cidr.map(|c| c.addr());
    Some(n)
}

/// `{"VNI":1,"VtepMAC":"0e:…"}` → (VNI, MAC).
fn backend_data(text: &str) -> Result<(Option<u32>, Option<[u8; 6]>), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let vni = match v.get("VNI") {
        None | Some(Value::Null) => None,
        Some(x) => Some(
            x.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("VNI {x} is not a number"))?,
        ),
    };
    let mac = match v.get("VtepMAC").and_then(Value::as_str) {
        None => return Err("no VtepMAC".into()),
        Some(s) => Some(parse_mac(s).ok_or_else(|| format!("VtepMAC {s:?} is not a MAC"))?),
    };
    Ok((vni, mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Node",
      "metadata":{"name":"node-b","annotations":{
        "flannel.alpha.coreos.com/backend-data":"{\"VNI\":1,\"VtepMAC\":\"0e:a1:00:00:00:02\"}",
        "flannel.alpha.coreos.com/backend-type":"vxlan",
        "flannel.alpha.coreos.com/kube-subnet-manager":"true",
        "flannel.alpha.coreos.com/public-ip":"10.25.1.55"}},
      "spec":{"podCIDR":"10.244.2.0/24","podCIDRs":["10.244.2.0/24"]}}]}"#;

    #[test]
    fn reads_what_flannel_writes() {
        let nodes = parse("t", ONE).unwrap();
        assert_eq!(nodes.len(), 1);
        let n = &nodes[0];
        assert_eq!(n.name, "node-b");
        assert!(n.flannel);
        assert_eq!(n.public_ip, Some("10.25.1.55".parse().unwrap()));
        assert_eq!(n.backend_type.as_deref(), Some("vxlan"));
        assert_eq!(n.vni, Some(1));
        assert_eq!(n.vtep_mac, Some([0x0e, 0xa1, 0, 0, 0, 2]));
        assert_eq!(n.pod_cidr.unwrap().to_string(), "10.244.2.0/24");
        assert_eq!(n.vtep_ip, Some("10.244.2.0".parse().unwrap()));
    }

    #[test]
    fn bad_documents_say_what_is_wrong() {
        let e = parse("f.json", "{not json").unwrap_err();
        assert!(matches!(e, NodesError::NotJson(..)), "{e}");
        let e = parse("f.json", r#"{"kind":"PodList","items":[]}"#).unwrap_err();
        assert!(e.to_string().contains("its kind is PodList"), "{e}");
        let e = parse("f.json", r#"{"kind":"NodeList"}"#).unwrap_err();
        assert!(e.to_string().contains("no `items`"), "{e}");
        let e = parse("f.json", r#"{"kind":"List","items":[{"kind":"Pod"}]}"#).unwrap_err();
        assert!(e.to_string().contains("item 0 is a Pod"), "{e}");
    }

    #[test]
    fn a_broken_annotation_is_kept_as_the_nodes_problem() {
        let doc = ONE.replace(
            r#"\"VtepMAC\":\"0e:a1:00:00:00:02\""#,
            r#"\"VtepMAC\":\"zz\""#,
        );
        let n = &parse("t", &doc).unwrap()[0];
        assert_eq!(n.vtep_mac, None);
        assert!(n.backend_data_error.as_deref().unwrap().contains("zz"));
    }
}
