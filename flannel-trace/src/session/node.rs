//! The node's overlay as flannel-trace will trace it: the vxlan device, the
//! underlay NIC (and the other NICs frames might leave by), the VXLAN port,
//! and the pod side (devices, subnets, the pod network).

use std::net::IpAddr;

use crate::{
    net::{self, Cidr, NetError},
    options::{self, NodeOptions, OptionsError, PodDevs},
};

/// flannel's VXLAN port, when neither `--port` nor the device says one.
const DEFAULT_PORT: u16 = 8472;

/// At most this many other NICs get underlay hooks (each costs two TC
/// programs); a node with more names its NICs with --iface/--only-iface.
const MAX_OTHER_NICS: usize = 8;

/// The node's overlay as flannel-trace will trace it.
pub struct Node {
    pub vxlan: net::LinkInfo,
    pub underlay: net::LinkInfo,
    /// Other NICs the underlay hops watch too.
    pub other_nics: Vec<net::LinkInfo>,
    pub port: u16,
    pub port_source: &'static str,
    pub pods: PodSide,
}

/// Where the node's pods are.
pub struct PodSide {
    pub devs: Vec<net::LinkInfo>,
    pub subnets: Vec<Cidr>,
    pub networks: Vec<Cidr>,
    pub local_addrs: Vec<IpAddr>,
    /// Where `networks` came from, for the start banner.
    pub source: &'static str,
}

/// Why the node's devices cannot be traced as named. The messages say
/// which flag fixes it; [`NodeError::is_usage`] tells a bad flag from a
/// missing or wrong device (exit statuses 2 and 4).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A device that does not exist, or the table that names it could not
    /// be read.
    #[error(transparent)]
    Link(#[from] NetError),
    #[error(
        "{name} is not a vxlan device (kind: {kind}); name the overlay device with --vxlan-dev"
    )]
    NotVxlan { name: String, kind: String },
    #[error(
        "{vxlan} has no link device and there is no default route: name the underlay NIC with --iface"
    )]
    NoUnderlay { vxlan: String },
    #[error("--iface must be the underlay NIC, not the vxlan device {vxlan}")]
    UnderlayIsTheVxlanDevice { vxlan: String },
    #[error(
        "{underlay} cannot be the underlay of {vxlan}: {why}; name the NIC that carries the VXLAN traffic between the nodes with --iface (default: the vxlan device's link device, else the default-route device)"
    )]
    NotAnUnderlay {
        underlay: String,
        vxlan: String,
        why: &'static str,
    },
    #[error("--pod-dev {0} is the vxlan device; name the pods' bridge (cni0)")]
    PodDevIsTheVxlanDevice(String),
    #[error(transparent)]
    Options(#[from] OptionsError),
}

impl NodeError {
    /// A flag names the wrong thing, rather than a device being missing or
    /// of the wrong kind.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            NodeError::PodDevIsTheVxlanDevice(_) | NodeError::Options(_)
        )
    }
}

/// The node's devices and port, as `o` names them or as found.
pub fn resolve(o: &NodeOptions, ports: &[u16]) -> Result<Node, NodeError> {
    let vxlan = net::link_by_name(&o.vxlan_dev)?;
    let Some(info) = vxlan.vxlan.as_ref() else {
        return Err(NodeError::NotVxlan {
            name: vxlan.name.clone(),
            kind: vxlan.kind.clone().unwrap_or_else(|| "unknown".into()),
        });
    };
    let (port, port_source) = match (ports.first(), info.port) {
        (Some(p), _) => (*p, "--port"),
        (None, Some(p)) => (p, "device"),
        (None, None) => (DEFAULT_PORT, "default"),
    };
    let underlay = match &o.iface {
        Some(name) => net::link_by_name(name)?,
        None => {
            let index = match info.link {
                Some(i) => i,
                None => net::default_route_ifindex()?.ok_or_else(|| NodeError::NoUnderlay {
                    vxlan: vxlan.name.clone(),
                })?,
            };
            net::link_by_index(index)?
        }
    };
    if underlay.index == vxlan.index {
        return Err(NodeError::UnderlayIsTheVxlanDevice {
            vxlan: vxlan.name.clone(),
        });
    }
    plausible_underlay(&underlay, &vxlan)?;
    let pods = pod_side(o, &vxlan)?;
    let other_nics = if o.only_iface {
        Vec::new()
    } else {
        other_nics(&underlay, &vxlan, &pods.devs)
    };
    Ok(Node {
        vxlan,
        underlay,
        other_nics,
        port,
        port_source,
        pods,
    })
}

