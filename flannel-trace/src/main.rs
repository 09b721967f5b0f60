use std::process::ExitCode;

use clap::Parser as _;

mod btf;
mod cli;
mod clock;
mod codec;
mod event;
mod exit;
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

fn main() -> ExitCode {
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
