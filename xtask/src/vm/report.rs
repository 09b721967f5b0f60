//! Reading a guest's console log into a verdict per kernel.
//! (The matrix outputs are in `matrix.rs`.)

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};

use super::qemu::Outcome;

/// Hooks in the order the tracer reports them.
const HOPS: [&str; 6] = [
    "overlay-egress",
    "overlay-ingress",
    "underlay-egress",
    "underlay-ingress",
    "vxlan-rcv",
    "drop",
];

/// One tracer run of the guest's attach probes.
pub struct Probe {
    /// Extra arguments (empty: all backends on auto).
    pub args: String,
    pub rc: i32,
    /// hop -> backend, from the start record.
    pub backends: BTreeMap<String, String>,
    pub error: String,
    pub verifier: Option<String>,
    /// Guest seconds the run took (start-up, 1 s of tracing, clean-up).
    pub seconds: Option<f64>,
}

impl Probe {
    fn json(&self) -> Value {
        json!({
            "args": self.args,
            "exit": self.rc,
            "backends": self.backends,
            "error": (!self.error.is_empty()).then_some(&self.error),
            "verifier_log_tail": self.verifier,
            "seconds": self.seconds,
        })
    }
}

pub struct KernelResult {
    pub key: String,
    pub release: String,
    pub packages: Vec<String>,
    /// Why the kernel failed; empty when it passed.
    pub problems: Vec<String>,
    pub tests: Vec<(String, String)>,
    /// Guest seconds per test (each runs on its own).
    pub test_seconds: BTreeMap<String, f64>,
    pub passed: u32,
    pub failed: u32,
    pub facts: BTreeMap<String, String>,
    pub probes: Vec<Probe>,
    pub module_failures: Vec<String>,
    pub boot_s: Option<f64>,
    pub probes_s: Option<f64>,
    pub tests_s: Option<f64>,
    pub wall: Duration,
    /// Failed tests' output and the last console lines, for the report.
    pub excerpt: Vec<String>,
}

fn uptime(line: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("uptime="))
        .and_then(|v| v.parse().ok())
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

impl KernelResult {
    pub fn setup_failure(key: &str, reason: String, wall: Duration) -> KernelResult {
        KernelResult {
            key: key.to_owned(),
            release: String::new(),
            packages: Vec::new(),
            problems: vec![reason],
            tests: Vec::new(),
            test_seconds: BTreeMap::new(),
            passed: 0,
            failed: 0,
            facts: BTreeMap::new(),
            probes: Vec::new(),
            module_failures: Vec::new(),
            boot_s: None,
            probes_s: None,
            tests_s: None,
            wall,
            excerpt: Vec::new(),
        }
    }

