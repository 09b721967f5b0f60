//! Loading the eBPF object and attaching every hook, each with its backend
//! chosen at run time, and detaching it all again.

use std::{fmt::Write as _, path::PathBuf};

use aya::maps::Array;
use aya::{
    Btf as AyaBtf, Ebpf, EbpfLoader,
    programs::{ProgramError, TcAttachType},
};
use flannel_trace_common::{Config, Ports};
use thiserror::Error;

use crate::schema::identity::HookReport;

mod choice;
pub mod degraded;
pub mod leftovers;
mod preload;
mod probe_hooks;
mod tc;

pub use choice::{DropBackendChoice, TcMode, VxlanBackendChoice};
use probe_hooks::{Attach, drop_backends, kprobe_pmu, vxlan_rcv_backends};
use tc::{TcFailure, tc_hooks, tcx_attach};

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

pub(super) fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(|_| ProbeError::MissingProgram(name))
}

pub(super) fn format_tried(tried: &[(String, String)]) -> String {
    tried
        .iter()
        .map(|(b, e)| format!("{b}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A program error in one line; a verifier log, when there is one, is
/// summarised by its last lines and written whole to `log` if asked.
pub(super) fn describe(e: &ProgramError, log: Option<&PathBuf>) -> String {
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
        let mut known = flannel_trace_common::programs::ALL.to_vec();
        known.sort_unstable();
        assert_eq!(in_object, known);
    }
}
