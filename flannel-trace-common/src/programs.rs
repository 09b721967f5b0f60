//! The eBPF programs' names. The aya macros name a program after its entry
//! function, so the eBPF crate's entry points carry exactly these names;
//! userspace finds the programs by them. A unit test of the userspace
//! crate checks this list against the programs of the built object, both
//! ways, so a renamed entry point fails the build's tests, not a node.

pub const OVL_EGRESS: &str = "ft_ovl_egress";
pub const OVL_INGRESS: &str = "ft_ovl_ingress";
pub const UND_EGRESS: &str = "ft_und_egress";
pub const UND_INGRESS: &str = "ft_und_ingress";
pub const POD_INGRESS: &str = "ft_pod_ingress";
pub const POD_EGRESS: &str = "ft_pod_egress";
pub const VXLAN_KPROBE: &str = "ft_vxlan_kprobe";
pub const VXLAN_FENTRY: &str = "ft_vxlan_fentry";
pub const VXLAN_TPBTF: &str = "ft_vxlan_tpbtf";
pub const VXLAN_TP: &str = "ft_vxlan_tp";
pub const DROP_TPBTF: &str = "ft_drop_tpbtf";
pub const DROP_TPBTF_NOREASON: &str = "ft_drop_tpbtf_noreason";
pub const DROP_TP: &str = "ft_drop_tp";

/// Every program of the object.
pub const ALL: &[&str] = &[
    OVL_EGRESS,
    OVL_INGRESS,
    UND_EGRESS,
    UND_INGRESS,
    POD_INGRESS,
    POD_EGRESS,
    VXLAN_KPROBE,
    VXLAN_FENTRY,
    VXLAN_TPBTF,
    VXLAN_TP,
    DROP_TPBTF,
    DROP_TPBTF_NOREASON,
    DROP_TP,
];
