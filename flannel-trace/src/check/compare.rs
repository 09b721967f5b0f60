//! The comparison itself: for every other node, the three entries flannel's
//! vxlan backend programs on this node (FDB: VtepMAC → public-ip; neighbour:
//! VTEP address → VtepMAC; route: podCIDR via the VTEP address on the
//! device), and for this node, its own annotations against its device.

use std::net::IpAddr;

use super::model::{
    ClusterNode, Device, Expect, Finding, KERNEL_DEFAULT_PORT, Kind, Route, mac_text,
};

fn finding(kind: Kind, node: &str, message: String, fix: String) -> Finding {
    Finding {
        kind,
        node: node.to_owned(),
        message,
        fix,
    }
}

/// Every finding for `nodes` seen from `dev`; `me` is this node's index in
/// `nodes`, if it is there.
pub fn findings(
    nodes: &[ClusterNode],
    me: Option<usize>,
    dev: &Device,
    expect: Expect,
) -> Vec<Finding> {
    let mut out = expected(dev, expect);
    match me {
        Some(i) => out.extend(own(&nodes[i], dev)),
        None => out.push(finding(
            Kind::SelfMissing,
            "",
            "this node is not in the node list (no node has its name or one of its addresses as public-ip)".into(),
            "pass --name with this node's Kubernetes name".into(),
        )),
    }
    for (i, n) in nodes.iter().enumerate() {
        if Some(i) != me {
            out.extend(remote(n, dev));
        }
    }
    out.extend(stray_fdb(nodes, dev));
    out
}

/// `--port` / `--vni` against the device.
fn expected(dev: &Device, expect: Expect) -> Vec<Finding> {
    let mut out = Vec::new();
    let port = dev.port.unwrap_or(KERNEL_DEFAULT_PORT);
    if let Some(want) = expect.port
        && want != port
    {
        out.push(finding(
            Kind::Port,
            "",
            format!("{} uses VXLAN port {port}, the cluster uses {want}", dev.name),
            format!(
                "set flanneld's backend Port to {want} on this node (net-conf.json) and restart it; peers drop frames sent to {port}"
            ),
        ));
    }
    if let (Some(want), Some(vni)) = (expect.vni, dev.vni)
        && want != vni
    {
        out.push(finding(
            Kind::Vni,
            "",
            format!("{} has VNI {vni}, the cluster uses {want}", dev.name),
            format!("set flanneld's backend VNI to {want} (net-conf.json) and restart it"),
        ));
    }
    out
}

/// This node's annotations against its own device.
fn own(n: &ClusterNode, dev: &Device) -> Vec<Finding> {
    let mut out = backend(n);
    if !out.is_empty() {
        return out;
    }
    if let (Some(ann), Some(mac)) = (n.vtep_mac, dev.mac)
        && ann != mac
    {
        out.push(finding(
            Kind::SelfVtepMac,
            &n.name,
            format!(
                "{}'s VtepMAC annotation is {}, its {} has MAC {}: peers send this node's frames to a MAC it does not have",
                n.name,
                mac_text(&ann),
                dev.name,
                mac_text(&mac)
            ),
            format!(
                "restart flanneld on {} so that it re-publishes its VtepMAC; the other nodes then update their FDB and neighbour entries",
                n.name
            ),
        ));
    }
    if let Some(ip) = n.public_ip {
        let wrong = match dev.local {
            Some(local) => (local != ip).then(|| format!("its {} sends from {local}", dev.name)),
            None => (!dev.host_addrs.contains(&ip))
                .then(|| "that is not an address of this host".to_owned()),
        };
        if let Some(why) = wrong {
            out.push(finding(
                Kind::SelfPublicIp,
                &n.name,
                format!("{}'s public-ip annotation is {ip}, but {why}", n.name),
                format!(
                    "peers send to {ip}: fix flanneld's --iface/--public-ip on {} and restart it",
                    n.name
                ),
            ));
        }
    }
    if let (Some(ann), Some(vni)) = (n.vni, dev.vni)
        && ann != vni
    {
        out.push(finding(
            Kind::Vni,
            &n.name,
            format!(
                "{}'s backend-data says VNI {ann}, its {} has VNI {vni}",
                n.name, dev.name
            ),
            "restart flanneld so that device and annotation agree".into(),
        ));
    }
    out
}

