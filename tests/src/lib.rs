//! A network-namespace lab that reproduces a flannel VXLAN overlay on one
//! machine, so flannel-trace's integration tests can run against a real
//! kernel datapath and inject the faults the tool is meant to find.
//!
//! Layout of a lab with nodes `a` and `b`:
//!
//! ```text
//!   netns ft-<pid>-<n>-apod                                                  netns ft-<pid>-<n>-bpod
//!   eth0      10.244.1.2/24 (pod)                                            eth0      10.244.2.2/24
//!      |  veth (vethpod, a port of cni0)                                        |
//!   netns ft-<pid>-<n>-a                netns ft-<pid>-<n>-fabric            netns ft-<pid>-<n>-b
//!   cni0      10.244.1.1/24 (bridge)                                         cni0      10.244.2.1/24
//!   flannel.1 10.244.1.0/32 (vxlan)                                          flannel.1 10.244.2.0/32
//!   eth1      10.25.1.51/24  ===veth===  ftv-a ─ br0 10.25.1.1/24 ─ ftv-b  ===veth===  eth1 10.25.1.55/24
//! ```
//!
//! Each node is configured the way flannel's vxlan backend configures a host
//! (device flags, onlink routes, permanent neighbours, FDB entries), so the
//! tracer sees the same packets it would see on a real cluster. The fabric
//! namespace plays the underlay network, the place where a cloud security
//! group would drop traffic.
//!
//! Everything needs root; call [`require_root`] and [`require_tools`] first
//! so a test fails with an actionable message instead of an `EPERM`.

mod command;
pub mod fixtures;
pub mod frames;
mod inject;
mod kernel;
pub mod kube;
mod lab;
pub mod leftovers;
mod lines;
mod link_stats;
mod netns;
mod nft;
mod preflight;
mod recordings;
pub mod records;
pub mod report;
pub mod scenario;
mod skip;
mod tracer;
mod traffic;

pub use inject::{Injector, mac_of, unparsed_of};
pub use kernel::{Kernel, Offer, patience};
pub use lab::{
    DEFAULT_VNI, DEFAULT_VXLAN_PORT, FABRIC_BRIDGE, FABRIC_GATEWAY, Fabric, Lab, LabBuilder, Node,
    NodeSpec, POD_IFACE, POD_VETH, Pod, SECOND_IFACE, UNDERLAY_IFACE, UNDERLAY_VLAN_IFACE,
    VXLAN_IFACE, VXLAN_MTU, second_nic_port, with_lab,
};
pub use lines::{LineReader, wait_for_line};
pub use link_stats::LinkStats;
pub use netns::{Netns, list_netns, remove_stale_namespaces, root_veths};
pub use nft::{
    FABRIC_DROP_CHAIN, FT_TABLE, INPUT_DROP_CHAIN, bridge_port_drop_udp, fabric_drop_udp,
    input_drop_udp, normalize_ruleset,
};
pub use preflight::{preflight, require_root, require_tools, serial};
pub use recordings::recording_dir;
pub use skip::{skip_check, skip_test};
pub use tracer::{Session, Tracer, backend, run_tracer, tracer_bin};
pub use traffic::{Listener, PingResult, parse_ping_summary};
