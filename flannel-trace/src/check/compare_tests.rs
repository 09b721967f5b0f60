//! The comparison on hand-made nodes and devices: each finding, and none on a healthy node.

use super::super::model::{Cidr, Neighbour};
use super::*;
use crate::net::FdbEntry;

const MAC_A: [u8; 6] = [0x0e, 0xa1, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [0x0e, 0xa1, 0, 0, 0, 2];
const OLD: [u8; 6] = [0x0e, 0xa1, 0, 0, 0, 0x99];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn node(name: &str, public: &str, mac: [u8; 6], cidr: &str) -> ClusterNode {
    let cidr: Cidr = cidr.parse().unwrap();
    ClusterNode {
        name: name.into(),
        flannel: true,
        public_ip: Some(ip(public)),
        backend_type: Some("vxlan".into()),
        vtep_mac: Some(mac),
        vni: Some(1),
        backend_data_error: None,
        pod_cidr: Some(cidr),
        vtep_ip: Some(cidr.addr()),
    }
}

fn cluster() -> Vec<ClusterNode> {
    vec![
        node("node-a", "10.25.1.51", MAC_A, "10.244.1.0/24"),
        node("node-b", "10.25.1.55", MAC_B, "10.244.2.0/24"),
    ]
}

/// node-a's device as flannel leaves it when all is well.
fn healthy() -> Device {
    Device {
        name: "flannel.1".into(),
        ifindex: 3,
        mac: Some(MAC_A),
        vni: Some(1),
        port: Some(8475),
        local: Some(ip("10.25.1.51")),
        host_addrs: vec![ip("10.25.1.51"), ip("10.244.1.0")],
        fdb: vec![FdbEntry {
            mac: MAC_B,
            dst: Some(ip("10.25.1.55")),
        }],
        neighbours: Some(vec![Neighbour {
            ip: ip("10.244.2.0"),
            mac: Some(MAC_B),
        }]),
        routes: Some(vec![Route {
            dst: "10.244.2.0/24".parse().unwrap(),
            gateway: Some(ip("10.244.2.0")),
            oif: Some(3),
        }]),
    }
}

fn kinds(f: &[Finding]) -> Vec<Kind> {
    f.iter().map(|f| f.kind).collect()
}

#[test]
fn a_healthy_node_has_no_finding() {
    let f = findings(&cluster(), Some(0), &healthy(), Expect::default());
    assert_eq!(f, vec![]);
    let want = Expect {
        port: Some(8475),
        vni: Some(1),
    };
    assert_eq!(findings(&cluster(), Some(0), &healthy(), want), vec![]);
}

#[test]
fn a_stale_fdb_mac_is_named_with_both_macs() {
    let mut dev = healthy();
    dev.fdb[0].mac = OLD;
    let f = findings(&cluster(), Some(0), &dev, Expect::default());
    assert_eq!(kinds(&f), vec![Kind::FdbMac]);
    assert!(
        f[0].message.contains("0e:a1:00:00:00:99"),
        "{}",
        f[0].message
    );
    assert!(
        f[0].fix
            .contains("bridge fdb append 0e:a1:00:00:00:02 dev flannel.1 dst 10.25.1.55")
    );
}

#[test]
fn missing_fdb_neighbour_and_route_are_each_found() {
    let mut dev = healthy();
    dev.fdb.clear();
    dev.neighbours = Some(vec![]);
    dev.routes = Some(vec![]);
    let f = findings(&cluster(), Some(0), &dev, Expect::default());
    assert_eq!(
        kinds(&f),
        vec![Kind::MissingFdb, Kind::MissingNeighbour, Kind::MissingRoute]
    );
    assert!(
        f[2].fix
            .contains("ip route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink")
    );
}

#[test]
fn a_neighbour_with_an_old_mac_is_stale() {
    let mut dev = healthy();
    dev.neighbours.as_mut().unwrap()[0].mac = Some(OLD);
    let f = findings(&cluster(), Some(0), &dev, Expect::default());
    assert_eq!(kinds(&f), vec![Kind::StaleNeighbour]);
}

#[test]
fn a_wrong_vtep_mac_annotation_shows_on_both_sides() {
    // The list claims node-b's VtepMAC is OLD: node-a's entries (with the
    // real MAC) disagree with it, and on node-b itself the annotation
    // disagrees with the device.
    let mut nodes = cluster();
    nodes[1].vtep_mac = Some(OLD);
    let f = findings(&nodes, Some(0), &healthy(), Expect::default());
    assert_eq!(kinds(&f), vec![Kind::FdbMac, Kind::StaleNeighbour]);
    let b = Device {
        mac: Some(MAC_B),
        local: Some(ip("10.25.1.55")),
        ..healthy()
    };
    let f = own(&nodes[1], &b);
    assert_eq!(kinds(&f), vec![Kind::SelfVtepMac]);
}

#[test]
fn own_public_ip_must_be_the_devices_local_address() {
    let mut nodes = cluster();
    nodes[0].public_ip = Some(ip("10.25.1.99"));
    nodes[0].vtep_mac = Some(MAC_A);
    let f = own(&nodes[0], &healthy());
    assert_eq!(kinds(&f), vec![Kind::SelfPublicIp]);
    let mut dev = healthy();
    dev.local = None;
    assert_eq!(kinds(&own(&nodes[0], &dev)), vec![Kind::SelfPublicIp]);
    nodes[0].public_ip = Some(ip("10.25.1.51"));
    assert_eq!(own(&nodes[0], &dev), vec![]);
}

#[test]
fn other_backends_and_unregistered_nodes_are_named() {
    let mut nodes = cluster();
    nodes[1].backend_type = Some("host-gw".into());
    let mut c = node("node-c", "10.25.1.52", OLD, "10.244.3.0/24");
    c.flannel = false;
    c.public_ip = None;
    nodes.push(c);
    let f = findings(&nodes, Some(0), &healthy(), Expect::default());
    assert_eq!(kinds(&f), vec![Kind::BackendType, Kind::NotFlannel]);
    assert!(f[0].message.contains("host-gw"));
}

#[test]
fn a_node_without_backend_data_is_named_not_skipped() {
    let mut nodes = cluster();
    nodes[1].vtep_mac = None;
    let f = findings(&nodes, Some(0), &healthy(), Expect::default());
    assert_eq!(kinds(&f), vec![Kind::BadBackendData]);
    assert!(f[0].message.contains("is missing"), "{}", f[0].message);
}

#[test]
fn port_and_vni_are_judged_only_when_given() {
    let mut dev = healthy();
    dev.port = None;
    let want = Expect {
        port: Some(8475),
        vni: Some(4),
    };
    let f = findings(&cluster(), Some(0), &dev, want);
    assert_eq!(kinds(&f), vec![Kind::Port, Kind::Vni]);
    assert!(f[0].message.contains("port 8472"), "{}", f[0].message);
}

#[test]
fn an_fdb_entry_for_no_node_is_stray_and_a_missing_self_is_said() {
    let mut dev = healthy();
    dev.fdb.push(FdbEntry {
        mac: OLD,
        dst: Some(ip("10.25.1.77")),
    });
    let f = findings(&cluster(), None, &dev, Expect::default());
    // Without knowing which node it is, node-a is judged as a peer too.
    assert!(kinds(&f).contains(&Kind::SelfMissing));
    assert!(kinds(&f).contains(&Kind::StrayFdb));
}

#[test]
fn a_route_through_another_device_is_named() {
    let mut dev = healthy();
    dev.routes.as_mut().unwrap()[0].oif = Some(2);
    let f = findings(&cluster(), Some(0), &dev, Expect::default());
    assert_eq!(kinds(&f), vec![Kind::RouteDevice]);
}
