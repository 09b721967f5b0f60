//! flannel-trace as a library: the binary's whole program (`main.rs` only
//! calls [`main`]), so that the fuzz targets (`fuzz/`) can reach the
//! decoders of untrusted input through [`fuzzing`]. New modules go here.

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

mod args;
mod check;
mod cli;
mod counters;
mod datapath;
mod exit;
pub mod fuzzing;
pub mod hot_path;
mod kernel;
mod net;
mod options;
mod peer;
mod render;
// Public for the integration tests (tests/), which read everything the tool
// prints (`--json`, recordings, `join --json`, `--stats`) as these types.
pub mod schema;
mod session;
#[cfg(test)]
mod testing;
mod verdict;

/// The verdict and counters documents, public for the integration tests
/// (see `schema`).
pub use check::{CheckReport, CheckTag, CheckedDevice, Finding, FindingKind};
pub use counters::{CounterVerdict, Row as CounterRow, Snapshot as CounterSnapshot};
pub use datapath::degraded::{MissingCause, MissingHop};
pub use verdict::{
    ClockEstimate, Direction, DropCount, Flow, HopCounts, Latency, Losses, NodeSummary, Report,
    Segment, Thinned,
};

/// The program: parse the command line, run it, exit with its status.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = parse();
    if cli.print_capabilities {
        for c in kernel::CAPABILITIES {
            match c.only_with {
                None => println!("{}", c.name),
                Some(opt) => println!("{} {opt}", c.name),
            }
        }
        return ExitCode::SUCCESS;
    }
    let result = match cli.cmd {
        Some(cli::Cmd::Join(a)) => verdict::offline::run(args::join_options(a)),
        Some(cli::Cmd::Check(a)) => check::run(check::Request {
            nodes: a.nodes,
            vxlan_dev: a.vxlan_dev,
            name: a.name,
            port: a.port,
            vni: a.vni,
            json: a.json,
        }),
        Some(cli::Cmd::Cleanup) => datapath::leftovers::cleanup_command(),
        None => args::trace_options(cli.trace)
            .map_err(exit::Fatal::from)
            .and_then(session::run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            eprintln!("flannel-trace: {}", exit::render(&fatal.error));
            fatal.exit_code()
        }
    }
}

/// Parses the command line; only `--version` pays for looking at the kernel
/// (`-V` prints the bare version).
fn parse() -> cli::Cli {
    let mut cmd = cli::Cli::command();
    if std::env::args_os().skip(1).any(|a| a == "--version") {
        // Computed once per process that prints it and exits.
        cmd = cmd.long_version(&*Box::leak(
            kernel::features::long_version().into_boxed_str(),
        ));
    }
    let matches = cmd.get_matches();
    cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}
