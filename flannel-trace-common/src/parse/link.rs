//! Ethernet and up to two VLAN tags.

use super::Bytes;
use super::ETH_HLEN;
use super::ETH_P_8021AD;
use super::ETH_P_8021Q;
use super::MAX_VLAN_TAGS;
use super::ParseError;
use super::be16;

pub(super) struct L2 {
    pub(super) ethertype: u16,
    pub(super) l3: usize,
    pub(super) vlans: Tags,
    pub(super) dmac: [u8; 6],
}

/// The VLAN IDs found in a frame's bytes, outermost first, [`NO_TAG`] where
/// there is none. Plain numbers rather than `Option`s: an `Option` leaves
/// bytes of the struct unwritten when `None`, and the 5.10 verifier refuses
/// a program that copies such a struct through the stack.
#[derive(Clone, Copy)]
pub(super) struct Tags {
    pub(super) outer: u16,
    /// The second tag (QinQ).
    pub(super) inner: u16,
}

/// Not a VLAN ID (those are 12 bits).
pub(super) const NO_TAG: u16 = u16::MAX;

impl Tags {
    pub(super) const NONE: Tags = Tags {
        outer: NO_TAG,
        inner: NO_TAG,
    };
}

#[inline(always)]
pub(super) fn parse_eth<B: Bytes + ?Sized>(b: &B, off: usize) -> Result<L2, ParseError> {
    let eth: [u8; ETH_HLEN] = b.read(off).ok_or(ParseError::Short)?;
    let mut ethertype = be16([eth[12], eth[13]]);
    let mut l3 = off + ETH_HLEN;
    let mut vlans = Tags::NONE;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag: [u8; 4] = b.read(l3).ok_or(ParseError::Short)?;
        let vid = be16([tag[0], tag[1]]) & 0x0fff;
        // Both tags are in the bytes when no device moved one into skb
        // metadata (e.g. a QinQ frame sent through a packet socket).
        if vlans.outer == NO_TAG {
            vlans.outer = vid;
        } else {
            vlans.inner = vid;
        }
        ethertype = be16([tag[2], tag[3]]);
        l3 += 4;
    }
    Ok(L2 {
        ethertype,
        l3,
        vlans,
        dmac: [eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]],
    })
}
