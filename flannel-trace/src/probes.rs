//! Loading the eBPF object and attaching every hook, each with its backend
//! chosen at run time, and detaching it all again.

use std::{fmt::Write as _, path::PathBuf};

use aya::maps::Array;
use aya::{
    Btf as AyaBtf, Ebpf, EbpfLoader,
    programs::{
        BtfTracePoint, FEntry, KProbe, LinkOrder, ProgramError, SchedClassifier, TcAttach,
        TcAttachType, TracePoint,
        tc::{self, NlOptions},
    },
};
use flannel_trace_common::{Config, Ports, programs as prog};
use thiserror::Error;

use crate::{
    cli::{DropBackendChoice, TcMode, VxlanBackendChoice},
    leftovers, net,
};

/// The object built from flannel-trace-ebpf by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flannel-trace"));

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("loading the eBPF object failed: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("program {0} is missing from the eBPF object (binary built from inconsistent sources)")]
    MissingProgram(&'static str),
    #[error("cannot attach {hop} on {iface}: {reason}")]
    Tc {
        hop: &'static str,
        iface: String,
        reason: String,
    },
    /// `--tc-mode tcx` on a kernel that refuses TCX links (before 6.6).
    #[error("cannot attach {hop} on {iface}: {reason}")]
    TcxUnavailable {
        hop: &'static str,
        iface: String,
        reason: String,
    },
    #[error("no backend of the {hop} hop works on this kernel: {tried}")]
    NoBackend { hop: &'static str, tried: String },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("updating map {0}: {1}")]
    Map(&'static str, #[source] aya::maps::MapError),
}

impl ProbeError {
    /// A kernel feature is missing, rather than something failing at run time.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            ProbeError::NoBackend { .. } | ProbeError::TcxUnavailable { .. }
        )
    }
}

/// What the user asked for.
pub struct Plan {
    pub tc_mode: TcMode,
    pub vxlan_rcv: VxlanBackendChoice,
    pub drop: Option<DropBackendChoice>,
    pub ring_size: u32,
    pub verifier_log: Option<PathBuf>,
    /// A mounted tracefs, if any (classic tracepoints need it).
    pub tracefs: Option<PathBuf>,
    /// Whether `vxlan_rcv` is described in vmlinux BTF (vxlan built in);
    /// fentry on a module function would need that module's BTF.
    pub vxlan_rcv_in_vmlinux: bool,
}

/// Which backend serves a hook, and why others were passed over.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct HookReport {
    pub hop: String,
    pub backend: String,
    pub target: String,
    /// Backends tried before the one chosen, with the error each gave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<(String, String)>,
}

