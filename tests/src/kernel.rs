//! What the running kernel offers the tracer, found out independently of
//! the tracer, so that tests can assert that it picked the best backend
//! available rather than one particular kernel's answer. And how much
//! slower than usual this machine is (a guest under software emulation).

use std::{fs, path::Path, time::Duration};

/// The running kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub release: String,
    /// (major, minor) from the release string.
    pub version: (u32, u32),
}

/// A hook's backends in the tracer's order of preference, each with
/// whether this kernel should accept it (or why not).
pub type Offer = Vec<(&'static str, Result<(), String>)>;

impl Kernel {
    pub fn running() -> Kernel {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let version = parse_version(&release);
        Kernel { release, version }
    }

    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.version >= (major, minor)
    }

    /// TCX links (and the mprog query API) exist since Linux 6.6.
    pub fn has_tcx(&self) -> bool {
        self.at_least(6, 6)
    }

    /// The backend of the four TC hooks with `--tc-mode auto`.
    pub fn expected_tc_backend(&self) -> &'static str {
        if self.has_tcx() {
            "tcx"
        } else {
            "netlink-clsact"
        }
    }

    /// `skb:kfree_skb` carries a drop reason since Linux 5.17.
    pub fn has_drop_reason(&self) -> bool {
        self.at_least(5, 17)
    }

    /// The backends of the vxlan-rcv hop, in the tracer's order.
    pub fn vxlan_rcv_offer(&self) -> Offer {
        let module = vxlan_rcv_module();
        let fentry = match &module {
            None => Err("vxlan_rcv is not in /proc/kallsyms".to_owned()),
            // aya 0.16 resolves fentry targets in vmlinux BTF only; a
            // module function (distribution kernels build vxlan as one)
            // would need the module's BTF object as attach target.
            Some(Some(m)) => Err(format!("vxlan_rcv is in module {m}, not in vmlinux BTF")),
            Some(None) => match aya::sys::is_program_supported(aya::programs::ProgramType::Tracing)
            {
                Ok(true) => Ok(()),
                Ok(false) => Err("the kernel has no fentry (BPF trampolines)".to_owned()),
                Err(e) => Err(format!("the kernel refuses fentry programs: {e}")),
            },
        };
        let kprobe = if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
            Err(
                "no kprobe PMU (/sys/bus/event_source/devices/kprobe): kernel without kprobes"
                    .to_owned(),
            )
        } else if module.is_none() {
            Err("vxlan_rcv is not in /proc/kallsyms".to_owned())
        } else {
            Ok(())
        };
        vec![
            ("fentry", fentry),
            ("kprobe", kprobe),
            ("tp_btf", self.btf()),
            ("tracepoint", Ok(())),
        ]
    }

    /// The backends of the drop hop, in the tracer's order.
    pub fn drop_offer(&self) -> Offer {
        vec![("tp_btf", self.btf()), ("tracepoint", Ok(()))]
    }

    fn btf(&self) -> Result<(), String> {
        if Path::new("/sys/kernel/btf/vmlinux").exists() {
            Ok(())
        } else {
            Err("no /sys/kernel/btf/vmlinux".to_owned())
        }
    }

    /// The backend `--vxlan-rcv-backend auto` must end up with.
    pub fn expected_vxlan_rcv_backend(&self) -> &'static str {
        best(&self.vxlan_rcv_offer())
    }

    /// The backend `--drop-backend auto` must end up with.
    pub fn expected_drop_backend(&self) -> &'static str {
        best(&self.drop_offer())
    }
}

fn best(offer: &Offer) -> &'static str {
    offer
        .iter()
        .find(|(_, ok)| ok.is_ok())
        .map(|(b, _)| *b)
        .unwrap_or("none")
}

/// `None`: vxlan_rcv is not a kernel symbol (vxlan not loaded or the
/// function inlined); `Some(None)`: built into vmlinux; `Some(Some(m))`:
/// in module `m`.
fn vxlan_rcv_module() -> Option<Option<String>> {
    let syms = fs::read_to_string("/proc/kallsyms").ok()?;
    syms.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, _, name) = (f.next()?, f.next()?, f.next()?);
        (name == "vxlan_rcv").then(|| {
            f.next()
                .map(|m| m.trim_matches(|c| c == '[' || c == ']').to_owned())
        })
    })
}

fn parse_version(release: &str) -> (u32, u32) {
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok());
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0))
}

/// `d` stretched by `FLANNEL_TRACE_TEST_TIME_SCALE` (default 1). Under
/// software emulation (`cargo xtask vm-test`) the verifier alone makes the
/// tracer take 20 times longer to start, so waits that bound how long
/// something may take are scaled; waits that let time pass are not.
pub fn patience(d: Duration) -> Duration {
    let scale = std::env::var("FLANNEL_TRACE_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1);
    d * scale.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_release_strings() {
        assert_eq!(parse_version("5.10.0-46-cloud-amd64"), (5, 10));
        assert_eq!(parse_version("6.12.118+deb13-cloud-amd64"), (6, 12));
        assert_eq!(parse_version("7.3.4+deb13-amd64"), (7, 3));
        assert_eq!(parse_version("6.18.44-fc-v657"), (6, 18));
        let k = Kernel {
            release: "6.1.0-56-amd64".into(),
            version: (6, 1),
        };
        assert!(!k.has_tcx() && k.has_drop_reason());
        assert_eq!(k.expected_tc_backend(), "netlink-clsact");
        let k = Kernel {
            release: "5.10.0-46-amd64".into(),
            version: (5, 10),
        };
        assert!(!k.has_drop_reason());
    }

    #[test]
    fn the_best_backend_is_the_first_available() {
        let offer: Offer = vec![
            ("fentry", Err("x".into())),
            ("kprobe", Ok(())),
            ("tp_btf", Ok(())),
        ];
        assert_eq!(best(&offer), "kprobe");
    }
}
