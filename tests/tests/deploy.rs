//! The Kubernetes manifests in deploy/: every one validates offline against
//! the Kubernetes API schema (the kubernetes-validate package that `cargo
//! xtask setup` installs), and the Pod asks for exactly the capabilities
//! flannel-trace checks for at start (`--print-capabilities`), with the
//! mounts and host namespaces the tracer needs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use flannel_trace_tests::tracer_bin;
use serde_json::Value;

/// Kubernetes versions validated against: the first whose Pod has
/// `securityContext.appArmorProfile` (1.30), and the validator's newest.
const VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The validator's virtualenv (made by `cargo xtask setup`).
fn venv() -> Result<PathBuf> {
    let dir = std::env::var_os("FLANNEL_TRACE_KUBE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/kube-validate"));
    if !dir.join("bin/kubernetes-validate").is_file() {
        bail!(
            "{}/bin/kubernetes-validate does not exist: run `cargo xtask setup`",
            dir.display()
        );
    }
    Ok(dir)
}

fn manifests() -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy"))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    ensure!(
        files.len() >= 2,
        "deploy/ has the namespace and the pod: {files:?}"
    );
    Ok(files)
}

/// Every document of a YAML file, as JSON (PyYAML from the same venv).
fn documents(venv: &Path, file: &Path) -> Result<Vec<Value>> {
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(file)
        .output()
        .context("starting the venv's python")?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schema() -> Result<()> {
    let venv = venv()?;
    for file in manifests()? {
        for version in VERSIONS {
            let out = Command::new(venv.join("bin/kubernetes-validate"))
                .args(["--strict", "--kubernetes-version", version])
                .arg(&file)
                .output()
                .context("starting kubernetes-validate")?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            ensure!(
                out.status.success() && text.contains("passed"),
                "{} against {version}: {text}",
                file.display()
            );
        }
    }
    Ok(())
}

#[test]
fn the_validator_refuses_a_broken_pod() -> Result<()> {
    // So that a pass above means something: a typo in a field is caught.
    let venv = venv()?;
    let pod = std::fs::read_to_string(root().join("deploy/pod.yaml"))?;
    let broken = pod.replace("hostNetwork: true", "hostNetworks: true");
    ensure!(broken != pod, "deploy/pod.yaml sets hostNetwork");
    let file = std::env::temp_dir().join(format!("ft-broken-pod-{}.yaml", std::process::id()));
    std::fs::write(&file, broken)?;
    let out = Command::new(venv.join("bin/kubernetes-validate"))
        .arg("--strict")
        .arg(&file)
        .output()?;
    let _ = std::fs::remove_file(&file);
    ensure!(!out.status.success(), "a Pod with `hostNetworks` validated");
    Ok(())
}

#[test]
fn the_pod_gets_exactly_the_capabilities_the_tool_checks_for() -> Result<()> {
    let venv = venv()?;
    let ns = &documents(&venv, &root().join("deploy/namespace.yaml"))?[0];
    ensure!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged",
        "{ns}"
    );
    let pod = &documents(&venv, &root().join("deploy/pod.yaml"))?[0];
    ensure!(
        pod["metadata"]["namespace"] == ns["metadata"]["name"],
        "pod outside the namespace"
    );
    let spec = &pod["spec"];
    ensure!(
        spec["hostNetwork"] == true && spec["hostPID"] == true,
        "{spec}"
    );
    ensure!(spec["nodeName"].is_string(), "the pod is pinned to a node");
    let c = &spec["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();

    let out = Command::new(tracer_bin())
        .arg("--print-capabilities")
        .output()?;
    ensure!(out.status.success(), "--print-capabilities: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    // Lines are `CAP_X` or `CAP_X --option` (needed only with that option).
    let mut want: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let cap = w.next()?;
            match w.next() {
                Some(opt) if !args.iter().any(|a| a.split('=').next() == Some(opt)) => None,
                _ => Some(cap.trim_start_matches("CAP_").to_owned()),
            }
        })
        .collect();
    want.sort();
    ensure!(!want.is_empty(), "no capabilities printed");
    let caps = &c["securityContext"]["capabilities"];
    let mut added: Vec<String> = caps["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    added.sort();
    ensure!(
        added == want,
        "the pod adds {added:?}, flannel-trace checks for {want:?} (args {args:?})"
    );
    ensure!(
        caps["drop"] == serde_json::json!(["ALL"]),
        "every other capability is dropped: {caps}"
    );

    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for path in ["/sys/kernel/btf", "/sys/fs/bpf", "/sys/kernel/tracing"] {
        ensure!(mounts.contains(&path), "{path} is not mounted: {mounts:?}");
        let from_host = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["hostPath"]["path"] == path);
        ensure!(from_host, "{path} is not a hostPath volume");
    }
    Ok(())
}
