//! The guest's initramfs: a gzip'd cpio (newc) archive with a static
//! busybox, the lab's tools and their shared libraries (resolved with
//! `ldd`, dynamic loader included), the binaries under test, the kernel
//! modules the tests need (decompressed, loaded in dependency order) and
//! the /init script.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, anyhow, bail};

use super::{
    host::{self, Artifacts},
    kernel::Kernel,
};

const INIT: &str = include_str!("guest-init.sh");

/// Commands the integration tests and the guest's probes run.
const GUEST_TOOLS: [&str; 6] = ["ip", "bridge", "tc", "nft", "ping", "setpriv"];

/// Modules the lab and the tracer need, with the config symbol that must be
/// `y` when there is no module file (`None`: optional, e.g. merged into
/// nf_tables on newer kernels). Dependencies (udp_tunnel, ip6_udp_tunnel,
/// stp, llc, nfnetlink, ...) are added from each module's modinfo.
/// br_netfilter is left out on purpose: the lab is meant to behave as on a
/// host without it.
const MODULES: [(&str, Option<&str>); 9] = [
    ("veth", Some("CONFIG_VETH")),
    ("vxlan", Some("CONFIG_VXLAN")),
    ("bridge", Some("CONFIG_BRIDGE")),
    ("sch_ingress", Some("CONFIG_NET_SCH_INGRESS")),
    ("cls_bpf", Some("CONFIG_NET_CLS_BPF")),
    ("nf_tables", Some("CONFIG_NF_TABLES")),
    ("nft_counter", None),
    ("nft_meta_bridge", None),
    // 802.1Q/802.1ad devices for the VLAN underlay labs (with garp, mrp).
    ("8021q", Some("CONFIG_VLAN_8021Q")),
];

/// The integration tests every guest runs unless `--full` or a filter is
/// given: those whose outcome depends on the kernel. Between them they
/// attach every hook with every backend the kernel offers and see packets
/// through each (every_hop: the auto choice on all six hops;
/// every_backend: each vxlan-rcv and drop backend forced, and the refusal
/// of those not offered; fallback: netlink TC with both tracepoints),
/// check drop reasons or locations (receiver_firewall) and the clean-up of
/// each TC mechanism (netlink_mode, nothing_is_left), and the privilege
/// check (user_errors, cheap). Left out, as kernel-independent and slow
/// under TCG (about 2 of the 7.5 minutes per kernel): the inner filters,
/// the other-namespace filter (every_hop checks it too) and the ring
/// buffer overflow accounting.
/// Named with their module in tests/tests/tracer/ (`--exact` needs it).
pub const DEFAULT_TESTS: [&str; 7] = [
    "hops::every_hop_reports_ping_and_tcp_with_inner_and_outer_tuples",
    "backends::every_backend_the_kernel_offers_reports_the_packets",
    "hops::receiver_firewall_drop_is_reported_with_reason_and_location",
    "backends::fallback_backends_report_the_same_packets",
    "cleanup::netlink_mode_leaves_a_foreign_clsact_and_its_filter_alone",
    "cleanup::nothing_is_left_after_sigterm_or_sigkill",
    "options::user_errors_have_clear_messages_and_exit_codes",
];

/// The test the guest booted with `lockdown=confidentiality` runs (from
/// tests/tests/lockdown.rs, ignored outside such a kernel).
pub const LOCKDOWN_TEST: &str =
    "under_confidentiality_lockdown_the_tracers_run_tc_only_and_the_verdict_says_what_they_miss";

/// The crafted-packet corpus and the VLAN underlay labs, from the
/// `crafted` test binary: the parser and the drop hook meet hostile frames
/// on every verifier, and the VLAN tests need 802.1Q devices, which the
/// Debian kernels have (the development host's may not: they are ignored
/// there). Measured on 5.10 under TCG on a loaded 2-core host: the corpus
/// 54 s, the two VLAN labs 56 s and 62 s (about 3 minutes per kernel).
pub const CRAFTED_TESTS: [&str; 3] = [
    "crafted_frames_are_reported_as_sent_counted_once_and_harm_no_traffic",
    "vlan::an_8021q_underlay_reports_its_tag",
    "vlan::a_qinq_underlay_reports_both_tags",
];

/// The kernels whose guests run the crafted corpus and the VLAN labs by
/// default: the oldest (netlink TC, kprobe, no drop reasons) and the newest
/// (TCX, drop reasons) bracket the matrix, and the attach probes already
/// verify every program on the kernels between. About 4.5 minutes of guest
/// time each under TCG.
pub const CRAFTED_KERNELS: [&str; 2] = ["5.10", "7"];

