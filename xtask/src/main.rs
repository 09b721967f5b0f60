//! Orchestration: set-up, build, tests, demo. No product logic lives here.

use clap::{Parser, Subcommand};

// The pod-network prefix type that flannel-trace's clap definition (compiled
// into `dist` for the man pages) parses `--pod-cidr` into, as `crate::net::Cidr`.
#[allow(dead_code, reason = "only the type the clap definition names is used")]
#[path = "../../flannel-trace/src/net/podnet.rs"]
mod podnet;
mod net {
    pub use super::podnet::Cidr;
}

mod bench;
mod demo;
mod dist;
mod fuzz;
mod setup;
mod test;
mod vm;

#[derive(Parser)]
#[command(about = "flannel-trace development tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install everything the build and the tests need (idempotent).
    Setup,
    /// Set up, then build the release binary (target/release/flannel-trace).
    Build,
    /// Set up, build static x86_64 and aarch64 binaries (musl), SHA-256 sums, man pages and completions in target/dist.
    Dist(dist::Options),
    /// Set up, build, run the unit tests, then (as root) the netns integration tests.
    Test(test::Options),
    /// Set up, build, and run the lab demo: two flannel nodes in network namespaces.
    Demo(demo::Options),
    /// Set up, build, and measure overhead in the lab side by side with tcpdump: prints tables, writes BENCHMARKS.md (--quick: ~3 min).
    Bench(bench::Options),
    /// Compare builds of flannel-trace on bpf_stats and UDP packets/s, interleaved (A B A B …).
    BenchAb(bench::ab::Options),
    /// Set up, then run every cargo-fuzz target in fuzz/ for a short while.
    Fuzz(fuzz::Options),
    /// Boot Debian kernels (5.10, 6.1, 6.12, 7.x) under qemu and run the attach probes and integration tests in each.
    VmTest(vm::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::run(),
        Cmd::Build => {
            setup::run()?;
            setup::build_release()
        }
        Cmd::Dist(opts) => dist::run(opts),
        Cmd::Test(opts) => test::run(opts),
        Cmd::Demo(opts) => demo::run(opts),
        Cmd::Bench(opts) => bench::run(opts),
        Cmd::BenchAb(opts) => bench::ab::run(opts),
        Cmd::Fuzz(opts) => fuzz::run(opts),
        Cmd::VmTest(opts) => vm::run(opts),
    }
}