/// The interfaces the TC programs attach to.
pub struct Devices<'a> {
    pub vxlan: (u32, &'a str),
    /// The main underlay NIC first, then every other NIC watched.
    pub underlay: Vec<(u32, &'a str)>,
    /// Pod-side devices (cni0); empty for host-network tracing.
    pub pods: Vec<(u32, &'a str)>,
}

/// The loaded object and its attachments. Dropping it detaches everything,
/// then removes a clsact qdisc flannel-trace created once nothing is
/// attached to it any more (never anyone else's; see `leftovers`).
pub struct Probes {
    ebpf: Option<Ebpf>,
    /// vmlinux BTF as aya reads it, parsed once: the loader and every
    /// BTF-typed program share it (each parse costs tens of milliseconds).
    btf: Option<AyaBtf>,
    pub hooks: Vec<HookReport>,
    /// Hooks no backend could serve under the automatic choice, with what
    /// each backend answered: the session runs without them (TC hops only).
    pub unserved: Vec<(&'static str, Vec<(String, String)>)>,
    /// TCX attachments the preload made: (program, ifindex, direction,
    /// outcome), taken by the attach step as its TCX attempt.
    pre_tcx: Vec<(&'static str, u32, TcAttachType, Result<(), TcFailure>)>,
    /// Devices with netlink filters of ours, and the netns they are in.
    netlink_devices: Vec<(u32, String)>,
    netns: u32,
}

impl Probes {
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        self.ebpf.as_mut().expect("present until drop")
    }

    /// `btf`: vmlinux BTF, read by the caller (e.g. on a thread of its own
    /// while it prepares `cfg`); `None` when the kernel has none readable.
    pub fn load(
        cfg: &Config,
        ports: Ports,
        plan: &Plan,
        dev: &Devices<'_>,
        btf: Option<AyaBtf>,
    ) -> Result<Probes, ProbeError> {
        let mut loader = EbpfLoader::new();
        if let Some(b) = &btf {
            // Only read for CO-RE relocations, which Rust objects lack; set
            // so that a future one does not parse vmlinux again.
            loader.btf(b);
        }
        let ebpf = loader
            .override_global("CONFIG", cfg, true)
            .map_max_entries("EVENTS", plan.ring_size)
            .load(OBJECT)
            .map_err(ProbeError::Object)?;
        let mut probes = Probes {
            ebpf: Some(ebpf),
            btf,
            hooks: Vec::new(),
            unserved: Vec::new(),
            pre_tcx: Vec::new(),
            netlink_devices: Vec::new(),
            netns: cfg.netns_ino,
        };
        probes.set_ports(ports)?;
        probes.preload(plan, dev, cfg.has_drop_reason != 0);
        probes.attach_tc(plan, dev)?;
        probes.attach_vxlan_rcv(plan)?;
        if let Some(choice) = plan.drop {
            probes.attach_drop(plan, choice, cfg.has_drop_reason != 0)?;
        }
        Ok(probes)
    }

    /// Verify, in parallel, the programs the plan may attach: the TC
    /// programs, the drop program and every vxlan-rcv backend the kernel
    /// may take (a refused fentry answers at once; the fallback is then
    /// verified already). The kernel runs the verifier in the loading
    /// thread and privileged loads take no common lock, so they no longer
    /// queue behind each other. A program that fails here is left
    /// unloaded, and its hook's usual path loads it again and reports the
    /// error; a preloaded backend that is not chosen is unloaded then.
    fn preload(&mut self, plan: &Plan, dev: &Devices<'_>, has_reason: bool) {
        use aya::programs::Program as P;
        let hooks = tc_hooks(dev);
        let tcx = plan.tc_mode != TcMode::Netlink;
        // (program, BTF target) of the BTF-typed programs.
        let mut typed: Vec<(&str, &str)> = Vec::new();
        if let Some(DropBackendChoice::Auto | DropBackendChoice::TpBtf) = plan.drop {
            let name = if has_reason {
                prog::DROP_TPBTF
            } else {
                prog::DROP_TPBTF_NOREASON
            };
            typed.push((name, "kfree_skb"));
        }
        let mut kprobe = false;
        for b in vxlan_order(plan.vxlan_rcv) {
            match b {
                VxlanBackendChoice::Fentry if plan.vxlan_rcv_in_vmlinux => {
                    typed.push((prog::VXLAN_FENTRY, "vxlan_rcv"))
                }
                VxlanBackendChoice::Kprobe if kprobe_pmu().is_ok() => kprobe = true,
                VxlanBackendChoice::TpBtf => typed.push((prog::VXLAN_TPBTF, "netif_receive_skb")),
                _ => {}
            }
        }
        let pre_tcx = std::sync::Mutex::new(Vec::new());
        let btf = self.btf.as_ref();
        let ebpf = self.ebpf.as_mut().expect("present until drop");
        std::thread::scope(|scope| {
            for (name, prog) in ebpf.programs_mut() {
                let target = typed.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
                match prog {
                    P::SchedClassifier(p) if hooks.iter().any(|h| h.1 == name) => {
                        let hooks = &hooks;
                        let pre_tcx = &pre_tcx;
                        scope.spawn(move || {
                            if let Err(e) = p.load() {
                                log::debug!("preloading {name}: {e}");
                                return;
                            }
                            // TCX links too: each costs an RCU grace period
                            // under the RTNL lock (tens of milliseconds
                            // here), better spent while the slower
                            // programs are still being verified.
                            let mine = hooks.iter().filter(|h| tcx && h.1 == name);
                            for &(_, n, (ifindex, _), dir) in mine {
                                let r = tcx_attach(p, ifindex, dir);
                                let mut done = pre_tcx.lock().unwrap_or_else(|e| e.into_inner());
                                done.push((n, ifindex, dir, r));
                            }
                        });
                    }
                    P::KProbe(p) if kprobe && name == prog::VXLAN_KPROBE => {
                        scope.spawn(move || {
                            if let Err(e) = p.load() {
                                log::debug!("preloading {name}: {e}");
                            }
                        });
                    }
                    P::BtfTracePoint(p) if target.is_some() && btf.is_some() => {
                        let tp = target.expect("checked");
                        scope.spawn(move || {
                            if let Err(e) = p.load(tp, btf.expect("checked")) {
                                log::debug!("preloading {name}: {e}");
                            }
                        });
                    }
                    P::FEntry(p) if target.is_some() && btf.is_some() => {
                        let func = target.expect("checked");
                        scope.spawn(move || {
                            if let Err(e) = p.load(func, btf.expect("checked")) {
                                log::debug!("preloading {name}: {e}");
                            }
                        });
                    }
                    _ => {}
                }
            }
        });
        self.pre_tcx = pre_tcx.into_inner().unwrap_or_else(|e| e.into_inner());
    }

    /// Replace the set of overlay ports the programs match, live.
    pub fn set_ports(&mut self, ports: Ports) -> Result<(), ProbeError> {
        let map = self
            .ebpf_mut()
            .map_mut("PORTS")
            .ok_or(ProbeError::MissingMap("PORTS"))?;
        let mut arr: Array<_, Ports> =
            Array::try_from(map).map_err(|e| ProbeError::Map("PORTS", e))?;
        arr.set(0, &ports, 0)
            .map_err(|e| ProbeError::Map("PORTS", e))
    }

    fn attach_tc(&mut self, plan: &Plan, dev: &Devices<'_>) -> Result<(), ProbeError> {
        for (hop, name, (ifindex, ifname), dir) in tc_hooks(dev) {
            let (backend, fallbacks) = self
                .attach_one_tc(plan, name, ifindex, ifname, dir)
                .map_err(|f| {
                    let iface = ifname.to_owned();
                    match f {
                        TcFailure::TcxRefused(reason) => {
                            ProbeError::TcxUnavailable { hop, iface, reason }
                        }
                        TcFailure::Other(reason) => ProbeError::Tc { hop, iface, reason },
                    }
                })?;
            self.hooks.push(HookReport {
                hop: hop.into(),
                backend,
                target: ifname.to_owned(),
                fallbacks,
            });
        }
        Ok(())
    }

    fn attach_one_tc(
        &mut self,
        plan: &Plan,
        name: &'static str,
        ifindex: u32,
        ifname: &str,
        dir: TcAttachType,
    ) -> Result<(String, Vec<(String, String)>), TcFailure> {
        let log = plan.verifier_log.clone();
        let prog: &mut SchedClassifier =
            program(self.ebpf_mut(), name).map_err(TcFailure::other)?;
        // One program serves every device of its hop: verified once.
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| TcFailure::Other(describe(&e, log.as_ref())))?;
        }
        let mut fallbacks = Vec::new();
        if plan.tc_mode != TcMode::Netlink {
            let pre = self
                .pre_tcx
                .iter()
                .position(|&(n, i, d, _)| n == name && i == ifindex && d == dir)
                .map(|at| self.pre_tcx.swap_remove(at).3);
            let prog: &mut SchedClassifier =
                program(self.ebpf_mut(), name).map_err(TcFailure::other)?;
            match pre.unwrap_or_else(|| tcx_attach(prog, ifindex, dir)) {
                Ok(()) => return Ok(("tcx".into(), fallbacks)),
                Err(e) if plan.tc_mode == TcMode::Auto => {
                    fallbacks.push(("tcx".into(), e.into_text()))
                }
                Err(TcFailure::TcxRefused(e)) => {
                    return Err(TcFailure::TcxRefused(format!(
                        "TCX attach failed ({e}); TCX needs Linux 6.6+, try --tc-mode netlink"
                    )));
                }
                Err(TcFailure::Other(e)) => {
                    return Err(TcFailure::Other(format!("TCX attach failed ({e})")));
                }
            }
        }
        // Netlink: a clsact qdisc is needed; create it only if absent, and
        // mark it as ours first (see `leftovers`), under the lock, so that a
        // concurrent tracer's exit cannot remove it between the two steps.
        let netns = self.netns;
        let _lock = leftovers::lock().map_err(TcFailure::other)?;
        let had_clsact = net::has_clsact(ifindex).map_err(TcFailure::other)?;
        if !had_clsact {
            leftovers::mark_created(netns, ifindex).map_err(TcFailure::other)?;
            if let Err(e) = tc::qdisc_add_clsact(ifindex) {
                leftovers::unmark(netns, ifindex);
                return Err(TcFailure::Other(format!(
                    "adding a clsact qdisc failed: {e}"
                )));
            }
        }
        if !self.netlink_devices.iter().any(|(i, _)| *i == ifindex) {
            self.netlink_devices.push((ifindex, ifname.to_owned()));
        }
        let prog: &mut SchedClassifier =
            program(self.ebpf_mut(), name).map_err(TcFailure::other)?;
        // The handle is our PID: a later run tells a killed tracer's
        // filters from a live one's by it.
        prog.attach(
            ifindex,
            TcAttach::Netlink {
                parent: dir.into(),
                options: NlOptions {
                    handle: tc::TcHandle::from(leftovers::own_handle()),
                    ..NlOptions::default()
                },
            },
        )
        .map_err(|e| TcFailure::Other(format!("netlink attach failed: {}", describe(&e, None))))?;
        Ok(("netlink-clsact".into(), fallbacks))
    }

    fn attach_vxlan_rcv(&mut self, plan: &Plan) -> Result<(), ProbeError> {
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
    fn no_backend(
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

    fn attach_drop(
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

    /// A program whose attach failed is unloaded rather than kept around.
    fn unload(&mut self, name: &str) {
        use aya::programs::Program as P;
        let r = match self.ebpf_mut().program_mut(name) {
            Some(P::KProbe(p)) => p.unload(),
            Some(P::FEntry(p)) => p.unload(),
            Some(P::BtfTracePoint(p)) => p.unload(),
            Some(P::TracePoint(p)) => p.unload(),
            _ => Ok(()),
        };
        if let Err(e) = r {
            log::debug!("unloading {name}: {e}");
        }
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

impl Drop for Probes {
    fn drop(&mut self) {
        // Links and programs go with the object; only then may a qdisc we
        // created be empty again. The last tracer out removes it, whichever
        // tracer created it.
        drop(self.ebpf.take());
        if self.netlink_devices.is_empty() {
            return;
        }
        let _lock = match leftovers::lock() {
            Ok(l) => l,
            Err(e) => {
                log::warn!("{e}: a clsact qdisc flannel-trace created may be left");
                return;
            }
        };
        for (ifindex, ifname) in self.netlink_devices.drain(..) {
            match leftovers::remove_empty_clsact(self.netns, ifindex) {
                Ok(true) => {
                    log::info!("removed the clsact qdisc flannel-trace created on {ifname}")
                }
                Ok(false) => {}
                Err(e) => log::warn!(
                    "could not remove the clsact qdisc flannel-trace created on {ifname}: {e}"
                ),
            }
        }
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(|_| ProbeError::MissingProgram(name))
}

/// Why one TC attachment failed: a kernel without TCX (exit status 5
/// when TCX was asked for) or anything else.
enum TcFailure {
    TcxRefused(String),
    Other(String),
}

impl TcFailure {
    fn other(e: impl std::fmt::Display) -> TcFailure {
        TcFailure::Other(e.to_string())
    }

    fn into_text(self) -> String {
        match self {
            TcFailure::TcxRefused(t) | TcFailure::Other(t) => t,
        }
    }
}

/// Every TC attachment of a session: (hop, program, device, direction).
fn tc_hooks<'a>(
    dev: &Devices<'a>,
) -> Vec<(&'static str, &'static str, (u32, &'a str), TcAttachType)> {
    use TcAttachType::{Egress, Ingress};
    let mut hooks = vec![
        ("overlay-egress", prog::OVL_EGRESS, dev.vxlan, Egress),
        ("overlay-ingress", prog::OVL_INGRESS, dev.vxlan, Ingress),
    ];
    for &nic in &dev.underlay {
        hooks.push(("underlay-egress", prog::UND_EGRESS, nic, Egress));
        hooks.push(("underlay-ingress", prog::UND_INGRESS, nic, Ingress));
    }
    for &pod in &dev.pods {
        hooks.push(("pod-ingress", prog::POD_INGRESS, pod, Ingress));
        hooks.push(("pod-egress", prog::POD_EGRESS, pod, Egress));
    }
    hooks
}

/// A TCX attach; its error is a [`TcFailure::TcxRefused`] when the kernel
/// does not know the attach type (no TCX: EINVAL, EOPNOTSUPP or the
/// kernel's ENOTSUPP), else [`TcFailure::Other`].
fn tcx_attach(
    prog: &mut SchedClassifier,
    ifindex: u32,
    dir: TcAttachType,
) -> Result<(), TcFailure> {
    const ENOTSUPP: i32 = 524;
    prog.attach(
        ifindex,
        TcAttach::Tcx {
            attach_type: dir,
            order: LinkOrder::default(),
        },
    )
    .map(|_| ())
    .map_err(|e| {
        let refused = matches!(&e, ProgramError::SyscallError(se)
            if matches!(se.io_error.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)));
        let text = describe(&e, None);
        if refused {
            TcFailure::TcxRefused(text)
        } else {
            TcFailure::Other(text)
        }
    })
}

/// The vxlan-rcv backends to try, in order.
fn vxlan_order(choice: VxlanBackendChoice) -> &'static [VxlanBackendChoice] {
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
fn kprobe_pmu() -> Result<(), String> {
    if std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        Ok(())
    } else {
        Err(
            "no kprobe PMU (/sys/bus/event_source/devices/kprobe): kernel without CONFIG_KPROBES"
                .into(),
        )
    }
}

fn vxlan_program(b: VxlanBackendChoice) -> &'static str {
    match b {
        VxlanBackendChoice::Fentry => prog::VXLAN_FENTRY,
        VxlanBackendChoice::Kprobe => prog::VXLAN_KPROBE,
        VxlanBackendChoice::TpBtf => prog::VXLAN_TPBTF,
        VxlanBackendChoice::Tracepoint | VxlanBackendChoice::Auto => prog::VXLAN_TP,
    }
}

fn backend_name(b: VxlanBackendChoice) -> &'static str {
    match b {
        VxlanBackendChoice::Auto => "auto",
        VxlanBackendChoice::Fentry => "fentry",
        VxlanBackendChoice::Kprobe => "kprobe",
        VxlanBackendChoice::TpBtf => "tp_btf",
        VxlanBackendChoice::Tracepoint => "tracepoint",
    }
}

fn format_tried(tried: &[(String, String)]) -> String {
    tried
        .iter()
        .map(|(b, e)| format!("{b}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A program error in one line; a verifier log, when there is one, is
/// summarised by its last lines and written whole to `log` if asked.
fn describe(e: &ProgramError, log: Option<&PathBuf>) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let text = verifier_log.to_string();
            if let Some(path) = log {
                let _ = std::fs::write(path, &text);
            }
            // The verifier ends with statistics; the refusal is the line
            // before them (e.g. "program of this type cannot use helper").
            let is_stats = |l: &str| {
                ["verification time", "stack depth", "processed "]
                    .iter()
                    .any(|p| l.starts_with(p))
            };
            let mut tail: Vec<&str> = text
                .lines()
                .rev()
                .skip_while(|l| is_stats(l) || l.trim().is_empty())
                .take(1)
                .collect();
            if tail.is_empty() {
                tail = text.lines().rev().take(3).collect();
            }
            let mut s = format!("load failed: {io_error}");
            if !tail.is_empty() {
                let _ = write!(
                    s,
                    " (verifier: {})",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                );
            }
            s
        }
        other => {
            let mut s = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(cause) = src {
                let _ = write!(s, ": {cause}");
                src = cause.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names userspace attaches by are exactly the object's programs.
    #[test]
    fn program_names_match_the_object() {
        let obj = aya_obj::Object::parse(OBJECT).expect("the embedded object parses");
        let mut in_object: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
        in_object.sort_unstable();
        let mut known = prog::ALL.to_vec();
        known.sort_unstable();
        assert_eq!(in_object, known);
    }
}