/// The arguments of the `crafted` binary in the guest of kernel `key`, or
/// `None` when it runs none: the corpus subset by default (on
/// [`CRAFTED_KERNELS`] only), else the same filter as the tracer tests'.
pub fn crafted_test_args(test_args: &[String], key: &str) -> Option<Vec<String>> {
    if test_args != default_test_args() {
        return Some(test_args.to_vec());
    }
    CRAFTED_KERNELS.contains(&key).then(|| {
        ["--include-ignored", "--exact"]
            .into_iter()
            .chain(CRAFTED_TESTS)
            .map(str::to_owned)
            .collect()
    })
}

pub fn default_test_args() -> Vec<String> {
    std::iter::once("--exact")
        .chain(DEFAULT_TESTS)
        .map(str::to_owned)
        .collect()
}

enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// Paths (without leading slash) to entries; parents are added as needed.
#[derive(Default)]
struct Tree(BTreeMap<String, Entry>);

impl Tree {
    fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/').to_owned();
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, p)| p.to_vec())
            .unwrap_or_default()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.0.entry(parent.clone()).or_insert(Entry::Dir);
        }
        self.0.insert(path, entry);
    }

    fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.add(path, Entry::File { data, mode });
    }

    /// A host file at the same path (symlinks followed), libraries included.
    fn host_binary(&mut self, host: &Path, guest: &str) -> anyhow::Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.file(guest, data, 0o755);
        for lib in shared_libraries(host)? {
            if !self
                .0
                .contains_key(lib.to_string_lossy().trim_start_matches('/'))
            {
                let data = fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
                self.file(&lib.to_string_lossy(), data, 0o755);
            }
        }
        Ok(())
    }

    /// cpio "newc", as the kernel's initramfs unpacker reads it.
    fn write_cpio(&self, out: &mut impl io::Write) -> io::Result<()> {
        let mut ino = 1;
        let mut header = |out: &mut dyn io::Write,
                          name: &str,
                          mode: u32,
                          size: usize,
                          rdev: (u32, u32)|
         -> io::Result<()> {
            ino += 1;
            let namesize = name.len() + 1;
            write!(
                out,
                "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
                0, 0, 1, 0, 0, 0, rdev.0, rdev.1, 0
            )?;
            out.write_all(name.as_bytes())?;
            out.write_all(&[0])?;
            out.write_all(&[0; 3][..(4 - (110 + namesize) % 4) % 4])
        };
        let pad = |out: &mut dyn io::Write, n: usize| out.write_all(&[0; 3][..(4 - n % 4) % 4]);
        for (path, entry) in &self.0 {
            match entry {
                Entry::Dir => header(out, path, 0o040755, 0, (0, 0))?,
                Entry::File { data, mode } => {
                    header(out, path, 0o100000 | mode, data.len(), (0, 0))?;
                    out.write_all(data)?;
                    pad(out, data.len())?;
                }
                Entry::Symlink(target) => {
                    header(out, path, 0o120777, target.len(), (0, 0))?;
                    out.write_all(target.as_bytes())?;
                    pad(out, target.len())?;
                }
                Entry::CharDev { major, minor } => {
                    header(out, path, 0o020600, 0, (*major, *minor))?
                }
            }
        }
        header(out, "TRAILER!!!", 0, 0, (0, 0))
    }
}

