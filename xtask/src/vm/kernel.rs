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

use super::apt::Apt;

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
#[path = "kernel_tests.rs"]
mod tests;
