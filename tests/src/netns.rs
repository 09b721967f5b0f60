//! One named network namespace (`/run/netns/<name>`, as `ip netns` makes
//! them): creating and deleting it, running programs in it, and moving a
//! single thread into it for socket tests without external programs.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::command::{checked, describe, output};

/// Where `ip netns` bind-mounts named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Every namespace a lab makes is called `ft-<pid>-<counter>-<role>`.
const NAME_PREFIX: &str = "ft-";

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh `ft-<pid>-<counter>` stem. The pid keeps parallel test processes
/// apart, the counter keeps parallel tests (threads) of one process apart.
pub(crate) fn next_lab_stem() -> String {
    let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{NAME_PREFIX}{}-{n}", std::process::id())
}

/// A named network namespace that is deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
    deleted: bool,
}

impl Netns {
    /// Creates `/run/netns/<name>` with `ip netns add`.
    pub(crate) fn create(name: String) -> Result<Self> {
        let path = Path::new(NETNS_DIR).join(&name);
        if path.exists() {
            // Names embed our pid, and no live process shares it, so an
            // existing namespace of this name was left by a killed run that
            // had the same pid: it is garbage, not someone else's lab.
            Netns {
                name: name.clone(),
                deleted: false,
            }
            .delete()
            .with_context(|| format!("removing stale netns {name}"))?;
        }
        checked(Command::new("ip").args(["netns", "add", &name]), None)
            .with_context(|| format!("creating netns {name}"))?;
        Ok(Netns {
            name,
            deleted: false,
        })
    }

