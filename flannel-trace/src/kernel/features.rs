//! What this kernel offers flannel-trace, for `--version`: found by reading
//! BTF, sysfs and /proc, never by loading a program, so that it is quick,
//! safe on a production node and works without root where the files are
//! world-readable. Whether a hook really attaches is only known at start
//! (the start banner names each backend and why the others failed).

use std::{fmt, fs, io, path::Path};

use crate::kernel::{self, btf::Btf, tracefs};

/// One answer; `Unknown` when the question cannot be asked from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Yes(String),
    No(String),
    Unknown(String),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, why) = match self {
            Found::Yes(w) => ("yes", w),
            Found::No(w) => ("no", w),
            Found::Unknown(w) => ("unknown", w),
        };
        if why.is_empty() {
            f.write_str(word)
        } else {
            write!(f, "{word} ({why})")
        }
    }
}

fn unknown_for(e: &io::Error) -> Found {
    if e.kind() == io::ErrorKind::PermissionDenied {
        Found::Unknown("needs root".into())
    } else {
        Found::Unknown(e.to_string())
    }
}

/// `--version`'s long text: the version, then one line per feature.
pub fn long_version() -> String {
    let btf_path = Path::new("/sys/kernel/btf/vmlinux");
    let btf = fs::read(btf_path).map(|d| Btf::from_bytes(&d));
    let (btf_line, btf) = match btf {
        Ok(Ok(b)) => (Found::Yes("/sys/kernel/btf/vmlinux".into()), Some(b)),
        Ok(Err(e)) => (Found::No(format!("unreadable BTF: {e}")), None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (
            Found::No("no /sys/kernel/btf/vmlinux: flannel-trace cannot run here".into()),
            None,
        ),
        Err(e) => (unknown_for(&e), None),
    };
    let from_btf = |f: &dyn Fn(&Btf) -> Found| match &btf {
        Some(b) => f(b),
        None => Found::Unknown("needs BTF".into()),
    };
    let tcx = from_btf(&|b| {
        let has = b
            .enum_values("bpf_attach_type")
            .unwrap_or_default()
            .iter()
            .any(|(n, _)| n == "BPF_TCX_INGRESS");
        if has {
            Found::Yes("Linux 6.6+".into())
        } else {
            Found::No("netlink clsact is used instead".into())
        }
    });
    let reasons = from_btf(&|b| {
        let n = kernel::drop_reasons(b).len();
        if n > 0 {
            Found::Yes(format!("{n} names in enum skb_drop_reason"))
        } else {
            Found::No("before 5.17: drops carry the kernel location only".into())
        }
    });
    let fentry = from_btf(&fentry);
    let kprobes = kprobes();
    let privileges = match kernel::missing_capabilities(false).as_slice() {
        [] => Found::Yes("this process may load and attach the programs".into()),
        missing => Found::No(format!("missing {}: run as root", missing.join(", "))),
    };
    let rows = [
        ("BTF", btf_line),
        ("TCX", tcx),
        ("kprobes", kprobes),
        ("fentry", fentry),
        ("drop reasons", reasons),
        ("privileges", privileges),
    ];
    let mut out = format!(
        "{}\nkernel {} features (found without loading a program):",
        env!("CARGO_PKG_VERSION"),
        kernel::release()
    );
    for (name, found) in rows {
        out.push_str(&format!("\n  {name:<13} {found}"));
    }
    out
}

/// A kprobe on vxlan_rcv needs the kprobe PMU (CONFIG_KPROBES) and the
/// function in the running kernel; /proc/kallsyms lists names to everyone.
fn kprobes() -> Found {
    if !Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
        return Found::No("no kprobe PMU: kernel built without CONFIG_KPROBES".into());
    }
    match fs::read_to_string("/proc/kallsyms") {
        Ok(syms) if has_symbol(&syms, "vxlan_rcv") => Found::Yes(String::new()),
        Ok(_) => Found::No("vxlan_rcv is not in the kernel: load the vxlan module".into()),
        Err(e) => unknown_for(&e),
    }
}

/// fentry needs vxlan_rcv in vmlinux BTF (aya looks nowhere else) and
/// ftrace able to patch it, which only root can read from tracefs.
fn fentry(btf: &Btf) -> Found {
    if !btf.has_func("vxlan_rcv") {
        let why = if Path::new("/sys/kernel/btf/vxlan").exists() {
            "vxlan is a module: vxlan_rcv is in module BTF only"
        } else {
            "vxlan_rcv is not in vmlinux BTF"
        };
        return Found::No(why.into());
    }
    if !kernel::missing_capabilities(false).is_empty() {
        return Found::Unknown("needs root".into());
    }
    let Ok(dir) = tracefs::ensure() else {
        return Found::Unknown("tracefs cannot be mounted".into());
    };
    match fs::read_to_string(dir.join("available_filter_functions")) {
        Ok(list)
            if list
                .lines()
                .any(|l| l.split_whitespace().next() == Some("vxlan_rcv")) =>
        {
            Found::Yes("vxlan_rcv is ftrace-able; the load at start decides".into())
        }
        Ok(_) => Found::No("vxlan_rcv is not ftrace-able".into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Found::No("kernel built without the function tracer".into())
        }
        // As root, a refusal is the kernel's (lockdown, or a sandbox), and
        // the fentry load at start is refused the same way.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Found::No(format!(
            "the kernel refuses ftrace to root ({e}): kernel lockdown?"
        )),
        Err(e) => Found::Unknown(e.to_string()),
    }
}

/// Whether a kallsyms listing has `name` as a whole symbol (not `name.cold`).
fn has_symbol(kallsyms: &str, name: &str) -> bool {
    kallsyms
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_match_whole_names_only() {
        let syms = "ffffffff8123be56 t vxlan_rcv.cold\nffffffff81e20560 t __pfx_vxlan_rcv\n";
        assert!(!has_symbol(syms, "vxlan_rcv"));
        let syms = format!("{syms}ffffffff81e20570 t vxlan_rcv\t[vxlan]\n");
        assert!(has_symbol(&syms, "vxlan_rcv"));
    }

    #[test]
    fn answers_read_as_a_sentence() {
        assert_eq!(Found::Yes(String::new()).to_string(), "yes");
        assert_eq!(
            Found::Unknown("needs root".into()).to_string(),
            "unknown (needs root)"
        );
    }
}
