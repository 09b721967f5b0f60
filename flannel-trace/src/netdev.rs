//! What the kernel knows about the network devices of a flannel node: the
//! interfaces, the vxlan device with its FDB, addresses, the default route,
//! and the clsact qdisc that carries our tc programs.
//!
//! Everything goes through rtnetlink on a blocking `NETLINK_ROUTE` socket, and
//! every call opens its own socket. A netlink socket stays in the network
//! namespace that was current when it was created, so a fresh socket makes each
//! call act in the calling thread's current namespace (`ip netns exec`, or a
//! thread that called `setns`).
//!
//! Replies are decoded leniently: the family header with
//! `netlink-packet-route`'s parser, then each attribute on its own, skipping
//! the ones the crate fails to decode. Decoding a whole message with the crate
//! is all-or-nothing, so one attribute we never look at (a block grown by a
//! newer kernel, an option of some unrelated device) would otherwise hide an
//! interface or fail a whole listing.

use std::{ffi::CStr, io, net::IpAddr};

use netlink_packet_core::{
    DecodeError, DoneBuffer, Emitable, ErrorBuffer, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED,
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlaBuffer, NlasIterator,
    Parseable, ParseableParametrized, parse_ip, parse_string,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressHeader, AddressMessage},
    link::{self, InfoData, InfoVxlan, LinkAttribute, LinkFlags, LinkHeader, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourHeader, NeighbourMessage},
    route::{RouteAttribute, RouteHeader, RouteLwEnCapType, RouteMessage, RouteType},
    tc::{TcAttribute, TcFilterBpfOption, TcHeader, TcMessage, TcOption},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// tc parent of a clsact (or ingress) qdisc, `ffff:fff1`.
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
/// Handle of a clsact qdisc, `ffff:0`.
const CLSACT_HANDLE: u32 = 0xFFFF_0000;
/// tc parent of the filters at the ingress hook of a clsact qdisc, `ffff:fff2`.
const TC_H_MIN_INGRESS: u32 = 0xFFFF_FFF2;
/// tc parent of the filters at the egress hook of a clsact qdisc, `ffff:fff3`.
const TC_H_MIN_EGRESS: u32 = 0xFFFF_FFF3;
/// Extended-ack attribute holding the kernel's error message (`linux/netlink.h`).
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Size of `struct nlmsghdr`.
const NETLINK_HEADER_LEN: usize = 16;
/// Each call has its own socket and sends one request, so any constant will do.
const SEQUENCE: u32 = 1;

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

/// One forwarding entry of a vxlan device: frames for `mac` are sent to the
/// VTEP at `dst`. flannel installs one per peer node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    pub dst: Option<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetdevError {
    /// No interface has this name in the current network namespace.
    #[error("no network interface named {0} in this network namespace (list them with `ip link`)")]
    NoSuchName(String),
    /// No interface has this index in the current network namespace.
    #[error(
        "no network interface with index {0} in this network namespace (it may just have been \
         deleted; list them with `ip link`)"
    )]
    NoSuchIndex(u32),
    /// The name is empty, too long or holds a NUL, so no interface can have it.
    #[error("{name:?} cannot be a network interface name: {reason} (list them with `ip link`)")]
    InvalidName { name: String, reason: &'static str },
    /// [`delete_clsact`] found no clsact qdisc on the interface.
    #[error(
        "{iface} has no clsact qdisc to delete (check with `tc qdisc show`; an `ingress` qdisc \
         is not ours to delete)"
    )]
    NoClsact { iface: String },
    /// The socket failed, or the kernel refused the request with an errno.
    #[error("cannot {what}: {error}{}{}", kernel_says(.detail), hint(.error))]
    Netlink {
        what: String,
        error: io::Error,
        /// The kernel's own explanation (netlink extended ack), if it gave one.
        detail: Option<String>,
    },
    /// The kernel's reply was not what rtnetlink promises.
    #[error(
        "cannot {what}: the kernel's netlink reply could not be decoded ({reason}); please \
         report this flannel-trace bug with the output of `uname -r`"
    )]
    Decode { what: String, reason: String },
}

impl NetdevError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Netlink { error, .. } => error.raw_os_error(),
            _ => None,
        }
    }
}

fn kernel_says(detail: &Option<String>) -> String {
    detail
        .as_ref()
        .map(|d| format!(" (kernel: {d})"))
        .unwrap_or_default()
}

fn hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            "; this needs CAP_NET_ADMIN in the network namespace, run flannel-trace as root"
        }
        _ => "",
    }
}

fn decode_error(what: &str, reason: impl ToString) -> NetdevError {
    NetdevError::Decode {
        what: what.to_owned(),
        reason: reason.to_string(),
    }
}

/// Looks an interface up by name. An alternative name (`ip link property add
/// dev eth0 altname ...`) of at most 15 bytes matches too; `name` is then the
/// primary name.
pub fn link_by_name(name: &str) -> Result<LinkInfo, NetdevError> {
    check_name(name)?;
    let mut request = LinkMessage::default();
    request
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    get_link(
        request,
        &format!("look up network interface {name}"),
        || NetdevError::NoSuchName(name.to_owned()),
    )
}

/// Looks an interface up by ifindex.
pub fn link_by_index(index: u32) -> Result<LinkInfo, NetdevError> {
    // The kernel's ifindex is a positive C int; 0 would make it look for a
    // name instead.
    if index == 0 || i32::try_from(index).is_err() {
        return Err(NetdevError::NoSuchIndex(index));
    }
    let mut request = LinkMessage::default();
    request.header.index = index;
    get_link(
        request,
        &format!("look up network interface index {index}"),
        || NetdevError::NoSuchIndex(index),
    )
}

