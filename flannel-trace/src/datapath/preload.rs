//! Verifying the programs a session may attach side by side, before the
//! attach step needs them.

use flannel_trace_common::programs as prog;

use super::{
    Attach, Devices, Plan, Probes, TcMode, drop_backends, kprobe_pmu, tc_hooks, tcx_attach,
    vxlan_rcv_backends,
};

impl Probes {
    /// Verify, in parallel, the programs the plan may attach: the TC
    /// programs, the drop program and the vxlan-rcv backends the kernel
    /// may take, up to the first that surely attaches (a refused fentry
    /// answers at once, so its fallback is verified beside it; nothing
    /// after a kprobe with the PMU present). The kernel runs the verifier in the loading
    /// thread and privileged loads take no common lock, so they no longer
    /// queue behind each other. A program that fails here is left
    /// unloaded, and its hook's usual path loads it again and reports the
    /// error; a preloaded backend that is not chosen is unloaded then.
    pub(super) fn preload(&mut self, plan: &Plan, dev: &Devices<'_>, has_reason: bool) {
        use aya::programs::Program as P;
        let hooks = tc_hooks(dev);
        let tcx = plan.tc_mode != TcMode::Netlink;
        // (program, BTF target) of the BTF-typed programs.
        let mut typed: Vec<(&str, &str)> = Vec::new();
        if let Some(choice) = plan.drop {
            for b in drop_backends(choice, has_reason) {
                if let Attach::TpBtf(tp) = b.attach {
                    typed.push((b.program, tp));
                }
            }
        }
        let mut kprobe = false;
        for b in vxlan_rcv_backends(plan.vxlan_rcv) {
            match b.attach {
                Attach::Fentry(func) if plan.vxlan_rcv_in_vmlinux => typed.push((b.program, func)),
                // A kprobe with the PMU present attaches: the fallbacks
                // after it would be verified for nothing.
                Attach::Kprobe(_) if kprobe_pmu().is_ok() => {
                    kprobe = true;
                    break;
                }
                Attach::TpBtf(tp) => typed.push((b.program, tp)),
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
}
