//! flannel-trace as a library: the binary's whole program (`main.rs` only
//! calls [`main`]), so that the fuzz targets (`fuzz/`) can reach the
//! decoders of untrusted input through [`fuzzing`]. New modules go here.

use std::process::ExitCode;

use clap::Parser as _;

mod btf;
mod cli;
mod clock;
mod codec;
mod event;
mod exit;
pub mod fuzzing;
mod identity;
mod join;
mod kallsyms;
mod kernel;
mod leftovers;
mod live;
mod netdev;
mod output;
mod peer;
mod probe;
mod probes;
mod record;
mod session;
mod trace;
mod tracefs;
mod verdict;
mod wire;

/// The program: parse the command line, run it, exit with its status.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = cli::Cli::parse();
    let result = match cli.cmd {
        Some(cli::Cmd::Join(args)) => join::run(args),
        Some(cli::Cmd::Cleanup) => leftovers::cleanup_command(),
        None => trace::run(cli.trace),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            eprintln!("flannel-trace: {}", exit::render(&fatal.error));
            fatal.exit_code()
        }
    }
}