/// A node that is not (or not readably) a flannel vxlan node.
fn backend(n: &ClusterNode) -> Vec<Finding> {
    if !n.flannel || n.public_ip.is_none() {
        return vec![finding(
            Kind::NotFlannel,
            &n.name,
            format!(
                "node {} has no flannel.alpha.coreos.com/public-ip annotation: flanneld has not registered it",
                n.name
            ),
            format!(
                "check the kube-flannel pod on {} (kubectl -n kube-flannel logs)",
                n.name
            ),
        )];
    }
    match n.backend_type.as_deref() {
        Some("vxlan") => {}
        other => {
            return vec![finding(
                Kind::BackendType,
                &n.name,
                format!(
                    "node {}'s backend-type is {}, not vxlan",
                    n.name,
                    other.unwrap_or("missing")
                ),
                "use one flannel backend in the whole cluster (net-conf.json Backend.Type) and restart flanneld on every node".into(),
            )];
        }
    }
    let problem = match (&n.backend_data_error, n.vtep_mac) {
        (Some(e), _) => Some(format!("cannot be read: {e}")),
        (None, None) => Some("is missing".to_owned()),
        (None, Some(_)) => None,
    };
    if let Some(problem) = problem {
        return vec![finding(
            Kind::BadBackendData,
            &n.name,
            format!(
                "node {}'s flannel.alpha.coreos.com/backend-data {problem}",
                n.name
            ),
            format!("restart flanneld on {} so that it rewrites it", n.name),
        )];
    }
    Vec::new()
}

/// The FDB, neighbour and route entries this node needs for node `n`.
pub fn remote(n: &ClusterNode, dev: &Device) -> Vec<Finding> {
    let mut out = backend(n);
    if !out.is_empty() {
        return out;
    }
    let (Some(ip), Some(mac)) = (n.public_ip, n.vtep_mac) else {
        return out;
    };
    let name = &n.name;
    let d = &dev.name;
    let m = mac_text(&mac);
    if let (Some(theirs), Some(ours)) = (n.vni, dev.vni)
        && theirs != ours
    {
        out.push(finding(
            Kind::Vni,
            name,
            format!("node {name} uses VNI {theirs}, this node's {d} has VNI {ours}"),
            "use one VNI in the whole cluster (net-conf.json Backend.VNI) and restart flanneld"
                .into(),
        ));
    }
    let fdb_to_ip: Vec<_> = dev
        .fdb
        .iter()
        .filter(|e| e.mac != [0; 6] && e.dst == Some(ip))
        .collect();
    if fdb_to_ip.is_empty() {
        out.push(finding(
            Kind::MissingFdb,
            name,
            format!("no FDB entry on {d} sends to {name}'s public-ip {ip}"),
            format!("bridge fdb append {m} dev {d} dst {ip} (or restart flanneld on this node)"),
        ));
    }
    for e in fdb_to_ip.iter().filter(|e| e.mac != mac) {
        let old = mac_text(&e.mac);
        out.push(finding(
            Kind::FdbMac,
            name,
            format!(
                "the FDB entry on {d} for {name}'s public-ip {ip} has MAC {old}, {name}'s VtepMAC is {m}"
            ),
            format!(
                "bridge fdb del {old} dev {d} dst {ip}; bridge fdb append {m} dev {d} dst {ip} (or restart flanneld on this node)"
            ),
        ));
    }
    for e in dev.fdb.iter().filter(|e| e.mac == mac) {
        if let Some(dst) = e.dst
            && dst != ip
        {
            out.push(finding(
                Kind::FdbDst,
                name,
                format!(
                    "the FDB entry on {d} for {name}'s VtepMAC {m} sends to {dst}, {name}'s public-ip is {ip}"
                ),
                format!("bridge fdb del {m} dev {d} dst {dst}; bridge fdb append {m} dev {d} dst {ip}"),
            ));
        }
    }
    if let (Some(neigh), Some(vtep)) = (&dev.neighbours, n.vtep_ip) {
        out.extend(neighbour(name, d, vtep, &mac, neigh));
    }
    if let Some(routes) = &dev.routes {
        out.extend(route(n, dev, routes));
    }
    out
}

