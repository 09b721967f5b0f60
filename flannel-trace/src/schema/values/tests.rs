use flannel_trace_common::Hop;
use serde::{Serialize, de::DeserializeOwned};

use super::*;

/// `v` is written as the JSON string `text`, and `text` reads back as `v`.
fn exact<T>(v: T, text: &str)
where
    T: Serialize
        + DeserializeOwned
        + FromStr<Err = BadValue>
        + fmt::Display
        + PartialEq
        + fmt::Debug,
{
    assert_eq!(v.to_string(), text);
    let json = serde_json::to_string(&v).unwrap();
    assert_eq!(json, format!("\"{text}\""));
    assert_eq!(serde_json::from_str::<T>(&json).unwrap(), v);
    assert_eq!(text.parse::<T>().unwrap(), v);
}

/// Text the decoder never writes is an error, not a near value.
fn rejected<T: DeserializeOwned + FromStr<Err = BadValue> + fmt::Debug>(text: &str) {
    assert!(text.parse::<T>().is_err(), "{text:?} parsed");
    assert!(serde_json::from_str::<T>(&format!("\"{text}\"")).is_err());
}

#[test]
fn protocols() {
    exact(Proto::Icmp, "icmp");
    exact(Proto::Tcp, "tcp");
    exact(Proto::Udp, "udp");
    exact(Proto::Icmpv6, "icmpv6");
    exact(Proto::Sctp, "sctp");
    exact(Proto::Arp, "arp");
    exact(Proto::Other(99), "ip-proto-99");
    exact(Proto::Other(0), "ip-proto-0");
    for n in 0..=255u8 {
        assert_eq!(Proto::from_number(n).number(), Some(n));
    }
    assert_eq!(Proto::Arp.number(), None);
    for t in [
        "ip-proto-6",
        "ip-proto-07",
        "ip-proto-256",
        "TCP",
        "",
        "ip-proto-",
    ] {
        rejected::<Proto>(t);
    }
    // Ordered as the names were.
    let mut ps: Vec<Proto> = (0..=255)
        .map(Proto::from_number)
        .chain([Proto::Arp])
        .collect();
    ps.sort();
    let names: Vec<String> = ps.iter().map(Proto::to_string).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn tcp_flags() {
    exact(TcpFlags(0x12), "SYN|ACK");
    exact(TcpFlags(0x19), "ACK|FIN|PSH");
    exact(TcpFlags(0), "-");
    exact(TcpFlags(0xff), "SYN|ACK|FIN|RST|PSH|URG|ECE|CWR");
    for b in 0..=255u8 {
        exact(TcpFlags(b), &TcpFlags(b).to_string());
    }
    for t in ["ACK|SYN", "strange", "", "SYN|", "syn"] {
        rejected::<TcpFlags>(t);
    }
}

#[test]
fn fingerprints() {
    exact(Fingerprint(0x6953_c514_e9ff_7c04), "6953c514e9ff7c04");
    for v in [0, 1, u64::MAX] {
        exact(Fingerprint(v), &format!("{v:016x}"));
    }
    for t in ["00000000000000AB", "not-hex", "1", "+953c514e9ff7c04", ""] {
        rejected::<Fingerprint>(t);
    }
}

#[test]
fn macs() {
    exact(Mac([0x0e, 0xf7, 0, 0xa0, 0x0b, 0xff]), "0e:f7:00:a0:0b:ff");
    assert!(Mac([0x0e, 0xf7, 0, 0xa0, 0x0b, 0xff]).is_text("0E:F7:00:A0:0B:FF"));
    assert!(!Mac([0x0e, 0xf7, 0, 0xa0, 0x0b, 0xff]).is_text("0e:f7:00:a0:0b:fe"));
    for t in [
        "e:f7:00:a0:0b:ff",
        "0E:F7:00:A0:0B:FF",
        "0e:f7:00:a0:0b",
        "0e:f7:00:a0:0b:ff:00",
    ] {
        rejected::<Mac>(t);
    }
}

#[test]
fn arp_operations() {
    exact(ArpOp::Request, "request");
    exact(ArpOp::Reply, "reply");
    exact(ArpOp::Other(7), "op 7");
    assert_eq!(ArpOp::from_code(1), ArpOp::Request);
    for t in ["op 1", "op 2", "op 07", "op", "REQUEST"] {
        rejected::<ArpOp>(t);
    }
}

#[test]
fn kernel_addresses() {
    exact(KernelAddr(0xffff_ffff_8100_0010), "0xffffffff81000010");
    exact(KernelAddr(0), "0x0");
    exact(KernelAddr(1), "0x1");
    for t in ["0x", "0x01", "ffff", "0xFF", "0x10000000000000000"] {
        rejected::<KernelAddr>(t);
    }
}

#[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
struct Stamped {
    #[serde(with = "rfc3339_text")]
    time: i64,
    #[serde(with = "hop_name")]
    hop: Hop,
}

#[test]
fn times_and_hops() {
    for h in Hop::ALL {
        let t = 1_629_894_896_500_000_007i64;
        let v = Stamped { time: t, hop: h };
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"time":"2021-08-25T12:34:56.500000007Z","hop":"{}"}}"#,
                h.name()
            )
        );
        assert_eq!(serde_json::from_str::<Stamped>(&json).unwrap(), v);
    }
    // The cache follows the second and the date, either way.
    for ns in [
        0,
        7,
        999_999_999,
        1_000_000_000,
        -1,
        951_782_400 * 1_000_000_000,
    ] {
        let v = Stamped {
            time: ns,
            hop: Hop::Drop,
        };
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["time"], crate::kernel::clock::rfc3339(ns));
        assert_eq!(serde_json::from_value::<Stamped>(json).unwrap(), v);
    }
    assert_eq!(rfc3339_text::parse("-5ns since the epoch"), Ok(-5));
    for bad in [
        r#"{"time":"yesterday","hop":"drop"}"#,
        r#"{"time":"2021-08-25T12:34:56Z","hop":"nowhere"}"#,
    ] {
        assert!(serde_json::from_str::<Stamped>(bad).is_err(), "{bad}");
    }
}
