//! Test fixtures: rtnetlink messages captured from Linux 6.18 on x86_64 (so
//! little-endian), in a namespace set up like `flannel_node()` in
//! `netns_tests.rs`, as commented hex dumps. Text after `#` is comment.

use std::net::Ipv4Addr;

use super::{
    links::VxlanInfo,
    netlink::{NETLINK_HEADER_LEN, SEQUENCE, align},
};

/// RTM_NEWLINK payload of flannel.1 (index 4, on top of eth1 = index 3),
/// without its statistics and IFLA_AF_SPEC.
pub(super) const FLANNEL_LINK: &str = "
    00 00 0100 04000000 43100100 00000000  # ifinfomsg: ether, index 4, UP|..|LOWER_UP
    0e00 0300 666c616e6e656c2e3100 0000    # IFLA_IFNAME flannel.1
    0800 0400 aa050000                     # IFLA_MTU 1450
    0500 1000 00 000000                    # IFLA_OPERSTATE
    0a00 0100 f6e2de4c2616 0000            # IFLA_ADDRESS
    0a00 0200 ffffffffffff 0000            # IFLA_BROADCAST
    e800 1200                              # IFLA_LINKINFO
      0a00 0100 76786c616e00 0000          #   IFLA_INFO_KIND vxlan
      d800 0200                            #   IFLA_INFO_DATA
        0800 0100 01000000                 #     IFLA_VXLAN_ID 1
        0800 0300 03000000                 #     IFLA_VXLAN_LINK 3
        0800 0400 0a190133                 #     IFLA_VXLAN_LOCAL 10.25.1.51
        0500 0500 00 000000                #     IFLA_VXLAN_TTL
        0500 1c00 00 000000                #     IFLA_VXLAN_TTL_INHERIT
        0500 0600 00 000000                #     IFLA_VXLAN_TOS
        0500 1d00 00 000000                #     IFLA_VXLAN_DF
        0800 1a00 00000000                 #     IFLA_VXLAN_LABEL
        0800 2000 00000000                 #     IFLA_VXLAN_LABEL_POLICY
        0500 0700 00 000000                #     IFLA_VXLAN_LEARNING 0
        0500 0b00 00 000000                #     IFLA_VXLAN_PROXY
        0500 0c00 00 000000                #     IFLA_VXLAN_RSC
        0500 0d00 00 000000                #     IFLA_VXLAN_L2MISS
        0500 0e00 00 000000                #     IFLA_VXLAN_L3MISS
        0500 1900 00 000000                #     IFLA_VXLAN_COLLECT_METADATA
        0800 0800 2c010000                 #     IFLA_VXLAN_AGEING 300
        0800 0900 00000000                 #     IFLA_VXLAN_LIMIT
        0600 0f00 211b 0000                #     IFLA_VXLAN_PORT 8475, big-endian
        0500 1200 01 000000                #     IFLA_VXLAN_UDP_CSUM
        0500 1300 00 000000                #     IFLA_VXLAN_UDP_ZERO_CSUM6_TX
        0500 1400 00 000000                #     IFLA_VXLAN_UDP_ZERO_CSUM6_RX
        0500 1500 00 000000                #     IFLA_VXLAN_REMCSUM_TX
        0500 1600 00 000000                #     IFLA_VXLAN_REMCSUM_RX
        0500 1f00 01 000000                #     IFLA_VXLAN_LOCALBYPASS
        0800 0a00 00000000                 #     IFLA_VXLAN_PORT_RANGE
        0c00 2100 f7ffffff000000ff         #     IFLA_VXLAN_RESERVED_BITS
    0c00 0600 6e6f717565756500             # IFLA_QDISC noqueue
    0400 3e80                              # IFLA_DEVLINK_PORT, empty nest
";

/// RTM_NEWNEIGH payload of the FDB entry of `bridge fdb append
/// 76:21:69:41:de:fe dev flannel.1 dst 10.25.1.55`.
pub(super) const FLANNEL_FDB: &str = "
    07 00 0000 04000000 c000 02 01          # ndmsg: AF_BRIDGE, index 4, PERMANENT|NOARP, self
    0a00 0200 76216941defe 0000             # NDA_LLADDR
    0800 0100 0a190137                      # NDA_DST 10.25.1.55
    1400 0300 00000000 fa320000 fa320000 00000000  # NDA_CACHEINFO
";