/// The libraries `ldd` lists for `bin`, and the dynamic loader.
fn shared_libraries(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if host::is_static(bin)? {
        return Ok(Vec::new());
    }
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("starting ldd")?;
    if !out.status.success() {
        bail!(
            "ldd {} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)".
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim().split(' ').next().unwrap_or(""),
            None => line.trim().split(' ').next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else if line.contains("not found") {
            bail!("{}: {}", bin.display(), line.trim());
        }
    }
    Ok(libs)
}

/// Writes the initramfs for `kernel` (matrix key `key`) to `out`. `time_scale` stretches the
/// tests' time limits (FLANNEL_TRACE_TEST_TIME_SCALE).
pub fn build(
    kernel: &Kernel,
    key: &str,
    bins: &Artifacts,
    test_args: &[String],
    time_scale: u32,
    out: &Path,
) -> anyhow::Result<()> {
    let mut t = Tree::default();
    for d in [
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "root",
        "etc",
        "usr/local/bin",
        "lib",
        "lib64",
    ] {
        t.add(d, Entry::Dir);
    }
    t.add("var/run", Entry::Symlink("/run".into()));
    t.add("dev/console", Entry::CharDev { major: 5, minor: 1 });
    t.add("dev/null", Entry::CharDev { major: 1, minor: 3 });

    let busybox = host::find("busybox").ok_or_else(|| anyhow!("busybox is not installed"))?;
    if !host::is_static(&busybox)? {
        bail!(
            "{} is not static: install busybox-static",
            busybox.display()
        );
    }
    t.file("bin/busybox", fs::read(&busybox)?, 0o755);
    t.add("bin/sh", Entry::Symlink("busybox".into()));
    for tool in GUEST_TOOLS {
        let path =
            host::find(tool).ok_or_else(|| anyhow!("{tool} is not installed on the host"))?;
        let guest = if path.starts_with("/usr/sbin") || path.starts_with("/sbin") {
            "usr/sbin"
        } else {
            "usr/bin"
        };
        t.host_binary(&path, &format!("{guest}/{tool}"))?;
    }
    t.host_binary(&bins.tracer, "usr/local/bin/flannel-trace")?;
    t.host_binary(&bins.tests, "usr/local/bin/ft-tracer-tests")?;
    t.host_binary(&bins.lockdown_tests, "usr/local/bin/ft-lockdown-tests")?;
    t.host_binary(&bins.crafted, "usr/local/bin/ft-crafted-tests")?;

    for f in ["protocols", "services"] {
        if let Ok(data) = fs::read(Path::new("/etc").join(f)) {
            t.file(&format!("etc/{f}"), data, 0o644);
        }
    }
    t.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
            .to_vec(),
        0o644,
    );
    t.file(
        "etc/group",
        b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        0o644,
    );
    t.file("etc/hosts", b"127.0.0.1 localhost ft-vm\n".to_vec(), 0o644);

    let modules = kernel
        .modules(&MODULES)
        .with_context(|| format!("collecting the modules of {}", kernel.release))?;
    let mut list = String::new();
    for m in modules {
        let guest = format!("lib/modules/{}/{}", kernel.release, m.rel_path);
        list.push_str(&format!("/{guest}\n"));
        t.file(&guest, m.data, 0o644);
    }
    t.file("etc/ft-modules", list.into_bytes(), 0o644);

    let quoted = |args: &[String]| {
        args.iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let init = INIT
        .replace("@TEST_ARGS@", &quoted(test_args))
        .replace(
            "@CRAFTED_ARGS@",
            &quoted(&crafted_test_args(test_args, key).unwrap_or_default()),
        )
        .replace(
            "@CRAFTED@",
            if crafted_test_args(test_args, key).is_some() {
                "1"
            } else {
                ""
            },
        )
        .replace("@TIME_SCALE@", &time_scale.to_string())
        .replace("@LOCKDOWN_TEST@", LOCKDOWN_TEST);
    t.file("init", init.into_bytes(), 0o755);

    let tmp = out.with_extension("tmp");
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut gz = Command::new("gzip")
        .args(["-1", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("starting gzip")?;
    {
        let mut w = io::BufWriter::new(gz.stdin.take().expect("piped"));
        t.write_cpio(&mut w).context("writing the cpio archive")?;
        w.flush()?;
    }
    let st = gz.wait()?;
    if !st.success() {
        bail!("gzip failed ({st})");
    }
    fs::rename(&tmp, out)?;
    Ok(())
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=.,:/".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_runs_on_the_bracketing_kernels_unless_a_filter_is_given() {
        let default = default_test_args();
        let on_510 = crafted_test_args(&default, "5.10").unwrap();
        assert_eq!(on_510[0], "--include-ignored");
        assert!(CRAFTED_TESTS.iter().all(|t| on_510.iter().any(|a| a == t)));
        assert!(crafted_test_args(&default, "7").is_some());
        assert_eq!(crafted_test_args(&default, "6.1"), None);
        assert_eq!(crafted_test_args(&default, "6.12"), None);
        let filter = vec!["corpus".to_owned()];
        assert_eq!(crafted_test_args(&filter, "6.1"), Some(filter.clone()));
    }

    #[test]
    fn cpio_entries_are_aligned_and_parents_come_first() {
        let mut t = Tree::default();
        t.file("a/b/c", b"hello".to_vec(), 0o644);
        t.add("a/l", Entry::Symlink("b".into()));
        let mut buf = Vec::new();
        t.write_cpio(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf);
        let (a, ab, abc) = (
            text.find("a\0").unwrap(),
            text.find("a/b\0").unwrap(),
            text.find("a/b/c\0").unwrap(),
        );
        assert!(a < ab && ab < abc);
        assert_eq!(buf.len() % 4, 0);
        assert!(text.ends_with("TRAILER!!!\0\0\0\0") || text.contains("TRAILER!!!\0"));
        // Every header starts on a 4-byte boundary.
        for (i, _) in text.match_indices("070701") {
            assert_eq!(i % 4, 0);
        }
    }

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("--exact"), "--exact");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
