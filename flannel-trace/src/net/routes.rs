//! Routes of the traced namespace: where the kernel sends a given address
//! (`ip route get`), the interface of the default route (the underlay when
//! none is named), and the routing table itself, from which the pod network
//! of a flannel node is read (routes through the vxlan device to the other
//! nodes' pod subnets, and the route of this node's own subnet on its pod
//! device).

use std::net::IpAddr;

use netlink_packet_core::{Emitable as _, NLM_F_ACK, NlaBuffer, ParseableParametrized};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteLwEnCapType, RouteMessage, RouteType},
};

use super::{
    Cidr,
    error::NetError,
    netlink::{attributes, dump, exchange},
};

/// One unicast route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
}

impl Route {
    /// The destination as a prefix; `None` for a length the family cannot
    /// have (corrupt data).
    pub fn prefix(&self) -> Option<Cidr> {
        Cidr::new(self.dst, self.prefix_len)
    }
}

/// Every unicast route of the main table, IPv4 then IPv6.
pub fn routes() -> Result<Vec<Route>, NetError> {
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
pub fn route_to(dst: IpAddr) -> Result<Option<Route>, NetError> {
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
        Err(NetError::Netlink { error, .. })
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

/// The output interface of the IPv4 default route (main table), else of the
/// IPv6 one; None if there is none. With several default routes the one with
/// the lowest metric wins, as in the kernel. A route whose next hop is a
/// nexthop object (`ip route ... nhid N`) names no interface and is ignored.
pub fn default_route_ifindex() -> Result<Option<u32>, NetError> {
    for (family, label) in [
        (AddressFamily::Inet, "IPv4"),
        (AddressFamily::Inet6, "IPv6"),
    ] {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        let what = format!("list the {label} routes");
        let payloads = dump(
            RouteNetlinkMessage::GetRoute(request),
            libc::RTM_NEWROUTE,
            &what,
        )?;
        if let Some(oif) = best_default_route(&payloads, family) {
            return Ok(Some(oif));
        }
    }
    Ok(None)
}

/// A default route's output interface and metric.
#[derive(Debug, PartialEq, Eq)]
struct DefaultRoute {
    oif: u32,
    metric: u32,
}

/// Decodes an RTM_NEWROUTE payload if it is a unicast default route of the
/// main table that names its output interface.
fn default_route(payload: &[u8], family: AddressFamily) -> Option<DefaultRoute> {
    let header = RouteHeader::parse(payload).ok()?;
    // A kernel without IPv6 answers an IPv6 dump with every family's routes.
    if header.address_family != family
        || header.destination_prefix_length != 0
        || header.source_prefix_length != 0
        || header.kind != RouteType::Unicast
    {
        return None;
    }
    // Table ids above 255 only fit in RTA_TABLE, which then wins.
    let mut table = u32::from(header.table);
    let (mut oif, mut metric) = (None, 0);
    let param = (header.address_family, header.kind, RouteLwEnCapType::None);
    let decode = |nla: &NlaBuffer<&[u8]>| RouteAttribute::parse_with_param(nla, param);
    for attribute in attributes(payload, header.buffer_len(), decode) {
        match attribute {
            RouteAttribute::Table(id) => table = id,
            RouteAttribute::Oif(index) => oif = Some(index),
            RouteAttribute::Priority(priority) => metric = priority,
            // ECMP: the first hop stands for the route.
            RouteAttribute::MultiPath(hops) => {
                oif = oif.or(hops.first().map(|hop| hop.interface_index));
            }
            _ => {}
        }
    }
    (table == u32::from(libc::RT_TABLE_MAIN)).then_some(DefaultRoute { oif: oif?, metric })
}

/// The output interface of the default route with the lowest metric among
/// RTM_NEWROUTE payloads.
fn best_default_route(payloads: &[Vec<u8>], family: AddressFamily) -> Option<u32> {
    let routes = payloads.iter().filter_map(|p| default_route(p, family));
    routes
        .min_by_key(|route| route.metric)
        .map(|route| route.oif)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::captured::{DEFAULT_ROUTE, hex};

    /// An IPv4 unicast route in `table`, emitted by the crate.
    fn route(table: u8, prefix: u8, oif: u32, metric: u32) -> Vec<u8> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.destination_prefix_length = prefix;
        message.header.table = table;
        message.header.kind = RouteType::Unicast;
        message.attributes.push(RouteAttribute::Oif(oif));
        message.attributes.push(RouteAttribute::Priority(metric));
        let mut bytes = vec![0; message.buffer_len()];
        message.emit(&mut bytes);
        bytes
    }

    #[test]
    fn picks_the_main_table_default_route_with_the_lowest_metric() {
        let captured = hex(DEFAULT_ROUTE);
        let main = libc::RT_TABLE_MAIN;
        assert_eq!(
            default_route(&captured, AddressFamily::Inet),
            Some(DefaultRoute { oif: 3, metric: 0 })
        );
        assert_eq!(default_route(&captured, AddressFamily::Inet6), None);
        let routes = [
            route(main, 0, 7, 200),
            route(100, 0, 8, 1),
            route(main, 24, 9, 1),
        ];
        assert_eq!(best_default_route(&routes, AddressFamily::Inet), Some(7));
        let routes = [routes[0].clone(), route(main, 0, 5, 100)];
        assert_eq!(best_default_route(&routes, AddressFamily::Inet), Some(5));
        assert_eq!(best_default_route(&[], AddressFamily::Inet), None);
    }
}
