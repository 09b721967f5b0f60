//! `cargo xtask demo`: the incident on one machine. Two flannel "nodes" in
//! network namespaces, a fabric between them where a security group drops
//! UDP 8475 one way, flannel-trace live on both nodes, the verdict, and
//! everything removed afterwards.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use flannel_trace_tests::{
    remove_stale_namespaces, require_root, require_tools,
    scenario::{Fault, Live, run_live},
    with_lab,
};

use crate::setup;

#[derive(Args)]
pub struct Options {
    /// The fault to inject: none, underlay-drop (the incident), receiver-firewall,
    /// port-mismatch, vni-mismatch, missing-fdb, mtu.
    #[arg(long, default_value = "underlay-drop")]
    fault: String,
    /// Run every fault scenario in turn.
    #[arg(long)]
    all: bool,
    /// How long node B traces (node A stops with it).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::run()?;
    setup::build_release()?;
    require_root()?;
    require_tools()?;
    let _ = remove_stale_namespaces();
    let faults: Vec<Fault> = if opts.all {
        Fault::ALL.to_vec()
    } else {
        match Fault::parse(&opts.fault) {
            Some(f) => vec![f],
            None => bail!(
                "unknown fault {}: pick one of {}",
                opts.fault,
                Fault::ALL.map(Fault::name).join(", ")
            ),
        }
    };
    for fault in faults {
        println!("\n=== scenario {}: {}", fault.name(), fault.describe());
        println!(
            "    node A 10.25.1.51 runs: flannel-trace --port 8475 --listen 10.25.1.51:7800 --token … --probe"
        );
        println!(
            "    node B 10.25.1.55 runs: flannel-trace --port 8475 --peer 10.25.1.51:7800 --token … --probe\n"
        );
        with_lab(fault.lab(), |lab| {
            fault.apply(lab)?;
            let live = Live {
                json: false,
                duration: Duration::from_secs(opts.seconds),
                ..Live::default()
            };
            let run = run_live(lab, &live).context("running flannel-trace on both nodes")?;
            for (name, r) in [("node A", &run.a), ("node B", &run.b)] {
                if !r.status.success() {
                    bail!(
                        "flannel-trace on {name} failed ({}):\n{}",
                        r.status,
                        r.stderr
                    );
                }
            }
            print!("{}", run.a.stdout);
            Ok(())
        })?;
    }
    println!("\n(all namespaces removed)");
    Ok(())
}