fn pod_side(o: &NodeOptions, vxlan: &net::LinkInfo) -> Result<PodSide, NodeError> {
    let routes = net::routes().unwrap_or_else(|e| {
        log::warn!("cannot read the routing table ({e}): pod network from --pod-cidr only");
        Vec::new()
    });
    let env = std::fs::read_to_string(net::SUBNET_ENV)
        .map(|t| net::parse_subnet_env(&t))
        .unwrap_or_default();
    let mut devs = Vec::new();
    match &o.pod_devs {
        PodDevs::HostNetworkOnly => {}
        PodDevs::Named(names) => {
            for name in names {
                let l = net::link_by_name(name)?;
                if l.index == vxlan.index {
                    return Err(NodeError::PodDevIsTheVxlanDevice(name.clone()));
                }
                devs.push(l);
            }
        }
        PodDevs::Found => {
            if let Ok(l) = net::link_by_name("cni0") {
                devs.push(l);
            } else {
                // flannel's own subnet for this node, and the device its route uses.
                let dev = env.subnets.iter().find_map(|s| {
                    routes
                        .iter()
                        .find(|r| s.contains(r.dst) && r.oif.is_some_and(|o| o != vxlan.index))
                        .and_then(|r| net::link_by_index(r.oif?).ok())
                });
                devs.extend(dev);
            }
        }
    }
    let mut subnets: Vec<Cidr> = env.subnets.clone();
    for r in &routes {
        if r.oif.is_some_and(|o| devs.iter().any(|d| d.index == o))
            && !net::link_scope(r.dst)
            && let Some(c) = r.prefix()
            && c.len() > 0
            && !subnets.contains(&c)
        {
            subnets.push(c);
        }
    }
    let mut local_addrs = Vec::new();
    for d in &devs {
        local_addrs.extend(
            net::addresses(d.index)
                .unwrap_or_default()
                .into_iter()
                .filter(|a| !net::link_scope(*a)),
        );
    }
    let (networks, source) = if !o.pod_cidrs.is_empty() {
        (o.pod_cidrs.clone(), "--pod-cidr")
    } else if !env.networks.is_empty() {
        (env.networks.clone(), "subnet.env")
    } else {
        let mut known: Vec<Cidr> = subnets.clone();
        for r in &routes {
            if r.oif == Some(vxlan.index)
                && !net::link_scope(r.dst)
                && let Some(c) = r.prefix()
                && c.len() > 0
            {
                known.push(c);
            }
        }
        for a in net::addresses(vxlan.index)
            .unwrap_or_default()
            .into_iter()
            .filter(|a| !net::link_scope(*a))
        {
            known.extend(Cidr::new(a, if a.is_ipv4() { 32 } else { 128 }));
        }
        (net::covering(&known), "routes")
    };
    // --pod-cidr was checked with the options; subnet.env may say two.
    options::one_network_per_family(&networks)?;
    Ok(PodSide {
        devs,
        subnets,
        networks,
        local_addrs,
        source,
    })
}

/// Devices, besides the main underlay NIC, that could carry the overlay's
/// frames: anything with an address that is not loopback, a vxlan device or
/// a pod device.
fn other_nics(
    underlay: &net::LinkInfo,
    vxlan: &net::LinkInfo,
    pods: &[net::LinkInfo],
) -> Vec<net::LinkInfo> {
    let Ok(all) = net::links() else {
        return Vec::new();
    };
    let mut out: Vec<net::LinkInfo> = all
        .into_iter()
        .filter(|l| {
            l.index != underlay.index
                && l.index != vxlan.index
                && l.name != "lo"
                && l.kind.as_deref() != Some("vxlan")
                && !pods.iter().any(|p| p.index == l.index)
                // Every device has an IPv6 link-local address; only a
                // routable one makes it a NIC the overlay could leave by.
                && net::addresses(l.index)
                    .is_ok_and(|a| a.iter().any(|a| !net::link_scope(*a)))
        })
        .collect();
    if out.len() > MAX_OTHER_NICS {
        log::warn!(
            "{} other devices have addresses; watching the first {MAX_OTHER_NICS} (use --iface/--only-iface to choose)",
            out.len()
        );
        out.truncate(MAX_OTHER_NICS);
    }
    out
}

/// Refuses what cannot be an underlay (loopback: VXLAN frames between nodes
/// never pass it; another vxlan device), and warns about what probably is
/// not one (no address, down): the verdict would otherwise blame "0 reached
/// node-b's lo" on the network.
fn plausible_underlay(u: &net::LinkInfo, vxlan: &net::LinkInfo) -> Result<(), NodeError> {
    let refuse = |why| {
        Err(NodeError::NotAnUnderlay {
            underlay: u.name.clone(),
            vxlan: vxlan.name.clone(),
            why,
        })
    };
    if u.loopback {
        return refuse("it is a loopback device");
    }
    if u.vxlan.is_some() {
        return refuse("it is itself a vxlan device");
    }
    if !u.up {
        eprintln!(
            "flannel-trace: warning: the underlay {} is down: no VXLAN frame can pass it",
            u.name
        );
    }
    if net::addresses(u.index).is_ok_and(|a| a.is_empty()) {
        eprintln!(
            "flannel-trace: warning: the underlay {} has no address: unless it is a bridge port carrying the node's traffic, VXLAN frames do not pass it (check --iface)",
            u.name
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{Fatal, Status};

    #[test]
    fn a_wrong_flag_is_a_usage_error_a_wrong_device_a_device_error() {
        let usage = Fatal::from(NodeError::PodDevIsTheVxlanDevice("flannel.1".into()));
        assert_eq!(usage.status, Status::Usage);
        assert_eq!(
            usage.error.to_string(),
            "--pod-dev flannel.1 is the vxlan device; name the pods' bridge (cni0)"
        );
        let second = "10.1.0.0/16".parse().unwrap();
        let usage = Fatal::from(NodeError::from(OptionsError::SecondPodNetwork(second)));
        assert_eq!(usage.status, Status::Usage);
        let device = Fatal::from(NodeError::NotVxlan {
            name: "eth0".into(),
            kind: "veth".into(),
        });
        assert_eq!(device.status, Status::Device);
        assert_eq!(
            device.error.to_string(),
            "eth0 is not a vxlan device (kind: veth); name the overlay device with --vxlan-dev"
        );
        let missing = Fatal::from(NodeError::from(NetError::NoSuchName("eth9".into())));
        assert_eq!(missing.status, Status::Device);
        assert!(
            missing
                .error
                .to_string()
                .starts_with("no network interface named eth9")
        );
    }
}
