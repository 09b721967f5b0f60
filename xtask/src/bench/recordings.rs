//! Recordings for the `join` figures. Real recordings of a lab load hold a
//! few hundred thousand events at most in the time a bench has, so the
//! ≥ 10 M-event pair is synthesised: the events of a real pair are repeated
//! in time (each copy shifted past the previous one, with its fingerprints
//! remapped the same way on both nodes, so the copies still match across
//! the nodes) and framed as the README documents format 1. Only the
//! framing is written here; every event's content comes from flannel-trace.

use std::{
    fs,
    io::{BufWriter, Write as _},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::observer::peak_rss_kib;
use crate::setup;

/// Magic of recording format 1.
const MAGIC: &[u8; 8] = b"FTREC\x00\x01\n";

/// CRC-32 (IEEE, reflected polynomial 0xEDB88320), as the frames carry.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !data.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// The frames of a format-1 recording, as JSON values.
pub fn frames(path: &Path) -> Result<Vec<Value>> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if data.len() < 8 || &data[..8] != MAGIC {
        bail!(
            "{} is not a format-1 recording (the format changed?): cannot synthesise from it",
            path.display()
        );
    }
    let mut out = Vec::new();
    let mut at = 8;
    while at + 8 <= data.len() {
        let len = u32::from_be_bytes(data[at..at + 4].try_into()?) as usize;
        let body = data
            .get(at + 8..at + 8 + len)
            .context("recording cut inside a frame")?;
        out.push(serde_json::from_slice(body)?);
        at += 8 + len;
    }
    Ok(out)
}

fn write_frame(out: &mut impl std::io::Write, payload: &[u8]) -> std::io::Result<()> {
    out.write_all(&(payload.len() as u32).to_be_bytes())?;
    out.write_all(&crc32(payload).to_be_bytes())?;
    out.write_all(payload)
}

/// splitmix64: a cheap bijective scramble of the copy number.
fn mix(k: u64) -> u64 {
    let mut z = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One template event, pre-rendered without the fields a copy changes.
struct Template {
    ts: u64,
    fp: Option<u64>,
    /// The rest of the object, from its first field on (no opening brace).
    rest: String,
}

fn templates(frames: &[Value]) -> Vec<Template> {
    frames
        .iter()
        .filter(|f| f["type"] == "event")
        .filter_map(|f| {
            let mut f = f.clone();
            let obj = f.as_object_mut()?;
            obj.remove("type");
            let ts = obj.remove("ts_mono_ns")?.as_u64()?;
            let fp = obj
                .remove("fingerprint")
                .and_then(|v| u64::from_str_radix(v.as_str()?, 16).ok());
            let rest = serde_json::to_string(&f).ok()?;
            Some(Template {
                ts,
                fp,
                rest: rest[1..].to_owned(),
            })
        })
        .collect()
}

/// Time shift between copies: past every event of both templates.
pub fn span(a: &[Value], b: &[Value]) -> u64 {
    let ts = a
        .iter()
        .chain(b)
        .filter(|f| f["type"] == "event")
        .filter_map(|f| f["ts_mono_ns"].as_u64());
    let (lo, hi) = ts.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
    hi.saturating_sub(lo) + 1_000_000
}

/// Writes `copies` repetitions of the recording `frames` to `out`; returns
/// the number of events written.
pub fn synthesise(frames: &[Value], copies: u64, span: u64, out: &Path) -> Result<u64> {
    let events = templates(frames);
    let mut w = BufWriter::with_capacity(1 << 20, fs::File::create(out)?);
    w.write_all(MAGIC)?;
    let start = frames
        .iter()
        .find(|f| f["type"] == "start")
        .context("template has no start record")?;
    write_frame(&mut w, &serde_json::to_vec(start)?)?;
    let mut payload = Vec::with_capacity(1024);
    let mut n = 0u64;
    for k in 0..copies {
        let (shift, remap) = (k * span, if k == 0 { 0 } else { mix(k) });
        for e in &events {
            payload.clear();
            write!(
                payload,
                "{{\"type\":\"event\",\"ts_mono_ns\":{},",
                e.ts + shift
            )?;
            if let Some(fp) = e.fp {
                write!(payload, "\"fingerprint\":\"{:016x}\",", fp ^ remap)?;
            }
            payload.extend_from_slice(e.rest.as_bytes());
            write_frame(&mut w, &payload)?;
            n += 1;
        }
    }
    if let Some(summary) = frames.iter().find(|f| f["type"] == "summary") {
        let mut s = summary.clone();
        s["events"] = n.into();
        let end = s["end_wall_ns"].as_i64().unwrap_or(0) + (copies.saturating_sub(1) * span) as i64;
        s["end_wall_ns"] = end.into();
        if let Some(hops) = s["per_hop"].as_object_mut() {
            for v in hops.values_mut() {
                *v = (v.as_u64().unwrap_or(0) * copies).into();
            }
        }
        write_frame(&mut w, &serde_json::to_vec(&s)?)?;
    }
    w.flush()?;
    Ok(n)
}

pub struct Join {
    pub ok: bool,
    pub secs: f64,
    pub hwm_kib: u64,
    pub note: String,
}

/// `flannel-trace join a b --json` under an address-space cap (the machine
/// is shared: an unbounded join must not push others into the OOM killer)
/// and a time limit; peak RSS polled from /proc.
pub fn join(a: &Path, b: &Path, cap_bytes: u64, limit: Duration) -> Result<Join> {
    let t = Instant::now();
    let mut cmd = Command::new(setup::release_binary());
    cmd.arg("join")
        .arg(a)
        .arg(b)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: cap_bytes,
                rlim_max: cap_bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting flannel-trace join")?;
    let mut hwm = 0;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        hwm = peak_rss_kib(child.id()).unwrap_or(hwm).max(hwm);
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let secs = t.elapsed().as_secs_f64();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut err);
    }
    let (ok, note) = match status {
        Some(s) if s.success() => (true, String::new()),
        Some(s) => {
            // The allocator's own message names the failed allocation;
            // the backtrace hint after it says nothing.
            let why = err
                .lines()
                .find(|l| l.contains("memory allocation") || l.contains("error"))
                .or_else(|| err.lines().rfind(|l| !l.trim_start().starts_with("note:")))
                .unwrap_or("")
                .trim();
            (
                false,
                format!(
                    "failed after {secs:.0} s ({s}) under the {} GiB cap: {why}",
                    cap_bytes >> 30
                ),
            )
        }
        None => (
            false,
            format!("killed after the {} s limit", limit.as_secs()),
        ),
    };
    Ok(Join {
        ok,
        secs,
        hwm_kib: hwm,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn copies_shift_time_and_remap_fingerprints_alike() {
        let dir = std::env::temp_dir().join(format!("ft-bench-synth-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let frames = vec![
            serde_json::json!({"type": "start", "node": "a"}),
            serde_json::json!({"type": "event", "ts_mono_ns": 10, "hop": "x", "fingerprint": "00000000000000ff"}),
            serde_json::json!({"type": "summary", "events": 1, "end_wall_ns": 5, "per_hop": {"x": 1}}),
        ];
        let path = dir.join("a.rec");
        assert_eq!(synthesise(&frames, 3, 100, &path).unwrap(), 3);
        let back = super::frames(&path).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back[3]["ts_mono_ns"], 210);
        assert_eq!(back[1]["fingerprint"], "00000000000000ff");
        assert_ne!(back[2]["fingerprint"], back[3]["fingerprint"]);
        assert_eq!(back[4]["per_hop"]["x"], 3);
        fs::remove_dir_all(&dir).unwrap();
    }
}
