//! The kernel's own accounting of our programs (`kernel.bpf_stats_enabled`):
//! run count and run time per program, read through aya's program
//! enumeration (the same as `bpftool prog show`), as deltas over a load.

use std::{collections::BTreeMap, fs};

use anyhow::{Context as _, Result};

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns the statistics on for its lifetime and puts the old value back
/// when dropped, so an error or a panic cannot leave it changed.
pub struct Enabled {
    before: String,
}

impl Enabled {
    pub fn new() -> Result<Enabled> {
        let before = fs::read_to_string(SYSCTL).unwrap_or_else(|_| "0".into());
        fs::write(SYSCTL, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(Enabled {
            before: before.trim().to_owned(),
        })
    }
}

impl Drop for Enabled {
    fn drop(&mut self) {
        if let Err(e) = fs::write(SYSCTL, &self.before) {
            eprintln!("bench: could not restore kernel.bpf_stats_enabled: {e}");
        }
    }
}

/// (run count, run time ns) per program id, for `ft_*` programs.
#[derive(Default, Clone)]
pub struct Snapshot(BTreeMap<u32, (String, u64, u64)>);

pub fn snapshot() -> Snapshot {
    Snapshot(
        aya::programs::loaded_programs()
            .filter_map(|p| p.ok())
            .filter_map(|p| {
                let name = p.name_as_str()?.to_owned();
                name.starts_with("ft_").then(|| {
                    (
                        p.id(),
                        (name, p.run_count(), p.run_time().as_nanos() as u64),
                    )
                })
            })
            .collect(),
    )
}

/// Per program name (instances on both nodes summed): runs and ns in the
/// interval between two snapshots.
pub fn delta(before: &Snapshot, after: &Snapshot) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (id, (name, runs, ns)) in &after.0 {
        let (r0, n0) = before.0.get(id).map_or((0, 0), |(_, r, n)| (*r, *n));
        let e = out.entry(name.clone()).or_default();
        e.0 += runs.saturating_sub(r0);
        e.1 += ns.saturating_sub(n0);
    }
    out
}
