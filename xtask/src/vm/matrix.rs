//! The matrix outputs: one line per kernel, target/vm/matrix.json, and a
//! Markdown table.

use serde_json::json;

use super::report::KernelResult;

pub struct Matrix {
    pub results: Vec<KernelResult>,
    kvm: bool,
    test_args: Vec<String>,
}

impl Matrix {
    pub fn new(results: Vec<KernelResult>, kvm: bool, test_args: &[String]) -> Matrix {
        Matrix {
            results,
            kvm,
            test_args: test_args.to_vec(),
        }
    }

    pub fn json(&self) -> String {
        let v = json!({
            "accelerator": if self.kvm { "kvm" } else { "tcg" },
            "test_args": self.test_args,
            "kernels": self.results.iter().map(KernelResult::json).collect::<Vec<_>>(),
        });
        serde_json::to_string_pretty(&v).expect("JSON") + "\n"
    }

    pub fn markdown(&self) -> String {
        let mut s = String::from("## Kernel support\n\n");
        let tests = match self.test_args.split_first() {
            None => "the whole integration suite".to_owned(),
            Some((first, names)) if first == "--exact" => {
                format!(
                    "the integration tests {}",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Some(_) => format!(
                "the integration tests selected by `{}`",
                self.test_args.join(" ")
            ),
        };
        s.push_str(&format!(
            "Measured with `cargo xtask vm-test` on Debian's kernels under qemu ({}). Each guest first runs \
             flannel-trace once per backend (the tables below), then {tests}. \
             Wall time covers boot, probes and tests.\n\n",
            if self.kvm { "KVM" } else { "TCG, 2 vCPUs" },
        ));
        s.push_str("| Kernel | Debian kernel | TC hooks | vxlan-rcv | drop | drop reason | Tests | Wall time |\n");
        s.push_str("|---|---|---|---|---|---|---|---|\n");
        for r in &self.results {
            let b = r.auto_backends();
            let get = |h: &str| b.get(h).cloned().unwrap_or_else(|| "-".into());
            let reason = match r.facts.get("kfree_skb_fields") {
                // No drop hook (TC-only mode): no drops at all.
                _ if get("drop").starts_with("missing") => "-",
                Some(f) if f.split(',').any(|x| x == "reason") => "yes",
                Some(_) => "no (location only)",
                None => "-",
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.key,
                if r.release.is_empty() {
                    "-"
                } else {
                    &r.release
                },
                r.tc_backend(),
                get("vxlan-rcv"),
                get("drop"),
                reason,
                if r.passed() {
                    format!("{}/{} pass", r.passed, r.passed + r.failed)
                } else {
                    format!("FAIL ({}/{} pass)", r.passed, r.passed + r.failed)
                },
                r.wall_text(),
            ));
        }
        s.push_str("\nEach backend forced on its own (`--tc-mode`, `--vxlan-rcv-backend`, `--drop-backend`):\n\n");
        let cols: [(&str, &str, &str); 8] = [
            ("--tc-mode tcx", "overlay-egress", "tcx"),
            ("--tc-mode netlink", "overlay-egress", "netlink-clsact"),
            ("--vxlan-rcv-backend fentry", "vxlan-rcv", "fentry"),
            ("--vxlan-rcv-backend kprobe", "vxlan-rcv", "kprobe"),
            ("--vxlan-rcv-backend tp-btf", "vxlan-rcv", "tp_btf"),
            ("--vxlan-rcv-backend tracepoint", "vxlan-rcv", "tracepoint"),
            ("--drop-backend tp-btf", "drop", "tp_btf"),
            ("--drop-backend tracepoint", "drop", "tracepoint"),
        ];
        s.push_str("| Kernel | TC: tcx | TC: netlink | vxlan-rcv: fentry | vxlan-rcv: kprobe | vxlan-rcv: tp_btf | vxlan-rcv: tracepoint | drop: tp_btf | drop: tracepoint |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.results {
            s.push_str(&format!("| {} |", r.key));
            for (args, hop, want) in cols {
                s.push_str(&format!(" {} |", r.forced(args, hop, want)));
            }
            s.push('\n');
        }
        s
    }
}
