//! Bad input is refused with a clear message and a documented status
//! before anything is attached: a VNI beyond 24 bits, an underlay that
//! cannot be one; and a dubious underlay (no address) is warned about.

use anyhow::{Result, ensure};
use flannel_trace_tests::{VXLAN_IFACE, preflight, run_tracer, scenario::Fault, serial, with_lab};

#[test]
fn implausible_values_and_devices_are_refused_or_warned_about() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Fault::None.lab(), |lab| {
        let a = lab.node('a');
        let (st, _, err) = run_tracer(a, &["--vni", "16777216", "--duration", "1s"])?;
        ensure!(st.code() == Some(2), "--vni 16777216: {st:?} {err}");
        ensure!(err.contains("16777216") && err.contains("--vni"), "{err}");

        for (iface, why) in [("lo", "loopback"), (VXLAN_IFACE, "vxlan device")] {
            let (st, _, err) = run_tracer(a, &["--iface", iface, "--duration", "1s"])?;
            ensure!(st.code() == Some(4), "--iface {iface}: {st:?} {err}");
            ensure!(err.contains(why) && err.contains("--iface"), "{err}");
            ensure!(
                err.lines()
                    .filter(|l| l.starts_with("flannel-trace:"))
                    .count()
                    == 1,
                "one error line: {err}"
            );
        }

        // A veth pair inside the node: up, no address.
        a.run(&[
            "ip", "link", "add", "ftdummy0", "type", "veth", "peer", "name", "ftdummy1",
        ])?;
        a.run(&["ip", "link", "set", "ftdummy0", "up"])?;
        let (st, _, err) = run_tracer(a, &["--iface", "ftdummy0", "--duration", "1s"])?;
        a.run(&["ip", "link", "del", "ftdummy0"])?;
        ensure!(
            st.success(),
            "a device without an address is warned about, not refused: {st:?} {err}"
        );
        ensure!(err.contains("ftdummy0 has no address"), "{err}");
        Ok(())
    })
}
