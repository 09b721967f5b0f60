//! The rtnetlink conversation every other file of the layer goes through:
//! one request on a blocking `NETLINK_ROUTE` socket, its reply read to the
//! end, kernel errors turned into [`NetError`]s that carry the kernel's own
//! explanation (extended ack).
//!
//! Every call opens its own socket. A netlink socket stays in the network
//! namespace that was current when it was created, so a fresh socket makes each
//! call act in the calling thread's current namespace (`ip netns exec`, or a
//! thread that called `setns`).
//!
//! Replies are decoded leniently: the family header with
//! `netlink-packet-route`'s parser, then each attribute on its own
//! ([`attributes`]), skipping the ones the crate fails to decode. Decoding a
//! whole message with the crate is all-or-nothing, so one attribute we never
//! look at (a block grown by a newer kernel, an option of some unrelated
//! device) would otherwise hide an interface or fail a whole listing.

use std::io;

use netlink_packet_core::{
    DecodeError, DoneBuffer, ErrorBuffer, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlaBuffer, NlasIterator,
    parse_string,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::error::{NetError, decode_error};

/// Extended-ack attribute holding the kernel's error message (`linux/netlink.h`).
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Size of `struct nlmsghdr`.
pub(super) const NETLINK_HEADER_LEN: usize = 16;
/// Each call has its own socket and sends one request, so any constant will do.
pub(super) const SEQUENCE: u32 = 1;

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
    fn absorb(&mut self, mut datagram: &[u8], what: &str) -> Result<(), NetError> {
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
pub(super) fn align(len: usize) -> usize {
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
fn refused(what: &str, code: i32, flags: u16, tlvs: &[u8]) -> NetError {
    let detail = if flags & NLM_F_ACK_TLVS != 0 {
        NlasIterator::new(tlvs)
            .map_while(Result::ok)
            .find(|tlv| tlv.kind() == NLMSGERR_ATTR_MSG)
            .and_then(|tlv| parse_string(tlv.value()).ok())
    } else {
        None
    };
    NetError::Netlink {
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
) -> Result<Reply, NetError> {
    let io_error = |error| NetError::Netlink {
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
) -> Result<Vec<Vec<u8>>, NetError> {
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
    use netlink_packet_core::NLM_F_MULTIPART;

    use super::*;
    use crate::net::{
        captured::{EINVAL_WITH_EXTACK, ENODEV, FLANNEL_FDB, FLANNEL_LINK, OTHER_FDB, hex, nlmsg},
        neighbours::fdb_entry,
    };

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
        let NetError::Netlink { detail, .. } = &error else {
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
            assert!(matches!(error, NetError::Decode { .. }), "{error:?}");
        }
    }
}
