//! The interfaces of the network namespace as rtnetlink describes them
//! (`ip link`, `ip addr`): name, index, kind, MTU, MAC, the vxlan settings
//! of a vxlan device, and the addresses of an interface.

use std::{ffi::CStr, net::IpAddr};

use netlink_packet_core::{
    DecodeError, Emitable, NLM_F_ACK, NlaBuffer, Parseable, ParseableParametrized,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    address::{AddressAttribute, AddressHeader, AddressMessage},
    link::{self, InfoData, InfoVxlan, LinkAttribute, LinkFlags, LinkHeader, LinkMessage},
};

use super::{
    error::{NetError, decode_error},
    netlink::{attributes, dump, exchange},
};

/// A network interface as rtnetlink describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// Driver kind from IFLA_LINKINFO/IFLA_INFO_KIND ("vxlan", "veth",
    /// "bridge", ...); `None` for plain devices such as `lo` or a NIC.
    pub kind: Option<String>,
    pub mtu: u32,
    /// The hardware address, when it is a 6-byte (Ethernet) one.
    pub mac: Option<[u8; 6]>,
    /// IFLA_LINK: the ifindex of the lower device or, for a veth, of its peer,
    /// which may live in another network namespace. A vxlan device names its
    /// underlay in [`VxlanInfo::link`] instead.
    pub link: Option<u32>,
    /// Administratively up (IFF_UP, what `ip link set up` sets); the carrier
    /// may still be down.
    pub up: bool,
    /// IFF_LOOPBACK: `lo`, never an underlay.
    pub loopback: bool,
    /// Set for vxlan devices only.
    pub vxlan: Option<VxlanInfo>,
}

/// The vxlan settings that decide where encapsulated frames go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanInfo {
    pub vni: Option<u32>,
    /// UDP destination port (IFLA_VXLAN_PORT), in host byte order.
    pub port: Option<u16>,
    /// IFLA_VXLAN_LINK: the ifindex of the underlay device.
    pub link: Option<u32>,
    /// IFLA_VXLAN_LOCAL or IFLA_VXLAN_LOCAL6: the source address of the outer
    /// packets.
    pub local: Option<IpAddr>,
    pub learning: Option<bool>,
}

/// Looks an interface up by name. An alternative name (`ip link property add
/// dev eth0 altname ...`) of at most 15 bytes matches too; `name` is then the
/// primary name.
pub fn link_by_name(name: &str) -> Result<LinkInfo, NetError> {
    check_name(name)?;
    let mut request = LinkMessage::default();
    request
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    get_link(
        request,
        &format!("look up network interface {name}"),
        || NetError::NoSuchName(name.to_owned()),
    )
}

/// Looks an interface up by ifindex.
pub fn link_by_index(index: u32) -> Result<LinkInfo, NetError> {
    // The kernel's ifindex is a positive C int; 0 would make it look for a
    // name instead.
    if index == 0 || i32::try_from(index).is_err() {
        return Err(NetError::NoSuchIndex(index));
    }
    let mut request = LinkMessage::default();
    request.header.index = index;
    get_link(
        request,
        &format!("look up network interface index {index}"),
        || NetError::NoSuchIndex(index),
    )
}

/// All interfaces of the network namespace. An interface whose description
/// cannot be decoded at all (not even its name) is left out.
pub fn links() -> Result<Vec<LinkInfo>, NetError> {
    let request = RouteNetlinkMessage::GetLink(LinkMessage::default());
    let payloads = dump(request, libc::RTM_NEWLINK, "list the network interfaces")?;
    Ok(payloads
        .iter()
        .filter_map(|p| decode_link(p).ok())
        .collect())
}

/// IPv4/IPv6 addresses configured on an interface (empty for an unknown
/// index).
pub fn addresses(index: u32) -> Result<Vec<IpAddr>, NetError> {
    let request = RouteNetlinkMessage::GetAddress(AddressMessage::default());
    let what = format!("list the addresses of {}", iface(index));
    let payloads = dump(request, libc::RTM_NEWADDR, &what)?;
    Ok(payloads
        .iter()
        .filter_map(|p| address_of(p, Some(index)))
        .collect())
}

