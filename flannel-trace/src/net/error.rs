//! The one error of the network layer: what went wrong talking to the
//! kernel's network stack (rtnetlink, the ICMP socket of `--probe`), with
//! the hint the user needs. Callers map it to an exit status (see
//! `exit.rs`); the messages are matched by tests, change them with care.

use std::{io, net::IpAddr};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
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
    /// [`delete_clsact`](super::delete_clsact) found no clsact qdisc on the
    /// interface.
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
    /// `--probe` could not open its raw ICMP socket.
    #[error("cannot open a raw ICMP socket for --probe: {0} (needs CAP_NET_RAW)")]
    IcmpSocket(io::Error),
    /// `--probe` could not send one echo request.
    #[error("sending probe {seq} to {to}: {source}")]
    IcmpSend {
        seq: u16,
        to: IpAddr,
        source: io::Error,
    },
}

impl NetError {
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

pub(super) fn decode_error(what: &str, reason: impl ToString) -> NetError {
    NetError::Decode {
        what: what.to_owned(),
        reason: reason.to_string(),
    }
}