/// RTM_NEWNEIGH payload of a multicast entry of another device (index 5).
pub(super) const OTHER_FDB: &str = "
    07 00 0000 05000000 8000 02 00          # ndmsg: AF_BRIDGE, index 5, PERMANENT, self
    0a00 0200 333300000001 0000             # NDA_LLADDR
";

/// RTM_NEWROUTE payload of `default via 10.25.1.1 dev eth1`.
pub(super) const DEFAULT_ROUTE: &str = "
    02 00 00 00 fe 03 00 01 00000000        # rtmsg: AF_INET, /0, main, boot, universe, unicast
    0800 0f00 fe000000                      # RTA_TABLE 254
    0800 0500 0a190101                      # RTA_GATEWAY 10.25.1.1
    0800 0400 03000000                      # RTA_OIF 3
";

/// RTM_NEWQDISC payload of the clsact qdisc of eth1 (index 3), without
/// its statistics.
pub(super) const CLSACT_QDISC: &str = "
    00 00 0000 03000000 0000ffff f1ffffff 01000000  # tcmsg: index 3, ffff:0, parent ffff:fff1
    0b00 0100 636c7361637400 00             # TCA_KIND clsact
    0400 0200                               # TCA_OPTIONS
    0500 0c00 00 000000                     # TCA_HW_OFFLOAD 0
";

/// RTM_NEWTFILTER payloads of a filter dump at ingress of eth1 holding
/// one classic-BPF filter: first the classifier instance, with handle 0,
/// then the filter.
pub(super) const BPF_CLASSIFIER: &str = "
    00 00 0000 03000000 00000000 f2ffffff 000300c0  # tcmsg: index 3, handle 0, prio 49152
    0800 0100 62706600                      # TCA_KIND bpf
    0800 0b00 00000000                      # TCA_CHAIN 0
";
pub(super) const BPF_FILTER: &str = "
    00 00 0000 03000000 01000000 f2ffffff 000300c0  # tcmsg: index 3, handle 1, prio 49152
    0800 0100 62706600                      # TCA_KIND bpf
    0800 0b00 00000000                      # TCA_CHAIN 0
    2800 0200                               # TCA_OPTIONS
      0800 0300 0100ffff                    #   TCA_BPF_CLASSID ffff:1
      0600 0400 0100 0000                   #   TCA_BPF_OPS_LEN 1
      0c00 0500 06000000ffffffff            #   TCA_BPF_OPS: ret #-1
      0800 0900 08000000                    #   TCA_BPF_FLAGS_GEN not_in_hw
";

/// NLMSG_ERROR payload for deleting an already deleted clsact qdisc,
/// sent with NLM_F_CAPPED | NLM_F_ACK_TLVS.
pub(super) const EINVAL_WITH_EXTACK: &str = "
    eaffffff                                # -EINVAL
    30000000 2500 0500 07000000 00000000    # our request's header (echo capped)
    1300 0100 496e76616c69642068616e646c6500 00  # NLMSGERR_ATTR_MSG Invalid handle
";

/// NLMSG_ERROR payload for RTM_GETLINK of a missing name (NLM_F_CAPPED).
pub(super) const ENODEV: &str = "
    edffffff                                # -ENODEV
    34000000 1200 0500 07000000 00000000    # our request's header
";

/// Bytes from a commented hex dump.
pub(super) fn hex(dump: &str) -> Vec<u8> {
    let digits: Vec<u8> = dump
        .lines()
        .flat_map(|line| line.split('#').next().unwrap_or_default().bytes())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// A netlink message as the kernel frames it, padded to 4 bytes.
pub(super) fn nlmsg(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(NETLINK_HEADER_LEN + payload.len()).unwrap();
    let mut message = length.to_ne_bytes().to_vec();
    message.extend(kind.to_ne_bytes());
    message.extend(flags.to_ne_bytes());
    message.extend(SEQUENCE.to_ne_bytes());
    message.extend(0u32.to_ne_bytes()); // from the kernel
    message.extend(payload);
    message.resize(align(message.len()), 0);
    message
}

/// The vxlan settings of [`FLANNEL_LINK`] (those of `flannel_node()`'s
/// flannel.1 but for its underlay's index).
pub(super) fn flannel_vxlan() -> VxlanInfo {
    VxlanInfo {
        vni: Some(1),
        port: Some(8475),
        link: Some(3),
        local: Some(Ipv4Addr::new(10, 25, 1, 51).into()),
        learning: Some(false),
    }
}
