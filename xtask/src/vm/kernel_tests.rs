//! Picking the newest ABI of a series and reading modinfo, on names and
//! bytes taken from real packages.

use super::*;

#[test]
fn picks_the_newest_abi_of_a_series() {
    let names: Vec<String> = [
        "linux-image-6.1.0-0.deb11.52-cloud-amd64",
        "linux-image-6.1.0-9-cloud-amd64",
        "linux-image-6.1.0-56-cloud-amd64",
        "linux-image-6.1.0-56-cloud-amd64-unsigned",
        "linux-image-6.12.118+deb13-cloud-amd64",
        "linux-image-6.12.115+deb13.1-cloud-amd64",
        "linux-image-6.12.118+deb12-cloud-amd64",
        "linux-image-7.3-cloud-amd64",
        "linux-image-7.2.13+deb14-cloud-amd64",
        "linux-image-7.3.4+deb13-cloud-amd64",
        "linux-image-7.3.4+deb13-rt-amd64",
        "linux-image-6.1-cloud-amd64",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        newest("6.1", "cloud-amd64", &names).as_deref(),
        Some("linux-image-6.1.0-56-cloud-amd64")
    );
    assert_eq!(
        newest("6.12", "cloud-amd64", &names).as_deref(),
        Some("linux-image-6.12.118+deb13-cloud-amd64")
    );
    assert_eq!(
        newest("7", "cloud-amd64", &names).as_deref(),
        Some("linux-image-7.3.4+deb13-cloud-amd64")
    );
    assert_eq!(newest("5.10", "cloud-amd64", &names), None);
    // The generic flavour must not pick up "…-cloud-amd64" or "…-rt-amd64".
    assert_eq!(newest("7", "amd64", &names), None);
}

#[test]
fn reads_modinfo_strings() {
    let data = b"junk\0license=GPL\0depends=udp_tunnel,ip6_udp_tunnel\0retpoline=Y\0";
    assert_eq!(modinfo(data, "depends"), "udp_tunnel,ip6_udp_tunnel");
    assert_eq!(modinfo(b"\0depends=\0", "depends"), "");
    assert_eq!(modinfo(b"xdepends=a\0", "depends"), "");
}
