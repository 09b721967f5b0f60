//! The clsact qdisc that carries the netlink-attached tc programs, and the tc
//! filters on it (`tc qdisc show`, `tc filter show`): whether it is there,
//! who else uses it, and deleting what a killed run left (see
//! `leftovers.rs`, which decides what is ours).

use netlink_packet_core::{Emitable, NLM_F_ACK, NlaBuffer, ParseableParametrized};
use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{TcAttribute, TcFilterBpfOption, TcHeader, TcMessage, TcOption},
};

use super::{
    error::NetError,
    links::iface,
    netlink::{attributes, dump, exchange},
};

/// tc parent of a clsact (or ingress) qdisc, `ffff:fff1`.
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
/// Handle of a clsact qdisc, `ffff:0`.
const CLSACT_HANDLE: u32 = 0xFFFF_0000;
/// tc parent of the filters at the ingress hook of a clsact qdisc, `ffff:fff2`.
const TC_H_MIN_INGRESS: u32 = 0xFFFF_FFF2;
/// tc parent of the filters at the egress hook of a clsact qdisc, `ffff:fff3`.
const TC_H_MIN_EGRESS: u32 = 0xFFFF_FFF3;

/// Whether a clsact qdisc exists on the interface.
pub fn has_clsact(index: u32) -> Result<bool, NetError> {
    let request = RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default());
    let what = format!("list the qdiscs of {}", iface(index));
    let payloads = dump(request, libc::RTM_NEWQDISC, &what)?;
    Ok(payloads.iter().any(|p| is_clsact(p, index)))
}

/// Deletes the clsact qdisc of the interface, and with it every tc filter
/// attached to it: only call this for a qdisc this tool created, after
/// [`clsact_filter_count`] showed nobody else uses it.
pub fn delete_clsact(index: u32) -> Result<(), NetError> {
    if !has_clsact(index)? {
        return Err(NetError::NoClsact {
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
        Err(e) if e.errno() == Some(libc::ENODEV) => Err(NetError::NoSuchIndex(index)),
        result => result.map(drop),
    }
}

/// Number of tc filters at the ingress or egress hook of the clsact qdisc of
/// the interface (0 when there is no clsact), so that the tool never deletes a
/// qdisc that carries somebody else's filters. Counts what `tc filter show`
/// lists with a handle: one per filter, except that a u32 classifier also
/// counts its hash tables.
pub fn clsact_filter_count(index: u32, egress: bool) -> Result<usize, NetError> {
    Ok(filter_payloads(index, egress)?.len())
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
pub fn clsact_filters(index: u32, egress: bool) -> Result<Vec<TcFilter>, NetError> {
    Ok(filter_payloads(index, egress)?
        .iter()
        .filter_map(|p| decode_filter(p, index, egress))
        .collect())
}

/// tc parent of the filters at the ingress or egress hook of a clsact qdisc.
fn hook_parent(egress: bool) -> u32 {
    if egress {
        TC_H_MIN_EGRESS
    } else {
        TC_H_MIN_INGRESS
    }
}

/// The RTM_NEWTFILTER payloads of the filters at one hook of the clsact
/// qdisc of the interface, without the classifier instances (see
/// [`is_filter`]).
fn filter_payloads(index: u32, egress: bool) -> Result<Vec<Vec<u8>>, NetError> {
    let parent = hook_parent(egress);
    let mut request = TcMessage::default();
    request.header.index = tc_ifindex(index)?;
    request.header.parent = parent.into();
    let hook = if egress { "egress" } else { "ingress" };
    let what = format!("list the tc filters at {hook} of {}", iface(index));
    let request = RouteNetlinkMessage::GetTrafficFilter(request);
    let mut payloads = dump(request, libc::RTM_NEWTFILTER, &what)?;
    payloads.retain(|p| is_filter(p, index, parent));
    Ok(payloads)
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
pub fn delete_filter(f: &TcFilter) -> Result<(), NetError> {
    let mut request = TcMessage::default();
    request.header.index = tc_ifindex(f.index)?;
    request.header.parent = hook_parent(f.egress).into();
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

/// tc messages carry the ifindex as a C int.
fn tc_ifindex(index: u32) -> Result<i32, NetError> {
    i32::try_from(index).map_err(|_| NetError::NoSuchIndex(index))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::captured::{BPF_CLASSIFIER, BPF_FILTER, CLSACT_QDISC, hex};

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
}
