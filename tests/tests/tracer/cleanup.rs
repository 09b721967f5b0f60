//! What is left in the kernel: a foreign qdisc and filter are left alone,
//! ours are gone after SIGTERM, and after SIGKILL only what `cleanup`
//! removes, saying so.

use anyhow::{Result, ensure};
use flannel_trace_tests::{
    Kernel, Lab, Tracer, VXLAN_IFACE, preflight, serial, tracer_bin, with_lab,
};

use super::{assert_clean, our_filters, tc_state};

#[test]
fn netlink_mode_leaves_a_foreign_clsact_and_its_filter_alone() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let a = lab.node('a');
        a.run(&["tc", "qdisc", "add", "dev", "eth1", "clsact"])?;
        // Another tool's filter: a classic BPF program that accepts everything.
        a.run(&[
            "tc",
            "filter",
            "add",
            "dev",
            "eth1",
            "ingress",
            "pref",
            "7",
            "bpf",
            "bytecode",
            "1,6 0 0 4294967295,",
        ])?;
        let tracer = Tracer::start(a, &["--tc-mode", "netlink"])?;
        let during = a.run(&["tc", "filter", "show", "dev", "eth1", "ingress"])?;
        ensure!(
            during.contains("ft_und_ingress"),
            "our filter should be attached:\n{during}"
        );
        let s = tracer.stop()?;
        ensure!(s.status.success(), "{}", s.dump());
        let after = a.run(&["tc", "filter", "show", "dev", "eth1", "ingress"])?;
        ensure!(!after.contains("ft_"), "our filter must be gone:\n{after}");
        ensure!(
            after.contains("pref 7"),
            "the foreign filter must stay:\n{after}"
        );
        ensure!(tc_state(a, "eth1")?.1, "the foreign clsact qdisc must stay");
        ensure!(
            !tc_state(a, VXLAN_IFACE)?.1,
            "the clsact we created on flannel.1 must go"
        );
        Ok(())
    })
}

#[test]
fn nothing_is_left_after_sigterm_or_sigkill() -> Result<()> {
    preflight()?;
    let _g = serial();
    with_lab(Lab::builder().nodes(2), |lab| {
        let a = lab.node('a');
        let k = Kernel::running();
        let t = Tracer::start(a, &[])?;
        if k.has_tcx() {
            ensure!(
                tc_state(a, "eth1")?.0 == 2,
                "expected 2 TCX programs on eth1 while tracing"
            );
        } else {
            ensure!(
                our_filters(a)?.len() == 6,
                "expected our 6 netlink filters while tracing: {:?}",
                our_filters(a)?
            );
        }
        t.signal(libc::SIGTERM);
        let s = t.finish()?;
        ensure!(
            s.status.success() && s.summary.is_some(),
            "SIGTERM must end cleanly with a summary\n{}",
            s.dump()
        );
        assert_clean(lab)?;
        // SIGKILL: no userspace clean-up runs; TCX links die with the process.
        let t = Tracer::start(a, &[])?;
        t.kill()?;
        if k.has_tcx() {
            return assert_clean(lab);
        }
        // Before 6.6 (netlink TC) nothing ties a filter to the process: a
        // SIGKILLed tracer leaves exactly its own filters and the clsact
        // qdiscs it created, and nothing else, until the next run or
        // `flannel-trace cleanup` removes them, saying so.
        let left = our_filters(a)?;
        ensure!(
            left.len() == 6,
            "after SIGKILL on {} expected our 6 filters left behind, found {left:?}",
            k.release
        );
        let said = a.run(&[&tracer_bin().display().to_string(), "cleanup"])?;
        ensure!(
            said.matches("removed tc filter ft_").count() == 6
                && said.matches("removed the empty clsact").count() == 3,
            "cleanup must say what it removed:\n{said}"
        );
        assert_clean(lab)
    })
}
