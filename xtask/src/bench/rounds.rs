//! The side-by-side part: every configuration in turn, A B C … A B C …,
//! each round carrying the three loads, so that a slow minute of the shared
//! machine hits all configurations alike.

use std::{collections::HashMap, path::Path, thread, time::Duration};

use anyhow::{Context as _, Result};

use flannel_trace_tests::Lab;

use super::{
    Plan,
    configs::{self, Config, Modes},
    figures::Samples,
    load, observer, progress,
};

#[derive(Default)]
pub struct Figures {
    pub udp_kpps: Samples,
    pub tcp_mbs: Samples,
    pub p50_us: Samples,
    pub p99_us: Samples,
    pub attach_ms: Samples,
    /// Events the tracers lost (ring buffer full) or tcpdump dropped.
    pub lost: u64,
    pub events: u64,
    /// Loads that failed (their samples are missing).
    pub failures: u32,
}

pub fn run(lab: &Lab, plan: &Plan, modes: Modes, dir: &Path) -> Result<HashMap<Config, Figures>> {
    let (a, b) = (lab.node('a'), lab.node('b'));
    let mut all: HashMap<Config, Figures> = HashMap::new();
    let configs: Vec<Config> = configs::ALL
        .into_iter()
        .filter(|c| c.available(modes))
        .collect();
    for round in 1..=plan.rounds {
        for &config in &configs {
            progress(&format!(
                "round {round}/{}: {}",
                plan.rounds,
                config.label()
            ));
            let procs = config
                .start(lab, dir)
                .with_context(|| format!("starting {}", config.label()))?;
            let f = all.entry(config).or_default();
            for p in &procs {
                f.attach_ms.push(p.attach.as_secs_f64() * 1e3);
            }
            // A moment for the observers' first work (tcpdump's first
            // buffer, the tracers' start records) to settle.
            thread::sleep(Duration::from_millis(200));
            // A load that fails (a stalled connection on a machine this
            // busy) costs its sample, not the whole run; failures are
            // counted and reported.
            let mut failed = |what: &str, e: anyhow::Error| {
                progress(&format!("  {what} failed under {}: {e:#}", config.label()));
                f.failures += 1;
            };
            match load::udp_flood(a, b, plan.udp) {
                Ok(udp) => f.udp_kpps.push(udp.rate() / 1e3),
                Err(e) => failed("UDP flood", e),
            }
            match load::tcp_bulk(a, b, plan.tcp) {
                Ok(mbs) => f.tcp_mbs.push(mbs),
                Err(e) => failed("TCP bulk", e),
            }
            match load::request_response(a, b, plan.rr) {
                Ok(rr) => {
                    f.p50_us.push(rr.p50_us);
                    f.p99_us.push(rr.p99_us);
                }
                Err(e) => failed("request/response", e),
            }
            let stopped =
                configs::stop_all(procs).with_context(|| format!("stopping {}", config.label()))?;
            for s in &stopped {
                if config.is_tracer() {
                    f.lost += observer::lost_of(&s.stderr);
                    f.events += observer::events_of(&s.stderr).unwrap_or(0);
                } else {
                    f.lost += observer::tcpdump_dropped(&s.stderr);
                }
            }
            // pcap files grow by the round; only the last one is kept.
            for e in std::fs::read_dir(dir)?.flatten() {
                if e.path().extension().is_some_and(|x| x == "pcap") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    Ok(all)
}
