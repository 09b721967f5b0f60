//! Debian kernels for the matrix: a private apt configuration under
//! target/vm/apt (its own sources.list, lists, cache and state; the host's
//! /etc/apt is never read for sources nor written), the newest ABI of each
//! series resolved at run time, the packages downloaded once into
//! target/vm/cache and unpacked with `dpkg-deb -x`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Suites searched for kernels: bullseye (5.10), bookworm (6.1),
/// bookworm-backports and trixie(-security) (6.12), trixie-backports and
/// sid (7.x). The mirror may serve a frozen snapshot whose Release files
/// have passed their Valid-Until date, hence `check-valid-until=no`;
/// signatures are still checked against Debian's archive keyring.
const SOURCES: [(&str, &str); 9] = [
    ("http://deb.debian.org/debian", "bullseye"),
    ("http://deb.debian.org/debian-security", "bullseye-security"),
    ("http://deb.debian.org/debian", "bookworm"),
    ("http://deb.debian.org/debian-security", "bookworm-security"),
    ("http://deb.debian.org/debian", "bookworm-backports"),
    ("http://deb.debian.org/debian", "trixie"),
    ("http://deb.debian.org/debian-security", "trixie-security"),
    ("http://deb.debian.org/debian", "trixie-backports"),
    ("http://deb.debian.org/debian", "sid"),
];

/// Flavours in order of preference: `cloud` boots faster (fewer drivers)
/// and has everything the tests need; `amd64` is the fallback.
const FLAVOURS: [&str; 2] = ["cloud-amd64", "amd64"];

/// Kernel options the tracer and the lab cannot do without (`y` or `m`).
const REQUIRED_CONFIG: [&str; 10] = [
    "CONFIG_BPF_SYSCALL",
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_NET_NS",
    "CONFIG_VXLAN",
    "CONFIG_VETH",
    "CONFIG_BRIDGE",
    "CONFIG_NF_TABLES",
    "CONFIG_NET_CLS_BPF",
    "CONFIG_NET_SCH_INGRESS",
    "CONFIG_BLK_DEV_INITRD",
];

/// apt with its own configuration, lists and cache.
pub struct Apt {
    conf: PathBuf,
    cache: PathBuf,
}

