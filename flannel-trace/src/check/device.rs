//! This node's side: the vxlan device and the tables flannel programs for it.

use crate::{
    exit::{Fatal, OrFatal as _, Status},
    net::{self, NetError},
};

use super::{model::Device, tables};

pub fn read(name: &str) -> Result<Device, Fatal> {
    let link = net::link_by_name(name).map_err(|e| match e {
        NetError::NoSuchName(_) | NetError::InvalidName { .. } => Fatal::new(
            Status::Device,
            anyhow::anyhow!("{e}; name the overlay device with --vxlan-dev"),
        ),
        e => Fatal::new(Status::Failure, e),
    })?;
    let Some(vx) = link.vxlan.clone() else {
        return Err(Fatal::new(
            Status::Device,
            anyhow::anyhow!(
                "{name} is not a vxlan device (kind {}); name the overlay device with --vxlan-dev",
                link.kind.as_deref().unwrap_or("none")
            ),
        ));
    };
    let routes = tables::routes().fatal(Status::Failure)?;
    Ok(Device {
        name: link.name.clone(),
        ifindex: link.index,
        mac: link.mac,
        vni: vx.vni,
        port: vx.port.filter(|p| *p != 0),
        local: vx.local,
        host_addrs: net::all_addresses().fatal(Status::Failure)?,
        fdb: net::vxlan_fdb(link.index).fatal(Status::Failure)?,
        neighbours: Some(net::neighbours(link.index).fatal(Status::Failure)?),
        routes: Some(routes),
    })
}
