//! apt with a private configuration under target/vm/apt: its own
//! sources.list, lists, cache and state; the host's /etc/apt is never read
//! for sources nor written.

use std::{
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

    pub(super) fn search(&self, regex: &str) -> anyhow::Result<Vec<String>> {
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
    pub(super) fn show(&self, pkg: &str) -> anyhow::Result<(String, Vec<String>)> {
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
    pub(super) fn download(&self, pkgs: &[(String, String)]) -> anyhow::Result<Vec<PathBuf>> {
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
