//! Which direction of the node pair an event belongs to.

use std::net::IpAddr;

use flannel_trace_common::Hop;

use crate::{schema::event::Event, schema::identity::NodeIdentity};

/// An event's part in the conversation between `me` and `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `me` sent it towards `peer`.
    Sent,
    /// `me` received it from `peer`.
    Received,
}

/// Outer addresses decide where there are any; inner addresses (flannel
/// gives every node its own pod subnet) decide on the overlay side. Traffic
/// with third nodes has no role.
pub fn role(ev: &Event, me: &NodeIdentity, peer: &NodeIdentity) -> Option<Role> {
    let outer = ev.outer.as_ref().map(|o| (o.src, o.dst));
    let inner = ev
        .inner
        .as_ref()
        .map(|i| (i.endpoints.src, i.endpoints.dst));
    let to_peer = |o: Option<(IpAddr, IpAddr)>, i: Option<(IpAddr, IpAddr)>| match (o, i) {
        (Some((_, dst)), _) => peer.owns_underlay(dst),
        (None, Some((src, dst))) => peer.owns_overlay(dst) && !peer.owns_overlay(src),
        _ => false,
    };
    let from_peer = |o: Option<(IpAddr, IpAddr)>, i: Option<(IpAddr, IpAddr)>| match (o, i) {
        (Some((src, _)), _) => peer.owns_underlay(src),
        (None, Some((src, _))) => peer.owns_overlay(src),
        _ => false,
    };
    let _ = me;
    match ev.hop {
        Hop::PodIngress | Hop::OverlayEgress | Hop::UnderlayEgress => {
            to_peer(outer, inner).then_some(Role::Sent)
        }
        Hop::UnderlayIngress | Hop::VxlanRcv | Hop::OverlayIngress | Hop::PodEgress => {
            from_peer(outer, inner).then_some(Role::Received)
        }
        Hop::Drop => {
            if from_peer(outer, inner) {
                Some(Role::Received)
            } else if to_peer(outer, inner) {
                Some(Role::Sent)
            } else {
                None
            }
        }
    }
}
