//! The forwarding database of a vxlan device (`bridge fdb show dev
//! flannel.1`): which VTEP each remote MAC lives behind; and its neighbour
//! table (`ip neigh show dev flannel.1`): which MAC each VTEP address has.

use std::net::IpAddr;

use netlink_packet_core::{Emitable, NlaBuffer, ParseableParametrized, parse_ip};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourHeader, NeighbourMessage, NeighbourState,
    },
};

use super::{
    error::NetError,
    links::iface,
    netlink::{attributes, dump},
};

/// One forwarding entry of a vxlan device: frames for `mac` are sent to the
/// VTEP at `dst`. flannel installs one per peer node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    pub dst: Option<IpAddr>,
}

/// The FDB entries of a vxlan device: each MAC with the underlay IP of the
/// VTEP it lives behind (`bridge fdb show dev flannel.1`). flannel installs one
/// per peer node: `<peer VTEP MAC> dst <peer underlay IP>`. A MAC with several
/// remotes appears once per remote.
pub fn vxlan_fdb(index: u32) -> Result<Vec<FdbEntry>, NetError> {
    let mut request = NeighbourMessage::default();
    request.header.family = AddressFamily::Bridge;
    let what = format!("list the FDB entries of {}", iface(index));
    // Older kernels ignore an ifindex in an FDB dump request, so we dump every
    // bridge-family entry and keep the device's own.
    let payloads = dump(
        RouteNetlinkMessage::GetNeighbour(request),
        libc::RTM_NEWNEIGH,
        &what,
    )?;
    Ok(payloads
        .iter()
        .filter_map(|p| fdb_entry(p, index))
        .collect())
}

/// Decodes an AF_BRIDGE RTM_NEWNEIGH payload if it belongs to interface
/// `index`.
pub(super) fn fdb_entry(payload: &[u8], index: u32) -> Option<FdbEntry> {
    let header = NeighbourHeader::parse(payload).ok()?;
    if header.ifindex != index {
        return None;
    }
    let (mut mac, mut dst) = (None, None);
    let decode = |nla: &NlaBuffer<&[u8]>| NeighbourAttribute::parse_with_param(nla, header.family);
    for attribute in attributes(payload, header.buffer_len(), decode) {
        match attribute {
            NeighbourAttribute::LinkLayerAddress(lladdr) => mac = lladdr.as_slice().try_into().ok(),
            NeighbourAttribute::Destination(address) => {
                dst = match address {
                    // In a bridge-family message the crate cannot tell the
                    // address family of NDA_DST and leaves the raw bytes.
                    NeighbourAddress::Other(raw) => parse_ip(&raw).ok(),
                    NeighbourAddress::Inet(ip) => Some(ip.into()),
                    NeighbourAddress::Inet6(ip) => Some(ip.into()),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    Some(FdbEntry { mac: mac?, dst })
}

/// A neighbour entry: an address and the MAC it resolved to, `None` for an
/// entry that resolved to nothing (incomplete, failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub mac: Option<[u8; 6]>,
}

/// IPv4 and IPv6 neighbour entries of interface `index` (`ip neigh show dev`).
/// An entry without a MAC (incomplete, failed) is kept, with `mac: None`.
pub fn neighbours(index: u32) -> Result<Vec<Neighbour>, NetError> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = NeighbourMessage::default();
        request.header.family = family;
        let payloads = dump(
            RouteNetlinkMessage::GetNeighbour(request),
            libc::RTM_NEWNEIGH,
            "list the neighbour entries",
        )?;
        out.extend(payloads.iter().filter_map(|p| neighbour(p, index)));
    }
    Ok(out)
}

fn neighbour(payload: &[u8], index: u32) -> Option<Neighbour> {
    let header = NeighbourHeader::parse(payload).ok()?;
    if header.ifindex != index {
        return None;
    }
    let (mut ip, mut mac) = (None, None);
    let decode = |nla: &NlaBuffer<&[u8]>| NeighbourAttribute::parse_with_param(nla, header.family);
    for attribute in attributes(payload, header.buffer_len(), decode) {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(a.into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => ip = Some(a.into()),
            NeighbourAttribute::LinkLayerAddress(l) => mac = l.as_slice().try_into().ok(),
            _ => {}
        }
    }
    // A failed entry may still carry the MAC it had; it is not used.
    if matches!(
        header.state,
        NeighbourState::Failed | NeighbourState::Incomplete
    ) {
        mac = None;
    }
    Some(Neighbour { ip: ip?, mac })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::net::captured::{FLANNEL_FDB, OTHER_FDB, hex};

    #[test]
    fn decodes_fdb_entries_of_the_asked_device_only() {
        let entry = fdb_entry(&hex(FLANNEL_FDB), 4);
        let dst = Some(Ipv4Addr::new(10, 25, 1, 55).into());
        assert_eq!(
            entry,
            Some(FdbEntry {
                mac: [0x76, 0x21, 0x69, 0x41, 0xde, 0xfe],
                dst
            })
        );
        assert_eq!(fdb_entry(&hex(FLANNEL_FDB), 5), None);
        let other = fdb_entry(&hex(OTHER_FDB), 5).unwrap();
        assert_eq!(other.dst, None);
    }
}
