//! The probe hooks (vxlan-rcv and drop): each a table of backends tried
//! in order, the first that loads and attaches serving the hop.

use aya::programs::{BtfTracePoint, FEntry, KProbe, TracePoint};
use flannel_trace_common::programs as prog;

use super::{
    DropBackendChoice, HookReport, Plan, ProbeError, Probes, VxlanBackendChoice, describe,
    format_tried, program,
};

impl Probes {
    pub(super) fn attach_vxlan_rcv(&mut self, plan: &Plan) -> Result<(), ProbeError> {
        use VxlanBackendChoice as V;
        let order = vxlan_order(plan.vxlan_rcv);
        let mut fallbacks = Vec::new();
        for (i, &b) in order.iter().enumerate() {
            let attempt = match b {
                V::Fentry => self
                    .fentry(prog::VXLAN_FENTRY, "vxlan_rcv", plan)
                    .map(|()| ("fentry", "vxlan_rcv")),
                V::Kprobe => self
                    .kprobe(prog::VXLAN_KPROBE, "vxlan_rcv", plan)
                    .map(|()| ("kprobe", "vxlan_rcv")),
                V::TpBtf => self
                    .tp_btf(prog::VXLAN_TPBTF, "netif_receive_skb", plan)
                    .map(|()| ("tp_btf", "netif_receive_skb")),
                V::Tracepoint => self
                    .tracepoint(prog::VXLAN_TP, "net", "netif_receive_skb", plan)
                    .map(|()| ("tracepoint", "net:netif_receive_skb")),
                V::Auto => unreachable!("not in the order"),
            };
            match attempt {
                Ok((backend, target)) => {
                    // Backends preloaded but not needed any more.
                    for &later in &order[i + 1..] {
                        self.unload(vxlan_program(later));
                    }
                    self.hooks.push(HookReport {
                        hop: "vxlan-rcv".into(),
                        backend: backend.into(),
                        target: target.into(),
                        fallbacks,
                    });
                    return Ok(());
                }
                Err(e) => {
                    self.unload(vxlan_program(b));
                    fallbacks.push((backend_name(b).into(), e));
                }
            }
        }
        self.no_backend("vxlan-rcv", plan.vxlan_rcv == V::Auto, fallbacks)
    }

    /// A hook without a working backend: a hard error when the user chose
    /// the backend, else the session goes on with the TC hops.
    pub(super) fn no_backend(
        &mut self,
        hop: &'static str,
        auto: bool,
        tried: Vec<(String, String)>,
    ) -> Result<(), ProbeError> {
        if !auto {
            return Err(ProbeError::NoBackend {
                hop,
                tried: format_tried(&tried),
            });
        }
        // The caller explains the failure (kernel lockdown or not).
        self.unserved.push((hop, tried));
        Ok(())
    }

    pub(super) fn attach_drop(
        &mut self,
        plan: &Plan,
        choice: DropBackendChoice,
        has_reason: bool,
    ) -> Result<(), ProbeError> {
        use DropBackendChoice as D;
        // Before 5.17 kfree_skb has no reason argument, and the verifier
        // refuses a tp_btf program that merely mentions a third one.
        let tpbtf = if has_reason {
            prog::DROP_TPBTF
        } else {
            prog::DROP_TPBTF_NOREASON
        };
        let order: &[D] = match choice {
            D::Auto => &[D::TpBtf, D::Tracepoint],
            D::TpBtf => &[D::TpBtf],
            D::Tracepoint => &[D::Tracepoint],
        };
        let mut fallbacks = Vec::new();
        for &b in order {
            let attempt = match b {
                D::TpBtf => self
                    .tp_btf(tpbtf, "kfree_skb", plan)
                    .map(|()| ("tp_btf", "kfree_skb")),
                D::Tracepoint => self
                    .tracepoint(prog::DROP_TP, "skb", "kfree_skb", plan)
                    .map(|()| ("tracepoint", "skb:kfree_skb")),
                D::Auto => unreachable!("not in the order"),
            };
            match attempt {
                Ok((backend, target)) => {
                    self.hooks.push(HookReport {
                        hop: "drop".into(),
                        backend: backend.into(),
                        target: target.into(),
                        fallbacks,
                    });
                    return Ok(());
                }
                Err(e) => {
                    self.unload(if b == D::TpBtf { tpbtf } else { prog::DROP_TP });
                    fallbacks.push((
                        if b == D::TpBtf {
                            "tp_btf"
                        } else {
                            "tracepoint"
                        }
                        .into(),
                        e,
                    ));
                }
            }
        }
        self.no_backend("drop", choice == D::Auto, fallbacks)
    }

