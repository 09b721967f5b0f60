//! The flannel-trace binary: everything is in the library (`lib.rs`).

fn main() -> std::process::ExitCode {
    flannel_trace::main()
}