/// Every address of every interface in this network namespace.
pub fn all_addresses() -> Result<Vec<IpAddr>, NetError> {
    let request = RouteNetlinkMessage::GetAddress(AddressMessage::default());
    let payloads = dump(request, libc::RTM_NEWADDR, "list the addresses")?;
    Ok(payloads
        .iter()
        .filter_map(|p| address_of(p, None))
        .collect())
}

/// ifindex -> name with `if_indextoname`, cheap enough for every event; None if
/// no interface has that index (any more).
pub fn ifname(index: u32) -> Option<String> {
    let mut name = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `name` has the IF_NAMESIZE bytes if_indextoname may write.
    let found = unsafe { libc::if_indextoname(index, name.as_mut_ptr().cast()) };
    if found.is_null() {
        return None;
    }
    let name = CStr::from_bytes_until_nul(&name).ok()?;
    Some(name.to_string_lossy().into_owned())
}

/// "interface eth1 (index 3)" for error messages, or "interface index 3" when
/// that index names nothing.
pub(super) fn iface(index: u32) -> String {
    match ifname(index) {
        Some(name) => format!("interface {name} (index {index})"),
        None => format!("interface index {index}"),
    }
}

/// Rejects names no interface can have before asking the kernel, which would
/// answer an over-long name with a bare EINVAL and would silently cut a name at
/// an embedded NUL (and then find another interface).
fn check_name(name: &str) -> Result<(), NetError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() >= libc::IF_NAMESIZE {
        "it is longer than 15 bytes"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(NetError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Sends RTM_GETLINK for one interface; `missing` is the error for ENODEV.
fn get_link(
    request: LinkMessage,
    what: &str,
    missing: impl FnOnce() -> NetError,
) -> Result<LinkInfo, NetError> {
    let reply = match exchange(RouteNetlinkMessage::GetLink(request), NLM_F_ACK, what) {
        Err(e) if e.errno() == Some(libc::ENODEV) => return Err(missing()),
        result => result?,
    };
    let payload = reply
        .payloads(libc::RTM_NEWLINK)
        .next()
        .ok_or_else(|| decode_error(what, "the kernel acknowledged but sent no interface"))?;
    decode_link(payload).map_err(|e| decode_error(what, e))
}

/// Decodes an RTM_NEWLINK payload (after the netlink header).
fn decode_link(payload: &[u8]) -> Result<LinkInfo, DecodeError> {
    let header = LinkHeader::parse(payload)?;
    let family = header.interface_family;
    let mut name = None;
    let mut info = LinkInfo {
        index: header.index,
        name: String::new(),
        kind: None,
        mtu: 0,
        mac: None,
        link: None,
        up: header.flags.contains(LinkFlags::Up),
        loopback: header.flags.contains(LinkFlags::Loopback),
        vxlan: None,
    };
    let decode = |nla: &NlaBuffer<&[u8]>| LinkAttribute::parse_with_param(nla, family);
    for attribute in attributes(payload, header.buffer_len(), decode) {
        match attribute {
            LinkAttribute::IfName(n) => name = Some(n),
            LinkAttribute::Mtu(mtu) => info.mtu = mtu,
            LinkAttribute::Address(mac) => info.mac = mac.as_slice().try_into().ok(),
            LinkAttribute::Link(link) => info.link = Some(link),
            LinkAttribute::LinkInfo(infos) => {
                for item in infos {
                    match item {
                        link::LinkInfo::Kind(kind) => info.kind = Some(kind.to_string()),
                        link::LinkInfo::Data(InfoData::Vxlan(vxlan)) => {
                            info.vxlan = Some(vxlan_info(&vxlan));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    info.name = name.ok_or("no decodable IFLA_IFNAME")?;
    Ok(info)
}

fn vxlan_info(attributes: &[InfoVxlan]) -> VxlanInfo {
    let mut vxlan = VxlanInfo::default();
    for attribute in attributes {
        match *attribute {
            InfoVxlan::Id(vni) => vxlan.vni = Some(vni),
            // The crate already turns the big-endian port into host order.
            InfoVxlan::Port(port) => vxlan.port = Some(port),
            InfoVxlan::Link(link) => vxlan.link = Some(link),
            InfoVxlan::Local(ip) => vxlan.local = Some(ip.into()),
            InfoVxlan::Local6(ip) => vxlan.local = Some(ip.into()),
            InfoVxlan::Learning(learning) => vxlan.learning = Some(learning),
            _ => {}
        }
    }
    vxlan
}

/// Decodes an RTM_NEWADDR payload if it belongs to interface `index`
/// (any interface's with `None`).
fn address_of(payload: &[u8], index: Option<u32>) -> Option<IpAddr> {
    let header = AddressHeader::parse(payload).ok()?;
    if index.is_some_and(|i| header.index != i) {
        return None;
    }
    let (mut local, mut address) = (None, None);
    let decode = |nla: &NlaBuffer<&[u8]>| AddressAttribute::parse(nla);
    for attribute in attributes(payload, header.buffer_len(), decode) {
        match attribute {
            AddressAttribute::Local(ip) => local = Some(ip),
            AddressAttribute::Address(ip) => address = Some(ip),
            _ => {}
        }
    }
    // On a point-to-point link IFA_ADDRESS is the peer and IFA_LOCAL is ours;
    // IPv6 sends IFA_ADDRESS only.
    local.or(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::captured::{FLANNEL_LINK, flannel_vxlan, hex};

    #[test]
    fn decodes_a_vxlan_link() {
        let link = decode_link(&hex(FLANNEL_LINK)).unwrap();
        assert_eq!(
            link,
            LinkInfo {
                index: 4,
                name: "flannel.1".into(),
                kind: Some("vxlan".into()),
                mtu: 1450,
                mac: Some([0xf6, 0xe2, 0xde, 0x4c, 0x26, 0x16]),
                link: None,
                up: true,
                loopback: false,
                vxlan: Some(flannel_vxlan()),
            }
        );
    }

    #[test]
    fn an_undecodable_attribute_does_not_hide_the_link() {
        let mut payload = hex(FLANNEL_LINK);
        payload.extend(hex("0500 0400 05 000000")); // IFLA_MTU with 1 byte
        let link = decode_link(&payload).unwrap();
        assert_eq!((link.name.as_str(), link.mtu), ("flannel.1", 1450));
        assert_eq!(link.vxlan, Some(flannel_vxlan()));
    }

    #[test]
    fn a_link_without_name_is_an_error_not_a_panic() {
        let payload = hex(FLANNEL_LINK);
        assert!(decode_link(&payload[..16]).is_err());
        assert!(decode_link(&payload[..7]).is_err());
    }

    #[test]
    fn rejects_impossible_names() {
        for name in ["", "a-name-of-16-byt", "eth0\0x"] {
            assert!(
                matches!(link_by_name(name), Err(NetError::InvalidName { .. })),
                "{name:?}"
            );
        }
        assert!(check_name("flannel.1").is_ok());
    }

    #[test]
    fn error_messages_say_what_to_do() {
        assert_eq!(
            NetError::NoSuchName("flannel.1".into()).to_string(),
            "no network interface named flannel.1 in this network namespace (list them with `ip link`)"
        );
    }

    /// Needs no privileges: every network namespace has `lo` as index 1.
    #[test]
    fn finds_loopback_in_the_current_namespace() {
        let lo = link_by_name("lo").unwrap();
        assert_eq!(
            (lo.index, lo.kind.as_deref(), lo.vxlan.as_ref()),
            (1, None, None)
        );
        assert_eq!(link_by_index(1).unwrap(), lo);
        assert!(links().unwrap().iter().any(|link| link.name == "lo"));
        assert_eq!(ifname(1).as_deref(), Some("lo"));
        assert_eq!(ifname(0), None);
        assert!(matches!(
            link_by_name("ndw-missing"),
            Err(NetError::NoSuchName(_))
        ));
        assert!(matches!(link_by_index(0), Err(NetError::NoSuchIndex(0))));
        assert!(matches!(
            link_by_index(u32::MAX),
            Err(NetError::NoSuchIndex(_))
        ));
    }
}
