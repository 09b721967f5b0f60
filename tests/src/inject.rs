//! Putting crafted frames on a lab device (an AF_PACKET socket bound to it:
//! the frame leaves through the device's TC egress and, on a veth, arrives
//! at its peer; on a vxlan device the kernel encapsulates it), and reading a
//! running tracer's own in-kernel counters, so that a test can tell which
//! frame moved them.

use std::{ffi::CString, fs, io, os::fd::AsRawFd, os::fd::FromRawFd, os::fd::OwnedFd};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Map, MapData, PerCpuArray};
use flannel_trace_common::Counter;

use crate::Netns;

/// An AF_PACKET socket bound to one device of a namespace.
pub struct Injector {
    fd: OwnedFd,
    ifindex: i32,
    iface: String,
}

impl Injector {
    /// A raw packet socket on `iface` of `ns` (it keeps that namespace).
    pub fn open(ns: &Netns, iface: &str) -> Result<Injector> {
        let name = CString::new(iface)?;
        let (fd, ifindex) = ns
            .in_thread(|| {
                // SAFETY: plain syscalls; the fd is owned right away.
                let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                if ifindex == 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: a plain syscall with constant arguments.
                let raw = unsafe {
                    libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0)
                };
                if raw < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `raw` is a fresh descriptor nothing else owns.
                Ok((unsafe { OwnedFd::from_raw_fd(raw) }, ifindex as i32))
            })
            .with_context(|| format!("AF_PACKET socket on {iface} in {}", ns.name()))?;
        Ok(Injector {
            fd,
            ifindex,
            iface: iface.to_owned(),
        })
    }

    /// Sends one whole Ethernet frame as is.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: a zeroed sockaddr_ll is valid; the fields set below are
        // what AF_PACKET needs to pick the device.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: buffer and address are valid for the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            bail!(
                "sending a {}-byte frame on {}: {e}",
                frame.len(),
                self.iface
            );
        }
        if n as usize != frame.len() {
            bail!("sent {n} of {} bytes on {}", frame.len(), self.iface);
        }
        Ok(())
    }
}

/// The MAC address of `iface` in `ns`.
pub fn mac_of(ns: &Netns, iface: &str) -> Result<[u8; 6]> {
    let out = ns.run(&["ip", "-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let text = v[0]["address"]
        .as_str()
        .with_context(|| format!("no address for {iface}: {out}"))?;
    Ok(crate::frames::mac(text))
}

/// The `unparsed` counter of the tracer process `pid`, summed over CPUs,
/// read from its own `COUNTERS` map (found through the process's fds).
pub fn unparsed_of(pid: i32) -> Result<u64> {
    counter_of(pid, Counter::Unparsed)
}

fn counter_of(pid: i32, which: Counter) -> Result<u64> {
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(text) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(data) = MapData::from_id(id) else {
            continue;
        };
        let named = data
            .info()
            .ok()
            .is_some_and(|i| i.name_as_str() == Some("COUNTERS"));
        if !named {
            continue;
        }
        let map = Map::from_map_data(data)?;
        let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        let values = arr.get(&(which as u32), 0)?;
        return Ok(values.iter().sum());
    }
    bail!("tracer {pid} holds no COUNTERS map")
}