/// All interfaces of the network namespace. An interface whose description
/// cannot be decoded at all (not even its name) is left out.
pub fn links() -> Result<Vec<LinkInfo>, NetdevError> {
    let request = RouteNetlinkMessage::GetLink(LinkMessage::default());
    let payloads = dump(request, libc::RTM_NEWLINK, "list the network interfaces")?;
    Ok(payloads
        .iter()
        .filter_map(|p| decode_link(p).ok())
        .collect())
}

/// The output interface of the IPv4 default route (main table), else of the
/// IPv6 one; None if there is none. With several default routes the one with
/// the lowest metric wins, as in the kernel. A route whose next hop is a
/// nexthop object (`ip route ... nhid N`) names no interface and is ignored.
pub fn default_route_ifindex() -> Result<Option<u32>, NetdevError> {
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

/// IPv4/IPv6 addresses configured on an interface (empty for an unknown
/// index).
pub fn addresses(index: u32) -> Result<Vec<IpAddr>, NetdevError> {
    let request = RouteNetlinkMessage::GetAddress(AddressMessage::default());
    let what = format!("list the addresses of {}", iface(index));
    let payloads = dump(request, libc::RTM_NEWADDR, &what)?;
    Ok(payloads
        .iter()
        .filter_map(|p| address_of(p, index))
        .collect())
}

/// The FDB entries of a vxlan device: each MAC with the underlay IP of the
/// VTEP it lives behind (`bridge fdb show dev flannel.1`). flannel installs one
/// per peer node: `<peer VTEP MAC> dst <peer underlay IP>`. A MAC with several
/// remotes appears once per remote.
pub fn vxlan_fdb(index: u32) -> Result<Vec<FdbEntry>, NetdevError> {
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

/// Whether a clsact qdisc exists on the interface.
pub fn has_clsact(index: u32) -> Result<bool, NetdevError> {
    let request = RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default());
    let what = format!("list the qdiscs of {}", iface(index));
    let payloads = dump(request, libc::RTM_NEWQDISC, &what)?;
    Ok(payloads.iter().any(|p| is_clsact(p, index)))
}

/// Deletes the clsact qdisc of the interface, and with it every tc filter
/// attached to it: only call this for a qdisc this tool created, after
/// [`clsact_filter_count`] showed nobody else uses it.
pub fn delete_clsact(index: u32) -> Result<(), NetdevError> {
    if !has_clsact(index)? {
        return Err(NetdevError::NoClsact {
            iface: iface(index),
        });
    }
    let mut request = TcMessage::default();
    request.header.index = tc_ifindex(index)?;
    request.header.parent = TC_H_CLSACT.into();
    request.header.handle = CLSACT_HANDLE.into();
    // Naming the kind makes the kernel refuse, rather than obey, should an
    // `ingress` qdisc (same parent, same handle) have replaced ours meanwhile.
    request
        .attributes
        .push(TcAttribute::Kind("clsact".to_owned()));
    let what = format!("delete the clsact qdisc of {}", iface(index));
    match exchange(
        RouteNetlinkMessage::DelQueueDiscipline(request),
        NLM_F_ACK,
        &what,
    ) {
        Err(e) if e.errno() == Some(libc::ENODEV) => Err(NetdevError::NoSuchIndex(index)),
        result => result.map(drop),
    }
}

/// Number of tc filters at the ingress or egress hook of the clsact qdisc of
/// the interface (0 when there is no clsact), so that the tool never deletes a
/// qdisc that carries somebody else's filters. Counts what `tc filter show`
/// lists with a handle: one per filter, except that a u32 classifier also
/// counts its hash tables.
pub fn clsact_filter_count(index: u32, egress: bool) -> Result<usize, NetdevError> {
    let (parent, hook) = if egress {
        (TC_H_MIN_EGRESS, "egress")
    } else {
        (TC_H_MIN_INGRESS, "ingress")
    };
    let mut request = TcMessage::default();
    request.header.index = tc_ifindex(index)?;
    request.header.parent = parent.into();
    let what = format!("list the tc filters at {hook} of {}", iface(index));
    let request = RouteNetlinkMessage::GetTrafficFilter(request);
    let payloads = dump(request, libc::RTM_NEWTFILTER, &what)?;
    Ok(payloads
        .iter()
        .filter(|p| is_filter(p, index, parent))
        .count())
}

/// A tc filter at a clsact hook, as a filter dump describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcFilter {
    pub index: u32,
    pub egress: bool,
    /// `tcm_info`: priority in the upper 16 bits, protocol in the lower.
    pub info: u32,
    pub handle: u32,
    /// Classifier kind (`bpf`, `u32`, `flower`, ...).
    pub kind: Option<String>,
    /// For a `bpf` classifier: the name it was given (`TCA_BPF_NAME`).
    pub bpf_name: Option<String>,
}

impl TcFilter {
    pub fn priority(&self) -> u16 {
        (self.info >> 16) as u16
    }

    pub fn hook(&self) -> &'static str {
        if self.egress { "egress" } else { "ingress" }
    }
}

/// The tc filters at the ingress or egress hook of the clsact qdisc of the
/// interface (none when there is no clsact).
pub fn clsact_filters(index: u32, egress: bool) -> Result<Vec<TcFilter>, NetdevError> {
    let parent = if egress {
        TC_H_MIN_EGRESS
    } else {
        TC_H_MIN_INGRESS
    };
    let mut request = TcMessage::default();
    request.header.index = tc_ifindex(index)?;
    request.header.parent = parent.into();
    let hook = if egress { "egress" } else { "ingress" };
    let what = format!("list the tc filters at {hook} of {}", iface(index));
    let request = RouteNetlinkMessage::GetTrafficFilter(request);
    let payloads = dump(request, libc::RTM_NEWTFILTER, &what)?;
    Ok(payloads
        .iter()
        .filter(|p| is_filter(p, index, parent))
        .filter_map(|p| decode_filter(p, index, egress))
        .collect())
}

