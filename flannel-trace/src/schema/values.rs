//! The values of an [`Event`](super::event::Event) as types: what the
//! verdict engine, the peer stream and the text output compare and count
//! are numbers and enums; the text the JSON schema documents is made only
//! at the output edge, by each type's `Display`, and read back by its
//! `FromStr`. Each parser accepts exactly the text its `Display` writes,
//! so a JSON round trip is exact and anything else is an error.

use std::{cmp::Ordering, fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Text that is not the canonical form of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue {
    pub what: &'static str,
    pub text: String,
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not {}", self.text, self.what)
    }
}

impl std::error::Error for BadValue {}

fn bad<T>(what: &'static str, text: &str) -> Result<T, BadValue> {
    Err(BadValue {
        what,
        text: text.to_owned(),
    })
}

/// `v` where `s` is exactly how it is written: "ip-proto-07" or "ACK|SYN"
/// are not what the decoder writes, and would not round-trip.
fn canonical<T: fmt::Display>(v: T, what: &'static str, s: &str) -> Result<T, BadValue> {
    if v.to_string() == s {
        Ok(v)
    } else {
        bad(what, s)
    }
}

/// Reads a string field through `parse`, without an owned copy.
struct TextVisitor<T> {
    what: &'static str,
    parse: fn(&str) -> Result<T, BadValue>,
}

impl<T> de::Visitor<'_> for TextVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        (self.parse)(s).map_err(E::custom)
    }
}

fn deserialize_text<'de, D: Deserializer<'de>, T>(
    d: D,
    what: &'static str,
    parse: fn(&str) -> Result<T, BadValue>,
) -> Result<T, D::Error> {
    d.deserialize_str(TextVisitor { what, parse })
}

/// Serde through `Display` and `FromStr`: the JSON form is the text.
macro_rules! as_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                deserialize_text(d, "a string", <$t>::from_str)
            }
        }
    )*};
}

as_text!(Proto, TcpFlags, Fingerprint, Mac, ArpOp, KernelAddr);

/// The protocol of a pair of endpoints: the IP protocol, or ARP for an
/// inner ARP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Icmp,
    Tcp,
    Udp,
    Icmpv6,
    Sctp,
    Arp,
    /// Any other IP protocol number (never one of the named ones).
    Other(u8),
}

impl Proto {
    /// The IP protocol `n`.
    pub fn from_number(n: u8) -> Proto {
        match n {
            1 => Proto::Icmp,
            6 => Proto::Tcp,
            17 => Proto::Udp,
            58 => Proto::Icmpv6,
            132 => Proto::Sctp,
            other => Proto::Other(other),
        }
    }

    /// The IP protocol number; ARP has none.
    pub fn number(self) -> Option<u8> {
        Some(match self {
            Proto::Icmp => 1,
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmpv6 => 58,
            Proto::Sctp => 132,
            Proto::Arp => return None,
            Proto::Other(n) => n,
        })
    }

    /// The name, where it needs no formatting (all but `Other`).
    pub fn static_name(self) -> Option<&'static str> {
        PROTO_NAMES
            .iter()
            .find(|(p, _)| *p == self)
            .map(|(_, n)| *n)
    }
}

const PROTO_NAMES: [(Proto, &str); 6] = [
    (Proto::Icmp, "icmp"),
    (Proto::Tcp, "tcp"),
    (Proto::Udp, "udp"),
    (Proto::Icmpv6, "icmpv6"),
    (Proto::Sctp, "sctp"),
    (Proto::Arp, "arp"),
];

/// A value written as one of `names`, else as `prefix` and a number.
fn named_or_numbered<T: Copy + fmt::Display>(
    s: &str,
    what: &'static str,
    names: &[(T, &str)],
    prefix: &str,
    number: fn(u8) -> T,
) -> Result<T, BadValue> {
    let v = match names.iter().find(|(_, n)| *n == s) {
        Some((v, _)) => *v,
        None => match s.strip_prefix(prefix).map(str::parse::<u8>) {
            Some(Ok(n)) => number(n),
            _ => return bad(what, s),
        },
    };
    canonical(v, what, s)
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.static_name()) {
            (Proto::Other(n), _) => write!(f, "ip-proto-{n}"),
            (_, name) => f.write_str(name.expect("a name for all but Other")),
        }
    }
}

impl FromStr for Proto {
    type Err = BadValue;

    fn from_str(s: &str) -> Result<Proto, BadValue> {
        named_or_numbered(
            s,
            "a protocol",
            &PROTO_NAMES,
            "ip-proto-",
            Proto::from_number,
        )
    }
}

/// Ordered as the names are, so that flows sorted by protocol keep the
/// order they had when the protocol was its name.
impl Ord for Proto {
    fn cmp(&self, other: &Proto) -> Ordering {
        match (self.static_name(), other.static_name()) {
            (Some(a), Some(b)) => a.cmp(b),
            _ => self.to_string().cmp(&other.to_string()),
        }
    }
}

