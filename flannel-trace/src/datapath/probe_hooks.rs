//! The probe hooks (vxlan-rcv and drop): each hop has one table of
//! backends, and one mechanism ([`Probes::attach_first`]) tries a table in
//! order, the first backend that loads and attaches serving the hop. A new
//! backend is a row in its hop's table (and a program in the eBPF crate's
//! `hooks/`, its name in `flannel_trace_common::programs`).

use aya::programs::{BtfTracePoint, FEntry, KProbe, TracePoint};
use flannel_trace_common::programs as prog;

use super::{
    DropBackendChoice, HookReport, Plan, ProbeError, Probes, VxlanBackendChoice, describe,
    format_tried, program,
};

/// How a backend's program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Attach {
    /// fentry on a kernel function (it must be in vmlinux BTF).
    Fentry(&'static str),
    /// kprobe on a kernel function.
    Kprobe(&'static str),
    /// BTF-typed tracepoint.
    TpBtf(&'static str),
    /// Classic tracepoint: category and name.
    Tracepoint(&'static str, &'static str),
}

/// One way of serving a hop: its name in reports and flags, the program,
/// where it attaches.
#[derive(Clone, Copy, Debug)]
pub(super) struct Backend {
    pub(super) label: &'static str,
    pub(super) program: &'static str,
    pub(super) attach: Attach,
}

impl Backend {
    const fn new(label: &'static str, program: &'static str, attach: Attach) -> Backend {
        Backend {
            label,
            program,
            attach,
        }
    }

    /// Where it attaches, as the start banner and `--json` name it.
    fn target(&self) -> String {
        match self.attach {
            Attach::Fentry(f) | Attach::Kprobe(f) | Attach::TpBtf(f) => f.into(),
            Attach::Tracepoint(category, name) => format!("{category}:{name}"),
        }
    }
}

const VXLAN_FENTRY: Backend =
    Backend::new("fentry", prog::VXLAN_FENTRY, Attach::Fentry("vxlan_rcv"));
const VXLAN_KPROBE: Backend =
    Backend::new("kprobe", prog::VXLAN_KPROBE, Attach::Kprobe("vxlan_rcv"));
/// Where neither kprobes nor fentry are allowed: the decapsulated frame.
const VXLAN_TPBTF: Backend = Backend::new(
    "tp_btf",
    prog::VXLAN_TPBTF,
    Attach::TpBtf("netif_receive_skb"),
);
const VXLAN_TP: Backend = Backend::new(
    "tracepoint",
    prog::VXLAN_TP,
    Attach::Tracepoint("net", "netif_receive_skb"),
);
const DROP_TPBTF: Backend = Backend::new("tp_btf", prog::DROP_TPBTF, Attach::TpBtf("kfree_skb"));
/// Before 5.17 kfree_skb has no reason argument, and the verifier refuses
/// a tp_btf program that merely mentions a third one.
const DROP_TPBTF_NOREASON: Backend = Backend::new(
    "tp_btf",
    prog::DROP_TPBTF_NOREASON,
    Attach::TpBtf("kfree_skb"),
);
const DROP_TP: Backend = Backend::new(
    "tracepoint",
    prog::DROP_TP,
    Attach::Tracepoint("skb", "kfree_skb"),
);

/// The vxlan-rcv backends to try, in order.
pub(super) fn vxlan_rcv_backends(choice: VxlanBackendChoice) -> &'static [Backend] {
    use VxlanBackendChoice as V;
    match choice {
        V::Auto => &[VXLAN_FENTRY, VXLAN_KPROBE, VXLAN_TPBTF, VXLAN_TP],
        V::Fentry => &[VXLAN_FENTRY],
        V::Kprobe => &[VXLAN_KPROBE],
        V::TpBtf => &[VXLAN_TPBTF],
        V::Tracepoint => &[VXLAN_TP],
    }
}

/// The drop backends to try, in order.
pub(super) fn drop_backends(choice: DropBackendChoice, has_reason: bool) -> &'static [Backend] {
    use DropBackendChoice as D;
    match (choice, has_reason) {
        (D::Auto, true) => &[DROP_TPBTF, DROP_TP],
        (D::Auto, false) => &[DROP_TPBTF_NOREASON, DROP_TP],
        (D::TpBtf, true) => &[DROP_TPBTF],
        (D::TpBtf, false) => &[DROP_TPBTF_NOREASON],
        (D::Tracepoint, _) => &[DROP_TP],
    }
}

impl Probes {
    pub(super) fn attach_vxlan_rcv(&mut self, plan: &Plan) -> Result<(), ProbeError> {
        let auto = plan.vxlan_rcv == VxlanBackendChoice::Auto;
        self.attach_first("vxlan-rcv", vxlan_rcv_backends(plan.vxlan_rcv), auto, plan)
    }

    pub(super) fn attach_drop(
        &mut self,
        plan: &Plan,
        choice: DropBackendChoice,
        has_reason: bool,
    ) -> Result<(), ProbeError> {
        let auto = choice == DropBackendChoice::Auto;
        self.attach_first("drop", drop_backends(choice, has_reason), auto, plan)
    }

    /// Serves `hop` with the first of `order` that loads and attaches;
    /// the others are unloaded (preloaded ones included). What each
    /// refused goes to the hop's report.
    fn attach_first(
        &mut self,
        hop: &'static str,
        order: &[Backend],
        auto: bool,
        plan: &Plan,
    ) -> Result<(), ProbeError> {
        let mut fallbacks = Vec::new();
        for (i, b) in order.iter().enumerate() {
            match self.attach_backend(b, plan) {
                Ok(()) => {
                    for later in &order[i + 1..] {
                        self.unload(later.program);
                    }
                    self.hooks.push(HookReport {
                        hop: hop.into(),
                        backend: b.label.into(),
                        target: b.target(),
                        fallbacks,
                    });
                    return Ok(());
                }
                Err(e) => {
                    self.unload(b.program);
                    fallbacks.push((b.label.into(), e));
                }
            }
        }
        self.no_backend(hop, auto, fallbacks)
    }

    fn attach_backend(&mut self, b: &Backend, plan: &Plan) -> Result<(), String> {
        match b.attach {
            Attach::Fentry(func) => self.fentry(b.program, func, plan),
            Attach::Kprobe(func) => self.kprobe(b.program, func, plan),
            Attach::TpBtf(tp) => self.tp_btf(b.program, tp, plan),
            Attach::Tracepoint(category, tp) => self.tracepoint(b.program, category, tp, plan),
        }
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

    fn fentry(&mut self, name: &'static str, func: &str, plan: &Plan) -> Result<(), String> {
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

    fn kprobe(&mut self, name: &'static str, func: &str, plan: &Plan) -> Result<(), String> {
        kprobe_pmu()?;
        let prog: &mut KProbe = program(self.ebpf_mut(), name).map_err(|e| e.to_string())?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| describe(&e, plan.verifier_log.as_ref()))?;
        }
        prog.attach(func, 0).map_err(|e| describe(&e, None))?;
        Ok(())
    }

    fn tp_btf(&mut self, name: &'static str, tp: &str, plan: &Plan) -> Result<(), String> {
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

    fn tracepoint(
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
