//! The network layer: what the network stack of the current network
//! namespace holds, read and changed through rtnetlink (interfaces and their
//! addresses, the FDB of the vxlan device, routes, the clsact qdisc and its
//! tc filters), the `--probe` echo requests on a raw ICMP socket, and the
//! pod network's address prefixes.
//!
//! The bottom of the crate: it uses crates (netlink-packet-*, socket2,
//! libc, serde, tokio's timer) and flannel-trace-common, never clap nor
//! anything of `crate::` outside `net`. Its failures are one [`NetError`];
//! callers pick the exit status. Callers name items through this root
//! (`net::link_by_name`); the files say where each is read:
//!
//! - `netlink.rs`: the request/reply plumbing every other file goes through;
//! - `links.rs`: interfaces and addresses; `neighbours.rs`: the vxlan FDB;
//!   `routes.rs`: routes and the default route; `qdisc.rs`: clsact and tc
//!   filters;
//! - `icmp.rs`: the probes, named by their module (`net::icmp::run`);
//!   `podnet.rs`: prefixes and flanneld's subnet.env (pure, and compiled
//!   alone into xtask: no `super::` there);
//! - tests: next to their code, on the messages of `captured.rs`; those that
//!   need root (a network namespace of their own) in `netns_tests.rs`.

mod error;
pub mod icmp;
mod links;
mod neighbours;
mod netlink;
mod podnet;
mod qdisc;
mod routes;

#[cfg(test)]
mod captured;
#[cfg(test)]
mod netns_tests;

pub use error::NetError;
pub use links::{LinkInfo, addresses, all_addresses, ifname, link_by_index, link_by_name, links};
pub use neighbours::{FdbEntry, Neighbour, neighbours, vxlan_fdb};
pub use podnet::{Cidr, SUBNET_ENV, covering, link_scope, parse_subnet_env};
pub use qdisc::{
    TcFilter, clsact_filter_count, clsact_filters, delete_clsact, delete_filter, has_clsact,
};
pub use routes::{default_route_ifindex, route_to, routes};