fn neighbour(
    name: &str,
    d: &str,
    vtep: IpAddr,
    mac: &[u8; 6],
    neigh: &[super::model::Neighbour],
) -> Option<Finding> {
    let m = mac_text(mac);
    let fix = format!("ip neigh replace {vtep} lladdr {m} dev {d} nud permanent");
    match neigh.iter().find(|e| e.ip == vtep) {
        None => Some(finding(
            Kind::MissingNeighbour,
            name,
            format!("no neighbour entry on {d} for {name}'s VTEP address {vtep}"),
            fix,
        )),
        Some(e) if e.mac != Some(*mac) => Some(finding(
            Kind::StaleNeighbour,
            name,
            format!(
                "the neighbour entry on {d} for {name}'s VTEP address {vtep} has MAC {}, {name}'s VtepMAC is {m}",
                e.mac
                    .map_or_else(|| "none (unresolved)".into(), |x| mac_text(&x))
            ),
            fix,
        )),
        Some(_) => None,
    }
}

fn route(n: &ClusterNode, dev: &Device, routes: &[Route]) -> Option<Finding> {
    let name = &n.name;
    let d = &dev.name;
    // The podCIDR when the node list has it; from a live peer only its VTEP
    // address is known, and any route covering it counts.
    let found = match (n.pod_cidr, n.vtep_ip) {
        (Some(cidr), _) => routes.iter().find(|r| r.dst == cidr),
        (None, Some(vtep)) => routes
            .iter()
            .filter(|r| r.dst.len() > 0 && r.dst.contains(vtep))
            .max_by_key(|r| r.dst.len()),
        (None, None) => return None,
    };
    let what = n.pod_cidr.map_or_else(
        || {
            format!(
                "{name}'s VTEP address {}",
                n.vtep_ip.expect("matched above")
            )
        },
        |c| format!("{name}'s pod subnet {c}"),
    );
    let fix = match (n.pod_cidr, n.vtep_ip) {
        (Some(c), Some(v)) => format!("ip route replace {c} via {v} dev {d} onlink"),
        _ => "restart flanneld on this node, which re-adds the route".into(),
    };
    match found {
        None => Some(finding(
            Kind::MissingRoute,
            name,
            format!("no route to {what} on this node"),
            fix,
        )),
        Some(r) if r.oif.is_some() && r.oif != Some(dev.ifindex) => Some(finding(
            Kind::RouteDevice,
            name,
            format!(
                "the route to {what} ({}) leaves through another device than {d}",
                r.dst
            ),
            fix,
        )),
        Some(_) => None,
    }
}

/// FDB entries for addresses that are no node's public-ip: a node that left,
/// or changed its address, and whose entry flannel did not remove.
fn stray_fdb(nodes: &[ClusterNode], dev: &Device) -> Vec<Finding> {
    let known: Vec<IpAddr> = nodes.iter().filter_map(|n| n.public_ip).collect();
    dev.fdb
        .iter()
        .filter(|e| e.mac != [0; 6])
        .filter_map(|e| {
            let dst = e.dst?;
            (!known.contains(&dst)).then(|| {
                let m = mac_text(&e.mac);
                finding(
                    Kind::StrayFdb,
                    "",
                    format!(
                        "the FDB entry {m} dst {dst} on {} is for no node in the list",
                        dev.name
                    ),
                    format!("bridge fdb del {m} dev {} dst {dst}", dev.name),
                )
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "compare_tests.rs"]
mod tests;
