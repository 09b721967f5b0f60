//! The flannel-like cluster: a fabric namespace with a bridge standing in
//! for the underlay network, and node namespaces configured the way
//! flannel's vxlan backend configures a host.

use std::io;
use std::net::Ipv4Addr;
use std::ops::Deref;
use std::panic::{self, AssertUnwindSafe};

use anyhow::{Context, Result, bail, ensure};

use crate::netns::{Netns, list_netns, next_lab_stem, root_veths};

/// The VXLAN UDP port of the incident cluster. (flannel's default is the
/// Linux kernel's 8472; IANA's is 4789.)
pub const DEFAULT_VXLAN_PORT: u16 = 8475;
/// flannel's default VNI.
pub const DEFAULT_VNI: u32 = 1;
/// flannel sets the VTEP MTU to the underlay MTU (1500) minus the 50-byte
/// VXLAN/UDP/IP/Ethernet overhead.
pub const VXLAN_MTU: u32 = 1450;
/// Node side of the underlay veth.
pub const UNDERLAY_IFACE: &str = "eth1";
/// flannel's VTEP device name for VNI 1.
pub const VXLAN_IFACE: &str = "flannel.1";
/// The CNI bridge holding the node's pod address.
pub const POD_IFACE: &str = "cni0";
/// The node's end of the pod's veth, a port of cni0.
pub const POD_VETH: &str = "vethpod";
/// A second NIC, for the two-NIC fault.
pub const SECOND_IFACE: &str = "eth2";
/// Fabric-side end of a second NIC: `ftw-<role>`.
const SECOND_NIC_PREFIX: &str = "ftw-";
/// The fabric's address in the second NICs' subnet.
const SECOND_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 25, 2, 1);
/// The bridge in the fabric namespace that switches between the nodes.
pub const FABRIC_BRIDGE: &str = "br0";
/// The fabric bridge's address, the nodes' default gateway.
pub const FABRIC_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 25, 1, 1);

const UNDERLAY_PREFIX_LEN: u8 = 24;
/// Roles are the letters a..z, one per node.
const MAX_NODES: usize = 26;
/// Fabric-side veth names are `ftv-<role>`. They only exist inside the
/// lab's own fabric namespace (the pair is created there directly), so they
/// cannot collide with other labs and stay far below IFNAMSIZ (15).
const FABRIC_PORT_PREFIX: &str = "ftv-";

/// Per-node settings; the defaults give a healthy flannel node. The
/// non-default ones are the faults the tracer has to pin down.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    vxlan_port: u16,
    vni: u32,
    skip_fdb_to: Vec<char>,
    fabric_mtu: Option<u32>,
    stale_mac_for: Vec<char>,
    second_nic_to: Vec<char>,
    underlay_tags: Vec<(&'static str, u16)>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            vxlan_port: DEFAULT_VXLAN_PORT,
            vni: DEFAULT_VNI,
            skip_fdb_to: Vec::new(),
            fabric_mtu: None,
            stale_mac_for: Vec::new(),
            second_nic_to: Vec::new(),
            underlay_tags: Vec::new(),
        }
    }
}

impl NodeSpec {
    pub fn new() -> Self {
        Self::default()
    }

    /// The UDP port this node's VTEP listens on and sends to (port mismatch
    /// when it differs from a peer's).
    pub fn vxlan_port(mut self, port: u16) -> Self {
        self.vxlan_port = port;
        self
    }

    /// The VNI of this node's VTEP (VNI mismatch when it differs).
    pub fn vni(mut self, vni: u32) -> Self {
        self.vni = vni;
        self
    }

    /// Leave out the FDB entry toward peer `role`, as when flannel missed a
    /// node-add event: frames for that peer have no underlay destination.
    pub fn skip_fdb_to(mut self, role: char) -> Self {
        self.skip_fdb_to.push(role);
        self
    }

    /// MTU of this node's port on the fabric bridge, to drop frames larger
    /// than the underlay carries (a path-MTU black hole).
    pub fn fabric_mtu(mut self, mtu: u32) -> Self {
        self.fabric_mtu = Some(mtu);
        self
    }

    /// Keep an old VtepMAC for peer `role` in this node's neighbour and FDB
    /// entries, as when the peer's flannel.1 was re-created with a new MAC
    /// and this node's flanneld never heard of it: frames still reach the
    /// peer, which drops them after decapsulation as not addressed to it.
    pub fn stale_mac_for(mut self, role: char) -> Self {
        self.stale_mac_for.push(role);
        self
    }

