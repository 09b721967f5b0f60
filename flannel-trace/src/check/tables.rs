//! The main table's routes in the form `check` compares with the node
//! list: read by the network layer, the destination as a prefix.

use super::model::Route;
use crate::net::{self, NetError};

/// The main table's unicast IPv4 and IPv6 routes (`ip route show table
/// main`). A blackhole or unreachable route is no route to a peer.
pub fn routes() -> Result<Vec<Route>, NetError> {
    Ok(net::routes()?
        .into_iter()
        .filter_map(|r| {
            Some(Route {
                dst: r.prefix()?,
                gateway: r.gateway,
                oif: r.oif,
            })
        })
        .collect())
}
