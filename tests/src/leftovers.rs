//! What a flannel-trace run can leave in the kernel, as the kill-loop test
//! looks for it: netlink TC filters named `ft_*` (with the handle, which is
//! the tracer's PID), clsact qdiscs, and loaded `ft_*` programs.

use std::{
    collections::HashSet,
    fs, thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;
use aya::programs::loaded_programs;

use crate::{Netns, patience};

/// One `ft_*` filter as `tc filter show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FtFilter {
    pub iface: String,
    pub hook: &'static str,
    pub name: String,
    pub handle: u32,
}

/// The `ft_*` filters at both hooks of each of `ifaces` in `ns`.
pub fn ft_filters(ns: &Netns, ifaces: &[&str]) -> Result<Vec<FtFilter>> {
    let mut found = Vec::new();
    for iface in ifaces {
        for hook in ["ingress", "egress"] {
            let out = ns.exec(&["tc", "filter", "show", "dev", iface, hook])?;
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                let Some(name) = words.iter().find(|w| w.starts_with("ft_")) else {
                    continue;
                };
                let handle = words
                    .iter()
                    .position(|w| *w == "handle")
                    .and_then(|i| words.get(i + 1))
                    .and_then(|h| u32::from_str_radix(h.trim_start_matches("0x"), 16).ok())
                    .unwrap_or(0);
                found.push(FtFilter {
                    iface: (*iface).to_owned(),
                    hook,
                    name: (*name).to_owned(),
                    handle,
                });
            }
        }
    }
    found.sort_by(|a, b| (&a.iface, a.hook, &a.name).cmp(&(&b.iface, b.hook, &b.name)));
    found.dedup();
    Ok(found)
}

/// Whether `iface` in `ns` has a clsact qdisc.
pub fn has_clsact(ns: &Netns, iface: &str) -> Result<bool> {
    Ok(ns
        .run(&["tc", "qdisc", "show", "dev", iface])?
        .contains("clsact"))
}

/// Program ids some process holds a descriptor of (`/proc/*/fdinfo`).
fn held_program_ids() -> HashSet<u32> {
    let mut ids = HashSet::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return ids;
    };
    for p in procs.flatten() {
        let Ok(fds) = fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(info) = fs::read_to_string(fd.path()) {
                ids.extend(
                    info.lines()
                        .filter_map(|l| l.strip_prefix("prog_id:"))
                        .filter_map(|v| v.trim().parse::<u32>().ok()),
                );
            }
        }
    }
    ids
}

/// `ft_*` programs loaded since `since` that no process holds: what a
/// killed tracer's netlink filters keep alive. Programs of tracers still
/// running (other tests on this machine) are not leftovers; the kernel is
/// given a moment to free the ones whose last reference just went.
pub fn orphan_ft_programs(since: SystemTime) -> Vec<String> {
    let deadline = Instant::now() + patience(Duration::from_secs(5));
    loop {
        let held = held_program_ids();
        let names: Vec<String> = loaded_programs()
            .filter_map(|p| p.ok())
            .filter(|p| p.loaded_at().is_some_and(|t| t >= since))
            .filter(|p| !held.contains(&p.id()))
            .filter_map(|p| p.name_as_str().map(|n| format!("{n} (id {})", p.id())))
            .filter(|n| n.starts_with("ft_"))
            .collect();
        if names.is_empty() || Instant::now() > deadline {
            return names;
        }
        thread::sleep(Duration::from_millis(100));
    }
}
