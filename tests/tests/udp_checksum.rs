//! A sender whose VXLAN frames carry a wrong outer UDP checksum (what a
//! broken TX checksum offload on its vxlan device produces): the receiver's
//! kernel verifies the nonzero checksum and drops the frames, and the
//! verdict of the two recordings names the drop and the fix. The frames are
//! crafted and put on node a's NIC with a packet socket (so node a's
//! underlay-egress sees them); they cross the fabric's veths as
//! CHECKSUM_NONE, so node b really checks them. Frames of a second flow,
//! identical but for a correct checksum, are the control: delivered.

use std::{path::PathBuf, thread, time::Duration};

use anyhow::{Context as _, Result, ensure};
use flannel_trace::Segment;
use flannel_trace_tests::{
    Injector, Lab, UNDERLAY_IFACE,
    fixtures::recording,
    frames::*,
    mac_of, preflight,
    report::{direction, fix_of, join, kernel_has_reason, show},
    scenario::Proc,
    serial, skip_check, with_lab,
};

const BAD_ID: u16 = 0x0c5a;
const GOOD_ID: u16 = 0x0c5b;
const FRAMES: u16 = 5;

#[test]
fn a_bad_outer_udp_checksum_is_a_receiver_drop_with_the_offload_fix() -> Result<()> {
    preflight()?;
    let _g = serial();
    let (ra, rb) = (recording("csum-a"), recording("csum-b"));
    with_lab(Lab::builder().nodes(2), |lab| {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let (src, dst) = (a.underlay_ip(), b.underlay_ip());
        let (a_mac, b_mac) = (mac_of(a, UNDERLAY_IFACE)?, mac_of(b, UNDERLAY_IFACE)?);
        let (a_vtep, b_vtep) = (mac(&a.vtep_mac()), mac(&b.vtep_mac()));
        let port = b.vxlan_port();
        let frame = |id: u16, seq: u16, skew: u16| {
            let icmp = icmp_echo(8, id, seq, &[0x42; 24]);
            let ip = Ipv4::new(a.vtep_ip(), b.vtep_ip(), PROTO_ICMP)
                .id(seq)
                .build(&icmp);
            let inner = ethernet(b_vtep, a_vtep, &[], ETH_P_IP, &ip);
            let vx = vxlan(0x08, [0; 3], b.vni(), &inner);
            let udp = udp4_checksummed(src, dst, 40100 + id % 2, port, &vx, skew);
            let outer = Ipv4::new(src, dst, PROTO_UDP).id(seq).build(&udp);
            ethernet(b_mac, a_mac, &[], ETH_P_IP, &outer)
        };
        let record = |name: &str, path: &PathBuf| -> Result<Vec<String>> {
            let path = path.to_str().context("recording path")?.to_owned();
            Ok([
                "--name",
                name,
                "--port",
                &port.to_string(),
                "--record",
                &path,
            ]
            .into_iter()
            .map(str::to_owned)
            .chain(["--duration".into(), "6s".into()])
            .collect())
        };
        let args_a = record("node-a", &ra)?;
        let args_b = record("node-b", &rb)?;
        let mut pa = Proc::spawn(a, &args_a.iter().map(String::as_str).collect::<Vec<_>>())?;
        let mut pb = Proc::spawn(b, &args_b.iter().map(String::as_str).collect::<Vec<_>>())?;
        pa.wait_stderr("Ctrl-C to stop", Duration::from_secs(30))?;
        pb.wait_stderr("Ctrl-C to stop", Duration::from_secs(30))?;
        let nic = Injector::open(a, UNDERLAY_IFACE)?;
        for seq in 1..=FRAMES {
            nic.send(&frame(BAD_ID, seq, 1))?;
            nic.send(&frame(GOOD_ID, seq, 0))?;
            thread::sleep(Duration::from_millis(50));
        }
        Proc::wait_both_ok(pa, pb)
    })?;
    let v = join(&ra, &rb);
    let _ = (std::fs::remove_file(&ra), std::fs::remove_file(&rb));
    let v = v?;
    let ab = direction(&v, "node-a")?;
    let flow = |id: u16| {
        ab.flows
            .iter()
            .find(|f| f.icmp_id == Some(id))
            .with_context(|| format!("no flow with icmp id {id}: {}", show(ab)))
    };
    let good = flow(GOOD_ID)?;
    ensure!(
        good.delivered == u64::from(FRAMES) && good.segment == Segment::Delivered,
        "the frames with a correct checksum must be delivered: {}",
        show(good)
    );
    let bad = flow(BAD_ID)?;
    ensure!(
        bad.hops.underlay_egress == u64::from(FRAMES)
            && bad.hops.underlay_ingress == u64::from(FRAMES),
        "both NICs see every frame: {}",
        show(bad)
    );
    ensure!(bad.delivered == 0, "{}", show(bad));
    ensure!(ab.segment == Segment::ReceiverHost, "{}", show(ab));
    let verdict = &ab.verdict;
    let fix = fix_of(ab);
    if kernel_has_reason("UDP_CSUM") {
        ensure!(
            verdict.contains(&format!("{FRAMES} dropped: UDP_CSUM")),
            "{verdict}"
        );
        ensure!(fix.contains("bad outer UDP checksum"), "{fix}");
        ensure!(
            fix.ends_with("on node-a: `ethtool -K flannel.1 tx-checksum-ip-generic off`"),
            "{fix}"
        );
    } else {
        // No reasons before 5.17: the loss is still placed in node b, and
        // no checksum is claimed without the kernel saying so.
        ensure!(!fix.contains("checksum"), "{fix}");
        skip_check(
            "the kernel has no drop reason UDP_CSUM: the checksum verdict and its fix are not checked",
        );
    }
    Ok(())
}