fn decode_filter(payload: &[u8], index: u32, egress: bool) -> Option<TcFilter> {
    let header = TcHeader::parse(payload).ok()?;
    let kind = attributes(payload, header.buffer_len(), |nla| {
        TcAttribute::parse_with_param(nla, "")
    })
    .find_map(|a| match a {
        TcAttribute::Kind(k) => Some(k),
        _ => None,
    });
    // Options decode by kind; only a bpf classifier's name matters here.
    let bpf_name = (kind.as_deref() == Some("bpf"))
        .then(|| {
            attributes(payload, header.buffer_len(), |nla| {
                TcAttribute::parse_with_param(nla, "bpf")
            })
            .find_map(|a| match a {
                TcAttribute::Options(options) => options.into_iter().find_map(|o| match o {
                    TcOption::Bpf(TcFilterBpfOption::ProgName(name)) => Some(name),
                    _ => None,
                }),
                _ => None,
            })
        })
        .flatten();
    Some(TcFilter {
        index,
        egress,
        info: header.info,
        handle: u32::from(header.handle),
        kind,
        bpf_name,
    })
}

/// Deletes one tc filter, named by its hook, priority, protocol and handle.
pub fn delete_filter(f: &TcFilter) -> Result<(), NetdevError> {
    let mut request = TcMessage::default();
    request.header.index = tc_ifindex(f.index)?;
    request.header.parent = if f.egress {
        TC_H_MIN_EGRESS
    } else {
        TC_H_MIN_INGRESS
    }
    .into();
    request.header.handle = f.handle.into();
    request.header.info = f.info;
    if let Some(kind) = &f.kind {
        request.attributes.push(TcAttribute::Kind(kind.clone()));
    }
    let what = format!(
        "delete the tc filter pref {} handle {:#x} at {} of {}",
        f.priority(),
        f.handle,
        f.hook(),
        iface(f.index)
    );
    exchange(
        RouteNetlinkMessage::DelTrafficFilter(request),
        NLM_F_ACK,
        &what,
    )
    .map(drop)
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
fn iface(index: u32) -> String {
    match ifname(index) {
        Some(name) => format!("interface {name} (index {index})"),
        None => format!("interface index {index}"),
    }
}

/// Rejects names no interface can have before asking the kernel, which would
/// answer an over-long name with a bare EINVAL and would silently cut a name at
/// an embedded NUL (and then find another interface).
fn check_name(name: &str) -> Result<(), NetdevError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() >= libc::IF_NAMESIZE {
        "it is longer than 15 bytes"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(NetdevError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// tc messages carry the ifindex as a C int.
fn tc_ifindex(index: u32) -> Result<i32, NetdevError> {
    i32::try_from(index).map_err(|_| NetdevError::NoSuchIndex(index))
}

/// Sends RTM_GETLINK for one interface; `missing` is the error for ENODEV.
fn get_link(
    request: LinkMessage,
    what: &str,
    missing: impl FnOnce() -> NetdevError,
) -> Result<LinkInfo, NetdevError> {
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

// ---------------------------------------------------------------------------
// Decoding of the rtnetlink messages we ask for.

/// The attributes following a `header_len`-byte family header, each decoded
/// on its own; those the crate cannot decode are skipped (see module docs).
pub(crate) fn attributes<'a, A>(
    payload: &'a [u8],
    header_len: usize,
    decode: impl Fn(&NlaBuffer<&'a [u8]>) -> Result<A, DecodeError>,
) -> impl Iterator<Item = A> {
    let attrs = payload.get(header_len..).unwrap_or_default();
    NlasIterator::new(attrs)
        .map_while(Result::ok)
        .filter_map(move |nla| decode(&nla).ok())
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

/// Decodes an RTM_NEWADDR payload if it belongs to interface `index`.
fn address_of(payload: &[u8], index: u32) -> Option<IpAddr> {
    let header = AddressHeader::parse(payload).ok()?;
    if header.index != index {
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

/// Decodes an AF_BRIDGE RTM_NEWNEIGH payload if it belongs to interface
/// `index`.
fn fdb_entry(payload: &[u8], index: u32) -> Option<FdbEntry> {
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

/// Whether an RTM_NEWQDISC payload is the clsact qdisc of interface `index`.
fn is_clsact(payload: &[u8], index: u32) -> bool {
    let Ok(header) = TcHeader::parse(payload) else {
        return false;
    };
    // An `ingress` qdisc sits at the same parent; only the kind tells them apart.
    let decode = |nla: &NlaBuffer<&[u8]>| TcAttribute::parse_with_param(nla, "");
    u32::try_from(header.index) == Ok(index)
        && u32::from(header.parent) == TC_H_CLSACT
        && attributes(payload, header.buffer_len(), decode)
            .any(|attribute| matches!(attribute, TcAttribute::Kind(kind) if kind == "clsact"))
}

/// Whether an RTM_NEWTFILTER payload is a filter of interface `index` at tc
/// `parent`. A filter dump also sends, for each classifier instance (priority
/// and protocol), a message with handle 0 that is no filter of its own.
fn is_filter(payload: &[u8], index: u32, parent: u32) -> bool {
    TcHeader::parse(payload).is_ok_and(|header| {
        u32::try_from(header.index) == Ok(index)
            && u32::from(header.parent) == parent
            && u32::from(header.handle) != 0
    })
}

// ---------------------------------------------------------------------------
// The netlink conversation.

/// What the kernel sent back for one request, minus the protocol messages
/// (ack, NLMSG_DONE, ...) that framed it.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    /// Message type and payload (after the netlink header), in arrival order.
    messages: Vec<(u16, Vec<u8>)>,
    /// NLM_F_DUMP_INTR: the table changed while the kernel was dumping it.
    interrupted: bool,
    /// The closing NLMSG_DONE or ack has arrived.
    complete: bool,
}

impl Reply {
    pub(crate) fn payloads(&self, kind: u16) -> impl Iterator<Item = &[u8]> {
        self.messages
            .iter()
            .filter(move |(k, _)| *k == kind)
            .map(|(_, p)| p.as_slice())
    }

    /// Takes in one datagram, which may hold several netlink messages. Fails
    /// on a kernel error (NLMSG_ERROR with an errno, or an NLMSG_DONE that
    /// carries one) and on bytes that are no netlink message.
    fn absorb(&mut self, mut datagram: &[u8], what: &str) -> Result<(), NetdevError> {
        while !datagram.is_empty() {
            let message =
                NetlinkBuffer::new_checked(datagram).map_err(|e| decode_error(what, e))?;
            let flags = message.flags();
            let payload = message.payload();
            if message.sequence_number() == SEQUENCE {
                match message.message_type() {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR => {
                        self.complete = true;
                        let error =
                            ErrorBuffer::new_checked(payload).map_err(|e| decode_error(what, e))?;
                        // Code 0 is the ack of a successful request.
                        if let Some(code) = error.code() {
                            let tlvs = error_tlvs(flags, error.payload());
                            return Err(refused(what, code.get(), flags, tlvs));
                        }
                    }
                    NLMSG_DONE => {
                        self.complete = true;
                        // A dump that fails half-way ends with its errno here.
                        if let Ok(done) = DoneBuffer::new_checked(payload)
                            && done.code() != 0
                        {
                            return Err(refused(what, done.code(), flags, done.extended_ack()));
                        }
                    }
                    NLMSG_OVERRUN => return Err(decode_error(what, "NLMSG_OVERRUN")),
                    kind => {
                        self.interrupted |= flags & NLM_F_DUMP_INTR != 0;
                        self.messages.push((kind, payload.to_vec()));
                    }
                }
            }
            datagram = datagram
                .get(align(message.length() as usize)..)
                .unwrap_or_default();
        }
        Ok(())
    }
}

/// Netlink messages start on 4-byte boundaries.
fn align(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// The extended-ack TLVs of an NLMSG_ERROR, given what follows its errno:
/// they come after the echo of our request, which is just its header when
/// the kernel capped the echo.
fn error_tlvs(flags: u16, after_errno: &[u8]) -> &[u8] {
    let echo = if flags & NLM_F_CAPPED != 0 {
        NETLINK_HEADER_LEN
    } else {
        NetlinkBuffer::new_checked(after_errno).map_or(usize::MAX, |echo| echo.length() as usize)
    };
    after_errno.get(align(echo)..).unwrap_or_default()
}

/// The error for a negative errno from the kernel, with the kernel's message
/// from the extended-ack TLVs, if it sent any.
fn refused(what: &str, code: i32, flags: u16, tlvs: &[u8]) -> NetdevError {
    let detail = if flags & NLM_F_ACK_TLVS != 0 {
        NlasIterator::new(tlvs)
            .map_while(Result::ok)
            .find(|tlv| tlv.kind() == NLMSGERR_ATTR_MSG)
            .and_then(|tlv| parse_string(tlv.value()).ok())
    } else {
        None
    };
    NetdevError::Netlink {
        what: what.to_owned(),
        error: io::Error::from_raw_os_error(code.saturating_abs()),
        detail,
    }
}

/// Sends one request and reads the reply up to its NLMSG_DONE (dumps) or ack
/// (anything else, which must then set NLM_F_ACK in `flags`).
pub(crate) fn exchange(
    request: RouteNetlinkMessage,
    flags: u16,
    what: &str,
) -> Result<Reply, NetdevError> {
    let io_error = |error| NetdevError::Netlink {
        what: what.to_owned(),
        error,
        detail: None,
    };
    let socket = Socket::new(NETLINK_ROUTE).map_err(io_error)?;
    // Ask for the kernel's explanation on errors, without the echo of our
    // request. Kernels before 4.12 lack these options; their errors then just
    // come without explanation.
    let _ = socket.set_ext_ack(true);
    let _ = socket.set_cap_ack(true);
    // Connected to the kernel, the socket accepts nothing from other processes.
    socket.connect(&SocketAddr::new(0, 0)).map_err(io_error)?;

    let mut message = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::InnerMessage(request),
    );
    message.header.flags = NLM_F_REQUEST | flags;
    message.header.sequence_number = SEQUENCE;
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    socket.send(&bytes, 0).map_err(io_error)?;

    let mut reply = Reply::default();
    while !reply.complete {
        // Peeks at the datagram's size first, so nothing is ever truncated.
        let (datagram, _) = socket.recv_from_full().map_err(io_error)?;
        reply.absorb(&datagram, what)?;
    }
    Ok(reply)
}

/// Dumps a table and returns the payloads of the messages of type `kind`.
pub(crate) fn dump(
    request: RouteNetlinkMessage,
    kind: u16,
    what: &str,
) -> Result<Vec<Vec<u8>>, NetdevError> {
    let mut reply = exchange(request.clone(), NLM_F_DUMP, what)?;
    // An interrupted dump may have missed or repeated entries. Changes are
    // rare and brief, so another pass is consistent; failing would help no one.
    for _ in 0..2 {
        if !reply.interrupted {
            break;
        }
        reply = exchange(request.clone(), NLM_F_DUMP, what)?;
    }
    Ok(reply
        .messages
        .into_iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, p)| p)
        .collect())
}

#[cfg(test)]
mod tests {
    use std::{
        fs::File,
        net::{Ipv4Addr, Ipv6Addr},
        os::fd::AsRawFd,
        process::Command,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use netlink_packet_core::NLM_F_MULTIPART;

    use super::*;

    // Messages captured from Linux 6.18 on x86_64 (so little-endian), in a
    // namespace set up like `flannel_node()` below. Text after `#` is comment.

    /// RTM_NEWLINK payload of flannel.1 (index 4, on top of eth1 = index 3),
    /// without its statistics and IFLA_AF_SPEC.
    const FLANNEL_LINK: &str = "
        00 00 0100 04000000 43100100 00000000  # ifinfomsg: ether, index 4, UP|..|LOWER_UP
        0e00 0300 666c616e6e656c2e3100 0000    # IFLA_IFNAME flannel.1
        0800 0400 aa050000                     # IFLA_MTU 1450
        0500 1000 00 000000                    # IFLA_OPERSTATE
        0a00 0100 f6e2de4c2616 0000            # IFLA_ADDRESS
        0a00 0200 ffffffffffff 0000            # IFLA_BROADCAST
        e800 1200                              # IFLA_LINKINFO
          0a00 0100 76786c616e00 0000          #   IFLA_INFO_KIND vxlan
          d800 0200                            #   IFLA_INFO_DATA
            0800 0100 01000000                 #     IFLA_VXLAN_ID 1
            0800 0300 03000000                 #     IFLA_VXLAN_LINK 3
            0800 0400 0a190133                 #     IFLA_VXLAN_LOCAL 10.25.1.51
            0500 0500 00 000000                #     IFLA_VXLAN_TTL
            0500 1c00 00 000000                #     IFLA_VXLAN_TTL_INHERIT
            0500 0600 00 000000                #     IFLA_VXLAN_TOS
            0500 1d00 00 000000                #     IFLA_VXLAN_DF
            0800 1a00 00000000                 #     IFLA_VXLAN_LABEL
            0800 2000 00000000                 #     IFLA_VXLAN_LABEL_POLICY
            0500 0700 00 000000                #     IFLA_VXLAN_LEARNING 0
            0500 0b00 00 000000                #     IFLA_VXLAN_PROXY
            0500 0c00 00 000000                #     IFLA_VXLAN_RSC
            0500 0d00 00 000000                #     IFLA_VXLAN_L2MISS
            0500 0e00 00 000000                #     IFLA_VXLAN_L3MISS
            0500 1900 00 000000                #     IFLA_VXLAN_COLLECT_METADATA
            0800 0800 2c010000                 #     IFLA_VXLAN_AGEING 300
            0800 0900 00000000                 #     IFLA_VXLAN_LIMIT
            0600 0f00 211b 0000                #     IFLA_VXLAN_PORT 8475, big-endian
            0500 1200 01 000000                #     IFLA_VXLAN_UDP_CSUM
            0500 1300 00 000000                #     IFLA_VXLAN_UDP_ZERO_CSUM6_TX
            0500 1400 00 000000                #     IFLA_VXLAN_UDP_ZERO_CSUM6_RX
            0500 1500 00 000000                #     IFLA_VXLAN_REMCSUM_TX
            0500 1600 00 000000                #     IFLA_VXLAN_REMCSUM_RX
            0500 1f00 01 000000                #     IFLA_VXLAN_LOCALBYPASS
            0800 0a00 00000000                 #     IFLA_VXLAN_PORT_RANGE
            0c00 2100 f7ffffff000000ff         #     IFLA_VXLAN_RESERVED_BITS
        0c00 0600 6e6f717565756500             # IFLA_QDISC noqueue
        0400 3e80                              # IFLA_DEVLINK_PORT, empty nest
    ";

    /// RTM_NEWNEIGH payload of the FDB entry of `bridge fdb append
    /// 76:21:69:41:de:fe dev flannel.1 dst 10.25.1.55`.
    const FLANNEL_FDB: &str = "
        07 00 0000 04000000 c000 02 01          # ndmsg: AF_BRIDGE, index 4, PERMANENT|NOARP, self
        0a00 0200 76216941defe 0000             # NDA_LLADDR
        0800 0100 0a190137                      # NDA_DST 10.25.1.55
        1400 0300 00000000 fa320000 fa320000 00000000  # NDA_CACHEINFO
    ";

    /// RTM_NEWNEIGH payload of a multicast entry of another device (index 5).
    const OTHER_FDB: &str = "
        07 00 0000 05000000 8000 02 00          # ndmsg: AF_BRIDGE, index 5, PERMANENT, self
        0a00 0200 333300000001 0000             # NDA_LLADDR
    ";

    /// RTM_NEWROUTE payload of `default via 10.25.1.1 dev eth1`.
    const DEFAULT_ROUTE: &str = "
        02 00 00 00 fe 03 00 01 00000000        # rtmsg: AF_INET, /0, main, boot, universe, unicast
        0800 0f00 fe000000                      # RTA_TABLE 254
        0800 0500 0a190101                      # RTA_GATEWAY 10.25.1.1
        0800 0400 03000000                      # RTA_OIF 3
    ";

    /// RTM_NEWQDISC payload of the clsact qdisc of eth1 (index 3), without
    /// its statistics.
    const CLSACT_QDISC: &str = "
        00 00 0000 03000000 0000ffff f1ffffff 01000000  # tcmsg: index 3, ffff:0, parent ffff:fff1
        0b00 0100 636c7361637400 00             # TCA_KIND clsact
        0400 0200                               # TCA_OPTIONS
        0500 0c00 00 000000                     # TCA_HW_OFFLOAD 0
    ";

    /// RTM_NEWTFILTER payloads of a filter dump at ingress of eth1 holding
    /// one classic-BPF filter: first the classifier instance, with handle 0,
    /// then the filter.
    const BPF_CLASSIFIER: &str = "
        00 00 0000 03000000 00000000 f2ffffff 000300c0  # tcmsg: index 3, handle 0, prio 49152
        0800 0100 62706600                      # TCA_KIND bpf
        0800 0b00 00000000                      # TCA_CHAIN 0
    ";
    const BPF_FILTER: &str = "
        00 00 0000 03000000 01000000 f2ffffff 000300c0  # tcmsg: index 3, handle 1, prio 49152
        0800 0100 62706600                      # TCA_KIND bpf
        0800 0b00 00000000                      # TCA_CHAIN 0
        2800 0200                               # TCA_OPTIONS
          0800 0300 0100ffff                    #   TCA_BPF_CLASSID ffff:1
          0600 0400 0100 0000                   #   TCA_BPF_OPS_LEN 1
          0c00 0500 06000000ffffffff            #   TCA_BPF_OPS: ret #-1
          0800 0900 08000000                    #   TCA_BPF_FLAGS_GEN not_in_hw
    ";

    /// NLMSG_ERROR payload for deleting an already deleted clsact qdisc,
    /// sent with NLM_F_CAPPED | NLM_F_ACK_TLVS.
    const EINVAL_WITH_EXTACK: &str = "
        eaffffff                                # -EINVAL
        30000000 2500 0500 07000000 00000000    # our request's header (echo capped)
        1300 0100 496e76616c69642068616e646c6500 00  # NLMSGERR_ATTR_MSG Invalid handle
    ";

    /// NLMSG_ERROR payload for RTM_GETLINK of a missing name (NLM_F_CAPPED).
    const ENODEV: &str = "
        edffffff                                # -ENODEV
        34000000 1200 0500 07000000 00000000    # our request's header
    ";

    /// Bytes from a commented hex dump.
    fn hex(dump: &str) -> Vec<u8> {
        let digits: Vec<u8> = dump
            .lines()
            .flat_map(|line| line.split('#').next().unwrap_or_default().bytes())
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    /// A netlink message as the kernel frames it, padded to 4 bytes.
    fn nlmsg(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(NETLINK_HEADER_LEN + payload.len()).unwrap();
        let mut message = length.to_ne_bytes().to_vec();
        message.extend(kind.to_ne_bytes());
        message.extend(flags.to_ne_bytes());
        message.extend(SEQUENCE.to_ne_bytes());
        message.extend(0u32.to_ne_bytes()); // from the kernel
        message.extend(payload);
        message.resize(align(message.len()), 0);
        message
    }

    fn flannel_vxlan() -> VxlanInfo {
        VxlanInfo {
            vni: Some(1),
            port: Some(8475),
            link: Some(3),
            local: Some(Ipv4Addr::new(10, 25, 1, 51).into()),
            learning: Some(false),
        }
    }

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

    #[test]
    fn reads_a_multipart_dump_from_one_datagram() {
        let mut datagram = nlmsg(libc::RTM_NEWNEIGH, NLM_F_MULTIPART, &hex(OTHER_FDB));
        datagram.extend(nlmsg(
            libc::RTM_NEWNEIGH,
            NLM_F_MULTIPART,
            &hex(FLANNEL_FDB),
        ));
        datagram.extend(nlmsg(NLMSG_DONE, NLM_F_MULTIPART, &0i32.to_ne_bytes()));
        let mut reply = Reply::default();
        reply.absorb(&datagram, "test").unwrap();
        assert!(reply.complete && !reply.interrupted);
        let entries: Vec<_> = reply
            .payloads(libc::RTM_NEWNEIGH)
            .filter_map(|p| fdb_entry(p, 4))
            .collect();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn a_dump_may_span_datagrams_and_ignores_other_sequences() {
        let mut reply = Reply::default();
        let link = nlmsg(libc::RTM_NEWLINK, NLM_F_MULTIPART, &hex(FLANNEL_LINK));
        reply.absorb(&link, "test").unwrap();
        assert!(!reply.complete);
        let mut stray = link.clone();
        stray[8..12].copy_from_slice(&99u32.to_ne_bytes());
        reply.absorb(&stray, "test").unwrap();
        let mut interrupted = link;
        interrupted[6..8].copy_from_slice(&(NLM_F_MULTIPART | NLM_F_DUMP_INTR).to_ne_bytes());
        reply.absorb(&interrupted, "test").unwrap();
        reply
            .absorb(&nlmsg(NLMSG_DONE, NLM_F_MULTIPART, &[0; 4]), "test")
            .unwrap();
        assert!(reply.complete && reply.interrupted);
        assert_eq!(reply.payloads(libc::RTM_NEWLINK).count(), 2);
    }

    #[test]
    fn an_ack_completes_a_request() {
        let mut reply = Reply::default();
        let ack = nlmsg(
            NLMSG_ERROR,
            NLM_F_CAPPED,
            &hex("00000000 24000000 2500 0500 07000000 00000000"),
        );
        reply.absorb(&ack, "test").unwrap();
        assert!(reply.complete);
        assert_eq!(reply.messages.len(), 0);
    }

    #[test]
    fn kernel_errors_carry_errno_and_explanation() {
        let refusal = nlmsg(
            NLMSG_ERROR,
            NLM_F_CAPPED | NLM_F_ACK_TLVS,
            &hex(EINVAL_WITH_EXTACK),
        );
        let error = Reply::default().absorb(&refusal, "delete it").unwrap_err();
        assert_eq!(error.errno(), Some(libc::EINVAL));
        let NetdevError::Netlink { detail, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(detail.as_deref(), Some("Invalid handle"));
        assert!(
            error
                .to_string()
                .starts_with("cannot delete it: Invalid argument")
        );
        assert!(error.to_string().ends_with("(kernel: Invalid handle)"));

        let missing = nlmsg(NLMSG_ERROR, NLM_F_CAPPED, &hex(ENODEV));
        let error = Reply::default().absorb(&missing, "look it up").unwrap_err();
        assert_eq!(error.errno(), Some(libc::ENODEV));

        let failed_dump = nlmsg(NLMSG_DONE, NLM_F_MULTIPART, &(-libc::EPERM).to_ne_bytes());
        let error = Reply::default().absorb(&failed_dump, "dump").unwrap_err();
        assert_eq!(error.errno(), Some(libc::EPERM));
        assert!(
            error.to_string().contains("run flannel-trace as root"),
            "{error}"
        );
    }

    #[test]
    fn truncated_datagrams_are_decode_errors() {
        let datagram = nlmsg(libc::RTM_NEWLINK, 0, &hex(FLANNEL_LINK));
        for cut in [1, 15, 17, datagram.len() - 1] {
            let error = Reply::default()
                .absorb(&datagram[..cut], "test")
                .unwrap_err();
            assert!(matches!(error, NetdevError::Decode { .. }), "{error:?}");
        }
    }

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

    #[test]
    fn recognises_clsact_and_counts_filters() {
        let clsact = hex(CLSACT_QDISC);
        assert!(is_clsact(&clsact, 3));
        assert!(!is_clsact(&clsact, 4));
        let ingress = String::from(CLSACT_QDISC)
            .replace("0b00 0100 636c7361637400 00", "0c00 0100 696e677265737300");
        assert!(!is_clsact(&hex(&ingress), 3));

        let dump = [hex(BPF_CLASSIFIER), hex(BPF_FILTER)];
        let count = |index, parent| dump.iter().filter(|p| is_filter(p, index, parent)).count();
        assert_eq!(count(3, TC_H_MIN_INGRESS), 1);
        assert_eq!(count(3, TC_H_MIN_EGRESS), 0);
        assert_eq!(count(4, TC_H_MIN_INGRESS), 0);
    }

    #[test]
    fn rejects_impossible_names() {
        for name in ["", "a-name-of-16-byt", "eth0\0x"] {
            assert!(
                matches!(link_by_name(name), Err(NetdevError::InvalidName { .. })),
                "{name:?}"
            );
        }
        assert!(check_name("flannel.1").is_ok());
    }

    #[test]
    fn error_messages_say_what_to_do() {
        assert_eq!(
            NetdevError::NoSuchName("flannel.1".into()).to_string(),
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
            Err(NetdevError::NoSuchName(_))
        ));
        assert!(matches!(link_by_index(0), Err(NetdevError::NoSuchIndex(0))));
        assert!(matches!(
            link_by_index(u32::MAX),
            Err(NetdevError::NoSuchIndex(_))
        ));
    }

    // -----------------------------------------------------------------------
    // Tests against the kernel, as root, each in a network namespace of its own.

    static NETNS_COUNT: AtomicUsize = AtomicUsize::new(0);

    /// A throwaway network namespace `ndw-<pid>-<n>`, deleted on drop so that
    /// a failing test still cleans up.
    struct Netns(String);

    impl Netns {
        /// None, after saying why, when the test cannot have one.
        fn create() -> Option<Self> {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("skipped: creating network namespaces needs root");
                return None;
            }
            let count = NETNS_COUNT.fetch_add(1, Ordering::Relaxed);
            let name = format!("ndw-{}-{count}", std::process::id());
            match Command::new("ip").args(["netns", "add", &name]).status() {
                Ok(status) if status.success() => Some(Self(name)),
                outcome => {
                    eprintln!("skipped: `ip netns add {name}` failed: {outcome:?}");
                    None
                }
            }
        }

        /// Runs a shell command line in the namespace; false if it fails.
        fn try_sh(&self, line: &str) -> bool {
            let output = Command::new("ip")
                .args(["netns", "exec", &self.0, "sh", "-c", line])
                .output()
                .expect("run ip netns exec");
            if !output.status.success() {
                eprintln!(
                    "`{line}` failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            output.status.success()
        }

        fn sh(&self, line: &str) {
            assert!(self.try_sh(line), "`{line}` failed in {}", self.0);
        }

        /// Runs `f` on a thread that has entered the namespace: setns moves
        /// only the calling thread.
        fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
            std::thread::scope(|scope| {
                let thread = scope.spawn(|| {
                    let netns = File::open(format!("/run/netns/{}", self.0)).unwrap();
                    // SAFETY: a valid namespace fd; affects this thread only.
                    let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                    f()
                });
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    /// A namespace set up like a flannel node: underlay veth eth1 holding
    /// 10.25.1.51 and the default route, flannel.1 on top of it, and the FDB
    /// entry of one peer node.
    fn flannel_node() -> Option<Netns> {
        let netns = Netns::create()?;
        for line in [
            "ip link add eth1 type veth peer name eth1-peer",
            "ip addr add 10.25.1.51/24 dev eth1",
            "ip link set eth1 up",
            "ip link set eth1-peer up",
            "ip link add flannel.1 type vxlan id 1 local 10.25.1.51 dev eth1 dstport 8475 nolearning",
            "ip addr add 10.244.0.0/32 dev flannel.1",
            "ip link set flannel.1 up",
            "bridge fdb append 76:21:69:41:de:fe dev flannel.1 dst 10.25.1.55",
            "ip route add default via 10.25.1.1 dev eth1",
        ] {
            netns.sh(line);
        }
        Some(netns)
    }

    #[test]
    fn root_flannel_node() {
        let Some(netns) = flannel_node() else { return };
        netns.enter(|| {
            let eth1 = link_by_name("eth1").unwrap();
            assert_eq!((eth1.kind.as_deref(), eth1.up), (Some("veth"), true));
            let flannel = link_by_name("flannel.1").unwrap();
            assert_eq!(
                (flannel.kind.as_deref(), flannel.mtu),
                (Some("vxlan"), 1450)
            );
            assert!(flannel.up && flannel.mac.is_some());
            let vxlan = VxlanInfo {
                link: Some(eth1.index),
                ..flannel_vxlan()
            };
            assert_eq!(flannel.vxlan, Some(vxlan));
            assert_eq!(link_by_index(flannel.index).unwrap(), flannel);
            assert_eq!(ifname(flannel.index).as_deref(), Some("flannel.1"));

            let names: Vec<_> = links().unwrap().into_iter().map(|link| link.name).collect();
            for name in ["lo", "eth1", "eth1-peer", "flannel.1"] {
                assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
            }

            let peer = FdbEntry {
                mac: [0x76, 0x21, 0x69, 0x41, 0xde, 0xfe],
                dst: Some(Ipv4Addr::new(10, 25, 1, 55).into()),
            };
            assert_eq!(vxlan_fdb(flannel.index).unwrap(), [peer]);

            let local = IpAddr::from(Ipv4Addr::new(10, 25, 1, 51));
            assert!(addresses(eth1.index).unwrap().contains(&local));
            let overlay = IpAddr::from(Ipv4Addr::new(10, 244, 0, 0));
            assert!(addresses(flannel.index).unwrap().contains(&overlay));
            assert!(!addresses(flannel.index).unwrap().contains(&local));

            assert_eq!(default_route_ifindex().unwrap(), Some(eth1.index));

            let missing = link_by_name("flannel.9").unwrap_err();
            assert!(matches!(&missing, NetdevError::NoSuchName(name) if name == "flannel.9"));
            assert!(matches!(
                link_by_index(999_999),
                Err(NetdevError::NoSuchIndex(999_999))
            ));
            assert_eq!(ifname(999_999), None);
        });
    }

    #[test]
    fn root_clsact_lifecycle() {
        let Some(netns) = flannel_node() else { return };
        let eth1 = netns.enter(|| link_by_name("eth1").unwrap().index);
        netns.enter(|| {
            assert!(!has_clsact(eth1).unwrap());
            assert_eq!(clsact_filter_count(eth1, false).unwrap(), 0);
        });

        netns.sh("tc qdisc add dev eth1 clsact");
        if !netns.try_sh("tc filter add dev eth1 ingress matchall action pass") {
            // No cls_matchall or act_gact: a classic-BPF filter matching all.
            netns.sh(
                "tc filter add dev eth1 ingress bpf bytecode '1,6 0 0 4294967295,' flowid ffff:1",
            );
        }
        netns.enter(|| {
            assert!(has_clsact(eth1).unwrap());
            assert_eq!(clsact_filter_count(eth1, false).unwrap(), 1);
            assert_eq!(clsact_filter_count(eth1, true).unwrap(), 0);
        });

        netns.sh("tc filter del dev eth1 ingress");
        netns.enter(|| {
            assert_eq!(clsact_filter_count(eth1, false).unwrap(), 0);
            delete_clsact(eth1).unwrap();
            assert!(!has_clsact(eth1).unwrap());
            let error = delete_clsact(eth1).unwrap_err();
            assert!(matches!(error, NetdevError::NoClsact { .. }), "{error:?}");
        });

        // An ingress qdisc lives where clsact does but is somebody else's.
        netns.sh("tc qdisc add dev eth1 ingress");
        netns.enter(|| {
            assert!(!has_clsact(eth1).unwrap());
            assert!(matches!(
                delete_clsact(eth1),
                Err(NetdevError::NoClsact { .. })
            ));
        });
        netns.sh("tc qdisc show dev eth1 ingress | grep -q '^qdisc ingress'");
    }

    #[test]
    fn root_default_route_prefers_ipv4_then_lowest_metric() {
        let Some(netns) = Netns::create() else { return };
        netns.sh("ip link add veth-a type veth peer name veth-b && ip link set veth-a up && ip link set veth-b up");
        let (a, b) = netns.enter(|| {
            assert_eq!(default_route_ifindex().unwrap(), None);
            (
                link_by_name("veth-a").unwrap().index,
                link_by_name("veth-b").unwrap().index,
            )
        });

        netns.sh(
            "ip -6 addr add fd00::2/64 dev veth-a nodad && ip -6 route add default via fd00::1 dev veth-a",
        );
        assert_eq!(netns.enter(default_route_ifindex).unwrap(), Some(a));
        let v6 = IpAddr::from(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
        assert!(netns.enter(|| addresses(a)).unwrap().contains(&v6));

        netns.sh(
            "ip addr add 192.0.2.2/24 dev veth-b && ip route add default via 192.0.2.1 metric 200",
        );
        assert_eq!(netns.enter(default_route_ifindex).unwrap(), Some(b));

        netns.sh(
            "ip addr add 198.51.100.2/24 dev veth-a && ip route add default via 198.51.100.1 metric 100",
        );
        netns.sh("ip route add default via 192.0.2.1 table 100 metric 1");
        assert_eq!(netns.enter(default_route_ifindex).unwrap(), Some(a));
    }
}
