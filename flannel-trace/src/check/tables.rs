//! The neighbour, route and address tables `check` compares with the node
//! list, read with the network layer's lenient rtnetlink dump (see
//! net/netlink.rs).

use std::net::IpAddr;

use netlink_packet_core::{Emitable as _, NlaBuffer, Parseable, ParseableParametrized};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressHeader, AddressMessage},
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourHeader, NeighbourMessage, NeighbourState,
    },
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteLwEnCapType, RouteMessage},
};

use super::model::{Cidr, Neighbour, Route};
use crate::net::{self, NetError};

/// IPv4 and IPv6 neighbour entries of interface `index` (`ip neigh show dev`).
/// An entry without a MAC (incomplete, failed) is kept, with `mac: None`.
pub fn neighbours(index: u32) -> Result<Vec<Neighbour>, NetError> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = NeighbourMessage::default();
        request.header.family = family;
        let payloads = net::dump(
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
    for attribute in net::attributes(payload, header.buffer_len(), decode) {
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

/// The main table's IPv4 and IPv6 routes (`ip route show table main`).
pub fn routes() -> Result<Vec<Route>, NetError> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        let payloads = net::dump(
            RouteNetlinkMessage::GetRoute(request),
            libc::RTM_NEWROUTE,
            "list the routes",
        )?;
        out.extend(payloads.iter().filter_map(|p| route(p, family)));
    }
    Ok(out)
}

fn route(payload: &[u8], family: AddressFamily) -> Option<Route> {
    let header = RouteHeader::parse(payload).ok()?;
    if header.address_family != family {
        return None;
    }
    let mut table = u32::from(header.table);
    let (mut dst, mut gateway, mut oif) = (None, None, None);
    let param = (header.address_family, header.kind, RouteLwEnCapType::None);
    let decode = |nla: &NlaBuffer<&[u8]>| RouteAttribute::parse_with_param(nla, param);
    for attribute in net::attributes(payload, header.buffer_len(), decode) {
        match attribute {
            RouteAttribute::Table(id) => table = id,
            RouteAttribute::Destination(a) => dst = ip_of(a),
            RouteAttribute::Gateway(a) => gateway = ip_of(a),
            RouteAttribute::Oif(i) => oif = Some(i),
            RouteAttribute::MultiPath(hops) => {
                oif = oif.or(hops.first().map(|h| h.interface_index));
            }
            _ => {}
        }
    }
    if table != u32::from(libc::RT_TABLE_MAIN) {
        return None;
    }
    let unspecified: IpAddr = match family {
        AddressFamily::Inet6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
        _ => std::net::Ipv4Addr::UNSPECIFIED.into(),
    };
    Some(Route {
        dst: Cidr::new(dst.unwrap_or(unspecified), header.destination_prefix_length)?,
        gateway,
        oif,
    })
}

fn ip_of(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(v.into()),
        RouteAddress::Inet6(v) => Some(v.into()),
        _ => None,
    }
}

/// Every address of every interface in this network namespace.
pub fn all_addresses() -> Result<Vec<IpAddr>, NetError> {
    let payloads = net::dump(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        libc::RTM_NEWADDR,
        "list the addresses",
    )?;
    Ok(payloads
        .iter()
        .filter_map(|p| {
            let header = AddressHeader::parse(p).ok()?;
            let decode = |nla: &NlaBuffer<&[u8]>| AddressAttribute::parse(nla);
            let (mut local, mut address) = (None, None);
            for a in net::attributes(p, header.buffer_len(), decode) {
                match a {
                    AddressAttribute::Local(ip) => local = Some(ip),
                    AddressAttribute::Address(ip) => address = Some(ip),
                    _ => {}
                }
            }
            local.or(address)
        })
        .collect())
}