    /// Give this node a second NIC (`eth2`) with a more specific route to
    /// peer `role`'s underlay address through it. The NIC's other end is
    /// not on the fabric bridge, so encapsulated frames that leave by it
    /// never arrive: what a wrong route on a two-NIC node does.
    pub fn second_nic_to(mut self, role: char) -> Self {
        self.second_nic_to.push(role);
        self
    }

    /// Run the underlay over VLAN devices stacked on eth1, outermost tag
    /// first (`("802.1ad", 200), ("802.1Q", 100)` is QinQ): eth1 then
    /// carries tagged frames, the address and the VTEP sit on the top
    /// device ([`UNDERLAY_VLAN_IFACE`]). The fabric bridge, not VLAN-aware,
    /// switches tagged frames as they are.
    pub fn underlay_vlan(mut self, protocol: &'static str, vid: u16) -> Self {
        self.underlay_tags.push((protocol, vid));
        self
    }
}

/// The top VLAN device of a VLAN underlay ([`NodeSpec::underlay_vlan`]);
/// lower ones are `ul0`, `ul1`, ...
pub const UNDERLAY_VLAN_IFACE: &str = "ul";

/// Collects node specs; [`LabBuilder::build`] creates the namespaces.
#[derive(Debug, Clone, Default)]
pub struct LabBuilder {
    specs: Vec<NodeSpec>,
}

impl LabBuilder {
    /// Adds the next node (roles are given in order: a, b, c, ...).
    pub fn node(mut self, spec: NodeSpec) -> Self {
        self.specs.push(spec);
        self
    }

    /// Adds `count` healthy nodes.
    pub fn nodes(mut self, count: usize) -> Self {
        self.specs
            .extend(std::iter::repeat_n(NodeSpec::default(), count));
        self
    }

    /// Creates the fabric and the nodes. On error, whatever was already
    /// created is removed again (each namespace is owned by a guard).
    pub fn build(self) -> Result<Lab> {
        let count = self.specs.len();
        ensure!(
            (1..=MAX_NODES).contains(&count),
            "a lab has 1 to {MAX_NODES} nodes, not {count}"
        );
        for (index, spec) in self.specs.iter().enumerate() {
            let peers = spec
                .skip_fdb_to
                .iter()
                .chain(&spec.stale_mac_for)
                .chain(&spec.second_nic_to);
            for &peer in peers {
                let known = (0..count).map(role_of).any(|role| role == peer);
                ensure!(
                    known && peer != role_of(index),
                    "node {} has a fault toward {peer:?}, which is not a peer",
                    role_of(index)
                );
            }
        }

        let stem = next_lab_stem();
        let fabric = Fabric::create(&stem)?;
        let mut nodes = Vec::with_capacity(count);
        for (index, spec) in self.specs.into_iter().enumerate() {
            nodes.push(Node::create(&fabric, &stem, index, spec)?);
        }
        for node in &nodes {
            for peer in nodes.iter().filter(|peer| peer.index != node.index) {
                node.add_peer(peer).with_context(|| {
                    format!(
                        "node {} (netns {}): adding peer {}",
                        node.role,
                        node.name(),
                        peer.role
                    )
                })?;
            }
        }
        Ok(Lab { fabric, nodes })
    }
}

/// A running lab. Dropping it deletes every namespace it created (and with
/// them all its devices); [`Lab::cleanup`] does the same but reports errors.
pub struct Lab {
    fabric: Fabric,
    nodes: Vec<Node>,
}

impl Lab {
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// The common case: nodes a and b, healthy.
    pub fn two_nodes() -> Result<Lab> {
        Lab::builder().nodes(2).build()
    }

