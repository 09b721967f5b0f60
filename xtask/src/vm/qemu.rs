//! Booting one guest under qemu, its serial console captured to a log,
//! killed if it outlives its time limit.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub log: &'a Path,
    pub kvm: bool,
    pub memory_mib: u32,
    pub timeout: Duration,
    pub verbose: bool,
    /// More kernel command line (e.g. `lockdown=confidentiality`).
    pub append: &'a str,
}

/// How the guest ended.
pub struct Outcome {
    pub wall: Duration,
    pub timed_out: bool,
    /// qemu's exit status, when it exited by itself.
    pub exit: Option<i32>,
}

impl Boot<'_> {
    pub fn run(&self) -> anyhow::Result<Outcome> {
        let mut cmd = Command::new("qemu-system-x86_64");
        if self.kvm {
            cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max"]);
        }
        cmd.args(["-m", &self.memory_mib.to_string(), "-smp", "2"])
            .args([
                "-nodefaults",
                "-nographic",
                "-no-reboot",
                "-serial",
                "stdio",
                "-monitor",
                "none",
            ])
            .arg("-kernel")
            .arg(self.kernel)
            .arg("-initrd")
            .arg(self.initrd)
            // panic=-1: reboot at once on a panic, which -no-reboot turns
            // into qemu exiting. mitigations=off: page-table isolation and
            // friends only cost time under emulation.
            .arg("-append")
            .arg(
                format!(
                    "console=ttyS0 panic=-1 quiet loglevel=4 mitigations=off rdinit=/init {}",
                    self.append
                )
                .trim_end(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
        let mut log =
            File::create(self.log).with_context(|| format!("creating {}", self.log.display()))?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let tx2 = tx.clone();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            while r
                .read_until(b'\n', &mut line)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                if tx.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        });
        thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx2.send(format!("[qemu] {l}\n").into_bytes()).is_err() {
                    break;
                }
            }
        });
        let deadline = started + self.timeout;
        let mut timed_out = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(bytes) => {
                    // The console writes CR LF; the log keeps plain lines.
                    let clean: Vec<u8> = bytes.into_iter().filter(|&b| b != b'\r').collect();
                    log.write_all(&clean)?;
                    if self.verbose {
                        let mut out = std::io::stderr().lock();
                        let _ = out.write_all(&clean);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if !timed_out && Instant::now() > deadline {
                timed_out = true;
                let _ = writeln!(
                    log,
                    "[vm-test] guest still running after {:?}: killing qemu",
                    self.timeout
                );
                let _ = child.kill();
            }
        }
        let status = child.wait().context("waiting for qemu")?;
        log.flush()?;
        Ok(Outcome {
            wall: started.elapsed(),
            timed_out,
            exit: status.code(),
        })
    }
}
