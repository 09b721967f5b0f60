//! Nothing left behind by netlink TC, even after SIGKILL.
//!
//! TCX links vanish with the process; netlink `clsact` filters do not. So:
//!
//! - every netlink filter flannel-trace attaches is a `bpf` classifier named
//!   after its program (`ft_…`, our tag) with the tracer's PID as its handle:
//!   a filter whose PID is no longer a running flannel-trace was left by a
//!   killed run;
//! - a clsact qdisc flannel-trace creates is marked by a file in
//!   [`RUN_DIR`] (a tmpfs, so markers go with a reboot, as qdiscs do),
//!   written *before* the qdisc is created so that a kill in between leaves
//!   a marker without a qdisc (harmless), never a qdisc without a marker;
//! - a lock file serialises "ensure the clsact, attach" against "count the
//!   filters, delete the clsact", so that of two concurrent tracers the last
//!   one out removes the qdisc, whichever created it;
//! - every run first sweeps its network namespace ([`sweep`]), and
//!   `flannel-trace cleanup` does the same on demand.
//!
//! A filter of a live tracer in another PID namespace would look dead:
//! run concurrent tracers of one network namespace in one PID namespace.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::DirBuilderExt as _,
    path::PathBuf,
};

use thiserror::Error;

use crate::net::{self, NetError, TcFilter};

/// Where the markers and the lock live.
pub const RUN_DIR: &str = "/run/flannel-trace";
/// Prefix of every eBPF program (and so netlink filter name) of the tool.
pub const TAG: &str = "ft_";

#[derive(Debug, Error)]
pub enum LeftoverError {
    #[error("cannot use {RUN_DIR} for flannel-trace's lock and markers: {0}")]
    RunDir(io::Error),
    #[error(transparent)]
    Net(#[from] NetError),
}

/// An exclusive `flock` on [`RUN_DIR`]/lock, released on drop.
pub struct Lock {
    _file: File,
}

pub fn lock() -> Result<Lock, LeftoverError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(RUN_DIR)
        .map_err(LeftoverError::RunDir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{RUN_DIR}/lock"))
        .map_err(LeftoverError::RunDir)?;
    // std's `File::lock` is an exclusive `flock` on Linux: the lock other
    // tracers' versions take too.
    loop {
        match file.lock() {
            Ok(()) => return Ok(Lock { _file: file }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(LeftoverError::RunDir(e)),
        }
    }
}

fn marker(netns: u32, ifindex: u32) -> PathBuf {
    PathBuf::from(format!("{RUN_DIR}/clsact-{netns}-{ifindex}"))
}

/// Call with the lock held, before creating the qdisc.
pub fn mark_created(netns: u32, ifindex: u32) -> Result<(), LeftoverError> {
    File::create(marker(netns, ifindex))
        .map(drop)
        .map_err(LeftoverError::RunDir)
}

pub fn unmark(netns: u32, ifindex: u32) {
    let _ = fs::remove_file(marker(netns, ifindex));
}

pub fn is_marked(netns: u32, ifindex: u32) -> bool {
    marker(netns, ifindex).exists()
}

/// The handle flannel-trace gives its netlink filters: its PID.
pub fn own_handle() -> u32 {
    std::process::id()
}

/// Whether `pid` is a running flannel-trace (`/proc/PID/comm`).
fn tracer_alive(pid: u32) -> bool {
    pid != 0
        && fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim_end() == "flannel-trace")
}

/// A filter of ours whose tracer is gone.
fn is_leftover(f: &TcFilter) -> bool {
    f.kind.as_deref() == Some("bpf")
        && f.bpf_name.as_deref().is_some_and(|n| n.starts_with(TAG))
        && !tracer_alive(f.handle)
}

/// With the lock held: removes the clsact on `ifindex` if flannel-trace
/// created it and nothing is attached to it any more. Returns whether it
/// did.
pub fn remove_empty_clsact(netns: u32, ifindex: u32) -> Result<bool, LeftoverError> {
    if !is_marked(netns, ifindex) {
        return Ok(false);
    }
    if !net::has_clsact(ifindex)? {
        // Killed between marking and creating, or removed by someone.
        unmark(netns, ifindex);
        return Ok(false);
    }
    let attached =
        net::clsact_filter_count(ifindex, false)? + net::clsact_filter_count(ifindex, true)?;
    if attached > 0 {
        return Ok(false);
    }
    net::delete_clsact(ifindex)?;
    unmark(netns, ifindex);
    Ok(true)
}

/// Removes, in this network namespace, every `ft_` filter of a tracer that
/// is gone and every clsact flannel-trace created that is now empty; one
/// line per thing removed.
pub fn sweep(netns: u32) -> Result<Vec<String>, LeftoverError> {
    let _lock = lock()?;
    let mut removed = Vec::new();
    for link in net::links()? {
        let has_clsact = net::has_clsact(link.index)?;
        if has_clsact {
            for egress in [false, true] {
                for f in net::clsact_filters(link.index, egress)? {
                    if !is_leftover(&f) {
                        continue;
                    }
                    match net::delete_filter(&f) {
                        Ok(()) => removed.push(format!(
                            "tc filter {} (pref {}, handle {:#x}) at {} of {}, left by flannel-trace pid {} which is gone",
                            f.bpf_name.as_deref().unwrap_or("?"),
                            f.priority(),
                            f.handle,
                            f.hook(),
                            link.name,
                            f.handle
                        )),
                        // Removed meanwhile by someone else: fine.
                        Err(e) if e.errno() == Some(libc::ENOENT) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        if remove_empty_clsact(netns, link.index)? {
            removed.push(format!(
                "the empty clsact qdisc flannel-trace had created on {}",
                link.name
            ));
        }
    }
    Ok(removed)
}

/// `flannel-trace cleanup`: the sweep on demand, saying what it removed.
pub fn cleanup_command() -> Result<(), crate::exit::Fatal> {
    use crate::exit::{OrFatal as _, Status};
    crate::kernel::check_privileges(false).fatal(Status::Privilege)?;
    let netns = crate::kernel::netns_inode().fatal(Status::Failure)?;
    let removed = sweep(netns).fatal(Status::Failure)?;
    if removed.is_empty() {
        println!(
            "flannel-trace cleanup: nothing left by flannel-trace in network namespace {netns}"
        );
    }
    for r in &removed {
        println!("flannel-trace cleanup: removed {r}");
    }
    Ok(())
}

/// At the start of every run: what killed runs left here goes, and the
/// user is told.
pub fn sweep_at_start(netns: u32) {
    match sweep(netns) {
        Ok(removed) => {
            for r in removed {
                eprintln!("flannel-trace: removed a leftover of a killed run: {r}");
            }
        }
        Err(e) => log::warn!("could not look for leftovers of killed runs: {e}"),
    }
}