    pub fn fabric(&self) -> &Fabric {
        &self.fabric
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node with role `role` ('a', 'b', ...).
    ///
    /// # Panics
    /// If there is no such node: asking for one is a bug in the test.
    pub fn node(&self, role: char) -> &Node {
        self.nodes
            .iter()
            .find(|node| node.role == role)
            .unwrap_or_else(|| panic!("lab has no node {role:?} ({} nodes)", self.nodes.len()))
    }

    /// Names of all namespaces of this lab, fabric first.
    pub fn netns_names(&self) -> Vec<String> {
        std::iter::once(self.fabric.name())
            .chain(
                self.nodes
                    .iter()
                    .flat_map(|node| [node.name(), node.pod.name()]),
            )
            .map(str::to_owned)
            .collect()
    }

    /// Deletes every namespace, trying all of them before reporting.
    pub fn cleanup(self) -> Result<()> {
        let Lab { fabric, nodes } = self;
        let mut errors = Vec::new();
        let mut all = Vec::new();
        for node in nodes {
            all.push(node.pod.netns);
            all.push(node.netns);
        }
        all.push(fabric.netns);
        for mut netns in all {
            if let Err(e) = netns.delete() {
                errors.push(format!("{e:#}"));
            }
        }
        if !errors.is_empty() {
            bail!("lab cleanup failed: {}", errors.join("; "));
        }
        Ok(())
    }
}

/// Builds a lab, runs `body` on it, tears the lab down and checks that none
/// of its namespaces (nor a veth of it in the root namespace) is left, even
/// when `body` fails or panics. A panic is re-raised after the cleanup.
pub fn with_lab(builder: LabBuilder, body: impl FnOnce(&Lab) -> Result<()>) -> Result<()> {
    let lab = builder.build()?;
    let names = lab.netns_names();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| body(&lab)));
    let cleaned = lab.cleanup().and_then(|()| ensure_removed(&names));
    match outcome {
        Err(panic) => {
            if let Err(e) = cleaned {
                eprintln!("flannel-trace-tests: {e:#}");
            }
            panic::resume_unwind(panic)
        }
        Ok(Err(e)) => Err(match cleaned {
            Ok(()) => e,
            Err(cleanup) => e.context(format!("and then {cleanup:#}")),
        }),
        Ok(Ok(())) => cleaned,
    }
}

/// Fails if any of `names` is still a namespace, or a lab veth sits in the
/// root namespace.
fn ensure_removed(names: &[String]) -> Result<()> {
    let left: Vec<String> = list_netns()?
        .into_iter()
        .filter(|name| names.contains(name))
        .collect();
    ensure!(left.is_empty(), "namespaces left behind: {left:?}");
    let veths: Vec<String> = root_veths()?
        .into_iter()
        .filter(|name| name.starts_with(FABRIC_PORT_PREFIX))
        .collect();
    ensure!(
        veths.is_empty(),
        "lab veths in the root namespace: {veths:?}"
    );
    Ok(())
}

/// The underlay network. Dereferences to its [`Netns`] for `exec`, `nft`
/// and the other namespace helpers.
pub struct Fabric {
    netns: Netns,
}

impl Fabric {
    fn create(stem: &str) -> Result<Fabric> {
        let netns = Netns::create(format!("{stem}-fabric"))?;
        disable_ipv6(&netns)?;
        // With br_netfilter loaded (it is on many hosts, and sets these to 1
        // in every namespace), bridged IPv4 frames also traverse the inet
        // hooks and conntrack of the fabric. Turning that off makes the
        // fabric behave the same on every host: only `bridge` family rules
        // see what the bridge switches. Without br_netfilter the files do
        // not exist, which is the behaviour we want anyway.
        for family in ["iptables", "ip6tables", "arptables"] {
            match netns.write_sysctl(&format!("net/bridge/bridge-nf-call-{family}"), "0") {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other.with_context(|| {
                    format!("turning off bridge-nf-call-{family} in {}", netns.name())
                })?,
            }
        }
        let steps = [
            "link set lo up".to_owned(),
            format!("link add {FABRIC_BRIDGE} type bridge"),
            format!("addr add {FABRIC_GATEWAY}/{UNDERLAY_PREFIX_LEN} dev {FABRIC_BRIDGE}"),
            // The second NICs' subnet, routed by the fabric.
            format!("addr add {SECOND_GATEWAY}/{UNDERLAY_PREFIX_LEN} dev {FABRIC_BRIDGE}"),
            format!("link set {FABRIC_BRIDGE} up"),
        ];
        for step in &steps {
            netns
                .ip(step)
                .with_context(|| format!("setting up fabric netns {}", netns.name()))?;
        }
        netns.set_sysctl("net/ipv4/ip_forward", "1")?;
        Ok(Fabric { netns })
    }
}

impl Deref for Fabric {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.netns
    }
}

