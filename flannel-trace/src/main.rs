use std::process::ExitCode;

use clap::Parser as _;

mod btf;
mod cli;
mod clock;
mod event;
mod exit;
mod kallsyms;
mod kernel;
mod netdev;
mod output;
mod probes;
mod trace;
mod tracefs;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = cli::Cli::parse();
    match trace::run(cli.trace) {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            eprintln!("flannel-trace: {:#}", fatal.error);
            fatal.exit_code()
        }
    }
}
