//! `flannel-trace check`: the comparison an SRE does first by hand — every
//! node's flannel annotations against this node's vxlan device, FDB,
//! neighbours and routes — one line per disagreement with its fix.
//!
//! model.rs holds the data, nodes.rs reads the node list, tables.rs and
//! device.rs read the kernel, compare.rs judges (pure), report.rs prints,
//! live.rs does the same for a live peer's identity.

mod compare;
mod device;
pub mod live;
mod model;
mod nodes;
mod report;

pub use model::{Finding, Kind as FindingKind};
pub use report::{CheckReport, CheckTag, CheckedDevice};
pub(crate) mod tables;

use std::{
    fs,
    io::{self, Read as _},
    path::{Path, PathBuf},
};

use anyhow::anyhow;

use crate::exit::{Fatal, OrFatal as _, Status};
use model::{ClusterNode, Device, Expect};

/// What to check (from `flannel-trace check`'s arguments).
#[derive(Debug, Clone)]
pub struct Request {
    /// `kubectl get nodes -o json` output; `-` for stdin.
    pub nodes: PathBuf,
    pub vxlan_dev: String,
    /// This node's name in the list.
    pub name: Option<String>,
    pub port: Option<u16>,
    pub vni: Option<u32>,
    pub json: bool,
}

pub fn run(args: Request) -> Result<(), Fatal> {
    let (source, text) = read_input(&args.nodes).fatal(Status::Usage)?;
    let nodes = nodes::parse(&source, &text).fatal(Status::Usage)?;
    let dev = device::read(&args.vxlan_dev)?;
    let me = this_node(&nodes, args.name.as_deref(), &dev);
    let expect = Expect {
        port: args.port,
        vni: args.vni,
    };
    let found = compare::findings(&nodes, me, &dev, expect);
    let me_name = me.map(|i| nodes[i].name.as_str());
    if args.json {
        report::json(me_name, &dev, nodes.len(), &found);
    } else {
        report::text(me_name, &dev, nodes.len(), &found);
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(Fatal::new(
            Status::Failure,
            anyhow!(
                "{} finding{} (exit status 1)",
                found.len(),
                if found.len() == 1 { "" } else { "s" }
            ),
        ))
    }
}

/// The document and a name for it in messages.
fn read_input(path: &Path) -> anyhow::Result<(String, String)> {
    if path == Path::new("-") {
        let mut text = String::new();
        io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| anyhow!("cannot read the node list from stdin: {e}"))?;
        return Ok(("stdin".into(), text));
    }
    let text = fs::read_to_string(path).map_err(|e| {
        anyhow!(
            "cannot read the node list {}: {e} (make it with `kubectl get nodes -o json > nodes.json`)",
            path.display()
        )
    })?;
    Ok((path.display().to_string(), text))
}

/// `--name`, else the hostname, else the node whose public-ip is an
/// address of this host.
fn this_node(nodes: &[ClusterNode], name: Option<&str>, dev: &Device) -> Option<usize> {
    if let Some(name) = name {
        return nodes.iter().position(|n| n.name == name);
    }
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    nodes
        .iter()
        .position(|n| !host.is_empty() && n.name == host)
        .or_else(|| {
            nodes.iter().position(|n| {
                n.public_ip
                    .is_some_and(|ip| dev.local == Some(ip) || dev.host_addrs.contains(&ip))
            })
        })
}