    pub fn from_log(
        key: &str,
        release: &str,
        packages: &[String],
        log: &str,
        outcome: &Outcome,
        wall: Duration,
    ) -> KernelResult {
        let mut r = KernelResult::setup_failure(key, String::new(), wall);
        r.problems.clear();
        r.release = release.to_owned();
        r.packages = packages.to_vec();
        let mut result: Option<(String, i32)> = None;
        let (mut probes_begin, mut tests_begin) = (None, None);
        let mut in_failures = false;
        for line in log.lines() {
            // The console may prefix the first lines with terminal resets.
            let line = line.find("FT-VM-").map_or(line, |i| &line[i..]);
            if let Some(rest) = line.strip_prefix("FT-VM-BOOTED ") {
                r.boot_s = uptime(rest);
            } else if let Some(rest) = line.strip_prefix("FT-VM-MODULE-FAILED ") {
                r.module_failures.push(rest.to_owned());
            } else if let Some(rest) = line.strip_prefix("FT-VM-FACT ") {
                if let Some((k, v)) = rest.split_once('=') {
                    r.facts.insert(k.to_owned(), v.trim().to_owned());
                }
            } else if let Some(rest) = line.strip_prefix("FT-VM-PROBE\t") {
                let parts: Vec<&str> = rest.splitn(5, '\t').collect();
                let start: Option<Value> = parts.get(2).and_then(|s| serde_json::from_str(s).ok());
                let list = |key: &str| {
                    start
                        .as_ref()
                        .and_then(|s| s[key].as_array().cloned())
                        .unwrap_or_default()
                };
                // A hop no backend could serve (TC-only mode) shows as
                // "missing (<cause>)".
                let backends = list("hooks")
                    .iter()
                    .filter_map(|h| {
                        Some((
                            h["hop"].as_str()?.to_owned(),
                            h["backend"].as_str()?.to_owned(),
                        ))
                    })
                    .chain(list("missing_hops").iter().filter_map(|m| {
                        Some((
                            m["hop"].as_str()?.to_owned(),
                            format!("missing ({})", m["cause"].as_str()?),
                        ))
                    }))
                    .collect();
                r.probes.push(Probe {
                    args: parts.first().unwrap_or(&"").to_string(),
                    rc: parts.get(1).and_then(|s| s.parse().ok()).unwrap_or(-1),
                    backends,
                    error: parts
                        .get(3)
                        .map(|s| s.trim().trim_start_matches("flannel-trace: ").to_owned())
                        .unwrap_or_default(),
                    verifier: None,
                    seconds: parts.get(4).and_then(|s| s.trim().parse().ok()),
                });
            } else if let Some(rest) = line.strip_prefix("FT-VM-VERIFIER\t") {
                if let (Some((args, text)), Some(p)) = (rest.split_once('\t'), r.probes.last_mut())
                    && p.args == args
                {
                    p.verifier = Some(text.to_owned());
                }
            } else if line.starts_with("FT-VM-PROBES-BEGIN") {
                probes_begin = uptime(line);
            } else if line.starts_with("FT-VM-PROBES-END") {
                r.probes_s = uptime(line).zip(probes_begin).map(|(e, b)| e - b);
            } else if let Some(rest) = line.strip_prefix("FT-VM-TEST-TIME ") {
                if let Some((name, secs)) = rest.rsplit_once(' ')
                    && let Ok(secs) = secs.trim().parse()
                {
                    r.test_seconds.insert(name.to_owned(), secs);
                }
            } else if line.starts_with("FT-VM-TESTS-BEGIN") {
                tests_begin = uptime(line);
            } else if line.starts_with("FT-VM-TESTS-END") {
                r.tests_s = uptime(line).zip(tests_begin).map(|(e, b)| e - b);
            } else if let Some(rest) = line.strip_prefix("FT-VM-RESULT ") {
                let release = field(rest, "kernel").unwrap_or_default().to_owned();
                let status = field(rest, "status")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(-1);
                result = Some((release, status));
            } else if let Some(rest) = line.strip_prefix("test ") {
                if let Some((name, outcome)) = rest.rsplit_once(" ... ") {
                    r.tests.push((name.to_owned(), outcome.trim().to_owned()));
                }
                if let Some(summary) = rest.strip_prefix("result: ") {
                    let num = |what: &str| {
                        summary.split(';').find_map(|p| {
                            p.trim()
                                .strip_suffix(what)
                                .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                        })
                    };
                    r.passed += num("passed").unwrap_or(0);
                    r.failed += num("failed").unwrap_or(0);
                    in_failures = false;
                }
            }
            if line == "failures:" {
                in_failures = true;
            }
            if in_failures && !line.starts_with("FT-VM-") && r.excerpt.len() < 200 {
                r.excerpt.push(line.to_owned());
            }
        }

        if outcome.timed_out {
            r.problems.push(format!(
                "guest killed after {:.0} s without finishing",
                outcome.wall.as_secs_f64()
            ));
        }
        match &result {
            None => r.problems.push(format!(
                "no FT-VM-RESULT marker on the console (qemu exit {:?})",
                outcome.exit
            )),
            Some((_, status)) if *status != 0 => r
                .problems
                .push(format!("integration tests exited {status}")),
            Some((release, _)) if *release != r.release => r.problems.push(format!(
                "guest ran kernel {release}, expected {}",
                r.release
            )),
            Some(_) => {}
        }
        if result.is_some() && r.passed == 0 {
            r.problems.push("no integration test ran".into());
        }
        if r.failed > 0 {
            let names: Vec<&str> = r
                .tests
                .iter()
                .filter(|(_, o)| o == "FAILED")
                .map(|(n, _)| n.as_str())
                .collect();
            r.problems
                .push(format!("{} test(s) failed: {}", r.failed, names.join(", ")));
        }
        match r.probes.first() {
            None => r.problems.push("the guest printed no attach probe".into()),
            Some(p) if p.rc != 0 => r.problems.push(format!(
                "flannel-trace with default backends exited {}: {}",
                p.rc, p.error
            )),
            Some(_) => {}
        }
        for m in &r.module_failures {
            r.problems.push(format!("module failed to load: {m}"));
        }
        if result.is_none() || outcome.timed_out {
            let lines: Vec<&str> = log.lines().collect();
            r.excerpt.extend(
                lines[lines.len().saturating_sub(40)..]
                    .iter()
                    .map(|l| (*l).to_owned()),
            );
        }
        r
    }

    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// hop -> backend of the run with default (auto) backends.
    pub fn auto_backends(&self) -> BTreeMap<String, String> {
        self.probes
            .iter()
            .find(|p| p.args.is_empty())
            .map(|p| p.backends.clone())
            .unwrap_or_default()
    }

