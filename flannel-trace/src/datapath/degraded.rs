//! Running without the probe hops: when no backend of the vxlan-rcv or drop
//! hook loads (kernel lockdown, a kernel without any of them), the TC hops
//! still trace, and the start record, the banner and the verdict say which
//! hops are missing and why.

use std::fs;

use serde::{Deserialize, Serialize};

/// Why a hop has no working backend, as far as the tool can tell. What
/// failed decides that a hop is missing; this only explains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingCause {
    /// `/sys/kernel/security/lockdown` is at `confidentiality`: the kernel
    /// refuses programs that read its memory (README, Kernel support).
    Lockdown,
    /// Anything else: the backends' own errors say what.
    Refused,
}

/// A hook no backend could serve; the session goes on without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingHop {
    /// `vxlan-rcv` or `drop`.
    pub hop: String,
    pub cause: MissingCause,
    /// The cause in words, e.g. "kernel lockdown (confidentiality) forbids
    /// reading kernel memory".
    pub reason: String,
    /// Every backend tried, with the error it gave.
    pub tried: Vec<(String, String)>,
}

const LOCKDOWN: &str = "/sys/kernel/security/lockdown";

/// The lockdown level the kernel reports, if it has the lockdown LSM:
/// `none`, `integrity` or `confidentiality`. `ip netns exec` remounts /sys
/// without securityfs: it is then mounted in a private mount namespace (as
/// tracefs is; that needs a single-threaded process), and failing that the
/// kernel command line is the evidence.
pub fn lockdown_level() -> Option<String> {
    if let Ok(text) = fs::read_to_string(LOCKDOWN) {
        return parse_lockdown(&text);
    }
    match crate::kernel::tracefs::mount_private("securityfs", "/sys/kernel/security") {
        Ok(()) => {
            if let Ok(text) = fs::read_to_string(LOCKDOWN) {
                return parse_lockdown(&text);
            }
        }
        Err((step, e)) => log::debug!("mounting securityfs privately: {step}: {e}"),
    }
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("lockdown="))
        .map(str::to_owned)
}

/// The bracketed word of `none integrity [confidentiality]`.
fn parse_lockdown(text: &str) -> Option<String> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
        .map(str::to_owned)
}

impl MissingHop {
    /// Explain why `hop` failed with every backend in `tried`, on a kernel
    /// at `lockdown` (see [`lockdown_level`]).
    pub fn explained(
        hop: &str,
        tried: Vec<(String, String)>,
        lockdown: Option<&str>,
    ) -> MissingHop {
        let (cause, reason) = if lockdown == Some("confidentiality") {
            (
                MissingCause::Lockdown,
                "kernel lockdown (confidentiality) forbids reading kernel memory".to_owned(),
            )
        } else {
            (
                MissingCause::Refused,
                "no backend of this hop loads on this kernel".to_owned(),
            )
        };
        MissingHop {
            hop: hop.to_owned(),
            cause,
            reason,
            tried,
        }
    }

    /// The one line said on stderr at start.
    pub fn banner(&self, underlay: &str, vxlan: &str) -> String {
        let blind = match self.hop.as_str() {
            "vxlan-rcv" => format!(
                "a loss between {underlay} and {vxlan} is not split at the vxlan receive path"
            ),
            _ => "no drop reasons or locations".to_owned(),
        };
        let tried = self
            .tried
            .iter()
            .map(|(b, e)| format!("{b}: {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        format!(
            "flannel-trace: {} hop unavailable: {}; tracing TC hops only: {blind} (tried {tried})",
            self.hop, self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bracketed_lockdown_level_is_the_active_one() {
        let l = parse_lockdown("none integrity [confidentiality]\n");
        assert_eq!(l.as_deref(), Some("confidentiality"));
        assert_eq!(
            parse_lockdown("[none] integrity confidentiality").as_deref(),
            Some("none")
        );
        assert_eq!(parse_lockdown(""), None);
    }

    #[test]
    fn lockdown_is_named_only_at_confidentiality() {
        let tried = vec![("tp_btf".to_owned(), "load failed".to_owned())];
        let m = MissingHop::explained("vxlan-rcv", tried.clone(), Some("confidentiality"));
        assert_eq!(m.cause, MissingCause::Lockdown);
        assert!(m.reason.contains("kernel lockdown (confidentiality)"));
        // Integrity lockdown leaves kernel reads alone: not the cause.
        let m = MissingHop::explained("drop", tried.clone(), Some("integrity"));
        assert_eq!(m.cause, MissingCause::Refused);
        let m = MissingHop::explained("drop", tried, None);
        assert_eq!(m.cause, MissingCause::Refused);
        let line = m.banner("eth1", "flannel.1");
        assert!(
            line.starts_with("flannel-trace: drop hop unavailable: ")
                && line.contains("tracing TC hops only: no drop reasons")
                && line.contains("tried tp_btf: load failed"),
            "{line}"
        );
    }
}