/// One cluster node. Dereferences to its [`Netns`] for `exec`, `ping`,
/// `tcp_connect` and the other namespace helpers.
pub struct Node {
    netns: Netns,
    pod: Pod,
    role: char,
    index: usize,
    spec: NodeSpec,
}

/// The pod behind a node's cni0: its own namespace with `eth0` on a veth
/// whose other end is a port of cni0, as flannel's CNI plugin (bridge)
/// sets one up. Dereferences to its [`Netns`].
pub struct Pod {
    netns: Netns,
    ip: Ipv4Addr,
}

impl Pod {
    /// The pod's address, 10.244.<i>.2.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

impl Deref for Pod {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.netns
    }
}

impl Node {
    fn create(fabric: &Fabric, stem: &str, index: usize, spec: NodeSpec) -> Result<Node> {
        let role = role_of(index);
        let netns = Netns::create(format!("{stem}-{role}"))?;
        disable_ipv6(&netns)?;
        let pod_netns = Netns::create(format!("{stem}-{role}pod"))?;
        disable_ipv6(&pod_netns)?;
        let pod = Pod {
            netns: pod_netns,
            ip: Ipv4Addr::new(10, 244, pod_octet(index), 2),
        };
        let node = Node {
            netns,
            pod,
            role,
            index,
            spec,
        };
        node.configure(fabric)
            .with_context(|| format!("setting up node {role} (netns {})", node.name()))?;
        Ok(node)
    }

    fn configure(&self, fabric: &Fabric) -> Result<()> {
        let port = fabric_port(self.role);
        let underlay = self.underlay_ip();
        self.ip("link set lo up")?;
        // Creating the pair here with the peer placed straight into the
        // fabric means no lab veth ever exists in the root namespace.
        self.ip(&format!(
            "link add {UNDERLAY_IFACE} type veth peer name {port} netns {}",
            fabric.name()
        ))?;
        fabric.ip(&format!("link set {port} master {FABRIC_BRIDGE}"))?;
        if let Some(mtu) = self.spec.fabric_mtu {
            fabric.ip(&format!("link set {port} mtu {mtu}"))?;
        }
        fabric.ip(&format!("link set {port} up"))?;
        self.ip(&format!("link set {UNDERLAY_IFACE} up"))?;
        let l3 = self.underlay_vlans()?;
        self.ip(&format!(
            "addr add {underlay}/{UNDERLAY_PREFIX_LEN} dev {l3}"
        ))?;
        self.ip(&format!("route add default via {FABRIC_GATEWAY} dev {l3}"))?;

        // The VTEP exactly as flannel creates it: fixed MAC, local underlay
        // address, no learning (flannel programs FDB and neighbours itself).
        let (mac, vni, dstport) = (self.vtep_mac(), self.spec.vni, self.spec.vxlan_port);
        self.ip(&format!(
            "link add {VXLAN_IFACE} address {mac} type vxlan id {vni} local {underlay} \
             dev {l3} dstport {dstport} nolearning"
        ))?;
        self.ip(&format!("link set {VXLAN_IFACE} mtu {VXLAN_MTU}"))?;
        self.ip(&format!("addr add {}/32 dev {VXLAN_IFACE}", self.vtep_ip()))?;
        self.ip(&format!("link set {VXLAN_IFACE} up"))?;

        // cni0 is a bridge as on a real node, with flannel's MTU, holding
        // the node's gateway address of the pod subnet, and one pod behind
        // it on a veth, as flannel's CNI (the bridge plugin) sets it up.
        // The node forwards between cni0 and flannel.1: pod traffic to
        // another node is routed, not bridged, exactly as in a cluster.
        self.ip(&format!("link add {POD_IFACE} mtu {VXLAN_MTU} type bridge"))?;
        self.ip(&format!("addr add {}/24 dev {POD_IFACE}", self.cni_ip()))?;
        self.ip(&format!("link set {POD_IFACE} up"))?;
        self.ip(&format!(
            "link add {POD_VETH} mtu {VXLAN_MTU} type veth peer name eth0 netns {}",
            self.pod.name()
        ))?;
        self.ip(&format!("link set {POD_VETH} master {POD_IFACE}"))?;
        self.ip(&format!("link set {POD_VETH} up"))?;
        let pod = &self.pod.netns;
        pod.ip("link set lo up")?;
        pod.ip(&format!("addr add {}/24 dev eth0", self.pod.ip))?;
        pod.ip("link set eth0 up")?;
        pod.ip(&format!("route add default via {}", self.cni_ip()))?;
        self.set_sysctl("net/ipv4/ip_forward", "1")?;
        // A bridge with br_netfilter loaded would also pass the pod's
        // bridged frames through iptables; flannel nodes usually have that,
        // but the lab keeps the datapath the same on every host.
        for family in ["iptables", "ip6tables", "arptables"] {
            match self.write_sysctl(&format!("net/bridge/bridge-nf-call-{family}"), "0") {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other.with_context(|| format!("turning off bridge-nf-call-{family}"))?,
            }
        }
        if let Some(&peer) = self.spec.second_nic_to.first() {
            // A second NIC on the same fabric, in a second subnet that the
            // fabric routes (so the tracers' own TCP channel still works),
            // with a more specific route to the peer through it. The
            // scenario then lets the fabric drop VXLAN arriving from it: a
            // second network whose security group lacks the VXLAN port.
            let far = second_nic_port(self.role);
            self.ip(&format!(
                "link add {SECOND_IFACE} type veth peer name {far} netns {}",
                fabric.name()
            ))?;
            fabric.ip(&format!("link set {far} master {FABRIC_BRIDGE}"))?;
            fabric.ip(&format!("link set {far} up"))?;
            self.ip(&format!(
                "addr add {}/24 dev {SECOND_IFACE}",
                second_nic_ip(self.index)
            ))?;
            self.ip(&format!("link set {SECOND_IFACE} up"))?;
            let dst = underlay_ip(index_of(peer));
            self.ip(&format!("route add {dst}/32 dev {SECOND_IFACE}"))?;
        }
        Ok(())
    }