impl Apt {
    pub fn new(root: &Path, cache: &Path) -> anyhow::Result<Apt> {
        if !Path::new(KEYRING).is_file() {
            bail!("{KEYRING} is missing: install Debian's debian-archive-keyring package");
        }
        for d in [
            "state/lists/partial",
            "cache/archives/partial",
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/sources.list.d",
        ] {
            fs::create_dir_all(root.join(d))
                .with_context(|| format!("creating {}", root.join(d).display()))?;
        }
        fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        let status = root.join("state/status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        let sources: String = SOURCES
            .iter()
            .map(|(uri, suite)| {
                format!("deb [signed-by={KEYRING} check-valid-until=no] {uri} {suite} main\n")
            })
            .collect();
        fs::write(root.join("etc/sources.list"), sources)?;
        let r = root.display();
        // APT_CONFIG is read first; pointing Dir::Etc and its parts at our
        // own empty directories keeps the host's apt.conf.d and sources out.
        let conf = format!(
            "Dir::State \"{r}/state\";\n\
             Dir::State::status \"{r}/state/status\";\n\
             Dir::Cache \"{r}/cache\";\n\
             Dir::Etc \"{r}/etc\";\n\
             Dir::Etc::Main \"{r}/etc/apt.conf\";\n\
             Dir::Etc::Parts \"{r}/etc/apt.conf.d\";\n\
             Dir::Etc::SourceList \"{r}/etc/sources.list\";\n\
             Dir::Etc::SourceParts \"{r}/etc/sources.list.d\";\n\
             Dir::Etc::Preferences \"{r}/etc/preferences\";\n\
             Dir::Etc::PreferencesParts \"{r}/etc/preferences.d\";\n\
             APT::Architecture \"amd64\";\n\
             APT::Architectures {{ \"amd64\"; }};\n\
             APT::Sandbox::User \"root\";\n\
             Acquire::Languages \"none\";\n\
             Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled \"false\";\n\
             Acquire::GzipIndexes \"true\";\n\
             Dir::Cache::srcpkgcache \"\";\n"
        );
        let conf_path = root.join("apt.conf");
        fs::write(&conf_path, conf)?;
        Ok(Apt {
            conf: conf_path,
            cache: cache.to_path_buf(),
        })
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("APT_CONFIG", &self.conf)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C");
        c
    }

    pub fn update(&self) -> anyhow::Result<()> {
        let out = self
            .cmd("apt-get")
            .args(["update", "-q"])
            .output()
            .context("starting apt-get update")?;
        if !out.status.success() {
            bail!(
                "apt-get update failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn search(&self, regex: &str) -> anyhow::Result<Vec<String>> {
        let out = self
            .cmd("apt-cache")
            .args(["search", "--names-only", regex])
            .output()
            .context("starting apt-cache")?;
        if !out.status.success() {
            bail!(
                "apt-cache search failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(" - ").next())
            .map(str::to_owned)
            .collect())
    }

    /// Candidate version and the first alternative of each dependency.
    fn show(&self, pkg: &str) -> anyhow::Result<(String, Vec<String>)> {
        let out = self
            .cmd("apt-cache")
            .args(["show", "--no-all-versions", pkg])
            .output()
            .context("starting apt-cache")?;
        if !out.status.success() {
            bail!(
                "apt-cache show {pkg} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let version = field("Version:").ok_or_else(|| anyhow!("no Version for {pkg}"))?;
        let deps = field("Depends:")
            .unwrap_or_default()
            .split(',')
            .filter_map(|d| d.split('|').next())
            .map(|d| d.split('(').next().unwrap_or("").trim().to_owned())
            .filter(|d| !d.is_empty())
            .collect();
        Ok((version, deps))
    }

    /// Downloads `pkgs` (name, version) into the cache unless already there.
    fn download(&self, pkgs: &[(String, String)]) -> anyhow::Result<Vec<PathBuf>> {
        let path = |(n, v): &(String, String)| {
            self.cache
                .join(format!("{n}_{}_amd64.deb", v.replace(':', "%3a")))
        };
        let missing: Vec<String> = pkgs
            .iter()
            .filter(|p| !path(p).is_file())
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        if !missing.is_empty() {
            eprintln!("vm-test: downloading {}", missing.join(" "));
            let out = self
                .cmd("apt-get")
                .args(["download", "-q"])
                .args(&missing)
                .current_dir(&self.cache)
                .output()?;
            if !out.status.success() {
                bail!(
                    "apt-get download failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        pkgs.iter()
            .map(|p| {
                let f = path(p);
                if f.is_file() {
                    Ok(f)
                } else {
                    Err(anyhow!("{} is missing after apt-get download", f.display()))
                }
            })
            .collect()
    }
}

/// An unpacked kernel.
pub struct Kernel {
    /// `uname -r` of the kernel.
    pub release: String,
    /// Packages it came from, `name=version`.
    pub packages: Vec<String>,
    pub vmlinuz: PathBuf,
    /// lib/modules/<release> (or usr/lib/modules/<release>).
    pub modules_dir: PathBuf,
    config: HashMap<String, String>,
}

/// The numbers of a Debian kernel ABI string: "6.1.0-56" -> [6, 1, 0, 56],
/// "6.12.118+deb13" -> [6, 12, 118, 13], "6.1.0-0.deb11.52" -> [6, 1, 0,
/// 0, 11, 52]. Compared lexicographically, the newest ABI is the largest.
fn abi_numbers(abi: &str) -> Option<Vec<u64>> {
    if !abi.starts_with(|c: char| c.is_ascii_digit())
        || !abi
            .replace("deb", "")
            .chars()
            .all(|c| c.is_ascii_digit() || ".+-".contains(c))
    {
        return None;
    }
    Some(
        abi.split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect(),
    )
}

/// The newest `linux-image-<abi>-<flavour>` of series `key` among `names`.
fn newest(key: &str, flavour: &str, names: &[String]) -> Option<String> {
    let series: Vec<u64> = key.split('.').filter_map(|s| s.parse().ok()).collect();
    names
        .iter()
        .filter_map(|n| {
            let abi = n
                .strip_prefix("linux-image-")?
                .strip_suffix(&format!("-{flavour}"))?;
            let nums = abi_numbers(abi)?;
            // x.y.z at least: excludes release candidates named "7.3".
            (nums.len() >= 3 && nums.starts_with(&series)).then(|| (nums, n.clone()))
        })
        .max()
        .map(|(_, n)| n)
}

fn series_regex(key: &str, flavour: &str) -> String {
    format!(
        "^linux-image-{}\\.[0-9].*-{flavour}$",
        key.replace('.', "\\.")
    )
}

/// Resolves, downloads and unpacks the newest kernel of series `key`.
pub fn fetch(apt: &Apt, key: &str, root: &Path) -> anyhow::Result<Kernel> {
    let mut tried = Vec::new();
    for flavour in FLAVOURS {
        let names = apt.search(&series_regex(key, flavour))?;
        let Some(image) = newest(key, flavour, &names) else {
            tried.push(format!(
                "no linux-image-{key}.*-{flavour} in the package lists"
            ));
            continue;
        };
        let kernel = unpack(apt, &image, root)?;
        let missing = kernel.missing_config();
        if missing.is_empty() {
            return Ok(kernel);
        }
        tried.push(format!("{image} lacks {}", missing.join(", ")));
    }
    bail!("no usable {key} kernel: {}", tried.join("; "))
}

fn unpack(apt: &Apt, image: &str, root: &Path) -> anyhow::Result<Kernel> {
    let abi = image.strip_prefix("linux-image-").expect("image name");
    let (version, deps) = apt.show(image)?;
    // Newer Debian kernels split the image into linux-binary-*,
    // linux-modules-* and linux-base-* packages of the same ABI.
    let mut pkgs = vec![(image.to_owned(), version.clone())];
    for d in deps
        .iter()
        .filter(|d| d.starts_with("linux-") && d.ends_with(abi))
    {
        let (v, _) = apt.show(d)?;
        pkgs.push((d.clone(), v));
    }
    let debs = apt.download(&pkgs)?;
    let dir = root.join(format!("{abi}_{}", version.replace([':', '~'], "_")));
    let stamp = dir.join(".unpacked");
    if !stamp.is_file() {
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        for deb in &debs {
            let st = Command::new("dpkg-deb")
                .arg("-x")
                .arg(deb)
                .arg(&dir)
                .status()
                .context("starting dpkg-deb")?;
            if !st.success() {
                bail!("dpkg-deb -x {} failed ({st})", deb.display());
            }
        }
        fs::write(&stamp, "")?;
    }
    let modules_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| dir.join(d))
        .filter(|d| d.is_dir())
        .flat_map(|d| {
            fs::read_dir(d)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .map(|e| e.path())
        })
        .find(|p| p.join("kernel").is_dir())
        .ok_or_else(|| anyhow!("no lib/modules/<release>/kernel in {}", dir.display()))?;
    let release = modules_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("bad module dir"))?
        .to_owned();
    let pick = |cands: [PathBuf; 2], what: &str| {
        cands
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow!("no {what} for {release} in {}", dir.display()))
    };
    let vmlinuz = pick(
        [
            dir.join(format!("boot/vmlinuz-{release}")),
            modules_dir.join("vmlinuz"),
        ],
        "vmlinuz",
    )?;
    let config_path = pick(
        [
            dir.join(format!("boot/config-{release}")),
            modules_dir.join("config"),
        ],
        "config",
    )?;
    let config = fs::read_to_string(&config_path)?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect();
    Ok(Kernel {
        release,
        packages: pkgs.iter().map(|(n, v)| format!("{n}={v}")).collect(),
        vmlinuz,
        modules_dir,
        config,
    })
}

/// A module to put into the guest, decompressed, in load order.
pub struct Module {
    /// Path below lib/modules/<release>/, ending in `.ko`.
    pub rel_path: String,
    pub data: Vec<u8>,
}

impl Kernel {
    pub fn config(&self, key: &str) -> Option<&str> {
        self.config.get(key).map(String::as_str)
    }

    fn missing_config(&self) -> Vec<String> {
        REQUIRED_CONFIG
            .iter()
            .filter(|k| !matches!(self.config(k), Some("y" | "m")))
            .map(|k| format!("{k} ({})", self.config(k).unwrap_or("not set")))
            .collect()
    }

    /// Every `.ko*` file by module name (dashes as underscores).
    fn module_index(&self) -> BTreeMap<String, PathBuf> {
        let mut index = BTreeMap::new();
        let mut stack = vec![self.modules_dir.join("kernel")];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
            {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(name) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.split(".ko").next().filter(|_| n.contains(".ko")))
                {
                    index.insert(name.replace('-', "_"), p.clone());
                }
            }
        }
        index
    }

    /// `wanted` modules and everything they depend on (from each module's
    /// own `.modinfo`: the packages ship no modules.dep), dependencies
    /// first. A wanted module without a file must be built in (`=y`), as
    /// named by its config symbol; `None` marks it optional.
    pub fn modules(&self, wanted: &[(&str, Option<&str>)]) -> anyhow::Result<Vec<Module>> {
        let index = self.module_index();
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for (name, symbol) in wanted {
            if index.contains_key(*name) {
                self.visit(name, &index, &mut seen, &mut order, 0)?;
            } else if let Some(sym) = symbol
                && self.config(sym) != Some("y")
            {
                bail!(
                    "module {name} is neither in the package nor built in ({sym}={})",
                    self.config(sym).unwrap_or("not set")
                );
            }
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        seen: &mut HashSet<String>,
        order: &mut Vec<Module>,
        depth: usize,
    ) -> anyhow::Result<()> {
        if seen.contains(name) {
            return Ok(());
        }
        if depth > 32 {
            bail!("module dependencies nest too deep at {name}");
        }
        seen.insert(name.to_owned());
        let path = index
            .get(name)
            .ok_or_else(|| anyhow!("module {name} is needed but not in the package"))?;
        let data = decompress(path)?;
        for dep in modinfo(&data, "depends")
            .split(',')
            .filter(|d| !d.is_empty())
        {
            self.visit(&dep.replace('-', "_"), index, seen, order, depth + 1)?;
        }
        let rel = path
            .strip_prefix(&self.modules_dir)
            .expect("below modules_dir")
            .to_string_lossy()
            .into_owned();
        let rel_path = format!("{}.ko", rel.split(".ko").next().expect("has .ko"));
        order.push(Module { rel_path, data });
        Ok(())
    }
}

/// A `key=value` string of a module's `.modinfo` section.
fn modinfo(data: &[u8], key: &str) -> String {
    let pat = format!("{key}=");
    let pat = pat.as_bytes();
    data.windows(pat.len())
        .enumerate()
        .find(|(i, w)| *w == pat && (*i == 0 || data[i - 1] == 0))
        .map(|(i, _)| {
            let rest = &data[i + pat.len()..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        })
        .unwrap_or_default()
}

fn decompress(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko") {
        return fs::read(path).with_context(|| format!("reading {name}"));
    } else if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        bail!("unknown module compression: {name}");
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("starting {tool}"))?;
    if !out.status.success() {
        bail!(
            "{tool} -dc {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_newest_abi_of_a_series() {
        let names: Vec<String> = [
            "linux-image-6.1.0-0.deb11.52-cloud-amd64",
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "linux-image-6.12.118+deb13-cloud-amd64",
            "linux-image-6.12.115+deb13.1-cloud-amd64",
            "linux-image-6.12.118+deb12-cloud-amd64",
            "linux-image-7.3-cloud-amd64",
            "linux-image-7.2.13+deb14-cloud-amd64",
            "linux-image-7.3.4+deb13-cloud-amd64",
            "linux-image-7.3.4+deb13-rt-amd64",
            "linux-image-6.1-cloud-amd64",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            newest("6.1", "cloud-amd64", &names).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            newest("6.12", "cloud-amd64", &names).as_deref(),
            Some("linux-image-6.12.118+deb13-cloud-amd64")
        );
        assert_eq!(
            newest("7", "cloud-amd64", &names).as_deref(),
            Some("linux-image-7.3.4+deb13-cloud-amd64")
        );
        assert_eq!(newest("5.10", "cloud-amd64", &names), None);
        // The generic flavour must not pick up "…-cloud-amd64" or "…-rt-amd64".
        assert_eq!(newest("7", "amd64", &names), None);
    }

    #[test]
    fn reads_modinfo_strings() {
        let data = b"junk\0license=GPL\0depends=udp_tunnel,ip6_udp_tunnel\0retpoline=Y\0";
        assert_eq!(modinfo(data, "depends"), "udp_tunnel,ip6_udp_tunnel");
        assert_eq!(modinfo(b"\0depends=\0", "depends"), "");
        assert_eq!(modinfo(b"xdepends=a\0", "depends"), "");
    }
}