    pub(super) fn fentry(
        &mut self,
        name: &'static str,
        func: &str,
        plan: &Plan,
    ) -> Result<(), String> {
        if !plan.vxlan_rcv_in_vmlinux {
            return Err(format!(
                "{func} is not in vmlinux BTF (vxlan is a module; fentry would need its module BTF)"
            ));
        }
        let btf = self.btf.as_ref().ok_or("kernel BTF is not readable")?;
        let ebpf = self.ebpf.as_mut().expect("present until drop");
        let prog: &mut FEntry = program(ebpf, name).map_err(|e| e.to_string())?;
        if prog.fd().is_err() {
            prog.load(func, btf)
                .map_err(|e| describe(&e, plan.verifier_log.as_ref()))?;
        }
        prog.attach().map_err(|e| describe(&e, None))?;
        Ok(())
    }

    pub(super) fn kprobe(
        &mut self,
        name: &'static str,
        func: &str,
        plan: &Plan,
    ) -> Result<(), String> {
        kprobe_pmu()?;
        let prog: &mut KProbe = program(self.ebpf_mut(), name).map_err(|e| e.to_string())?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| describe(&e, plan.verifier_log.as_ref()))?;
        }
        prog.attach(func, 0).map_err(|e| describe(&e, None))?;
        Ok(())
    }

    pub(super) fn tp_btf(
        &mut self,
        name: &'static str,
        tp: &str,
        plan: &Plan,
    ) -> Result<(), String> {
        let btf = self.btf.as_ref().ok_or("kernel BTF is not readable")?;
        let ebpf = self.ebpf.as_mut().expect("present until drop");
        let prog: &mut BtfTracePoint = program(ebpf, name).map_err(|e| e.to_string())?;
        if prog.fd().is_err() {
            prog.load(tp, btf)
                .map_err(|e| describe(&e, plan.verifier_log.as_ref()))?;
        }
        prog.attach().map_err(|e| describe(&e, None))?;
        Ok(())
    }

    pub(super) fn tracepoint(
        &mut self,
        name: &'static str,
        category: &str,
        tp: &str,
        plan: &Plan,
    ) -> Result<(), String> {
        if plan.tracefs.is_none() {
            return Err("tracefs is not available".into());
        }
        let prog: &mut TracePoint = program(self.ebpf_mut(), name).map_err(|e| e.to_string())?;
        prog.load()
            .map_err(|e| describe(&e, plan.verifier_log.as_ref()))?;
        prog.attach(category, tp).map_err(|e| describe(&e, None))?;
        Ok(())
    }
}

/// The vxlan-rcv backends to try, in order.
pub(super) fn vxlan_order(choice: VxlanBackendChoice) -> &'static [VxlanBackendChoice] {
    use VxlanBackendChoice as V;
    match choice {
        V::Auto => &[V::Fentry, V::Kprobe, V::TpBtf, V::Tracepoint],
        V::Fentry => &[V::Fentry],
        V::Kprobe => &[V::Kprobe],
        V::TpBtf => &[V::TpBtf],
        V::Tracepoint => &[V::Tracepoint],
    }
}

/// Without the kprobe PMU a kprobe attach must fail: do not pay for the
/// program's verification first.
pub(super) fn kprobe_pmu() -> Result<(), String> {
    if std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        Ok(())
    } else {
        Err(
            "no kprobe PMU (/sys/bus/event_source/devices/kprobe): kernel without CONFIG_KPROBES"
                .into(),
        )
    }
}

pub(super) fn vxlan_program(b: VxlanBackendChoice) -> &'static str {
    match b {
        VxlanBackendChoice::Fentry => prog::VXLAN_FENTRY,
        VxlanBackendChoice::Kprobe => prog::VXLAN_KPROBE,
        VxlanBackendChoice::TpBtf => prog::VXLAN_TPBTF,
        VxlanBackendChoice::Tracepoint | VxlanBackendChoice::Auto => prog::VXLAN_TP,
    }
}

pub(super) fn backend_name(b: VxlanBackendChoice) -> &'static str {
    match b {
        VxlanBackendChoice::Auto => "auto",
        VxlanBackendChoice::Fentry => "fentry",
        VxlanBackendChoice::Kprobe => "kprobe",
        VxlanBackendChoice::TpBtf => "tp_btf",
        VxlanBackendChoice::Tracepoint => "tracepoint",
    }
}