    pub(super) fn tc_backend(&self) -> String {
        let b = self.auto_backends();
        let tc: Vec<&String> = HOPS[..4].iter().filter_map(|h| b.get(*h)).collect();
        match tc.first() {
            Some(first) if tc.iter().all(|x| x == first) => (*first).clone(),
            Some(_) => tc.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("/"),
            None => "-".into(),
        }
    }

    pub fn line(&self) -> String {
        let b = self.auto_backends();
        let get = |h: &str| b.get(h).cloned().unwrap_or_else(|| "-".into());
        let secs = |s: Option<f64>| s.map(|s| format!("{s:.0}s")).unwrap_or_else(|| "-".into());
        let mut line = format!(
            "{:<5} {:<26} {}  tests {}/{} passed  tc={} vxlan-rcv={} drop={}  boot {} probes {} tests {} wall {:.0}s",
            self.key,
            if self.release.is_empty() {
                "-"
            } else {
                &self.release
            },
            if self.passed() { "PASS" } else { "FAIL" },
            self.passed,
            self.passed + self.failed,
            self.tc_backend(),
            get("vxlan-rcv"),
            get("drop"),
            secs(self.boot_s),
            secs(self.probes_s),
            secs(self.tests_s),
            self.wall.as_secs_f64(),
        );
        for p in &self.problems {
            line.push_str(&format!("\n      problem: {p}"));
        }
        if !self.passed() {
            for l in self.excerpt.iter().take(60) {
                line.push_str(&format!("\n      | {l}"));
            }
        }
        line
    }

    /// A forced backend: "yes", or "no: <reason>". `flag` is the option
    /// the probe run starts with.
    pub(super) fn forced(&self, flag: &str, hop: &str, want: &str) -> String {
        match self
            .probes
            .iter()
            .find(|p| p.args == flag || p.args.starts_with(&format!("{flag} ")))
        {
            None => "not run".into(),
            Some(p) if p.rc == 0 && p.backends.get(hop).map(String::as_str) == Some(want) => {
                "yes".into()
            }
            Some(p) if p.rc == 0 => format!(
                "no (got {})",
                p.backends.get(hop).map(String::as_str).unwrap_or("nothing")
            ),
            Some(p) => format!("no: {}", short_reason(&p.error)),
        }
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "kernel": self.key,
            "release": self.release,
            "packages": self.packages,
            "status": if self.passed() { "pass" } else { "fail" },
            "problems": self.problems,
            "tests": { "passed": self.passed, "failed": self.failed,
                       "results": self.tests.iter().map(|(n, o)| json!({"name": n, "outcome": o, "seconds": self.test_seconds.get(n)})).collect::<Vec<_>>() },
            "backends": self.auto_backends(),
            "probes": self.probes.iter().map(Probe::json).collect::<Vec<_>>(),
            "facts": self.facts,
            "module_failures": self.module_failures,
            "seconds": { "boot": self.boot_s, "probes": self.probes_s, "tests": self.tests_s, "wall": self.wall.as_secs_f64() },
            "log": format!("target/vm/{}.log", self.key),
        })
    }
}

/// The part of a tracer error that says why a backend did not work.
fn short_reason(err: &str) -> String {
    let e = err.split(" works on this kernel: ").nth(1).unwrap_or(err);
    let e = ["fentry: ", "kprobe: ", "tp_btf: ", "tracepoint: "]
        .iter()
        .find_map(|p| e.strip_prefix(p))
        .unwrap_or(e);
    // "cannot attach overlay-egress on flannel.1: <why>"
    let e = e
        .strip_prefix("cannot attach ")
        .and_then(|r| r.split_once(": "))
        .map_or(e, |(_, why)| why);
    let mut s: String = e.chars().take(140).collect();
    if e.chars().count() > 140 {
        s.push('…');
    }
    s.replace('|', "\\|")
}

impl KernelResult {
    pub(super) fn wall_text(&self) -> String {
        format!("{:.0} s", self.wall.as_secs_f64())
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
