//! The pod network of a flannel node: which addresses are pods (so that a
//! packet's path starts or ends at the pod device instead of flannel.1), and
//! the overlay networks the kernel-side filters of the pod hops and of the
//! drop hook compare addresses with.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An address prefix such as `10.244.0.0/16`, kept in its network form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, len: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then(|| Cidr {
            addr: mask(addr, len),
            len,
        })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }

    /// The longest prefix covering both.
    fn join(self, other: Cidr) -> Option<Cidr> {
        let (a, b) = (bits(self.addr)?, bits(other.addr)?);
        if self.addr.is_ipv4() != other.addr.is_ipv4() {
            return None;
        }
        let width = if self.addr.is_ipv4() { 32 } else { 128 };
        let diff = (a ^ b) << (128 - width);
        let same = diff.leading_zeros().min(width) as u8;
        Cidr::new(self.addr, same.min(self.len).min(other.len))
    }
}

fn bits(ip: IpAddr) -> Option<u128> {
    Some(match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    })
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an address prefix such as 10.244.0.0/16 or fd00:10:244::/56")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let bad = || CidrError(s.to_owned());
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.trim().parse().map_err(|_| bad())?;
        let len: u8 = l.trim().parse().map_err(|_| bad())?;
        Cidr::new(addr, len).ok_or_else(bad)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Link-local and multicast addresses (and routes to them) belong to one
/// link, never to the pod network.
pub fn link_scope(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_unicast_link_local() || a.is_multicast(),
    }
}

/// The smallest prefix per address family covering every given prefix:
/// the overlay network as far as one node's routes reveal it.
pub fn covering(cidrs: &[Cidr]) -> Vec<Cidr> {
    let mut out: Vec<Cidr> = Vec::new();
    for c in cidrs {
        match out
            .iter_mut()
            .find(|o| o.addr.is_ipv4() == c.addr.is_ipv4())
        {
            Some(o) => {
                if let Some(j) = o.join(*c) {
                    *o = j;
                }
            }
            None => out.push(*c),
        }
    }
    out
}

/// What flanneld writes to `/run/flannel/subnet.env`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    /// `FLANNEL_NETWORK`, `FLANNEL_IPV6_NETWORK`: the whole pod network.
    pub networks: Vec<Cidr>,
    /// `FLANNEL_SUBNET`, `FLANNEL_IPV6_SUBNET`: this node's part of it.
    pub subnets: Vec<Cidr>,
}

pub const SUBNET_ENV: &str = "/run/flannel/subnet.env";

/// Parse subnet.env; unknown keys and malformed values are skipped (the
/// file is flanneld's, not ours to validate).
pub fn parse_subnet_env(text: &str) -> SubnetEnv {
    let mut env = SubnetEnv::default();
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        let Ok(c) = v.trim().trim_matches('"').parse::<Cidr>() else {
            continue;
        };
        match k.trim() {
            "FLANNEL_NETWORK" | "FLANNEL_IPV6_NETWORK" => env.networks.push(c),
            "FLANNEL_SUBNET" | "FLANNEL_IPV6_SUBNET" => env.subnets.push(c),
            _ => {}
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_parse_mask_and_contain() {
        assert_eq!(c("10.244.1.7/24").to_string(), "10.244.1.0/24");
        assert!(c("10.244.0.0/16").contains("10.244.9.2".parse().unwrap()));
        assert!(!c("10.244.0.0/16").contains("10.245.0.1".parse().unwrap()));
        assert!(!c("10.244.0.0/16").contains("fd00::1".parse().unwrap()));
        assert!("10.244.0.0/33".parse::<Cidr>().is_err());
        assert!("10.244.0.0".parse::<Cidr>().is_err());
        assert!("x/8".parse::<Cidr>().is_err());
        assert_eq!(c("fd00:10:244:1::/64").to_string(), "fd00:10:244:1::/64");
        assert_eq!(c("0.0.0.0/0").to_string(), "0.0.0.0/0");
    }

    #[test]
    fn covering_prefix_of_node_subnets() {
        let got = covering(&[c("10.244.1.0/24"), c("10.244.2.0/24"), c("10.244.2.0/32")]);
        assert_eq!(got, vec![c("10.244.0.0/22")]);
        let got = covering(&[c("10.244.1.0/24"), c("fd00:1::/64"), c("fd00:2::/64")]);
        assert_eq!(got, vec![c("10.244.1.0/24"), c("fd00::/30")]);
    }

    #[test]
    fn subnet_env_as_flanneld_writes_it() {
        let env = parse_subnet_env(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        );
        assert_eq!(env.networks, vec![c("10.244.0.0/16")]);
        assert_eq!(env.subnets, vec![c("10.244.1.0/24")]);
    }
}