    /// The VLAN devices of a VLAN underlay, stacked on eth1; returns the
    /// device the node's address goes on (eth1 itself without tags).
    fn underlay_vlans(&self) -> Result<String> {
        let mut lower = UNDERLAY_IFACE.to_owned();
        let n = self.spec.underlay_tags.len();
        for (i, (protocol, vid)) in self.spec.underlay_tags.iter().enumerate() {
            let name = if i + 1 == n {
                UNDERLAY_VLAN_IFACE.to_owned()
            } else {
                format!("{UNDERLAY_VLAN_IFACE}{i}")
            };
            self.ip(&format!(
                "link add link {lower} name {name} type vlan protocol {protocol} id {vid}"
            ))?;
            self.ip(&format!("link set {name} up"))?;
            lower = name;
        }
        Ok(lower)
    }

    /// flannel's three entries per remote node: an onlink route to the
    /// peer's pod subnet via its VTEP address, a permanent neighbour entry
    /// for that address, and an FDB entry mapping the VTEP MAC to the peer's
    /// underlay IP.
    fn add_peer(&self, peer: &Node) -> Result<()> {
        let (subnet, vtep) = (peer.pod_subnet(), peer.vtep_ip());
        let mac = if self.spec.stale_mac_for.contains(&peer.role) {
            stale_vtep_mac(peer.index)
        } else {
            peer.vtep_mac()
        };
        self.ip(&format!(
            "route add {subnet}/24 via {vtep} dev {VXLAN_IFACE} onlink"
        ))?;
        self.ip(&format!(
            "neigh replace {vtep} lladdr {mac} dev {VXLAN_IFACE} nud permanent"
        ))?;
        if !self.spec.skip_fdb_to.contains(&peer.role) {
            let dst = peer.underlay_ip();
            self.bridge(&format!("fdb append {mac} dev {VXLAN_IFACE} dst {dst}"))?;
        }
        Ok(())
    }

    /// 'a', 'b', ...
    pub fn role(&self) -> char {
        self.role
    }

    /// Address of eth1 on the underlay: a=.51, b=.55, then .52, .53, ...
    pub fn underlay_ip(&self) -> Ipv4Addr {
        underlay_ip(self.index)
    }

