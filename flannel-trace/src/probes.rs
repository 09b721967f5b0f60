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
use flannel_trace_common::{Config, Ports};
use thiserror::Error;

use crate::{
    cli::{DropBackendChoice, TcMode, VxlanBackendChoice},
    degraded::MissingHop,
    leftovers, net as netdev,
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
        matches!(self, ProbeError::NoBackend { .. })
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
    pub hooks: Vec<HookReport>,
    /// Hooks no backend could serve under the automatic choice: the
    /// session runs without them (TC hops only).
    pub missing: Vec<MissingHop>,
    /// Devices with netlink filters of ours, and the netns they are in.
    netlink_devices: Vec<(u32, String)>,
    netns: u32,
}

impl Probes {
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        self.ebpf.as_mut().expect("present until drop")
    }

    pub fn load(
        cfg: &Config,
        ports: Ports,
        plan: &Plan,
        dev: &Devices<'_>,
    ) -> Result<Probes, ProbeError> {
        let ebpf = EbpfLoader::new()
            .override_global("CONFIG", cfg, true)
            .map_max_entries("EVENTS", plan.ring_size)
            .load(OBJECT)
            .map_err(ProbeError::Object)?;
        let mut probes = Probes {
            ebpf: Some(ebpf),
            hooks: Vec::new(),
            missing: Vec::new(),
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

    /// Verify, in parallel, the programs the plan will most likely attach.
    /// The kernel runs the verifier in the loading thread and privileged
    /// loads take no common lock, so the TC programs and the drop program
    /// (the slowest to verify) no longer queue behind each other. A program
    /// that fails here is left unloaded, and its hook's usual path loads it
    /// again and reports the error.
    fn preload(&mut self, plan: &Plan, dev: &Devices<'_>, has_reason: bool) {
        use aya::programs::Program as P;
        let mut tc: Vec<&str> = vec![
            "ft_ovl_egress",
            "ft_ovl_ingress",
            "ft_und_egress",
            "ft_und_ingress",
        ];
        if !dev.pods.is_empty() {
            tc.extend(["ft_pod_ingress", "ft_pod_egress"]);
        }
        let drop_tp = match plan.drop {
            Some(DropBackendChoice::Auto | DropBackendChoice::TpBtf) => Some(if has_reason {
                "ft_drop_tpbtf"
            } else {
                "ft_drop_tpbtf_noreason"
            }),
            _ => None,
        };
        let Ok(btf) = AyaBtf::from_sys_fs() else {
            return;
        };
        let btf = &btf;
        std::thread::scope(|scope| {
            for (name, prog) in self.ebpf_mut().programs_mut() {
                match prog {
                    P::SchedClassifier(p) if tc.contains(&name) => {
                        scope.spawn(move || {
                            if let Err(e) = p.load() {
                                log::debug!("preloading {name}: {e}");
                            }
                        });
                    }
                    P::BtfTracePoint(p) if drop_tp == Some(name) => {
                        scope.spawn(move || {
                            if let Err(e) = p.load("kfree_skb", btf) {
                                log::debug!("preloading {name}: {e}");
                            }
                        });
                    }
                    _ => {}
                }
            }
        });
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
        use TcAttachType::{Egress, Ingress};
        let mut hooks: Vec<(&'static str, &'static str, (u32, &str), TcAttachType)> = vec![
            ("overlay-egress", "ft_ovl_egress", dev.vxlan, Egress),
            ("overlay-ingress", "ft_ovl_ingress", dev.vxlan, Ingress),
        ];
        for &nic in &dev.underlay {
            hooks.push(("underlay-egress", "ft_und_egress", nic, Egress));
            hooks.push(("underlay-ingress", "ft_und_ingress", nic, Ingress));
        }
        for &pod in &dev.pods {
            hooks.push(("pod-ingress", "ft_pod_ingress", pod, Ingress));
            hooks.push(("pod-egress", "ft_pod_egress", pod, Egress));
        }
        for (hop, name, (ifindex, ifname), dir) in hooks {
            let (backend, fallbacks) = self
                .attach_one_tc(plan, name, ifindex, ifname, dir)
                .map_err(|reason| ProbeError::Tc {
                    hop,
                    iface: ifname.to_owned(),
                    reason,
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
    ) -> Result<(String, Vec<(String, String)>), String> {
        let log = plan.verifier_log.clone();
        let prog: &mut SchedClassifier =
            program(self.ebpf_mut(), name).map_err(|e| e.to_string())?;
        // One program serves every device of its hop: verified once.
        if prog.fd().is_err() {
            prog.load().map_err(|e| describe(&e, log.as_ref()))?;
        }
        let mut fallbacks = Vec::new();
        if plan.tc_mode != TcMode::Netlink {
            match prog.attach(
                ifindex,
                TcAttach::Tcx {
                    attach_type: dir,
                    order: LinkOrder::default(),
                },
            ) {
                Ok(_) => return Ok(("tcx".into(), fallbacks)),
                Err(e) if plan.tc_mode == TcMode::Auto => {
                    fallbacks.push(("tcx".into(), describe(&e, None)))
                }
                Err(e) => {
                    return Err(format!(
                        "TCX attach failed ({}); TCX needs Linux 6.6+, try --tc-mode netlink",
                        describe(&e, None)
                    ));
                }
            }
        }
        // Netlink: a clsact qdisc is needed; create it only if absent, and
        // mark it as ours first (see `leftovers`), under the lock, so that a
        // concurrent tracer's exit cannot remove it between the two steps.
        let netns = self.netns;
        let _lock = leftovers::lock().map_err(|e| e.to_string())?;
        let had_clsact = netdev::has_clsact(ifindex).map_err(|e| e.to_string())?;
        if !had_clsact {
            leftovers::mark_created(netns, ifindex).map_err(|e| e.to_string())?;
            if let Err(e) = tc::qdisc_add_clsact(ifindex) {
                leftovers::unmark(netns, ifindex);
                return Err(format!("adding a clsact qdisc failed: {e}"));
            }
        }
        if !self.netlink_devices.iter().any(|(i, _)| *i == ifindex) {
            self.netlink_devices.push((ifindex, ifname.to_owned()));
        }
        let prog: &mut SchedClassifier =
            program(self.ebpf_mut(), name).map_err(|e| e.to_string())?;
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
        .map_err(|e| format!("netlink attach failed: {}", describe(&e, None)))?;
        Ok(("netlink-clsact".into(), fallbacks))
    }

    fn attach_vxlan_rcv(&mut self, plan: &Plan) -> Result<(), ProbeError> {
        use VxlanBackendChoice as V;
        let order: &[V] = match plan.vxlan_rcv {
            V::Auto => &[V::Fentry, V::Kprobe, V::TpBtf, V::Tracepoint],
            V::Fentry => &[V::Fentry],
            V::Kprobe => &[V::Kprobe],
            V::TpBtf => &[V::TpBtf],
            V::Tracepoint => &[V::Tracepoint],
        };
        let mut fallbacks = Vec::new();
        for &b in order {
            let attempt = match b {
                V::Fentry => self
                    .fentry("ft_vxlan_fentry", "vxlan_rcv", plan)
                    .map(|()| ("fentry", "vxlan_rcv")),
                V::Kprobe => self
                    .kprobe("ft_vxlan_kprobe", "vxlan_rcv", plan)
                    .map(|()| ("kprobe", "vxlan_rcv")),
                V::TpBtf => self
                    .tp_btf("ft_vxlan_tpbtf", "netif_receive_skb", plan)
                    .map(|()| ("tp_btf", "netif_receive_skb")),
                V::Tracepoint => self
                    .tracepoint("ft_vxlan_tp", "net", "netif_receive_skb", plan)
                    .map(|()| ("tracepoint", "net:netif_receive_skb")),
                V::Auto => unreachable!("not in the order"),
            };
            match attempt {
                Ok((backend, target)) => {
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
        // Read only now, to explain the failure: the process is single-
        // threaded again (the preload threads are joined), which a private
        // securityfs mount needs.
        let lockdown = crate::degraded::lockdown_level();
        self.missing
            .push(MissingHop::explained(hop, tried, lockdown.as_deref()));
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
            "ft_drop_tpbtf"
        } else {
            "ft_drop_tpbtf_noreason"
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
                    .tracepoint("ft_drop_tp", "skb", "kfree_skb", plan)
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
                    self.unload(if b == D::TpBtf { tpbtf } else { "ft_drop_tp" });
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
        let btf = AyaBtf::from_sys_fs().map_err(|e| format!("reading kernel BTF: {e}"))?;
        let prog: &mut FEntry = program(self.ebpf_mut(), name).map_err(|e| e.to_string())?;
        prog.load(func, &btf)
            .map_err(|e| describe(&e, plan.verifier_log.as_ref()))?;
        prog.attach().map_err(|e| describe(&e, None))?;
        Ok(())
    }

    fn kprobe(&mut self, name: &'static str, func: &str, plan: &Plan) -> Result<(), String> {
        // Without the kprobe PMU the attach must fail: do not pay for the
        // program's verification (about a second) first.
        if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
            return Err("no kprobe PMU (/sys/bus/event_source/devices/kprobe): kernel without CONFIG_KPROBES".into());
        }
        let prog: &mut KProbe = program(self.ebpf_mut(), name).map_err(|e| e.to_string())?;
        prog.load()
            .map_err(|e| describe(&e, plan.verifier_log.as_ref()))?;
        prog.attach(func, 0).map_err(|e| describe(&e, None))?;
        Ok(())
    }

    fn tp_btf(&mut self, name: &'static str, tp: &str, plan: &Plan) -> Result<(), String> {
        let btf = AyaBtf::from_sys_fs().map_err(|e| format!("reading kernel BTF: {e}"))?;
        let prog: &mut BtfTracePoint = program(self.ebpf_mut(), name).map_err(|e| e.to_string())?;
        if prog.fd().is_err() {
            prog.load(tp, &btf)
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

fn vxlan_program(b: VxlanBackendChoice) -> &'static str {
    match b {
        VxlanBackendChoice::Fentry => "ft_vxlan_fentry",
        VxlanBackendChoice::Kprobe => "ft_vxlan_kprobe",
        VxlanBackendChoice::TpBtf => "ft_vxlan_tpbtf",
        VxlanBackendChoice::Tracepoint | VxlanBackendChoice::Auto => "ft_vxlan_tp",
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
