//! Guest logs as the matrix sees them (a 5.10 boot with refused backends,
//! a guest without its marker) and the outputs made from them.

use super::*;
use crate::vm::matrix::Matrix;

const LOG: &str = "Booting from ROM..\x1bc\x1b[?7lFT-VM-BOOTED kernel=5.10.0-46-cloud-amd64 uptime=3.55
FT-VM-FACT kfree_skb_fields=skbaddr,location,protocol,
FT-VM-PROBES-BEGIN uptime=7.5
FT-VM-PROBE\t\t0\t{\"type\":\"start\",\"hooks\":[{\"hop\":\"overlay-egress\",\"backend\":\"netlink-clsact\"},{\"hop\":\"vxlan-rcv\",\"backend\":\"kprobe\"},{\"hop\":\"drop\",\"backend\":\"tp_btf\"}]}\t\t20.5
FT-VM-PROBE\t--vxlan-rcv-backend fentry --no-drops\t5\t\tflannel-trace: no backend of the vxlan-rcv hop works on this kernel: fentry: unknown BTF type `vxlan_rcv` \t4
FT-VM-VERIFIER\t--vxlan-rcv-backend fentry --no-drops\tlast | lines
FT-VM-PROBES-END uptime=40
FT-VM-TESTS-BEGIN uptime=40 args=
running 1 test
test every_hop ... ok
test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 9 filtered out; finished in 30.1s
FT-VM-TEST-TIME every_hop 31.5
running 1 test
test receiver_firewall ... FAILED
failures:
---- receiver_firewall stdout ----
Error: location nf_hook_slow+0x93
failures:
receiver_firewall
test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 9 filtered out; finished in 20.0s
FT-VM-TEST-TIME receiver_firewall 21
FT-VM-TESTS-END rc=101 uptime=93
FT-VM-RESULT kernel=5.10.0-46-cloud-amd64 status=101 uptime=93.1
";

fn outcome() -> Outcome {
    Outcome {
        wall: Duration::from_secs(100),
        timed_out: false,
        exit: Some(0),
    }
}

#[test]
fn a_log_becomes_a_verdict() {
    let r = KernelResult::from_log(
        "5.10",
        "5.10.0-46-cloud-amd64",
        &[],
        LOG,
        &outcome(),
        Duration::from_secs(120),
    );
    assert_eq!(r.boot_s, Some(3.55));
    assert_eq!((r.passed, r.failed), (1, 1));
    assert_eq!(r.test_seconds.get("every_hop"), Some(&31.5));
    assert_eq!(r.tests_s, Some(53.0));
    assert_eq!(r.probes.len(), 2);
    assert_eq!(
        r.auto_backends().get("vxlan-rcv").map(String::as_str),
        Some("kprobe")
    );
    assert_eq!(r.tc_backend(), "netlink-clsact");
    assert_eq!(r.probes[1].rc, 5);
    assert_eq!(r.probes[1].verifier.as_deref(), Some("last | lines"));
    assert_eq!(
        r.forced("--vxlan-rcv-backend fentry", "vxlan-rcv", "fentry"),
        "no: unknown BTF type `vxlan_rcv`"
    );
    assert!(!r.passed());
    assert!(
        r.problems.iter().any(|p| p.contains("receiver_firewall")),
        "{:?}",
        r.problems
    );
    assert!(
        r.excerpt.iter().any(|l| l.contains("nf_hook_slow")),
        "{:?}",
        r.excerpt
    );
    let m = Matrix::new(vec![r], false, &[]);
    assert!(m.markdown().contains("| 5.10 | 5.10.0-46-cloud-amd64 | netlink-clsact | kprobe | tp_btf | no (location only) | FAIL (1/2 pass) |"));
}

#[test]
fn a_guest_without_marker_fails_with_the_last_lines() {
    let log =
        "FT-VM-BOOTED kernel=6.1.0-56-cloud-amd64 uptime=4\nKernel panic - not syncing: boom\n";
    let out = Outcome {
        wall: Duration::from_secs(900),
        timed_out: true,
        exit: None,
    };
    let r = KernelResult::from_log(
        "6.1",
        "6.1.0-56-cloud-amd64",
        &[],
        log,
        &out,
        Duration::from_secs(900),
    );
    assert!(!r.passed());
    assert!(r.problems.iter().any(|p| p.contains("killed")));
    assert!(r.problems.iter().any(|p| p.contains("no FT-VM-RESULT")));
    assert!(r.excerpt.iter().any(|l| l.contains("Kernel panic")));
}

#[test]
fn reasons_are_cut_to_the_cause() {
    let e = "no backend of the vxlan-rcv hop works on this kernel: fentry: Unknown BTF type `vxlan_rcv`";
    assert_eq!(short_reason(e), "Unknown BTF type `vxlan_rcv`");
    assert_eq!(
        short_reason("cannot attach overlay-egress on flannel.1: TCX attach failed (EINVAL)"),
        "TCX attach failed (EINVAL)"
    );
    assert_eq!(short_reason("load failed: x | y"), "load failed: x \\| y");
}
