//! Routes of the traced namespace: where the kernel sends a given address
//! (`ip route get`), and the routing table itself, from which the pod
//! network of a flannel node is read (routes through the vxlan device to the
//! other nodes' pod subnets, and the route of this node's own subnet on its
//! pod device).

use std::net::IpAddr;

use netlink_packet_core::{Emitable as _, NLM_F_ACK, NlaBuffer, ParseableParametrized};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteLwEnCapType, RouteMessage, RouteType},
};

use crate::netdev::{NetdevError, attributes, dump, exchange};

/// One unicast route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
}

/// Every unicast route of the main table, IPv4 then IPv6.
pub fn routes() -> Result<Vec<Route>, NetdevError> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        let payloads = dump(
            RouteNetlinkMessage::GetRoute(request),
            libc::RTM_NEWROUTE,
            "list the routes",
        )?;
        out.extend(payloads.iter().filter_map(|p| decode(p, family, true)));
    }
    Ok(out)
}

/// The route the kernel picks for `dst` (RTM_GETROUTE, as `ip route get`:
/// policy rules and metrics included). `None` when there is none.
pub fn route_to(dst: IpAddr) -> Result<Option<Route>, NetdevError> {
    let family = match dst {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let mut request = RouteMessage::default();
    request.header.address_family = family;
    request.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    request
        .attributes
        .push(RouteAttribute::Destination(match dst {
            IpAddr::V4(a) => RouteAddress::Inet(a),
            IpAddr::V6(a) => RouteAddress::Inet6(a),
        }));
    let what = format!("look up the route to {dst}");
    let reply = match exchange(RouteNetlinkMessage::GetRoute(request), NLM_F_ACK, &what) {
        Ok(r) => r,
        // "Network is unreachable": no route at all.
        Err(NetdevError::Netlink { error, .. })
            if matches!(
                error.raw_os_error(),
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Ok(reply
        .payloads(libc::RTM_NEWROUTE)
        .find_map(|p| decode(p, family, false)))
}

fn decode(payload: &[u8], family: AddressFamily, main_only: bool) -> Option<Route> {
    let header = RouteHeader::parse(payload).ok()?;
    if header.address_family != family || header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(header.table);
    let (mut dst, mut oif, mut gateway) = (None, None, None);
    let param = (header.address_family, header.kind, RouteLwEnCapType::None);
    let parse = |nla: &NlaBuffer<&[u8]>| RouteAttribute::parse_with_param(nla, param);
    for attribute in attributes(payload, header.buffer_len(), parse) {
        match attribute {
            RouteAttribute::Table(id) => table = id,
            RouteAttribute::Oif(index) => oif = Some(index),
            RouteAttribute::Destination(a) => dst = ip_of(&a),
            RouteAttribute::Gateway(a) => gateway = ip_of(&a),
            // ECMP: the first hop stands for the route.
            RouteAttribute::MultiPath(hops) => {
                oif = oif.or(hops.first().map(|hop| hop.interface_index));
            }
            _ => {}
        }
    }
    if main_only && table != u32::from(libc::RT_TABLE_MAIN) {
        return None;
    }
    let unspecified = match family {
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    };
    Some(Route {
        dst: dst.unwrap_or(unspecified),
        prefix_len: header.destination_prefix_length,
        oif,
        gateway,
    })
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}