impl PartialOrd for Proto {
    fn partial_cmp(&self, other: &Proto) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The TCP header's flag byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

/// The flags in the order they are written: the handshake's first.
const TCP_FLAG_NAMES: [(u8, &str); 8] = [
    (0x02, "SYN"),
    (0x10, "ACK"),
    (0x01, "FIN"),
    (0x04, "RST"),
    (0x08, "PSH"),
    (0x20, "URG"),
    (0x40, "ECE"),
    (0x80, "CWR"),
];

impl fmt::Display for TcpFlags {
    /// `SYN|ACK`, or `-` for none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        let mut first = true;
        for (_, name) in TCP_FLAG_NAMES.iter().filter(|(b, _)| self.0 & b != 0) {
            if !first {
                f.write_str("|")?;
            }
            f.write_str(name)?;
            first = false;
        }
        Ok(())
    }
}

impl FromStr for TcpFlags {
    type Err = BadValue;

    fn from_str(s: &str) -> Result<TcpFlags, BadValue> {
        if s == "-" {
            return Ok(TcpFlags(0));
        }
        let mut bits = 0u8;
        for name in s.split('|') {
            match TCP_FLAG_NAMES.iter().find(|(_, n)| *n == name) {
                Some((b, _)) => bits |= b,
                None => return bad("TCP flags", s),
            }
        }
        canonical(TcpFlags(bits), "TCP flags", s)
    }
}

/// The fingerprint of an inner packet: equal on every hop and node the
/// same inner packet passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Fingerprint {
    /// 16 lowercase hex digits, without the formatting machinery (per event).
    pub fn digits(&self) -> [u8; 16] {
        let v = self.0;
        std::array::from_fn(|i| HEX[((v >> (60 - 4 * i)) & 0xf) as usize])
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.digits()).expect("ASCII digits"))
    }
}

fn lower_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

impl FromStr for Fingerprint {
    type Err = BadValue;

    fn from_str(s: &str) -> Result<Fingerprint, BadValue> {
        match u64::from_str_radix(s, 16) {
            Ok(n) if s.len() == 16 && lower_hex(s) => Ok(Fingerprint(n)),
            _ => bad("a fingerprint", s),
        }
    }
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The text form into a stack buffer.
    fn bytes(&self) -> [u8; 17] {
        let mut out = [b':'; 17];
        for (i, b) in self.0.iter().enumerate() {
            out[3 * i] = HEX[usize::from(b >> 4)];
            out[3 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        out
    }

    /// Whether `text` (an identity's MAC, in any case) names this address.
    pub fn is_text(&self, text: &str) -> bool {
        text.as_bytes().eq_ignore_ascii_case(&self.bytes())
    }
}

impl fmt::Display for Mac {
    /// `0e:f7:00:a0:0b:ff`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.bytes()).expect("ASCII digits"))
    }
}

impl FromStr for Mac {
    type Err = BadValue;

    fn from_str(s: &str) -> Result<Mac, BadValue> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            match parts.next() {
                Some(p) if p.len() == 2 && lower_hex(p) => {
                    *b = u8::from_str_radix(p, 16).expect("two hex digits");
                }
                _ => return bad("a MAC address", s),
            }
        }
        match parts.next() {
            None => Ok(Mac(out)),
            Some(_) => bad("a MAC address", s),
        }
    }
}

/// The operation of an ARP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOp {
    Request,
    Reply,
    /// Any other operation code (never 1 or 2).
    Other(u8),
}

impl ArpOp {
    pub fn from_code(n: u8) -> ArpOp {
        match n {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            n => ArpOp::Other(n),
        }
    }
}

impl fmt::Display for ArpOp {
    /// `request`, `reply`, or `op N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArpOp::Request => f.write_str("request"),
            ArpOp::Reply => f.write_str("reply"),
            ArpOp::Other(n) => write!(f, "op {n}"),
        }
    }
}

impl FromStr for ArpOp {
    type Err = BadValue;

    fn from_str(s: &str) -> Result<ArpOp, BadValue> {
        let names = [(ArpOp::Request, "request"), (ArpOp::Reply, "reply")];
        named_or_numbered(s, "an ARP operation", &names, "op ", ArpOp::from_code)
    }
}

/// A kernel text address (where a packet was freed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelAddr(pub u64);

impl fmt::Display for KernelAddr {
    /// `0xffffffff81000010`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl FromStr for KernelAddr {
    type Err = BadValue;

    fn from_str(s: &str) -> Result<KernelAddr, BadValue> {
        match s
            .strip_prefix("0x")
            .filter(|h| lower_hex(h))
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        {
            Some(a) => canonical(KernelAddr(a), "a kernel address", s),
            None => bad("a kernel address", s),
        }
    }
}

mod serde_with;
pub use serde_with::{hop_name, rfc3339_text};

#[cfg(test)]
#[path = "values/tests.rs"]
mod tests;
