//! The TC hooks: which program goes on which device and direction, TCX
//! first, netlink clsact as the fallback.

use aya::programs::{
    LinkOrder, ProgramError, SchedClassifier, TcAttach, TcAttachType,
    tc::{self, NlOptions},
};
use flannel_trace_common::programs as prog;

use super::{Devices, HookReport, Plan, ProbeError, Probes, TcMode, describe, leftovers, program};
use crate::net;

impl Probes {
    pub(super) fn attach_tc(&mut self, plan: &Plan, dev: &Devices<'_>) -> Result<(), ProbeError> {
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

    pub(super) fn attach_one_tc(
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
}

/// Why one TC attachment failed: a kernel without TCX (exit status 5
/// when TCX was asked for) or anything else.
pub(super) enum TcFailure {
    TcxRefused(String),
    Other(String),
}

impl TcFailure {
    pub(super) fn other(e: impl std::fmt::Display) -> TcFailure {
        TcFailure::Other(e.to_string())
    }

    pub(super) fn into_text(self) -> String {
        match self {
            TcFailure::TcxRefused(t) | TcFailure::Other(t) => t,
        }
    }
}

/// Every TC attachment of a session: (hop, program, device, direction).
pub(super) fn tc_hooks<'a>(
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
pub(super) fn tcx_attach(
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