    /// The node's pod subnet 10.244.<i>.0 (/24), i = 1 for node a.
    pub fn pod_subnet(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, pod_octet(self.index), 0)
    }

    /// Address of flannel.1 (10.244.<i>.0/32), what peers route via.
    pub fn vtep_ip(&self) -> Ipv4Addr {
        self.pod_subnet()
    }

    /// The node's own address on cni0 (10.244.<i>.1), the pods' gateway:
    /// traffic from or to it is host-network traffic, not a pod's.
    pub fn cni_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, pod_octet(self.index), 1)
    }

    /// The pod behind cni0.
    pub fn pod(&self) -> &Pod {
        &self.pod
    }

    /// The pod's address (10.244.<i>.2).
    pub fn pod_ip(&self) -> Ipv4Addr {
        self.pod.ip
    }

    /// The MAC this node's peers keep for it under the stale-VtepMAC fault.
    pub fn stale_vtep_mac(&self) -> String {
        stale_vtep_mac(self.index)
    }

    /// flannel.1's MAC, fixed per node so FDB and neighbour entries can be
    /// written before the peers exist.
    pub fn vtep_mac(&self) -> String {
        vtep_mac(self.index)
    }

    pub fn vxlan_port(&self) -> u16 {
        self.spec.vxlan_port
    }

    pub fn vni(&self) -> u32 {
        self.spec.vni
    }

    /// This node's veth on the fabric bridge (in the fabric namespace).
    pub fn fabric_port(&self) -> String {
        fabric_port(self.role)
    }
}

impl Deref for Node {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.netns
    }
}

/// The overlay is IPv4 only. Left on, IPv6 sends router solicitations, MLD
/// reports and DAD probes at random moments after link-up; on flannel.1
/// these multicast frames have no FDB entry and are dropped, which would
/// show up as unexplained drops in the tracer's tests. Set before any
/// device exists so "default" covers all of them.
fn disable_ipv6(netns: &Netns) -> Result<()> {
    netns.set_sysctl("net/ipv6/conf/all/disable_ipv6", "1")?;
    netns.set_sysctl("net/ipv6/conf/default/disable_ipv6", "1")
}

fn role_of(index: usize) -> char {
    char::from(b'a' + index as u8)
}

/// Fabric-side name of a node's second NIC.
pub fn second_nic_port(role: char) -> String {
    format!("{SECOND_NIC_PREFIX}{role}")
}

fn index_of(role: char) -> usize {
    (role as u8 - b'a') as usize
}

/// Address of the second NIC: 10.25.2.<host of the first>.
fn second_nic_ip(index: usize) -> Ipv4Addr {
    let [_, _, _, host] = underlay_ip(index).octets();
    Ipv4Addr::new(10, 25, 2, host)
}

fn fabric_port(role: char) -> String {
    format!("{FABRIC_PORT_PREFIX}{role}")
}

/// Node a is .51 and node b is .55, the addresses of the incident post;
/// further nodes fill in from .52 upward, skipping b's .55.
fn underlay_ip(index: usize) -> Ipv4Addr {
    let host = match index {
        0 => 51,
        1 => 55,
        n if n + 50 < 55 => n + 50,
        n => n + 51,
    };
    Ipv4Addr::new(10, 25, 1, host as u8)
}

fn pod_octet(index: usize) -> u8 {
    index as u8 + 1
}

/// Locally administered unicast MAC (0x0e: bit 1 set, bit 0 clear).
fn vtep_mac(index: usize) -> String {
    format!("0e:f7:00:00:00:{:02x}", index + 1)
}

/// The "old" VtepMAC of a node, before its flannel.1 was re-created.
fn stale_vtep_mac(index: usize) -> String {
    format!("0e:f7:00:00:99:{:02x}", index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underlay_addresses_match_the_incident_and_stay_unique() {
        let hosts: Vec<u8> = (0..6).map(|i| underlay_ip(i).octets()[3]).collect();
        assert_eq!(hosts, [51, 55, 52, 53, 54, 56]);
        let all: std::collections::HashSet<_> = (0..MAX_NODES).map(underlay_ip).collect();
        assert_eq!(all.len(), MAX_NODES);
    }

    #[test]
    fn names_and_macs_per_role() {
        assert_eq!(role_of(0), 'a');
        assert_eq!(role_of(25), 'z');
        assert_eq!(fabric_port('b'), "ftv-b");
        assert_eq!(vtep_mac(1), "0e:f7:00:00:00:02");
    }

    #[test]
    fn rejects_bad_specs_before_touching_the_system() {
        assert!(Lab::builder().build().is_err());
        assert!(Lab::builder().nodes(MAX_NODES + 1).build().is_err());
        let err = Lab::builder()
            .node(NodeSpec::new().skip_fdb_to('c'))
            .node(NodeSpec::new())
            .build()
            .err()
            .unwrap();
        assert!(format!("{err}").contains("not a peer"));
    }
}