    /// The namespace name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount that pins the namespace; `setns` takes an fd of it.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    fn exec_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs `args` inside the namespace (`ip netns exec`) and returns its
    /// output whatever the exit status; only failing to start is an error.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        output(&mut self.exec_command(args), None)
    }

    /// Like [`Netns::exec`] but a non-zero exit is an error; returns stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = checked(&mut self.exec_command(args), None)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `args` inside the namespace with `stdin` fed to it; must exit 0.
    pub(crate) fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Result<String> {
        let out = checked(&mut self.exec_command(args), Some(stdin.as_bytes()))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ip -n <name> <line>`, the line split on whitespace (the lab's
    /// names, addresses and MACs never contain any), so set-up code reads
    /// like the iproute2 commands flannel's docs show. `ip -n` is cheaper
    /// than `ip netns exec ip`, which also builds a mount namespace.
    /// Returns stdout.
    pub(crate) fn ip(&self, line: &str) -> Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(line.split_whitespace());
        let out = checked(&mut cmd, None)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `bridge -n <name> <line>`, split like [`Netns::ip`].
    pub(crate) fn bridge(&self, line: &str) -> Result<()> {
        let mut cmd = Command::new("bridge");
        cmd.args(["-n", &self.name]).args(line.split_whitespace());
        checked(&mut cmd, None)?;
        Ok(())
    }

    /// Starts a long-lived program inside the namespace with stdout piped
    /// (stderr goes to the test's stderr). `ip netns exec` execs the program
    /// in place, so the child's pid is the program's own and killing it
    /// works. Programs still running when the lab is torn down are killed.
    pub fn spawn(&self, args: &[&str]) -> Result<Child> {
        let mut cmd = self.exec_command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd.spawn()
            .with_context(|| format!("could not start `{}`", describe(&cmd)))
    }

    /// Moves the calling thread into the namespace; see [`enter_netns`].
    pub(crate) fn enter_current_thread(&self) -> io::Result<()> {
        enter_netns(&self.path(), &self.name)
    }

    /// Runs `f` on a new thread that has entered the namespace, so sockets
    /// it opens live there; the caller's thread is unaffected. A socket
    /// keeps its namespace for life, so `f` may return one for the caller
    /// to use from any thread.
    pub fn in_thread<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send,
        F: FnOnce() -> io::Result<T> + Send,
    {
        thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.enter_current_thread()?;
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Sets a sysctl of this namespace; `key` is the path under /proc/sys
    /// with slashes ("net/ipv4/conf/flannel.1/rp_filter"), since interface
    /// names may contain dots.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.write_sysctl(key, value)
            .with_context(|| format!("setting {key}={value} in netns {}", self.name))
    }

    /// /proc/sys/net resolves against the network namespace of the thread
    /// that opens it, so writing from a thread inside the namespace needs
    /// no `ip netns exec sysctl` (and no extra process).
    pub(crate) fn write_sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let path = Path::new("/proc/sys").join(key);
        self.in_thread(|| fs::write(&path, value))
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        let out = checked(Command::new("ip").args(["netns", "pids", &self.name]), None)?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|pid| {
                pid.parse()
                    .with_context(|| format!("`ip netns pids {}` printed {pid:?}", self.name))
            })
            .collect()
    }

    /// Kills what still runs inside and removes the namespace. Deleting a
    /// namespace destroys its virtual devices (and a veth takes its peer
    /// with it), but only once nothing holds the namespace any more: a
    /// leftover tracer would keep eth1 and the fabric alive, hence the kill.
    pub(crate) fn delete(&mut self) -> Result<()> {
        if self.deleted {
            return Ok(());
        }
        if !self.path().exists() {
            self.deleted = true;
            return Ok(());
        }
        let pids = match self.pids() {
            Ok(pids) => pids,
            // Removed by someone else meanwhile: nothing left to do.
            Err(_) if !self.path().exists() => Vec::new(),
            Err(e) => return Err(e),
        };
        let me = std::process::id() as i32;
        for pid in pids {
            if pid != me {
                // SAFETY: plain syscall; the pid came from this namespace,
                // which only this lab's own processes can be in.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let deleted = checked(Command::new("ip").args(["netns", "del", &self.name]), None);
        // Losing a race with another remover (remove_stale_namespaces in a
        // parallel run) still leaves the namespace gone, which is the goal.
        if deleted.is_err() && self.path().exists() {
            deleted.with_context(|| format!("deleting netns {}", self.name))?;
        }
        self.deleted = true;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Drop runs on test panics too; there is no caller to return an
        // error to, so say it loudly rather than leak silently.
        if let Err(e) = self.delete() {
            eprintln!(
                "flannel-trace-tests: could not clean up netns {}: {e:#}",
                self.name
            );
        }
    }
}

/// Moves the calling thread into the namespace pinned at `path`.
/// `setns(CLONE_NEWNET)` changes only the calling thread, so this must only
/// be called on a thread made for the purpose, never on a test's own thread
/// (which would then run the rest of the test inside the lab).
pub(crate) fn enter_netns(path: &Path, name: &str) -> io::Result<()> {
    let file = File::open(path).map_err(|e| annotate(e, name, "opening"))?;
    // SAFETY: `file` is an open namespace fd for the duration of the call;
    // setns neither keeps nor closes it.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(annotate(io::Error::last_os_error(), name, "setns into"));
    }
    Ok(())
}

fn annotate(err: io::Error, netns: &str, what: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{what} netns {netns}: {err}"))
}

/// Names of all named network namespaces (`ip -j netns list`).
pub fn list_netns() -> Result<Vec<String>> {
    let out = checked(Command::new("ip").args(["-j", "netns", "list"]), None)?;
    json_names(&out.stdout, "name").context("parsing `ip -j netns list`")
}

/// Names of the veth devices in the root namespace (`ip -j link show type
/// veth`). A lab creates its veths directly inside its own namespaces, so a
/// lab veth showing up here is a leak.
pub fn root_veths() -> Result<Vec<String>> {
    let out = checked(
        Command::new("ip").args(["-j", "link", "show", "type", "veth"]),
        None,
    )?;
    json_names(&out.stdout, "ifname").context("parsing `ip -j link show type veth`")
}

/// Deletes lab namespaces whose creating process is gone, i.e. leftovers of
/// a run that was killed before its destructors ran. Returns their names.
pub fn remove_stale_namespaces() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list_netns()? {
        let Some(pid) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        Netns {
            name: name.clone(),
            deleted: false,
        }
        .delete()?;
        removed.push(name);
    }
    Ok(removed)
}

/// Pulls `key` out of each object of a JSON array printed by `ip -j`. Old
/// iproute2 prints nothing at all instead of `[]` when there is nothing.
fn json_names(stdout: &[u8], key: &str) -> Result<Vec<String>> {
    let text = String::from_utf8_lossy(stdout);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_str(&text)?;
    let Some(items) = value.as_array() else {
        bail!("expected a JSON array, got {text}");
    };
    Ok(items
        .iter()
        .filter_map(|item| item.get(key)?.as_str().map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_reads_ip_output() {
        let out = br#"[{"name":"ft-1-0-a","id":0},{"name":"other"}]"#;
        assert_eq!(json_names(out, "name").unwrap(), ["ft-1-0-a", "other"]);
        assert!(json_names(b"\n", "name").unwrap().is_empty());
        assert!(json_names(b"[]", "name").unwrap().is_empty());
    }

    #[test]
    fn stems_are_unique_and_carry_the_pid() {
        let a = next_lab_stem();
        let b = next_lab_stem();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("ft-{}-", std::process::id())));
    }
}
